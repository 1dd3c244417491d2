//! The architecture seam: `model_type` in config.json picks an [`Architecture`], which builds
//! the network from a [`Scope`] and says how its config.json and checkpoints are spelled.
//! Adding one is a new file implementing the trait plus its line in [`ARCHITECTURES`].

use anyhow::{Result, bail};
use candle_core::Tensor;
use serde_json::Value;

use super::config::ModelConfig;
use super::layers::ForwardMode;
use super::params::Scope;
use super::{bert, deberta, distilbert, electra, roberta};
use crate::tokenize::Batch;

/// Every architecture bertcls builds.
pub const ARCHITECTURES: &[&dyn Architecture] = &[
    &bert::Bert,
    &roberta::Roberta,
    &distilbert::DistilBert,
    &electra::Electra,
    &deberta::DebertaV2,
];

/// The architecture of a `model_type`, or an error listing the supported ones.
pub fn find(model_type: &str) -> Result<&'static dyn Architecture> {
    for arch in ARCHITECTURES {
        if arch.model_types().iter().any(|(t, _)| *t == model_type) {
            return Ok(*arch);
        }
    }
    bail!(
        "model_type `{model_type}` is not supported (supported: {})",
        supported().join(", ")
    )
}

/// Every supported `model_type`.
pub fn supported() -> Vec<&'static str> {
    ARCHITECTURES
        .iter()
        .flat_map(|a| a.model_types().iter().map(|(t, _)| *t))
        .collect()
}

/// How to build and name one family of models.
pub trait Architecture: Sync + std::fmt::Debug {
    /// The `model_type`s it builds, each with the class transformers saves it as
    /// (`architectures` in config.json).
    fn model_types(&self) -> &'static [(&'static str, &'static str)];

    /// The base model's attribute in the classification model, which prefixes its parameter
    /// names (`bert`, `roberta`...); base-model checkpoints store them without it.
    fn base_prefix(&self) -> &'static str;

    /// config.json keys this architecture spells its own way: (its key, BERT's key).
    fn config_aliases(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }

    /// Defaults of its config class that differ from BERT's, under BERT's keys.
    fn config_defaults(&self) -> Vec<(&'static str, Value)> {
        Vec::new()
    }

    /// Checks of settings only this architecture has.
    fn validate(&self, _config: &ModelConfig) -> Result<()> {
        Ok(())
    }

    /// The most tokens one input may have.
    fn max_tokens(&self, config: &ModelConfig) -> usize {
        config.max_position_embeddings
    }

    /// The head's last linear layer, whose rows are the labels.
    fn output_layer(&self) -> &'static str;

    /// The classification network, asking `root` for every parameter.
    fn build(
        &self,
        config: &ModelConfig,
        num_labels: usize,
        root: &Scope,
    ) -> Result<Box<dyn Network>>;
}

/// A built classification network.
pub trait Network: Send + Sync {
    /// With `cls_only`, the last layer may compute the first token's output only: all a
    /// classification head reads.
    fn forward(&self, batch: &Batch, cls_only: bool, mode: &mut ForwardMode) -> Result<Outputs>;
}

/// What one forward pass computes.
pub struct Outputs {
    /// (batch, seq, hidden), or (batch, 1, hidden) with `cls_only`.
    pub hidden: Tensor,
    /// (batch, hidden): the pooler's output, for architectures with a pooler.
    pub pooled: Option<Tensor>,
    /// (batch, labels)
    pub logits: Tensor,
}
