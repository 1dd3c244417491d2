//! RoBERTa, XLM-RoBERTa and CamemBERT (`RobertaForSequenceClassification` and its copies):
//! BERT's encoder with position ids counted after the padding id, one token type, no pooler,
//! and `RobertaClassificationHead`.

use anyhow::{Result, bail};
use serde_json::Value;

use super::architecture::{Architecture, Network, Outputs};
use super::bert::{Embeddings, Encoder, Positions};
use super::config::ModelConfig;
use super::layers::{self, ForwardMode, Linear};
use super::params::Scope;
use crate::tokenize::Batch;

#[derive(Debug)]
pub struct Roberta;

/// `RobertaClassificationHead` (ELECTRA's differs in its activation): dropout, dense,
/// activation, dropout, `out_proj`, on the first token.
pub struct ClassificationHead {
    dense: Linear,
    out_proj: Linear,
    dropout: f64,
    tanh: bool,
}

impl ClassificationHead {
    /// `tanh`: RoBERTa's activation; otherwise exact GELU (ELECTRA's).
    pub fn new(s: &Scope, c: &ModelConfig, num_labels: usize, tanh: bool) -> Result<Self> {
        let h = c.hidden_size;
        Ok(Self {
            dense: Linear::new(&s.pp("dense"), h, h)?,
            out_proj: Linear::new(&s.pp("out_proj"), h, num_labels)?,
            dropout: c.classifier_dropout_prob(),
            tanh,
        })
    }

    pub fn forward(
        &self,
        hidden: &candle_core::Tensor,
        mode: &mut ForwardMode,
    ) -> candle_core::Result<candle_core::Tensor> {
        let x = mode.dropout(&layers::first_token(hidden)?, self.dropout)?;
        let x = self.dense.forward(&x)?;
        let x = if self.tanh {
            x.tanh()?
        } else {
            super::ops::gelu(&x)?
        };
        self.out_proj.forward(&mode.dropout(&x, self.dropout)?)
    }
}

/// BERT's embeddings and encoder under a [`ClassificationHead`]: RoBERTa's network, and
/// ELECTRA's with its projection.
pub struct HeadedEncoder {
    pub embeddings: Embeddings,
    /// ELECTRA's `embeddings_project`, when the embedding size differs from the hidden size.
    pub project: Option<Linear>,
    pub encoder: Encoder,
    pub head: ClassificationHead,
}

impl Architecture for Roberta {
    fn model_types(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("roberta", "RobertaForSequenceClassification"),
            ("xlm-roberta", "XLMRobertaForSequenceClassification"),
            ("camembert", "CamembertForSequenceClassification"),
        ]
    }

    fn base_prefix(&self) -> &'static str {
        "roberta"
    }

    fn config_defaults(&self) -> Vec<(&'static str, Value)> {
        vec![("pad_token_id", Value::from(1))]
    }

    fn validate(&self, c: &ModelConfig) -> Result<()> {
        super::bert::validate_token_types(c)?;
        if c.max_position_embeddings <= c.pad_token_id as usize + 1 {
            bail!(
                "max_position_embeddings is {}: RoBERTa's positions start after pad_token_id {}, \
                 so it must be above {}",
                c.max_position_embeddings,
                c.pad_token_id,
                c.pad_token_id as usize + 1
            );
        }
        Ok(())
    }

    fn max_tokens(&self, c: &ModelConfig) -> usize {
        c.max_position_embeddings - c.pad_token_id as usize - 1
    }

    fn output_layer(&self) -> &'static str {
        "classifier.out_proj"
    }

    fn build(&self, c: &ModelConfig, num_labels: usize, root: &Scope) -> Result<Box<dyn Network>> {
        let base = root.pp("roberta");
        Ok(Box::new(HeadedEncoder {
            embeddings: Embeddings::new(
                &base.pp("embeddings"),
                c,
                c.hidden_size,
                Positions::AfterPadding(c.pad_token_id),
                false,
            )?,
            project: None,
            encoder: Encoder::new(&base.pp("encoder"), c)?,
            head: ClassificationHead::new(&root.pp("classifier").head(), c, num_labels, true)?,
        }))
    }
}

impl Network for HeadedEncoder {
    fn forward(&self, batch: &Batch, cls_only: bool, mode: &mut ForwardMode) -> Result<Outputs> {
        let mask = layers::mask_bias(&batch.attention_mask, self.embeddings.dtype())?;
        let mut x = self.embeddings.forward(batch, mode)?;
        if let Some(project) = &self.project {
            x = project.forward(&x)?;
        }
        let hidden = self.encoder.forward(x, &mask, cls_only, mode)?;
        let logits = self.head.forward(&hidden, mode)?;
        Ok(Outputs {
            hidden,
            pooled: None,
            logits,
        })
    }
}
