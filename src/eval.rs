//! Evaluating a classifier on labelled data.

use std::path::PathBuf;

use anyhow::Result;
use candle_core::Device;
use indicatif::ProgressBar;

use crate::data::{self, Columns, Format, LabelSet};
use crate::interrupt;
use crate::metrics::Report;
use crate::model::FineTuned;
use crate::predict::{Scorer, argmax};
use crate::tokenize::Encoded;

/// Metrics of `model` on encoded examples with known label ids. The loss is the mean
/// cross-entropy, as the training loss.
pub fn evaluate_encoded(
    scorer: &Scorer,
    encoded: &[Encoded],
    truth: &[usize],
    labels: &LabelSet,
    progress: Option<&ProgressBar>,
) -> Result<Report> {
    let probs = scorer.probabilities(encoded, progress)?;
    Ok(report(&probs, truth, labels))
}

fn report(probs: &[Vec<f32>], truth: &[usize], labels: &LabelSet) -> Report {
    let predicted: Vec<usize> = probs.iter().map(|p| argmax(p)).collect();
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
    pub batch_size: usize,
    pub max_samples: Option<usize>,
}

/// Evaluates a fine-tuned model folder on a labelled file. A label the model was not trained
/// on is an error naming the row. A signal caught by [`interrupt`] stops it between batches.
pub fn evaluate_file(model: &FineTuned, opts: &EvalOptions, device: &Device) -> Result<Report> {
    let format = match opts.format {
        Some(f) => f,
        None => Format::from_path(&opts.data)?,
    };
    let rows = data::read_rows(&opts.data, format, &opts.columns, opts.max_samples)?;
    let labels = model.labels.with_default_names_as_ids();
    let examples = data::label_rows(&opts.data, rows, &labels)?;
    let inputs: Vec<(&str, Option<&str>)> = examples
        .iter()
        .map(|e| (e.text.as_str(), e.text_pair.as_deref()))
        .collect();
    let encoded = model.tokenizer.encode(&inputs)?;
    let truth: Vec<usize> = examples.iter().map(|e| e.label).collect();
    let bar = ProgressBar::new(encoded.len() as u64);
    let scorer = Scorer::for_model(model, opts.batch_size, device);
    let probs = scorer.probabilities_checked(&encoded, Some(&bar), &mut || {
        Ok(interrupt::check(|| "evaluation stopped".into())?)
    })?;
    bar.finish_and_clear();
    Ok(report(&probs, &truth, &labels))
}
