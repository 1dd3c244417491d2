//! Evaluating a classifier on labelled data.

use std::path::PathBuf;

use anyhow::{Result, bail};
use indicatif::ProgressBar;

use crate::data::{self, Columns, Format, LabelSet, Row};
use crate::infer::{Batching, Classifier};
use crate::interrupt;
use crate::metrics::Report;
use crate::task::multi_label::{self, MultiLabelReport};
use crate::task::regression::RegressionReport;
use crate::task::targets::{LabelColumn, targets};
use crate::task::{Evaluation, ProblemType, Targets, Task, single_label_report};
use crate::tokenize::Input;

pub struct EvalOptions {
    pub data: PathBuf,
    pub format: Option<Format>,
    pub columns: Columns,
    pub batching: Batching,
    pub max_samples: Option<usize>,
    /// Separates the labels of a multi-label cell (`joy,love`); JSON lists need none.
    pub label_delimiter: String,
}

/// Evaluates a fine-tuned single-label classifier on a labelled file. A label the model was
/// not trained on is an error naming the row. A signal caught by [`interrupt`] stops it
/// between batches.
pub fn evaluate_file(classifier: &Classifier, opts: &EvalOptions) -> Result<Report> {
    if *classifier.task() != Task::SingleLabel {
        return Err(wrong_task(classifier, "single_label_classification"));
    }
    let rows = read_rows(opts)?;
    let labels = classifier.labels().with_default_names_as_ids();
    let examples = data::label_rows(&opts.data, rows, &labels)?;
    let truth: Vec<usize> = examples.iter().map(|e| e.label).collect();
    let inputs: Vec<Input> = examples.iter().map(Input::from).collect();
    let logits = score(classifier, &inputs, opts.batching)?;
    Ok(single_label_report(&logits, &truth, &labels))
}

/// Evaluates a regression model with one output on a file whose label column holds numbers
/// (STS-B's `score`). A label that is not a finite number is an error naming the row.
/// Returns the metrics and each row's (gold, predicted) values.
pub fn evaluate_regression_file(
    classifier: &Classifier,
    opts: &EvalOptions,
) -> Result<(RegressionReport, Vec<(f64, f64)>)> {
    if *classifier.task() != Task::Regression || classifier.labels().len() != 1 {
        bail!(
            "{}: is a {} model with {} outputs; this evaluation needs a regression with one",
            classifier.dir().display(),
            classifier.task().problem_type(),
            classifier.labels().len()
        );
    }
    let rows = read_rows(opts)?;
    let Targets::Values(truth) = gold(ProblemType::Regression, &rows, classifier.labels(), opts)?
    else {
        unreachable!("regression targets are values")
    };
    let truth: Vec<f64> = truth.into_iter().map(f64::from).collect();
    let inputs: Vec<Input> = rows.iter().map(Input::from).collect();
    let predicted: Vec<f64> = score(classifier, &inputs, opts.batching)?
        .iter()
        .map(|l| l[0] as f64)
        .collect();
    let report = RegressionReport::compute(&truth, &predicted);
    Ok((report, truth.into_iter().zip(predicted).collect()))
}

/// Evaluates a multi-label model on a file whose label cells list each text's labels: a JSON
/// list (`["joy", "love"]`, as JSON Lines files hold them) or names joined with the label
/// delimiter. A label the model does not know is an error naming the row. The loss is the
/// mean binary cross-entropy over rows and labels, as transformers computes it.
pub fn evaluate_multi_label_file(
    classifier: &Classifier,
    opts: &EvalOptions,
) -> Result<MultiLabelReport> {
    let Task::MultiLabel { thresholds } = classifier.task() else {
        return Err(wrong_task(classifier, "multi_label_classification"));
    };
    let rows = read_rows(opts)?;
    let labels = classifier.labels().with_default_names_as_ids();
    let Targets::LabelSets(truth) =
        gold(ProblemType::MultiLabelClassification, &rows, &labels, opts)?
    else {
        unreachable!("multi-label targets are label sets")
    };
    let inputs: Vec<Input> = rows.iter().map(Input::from).collect();
    let logits = score(classifier, &inputs, opts.batching)?;
    Ok(multi_label::evaluate(
        &logits,
        &truth,
        thresholds,
        labels.names(),
    ))
}

/// An evaluation of a model of any task, and for a regression each row's (gold, predicted)
/// value.
pub struct Evaluated {
    pub report: Evaluation,
    pub points: Vec<(f64, f64)>,
}

/// Evaluates a model of any task on a labelled file: the front end of `bertcls eval`.
pub fn evaluate(classifier: &Classifier, opts: &EvalOptions) -> Result<Evaluated> {
    Ok(match classifier.task() {
        Task::SingleLabel => Evaluated {
            report: Evaluation::SingleLabel(evaluate_file(classifier, opts)?),
            points: Vec::new(),
        },
        Task::MultiLabel { .. } => Evaluated {
            report: Evaluation::MultiLabel(evaluate_multi_label_file(classifier, opts)?),
            points: Vec::new(),
        },
        Task::Regression => {
            let (report, points) = evaluate_regression_file(classifier, opts)?;
            Evaluated {
                report: Evaluation::Regression(report),
                points,
            }
        }
    })
}

fn wrong_task(classifier: &Classifier, wanted: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{}: is a {} model, not a {wanted} one",
        classifier.dir().display(),
        classifier.task().problem_type()
    )
}

/// The gold targets of `rows`, read and checked as training reads its own (errors name the
/// file, line and column).
fn gold(
    problem: ProblemType,
    rows: &[Row],
    labels: &LabelSet,
    opts: &EvalOptions,
) -> Result<Targets> {
    let column = LabelColumn {
        file: &opts.data,
        column: opts.columns.label.as_deref().unwrap_or("label"),
        delimiter: &opts.label_delimiter,
    };
    Ok(targets(problem, rows, labels, &column)?)
}

fn read_rows(opts: &EvalOptions) -> Result<Vec<Row>> {
    let format = match opts.format {
        Some(f) => f,
        None => Format::from_path(&opts.data)?,
    };
    Ok(data::read_rows(
        &opts.data,
        format,
        &opts.columns,
        opts.max_samples,
    )?)
}

/// Logits of every input, with a progress bar; a signal stops it between batches.
fn score(classifier: &Classifier, inputs: &[Input], batching: Batching) -> Result<Vec<Vec<f32>>> {
    let encoded = classifier.encode(inputs)?;
    let bar = ProgressBar::new(encoded.len() as u64);
    let logits = classifier.logits_observed(&encoded, batching, &mut |rows| {
        bar.inc(rows as u64);
        Ok(interrupt::check(|| "evaluation stopped".into())?)
    })?;
    bar.finish_and_clear();
    Ok(logits)
}
