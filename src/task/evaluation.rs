//! A validation result of any task, and the metric that picks the best model.

use serde::{Deserialize, Serialize};

use super::multi_label::MultiLabelReport;
use super::regression::RegressionReport;
use crate::metrics::Report;

/// Which validation metric picks the best checkpoint (`metric_for_best_model`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BestMetric {
    /// Any task's loss: cross-entropy, binary cross-entropy or mean squared error.
    Loss,
    Accuracy,
    MacroF1,
    WeightedF1,
    MicroF1,
    SamplesF1,
    SubsetAccuracy,
    HammingLoss,
    Mse,
    Rmse,
    Mae,
    Pearson,
    Spearman,
    R2,
}

impl BestMetric {
    pub fn greater_is_better(self) -> bool {
        !matches!(
            self,
            Self::Loss | Self::HammingLoss | Self::Mse | Self::Rmse | Self::Mae
        )
    }

    /// How people read it: `macro F1`, `Pearson`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Loss => "loss",
            Self::Accuracy => "accuracy",
            Self::MacroF1 => "macro F1",
            Self::WeightedF1 => "weighted F1",
            Self::MicroF1 => "micro F1",
            Self::SamplesF1 => "samples F1",
            Self::SubsetAccuracy => "subset accuracy",
            Self::HammingLoss => "Hamming loss",
            Self::Mse => "MSE",
            Self::Rmse => "RMSE",
            Self::Mae => "MAE",
            Self::Pearson => "Pearson",
            Self::Spearman => "Spearman",
            Self::R2 => "R²",
        }
    }

    /// The name in configs and logs (`eval_` + this).
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

/// The validation metrics of one evaluation, of whichever task the model has. Serialized as
/// the task's report itself, so a trainer_state.json holds the same object as before.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Evaluation {
    SingleLabel(Report),
    MultiLabel(MultiLabelReport),
    Regression(RegressionReport),
}

impl Evaluation {
    pub fn examples(&self) -> usize {
        match self {
            Self::SingleLabel(r) => r.examples,
            Self::MultiLabel(r) => r.examples,
            Self::Regression(r) => r.examples,
        }
    }

    /// Every metric this evaluation has, loss first, as (metric, value).
    pub fn values(&self) -> Vec<(BestMetric, f64)> {
        use BestMetric::*;
        let mut values = Vec::new();
        match self {
            Self::SingleLabel(r) => {
                values.extend(r.loss.map(|l| (Loss, l)));
                values.extend([
                    (Accuracy, r.accuracy),
                    (MacroF1, r.macro_f1),
                    (WeightedF1, r.weighted_f1),
                ]);
            }
            Self::MultiLabel(r) => {
                values.extend(r.loss.map(|l| (Loss, l)));
                values.extend([
                    (MicroF1, r.micro_f1),
                    (MacroF1, r.macro_f1),
                    (WeightedF1, r.weighted_f1),
                    (SamplesF1, r.samples_f1),
                    (SubsetAccuracy, r.subset_accuracy),
                    (HammingLoss, r.hamming_loss),
                ]);
            }
            Self::Regression(r) => values.extend([
                (Loss, r.mse),
                (Mse, r.mse),
                (Rmse, r.rmse),
                (Mae, r.mae),
                (Pearson, r.pearson),
                (Spearman, r.spearman),
                (R2, r.r2),
            ]),
        }
        values
    }

    pub fn metric(&self, metric: BestMetric) -> Option<f64> {
        self.values()
            .into_iter()
            .find(|(m, _)| *m == metric)
            .map(|(_, v)| v)
    }

    /// The headline metrics in one line: `accuracy 0.9123, macro F1 0.9001, loss 0.2345`.
    pub fn summary(&self) -> String {
        use BestMetric::*;
        let shown: &[BestMetric] = match self {
            Self::SingleLabel(_) => &[Accuracy, MacroF1, Loss],
            Self::MultiLabel(_) => &[MicroF1, MacroF1, Loss],
            Self::Regression(_) => &[Pearson, Spearman, Mse],
        };
        shown
            .iter()
            .filter_map(|m| Some(format!("{} {:.4}", m.label(), self.metric(*m)?)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl std::fmt::Display for Evaluation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SingleLabel(r) => r.fmt(f),
            Self::MultiLabel(r) => r.fmt(f),
            Self::Regression(r) => r.fmt(f),
        }
    }
}
