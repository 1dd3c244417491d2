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
pub mod history;
pub mod html;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::checkpoint::{self, TrainerState};
use crate::metrics::Report;
use crate::terminal::printable;
use charts::{Event, GroupedBars, Heatmap, LineChart, Marker, Series};
use html::{Figure, Page, Section, Table};

pub use history::LOG_CSV;

/// The report's file name in an output or checkpoint folder.
pub const REPORT_FILE: &str = "report.html";

/// Points drawn per curve at most (see [`history::thinned`]); the CSV keeps every entry.
const MAX_POINTS: usize = 2000;
/// TensorBoard's default smoothing weight.
const SMOOTHING: f64 = 0.6;

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

/// What `eval --report` says about the evaluation besides its metrics.
pub struct EvalInfo {
    pub model: String,
    pub data: PathBuf,
    pub device: String,
    pub seconds: f64,
    pub peak_memory_mb: Option<f64>,
}

/// `bertcls eval --report FILE`: the evaluation charts of `report`.
pub fn write_eval(path: &Path, info: &EvalInfo, report: &Report) -> Result<()> {
    let rate = report.examples as f64 / info.seconds.max(1e-9);
    let sections = vec![
        Section {
            title: "Evaluation".into(),
            rows: vec![
                ("model".into(), info.model.clone()),
                ("data".into(), info.data.display().to_string()),
                ("rows".into(), report.examples.to_string()),
                ("device".into(), info.device.clone()),
                ("wall time".into(), seconds(info.seconds)),
                ("examples/s".into(), format!("{rate:.1}")),
                ("peak memory".into(), memory(info.peak_memory_mb)),
            ],
        },
        metrics_section("Results", report),
    ];
    let (figures, tables) = evaluation_figures(report, "")?;
    let page = Page {
        title: "bertcls evaluation report".into(),
        status: format!(
            "{} on {}",
            info.model,
            info.data
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        ),
        sections,
        figures,
        tables,
    };
    crate::atomic::write(path, html::render(&page).as_bytes())
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

fn metrics_section(title: &str, report: &Report) -> Section {
    let mut rows = vec![
        ("accuracy".into(), format!("{:.4}", report.accuracy)),
        ("macro F1".into(), format!("{:.4}", report.macro_f1)),
        ("weighted F1".into(), format!("{:.4}", report.weighted_f1)),
    ];
    if let Some(loss) = report.loss {
        rows.push(("loss".into(), format!("{loss:.4}")));
    }
    rows.push(("examples".into(), report.examples.to_string()));
    Section {
        title: title.into(),
        rows,
    }
}

/// The labels as the charts show them: control characters escaped (XML forbids them).
fn shown_labels(labels: &[String]) -> Vec<String> {
    labels.iter().map(|l| printable(l).into_owned()).collect()
}

/// The confusion matrix and per-class charts of a single-label evaluation, and the per-class
/// table. `whose` names the model in titles ("best model: ").
fn evaluation_figures(report: &Report, whose: &str) -> Result<(Vec<Figure>, Vec<Table>)> {
    let labels = shown_labels(&report.labels);
    let confusion = charts::heatmap(&Heatmap {
        title: format!("{whose}confusion matrix"),
        row_desc: "true label".into(),
        col_desc: "predicted label".into(),
        labels: labels.clone(),
        counts: report.confusion_matrix.clone(),
    })?;
    let per_class = charts::grouped_bars(&GroupedBars {
        title: format!("{whose}precision, recall and F1 per class"),
        y_desc: "score".into(),
        categories: labels.clone(),
        notes: report
            .per_class
            .iter()
            .map(|c| format!("n={}", c.support))
            .collect(),
        measures: vec![
            (
                "precision".into(),
                report.per_class.iter().map(|c| c.precision).collect(),
            ),
            (
                "recall".into(),
                report.per_class.iter().map(|c| c.recall).collect(),
            ),
            ("F1".into(), report.per_class.iter().map(|c| c.f1).collect()),
        ],
        // Headroom above 1 for the legend, which then covers no bar.
        y_max: 1.35,
    })?;
    let figures = vec![
        Figure {
            id: "chart-confusion".into(),
            svg: confusion,
            note: format!(
                "Counts of {} examples; rows are the true labels, columns the predictions. \
                 A cell's shade is its share of the row.",
                report.examples
            ),
        },
        Figure {
            id: "chart-per-class".into(),
            svg: per_class,
            note: "n = support: the examples of each class.".into(),
        },
    ];
    let table = Table {
        id: "table-per-class".into(),
        title: "Per class".into(),
        header: ["class", "precision", "recall", "F1", "support"]
            .map(String::from)
            .to_vec(),
        rows: report
            .per_class
            .iter()
            .map(|c| {
                vec![
                    c.label.clone(),
                    format!("{:.4}", c.precision),
                    format!("{:.4}", c.recall),
                    format!("{:.4}", c.f1),
                    c.support.to_string(),
                ]
            })
            .collect(),
    };
    Ok((figures, vec![table]))
}

/// Whether a larger value of a logged metric is better.
fn greater_is_better(key: &str) -> bool {
    !key.ends_with("loss")
}

/// A chart id from a log key: `eval_macro_f1` → `chart-eval-macro-f1`.
fn chart_id(key: &str) -> String {
    let slug: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("chart-{slug}")
}

/// Loss (raw and smoothed), learning rate, gradient norm, then one chart per logged
/// evaluation metric with its best point and the kept model's step.
fn training_figures(state: &TrainerState) -> Result<Vec<Figure>> {
    let log = &state.log_history;
    let raw = history::series(log, "loss");
    let mut figures = vec![Figure {
        id: "chart-loss".into(),
        svg: charts::line_chart(&LineChart {
            title: "training loss".into(),
            x_desc: "step".into(),
            y_desc: "loss".into(),
            series: vec![
                Series {
                    name: "loss".into(),
                    color: charts::RAW,
                    width: 1,
                    points: history::thinned(&raw, MAX_POINTS),
                },
                Series {
                    name: format!("smoothed ({SMOOTHING})"),
                    color: charts::MAIN,
                    width: 2,
                    points: history::thinned(&history::smoothed(&raw, SMOOTHING), MAX_POINTS),
                },
            ],
            marker: None,
            events: vec![],
        })?,
        note: format!(
            "Mean loss of the batches since the previous entry, every {} steps; smoothed as \
             TensorBoard does.",
            state.logging_steps
        ),
    }];
    for (key, title, note) in [
        (
            "learning_rate",
            "learning rate",
            "The rate of each logged update (warmup, then the schedule).",
        ),
        (
            "grad_norm",
            "gradient norm",
            "Global norm of the gradients before clipping.",
        ),
    ] {
        figures.push(Figure {
            id: chart_id(key),
            svg: charts::line_chart(&LineChart {
                title: title.into(),
                x_desc: "step".into(),
                y_desc: title.into(),
                series: vec![Series {
                    name: title.into(),
                    color: charts::MAIN,
                    width: 2,
                    points: history::thinned(&history::series(log, key), MAX_POINTS),
                }],
                marker: None,
                events: vec![],
            })?,
            note: note.into(),
        });
    }
    let kept = state.best_global_step.map(|step| Event {
        label: format!("kept model (step {step})"),
        x: step as f64,
    });
    for key in history::value_columns(log)
        .into_iter()
        .filter(|k| k.starts_with("eval_"))
    {
        let points = history::series(log, &key);
        let better = |a: &(f64, f64), b: &(f64, f64)| {
            let order = a.1.total_cmp(&b.1);
            if greater_is_better(&key) {
                order
            } else {
                order.reverse()
            }
        };
        // The first of equal best values, as the trainer keeps the first.
        let best = points
            .iter()
            .filter(|p| p.1.is_finite())
            .rev()
            .max_by(|a, b| better(a, b))
            .copied();
        let name = key.trim_start_matches("eval_").replace('_', " ");
        figures.push(Figure {
            id: chart_id(&key),
            svg: charts::line_chart(&LineChart {
                title: format!("validation {name}"),
                x_desc: "step".into(),
                y_desc: name.clone(),
                series: vec![Series {
                    name: name.clone(),
                    color: charts::MAIN,
                    width: 2,
                    points: history::thinned(&points, MAX_POINTS),
                }],
                marker: best.map(|at| Marker {
                    label: format!("best {} at step {}", short_number(at.1), at.0),
                    at,
                }),
                events: kept
                    .as_ref()
                    .map(|e| Event {
                        label: e.label.clone(),
                        x: e.x,
                    })
                    .into_iter()
                    .collect(),
            })?,
            note: format!(
                "{} after each evaluation; the ring marks its best value.",
                if greater_is_better(&key) {
                    "Higher is better"
                } else {
                    "Lower is better"
                }
            ),
        });
    }
    Ok(figures)
}

fn short_number(v: f64) -> String {
    format!("{v:.4}")
}

/// The page of a training run.
fn run_page(state: &TrainerState, files: &RunFiles, live: Option<&Live>) -> Result<Page> {
    let args = &files.args;
    let results = &files.results;
    let finished = state.global_step >= state.max_steps;
    let status = match live.map(|l| &l.status) {
        Some(Status::Running) => format!(
            "Training: step {} of {} (epoch {:.2}). This page is rewritten after each \
             evaluation and checkpoint.",
            state.global_step, state.max_steps, state.epoch
        ),
        Some(Status::Interrupted(signal)) => format!(
            "Interrupted by {signal} at step {} of {}; resume with `bertcls train --config \
             CONFIG --resume`.",
            state.global_step, state.max_steps
        ),
        Some(Status::Finished) => format!("Finished: {} steps.", state.global_step),
        None if finished => format!("Finished: {} steps.", state.global_step),
        None => format!(
            "Stopped at step {} of {} (interrupted, or still running).",
            state.global_step, state.max_steps
        ),
    };
    let problem_type = files
        .model
        .get("problem_type")
        .and_then(Value::as_str)
        .unwrap_or("single_label_classification");
    let labels: Vec<String> = match &state.best_report {
        Some(r) => r.labels.clone(),
        None => files
            .model
            .get("id2label")
            .and_then(Value::as_object)
            .map(|m| {
                let mut pairs: Vec<(usize, String)> = m
                    .iter()
                    .filter_map(|(k, v)| Some((k.parse().ok()?, v.as_str()?.to_string())))
                    .collect();
                pairs.sort();
                pairs.into_iter().map(|(_, v)| v).collect()
            })
            .unwrap_or_default(),
    };
    let mut shown_list: Vec<String> = labels.iter().take(20).cloned().collect();
    if labels.len() > 20 {
        shown_list.push(format!("… ({} in all)", labels.len()));
    }
    let device = match live {
        Some(l) => l.device.clone(),
        None => format!("{} (as configured)", shown(&args["device"])),
    };
    let run = Section {
        title: "Run".into(),
        rows: vec![
            ("model".into(), shown(&args["model_name_or_path"])),
            ("task".into(), problem_type.to_string()),
            (format!("labels ({})", labels.len()), shown_list.join(", ")),
            ("device".into(), device),
            ("seed".into(), shown(&args["seed"])),
        ],
    };
    let train_rows = live
        .map(|l| l.train_rows.to_string())
        .or_else(|| results.get("train_samples").map(shown))
        .unwrap_or_else(|| "n/a".into());
    let validation_rows = live
        .and_then(|l| l.validation_rows)
        .or(state.best_report.as_ref().map(|r| r.examples))
        .map_or_else(|| "n/a".into(), |n| n.to_string());
    let validation_file = match (
        &args["validation_file"],
        &args["validation_split_percentage"],
    ) {
        (Value::String(f), _) => f.clone(),
        (_, Value::Number(p)) => format!("{p}% of the training file"),
        _ => "none".into(),
    };
    let data = Section {
        title: "Data".into(),
        rows: vec![
            ("training file".into(), shown(&args["train_file"])),
            ("training rows".into(), train_rows),
            ("validation".into(), validation_file),
            ("validation rows".into(), validation_rows),
            ("max_seq_length".into(), shown(&args["max_seq_length"])),
        ],
    };
    let hyper_keys = [
        "learning_rate",
        "lr_scheduler_type",
        "warmup_ratio",
        "warmup_steps",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "num_train_epochs",
        "max_steps",
        "weight_decay",
        "max_grad_norm",
        "metric_for_best_model",
        "bf16",
    ];
    let hyper = Section {
        title: "Hyperparameters".into(),
        rows: hyper_keys
            .iter()
            .filter(|k| !args[**k].is_null())
            .map(|k| (k.to_string(), shown(&args[*k])))
            .collect(),
    };
    let p = &state.progress;
    let elapsed = live
        .map(|l| l.elapsed_seconds)
        .or_else(|| results.get("train_runtime").and_then(Value::as_f64))
        .unwrap_or(p.elapsed_seconds);
    let rate = if elapsed > 0.0 {
        format!("{:.1}", p.examples_seen as f64 / elapsed)
    } else {
        "n/a".into()
    };
    let peak = live
        .and_then(|l| l.peak_memory_mb)
        .or_else(|| results.get("peak_rss_mb").and_then(Value::as_f64));
    let best = match (state.best_metric, state.best_global_step) {
        (Some(value), Some(step)) => format!(
            "{} = {value:.4} at step {step}",
            shown(&serde_json::to_value(state.metric_for_best_model)?)
        ),
        _ => "no evaluation yet".into(),
    };
    let progress = Section {
        title: "Progress".into(),
        rows: vec![
            (
                "steps".into(),
                format!("{} of {}", state.global_step, state.max_steps),
            ),
            ("epoch".into(), format!("{:.2}", state.epoch)),
            ("wall time".into(), seconds(elapsed)),
            ("examples/s".into(), rate),
            ("peak memory".into(), memory(peak)),
            ("best model".into(), best),
        ],
    };
    let mut sections = vec![run, data, hyper, progress];
    let mut figures = training_figures(state)?;
    let mut tables = Vec::new();
    if let Some(report) = &state.best_report {
        sections.push(metrics_section("Best model on validation", report));
        let (more, more_tables) = evaluation_figures(report, "best model: ")?;
        figures.extend(more);
        tables.extend(more_tables);
    }
    Ok(Page {
        title: format!("bertcls training report: {}", shown(&args["output_dir"])),
        status,
        sections,
        figures,
        tables,
    })
}
