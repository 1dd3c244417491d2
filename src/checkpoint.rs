//! Training checkpoints: `output_dir/checkpoint-STEP/`, each a complete model folder plus the
//! optimizer state and `trainer_state.json`, enough to resume bit for bit.
//!
//! A checkpoint is written into a temporary folder and renamed into place, and an old one is
//! renamed away before it is deleted: a kill at any instant leaves every `checkpoint-STEP`
//! folder complete. All randomness in training is a function of the seed and counters kept in
//! the state (the epoch for shuffling, the micro-batch count for dropout), so restoring the
//! counters restores the random streams.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::task::{BestMetric, Evaluation};

const PREFIX: &str = "checkpoint-";
pub const MODEL_FILE: &str = "model.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "trainer_state.json";
/// Files of the output folder copied into each checkpoint, so it is a usable model folder.
pub const MODEL_FOLDER_FILES: [&str; 6] = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "training_args.json",
];

/// One entry of `log_history`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogEntry {
    pub step: usize,
    pub epoch: f64,
    #[serde(flatten)]
    pub values: serde_json::Map<String, serde_json::Value>,
}

/// Where training stands: the counters the loop needs to carry on exactly where it was.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Progress {
    /// Optimizer updates done.
    pub step: usize,
    /// The epoch in progress (0-based) and the updates done within it.
    pub epoch: usize,
    pub updates_in_epoch: usize,
    /// Micro-batches done: the dropout stream's position.
    pub micro_batches: u64,
    pub examples_seen: usize,
    pub real_tokens: usize,
    pub padded_tokens: usize,
    pub loss_sum: f64,
    /// The loss since the last log entry.
    pub window_loss: f64,
    pub window_batches: usize,
    pub grad_norm: f64,
    /// Seconds of training in earlier runs of this job (before a resume).
    pub elapsed_seconds: f64,
}

/// `trainer_state.json`: transformers' fields plus what resuming needs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainerState {
    pub global_step: usize,
    pub epoch: f64,
    pub max_steps: usize,
    pub num_train_epochs: f64,
    pub train_batch_size: usize,
    pub logging_steps: usize,
    pub metric_for_best_model: BestMetric,
    pub best_metric: Option<f64>,
    pub best_global_step: Option<usize>,
    pub best_model_checkpoint: Option<PathBuf>,
    /// The validation report of the best model so far.
    pub best_report: Option<Evaluation>,
    pub log_history: Vec<LogEntry>,
    pub progress: Progress,
    /// Evaluations in a row without enough improvement (`EarlyStoppingCallback`'s counter).
    #[serde(default)]
    pub early_stopping_patience_counter: usize,
    /// The step at which early stopping ended training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_early_at: Option<usize>,
    /// A regression's best model on each validation row: (gold, predicted), for the report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_predictions: Option<Vec<(f32, f32)>>,
}

/// A checkpoint's training state read back for resuming (its weights load as any model
/// folder's).
pub struct Checkpoint {
    pub dir: PathBuf,
    /// Per parameter name: AdamW's first and second moments.
    pub moments: HashMap<String, (Tensor, Tensor)>,
    pub optimizer_steps: u64,
    pub state: TrainerState,
}

fn step_of(dir: &Path) -> Option<usize> {
    step_of_name(dir.file_name()?.to_str()?)
}

fn step_of_name(name: &str) -> Option<usize> {
    name.strip_prefix(PREFIX)?.parse().ok()
}

/// Whether `name` is that of a checkpoint folder, complete or not.
pub fn is_checkpoint_name(name: &str) -> bool {
    step_of_name(name).is_some()
}

/// Whether a checkpoint folder has every file resuming needs.
fn is_complete(dir: &Path) -> bool {
    [MODEL_FILE, OPTIMIZER_FILE, STATE_FILE]
        .iter()
        .all(|f| dir.join(f).is_file())
}

