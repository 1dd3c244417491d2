//! ELECTRA discriminators (`ElectraForSequenceClassification`): BERT's embeddings at
//! `embedding_size`, projected to the hidden size when the two differ, BERT's encoder, and
//! `ElectraClassificationHead` (RoBERTa's head with GELU).

use anyhow::Result;

use super::architecture::{Architecture, Network};
use super::bert::{Embeddings, Encoder, Positions};
use super::config::ModelConfig;
use super::layers::Linear;
use super::params::Scope;
use super::roberta::{ClassificationHead, HeadedEncoder};

#[derive(Debug)]
pub struct Electra;

impl Architecture for Electra {
    fn model_types(&self) -> &'static [(&'static str, &'static str)] {
        &[("electra", "ElectraForSequenceClassification")]
    }

    fn base_prefix(&self) -> &'static str {
        "electra"
    }

    fn config_defaults(&self) -> Vec<(&'static str, serde_json::Value)> {
        vec![("embedding_size", serde_json::Value::from(128))]
    }

    fn validate(&self, c: &ModelConfig) -> Result<()> {
        super::bert::validate_token_types(c)
    }

    fn output_layer(&self) -> &'static str {
        "classifier.out_proj"
    }

    fn build(&self, c: &ModelConfig, num_labels: usize, root: &Scope) -> Result<Box<dyn Network>> {
        let base = root.pp("electra");
        let width = c.embedding_size;
        let embeddings =
            Embeddings::new(&base.pp("embeddings"), c, width, Positions::FromZero, true)?;
        let project = (width != c.hidden_size)
            .then(|| Linear::new(&base.pp("embeddings_project"), width, c.hidden_size))
            .transpose()?;
        Ok(Box::new(HeadedEncoder {
            embeddings,
            project,
            encoder: Encoder::new(&base.pp("encoder"), c)?,
            head: ClassificationHead::new(&root.pp("classifier").head(), c, num_labels, false)?,
        }))
    }
}
