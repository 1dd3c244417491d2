//! The training loop: batches, forward and backward passes, gradient accumulation, clipping,
//! AdamW and the learning-rate schedule; evaluation and keeping the best model; logging,
//! progress, checkpoints, and stopping cleanly on Ctrl-C or SIGTERM.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Result, bail};
use candle_core::{Device, Tensor, Var};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::dataset::{Prepared, epoch_batches, stream};
use super::{TaskSetup, TrainMetrics, Trainable, peak_rss_mb, total_updates};
use crate::checkpoint::{self, Checkpoint, LogEntry, Progress, TrainerState};
use crate::config::{BestMetric, IntervalStrategy, TrainConfig};
use crate::infer::{Batching, batched_logits};
use crate::model::ForwardMode;
use crate::model::weights;
use crate::optim::{AdamW, AdamWConfig, Gradients, LrSchedule};
use crate::report::{self, Status};
use crate::task::{Evaluation, Targets};
use crate::tokenize::{Batch, Encoded};
use crate::{interrupt, rng};

/// Training stopped by a signal, after writing a checkpoint.
#[derive(Debug, thiserror::Error)]
#[error(
    "interrupted by {} at step {step}: checkpoint saved in {}; resume with `bertcls train --config CONFIG --resume`",
    interrupt::name(*signal),
    checkpoint.display()
)]
pub struct Interrupted {
    pub signal: i32,
    pub step: usize,
    pub checkpoint: PathBuf,
}

