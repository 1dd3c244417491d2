//! Tiny randomly initialised BERT model folders, for tests and benchmarks that must not depend
//! on a download. They are ordinary Hugging Face folders (config.json, vocab.txt,
//! model.safetensors), written the way published checkpoints are.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;
use candle_core::{Device, Tensor};

use crate::data::LabelSet;
use crate::model::params::{Kind, Request, Source};
use crate::model::weights;
use crate::model::{ModelConfig, SequenceClassifier};
use crate::rng::Rng;

/// A WordPiece vocabulary of a few English words and the Chinese characters of the smoke
/// example.
pub const TINY_VOCAB: &[&str] = &[
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie", "was", "good", "bad", "great",
    "awful", "not", "very", "a", "film", "##s", "fun", "boring", ",", ".", "!", "?", "what", "who",
    "where", "when", "how", "is", "are", "city", "name", "many", "year", "person", "我", "喜",
    "欢", "这", "本", "书", "很", "糟", "糕",
];

/// How a tiny checkpoint is written.
#[derive(Debug, Clone)]
pub struct TinyModel {
    pub hidden_size: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub seed: u64,
    /// Names with the `bert.` prefix (as fine-tuned checkpoints) or without (as base models).
    pub bert_prefix: bool,
    /// Old-style `LayerNorm.gamma` / `LayerNorm.beta` names.
    pub gamma_beta: bool,
    /// Include a classification head for these labels (a fine-tuned model).
    pub labels: Option<LabelSet>,
    pub dropout: f64,
}

impl Default for TinyModel {
    fn default() -> Self {
        Self {
            hidden_size: 32,
            layers: 2,
            heads: 4,
            intermediate_size: 64,
            max_position_embeddings: 64,
            seed: 0,
            bert_prefix: false,
            gamma_beta: false,
            labels: None,
            dropout: 0.1,
        }
    }
}

impl TinyModel {
    pub fn config(&self) -> ModelConfig {
        let mut config: ModelConfig = serde_json::from_value(serde_json::json!({
            "model_type": "bert",
            "architectures": ["BertModel"],
            "vocab_size": TINY_VOCAB.len(),
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings,
            "hidden_dropout_prob": self.dropout,
            "attention_probs_dropout_prob": self.dropout,
            "hidden_act": "gelu",
            "type_vocab_size": 2,
            "initializer_range": 0.02,
            "layer_norm_eps": 1e-12,
            "pad_token_id": 0,
            "position_embedding_type": "absolute",
        }))
        .expect("a literal config deserializes");
        if let Some(labels) = &self.labels {
            config.set_labels(labels, &crate::task::Task::SingleLabel);
        }
        config
    }

    /// Random parameters under transformers' names: weights ~ N(0, 0.2), layer norm weights
    /// near 1, biases ~ N(0, 0.1). Larger than a real initialisation so that signals and
    /// gradients stay well above rounding noise in a network this small.
    pub fn parameters(&self) -> Result<HashMap<String, Tensor>> {
        let num_labels = self.labels.as_ref().map_or(2, LabelSet::len);
        random_parameters(&self.config(), num_labels, self.seed)
    }

    /// Writes the model folder.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("vocab.txt"), TINY_VOCAB.join("\n") + "\n")?;
        self.config().save(dir)?;
        let mut named: Vec<(String, Tensor)> = self
            .parameters()?
            .into_iter()
            .filter(|(name, _)| self.labels.is_some() || !name.starts_with("classifier."))
            .map(|(name, t)| (self.checkpoint_name(&name), t))
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        weights::save(&dir.join("model.safetensors"), &named)
    }

    fn checkpoint_name(&self, name: &str) -> String {
        let mut name = name.to_string();
        if !self.bert_prefix {
            name = name.strip_prefix("bert.").unwrap_or(&name).to_string();
        }
        if self.gamma_beta && name.contains("LayerNorm") {
            name = name
                .replace("LayerNorm.weight", "LayerNorm.gamma")
                .replace("LayerNorm.bias", "LayerNorm.beta");
        }
        name
    }
}

/// Random parameters for any architecture's `config`, drawn as [`TinyModel::parameters`]
/// draws them.
pub fn random_parameters(
    config: &ModelConfig,
    num_labels: usize,
    seed: u64,
) -> Result<HashMap<String, Tensor>> {
    let mut source = RandomParameters(Rng::new(seed));
    let model = SequenceClassifier::build(config, num_labels, &mut source)?;
    Ok(model.named_tensors().into_iter().collect())
}

struct RandomParameters(Rng);

impl Source for RandomParameters {
    fn tensor(&mut self, r: &Request) -> Result<Tensor> {
        let n: usize = r.shape.iter().product();
        let scale = if r.name.ends_with(".bias") { 0.1 } else { 0.2 };
        let mut data: Vec<f32> = (0..n).map(|_| (self.0.normal() * scale) as f32).collect();
        if r.kind == Kind::Norm && r.name.ends_with(".weight") {
            data.iter_mut().for_each(|v| *v = 1.0 + *v * 0.5);
        }
        Ok(Tensor::from_vec(data, r.shape, &Device::Cpu)?)
    }
}

/// The largest absolute difference between two tensors of one shape, in f64 whatever their
/// dtype. For tests: it panics on tensors it cannot compare.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    let f64s = |t: &Tensor| {
        t.to_dtype(candle_core::DType::F64)
            .expect("a numeric tensor")
    };
    (f64s(a) - f64s(b))
        .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>())
        .expect("tensors of one shape")
}

/// `f`'s result on rayon pools of 1, 2, 3 and 8 threads, which split parallel work into
/// different trees of tasks: a computation whose bits depend on the order its tasks finish
/// gives different results here (asserted equal, so such a test fails).
pub fn same_on_any_thread_count<T: PartialEq + std::fmt::Debug + Send>(
    f: impl Fn() -> T + Sync,
) -> T {
    let on = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a thread pool")
            .install(&f)
    };
    let one = on(1);
    for threads in [2, 3, 8] {
        assert_eq!(on(threads), one, "{threads} threads against 1");
    }
    one
}
