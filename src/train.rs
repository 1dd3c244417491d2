//! Fine-tuning: data, model and optimizer set up from a [`TrainConfig`], the training loop,
//! evaluation during training, and the output folder (an ordinary Hugging Face model folder
//! holding the best model, plus trainer_state.json and results files).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor, Var};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::json;

use crate::config::{IntervalStrategy, TrainConfig};
use crate::data::{self, Columns, Example, Format, LabelSet};
use crate::eval::evaluate_encoded;
use crate::metrics::Report;
use crate::model::weights::{self, HeadInit};
use crate::model::{self, BertClassifier, BertConfig, ForwardMode, TRAINING_ARGS};
use crate::optim::{AdamW, AdamWConfig, Gradients, LrSchedule};
use crate::predict::Scorer;
use crate::rng::Rng;
use crate::tokenize::{Batch, Encoded, TextEncoder};
use crate::{atomic, device, source};

/// Independent random streams derived from the seed.
mod stream {
    pub const HEAD: u64 = 1;
    pub const SPLIT: u64 = 2;
    pub const SHUFFLE: u64 = 3;
    pub const DROPOUT: u64 = 4;
}

/// Labelled, tokenized data.
pub struct Split {
    pub examples: Vec<Example>,
    pub encoded: Vec<Encoded>,
}

impl Split {
    fn labels(&self) -> Vec<usize> {
        self.examples.iter().map(|e| e.label).collect()
    }
}

/// Training and validation data with the label set of the training file.
pub struct Prepared {
    pub labels: LabelSet,
    pub train: Split,
    pub validation: Option<Split>,
}

fn format_of(path: &Path) -> Result<Format> {
    Ok(Format::from_path(path)?)
}

/// Reads the training and validation data named by the config and tokenizes it.
pub fn prepare_data(config: &TrainConfig, tokenizer: &TextEncoder) -> Result<Prepared> {
    let train_columns = Columns {
        text: config.text_column.clone(),
        text_pair: config.text_pair_column.clone(),
        label: Some(config.label_column.clone()),
    };
    let train_file = &config.train_file;
    let split_off = config.validation_split_percentage.is_some();
    // With a carved-out validation split the whole file is read first, so the split does not
    // depend on max_train_samples.
    let limit = if split_off {
        None
    } else {
        config.max_train_samples
    };
    let mut train_rows =
        data::read_rows(train_file, format_of(train_file)?, &train_columns, limit)?;
    let mut validation_rows = None;
    if let Some(percent) = config.validation_split_percentage {
        let mut rng = Rng::derive(config.seed, stream::SPLIT);
        rng.shuffle(&mut train_rows);
        let held = ((train_rows.len() as f64 * percent / 100.0).round() as usize).max(1);
        if held >= train_rows.len() {
            bail!(
                "{}: too few rows to hold out {percent}% for validation",
                train_file.display()
            );
        }
        let mut held_out = train_rows.split_off(train_rows.len() - held);
        // Keep file order within each part, so max_train_samples means "the first N rows".
        train_rows.sort_by_key(|r| r.line);
        held_out.sort_by_key(|r| r.line);
        if let Some(n) = config.max_train_samples {
            train_rows.truncate(n);
        }
        validation_rows = Some((train_file.clone(), held_out));
    }
    if let Some(file) = &config.validation_file {
        let columns = Columns {
            text: config
                .validation_text_column
                .clone()
                .unwrap_or_else(|| config.text_column.clone()),
            text_pair: config
                .validation_text_pair_column
                .clone()
                .or_else(|| config.text_pair_column.clone()),
            label: Some(
                config
                    .validation_label_column
                    .clone()
                    .unwrap_or_else(|| config.label_column.clone()),
            ),
        };
        let rows = data::read_rows(file, format_of(file)?, &columns, None)?;
        validation_rows = Some((file.clone(), rows));
    }
    let labels = LabelSet::from_rows(&train_rows);
    if labels.len() < 2 {
        bail!(
            "{}: column `{}` has {} distinct label(s); a classifier needs at least two",
            train_file.display(),
            config.label_column,
            labels.len()
        );
    }
    let encode = |examples: Vec<Example>| -> Result<Split> {
        let inputs: Vec<(&str, Option<&str>)> = examples
            .iter()
            .map(|e| (e.text.as_str(), e.text_pair.as_deref()))
            .collect();
        let encoded = tokenizer.encode(&inputs)?;
        Ok(Split { examples, encoded })
    };
    let train = encode(data::label_rows(train_file, train_rows, &labels)?)?;
    let validation = match validation_rows {
        Some((file, mut rows)) => {
            if let Some(n) = config.max_eval_samples {
                rows.truncate(n);
            }
            Some(encode(data::label_rows(&file, rows, &labels)?)?)
        }
        None => None,
    };
    Ok(Prepared {
        labels,
        train,
        validation,
    })
}

