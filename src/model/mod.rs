//! Sequence classification models of the BERT family: the architecture seam
//! ([`architecture`]), the parameter registry ([`params`]), shared layers and fused ops, one
//! file per architecture, and checkpoints ([`weights`]).

#[cfg(target_arch = "x86_64")]
mod amx;
pub mod architecture;
pub mod attention;
pub mod attention_train;
pub mod bert;
pub mod bf16;
pub mod config;
pub mod deberta;
pub mod distilbert;
pub mod electra;
pub mod int8;
pub mod layers;
pub mod ops;
pub mod params;
pub mod pickle;
pub mod roberta;
pub mod weights;

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;
use candle_core::{DType, Tensor};

use architecture::Network;
pub use architecture::Outputs;
pub use config::ModelConfig;
pub use layers::{ForwardMode, Products};
use params::{Param, Registry, Source, Tensors};

use crate::data::LabelSet;
use crate::tokenize::Batch;

/// A `...ForSequenceClassification` model of any supported architecture.
pub struct SequenceClassifier {
    config: ModelConfig,
    network: Box<dyn Network>,
    num_labels: usize,
    /// Every parameter in the order the network asked for them (transformers' order),
    /// sharing storage with the network.
    params: Vec<Param>,
    /// How the linear layers multiply.
    products: Products,
}

impl SequenceClassifier {
    /// Builds the model for `config`'s architecture, taking every parameter from `source`.
    pub fn build(config: &ModelConfig, num_labels: usize, source: &mut dyn Source) -> Result<Self> {
        Self::build_with(config, num_labels, source, Products::Plain)
    }

    /// As [`SequenceClassifier::build`], with every linear layer multiplying as `products`
    /// says.
    pub fn build_with(
        config: &ModelConfig,
        num_labels: usize,
        source: &mut dyn Source,
        products: Products,
    ) -> Result<Self> {
        let registry = Registry::new(source).with_products(products);
        let network = config
            .architecture()
            .build(config, num_labels, &registry.root())?;
        Ok(Self {
            config: config.clone(),
            network,
            num_labels,
            params: registry.into_params(),
            products,
        })
    }

    /// The same weights (the same tensors: gradients still reach them) with every linear
    /// layer multiplying as `products` says.
    pub fn with_products(&self, products: Products) -> Result<Self> {
        self.rebuilt(|t| Ok(t.clone()), products)
    }

    /// Builds the model from a complete set of named parameters. The tensors are used as they
    /// are: pass `Var`s' tensors to train, plain tensors for inference.
    pub fn from_tensors(
        config: &ModelConfig,
        num_labels: usize,
        tensors: &HashMap<String, Tensor>,
    ) -> Result<Self> {
        Self::build(config, num_labels, &mut Tensors(tensors))
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn num_labels(&self) -> usize {
        self.num_labels
    }

    pub fn parameters(&self) -> &[Param] {
        &self.params
    }

    /// Every parameter's name and tensor, to save.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .map(|p| (p.name.clone(), p.tensor.clone()))
            .collect()
    }

    /// The same model on each parameter mapped by `f`, its linear layers multiplying as
    /// `products` says.
    fn rebuilt(
        &self,
        f: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
        products: Products,
    ) -> Result<Self> {
        let tensors = self
            .params
            .iter()
            .map(|p| Ok((p.name.clone(), f(&p.tensor)?)))
            .collect::<Result<_>>()?;
        Self::build_with(
            &self.config,
            self.num_labels,
            &mut Tensors(&tensors),
            products,
        )
    }

    /// The same model on weights cast to `dtype`; the casts stay in the graph, so gradients
    /// flow back to the original weights in their own dtype.
    pub fn cast(&self, dtype: DType) -> Result<Self> {
        self.rebuilt(|t| t.to_dtype(dtype), self.products)
    }

    /// The same weights without gradient tracking: inference on it builds no graph.
    pub fn detached(&self) -> Result<Self> {
        self.rebuilt(|t| Ok(t.detach()), self.products)
    }

    /// The whole forward pass, with the last hidden state of every token.
    pub fn forward(&self, batch: &Batch, mode: &mut ForwardMode) -> Result<Outputs> {
        self.network.forward(batch, false, mode)
    }

    /// The logits alone: the last layer runs for the first token only (see
    /// [`bert::Encoder::forward`]). What training, evaluation and prediction use.
    pub fn classify(&self, batch: &Batch, mode: &mut ForwardMode) -> Result<Tensor> {
        Ok(self.network.forward(batch, true, mode)?.logits)
    }

    /// Logits for inference: dropout off, and no gradient may be taken of them (see
    /// [`ForwardMode::infer`]).
    pub fn logits(&self, batch: &Batch) -> Result<Tensor> {
        self.classify(batch, &mut ForwardMode::infer())
    }

    /// Writes `model.safetensors` and `config.json` into `dir`.
    pub fn save(&self, dir: &Path, labels: &LabelSet) -> Result<()> {
        weights::save(&dir.join("model.safetensors"), &self.named_tensors())?;
        let mut config = self.config.clone();
        config.set_labels(labels, &crate::task::Task::SingleLabel);
        config.save(dir)
    }
}

/// The kernel called `name` among the `available` ones (named by `name_of`), as the
/// environment variable `variable` asks; the error lists what this CPU runs.
fn kernel_named<K: Copy>(
    variable: &str,
    name: &str,
    available: &[K],
    name_of: fn(K) -> &'static str,
) -> std::result::Result<K, String> {
    available
        .iter()
        .copied()
        .find(|k| name_of(*k) == name)
        .ok_or_else(|| {
            let names: Vec<&str> = available.iter().map(|k| name_of(*k)).collect();
            format!(
                "{variable}={name}: not a kernel this CPU runs (it runs: {})",
                names.join(", ")
            )
        })
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