/// Complete checkpoints in `output_dir`, oldest first.
pub fn list(output_dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<(usize, PathBuf)> = std::fs::read_dir(output_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter_map(|p| Some((step_of(&p)?, p)))
        .filter(|(_, p)| is_complete(p))
        .collect();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

/// The newest complete checkpoint in `output_dir`.
pub fn latest(output_dir: &Path) -> Option<PathBuf> {
    list(output_dir).pop()
}

/// The folder of the checkpoint at `step`.
pub fn path(output_dir: &Path, step: usize) -> PathBuf {
    output_dir.join(format!("{PREFIX}{step}"))
}

/// Writes `checkpoint-STEP` into `output_dir`: the model folder files already in
/// `output_dir`, `weights`, the optimizer `moments` and `state`.
pub fn save(
    output_dir: &Path,
    weights: &[(String, Tensor)],
    moments: &[(String, Tensor, Tensor)],
    optimizer_steps: u64,
    state: &TrainerState,
) -> Result<PathBuf> {
    let dest = path(output_dir, state.global_step);
    let staging = output_dir.join(format!(
        ".{PREFIX}{}.tmp-{}",
        state.global_step,
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)
        .with_context(|| format!("cannot create {}", staging.display()))?;
    for name in MODEL_FOLDER_FILES {
        let src = output_dir.join(name);
        if src.is_file() {
            crate::atomic::write(staging.join(name), &std::fs::read(&src)?)?;
        }
    }
    crate::model::weights::save(&staging.join(MODEL_FILE), weights)?;
    let mut tensors = Vec::with_capacity(2 * moments.len());
    for (name, m, v) in moments {
        tensors.push((format!("exp_avg.{name}"), m.clone()));
        tensors.push((format!("exp_avg_sq.{name}"), v.clone()));
    }
    let metadata = HashMap::from([("step".to_string(), optimizer_steps.to_string())]);
    let bytes =
        safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(metadata))?;
    crate::atomic::write(staging.join(OPTIMIZER_FILE), &bytes)?;
    crate::atomic::write_json(staging.join(STATE_FILE), state)?;
    if dest.exists() {
        remove(&dest)?;
    }
    std::fs::rename(&staging, &dest)
        .with_context(|| format!("cannot move checkpoint into {}", dest.display()))?;
    Ok(dest)
}

/// Deletes a checkpoint folder, renaming it away first so it never appears half-deleted.
fn remove(dir: &Path) -> Result<()> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let doomed = dir.with_file_name(format!(".{name}.deleting-{}", std::process::id()));
    std::fs::rename(dir, &doomed).with_context(|| format!("cannot remove {}", dir.display()))?;
    std::fs::remove_dir_all(&doomed).with_context(|| format!("cannot remove {}", doomed.display()))
}

/// Keeps the newest `limit` checkpoints and `keep` (the best one); deletes the rest.
pub fn rotate(output_dir: &Path, limit: Option<usize>, keep: Option<&Path>) -> Result<()> {
    let Some(limit) = limit else { return Ok(()) };
    let all = list(output_dir);
    let excess = all.len().saturating_sub(limit);
    for dir in &all[..excess] {
        if Some(dir.as_path()) != keep {
            remove(dir)?;
        }
    }
    Ok(())
}

/// Reads a checkpoint for resuming.
pub fn load(dir: &Path, device: &Device) -> Result<Checkpoint> {
    if !is_complete(dir) {
        bail!(
            "{}: not a complete checkpoint (needs {MODEL_FILE}, {OPTIMIZER_FILE} and {STATE_FILE})",
            dir.display()
        );
    }
    let state_path = dir.join(STATE_FILE);
    let state: TrainerState =
        serde_json::from_slice(&std::fs::read(&state_path)?).map_err(|e| {
            anyhow::anyhow!("{}:{}:{}: {e}", state_path.display(), e.line(), e.column())
        })?;
    let optimizer_path = dir.join(OPTIMIZER_FILE);
    let bytes = std::fs::read(&optimizer_path)?;
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| {
        anyhow::anyhow!(
            "{}: not a valid safetensors file: {e}",
            optimizer_path.display()
        )
    })?;
    let optimizer_steps = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get("step"))
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{}: no optimizer step count", optimizer_path.display()))?;
    let mut tensors = read_tensors(&optimizer_path, &bytes, device)?;
    let mut moments = HashMap::new();
    let names: Vec<String> = tensors
        .keys()
        .filter_map(|k| k.strip_prefix("exp_avg.").map(str::to_string))
        .collect();
    for name in names {
        let m = tensors.remove(&format!("exp_avg.{name}"));
        let v = tensors.remove(&format!("exp_avg_sq.{name}"));
        match (m, v) {
            (Some(m), Some(v)) => {
                moments.insert(name, (m, v));
            }
            _ => bail!(
                "{}: incomplete moments for `{name}`",
                optimizer_path.display()
            ),
        }
    }
    Ok(Checkpoint {
        dir: dir.to_path_buf(),
        moments,
        optimizer_steps,
        state,
    })
}

fn read_tensors(path: &Path, bytes: &[u8], device: &Device) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load_buffer(bytes, device).map_err(|e| {
        anyhow::anyhow!(
            "{}: not a valid safetensors file (truncated or corrupt?): {e}",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(step: usize) -> TrainerState {
        TrainerState {
            global_step: step,
            epoch: 0.5,
            max_steps: 10,
            num_train_epochs: 1.0,
            train_batch_size: 2,
            logging_steps: 1,
            metric_for_best_model: BestMetric::Accuracy,
            best_metric: None,
            best_global_step: None,
            best_model_checkpoint: None,
            best_report: None,
            log_history: vec![],
            early_stopping_patience_counter: 0,
            stopped_early_at: None,
            best_predictions: None,
            progress: Progress {
                step,
                micro_batches: 7,
                ..Progress::default()
            },
        }
    }

    #[test]
    fn save_load_rotate() {
        let dir = std::env::temp_dir().join(format!("bertcls-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), "{}").unwrap();
        let w = Tensor::new(&[1.0f32, 2.0], &Device::Cpu).unwrap();
        let m = Tensor::new(&[0.1f32, 0.2], &Device::Cpu).unwrap();
        let v = Tensor::new(&[0.01f32, 0.02], &Device::Cpu).unwrap();
        for step in [2, 4, 6] {
            save(
                &dir,
                &[("w".into(), w.clone())],
                &[("w".into(), m.clone(), v.clone())],
                step as u64,
                &state(step),
            )
            .unwrap();
        }
        // A torn checkpoint (killed mid-write) is never picked.
        std::fs::create_dir_all(dir.join(".checkpoint-8.tmp-1")).unwrap();
        std::fs::create_dir_all(dir.join("checkpoint-9")).unwrap();
        assert_eq!(latest(&dir), Some(dir.join("checkpoint-6")));
        let c = load(&dir.join("checkpoint-6"), &Device::Cpu).unwrap();
        assert_eq!(c.optimizer_steps, 6);
        assert_eq!(c.state, state(6));
        assert_eq!(c.moments["w"].1.to_vec1::<f32>().unwrap(), [0.01, 0.02]);
        assert!(dir.join("checkpoint-6/config.json").is_file());
        rotate(&dir, Some(1), Some(&dir.join("checkpoint-2"))).unwrap();
        assert_eq!(
            list(&dir),
            [dir.join("checkpoint-2"), dir.join("checkpoint-6")]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
