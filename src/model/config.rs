//! `config.json` of a BERT model folder, read and written as `transformers` does.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::architecture::{self, Architecture};

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
    Tanh,
    /// Exact GELU with erf (`"gelu"`).
    Gelu,
    /// The tanh approximation (`"gelu_new"`, `"gelu_pytorch_tanh"`).
    GeluTanh,
    Relu,
}

/// The settings every architecture shares, under BERT's config.json keys (an architecture
/// that spells them otherwise maps its keys onto these; see
/// [`Architecture::config_aliases`](super::architecture::Architecture::config_aliases)).
#[derive(Debug, Clone, Deserialize)]
struct Common {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default = "default_dropout")]
    hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    attention_probs_dropout_prob: f64,
    #[serde(default = "default_positions")]
    max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    type_vocab_size: usize,
    #[serde(default = "default_init_range")]
    initializer_range: f64,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default)]
    pad_token_id: Option<u32>,
    #[serde(default = "default_position_type")]
    position_embedding_type: String,
    #[serde(default)]
    classifier_dropout: Option<f64>,
    #[serde(default)]
    embedding_size: Option<usize>,
    #[serde(default)]
    id2label: Option<BTreeMap<String, String>>,
    #[serde(default)]
    label2id: Option<BTreeMap<String, i64>>,
}

/// `config.json` of a model folder: the architecture its `model_type` names, the settings
/// every architecture shares (under BERT's names), and the file itself, which is written back
/// with only the keys bertcls sets changed, in the architecture's own spelling.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    model_type: String,
    architecture: &'static dyn Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: String,
    pub hidden_dropout_prob: f64,
    pub attention_probs_dropout_prob: f64,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub initializer_range: f64,
    pub layer_norm_eps: f64,
    pub pad_token_id: u32,
    pub position_embedding_type: String,
    pub classifier_dropout: Option<f64>,
    /// ELECTRA's embedding width; the hidden size elsewhere.
    pub embedding_size: usize,
    pub id2label: Option<BTreeMap<String, String>>,
    pub label2id: Option<BTreeMap<String, i64>>,
    /// The file as read, every key kept.
    raw: Map<String, Value>,
}

impl PartialEq for ModelConfig {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

impl Serialize for ModelConfig {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ModelConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Map::deserialize(deserializer)?;
        Self::from_map(raw).map_err(serde::de::Error::custom)
    }
}

