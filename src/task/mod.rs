//! What a classifier's outputs mean: transformers' `problem_type`. Each task says how logits
//! become the answer a user sees; the front ends (predict, eval, serve) ask it instead of
//! assuming one label per text.

pub mod evaluation;
pub mod loss;
pub mod multi_label;
pub mod regression;
pub mod targets;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::data::LabelSet;
use crate::metrics::Report;
pub use evaluation::{BestMetric, Evaluation};
pub use loss::Loss;
pub use targets::{ClassWeights, Targets};

/// transformers' `problem_type`: the `problem_type` key of a training config and of a
/// model's `config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemType {
    SingleLabelClassification,
    MultiLabelClassification,
    Regression,
}

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

    /// A multi-label task with the thresholds config.json saved (`thresholds`: one number in
    /// (0, 1) per label); other tasks, or no saved thresholds, stay as they are.
    pub fn with_saved_thresholds(self, saved: Option<&serde_json::Value>) -> Result<Self> {
        let (Self::MultiLabel { thresholds }, Some(saved)) = (&self, saved) else {
            return Ok(self);
        };
        let values: Option<Vec<f32>> = saved.as_array().and_then(|items| {
            items
                .iter()
                .map(|v| {
                    v.as_f64()
                        .filter(|t| *t > 0.0 && *t < 1.0)
                        .map(|t| t as f32)
                })
                .collect()
        });
        match values {
            Some(v) if v.len() == thresholds.len() => Ok(Self::MultiLabel { thresholds: v }),
            _ => bail!(
                "thresholds must be a list of {} numbers between 0 and 1 (one per label), not {}",
                thresholds.len(),
                crate::terminal::printable(&saved.to_string())
            ),
        }
    }

    /// The task of a model trained for `problem` with `num_labels` outputs, multi-label
    /// decisions at `threshold`.
    pub fn new(problem: ProblemType, num_labels: usize, threshold: f32) -> Self {
        match problem {
            ProblemType::SingleLabelClassification => Self::SingleLabel,
            ProblemType::MultiLabelClassification => Self::MultiLabel {
                thresholds: vec![threshold; num_labels],
            },
            ProblemType::Regression => Self::Regression,
        }
    }

    /// The metrics a validation of this task reports; the first picks the best model unless
    /// the config names another.
    pub fn metrics(&self) -> &'static [BestMetric] {
        use BestMetric::*;
        match self {
            Self::SingleLabel => &[Accuracy, MacroF1, WeightedF1, Loss],
            Self::MultiLabel { .. } => &[
                MacroF1,
                MicroF1,
                WeightedF1,
                SamplesF1,
                SubsetAccuracy,
                HammingLoss,
                Loss,
            ],
            Self::Regression => &[Pearson, Spearman, R2, Mse, Rmse, Mae, Loss],
        }
    }

    /// The metrics of `logits` against `targets`, which say the task; a multi-label model's
    /// decisions use its thresholds.
    pub fn evaluate(
        &self,
        logits: &[Vec<f32>],
        targets: &Targets,
        labels: &LabelSet,
    ) -> Evaluation {
        match targets {
            Targets::Classes(truth) => {
                Evaluation::SingleLabel(single_label_report(logits, truth, labels))
            }
            Targets::LabelSets(truth) => {
                let default = vec![DEFAULT_THRESHOLD; labels.len()];
                let thresholds = match self {
                    Self::MultiLabel { thresholds } => thresholds,
                    _ => &default,
                };
                Evaluation::MultiLabel(multi_label::evaluate(
                    logits,
                    truth,
                    thresholds,
                    labels.names(),
                ))
            }
            Targets::Values(truth) => {
                let truth: Vec<f64> = truth.iter().map(|&v| v as f64).collect();
                let predicted: Vec<f64> = logits.iter().map(|l| l[0] as f64).collect();
                Evaluation::Regression(regression::RegressionReport::compute(&truth, &predicted))
            }
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

/// Metrics of single-label logits against the true label ids. The loss is the mean
/// cross-entropy, as the training loss without weights or smoothing.
pub fn single_label_report(logits: &[Vec<f32>], truth: &[usize], labels: &LabelSet) -> Report {
    let probs: Vec<Vec<f32>> = logits.iter().map(|l| softmax(l)).collect();
    let predicted: Vec<usize> = probs.iter().map(|p| argmax(p)).collect();
    let loss = probs
        .iter()
        .zip(truth)
        .map(|(p, &t)| -(p[t].max(f32::MIN_POSITIVE) as f64).ln())
        .sum::<f64>()
        / truth.len().max(1) as f64;
    Report::compute(truth, &predicted, labels.names(), Some(loss))
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
