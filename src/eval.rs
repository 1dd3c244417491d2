//! Evaluating a classifier on labelled data.

use std::path::PathBuf;

use anyhow::{Result, bail};
use indicatif::ProgressBar;

use crate::data::{self, Columns, Format, LabelSet};
use crate::infer::{Batching, Classifier};
use crate::interrupt;
use crate::metrics::Report;
use crate::task::{self, Task};
use crate::tokenize::Input;

/// Metrics of single-label logits against the true label ids. The loss is the mean
/// cross-entropy, as the training loss.
pub fn single_label_report(logits: &[Vec<f32>], truth: &[usize], labels: &LabelSet) -> Report {
    let probs: Vec<Vec<f32>> = logits.iter().map(|l| task::softmax(l)).collect();
    let predicted: Vec<usize> = probs.iter().map(|p| task::argmax(p)).collect();
    let loss = probs
        .iter()
        .zip(truth)
        .map(|(p, &t)| -(p[t].max(f32::MIN_POSITIVE) as f64).ln())
        .sum::<f64>()
        / truth.len().max(1) as f64;
    Report::compute(truth, &predicted, labels.names(), Some(loss))
}

pub struct EvalOptions {
    pub data: PathBuf,
    pub format: Option<Format>,
    pub columns: Columns,
    pub batching: Batching,
    pub max_samples: Option<usize>,
}

/// Evaluates a fine-tuned classifier on a labelled file. A label the model was not trained
/// on is an error naming the row. A signal caught by [`interrupt`] stops it between batches.
pub fn evaluate_file(classifier: &Classifier, opts: &EvalOptions) -> Result<Report> {
    if *classifier.task() != Task::SingleLabel {
        bail!(
            "{}: is a {} model; eval measures single_label_classification models only so far",
            classifier.dir().display(),
            classifier.task().problem_type()
        );
    }
    let format = match opts.format {
        Some(f) => f,
        None => Format::from_path(&opts.data)?,
    };
    let rows = data::read_rows(&opts.data, format, &opts.columns, opts.max_samples)?;
    let labels = classifier.labels().with_default_names_as_ids();
    let examples = data::label_rows(&opts.data, rows, &labels)?;
    let inputs: Vec<Input> = examples
        .iter()
        .map(|e| Input::new(&e.text, e.text_pair.as_deref()))
        .collect();
    let encoded = classifier.encode(&inputs)?;
    let truth: Vec<usize> = examples.iter().map(|e| e.label).collect();
    let bar = ProgressBar::new(encoded.len() as u64);
    let logits = classifier.logits_observed(&encoded, opts.batching, &mut |rows| {
        bar.inc(rows as u64);
        Ok(interrupt::check(|| "evaluation stopped".into())?)
    })?;
    bar.finish_and_clear();
    Ok(single_label_report(&logits, &truth, &labels))
}
