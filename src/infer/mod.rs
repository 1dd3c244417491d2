//! A fine-tuned classifier loaded for inference: model, tokenizer, labels, task and device
//! in one owned value that scores batches of texts or text pairs. `predict`, `eval`, the
//! trainer's evaluation and `serve` are front ends over it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device};

use crate::data::LabelSet;
use crate::limits;
use crate::model::{ModelConfig, Products, SequenceClassifier, TRAINING_ARGS, weights};
use crate::task::{Prediction, Task};
use crate::tokenize::{Batch, Encoded, Input, TextEncoder};

/// How a model folder is loaded.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Truncation length; defaults to the one the model was trained with, else 512, never
    /// over the model's `max_position_embeddings`.
    pub max_seq_length: Option<usize>,
    pub device: Device,
    /// How every linear layer multiplies: bf16 and int8 kernels run on the CPU only.
    pub products: Products,
}

impl LoadOptions {
    pub fn cpu() -> Self {
        Self {
            max_seq_length: None,
            device: Device::Cpu,
            products: Products::Plain,
        }
    }
}

/// How inputs are grouped into forward passes: inputs are sorted longest first and each
/// pass takes as many as fit both bounds (padded tokens = rows × the longest row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    pub max_rows: usize,
    pub max_tokens: usize,
}

impl Batching {
    pub fn rows(max_rows: usize) -> Self {
        Self {
            max_rows,
            max_tokens: limits::MAX_BATCH_TOKENS,
        }
    }
}

/// A fine-tuned classifier ready to score inputs.
pub struct Classifier {
    dir: PathBuf,
    model: SequenceClassifier,
    tokenizer: TextEncoder,
    labels: LabelSet,
    task: Task,
    device: Device,
}