/// The batches of one epoch, as indices into the training set: a shuffle drawn from
/// `(seed, epoch)`; with `group_by_length`, sorted by length (longest first) within
/// mega-batches of 50 batches and the batches shuffled again, as `Trainer` does, so that
/// batches hold similar lengths and little padding.
pub fn epoch_batches(
    lengths: &[usize],
    batch_size: usize,
    seed: u64,
    epoch: usize,
    group_by_length: bool,
) -> Vec<Vec<usize>> {
    let mut rng = Rng::derive(seed, stream::SHUFFLE ^ ((epoch as u64 + 1) << 8));
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    rng.shuffle(&mut order);
    if group_by_length {
        for mega in order.chunks_mut(batch_size * 50) {
            mega.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
        }
    }
    let mut batches: Vec<Vec<usize>> = order.chunks(batch_size).map(<[usize]>::to_vec).collect();
    if group_by_length && batches.len() > 1 {
        // The longest batch first: an out-of-memory error shows at once, as in Trainer.
        let longest = (0..batches.len())
            .max_by_key(|&b| batches[b].iter().map(|&i| lengths[i]).max().unwrap_or(0))
            .unwrap_or(0);
        batches.swap(0, longest);
        rng.shuffle(&mut batches[1..]);
    }
    batches
}

/// One entry of `trainer_state.json`'s `log_history`.
#[derive(Debug, Clone, Serialize)]
pub struct LogEntry {
    pub step: usize,
    pub epoch: f64,
    #[serde(flatten)]
    pub values: serde_json::Map<String, serde_json::Value>,
}

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
    /// Validation metrics of the saved (best) model.
    pub eval: Option<Report>,
}

