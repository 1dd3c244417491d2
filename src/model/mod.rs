//! `BertForSequenceClassification`: the encoder, the pooler, dropout and a linear classifier,
//! with transformers' parameter names so that weights load both ways.

pub mod config;
pub mod encoder;
pub mod ops;
pub mod pickle;
pub mod weights;

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;
use candle_core::{DType, Tensor};

pub use config::BertConfig;
pub use encoder::ForwardMode;
use encoder::{BertEncoder, Linear, Pooler};
use weights::Weights;

use crate::data::LabelSet;
use crate::tokenize::Batch;

/// What one forward pass computes.
pub struct Outputs {
    /// (batch, seq, hidden)
    pub hidden: Tensor,
    /// (batch, hidden): the pooler's output
    pub pooled: Tensor,
    /// (batch, labels)
    pub logits: Tensor,
}

pub struct BertClassifier {
    config: BertConfig,
    encoder: BertEncoder,
    pooler: Pooler,
    classifier: Linear,
    num_labels: usize,
    /// Every parameter in transformers' order, sharing storage with the layers above.
    params: Vec<(String, Tensor)>,
}

impl BertClassifier {
    /// Builds the model from a complete set of named parameters (see
    /// [`weights::parameter_shapes`]). The tensors are used as they are: pass `Var`s' tensors
    /// to train, plain tensors for inference.
    pub fn from_tensors(
        config: &BertConfig,
        num_labels: usize,
        tensors: &HashMap<String, Tensor>,
    ) -> Result<Self> {
        let w = Weights::new(tensors.clone());
        let params = weights::parameter_shapes(config, num_labels)
            .into_iter()
            .map(|(name, _)| Ok((name.clone(), w.get(&name)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            config: config.clone(),
            encoder: BertEncoder::load(&w, config)?,
            pooler: Pooler::load(&w)?,
            classifier: Linear::load(&w, "classifier")?,
            num_labels,
            params,
        })
    }

    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    pub fn num_labels(&self) -> usize {
        self.num_labels
    }

    pub fn parameters(&self) -> &[(String, Tensor)] {
        &self.params
    }

    /// The same model on weights cast to `dtype`; the casts stay in the graph, so gradients
    /// flow back to the original weights in their own dtype.
    pub fn cast(&self, dtype: DType) -> Result<Self> {
        let tensors = self
            .params
            .iter()
            .map(|(n, t)| Ok((n.clone(), t.to_dtype(dtype)?)))
            .collect::<Result<_>>()?;
        Self::from_tensors(&self.config, self.num_labels, &tensors)
    }

    /// The same weights without gradient tracking: inference on it builds no graph.
    pub fn detached(&self) -> Result<Self> {
        let tensors = self
            .params
            .iter()
            .map(|(n, t)| (n.clone(), t.detach()))
            .collect();
        Self::from_tensors(&self.config, self.num_labels, &tensors)
    }

    /// The whole forward pass, with the last hidden state of every token.
    pub fn forward(&self, batch: &Batch, mode: &mut ForwardMode) -> Result<Outputs> {
        self.run(batch, false, mode)
    }

    /// The logits alone: the last layer runs for the [CLS] token only (see
    /// [`encoder::BertEncoder::forward`]). What training, evaluation and prediction use.
    pub fn classify(&self, batch: &Batch, mode: &mut ForwardMode) -> Result<Tensor> {
        Ok(self.run(batch, true, mode)?.logits)
    }

    /// Logits with dropout off.
    pub fn logits(&self, batch: &Batch) -> Result<Tensor> {
        self.classify(batch, &mut ForwardMode::eval())
    }

    fn run(&self, batch: &Batch, cls_only: bool, mode: &mut ForwardMode) -> Result<Outputs> {
        let hidden = self.encoder.forward(
            &batch.input_ids,
            &batch.token_type_ids,
            &batch.attention_mask,
            cls_only,
            mode,
        )?;
        let pooled = self.pooler.forward(&hidden)?;
        let dropped = mode.dropout(&pooled, self.config.classifier_dropout_prob())?;
        let logits = self.classifier.forward(&dropped)?;
        Ok(Outputs {
            hidden,
            pooled,
            logits,
        })
    }

    /// Writes `model.safetensors` and `config.json` into `dir`.
    pub fn save(&self, dir: &Path, labels: &LabelSet) -> Result<()> {
        weights::save(&dir.join("model.safetensors"), &self.params)?;
        let mut config = self.config.clone();
        config.set_labels(labels, &crate::task::Task::SingleLabel);
        config.save(dir)
    }
}

/// Mean cross-entropy of `logits` (batch, labels) against `labels` (batch) u32, computed in
/// f32 at least.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let logits = match logits.dtype() {
        DType::F16 | DType::BF16 => logits.to_dtype(DType::F32)?,
        _ => logits.clone(),
    };
    Ok(candle_nn::loss::cross_entropy(&logits, labels)?)
}

/// Training settings stored beside a fine-tuned model (`training_args.json`); inference reads
/// `max_seq_length` from it.
pub const TRAINING_ARGS: &str = "training_args.json";
