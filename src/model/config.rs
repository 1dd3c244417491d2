//! `config.json` of a BERT model folder, read and written as `transformers` does.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::data::LabelSet;
use crate::task::Task;

fn default_act() -> String {
    "gelu".into()
}
fn default_dropout() -> f64 {
    0.1
}
fn default_positions() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_init_range() -> f64 {
    0.02
}
fn default_eps() -> f64 {
    1e-12
}
fn default_position_type() -> String {
    "absolute".into()
}

// Bounds far above any published BERT (BERT-large: vocabulary 30,522, hidden size 1,024,
// 24 layers, 4,096 intermediate, 512 positions) that stop a hostile config.json from making
// bertcls plan a model of 10^9 layers before the weights file is even opened.
const MAX_VOCAB_SIZE: usize = 1 << 22;
const MAX_HIDDEN_SIZE: usize = 1 << 16;
const MAX_LAYERS: usize = 1024;
const MAX_INTERMEDIATE_SIZE: usize = 1 << 18;
const MAX_POSITIONS: usize = 1 << 20;
const MAX_TYPE_VOCAB_SIZE: usize = 1 << 16;
const MAX_LABELS: usize = 1 << 20;

/// The activation between the two feed-forward layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU with erf (`"gelu"`).
    Gelu,
    /// The tanh approximation (`"gelu_new"`, `"gelu_pytorch_tanh"`).
    GeluTanh,
    Relu,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: u32,
    #[serde(default = "default_position_type")]
    pub position_embedding_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier_dropout: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id2label: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label2id: Option<BTreeMap<String, i64>>,
    /// Every other key, kept so a saved config loses nothing.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

