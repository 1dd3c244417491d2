//! The page of a training run: the header from the run's files (and, while it trains, from the
//! trainer), the curves of `log_history`, and the kept model's evaluation charts.

use anyhow::Result;
use serde_json::Value;

use super::charts::{self, Event, LineChart, Marker, Series};
use super::evaluation::best_model_parts;
use super::html::{Figure, Page, Section};
use super::{Live, RunFiles, Status, history, memory, seconds, shown};
use crate::checkpoint::TrainerState;

/// Points drawn per curve at most (see [`history::thinned`]); the CSV keeps every entry.
const MAX_POINTS: usize = 2000;
/// TensorBoard's default smoothing weight.
const SMOOTHING: f64 = 0.6;

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
    let events: Vec<Event> = state
        .best_global_step
        .map(|step| Event {
            label: format!("kept model (step {step})"),
            x: step as f64,
        })
        .into_iter()
        .chain(state.stopped_early_at.map(|step| Event {
            label: format!("stopped early (step {step})"),
            x: step as f64,
        }))
        .collect();
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
                events: events.clone(),
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
pub(super) fn run_page(
    state: &TrainerState,
    files: &RunFiles,
    live: Option<&Live>,
) -> Result<Page> {
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
    let labels: Vec<String> = files
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
        .unwrap_or_default();
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
        .or(state.best_report.as_ref().map(|r| r.examples()))
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
        "class_weights",
        "max_class_weight",
        "label_smoothing_factor",
        "early_stopping_patience",
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
        let (section, more, more_tables) =
            best_model_parts(report, state.best_predictions.as_deref())?;
        sections.push(section);
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
