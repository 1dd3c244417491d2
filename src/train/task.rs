//! What a run optimises: the task of the training data, with the loss the config makes of
//! it (class weights, label smoothing), the metric that picks the best model, and the
//! thresholds a multi-label model is tuned to after training.

use anyhow::{Result, bail};
use serde_json::json;

use super::{Prepared, Split};
use crate::config::{BestMetric, TrainConfig};
use crate::data::LabelSet;
use crate::infer::{Batching, Classifier, LoadOptions};
use crate::model::{ModelConfig, Products};
use crate::task::targets::{ClassWeights, WeightRule, class_weights};
use crate::task::{Evaluation, Loss, ProblemType, Targets, Task, multi_label};

/// `{label: value}` for a JSON file.
pub(super) fn by_label(labels: &LabelSet, values: &[f32]) -> serde_json::Value {
    labels
        .names()
        .iter()
        .zip(values)
        .map(|(n, v)| (n.clone(), json!(v)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Class weights as resolved for the training data.
pub(super) struct ResolvedWeights {
    /// `class weights` or `pos_weight`, for messages.
    kind: &'static str,
    pub(super) values: Vec<f32>,
}

/// The task of a run with everything the config adds to it: the loss (with class weights
/// and label smoothing) and the metric that picks the best model.
pub struct TaskSetup {
    pub task: Task,
    pub labels: LabelSet,
    pub loss: Loss,
    pub metric: BestMetric,
    pub(super) weights: Option<ResolvedWeights>,
}

impl TaskSetup {
    pub fn new(config: &TrainConfig, data: &Prepared) -> Result<Self> {
        let problem = data.problem;
        if let Err((key, why)) = config.check_task(problem) {
            bail!("{key} {why} ({})", data.problem_source);
        }
        let labels = data.labels.clone();
        let task = Task::new(problem, labels.len(), config.threshold as f32);
        let metric = config.metric_for_best_model.unwrap_or(task.metrics()[0]);
        if !task.metrics().contains(&metric) {
            bail!(
                "metric_for_best_model = \"{}\" does not apply to {}: choose one of {}",
                metric.name(),
                task.problem_type(),
                task.metrics()
                    .iter()
                    .map(|m| m.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let weights = match &config.class_weights {
            None | Some(ClassWeights::Computed(WeightRule::None)) => None,
            Some(spec) => {
                let values =
                    class_weights(spec, &data.train.targets, &labels, config.max_class_weight)
                        .map_err(|why| anyhow::anyhow!("class_weights {why}"))?;
                Some(ResolvedWeights {
                    kind: match problem {
                        ProblemType::MultiLabelClassification => "pos_weight",
                        _ => "class weights",
                    },
                    values,
                })
            }
        };
        let loss = match problem {
            ProblemType::SingleLabelClassification => Loss::CrossEntropy {
                weights: weights.as_ref().map(|w| w.values.clone()),
                label_smoothing: config.label_smoothing_factor,
            },
            ProblemType::MultiLabelClassification => Loss::BinaryCrossEntropy {
                pos_weight: weights.as_ref().map(|w| w.values.clone()),
            },
            ProblemType::Regression => Loss::MeanSquaredError,
        };
        Ok(Self {
            task,
            labels,
            loss,
            metric,
            weights,
        })
    }

    /// The lines that tell a user what the run optimises.
    pub fn describe(&self, source: &str) -> Vec<String> {
        let mut lines = vec![format!(
            "task: {} ({source}), {} label(s); best model by eval_{}",
            self.task.problem_type(),
            self.labels.len(),
            self.metric.name()
        )];
        if let Some(w) = &self.weights {
            let shown: Vec<String> = self
                .labels
                .names()
                .iter()
                .zip(&w.values)
                .map(|(n, v)| format!("{} {v:.3}", crate::terminal::printable(n)))
                .collect();
            lines.push(format!("{}: {}", w.kind, shown.join(", ")));
        }
        lines
    }
}

/// Picks each label's threshold on the validation set with the saved (best) model, saves
/// them in config.json and returns them with the validation metrics at those thresholds.
pub(super) fn tune_thresholds(
    config: &TrainConfig,
    model_config: &ModelConfig,
    setup: &TaskSetup,
    validation: &Split,
    device: &candle_core::Device,
) -> Result<(Evaluation, Vec<f32>)> {
    let Targets::LabelSets(truth) = &validation.targets else {
        bail!("tune_thresholds applies to multi_label_classification only");
    };
    let classifier = Classifier::load(
        &config.output_dir,
        &LoadOptions {
            max_seq_length: Some(config.max_seq_length),
            device: device.clone(),
            products: Products::Plain,
        },
    )?;
    let logits = classifier.logits(
        &validation.encoded,
        Batching::rows(config.per_device_eval_batch_size),
    )?;
    let thresholds = multi_label::tune_thresholds(&logits, truth, config.threshold as f32);
    let before = setup
        .task
        .evaluate(&logits, &validation.targets, &setup.labels);
    let task = Task::MultiLabel {
        thresholds: thresholds.clone(),
    };
    let after = task.evaluate(&logits, &validation.targets, &setup.labels);
    let metric = setup.metric;
    eprintln!(
        "thresholds tuned on the validation set: eval_{} {:.4} at threshold {} -> {:.4}",
        metric.name(),
        before.metric(metric).unwrap_or(f64::NAN),
        config.threshold,
        after.metric(metric).unwrap_or(f64::NAN)
    );
    let mut saved = model_config.clone();
    saved.set_labels(&setup.labels, &task);
    saved.save(&config.output_dir)?;
    Ok((after, thresholds))
}
