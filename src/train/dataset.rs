//! The training and validation sets: read, split, labelled and tokenized once; and the order
//! of each epoch's batches.

use std::path::Path;

use anyhow::{Result, bail};

use crate::config::TrainConfig;
use crate::data::{self, Columns, Format, LabelSet, Row};
use crate::rng::Rng;
use crate::task::targets::{self, LabelColumn};
use crate::task::{ProblemType, Targets};
use crate::tokenize::{Encoded, Input, TextEncoder};

/// Independent random streams derived from the seed.
pub(crate) mod stream {
    pub const HEAD: u64 = 1;
    pub const SPLIT: u64 = 2;
    pub const SHUFFLE: u64 = 3;
    pub const DROPOUT: u64 = 4;
}

/// Tokenized data and its targets, row by row.
pub struct Split {
    pub encoded: Vec<Encoded>,
    pub targets: Targets,
}

impl Split {
    pub fn len(&self) -> usize {
        self.encoded.len()
    }

    pub fn is_empty(&self) -> bool {
        self.encoded.is_empty()
    }
}

/// Training and validation data with the task and the label set of the training file.
pub struct Prepared {
    pub problem: ProblemType,
    /// Why the task is what it is: the config's word, or what detection saw.
    pub problem_source: String,
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
    let delimiter = config.label_delimiter.as_deref().unwrap_or(",");
    let (problem, problem_source) = match config.problem_type {
        Some(p) => (p, "set in the config".to_string()),
        None => {
            let (p, why) = targets::detect(&train_rows, config.label_delimiter.is_some());
            (p, format!("detected: {why}"))
        }
    };
    let train_column = LabelColumn {
        file: train_file,
        column: &config.label_column,
        delimiter,
    };
    let labels = targets::label_set(problem, &train_rows, &train_column)?;
    if problem == ProblemType::SingleLabelClassification && labels.len() < 2 {
        bail!(
            "{}: column `{}` has {} distinct label(s); a classifier needs at least two",
            train_file.display(),
            config.label_column,
            labels.len()
        );
    }
    if labels.is_empty() {
        bail!(
            "{}: column `{}` names no label on any row",
            train_file.display(),
            config.label_column
        );
    }
    let split = |rows: &[Row], column: &LabelColumn| -> Result<Split> {
        let targets = targets::targets(problem, rows, &labels, column)?;
        let inputs: Vec<Input> = rows.iter().map(Input::from).collect();
        Ok(Split {
            encoded: tokenizer.encode(&inputs)?,
            targets,
        })
    };
    let train = split(&train_rows, &train_column)?;
    let validation_label_column = config
        .validation_label_column
        .as_deref()
        .unwrap_or(&config.label_column);
    let validation = match validation_rows {
        Some((file, mut rows)) => {
            if let Some(n) = config.max_eval_samples {
                rows.truncate(n);
            }
            let column = LabelColumn {
                file: &file,
                column: if config.validation_file.is_some() {
                    validation_label_column
                } else {
                    &config.label_column
                },
                delimiter,
            };
            Some(split(&rows, &column)?)
        }
        None => None,
    };
    Ok(Prepared {
        problem,
        problem_source,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn padded_tokens(batches: &[Vec<usize>], lengths: &[usize]) -> usize {
        batches
            .iter()
            .map(|b| b.len() * b.iter().map(|&i| lengths[i]).max().unwrap_or(0))
            .sum()
    }

    /// Grouping by length changes only which examples share a batch: every example is seen
    /// exactly once per epoch, batches keep their size, and far less padding is computed.
    #[test]
    fn grouped_batches_cover_every_example_once_with_less_padding() {
        let mut rng = Rng::new(5);
        let lengths: Vec<usize> = (0..1000).map(|_| 3 + rng.below(60) as usize).collect();
        for group in [false, true] {
            let batches = epoch_batches(&lengths, 32, 42, 0, group);
            let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..1000).collect::<Vec<_>>());
            assert_eq!(
                batches.iter().filter(|b| b.len() != 32).count(),
                1,
                "one partial batch"
            );
            assert_eq!(batches, epoch_batches(&lengths, 32, 42, 0, group));
            assert_ne!(batches, epoch_batches(&lengths, 32, 42, 1, group));
        }
        let random = padded_tokens(&epoch_batches(&lengths, 32, 42, 0, false), &lengths);
        let grouped = padded_tokens(&epoch_batches(&lengths, 32, 42, 0, true), &lengths);
        let real: usize = lengths.iter().sum();
        assert!(
            grouped < real + real / 10,
            "{grouped} padded for {real} real"
        );
        assert!(random > grouped + grouped / 2, "{random} vs {grouped}");
    }
}
