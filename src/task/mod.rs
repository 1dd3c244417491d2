//! What a classifier's outputs mean: transformers' `problem_type`. Each task says how logits
//! become the answer a user sees; the front ends (predict, eval, serve) ask it instead of
//! assuming one label per text.

pub mod multi_label;
pub mod regression;

use anyhow::{Result, bail};
use serde::Serialize;

/// A model's task, as `problem_type` in `config.json` names it.
#[derive(Debug, Clone, PartialEq)]
pub enum Task {
    /// One class per text: a softmax over the labels.
    SingleLabel,
    /// Any number of labels per text: a sigmoid per label, each compared with its threshold.
    MultiLabel { thresholds: Vec<f32> },
    /// One number (or one per output) per text: the logits as they are.
    Regression,
}

/// The threshold a multi-label model uses for a label it has no tuned threshold for.
pub const DEFAULT_THRESHOLD: f32 = 0.5;

impl Task {
    /// The task of a model with `num_labels` outputs. Without `problem_type`, transformers
    /// treats one output as regression and more as single-label classification.
    pub fn from_problem_type(problem_type: Option<&str>, num_labels: usize) -> Result<Self> {
        match problem_type {
            Some("single_label_classification") => Ok(Self::SingleLabel),
            Some("multi_label_classification") => Ok(Self::MultiLabel {
                thresholds: vec![DEFAULT_THRESHOLD; num_labels],
            }),
            Some("regression") => Ok(Self::Regression),
            None if num_labels == 1 => Ok(Self::Regression),
            None => Ok(Self::SingleLabel),
            Some(other) => bail!(
                "problem_type `{other}` is not one of single_label_classification, \
                 multi_label_classification, regression"
            ),
        }
    }

    /// transformers' name for the task.
    pub fn problem_type(&self) -> &'static str {
        match self {
            Self::SingleLabel => "single_label_classification",
            Self::MultiLabel { .. } => "multi_label_classification",
            Self::Regression => "regression",
        }
    }

    /// The answer for one input's logits.
    pub fn predict(&self, logits: &[f32]) -> Prediction {
        match self {
            Self::SingleLabel => {
                let probabilities = softmax(logits);
                Prediction::SingleLabel {
                    label: argmax(&probabilities),
                    probabilities,
                }
            }
            Self::MultiLabel { thresholds } => {
                let probabilities: Vec<f32> = logits.iter().map(|&x| sigmoid(x)).collect();
                let labels = probabilities
                    .iter()
                    .zip(thresholds)
                    .enumerate()
                    .filter(|(_, (p, t))| p >= t)
                    .map(|(i, _)| i)
                    .collect();
                Prediction::MultiLabel {
                    probabilities,
                    labels,
                }
            }
            Self::Regression => Prediction::Regression {
                values: logits.to_vec(),
            },
        }
    }
}

/// What a model answers for one input.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Prediction {
    /// The most probable label and every label's probability (summing to 1).
    SingleLabel {
        label: usize,
        probabilities: Vec<f32>,
    },
    /// Each label's own probability, and the labels at or over their threshold, in label order.
    MultiLabel {
        probabilities: Vec<f32>,
        labels: Vec<usize>,
    },
    /// The predicted value of each output (one for a usual regression model).
    Regression { values: Vec<f32> },
}

impl Prediction {
    /// The per-label scores shown to users: probabilities, or the regression values.
    pub fn scores(&self) -> &[f32] {
        match self {
            Self::SingleLabel { probabilities, .. } | Self::MultiLabel { probabilities, .. } => {
                probabilities
            }
            Self::Regression { values } => values,
        }
    }
}

/// Index of the largest value (the first of equals; 0 for an empty slice).
pub fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .fold(None, |best: Option<(usize, f32)>, (i, &v)| match best {
            Some((_, b)) if b >= v => best,
            _ => Some((i, v)),
        })
        .map_or(0, |(i, _)| i)
}

/// A softmax computed in f64 from the largest logit, so large logits cannot overflow.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let exp: Vec<f64> = logits.iter().map(|&x| (x as f64 - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.iter().map(|e| (e / sum) as f32).collect()
}

pub fn sigmoid(x: f32) -> f32 {
    (1.0 / (1.0 + (-(x as f64)).exp())) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_type_decides_the_task_as_transformers_does() {
        let task = |p, n| Task::from_problem_type(p, n).unwrap();
        assert_eq!(task(None, 1), Task::Regression);
        assert_eq!(task(None, 3), Task::SingleLabel);
        assert_eq!(task(Some("regression"), 1), Task::Regression);
        assert_eq!(
            task(Some("multi_label_classification"), 2),
            Task::MultiLabel {
                thresholds: vec![0.5, 0.5]
            }
        );
        let e = Task::from_problem_type(Some("ranking"), 2).unwrap_err();
        assert!(e.to_string().contains("`ranking`"), "{e}");
    }

    #[test]
    fn each_task_turns_logits_into_its_answer() {
        let Prediction::SingleLabel {
            label,
            probabilities,
        } = Task::SingleLabel.predict(&[1.0, 3.0, 2.0])
        else {
            panic!("single-label prediction expected");
        };
        assert_eq!(label, 1);
        assert!((probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((probabilities[1] - 0.665_240_9).abs() < 1e-6);

        let multi = Task::MultiLabel {
            thresholds: vec![0.5, 0.5, 0.9],
        };
        let Prediction::MultiLabel {
            probabilities,
            labels,
        } = multi.predict(&[0.0, -1.0, 2.0])
        else {
            panic!("multi-label prediction expected");
        };
        assert_eq!(probabilities[0], 0.5);
        assert!((probabilities[2] - 0.880_797_1).abs() < 1e-6);
        assert_eq!(labels, [0], "0.5 meets its threshold, 0.88 misses 0.9");

        assert_eq!(
            Task::Regression.predict(&[3.25]),
            Prediction::Regression { values: vec![3.25] }
        );
    }

    #[test]
    fn softmax_survives_huge_logits() {
        let p = softmax(&[1e30, 0.0]);
        assert_eq!(p, [1.0, 0.0]);
        assert_eq!(argmax(&[0.2, 0.7, 0.7]), 1);
    }
}