/// Peak resident memory of this process (Linux), in MB.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn check_output_dir(config: &TrainConfig) -> Result<()> {
    let dir = &config.output_dir;
    if dir.is_file() {
        bail!("output_dir {} is a file", dir.display());
    }
    let non_empty = std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some());
    if non_empty && !config.overwrite_output_dir {
        bail!(
            "output_dir {} is not empty: pass --overwrite-output-dir (or set overwrite_output_dir = true) to replace it",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create output_dir {}", dir.display()))?;
    let probe = dir.join(".bertcls-write-test");
    std::fs::write(&probe, b"")
        .with_context(|| format!("cannot write to output_dir {}", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Tokenizer files copied next to the model so `AutoTokenizer` knows casing and class.
const TOKENIZER_SIDE_FILES: [&str; 3] = [
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
];

/// Everything the output folder needs besides the weights, written once at the start.
fn write_model_files(
    config: &TrainConfig,
    model_dir: &Path,
    model_config: &BertConfig,
    labels: &LabelSet,
    tokenizer: &TextEncoder,
) -> Result<()> {
    let out = &config.output_dir;
    let mut model_config = model_config.clone();
    model_config.set_labels(labels);
    model_config.save(out)?;
    tokenizer.save(out)?;
    for name in TOKENIZER_SIDE_FILES {
        let src = model_dir.join(name);
        if src.is_file() {
            atomic::write(out.join(name), &std::fs::read(&src)?)?;
        }
    }
    atomic::write_json(out.join(TRAINING_ARGS), config)
}

fn best_value(report: &Report, config: &TrainConfig) -> f64 {
    use crate::config::BestMetric::*;
    match config.metric_for_best_model {
        Accuracy => report.accuracy,
        MacroF1 => report.macro_f1,
        WeightedF1 => report.weighted_f1,
        Loss => report.loss.unwrap_or(f64::INFINITY),
    }
}

fn is_better(candidate: f64, best: Option<f64>, config: &TrainConfig) -> bool {
    match best {
        None => true,
        Some(b) if config.metric_for_best_model.greater_is_better() => candidate > b,
        Some(b) => candidate < b,
    }
}

/// Applies the config's dropout overrides to the model's config.
fn model_config_for_training(model_dir: &Path, config: &TrainConfig) -> Result<BertConfig> {
    let mut c = BertConfig::load(model_dir)?;
    if let Some(p) = config.hidden_dropout_prob {
        c.hidden_dropout_prob = p;
    }
    if let Some(p) = config.attention_probs_dropout_prob {
        c.attention_probs_dropout_prob = p;
    }
    if let Some(p) = config.classifier_dropout {
        c.classifier_dropout = Some(p);
    }
    if config.max_seq_length > c.max_position_embeddings {
        bail!(
            "max_seq_length {} exceeds the model's max_position_embeddings {}",
            config.max_seq_length,
            c.max_position_embeddings
        );
    }
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
    pub model: BertClassifier,
    pub vars: Vec<Var>,
    pub names: Vec<String>,
}

impl Trainable {
    pub fn new(
        model_config: &BertConfig,
        num_labels: usize,
        tensors: &std::collections::HashMap<String, Tensor>,
    ) -> Result<Self> {
        let shapes = weights::parameter_shapes(model_config, num_labels);
        let mut vars = Vec::with_capacity(shapes.len());
        let mut names = Vec::with_capacity(shapes.len());
        let mut var_tensors = std::collections::HashMap::new();
        for (name, _) in shapes {
            let tensor = tensors
                .get(&name)
                .with_context(|| format!("missing parameter {name}"))?;
            let var = Var::from_tensor(tensor)?;
            var_tensors.insert(name.clone(), var.as_tensor().clone());
            vars.push(var);
            names.push(name);
        }
        let model = BertClassifier::from_tensors(model_config, num_labels, &var_tensors)?;
        Ok(Self { model, vars, names })
    }

    /// The loss of one batch and its gradients.
    pub fn loss_and_grads(
        &self,
        batch: &Batch,
        labels: &Tensor,
        mode: &mut ForwardMode,
        scale: f64,
    ) -> Result<(f64, candle_core::backprop::GradStore)> {
        let logits = self.model.forward(batch, mode)?.logits;
        let loss = model::cross_entropy(&logits, labels)?;
        let value = loss.to_scalar::<f32>()? as f64;
        let grads = (loss * scale)?.backward()?;
        Ok((value, grads))
    }
}

/// Runs a whole fine-tuning job.
pub fn train(config: &TrainConfig) -> Result<TrainOutcome> {
    let device = device::open(config.device_spec())?;
    eprintln!("device: {}", device::describe(&device));
    check_output_dir(config)?;
    let model_dir = source::resolve_first(&config.model_name_or_path.to_vec())?;
    eprintln!("model: {}", model_dir.display());
    let model_config = model_config_for_training(&model_dir, config)?;
    let tokenizer = TextEncoder::load(&model_dir, config.max_seq_length)?;

    let started = Instant::now();
    let data = prepare_data(config, &tokenizer)?;
    eprintln!(
        "data: {} training rows, {} validation rows, labels [{}] (read and tokenized in {:.1} s)",
        data.train.examples.len(),
        data.validation.as_ref().map_or(0, |v| v.examples.len()),
        data.labels.names().join(", "),
        started.elapsed().as_secs_f64()
    );
    let num_labels = data.labels.len();
    let loaded = weights::load(
        &model_dir,
        &model_config,
        num_labels,
        HeadInit::InitMissing(config.seed ^ stream::HEAD),
        &device,
    )?;
    if !loaded.initialized.is_empty() {
        eprintln!("newly initialised: {}", loaded.initialized.join(", "));
    }
    if !loaded.ignored.is_empty() {
        eprintln!(
            "not used from the checkpoint: {} tensor(s)",
            loaded.ignored.len()
        );
    }
    let trainable = Trainable::new(&model_config, num_labels, &loaded.tensors)?;
    drop(loaded);
    write_model_files(config, &model_dir, &model_config, &data.labels, &tokenizer)?;

    let mut trainer = Trainer::new(config, &trainable, &data, &tokenizer, device)?;
    let metrics = trainer.run()?;
    let eval = trainer.best.clone().map(|(_, r)| r);

    let mut all = serde_json::to_value(&metrics)?;
    atomic::write_json(config.output_dir.join("train_results.json"), &metrics)?;
    if let Some(report) = &eval {
        let eval_json = json!({
            "eval_accuracy": report.accuracy,
            "eval_macro_f1": report.macro_f1,
            "eval_weighted_f1": report.weighted_f1,
            "eval_loss": report.loss,
            "eval_samples": report.examples,
            "report": report,
        });
        atomic::write_json(config.output_dir.join("eval_results.json"), &eval_json)?;
        if let (Some(a), Some(e)) = (all.as_object_mut(), eval_json.as_object()) {
            for (k, v) in e.iter().filter(|(k, _)| *k != "report") {
                a.insert(k.clone(), v.clone());
            }
        }
    }
    atomic::write_json(config.output_dir.join("all_results.json"), &all)?;
    Ok(TrainOutcome {
        output_dir: config.output_dir.clone(),
        metrics,
        eval,
    })
}

struct Trainer<'a> {
    config: &'a TrainConfig,
    trainable: &'a Trainable,
    data: &'a Prepared,
    pad_id: u32,
    device: Device,
    log_history: Vec<LogEntry>,
    best: Option<(f64, Report)>,
    best_step: Option<usize>,
}

impl<'a> Trainer<'a> {
    fn new(
        config: &'a TrainConfig,
        trainable: &'a Trainable,
        data: &'a Prepared,
        tokenizer: &TextEncoder,
        device: Device,
    ) -> Result<Self> {
        Ok(Self {
            config,
            trainable,
            data,
            pad_id: tokenizer.pad_id(),
            device,
            log_history: Vec::new(),
            best: None,
            best_step: None,
        })
    }

    fn evaluate(&self) -> Result<Option<Report>> {
        let Some(validation) = &self.data.validation else {
            return Ok(None);
        };
        let model = self.trainable.model.detached()?;
        let scorer = Scorer {
            model: &model,
            pad_id: self.pad_id,
            batch_size: self.config.per_device_eval_batch_size,
            device: &self.device,
        };
        Ok(Some(evaluate_encoded(
            &scorer,
            &validation.encoded,
            &validation.labels(),
            &self.data.labels,
            None,
        )?))
    }

    fn save_model(&self) -> Result<()> {
        weights::save(
            &self.config.output_dir.join("model.safetensors"),
            self.trainable.model.parameters(),
        )
    }

    /// Evaluates, records the result, and saves the model if it is the best so far.
    fn evaluate_and_keep_best(
        &mut self,
        step: usize,
        epoch: f64,
    ) -> Result<Option<(Report, bool)>> {
        let Some(report) = self.evaluate()? else {
            return Ok(None);
        };
        let value = best_value(&report, self.config);
        let improved = is_better(value, self.best.as_ref().map(|b| b.0), self.config);
        let mut values = serde_json::Map::new();
        values.insert("eval_loss".into(), json!(report.loss));
        values.insert("eval_accuracy".into(), json!(report.accuracy));
        values.insert("eval_macro_f1".into(), json!(report.macro_f1));
        values.insert("eval_weighted_f1".into(), json!(report.weighted_f1));
        self.log_history.push(LogEntry {
            step,
            epoch,
            values,
        });
        if improved {
            self.save_model()?;
            self.best = Some((value, report.clone()));
            self.best_step = Some(step);
        }
        Ok(Some((report, improved)))
    }

    fn write_state(&self, step: usize, epoch: f64, total: usize) -> Result<()> {
        let state = json!({
            "global_step": step,
            "epoch": epoch,
            "max_steps": total,
            "num_train_epochs": self.config.num_train_epochs,
            "train_batch_size": self.config.per_device_train_batch_size,
            "logging_steps": self.config.logging_steps,
            "best_metric": self.best.as_ref().map(|b| b.0),
            "best_global_step": self.best_step,
            "metric_for_best_model": self.config.metric_for_best_model,
            "log_history": self.log_history,
        });
        atomic::write_json(self.config.output_dir.join("trainer_state.json"), &state)
    }

    /// One optimizer update over a group of micro-batches (gradient accumulation); returns
    /// the micro-batches' losses.
    fn update(
        &self,
        group: &[Vec<usize>],
        stats: &mut RunStats,
        grads: &mut Gradients,
        optimizer: &mut AdamW,
        lr: f64,
    ) -> Result<()> {
        let train = &self.data.train;
        let pad_to = self
            .config
            .pad_to_max_length
            .then_some(self.config.max_seq_length);
        for indices in group {
            let items: Vec<&Encoded> = indices.iter().map(|&i| &train.encoded[i]).collect();
            let batch = Batch::collate(&items, self.pad_id, pad_to, &self.device)?;
            let labels: Vec<u32> = indices
                .iter()
                .map(|&i| train.examples[i].label as u32)
                .collect();
            let labels = Tensor::new(labels.as_slice(), &self.device)?;
            stats.micro += 1;
            let seed = crate::rng::mix64(
                self.config.seed ^ crate::rng::mix64(stream::DROPOUT << 32 | stats.micro),
            );
            let mut mode = ForwardMode::train(seed);
            let (loss, store) = self.trainable.loss_and_grads(
                &batch,
                &labels,
                &mut mode,
                1.0 / group.len() as f64,
            )?;
            if !loss.is_finite() {
                bail!(
                    "training loss became {loss} at step {}: stopping (try a lower learning_rate); \
                     the best model so far is in {}",
                    stats.step + 1,
                    self.config.output_dir.display()
                );
            }
            grads.accumulate(&store, &self.trainable.vars)?;
            stats.record_batch(
                loss,
                indices.len(),
                batch.real_tokens,
                batch.input_ids.elem_count(),
            );
        }
        stats.grad_norm = grads.clip(self.config.max_grad_norm)?;
        optimizer.step(grads, lr)?;
        grads.clear();
        stats.step += 1;
        Ok(())
    }

    fn run(&mut self) -> Result<TrainMetrics> {
        let config = self.config;
        let train = &self.data.train;
        let n = train.examples.len();
        let (total, per_epoch) = total_updates(config, n);
        let epochs = total.div_ceil(per_epoch);
        let schedule = LrSchedule::new(
            config.learning_rate,
            config.lr_scheduler_type,
            total,
            config.warmup_steps,
            config.warmup_ratio,
        );
        let params: Vec<(Var, bool)> = self
            .trainable
            .vars
            .iter()
            .zip(&self.trainable.names)
            .map(|(v, n)| (v.clone(), weights::decays(n)))
            .collect();
        let mut optimizer = AdamW::new(
            params,
            AdamWConfig {
                beta1: config.adam_beta1,
                beta2: config.adam_beta2,
                eps: config.adam_epsilon,
                weight_decay: config.weight_decay,
            },
        )?;
        let mut grads = Gradients::new(self.trainable.vars.len());
        let lengths: Vec<usize> = train.encoded.iter().map(|e| e.ids.len()).collect();
        eprintln!(
            "training: {n} examples, {epochs} epoch(s), {total} optimizer steps of {} x {} examples, warmup {} steps",
            config.per_device_train_batch_size,
            config.gradient_accumulation_steps,
            schedule.warmup_steps
        );
        let bar = ProgressBar::new(total as u64).with_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} steps [{elapsed_precise}<{eta_precise}] {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let mut stats = RunStats::new();
        let mut epoch_pos = 0f64;
        for epoch in 0..epochs {
            let batches = epoch_batches(
                &lengths,
                config.per_device_train_batch_size,
                config.seed,
                epoch,
                config.group_by_length,
            );
            let groups: Vec<&[Vec<usize>]> =
                batches.chunks(config.gradient_accumulation_steps).collect();
            let epoch_start = stats.epoch_start();
            for (g, group) in groups.iter().enumerate() {
                let lr = schedule.lr(stats.step);
                if let Err(e) = self.update(group, &mut stats, &mut grads, &mut optimizer, lr) {
                    bar.abandon();
                    return Err(e);
                }
                epoch_pos = epoch as f64 + (g + 1) as f64 / groups.len() as f64;
                bar.set_position(stats.step as u64);
                let status = format!(
                    "epoch {epoch_pos:.2} loss {:.4} lr {lr:.2e} {:.1} ex/s",
                    stats.window_loss(),
                    stats.examples_per_second()
                );
                if stats.step.is_multiple_of(config.logging_steps) {
                    if bar.is_hidden() {
                        let eta = stats.started.elapsed().as_secs_f64() / stats.step as f64
                            * (total - stats.step) as f64;
                        eprintln!("step {}/{total}: {status}, eta {eta:.0} s", stats.step);
                    }
                    let mut values = serde_json::Map::new();
                    values.insert("loss".into(), json!(stats.window_loss()));
                    values.insert("learning_rate".into(), json!(lr));
                    values.insert("grad_norm".into(), json!(stats.grad_norm));
                    self.log_history.push(LogEntry {
                        step: stats.step,
                        epoch: epoch_pos,
                        values,
                    });
                    stats.reset_window();
                }
                bar.set_message(status);
                let eval_now = config.eval_strategy() == IntervalStrategy::Steps
                    && config
                        .eval_steps
                        .is_some_and(|k| stats.step.is_multiple_of(k));
                if eval_now {
                    if let Some((report, improved)) =
                        self.evaluate_and_keep_best(stats.step, epoch_pos)?
                    {
                        say(
                            &bar,
                            format!("step {}: {}", stats.step, eval_summary(&report, improved)),
                        );
                    }
                    self.write_state(stats.step, epoch_pos, total)?;
                }
                if stats.step >= total {
                    break;
                }
            }
            let (epoch_loss, epoch_rate) = stats.epoch_summary(&epoch_start);
            let mut line = format!(
                "epoch {}/{epochs}: train loss {epoch_loss:.4}, {epoch_rate:.1} examples/s",
                epoch + 1
            );
            if config.eval_strategy() == IntervalStrategy::Epoch
                && let Some((report, improved)) =
                    self.evaluate_and_keep_best(stats.step, epoch_pos)?
            {
                line.push_str(&format!(", {}", eval_summary(&report, improved)));
            }
            say(&bar, line);
            self.write_state(stats.step, epoch_pos, total)?;
            if stats.step >= total {
                break;
            }
        }
        bar.finish_and_clear();
        if self.best.is_none() {
            self.save_model()?;
        }
        let runtime = stats.started.elapsed().as_secs_f64().max(1e-9);
        Ok(TrainMetrics {
            train_loss: stats.loss_sum / stats.batches.max(1) as f64,
            train_runtime: runtime,
            train_samples: n,
            train_samples_per_second: stats.seen as f64 / runtime,
            train_steps_per_second: stats.step as f64 / runtime,
            train_tokens_per_second: stats.real_tokens as f64 / runtime,
            padded_tokens: stats.padded_tokens,
            real_tokens: stats.real_tokens,
            global_step: stats.step,
            epoch: epoch_pos,
            peak_rss_mb: peak_rss_mb(),
        })
    }
}

/// Prints a line above the progress bar, or plainly when the bar is hidden (output is not a
/// terminal: a log file or CI).
fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

fn eval_summary(report: &Report, improved: bool) -> String {
    format!(
        "eval accuracy {:.4}, macro F1 {:.4}, loss {:.4}{}",
        report.accuracy,
        report.macro_f1,
        report.loss.unwrap_or(f64::NAN),
        if improved {
            " (best so far: saved)"
        } else {
            ""
        }
    )
}

/// Counters of a training run.
struct RunStats {
    started: Instant,
    step: usize,
    micro: u64,
    seen: usize,
    real_tokens: usize,
    padded_tokens: usize,
    loss_sum: f64,
    batches: usize,
    window: (f64, usize),
    grad_norm: f64,
}

/// Where the counters stood when an epoch began.
struct EpochStart {
    at: Instant,
    seen: usize,
    loss_sum: f64,
    batches: usize,
}

impl RunStats {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            step: 0,
            micro: 0,
            seen: 0,
            real_tokens: 0,
            padded_tokens: 0,
            loss_sum: 0.0,
            batches: 0,
            window: (0.0, 0),
            grad_norm: 0.0,
        }
    }

    fn record_batch(&mut self, loss: f64, examples: usize, real: usize, padded: usize) {
        self.seen += examples;
        self.real_tokens += real;
        self.padded_tokens += padded;
        self.loss_sum += loss;
        self.batches += 1;
        self.window.0 += loss;
        self.window.1 += 1;
    }

    fn window_loss(&self) -> f64 {
        self.window.0 / self.window.1.max(1) as f64
    }

    fn reset_window(&mut self) {
        self.window = (0.0, 0);
    }

    fn examples_per_second(&self) -> f64 {
        self.seen as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    fn epoch_start(&self) -> EpochStart {
        EpochStart {
            at: Instant::now(),
            seen: self.seen,
            loss_sum: self.loss_sum,
            batches: self.batches,
        }
    }

    /// Mean loss and examples per second since `start`.
    fn epoch_summary(&self, start: &EpochStart) -> (f64, f64) {
        let loss = (self.loss_sum - start.loss_sum) / (self.batches - start.batches).max(1) as f64;
        let rate = (self.seen - start.seen) as f64 / start.at.elapsed().as_secs_f64().max(1e-9);
        (loss, rate)
    }
}