impl Activation {
    /// The activation config.json's `field` names as `name`.
    pub fn named(field: &str, name: &str) -> Result<Self> {
        match name {
            "gelu" => Ok(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Ok(Activation::GeluTanh),
            "relu" => Ok(Activation::Relu),
            "tanh" => Ok(Activation::Tanh),
            other => bail!("{field} `{other}` is not supported (gelu, gelu_new, relu, tanh)"),
        }
    }
}

impl ModelConfig {
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "{}: model folder has no readable config.json",
                dir.display()
            )
        })?;
        let raw: Map<String, Value> = serde_json::from_slice(&bytes)
            .map_err(|e| anyhow::anyhow!("{}:{}:{}: {e}", path.display(), e.line(), e.column()))?;
        let config = Self::from_map(raw).with_context(|| path.display().to_string())?;
        config
            .validate()
            .with_context(|| path.display().to_string())?;
        Ok(config)
    }

    /// Reads the shared settings of a parsed config.json; `model_type` defaults to `bert`, as
    /// for configs older than the key.
    fn from_map(raw: Map<String, Value>) -> Result<Self> {
        let model_type = match raw.get("model_type") {
            None => "bert".to_string(),
            Some(Value::String(t)) => t.clone(),
            Some(other) => bail!("model_type is {other}: expected a string"),
        };
        let arch = architecture::find(&model_type)?;
        let mut common = raw.clone();
        for (theirs, ours) in arch.config_aliases() {
            match raw.get(*theirs) {
                Some(value) => common.insert((*ours).to_string(), value.clone()),
                None => common.remove(*ours),
            };
        }
        // An explicit null is no value, as for transformers' config classes.
        for (key, value) in arch.config_defaults() {
            if common.get(key).is_none_or(Value::is_null) {
                common.insert(key.to_string(), value);
            }
        }
        let c: Common = serde_json::from_value(Value::Object(common)).map_err(|e| {
            let message = e.to_string();
            // Name the architecture's own key where serde names BERT's.
            let message = arch
                .config_aliases()
                .iter()
                .fold(message, |m, (theirs, ours)| {
                    m.replace(&format!("`{ours}`"), &format!("`{theirs}`"))
                });
            anyhow::anyhow!("{message}")
        })?;
        Ok(Self {
            model_type,
            architecture: arch,
            vocab_size: c.vocab_size,
            hidden_size: c.hidden_size,
            num_hidden_layers: c.num_hidden_layers,
            num_attention_heads: c.num_attention_heads,
            intermediate_size: c.intermediate_size,
            hidden_act: c.hidden_act,
            hidden_dropout_prob: c.hidden_dropout_prob,
            attention_probs_dropout_prob: c.attention_probs_dropout_prob,
            max_position_embeddings: c.max_position_embeddings,
            type_vocab_size: c.type_vocab_size,
            initializer_range: c.initializer_range,
            layer_norm_eps: c.layer_norm_eps,
            pad_token_id: c.pad_token_id.unwrap_or(0),
            position_embedding_type: c.position_embedding_type,
            classifier_dropout: c.classifier_dropout,
            embedding_size: c.embedding_size.unwrap_or(c.hidden_size),
            id2label: c.id2label,
            label2id: c.label2id,
            raw,
        })
    }

    /// `model_type` as config.json gives it (`bert` when it gives none).
    pub fn model_type(&self) -> &str {
        &self.model_type
    }

    /// Checks a tokenizer of `vocab` tokens (added ones included) against the model's
    /// embedding table: a larger one would look up rows the model does not have.
    pub fn check_vocabulary(&self, vocab: usize) -> Result<()> {
        if vocab > self.vocab_size {
            bail!(
                "the tokenizer has {vocab} tokens but vocab_size is {}: its last ids have no \
                 embedding",
                self.vocab_size
            );
        }
        Ok(())
    }

    /// The architecture `model_type` names.
    pub fn architecture(&self) -> &'static dyn Architecture {
        self.architecture
    }

    /// A key of the file as written.
    pub fn raw(&self, key: &str) -> Option<&Value> {
        self.raw.get(key)
    }

    /// The most tokens one input may have (RoBERTa's positions start after the padding id).
    pub fn max_tokens(&self) -> usize {
        self.architecture().max_tokens(self)
    }

    /// Sets a shared setting both here and in the file, under the architecture's own key.
    fn set_raw(&mut self, key: &str, value: Value) {
        let key = self
            .architecture()
            .config_aliases()
            .iter()
            .find(|(_, ours)| *ours == key)
            .map_or(key, |(theirs, _)| theirs);
        self.raw.insert(key.to_string(), value);
    }

    /// Overrides the dropout probabilities (a training config's settings).
    pub fn set_dropout(
        &mut self,
        hidden: Option<f64>,
        attention: Option<f64>,
        classifier: Option<f64>,
    ) {
        if let Some(p) = hidden {
            self.hidden_dropout_prob = p;
            self.set_raw("hidden_dropout_prob", Value::from(p));
        }
        if let Some(p) = attention {
            self.attention_probs_dropout_prob = p;
            self.set_raw("attention_probs_dropout_prob", Value::from(p));
        }
        if let Some(p) = classifier {
            self.classifier_dropout = Some(p);
            self.set_raw("classifier_dropout", Value::from(p));
        }
    }

    pub fn validate(&self) -> Result<()> {
        for (field, value, max) in [
            ("vocab_size", self.vocab_size, MAX_VOCAB_SIZE),
            ("hidden_size", self.hidden_size, MAX_HIDDEN_SIZE),
            ("embedding_size", self.embedding_size, MAX_HIDDEN_SIZE),
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
        ] {
            if value == 0 || value > max {
                bail!("{field} is {value}: it must be between 1 and {max}");
            }
        }
        // 0 is DeBERTa's default (no token type embeddings); BERT's embeddings check their own.
        if self.type_vocab_size > MAX_TYPE_VOCAB_SIZE {
            bail!(
                "type_vocab_size is {}: it must be at most {MAX_TYPE_VOCAB_SIZE}",
                self.type_vocab_size
            );
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
        self.architecture().validate(self)
    }

    pub fn activation(&self) -> Result<Activation> {
        Activation::named("hidden_act", &self.hidden_act)
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
        self.raw.get("problem_type").and_then(Value::as_str)
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
        self.raw.get("thresholds")
    }

    /// Records the labels, the task and the classification class, as `save_pretrained` of
    /// the architecture's `...ForSequenceClassification` writes them, and a multi-label
    /// model's thresholds (transformers keeps the key and ignores it).
    pub fn set_labels(&mut self, labels: &LabelSet, task: &Task) {
        let id2label: BTreeMap<String, String> = labels
            .names()
            .iter()
            .enumerate()
            .map(|(i, n)| (i.to_string(), n.clone()))
            .collect();
        let label2id: BTreeMap<String, i64> = labels
            .names()
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i as i64))
            .collect();
        let class = self
            .architecture()
            .model_types()
            .iter()
            .find(|(t, _)| *t == self.model_type)
            .map_or("BertForSequenceClassification", |(_, class)| class);
        let raw = &mut self.raw;
        raw.insert("id2label".into(), serde_json::json!(id2label));
        raw.insert("label2id".into(), serde_json::json!(label2id));
        raw.insert("architectures".into(), serde_json::json!([class]));
        raw.insert("model_type".into(), Value::String(self.model_type.clone()));
        raw.insert("num_labels".into(), Value::from(labels.len()));
        raw.insert(
            "problem_type".into(),
            Value::String(task.problem_type().into()),
        );
        match task {
            Task::MultiLabel { thresholds } => {
                raw.insert("thresholds".into(), Value::from(thresholds.clone()));
            }
            _ => {
                raw.remove("thresholds");
            }
        }
        self.id2label = Some(id2label);
        self.label2id = Some(label2id);
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
        let mut c: ModelConfig = serde_json::from_str(json).unwrap();
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
        let back: ModelConfig = serde_json::from_value(out).unwrap();
        assert_eq!(back.labels().unwrap().names(), &["neg", "pos"]);
    }

    #[test]
    fn rejects_unsupported_models() {
        let base = r#""hidden_size":32,"num_hidden_layers":1,"num_attention_heads":4,"intermediate_size":8,"vocab_size":10"#;
        let parse = |extra: &str| {
            serde_json::from_str::<ModelConfig>(&format!("{{{base}{extra}}}"))
                .map_err(anyhow::Error::from)
                .and_then(|c| c.validate())
        };
        assert!(parse("").is_ok());
        assert!(parse(r#","model_type":"roberta""#).is_ok());
        let gpt2 = parse(r#","model_type":"gpt2""#).unwrap_err().to_string();
        assert!(
            gpt2.contains("`gpt2` is not supported (supported: bert, roberta"),
            "{gpt2}"
        );
        assert!(parse(r#","hidden_act":"swish""#).is_err());
        assert!(parse(r#","position_embedding_type":"relative_key""#).is_err());
    }

    fn config(json: serde_json::Value) -> ModelConfig {
        let c: ModelConfig = serde_json::from_value(json).unwrap();
        c.validate().unwrap();
        c
    }

    #[test]
    fn architectures_keep_their_own_keys_and_defaults() {
        let sizes = serde_json::json!({"vocab_size": 10, "hidden_size": 8,
            "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16});
        let with = |extra: serde_json::Value| {
            let mut c = sizes.clone();
            c.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            c
        };
        // DistilBERT's spelling, read under BERT's names and written back as it was.
        let mut distil = config(
            serde_json::json!({"model_type": "distilbert", "vocab_size": 10,
            "dim": 8, "n_layers": 1, "n_heads": 2, "hidden_dim": 16, "dropout": 0.2}),
        );
        assert_eq!((distil.hidden_size, distil.hidden_dropout_prob), (8, 0.2));
        assert_eq!(
            distil.classifier_dropout_prob(),
            0.2,
            "seq_classif_dropout's default"
        );
        distil.set_dropout(Some(0.3), None, Some(0.4));
        let saved = serde_json::to_value(&distil).unwrap();
        assert_eq!(
            (
                saved["dropout"].as_f64(),
                saved["seq_classif_dropout"].as_f64()
            ),
            (Some(0.3), Some(0.4))
        );
        assert!(saved.get("hidden_dropout_prob").is_none() && saved.get("hidden_size").is_none());
        // DeBERTa's classifier dropout is `cls_dropout`.
        let mut deberta = config(with(serde_json::json!({"model_type": "deberta-v2"})));
        deberta.set_dropout(None, None, Some(0.3));
        let saved = serde_json::to_value(&deberta).unwrap();
        assert_eq!(saved["cls_dropout"].as_f64(), Some(0.3));
        assert!(saved.get("classifier_dropout").is_none());
        assert_eq!(deberta.type_vocab_size, 0);
        // An explicit null takes the class's default, as transformers does.
        let roberta = config(with(serde_json::json!({"model_type": "roberta",
            "pad_token_id": null, "max_position_embeddings": 20})));
        assert_eq!((roberta.pad_token_id, roberta.max_tokens()), (1, 18));
        let electra = config(with(serde_json::json!({"model_type": "electra"})));
        assert_eq!(electra.embedding_size, 128);
        // Values the architectures cannot build.
        let refused = |extra: serde_json::Value| {
            serde_json::from_value::<ModelConfig>(with(extra))
                .map_err(anyhow::Error::from)
                .and_then(|c| c.validate())
                .unwrap_err()
                .to_string()
        };
        assert!(
            refused(serde_json::json!({"type_vocab_size": 0})).contains("type_vocab_size is 0")
        );
        assert!(refused(serde_json::json!({"embedding_size": 0})).contains("embedding_size is 0"));
        let buckets = refused(
            serde_json::json!({"model_type": "deberta-v2", "relative_attention": true,
            "position_buckets": 8, "max_relative_positions": 5}),
        );
        assert!(
            buckets.contains("must exceed position_buckets / 2 + 1"),
            "{buckets}"
        );
        let act = refused(serde_json::json!({"model_type": "deberta-v2", "pooler_hidden_act": 5}));
        assert!(
            act.contains("pooler_hidden_act is 5: expected a string"),
            "{act}"
        );
        let vocab = config(sizes.clone())
            .check_vocabulary(11)
            .unwrap_err()
            .to_string();
        assert!(vocab.contains("11 tokens but vocab_size is 10"), "{vocab}");
    }
}
