//! The evaluation charts of a single-label report: the confusion matrix as a heat map with
//! counts and per-class precision, recall and F1 with support; the page of `eval --report`.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::charts::{self, GroupedBars, Heatmap};
use super::html::{self, Figure, Page, Section, Table};
use super::{memory, seconds};
use crate::metrics::Report;
use crate::terminal::printable;

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

pub(super) fn metrics_section(title: &str, report: &Report) -> Section {
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
pub(super) fn evaluation_figures(
    report: &Report,
    whose: &str,
) -> Result<(Vec<Figure>, Vec<Table>)> {
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
