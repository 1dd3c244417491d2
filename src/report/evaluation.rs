//! The evaluation charts: for a single-label model the confusion matrix as a heat map with
//! counts and per-class precision, recall and F1 with support; per-label bars for a
//! multi-label model; predicted against gold for a regression. The page of `eval --report`.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::charts::{self, GroupedBars, Heatmap, Scatter};
use super::html::{self, Figure, Page, Section, Table};
use super::{memory, seconds};
use crate::metrics::{ClassReport, Report};
use crate::task::multi_label::MultiLabelReport;
use crate::task::{BestMetric, Evaluation};
use crate::terminal::printable;

/// What `eval --report` says about the evaluation besides its metrics.
pub struct EvalInfo {
    pub model: String,
    pub data: PathBuf,
    pub device: String,
    pub seconds: f64,
    pub peak_memory_mb: Option<f64>,
}

/// `bertcls eval --report FILE`: the charts of an evaluation of any task (`points`: a
/// regression's gold and predicted values).
pub fn write_evaluation(
    path: &Path,
    info: &EvalInfo,
    report: &Evaluation,
    points: &[(f64, f64)],
) -> Result<()> {
    let results = results_section("Results", report);
    let (figures, tables) = match report {
        Evaluation::SingleLabel(r) => evaluation_figures(r, "")?,
        // Precision, recall and F1 per label with support, as bars and as a table.
        Evaluation::MultiLabel(r) => {
            let (figure, table) = per_label_figure(r, "")?;
            (vec![figure], vec![table])
        }
        // The predictions against the gold values.
        Evaluation::Regression(_) => (vec![scatter_figure(points, "")?], vec![]),
    };
    write_page(path, info, report.examples(), results, figures, tables)
}

fn per_label_figure(report: &MultiLabelReport, whose: &str) -> Result<(Figure, Table)> {
    per_class_figure(
        &format!("{whose}precision, recall and F1 per label"),
        "label",
        &report.per_label,
    )
}

/// The section, charts and tables of the kept model's validation in a training report, with a
/// regression's predictions against gold when the trainer kept them.
pub(super) fn best_model_parts(
    report: &Evaluation,
    predictions: Option<&[(f32, f32)]>,
) -> Result<(Section, Vec<Figure>, Vec<Table>)> {
    let section = results_section("Best model on validation", report);
    let whose = "best model: ";
    Ok(match report {
        Evaluation::SingleLabel(r) => {
            let (figures, tables) = evaluation_figures(r, whose)?;
            (section, figures, tables)
        }
        Evaluation::MultiLabel(r) => {
            let (figure, table) = per_label_figure(r, whose)?;
            (section, vec![figure], vec![table])
        }
        Evaluation::Regression(_) => {
            let points: Vec<(f64, f64)> = predictions
                .unwrap_or_default()
                .iter()
                .map(|&(g, p)| (g as f64, p as f64))
                .collect();
            let figures = if points.is_empty() {
                vec![]
            } else {
                vec![scatter_figure(&points, whose)?]
            };
            (section, figures, vec![])
        }
    })
}

fn scatter_figure(points: &[(f64, f64)], whose: &str) -> Result<Figure> {
    let svg = charts::scatter(&Scatter {
        title: format!("{whose}predicted against gold"),
        x_desc: "gold".into(),
        y_desc: "predicted".into(),
        points: points.to_vec(),
    })?;
    Ok(Figure {
        id: "chart-scatter".into(),
        svg,
        note: format!(
            "One dot per example ({}); the line is y = x, where a prediction is exact.",
            points.len()
        ),
    })
}

fn write_page(
    path: &Path,
    info: &EvalInfo,
    examples: usize,
    results: Section,
    figures: Vec<Figure>,
    tables: Vec<Table>,
) -> Result<()> {
    let rate = examples as f64 / info.seconds.max(1e-9);
    let sections = vec![
        Section {
            title: "Evaluation".into(),
            rows: vec![
                ("model".into(), info.model.clone()),
                ("data".into(), info.data.display().to_string()),
                ("rows".into(), examples.to_string()),
                ("device".into(), info.device.clone()),
                ("wall time".into(), seconds(info.seconds)),
                ("examples/s".into(), format!("{rate:.1}")),
                ("peak memory".into(), memory(info.peak_memory_mb)),
            ],
        },
        results,
    ];
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

/// A section of the task's metrics to 4 decimals (those of [`Evaluation::values`]), then the
/// loss when there is one, then the examples.
fn results_section(title: &str, report: &Evaluation) -> Section {
    let (loss, metrics): (Vec<_>, Vec<_>) = report
        .values()
        .into_iter()
        .partition(|(metric, _)| *metric == BestMetric::Loss);
    let mut rows: Vec<(String, String)> = metrics
        .into_iter()
        .chain(loss)
        .map(|(metric, v)| (metric.label().to_string(), format!("{v:.4}")))
        .collect();
    rows.push(("examples".into(), report.examples().to_string()));
    Section {
        title: title.into(),
        rows,
    }
}

/// The confusion matrix and per-class charts of a single-label evaluation, and the per-class
/// table. `whose` names the model in titles ("best model: ").
pub(super) fn evaluation_figures(
    report: &Report,
    whose: &str,
) -> Result<(Vec<Figure>, Vec<Table>)> {
    let labels: Vec<String> = report
        .labels
        .iter()
        .map(|l| printable(l).into_owned())
        .collect();
    let confusion = charts::heatmap(&Heatmap {
        title: format!("{whose}confusion matrix"),
        row_desc: "true label".into(),
        col_desc: "predicted label".into(),
        labels: labels.clone(),
        counts: report.confusion_matrix.clone(),
    })?;
    let (per_class, table) = per_class_figure(
        &format!("{whose}precision, recall and F1 per class"),
        "class",
        &report.per_class,
    )?;
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
        per_class,
    ];
    Ok((figures, vec![table]))
}

/// Precision, recall and F1 per class (or label, `what`) with support, as grouped bars and
/// as a table.
/// Labels are shown with control characters escaped (XML forbids them).
fn per_class_figure(title: &str, what: &str, classes: &[ClassReport]) -> Result<(Figure, Table)> {
    let labels: Vec<String> = classes
        .iter()
        .map(|c| printable(&c.label).into_owned())
        .collect();
    let svg = charts::grouped_bars(&GroupedBars {
        title: title.into(),
        y_desc: "score".into(),
        categories: labels,
        notes: classes.iter().map(|c| format!("n={}", c.support)).collect(),
        measures: vec![
            (
                "precision".into(),
                classes.iter().map(|c| c.precision).collect(),
            ),
            ("recall".into(), classes.iter().map(|c| c.recall).collect()),
            ("F1".into(), classes.iter().map(|c| c.f1).collect()),
        ],
        // Headroom above 1 for the legend, which then covers no bar.
        y_max: 1.35,
    })?;
    let figure = Figure {
        id: "chart-per-class".into(),
        svg,
        note: format!("n = support: the examples of each {what}."),
    };
    let table = Table {
        id: "table-per-class".into(),
        title: format!("Per {what}"),
        header: [what, "precision", "recall", "F1", "support"]
            .map(String::from)
            .to_vec(),
        rows: classes
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
    Ok((figure, table))
}