fn is_better(candidate: f64, best: Option<f64>, metric: BestMetric) -> bool {
    match best {
        None => true,
        Some(b) if metric.greater_is_better() => candidate > b,
        Some(b) => candidate < b,
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

fn eval_summary(report: &Evaluation, improved: bool) -> String {
    format!(
        "eval {}{}",
        report.summary(),
        if improved {
            " (best so far: saved)"
        } else {
            ""
        }
    )
}

/// (gold, predicted) per validation row of a regression.
type Predictions = Vec<(f32, f32)>;

pub struct Trainer<'a> {
    config: &'a TrainConfig,
    trainable: &'a Trainable,
    data: &'a Prepared,
    setup: &'a TaskSetup,
    pad_id: u32,
    device: Device,
    state: TrainerState,
    optimizer: AdamW,
    grads: Gradients,
    schedule: LrSchedule,
    per_epoch: usize,
    /// Since when the time not yet counted in `progress.elapsed_seconds` runs.
    started: Instant,
    /// When and at which step this process began training, for the ETA.
    session: (Instant, usize),
    /// The step of the newest checkpoint written, to avoid writing one twice.
    checkpointed: Option<usize>,
}

impl<'a> Trainer<'a> {
    /// A trainer starting afresh, or from `resumed`'s state.
    pub fn new(
        config: &'a TrainConfig,
        trainable: &'a Trainable,
        data: &'a Prepared,
        setup: &'a TaskSetup,
        pad_id: u32,
        device: Device,
        resumed: Option<Checkpoint>,
    ) -> Result<Self> {
        let (total, per_epoch) = total_updates(config, data.train.len());
        let schedule = LrSchedule::new(
            config.learning_rate,
            config.lr_scheduler_type,
            total,
            config.warmup_steps,
            config.warmup_ratio,
        );
        let params: Vec<(Var, bool)> = trainable
            .vars
            .iter()
            .zip(&trainable.decays)
            .map(|(v, d)| (v.clone(), *d))
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
        let state = match resumed {
            Some(mut c) => {
                let moments = trainable
                    .names
                    .iter()
                    .map(|n| {
                        c.moments.remove(n).ok_or_else(|| {
                            anyhow::anyhow!("{}: no optimizer state for `{n}`", c.dir.display())
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                optimizer.restore(c.optimizer_steps, moments)?;
                c.state
            }
            None => TrainerState {
                global_step: 0,
                epoch: 0.0,
                max_steps: total,
                num_train_epochs: config.num_train_epochs,
                train_batch_size: config.per_device_train_batch_size,
                logging_steps: config.logging_steps,
                metric_for_best_model: setup.metric,
                best_metric: None,
                best_global_step: None,
                best_model_checkpoint: None,
                best_report: None,
                log_history: Vec::new(),
                progress: Progress::default(),
                early_stopping_patience_counter: 0,
                stopped_early_at: None,
                best_predictions: None,
            },
        };
        let checkpointed = Some(state.global_step).filter(|s| *s > 0);
        let session = (Instant::now(), state.global_step);
        Ok(Self {
            config,
            trainable,
            data,
            setup,
            pad_id,
            device,
            state,
            optimizer,
            grads: Gradients::new(trainable.vars.len()),
            schedule,
            per_epoch,
            started: Instant::now(),
            session,
            checkpointed,
        })
    }

    /// The validation report of the best model so far.
    pub fn best_report(&self) -> Option<Evaluation> {
        self.state.best_report.clone()
    }

    fn elapsed(&self) -> f64 {
        self.state.progress.elapsed_seconds + self.started.elapsed().as_secs_f64()
    }

    /// One optimizer update over a group of micro-batches (gradient accumulation).
    fn update(&mut self, group: &[Vec<usize>], lr: f64) -> Result<()> {
        let train = &self.data.train;
        let pad_to = self
            .config
            .pad_to_max_length
            .then_some(self.config.max_seq_length);
        for indices in group {
            let items: Vec<&Encoded> = indices.iter().map(|&i| &train.encoded[i]).collect();
            let batch = Batch::collate(&items, self.pad_id, pad_to, &self.device)?;
            let targets = train.targets.batch(indices, &self.device)?;
            let p = &mut self.state.progress;
            p.micro_batches += 1;
            let seed = rng::mix64(
                self.config.seed ^ rng::mix64((stream::DROPOUT << 32) | p.micro_batches),
            );
            let (loss, store) = self.trainable.loss_and_grads(
                &batch,
                &targets,
                &mut ForwardMode::train(seed),
                1.0 / group.len() as f64,
            )?;
            if !loss.is_finite() {
                let last = checkpoint::latest(&self.config.output_dir)
                    .map_or_else(|| "none yet".to_string(), |p| p.display().to_string());
                bail!(
                    "training loss became {loss} at step {}: stopping (try a lower learning_rate); \
                     last good checkpoint: {last}",
                    p.step + 1
                );
            }
            self.grads.accumulate(&store, &self.trainable.vars)?;
            drop(store);
            p.examples_seen += indices.len();
            p.real_tokens += batch.real_tokens;
            p.padded_tokens += batch.input_ids.elem_count();
            p.loss_sum += loss;
            p.window_loss += loss;
            p.window_batches += 1;
        }
        self.state.progress.grad_norm = self.grads.clip(self.config.max_grad_norm)?;
        self.optimizer.step(&self.grads, lr)?;
        self.grads.clear();
        self.state.progress.step += 1;
        self.state.global_step = self.state.progress.step;
        Ok(())
    }

    /// The validation metrics of the current model, and for a regression each row's (gold,
    /// predicted) value, which the report draws.
    fn evaluate(&self) -> Result<Option<(Evaluation, Option<Predictions>)>> {
        let Some(validation) = &self.data.validation else {
            return Ok(None);
        };
        let model = self.trainable.model.detached()?;
        let logits = batched_logits(
            &model,
            self.pad_id,
            &validation.encoded,
            Batching::rows(self.config.per_device_eval_batch_size),
            &self.device,
            &mut |_| Ok(()),
        )?;
        let points = match &validation.targets {
            Targets::Values(gold) => {
                Some(gold.iter().zip(&logits).map(|(&g, l)| (g, l[0])).collect())
            }
            _ => None,
        };
        let report = self
            .setup
            .task
            .evaluate(&logits, &validation.targets, &self.data.labels);
        Ok(Some((report, points)))
    }

    /// Evaluates, logs the result, keeps the model (and a checkpoint) if it is the best so
    /// far, and counts towards early stopping.
    fn evaluate_and_keep_best(&mut self) -> Result<Option<(Evaluation, bool)>> {
        let Some((report, points)) = self.evaluate()? else {
            return Ok(None);
        };
        let metric = self.setup.metric;
        let value = report.metric(metric).unwrap_or(f64::NAN);
        let improved = is_better(value, self.state.best_metric, metric);
        self.count_for_early_stopping(value, improved);
        let values = report
            .values()
            .into_iter()
            .map(|(m, v)| (format!("eval_{}", m.name()), json!(v)))
            .collect();
        self.log(values);
        if improved {
            weights::save(
                &self.config.output_dir.join(checkpoint::MODEL_FILE),
                &self.trainable.model.named_tensors(),
            )?;
            self.state.best_metric = Some(value);
            self.state.best_global_step = Some(self.state.global_step);
            self.state.best_report = Some(report.clone());
            self.state.best_predictions = points;
            if self.saves_checkpoints() {
                self.state.best_model_checkpoint = Some(checkpoint::path(
                    &self.config.output_dir,
                    self.state.global_step,
                ));
                self.save_checkpoint()?;
            }
        }
        // A report a user can open while training runs, with this evaluation in it.
        self.write_report(&self.config.output_dir, None);
        Ok(Some((report, improved)))
    }

    /// `EarlyStoppingCallback`: an evaluation that beats the best before it by more than
    /// the threshold resets the count; any other adds one, and `patience` of them in a row
    /// stop training.
    fn count_for_early_stopping(&mut self, value: f64, improved: bool) {
        let Some(patience) = self.config.early_stopping_patience else {
            return;
        };
        let enough = match self.state.best_metric {
            None => true,
            Some(best) => improved && (value - best).abs() > self.config.early_stopping_threshold,
        };
        if enough {
            self.state.early_stopping_patience_counter = 0;
        } else {
            self.state.early_stopping_patience_counter += 1;
        }
        if self.state.early_stopping_patience_counter >= patience {
            self.state.stopped_early_at = Some(self.state.global_step);
        }
    }

    /// The line that says why training ended early.
    fn early_stop_line(&self) -> String {
        format!(
            "early stopping at step {}: eval_{} did not improve by more than {} in {} \
             evaluation(s); best {:.4} at step {}",
            self.state.global_step,
            self.setup.metric.name(),
            self.config.early_stopping_threshold,
            self.state.early_stopping_patience_counter,
            self.state.best_metric.unwrap_or(f64::NAN),
            self.state.best_global_step.unwrap_or(0)
        )
    }

    fn log(&mut self, values: serde_json::Map<String, serde_json::Value>) {
        self.state.log_history.push(LogEntry {
            step: self.state.global_step,
            epoch: self.state.epoch,
            values,
        });
    }

    fn saves_checkpoints(&self) -> bool {
        self.config.save_strategy != IntervalStrategy::No
    }

    /// Writes `checkpoint-STEP` (again, if it exists: the state may have changed) and drops
    /// checkpoints beyond `save_total_limit`, keeping the best.
    fn save_checkpoint(&mut self) -> Result<PathBuf> {
        self.state.progress.elapsed_seconds += self.started.elapsed().as_secs_f64();
        self.started = Instant::now();
        let moments: Vec<(String, Tensor, Tensor)> = self
            .trainable
            .names
            .iter()
            .cloned()
            .zip(self.optimizer.moments()?)
            .map(|(n, (m, v))| (n, m, v))
            .collect();
        let dir = checkpoint::save(
            &self.config.output_dir,
            &self.trainable.model.named_tensors(),
            &moments,
            self.optimizer.steps_taken(),
            &self.state,
        )?;
        checkpoint::rotate(
            &self.config.output_dir,
            self.config.save_total_limit,
            self.state.best_model_checkpoint.as_deref(),
        )?;
        self.checkpointed = Some(self.state.global_step);
        self.write_report(&dir, None);
        self.write_state()?;
        Ok(dir)
    }

    fn write_state(&self) -> Result<()> {
        crate::atomic::write_json(
            self.config.output_dir.join(checkpoint::STATE_FILE),
            &self.state,
        )?;
        self.write_report(&self.config.output_dir, None);
        Ok(())
    }

    /// report.html and log_history.csv into `dir`. A report that cannot be written is a
    /// warning, not the end of a long training run.
    fn write_report(&self, dir: &Path, signal: Option<i32>) {
        let status = match signal {
            Some(s) => Status::Interrupted(interrupt::name(s).to_string()),
            None if self.state.global_step >= self.state.max_steps
                || self.state.stopped_early_at.is_some() =>
            {
                Status::Finished
            }
            None => Status::Running,
        };
        let live = report::Live {
            status,
            device: crate::device::describe(&self.device),
            train_rows: self.data.train.len(),
            validation_rows: self.data.validation.as_ref().map(|v| v.len()),
            elapsed_seconds: self.elapsed(),
            peak_memory_mb: peak_rss_mb(),
        };
        if let Err(e) = report::write_run(dir, &self.state, Some(&live)) {
            eprintln!(
                "warning: {} not written: {}",
                dir.join(report::REPORT_FILE).display(),
                crate::terminal::error_line(&e)
            );
        }
    }

    /// After a signal: a checkpoint of the current state, then the error that says so.
    fn stop_if_interrupted(&mut self) -> Result<()> {
        let Some(signal) = interrupt::requested() else {
            return Ok(());
        };
        let dir = if self.checkpointed == Some(self.state.global_step) {
            checkpoint::latest(&self.config.output_dir).unwrap_or_default()
        } else {
            self.save_checkpoint()?
        };
        self.write_report(&self.config.output_dir, Some(signal));
        Err(Interrupted {
            signal,
            step: self.state.global_step,
            checkpoint: dir,
        }
        .into())
    }

    pub fn run(&mut self) -> Result<TrainMetrics> {
        let config = self.config;
        let total = self.state.max_steps;
        let epochs = total.div_ceil(self.per_epoch);
        let lengths: Vec<usize> = self
            .data
            .train
            .encoded
            .iter()
            .map(|e| e.ids.len())
            .collect();
        eprintln!(
            "training: {} examples, {epochs} epoch(s), {total} optimizer steps of {} x {} examples, warmup {} steps",
            lengths.len(),
            config.per_device_train_batch_size,
            config.gradient_accumulation_steps,
            self.schedule.warmup_steps
        );
        let bar = ProgressBar::new(total as u64).with_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} steps [{elapsed_precise}<{eta_precise}] {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_position(self.state.global_step as u64);
        bar.reset_eta();
        let result = self.run_epochs(&bar, &lengths, epochs, total);
        if result.is_err() {
            bar.abandon();
        }
        result?;
        bar.finish_and_clear();
        if self.state.best_report.is_none() {
            weights::save(
                &config.output_dir.join(checkpoint::MODEL_FILE),
                &self.trainable.model.named_tensors(),
            )?;
        }
        self.write_state()?;
        let p = &self.state.progress;
        let runtime = self.elapsed().max(1e-9);
        Ok(TrainMetrics {
            train_loss: p.loss_sum / (p.micro_batches.max(1) as f64),
            train_runtime: runtime,
            train_samples: lengths.len(),
            train_samples_per_second: p.examples_seen as f64 / runtime,
            train_steps_per_second: p.step as f64 / runtime,
            train_tokens_per_second: p.real_tokens as f64 / runtime,
            padded_tokens: p.padded_tokens,
            real_tokens: p.real_tokens,
            global_step: p.step,
            epoch: self.state.epoch,
            peak_rss_mb: peak_rss_mb(),
        })
    }

    fn run_epochs(
        &mut self,
        bar: &ProgressBar,
        lengths: &[usize],
        epochs: usize,
        total: usize,
    ) -> Result<()> {
        let config = self.config;
        let accumulation = config.gradient_accumulation_steps;
        while self.state.progress.epoch < epochs
            && self.state.global_step < total
            && self.state.stopped_early_at.is_none()
        {
            let epoch = self.state.progress.epoch;
            let batches = epoch_batches(
                lengths,
                config.per_device_train_batch_size,
                config.seed,
                epoch,
                config.group_by_length,
            );
            let groups: Vec<&[Vec<usize>]> = batches.chunks(accumulation).collect();
            let (seen0, loss0, micro0) = {
                let p = &self.state.progress;
                (p.examples_seen, p.loss_sum, p.micro_batches)
            };
            let epoch_started = Instant::now();
            while self.state.progress.updates_in_epoch < groups.len()
                && self.state.global_step < total
                && self.state.stopped_early_at.is_none()
            {
                let g = self.state.progress.updates_in_epoch;
                let lr = self.schedule.lr(self.state.global_step);
                self.update(groups[g], lr)?;
                self.state.progress.updates_in_epoch += 1;
                self.state.epoch = epoch as f64 + (g + 1) as f64 / groups.len() as f64;
                let step = self.state.global_step;
                bar.set_position(step as u64);
                let p = &self.state.progress;
                let status = format!(
                    "epoch {:.2} loss {:.4} lr {lr:.2e} {:.1} ex/s",
                    self.state.epoch,
                    p.window_loss / p.window_batches.max(1) as f64,
                    p.examples_seen as f64 / self.elapsed().max(1e-9)
                );
                if step.is_multiple_of(config.logging_steps) {
                    if bar.is_hidden() {
                        let (since, first) = self.session;
                        let per_step = since.elapsed().as_secs_f64() / (step - first).max(1) as f64;
                        eprintln!(
                            "step {step}/{total}: {status}, eta {:.0} s",
                            per_step * (total - step) as f64
                        );
                    }
                    let mut values = serde_json::Map::new();
                    values.insert(
                        "loss".into(),
                        json!(p.window_loss / p.window_batches.max(1) as f64),
                    );
                    values.insert("learning_rate".into(), json!(lr));
                    values.insert("grad_norm".into(), json!(p.grad_norm));
                    self.log(values);
                    self.state.progress.window_loss = 0.0;
                    self.state.progress.window_batches = 0;
                }
                bar.set_message(status);
                let last_of_epoch =
                    self.state.progress.updates_in_epoch == groups.len() || step >= total;
                if config.eval_strategy() == IntervalStrategy::Steps
                    && config.eval_steps.is_some_and(|k| step.is_multiple_of(k))
                    && let Some((report, improved)) = self.evaluate_and_keep_best()?
                {
                    say(
                        bar,
                        format!("step {step}: {}", eval_summary(&report, improved)),
                    );
                }
                if config.save_strategy == IntervalStrategy::Steps
                    && step.is_multiple_of(config.save_steps)
                    && !last_of_epoch
                    && self.checkpointed != Some(step)
                {
                    self.save_checkpoint()?;
                }
                self.stop_if_interrupted()?;
            }
            // End of the epoch (or of training, with max_steps).
            let p = &self.state.progress;
            let loss = (p.loss_sum - loss0) / (p.micro_batches - micro0).max(1) as f64;
            let rate =
                (p.examples_seen - seen0) as f64 / epoch_started.elapsed().as_secs_f64().max(1e-9);
            let mut line = format!(
                "epoch {}/{epochs}: train loss {loss:.4}, {rate:.1} examples/s",
                epoch + 1
            );
            self.state.progress.epoch += 1;
            self.state.progress.updates_in_epoch = 0;
            if config.eval_strategy() == IntervalStrategy::Epoch
                && let Some((report, improved)) = self.evaluate_and_keep_best()?
            {
                line.push_str(&format!(", {}", eval_summary(&report, improved)));
            }
            say(bar, line);
            if self.state.stopped_early_at.is_some() {
                say(bar, self.early_stop_line());
            }
            if self.saves_checkpoints() && self.checkpointed != Some(self.state.global_step) {
                self.save_checkpoint()?;
            } else {
                self.write_state()?;
            }
            self.stop_if_interrupted()?;
        }
        Ok(())
    }
}