impl Classifier {
    /// Loads a fine-tuned classifier folder, written by bertcls or by transformers'
    /// `save_pretrained`.
    pub fn load(dir: &Path, options: &LoadOptions) -> Result<Self> {
        if !dir.is_dir() {
            bail!("{}: no such model folder", dir.display());
        }
        if options.products != Products::Plain && !options.device.is_cpu() {
            bail!(
                "{} products run on the CPU: pass --device cpu",
                options.products.describe()
            );
        }
        let config = ModelConfig::load(dir)?;
        if let Some(length) = options.max_seq_length {
            limits::check_seq_length("max_seq_length", length, Some(config.max_tokens()))
                .map_err(anyhow::Error::msg)?;
        }
        let labels = match config.labels() {
            Some(labels) => labels,
            // transformers leaves its default names (LABEL_0, LABEL_1, ...) out of
            // config.json: the classifier's shape tells how many there are.
            None => match weights::classifier_size(dir, &config)? {
                Some(n) => LabelSet::from_names((0..n).map(|i| format!("LABEL_{i}")).collect()),
                None => bail!(
                    "{}: config.json has no id2label and the weights no classifier: this is not a \
                     fine-tuned classifier (train one with `bertcls train`)",
                    dir.display()
                ),
            },
        };
        let task = Task::from_problem_type(config.problem_type(), labels.len())
            .and_then(|task| task.with_saved_thresholds(config.thresholds()))
            .with_context(|| format!("{}", dir.join("config.json").display()))?;
        let max_len = options
            .max_seq_length
            .or_else(|| trained_length(dir))
            .unwrap_or(512)
            .min(config.max_tokens());
        let tokenizer = TextEncoder::load(dir, max_len)?;
        config
            .check_vocabulary(tokenizer.vocab_size())
            .with_context(|| dir.display().to_string())?;
        let loaded = weights::load(
            dir,
            &config,
            labels.len(),
            weights::HeadInit::Require,
            &options.device,
        )?;
        let model = SequenceClassifier::build_with(
            &config,
            labels.len(),
            &mut crate::model::params::Tensors(&loaded.tensors),
            options.products,
        )?;
        Ok(Self {
            dir: dir.to_path_buf(),
            model,
            tokenizer,
            labels,
            task,
            device: options.device.clone(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn model(&self) -> &SequenceClassifier {
        &self.model
    }

    pub fn tokenizer(&self) -> &TextEncoder {
        &self.tokenizer
    }

    pub fn labels(&self) -> &LabelSet {
        &self.labels
    }

    pub fn task(&self) -> &Task {
        &self.task
    }

    /// Makes a multi-label model decide every label at `threshold`.
    pub fn set_threshold(&mut self, threshold: f32) -> Result<(), String> {
        let Task::MultiLabel { thresholds } = &mut self.task else {
            return Err(format!(
                "applies to multi-label models only; this one is {}",
                self.task.problem_type()
            ));
        };
        if !(threshold > 0.0 && threshold < 1.0) {
            return Err("must be between 0 and 1, exclusive".into());
        }
        thresholds.fill(threshold);
        Ok(())
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The most tokens an input keeps (special tokens included).
    pub fn max_length(&self) -> usize {
        self.tokenizer.max_length()
    }

    /// Token ids of each input, truncated to [`Self::max_length`].
    pub fn encode(&self, inputs: &[Input]) -> Result<Vec<Encoded>> {
        self.tokenizer.encode(inputs)
    }

    /// Logits of each encoded input, in input order.
    pub fn logits(&self, encoded: &[Encoded], batching: Batching) -> Result<Vec<Vec<f32>>> {
        self.logits_observed(encoded, batching, &mut |_| Ok(()))
    }

    /// As [`Self::logits`], calling `after_batch` with the number of inputs each forward
    /// pass scored: for progress, and to stop (an error from it ends the scoring).
    pub fn logits_observed(
        &self,
        encoded: &[Encoded],
        batching: Batching,
        after_batch: &mut dyn FnMut(usize) -> Result<()>,
    ) -> Result<Vec<Vec<f32>>> {
        batched_logits(
            &self.model,
            self.tokenizer.pad_id(),
            encoded,
            batching,
            &self.device,
            after_batch,
        )
    }

    /// Sizes of the forward passes [`Self::logits`] makes of inputs of `lengths` (longest
    /// first): see [`plan_passes`].
    pub fn plan_passes(&self, lengths: &[usize], batching: Batching) -> Vec<usize> {
        plan_passes(lengths, batching, pass_cost_tokens(&self.device))
    }

    /// Logits of one forward pass over `items`, padded to the longest of them.
    pub fn pass_logits(&self, items: &[&Encoded]) -> Result<Vec<Vec<f32>>> {
        forward_pass(&self.model, self.tokenizer.pad_id(), items, &self.device)
    }

    /// The task's answer for each encoded input.
    pub fn predict_encoded(
        &self,
        encoded: &[Encoded],
        batching: Batching,
    ) -> Result<Vec<Prediction>> {
        Ok(self
            .logits(encoded, batching)?
            .iter()
            .map(|l| self.task.predict(l))
            .collect())
    }

    /// Tokenizes and scores inputs held in memory.
    pub fn predict(&self, inputs: &[Input], batching: Batching) -> Result<Vec<Prediction>> {
        self.predict_encoded(&self.encode(inputs)?, batching)
    }
}

/// The `max_seq_length` a model folder was trained with, from `training_args.json`.
fn trained_length(dir: &Path) -> Option<usize> {
    let bytes = std::fs::read(dir.join(TRAINING_ARGS)).ok()?;
    let args: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    args["max_seq_length"].as_u64().map(|v| v as usize)
}

/// Logits of `model` for each encoded input, in input order. Inputs go through longest
/// first, in forward passes of similar lengths (see [`plan_passes`]), so that little of the
/// work is padding. `model` should be detached from any gradient graph (see
/// [`SequenceClassifier::detached`]).
pub fn batched_logits(
    model: &SequenceClassifier,
    pad_id: u32,
    encoded: &[Encoded],
    batching: Batching,
    device: &Device,
    after_batch: &mut dyn FnMut(usize) -> Result<()>,
) -> Result<Vec<Vec<f32>>> {
    let mut order: Vec<usize> = (0..encoded.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(encoded[i].ids.len()));
    let lengths: Vec<usize> = order.iter().map(|&i| encoded[i].ids.len()).collect();
    let mut out = vec![Vec::new(); encoded.len()];
    let mut rest = &order[..];
    for rows in plan_passes(&lengths, batching, pass_cost_tokens(device)) {
        let (chunk, tail) = rest.split_at(rows);
        rest = tail;
        let items: Vec<&Encoded> = chunk.iter().map(|&i| &encoded[i]).collect();
        let batch = Batch::collate(&items, pad_id, None, device)?;
        let logits = model
            .logits(&batch)?
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?;
        for (&i, l) in chunk.iter().zip(logits) {
            out[i] = l;
        }
        after_batch(chunk.len())?;
    }
    Ok(out)
}

fn forward_pass(
    model: &SequenceClassifier,
    pad_id: u32,
    items: &[&Encoded],
    device: &Device,
) -> Result<Vec<Vec<f32>>> {
    let batch = Batch::collate(items, pad_id, None, device)?;
    Ok(model
        .logits(&batch)?
        .to_dtype(DType::F32)?
        .to_vec2::<f32>()?)
}

/// What one forward pass costs beyond its tokens, in tokens. On the CPU a pass of one
/// 8-token input takes as long as about 32 more tokens would (per-operation dispatch and
/// allocation, measured with `cargo run --release --example pass_cost -- MODEL`); on a GPU,
/// where padding is nearly free and each pass launches hundreds of kernels, far more.
fn pass_cost_tokens(device: &Device) -> usize {
    if device.is_cpu() { 32 } else { 1024 }
}

/// Splits inputs of `lengths` (longest first) into forward passes: the sizes of consecutive
/// groups, each within `batching`'s bounds (at least one input a pass), that minimise the
/// padded tokens plus `pass_cost` per pass. A batch of mixed lengths is cut where padding
/// would cost more than another pass.
pub fn plan_passes(lengths: &[usize], batching: Batching, pass_cost: usize) -> Vec<usize> {
    let n = lengths.len();
    // best[i]: the cheapest cost of inputs i.., and the size of its first pass.
    let mut best = vec![(0usize, 0usize); n + 1];
    for i in (0..n).rev() {
        let longest = lengths[i].max(1);
        let mut choice = (usize::MAX, 1);
        let most = batching.max_rows.max(1).min(n - i);
        for rows in 1..=most {
            if rows > 1 && rows * longest > batching.max_tokens {
                break;
            }
            let cost = pass_cost + rows * longest + best[i + rows].0;
            if cost <= choice.0 {
                choice = (cost, rows);
            }
        }
        best[i] = choice;
    }
    let mut passes = Vec::new();
    let mut i = 0;
    while i < n {
        passes.push(best[i].1);
        i += best[i].1;
    }
    passes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_respect_both_bounds() {
        let b = Batching {
            max_rows: 4,
            max_tokens: 100,
        };
        assert_eq!(plan_passes(&[10; 6], b, 1000), [4, 2]);
        assert_eq!(plan_passes(&[40, 40, 40], b, 1000), [2, 1], "3 × 40 > 100");
        assert_eq!(
            plan_passes(&[500, 3], b, 1000),
            [1, 1],
            "one input always goes"
        );
        assert!(plan_passes(&[], b, 1000).is_empty());
    }

    #[test]
    fn mixed_lengths_are_cut_where_padding_costs_more_than_a_pass() {
        let b = Batching::rows(64);
        let lengths = [60, 58, 57, 20, 19, 18, 18, 17];
        // One pass: 8 × 60 = 480 padded tokens; two: 3 × 60 + 5 × 20 = 280, plus a pass.
        assert_eq!(plan_passes(&lengths, b, 32), [3, 5]);
        assert_eq!(
            plan_passes(&lengths, b, 1000),
            [8],
            "passes dearer than padding"
        );
        assert_eq!(
            plan_passes(&[25; 64], b, 32),
            [64],
            "equal lengths: one pass"
        );
    }
}