impl BertConfig {
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "{}: model folder has no readable config.json",
                dir.display()
            )
        })?;
        let config: Self = serde_json::from_slice(&bytes)
            .map_err(|e| anyhow::anyhow!("{}:{}:{}: {e}", path.display(), e.line(), e.column()))?;
        config
            .validate()
            .with_context(|| path.display().to_string())?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<()> {
        if let Some(Value::String(t)) = self.extra.get("model_type")
            && t != "bert"
        {
            bail!("model_type is `{t}`: bertcls runs BERT models only");
        }
        for (field, value, max) in [
            ("vocab_size", self.vocab_size, MAX_VOCAB_SIZE),
            ("hidden_size", self.hidden_size, MAX_HIDDEN_SIZE),
            ("num_hidden_layers", self.num_hidden_layers, MAX_LAYERS),
            (
                "num_attention_heads",
                self.num_attention_heads,
                MAX_HIDDEN_SIZE,
            ),
            (
                "intermediate_size",
                self.intermediate_size,
                MAX_INTERMEDIATE_SIZE,
            ),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                MAX_POSITIONS,
            ),
            ("type_vocab_size", self.type_vocab_size, MAX_TYPE_VOCAB_SIZE),
        ] {
            if value == 0 || value > max {
                bail!("{field} is {value}: it must be between 1 and {max}");
            }
        }
        let labels = self.id2label.as_ref().map_or(0, BTreeMap::len);
        if labels > MAX_LABELS {
            bail!("id2label has {labels} labels: at most {MAX_LABELS} are supported");
        }
        for (field, p) in [
            ("hidden_dropout_prob", self.hidden_dropout_prob),
            (
                "attention_probs_dropout_prob",
                self.attention_probs_dropout_prob,
            ),
            ("classifier_dropout", self.classifier_dropout_prob()),
        ] {
            if !(0.0..1.0).contains(&p) {
                bail!("{field} is {p}: it must be at least 0 and below 1");
            }
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            bail!(
                "layer_norm_eps is {}: it must be positive",
                self.layer_norm_eps
            );
        }
        if !(self.initializer_range.is_finite() && self.initializer_range >= 0.0) {
            bail!(
                "initializer_range is {}: it must be a finite non-negative number",
                self.initializer_range
            );
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            bail!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size,
                self.num_attention_heads
            );
        }
        if self.position_embedding_type != "absolute" {
            bail!(
                "position_embedding_type `{}` is not supported (only `absolute`)",
                self.position_embedding_type
            );
        }
        self.activation()?;
        Ok(())
    }

    pub fn activation(&self) -> Result<Activation> {
        match self.hidden_act.as_str() {
            "gelu" => Ok(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Ok(Activation::GeluTanh),
            "relu" => Ok(Activation::Relu),
            other => bail!("hidden_act `{other}` is not supported (gelu, gelu_new, relu)"),
        }
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// The dropout before the classifier: `classifier_dropout`, else `hidden_dropout_prob`.
    pub fn classifier_dropout_prob(&self) -> f64 {
        self.classifier_dropout.unwrap_or(self.hidden_dropout_prob)
    }

    /// transformers' `problem_type`, when config.json names one.
    pub fn problem_type(&self) -> Option<&str> {
        self.extra.get("problem_type").and_then(Value::as_str)
    }

    /// The labels a fine-tuned model was trained on, in id order.
    pub fn labels(&self) -> Option<LabelSet> {
        let map = self.id2label.as_ref()?;
        let mut pairs: Vec<(usize, String)> = map
            .iter()
            .filter_map(|(k, v)| Some((k.parse().ok()?, v.clone())))
            .collect();
        pairs.sort();
        let contiguous = pairs.iter().enumerate().all(|(i, (id, _))| *id == i);
        (contiguous && pairs.len() == map.len() && !pairs.is_empty())
            .then(|| LabelSet::from_names(pairs.into_iter().map(|(_, n)| n).collect()))
    }

    /// The multi-label thresholds bertcls saved (`thresholds`, one per label), unchecked.
    pub fn thresholds(&self) -> Option<&Value> {
        self.extra.get("thresholds")
    }

    /// Records the labels, the task and the classification architecture, as
    /// `save_pretrained` of a `BertForSequenceClassification` writes them, and a multi-label
    /// model's thresholds (transformers keeps the key and ignores it).
    pub fn set_labels(&mut self, labels: &LabelSet, task: &Task) {
        self.id2label = Some(
            labels
                .names()
                .iter()
                .enumerate()
                .map(|(i, n)| (i.to_string(), n.clone()))
                .collect(),
        );
        self.label2id = Some(
            labels
                .names()
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), i as i64))
                .collect(),
        );
        self.extra.insert(
            "architectures".into(),
            Value::Array(vec![Value::String("BertForSequenceClassification".into())]),
        );
        self.extra
            .insert("model_type".into(), Value::String("bert".into()));
        self.extra
            .insert("num_labels".into(), Value::from(labels.len()));
        self.extra.insert(
            "problem_type".into(),
            Value::String(task.problem_type().into()),
        );
        match task {
            Task::MultiLabel { thresholds } => {
                self.extra
                    .insert("thresholds".into(), Value::from(thresholds.clone()));
            }
            _ => {
                self.extra.remove("thresholds");
            }
        }
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        crate::atomic::write_json(dir.join("config.json"), self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_minilm_style_config_and_keeps_unknown_keys() {
        let json = r#"{"architectures":["BertModel"],"hidden_size":384,"num_hidden_layers":6,
            "num_attention_heads":12,"intermediate_size":1536,"vocab_size":30522,
            "model_type":"bert","gradient_checkpointing":false}"#;
        let mut c: BertConfig = serde_json::from_str(json).unwrap();
        c.validate().unwrap();
        assert_eq!(c.head_dim(), 32);
        assert_eq!(c.layer_norm_eps, 1e-12);
        assert_eq!(c.classifier_dropout_prob(), 0.1);
        c.set_labels(
            &LabelSet::from_names(vec!["neg".into(), "pos".into()]),
            &Task::SingleLabel,
        );
        let out = serde_json::to_value(&c).unwrap();
        assert_eq!(out["gradient_checkpointing"], false);
        assert_eq!(out["id2label"]["1"], "pos");
        assert_eq!(out["label2id"]["neg"], 0);
        assert_eq!(out["num_labels"], 2);
        assert_eq!(out["architectures"][0], "BertForSequenceClassification");
        let back: BertConfig = serde_json::from_value(out).unwrap();
        assert_eq!(back.labels().unwrap().names(), &["neg", "pos"]);
    }

    #[test]
    fn rejects_unsupported_models() {
        let base = r#""hidden_size":32,"num_hidden_layers":1,"num_attention_heads":4,"intermediate_size":8,"vocab_size":10"#;
        let parse = |extra: &str| {
            serde_json::from_str::<BertConfig>(&format!("{{{base}{extra}}}"))
                .unwrap()
                .validate()
        };
        assert!(parse("").is_ok());
        assert!(parse(r#","model_type":"roberta""#).is_err());
        assert!(parse(r#","hidden_act":"swish""#).is_err());
        assert!(parse(r#","position_embedding_type":"relative_key""#).is_err());
    }
}
