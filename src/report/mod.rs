//! The training report: `report.html`, one self-contained page of charts a person reads at a
//! glance (loss, learning rate and gradient norm against step; every validation metric with
//! its best point; the kept model's confusion matrix and per-class precision, recall and F1),
//! and `log_history.csv`, the same history for spreadsheets.
//!
//! The trainer writes both into the output folder and each checkpoint whenever it writes
//! `trainer_state.json`, after each evaluation and when interrupted; `bertcls report RUN_DIR`
//! rebuilds them from the files alone, and `bertcls eval --report FILE` draws the evaluation
//! charts of any model on any labelled file.
//!
//! Only single-label classification trains today. The charts take plain data
//! ([`charts::GroupedBars`], [`charts::LineChart`]), so a multi-label report's per-label bars
//! and a regression report's predicted-vs-gold scatter slot in beside these.

pub mod charts;
mod evaluation;
pub mod history;
pub mod html;
mod training;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::checkpoint::{self, TrainerState};
use training::run_page;

pub use evaluation::{EvalInfo, write_evaluation};
pub use history::LOG_CSV;

/// The report's file name in an output or checkpoint folder.
pub const REPORT_FILE: &str = "report.html";

/// Where a run stands when its report is written.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    Running,
    Finished,
    /// Stopped by the named signal.
    Interrupted(String),
}

/// What the training process knows that its files do not (yet) say.
#[derive(Debug, Clone)]
pub struct Live {
    pub status: Status,
    pub device: String,
    pub train_rows: usize,
    pub validation_rows: Option<usize>,
    pub elapsed_seconds: f64,
    pub peak_memory_mb: Option<f64>,
}

/// The files of a run folder the report reads besides the state; each may be missing.
struct RunFiles {
    /// training_args.json: the config.
    args: Value,
    /// config.json: the model's labels and task.
    model: Value,
    /// train_results.json, written when training ends.
    results: Value,
}

fn read_json(path: &Path) -> Result<Value> {
    if !path.is_file() {
        return Ok(Value::Null);
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{}: not valid JSON", path.display()))
}

impl RunFiles {
    fn read(dir: &Path) -> Result<Self> {
        Ok(Self {
            args: read_json(&dir.join(crate::model::TRAINING_ARGS))?,
            model: read_json(&dir.join("config.json"))?,
            results: read_json(&dir.join(crate::train::output_dir::TRAIN_RESULTS))?,
        })
    }
}

/// Writes `report.html` and `log_history.csv` into `dir` (an output or checkpoint folder
/// holding the run's training_args.json and config.json), each atomically.
pub fn write_run(dir: &Path, state: &TrainerState, live: Option<&Live>) -> Result<()> {
    let files = RunFiles::read(dir)?;
    let page = run_page(state, &files, live)?;
    crate::atomic::write(dir.join(LOG_CSV), &history::to_csv(&state.log_history)?)?;
    crate::atomic::write(dir.join(REPORT_FILE), html::render(&page).as_bytes())
}

/// `bertcls report RUN_DIR`: the report of a finished or interrupted run, from its
/// trainer_state.json and results files, into `output` (default: `RUN_DIR/report.html`, with
/// `log_history.csv` beside it). Returns the report's path.
pub fn rebuild(run_dir: &Path, output: Option<&Path>) -> Result<PathBuf> {
    let state_path = run_dir.join(checkpoint::STATE_FILE);
    if !state_path.is_file() {
        anyhow::bail!(
            "{}: no {} (not a training output or checkpoint folder, or a run that has not \
             written its state yet)",
            run_dir.display(),
            checkpoint::STATE_FILE
        );
    }
    let bytes = std::fs::read(&state_path)
        .with_context(|| format!("cannot read {}", state_path.display()))?;
    let state: TrainerState = serde_json::from_slice(&bytes).map_err(|e| {
        anyhow::anyhow!("{}:{}:{}: {e}", state_path.display(), e.line(), e.column())
    })?;
    match output {
        None => {
            write_run(run_dir, &state, None)?;
            Ok(run_dir.join(REPORT_FILE))
        }
        Some(path) => {
            let page = run_page(&state, &RunFiles::read(run_dir)?, None)?;
            crate::atomic::write(path, html::render(&page).as_bytes())?;
            Ok(path.to_path_buf())
        }
    }
}

fn seconds(s: f64) -> String {
    if s >= 120.0 {
        format!("{:.0} min {:.0} s", (s / 60.0).floor(), s % 60.0)
    } else {
        format!("{s:.1} s")
    }
}

fn memory(mb: Option<f64>) -> String {
    mb.map_or_else(|| "n/a".into(), |m| format!("{m:.0} MiB"))
}

/// A config value as people write it: strings bare, lists joined, numbers as JSON has them.
fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(shown).collect::<Vec<_>>().join(" or "),
        Value::Null => "none".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{LogEntry, Progress};
    use crate::task::BestMetric;

    fn long_state(entries: usize) -> TrainerState {
        let log_history = (1..=entries)
            .map(|step| LogEntry {
                step,
                epoch: step as f64 / entries as f64,
                values: serde_json::json!({
                    "loss": 1.0 / step as f64,
                    "learning_rate": 1e-4,
                    "grad_norm": 1.0,
                })
                .as_object()
                .cloned()
                .unwrap_or_default(),
            })
            .collect();
        TrainerState {
            global_step: entries,
            epoch: 1.0,
            max_steps: 2 * entries,
            num_train_epochs: 1.0,
            train_batch_size: 8,
            logging_steps: 1,
            metric_for_best_model: BestMetric::Accuracy,
            best_metric: None,
            best_global_step: None,
            best_model_checkpoint: None,
            best_report: None,
            log_history,
            early_stopping_patience_counter: 0,
            stopped_early_at: None,
            best_predictions: None,
            progress: Progress::default(),
        }
    }

    #[test]
    fn a_folder_with_only_a_long_state_still_gets_a_small_report() {
        let dir = std::env::temp_dir().join(format!("bertcls-report-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let state = long_state(50_000);
        write_run(&dir, &state, None).unwrap();
        let html = std::fs::read_to_string(dir.join(REPORT_FILE)).unwrap();
        // 50,000 points a curve would be megabytes; thinned, the page stays small.
        assert!(html.len() < 400_000, "{} bytes", html.len());
        assert!(html.contains("Stopped at step 50000 of 100000"));
        assert!(html.contains("no evaluation yet"));
        let csv = std::fs::read_to_string(dir.join(LOG_CSV)).unwrap();
        assert_eq!(csv.lines().count(), 50_001, "the CSV keeps every entry");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
