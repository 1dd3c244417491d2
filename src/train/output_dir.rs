//! The output folder of a training run: held by one run at a time, never the folder of the
//! model it trains from, and, when a new run replaces an old one, cleared of the old run's
//! files so that nothing left in it describes a model it does not hold.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::checkpoint;
use crate::model::TRAINING_ARGS;

/// The lock file a run holds in its output folder.
pub const LOCK_FILE: &str = ".bertcls-train.lock";
pub const TRAIN_RESULTS: &str = "train_results.json";
pub const EVAL_RESULTS: &str = "eval_results.json";
pub const ALL_RESULTS: &str = "all_results.json";

/// Files a run (of bertcls, or of transformers' Trainer, whose folders bertcls continues) writes
/// at the top of its output folder. Besides the model folder files, `pytorch_model.bin` is
/// listed: a stale one would be loaded beside the new run's config.json if the new run stopped
/// before saving its weights.
const RUN_FILES: [&str; 9] = [
    checkpoint::MODEL_FILE,
    "pytorch_model.bin",
    checkpoint::STATE_FILE,
    TRAINING_ARGS,
    TRAIN_RESULTS,
    EVAL_RESULTS,
    ALL_RESULTS,
    crate::report::REPORT_FILE,
    crate::report::LOG_CSV,
];

/// An advisory lock on an output folder, held until dropped.
///
/// The lock is `flock` on [`LOCK_FILE`], which holds the holder's pid for the message a second
/// run prints. The kernel releases a `flock` when its holder dies, so a lock file left by a
/// killed run is stale by construction: the next run locks it and carries on.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
    _file: File,
}

impl RunLock {
    /// Creates `dir` if needed and locks it, or says which process holds it.
    pub fn acquire(dir: &Path) -> Result<Self> {
        if dir.is_file() {
            bail!("output_dir {} is a file", dir.display());
        }
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create output_dir {}", dir.display()))?;
        let path = dir.join(LOCK_FILE);
        // The holder removes the file when it ends: a run that opened the old file just before
        // then locks a file no longer in the folder, and must open the new one.
        for _ in 0..16 {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .mode(0o644)
                .open(&path)
                .with_context(|| format!("cannot write to output_dir {}", dir.display()))?;
            // SAFETY: flock on a descriptor this function owns; it touches no memory.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() != std::io::ErrorKind::WouldBlock {
                    return Err(err).with_context(|| format!("cannot lock {}", path.display()));
                }
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.chars().all(|c| c.is_ascii_digit()) && !holder.is_empty() {
                    format!("pid {holder}")
                } else {
                    "another process".to_string()
                };
                bail!(
                    "output_dir {} is in use by another bertcls run ({holder}); wait for it to \
                     end or choose another output_dir",
                    dir.display()
                );
            }
            let same_file = match (file.metadata(), std::fs::symlink_metadata(&path)) {
                (Ok(held), Ok(listed)) => held.dev() == listed.dev() && held.ino() == listed.ino(),
                _ => false,
            };
            if !same_file {
                continue;
            }
            file.set_len(0)
                .and_then(|()| writeln!(file, "{}", std::process::id()))
                .with_context(|| format!("cannot write {}", path.display()))?;
            return Ok(Self { path, _file: file });
        }
        bail!(
            "cannot lock output_dir {}: its lock file keeps changing",
            dir.display()
        )
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Removed while still locked: whoever opens the path next gets a new file.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether `dir` holds anything besides the lock file.
pub fn has_content(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .is_ok_and(|entries| entries.flatten().any(|e| e.file_name() != LOCK_FILE))
}

/// Refuses to train into the folder the model comes from, and, when the output folder is to be
/// cleared, from a folder inside it.
pub fn check_not_model_source(output_dir: &Path, model_dir: &Path, clearing: bool) -> Result<()> {
    let (Ok(out), Ok(model)) = (output_dir.canonicalize(), model_dir.canonicalize()) else {
        return Ok(());
    };
    if out == model {
        bail!(
            "output_dir {} is the folder of the model being fine-tuned (model_name_or_path): \
             training would overwrite the pretrained model; choose another output_dir",
            output_dir.display()
        );
    }
    if clearing && model.starts_with(&out) {
        bail!(
            "model_name_or_path {} lies inside output_dir {}, which overwrite_output_dir \
             clears; choose another output_dir",
            model_dir.display(),
            output_dir.display()
        );
    }
    Ok(())
}

/// Removes what an earlier run left in `dir`: its checkpoints, weights, state and results files,
/// the model folder files, and temporary files of runs that were killed. Files bertcls does not
/// write are kept and named. Called with the folder locked.
pub fn clear_previous_run(dir: &Path) -> Result<()> {
    let mut kept = Vec::new();
    let mut removed = 0usize;
    for entry in std::fs::read_dir(dir)
        .with_context(|| format!("cannot read output_dir {}", dir.display()))?
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let ours = RUN_FILES.contains(&name.as_str())
            || checkpoint::MODEL_FOLDER_FILES.contains(&name.as_str())
            || checkpoint::is_checkpoint_name(&name)
            || is_leftover_temporary(&name);
        if name == LOCK_FILE {
            continue;
        }
        if !ours {
            kept.push(name);
            continue;
        }
        let result = if is_dir {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        result.with_context(|| format!("cannot remove {}", path.display()))?;
        removed += 1;
    }
    if removed > 0 {
        eprintln!(
            "overwrite_output_dir: removed {removed} file(s) and folder(s) of the previous run from {}",
            dir.display()
        );
    }
    if !kept.is_empty() {
        kept.sort();
        eprintln!(
            "overwrite_output_dir: kept files bertcls does not write: {}",
            crate::terminal::printable(&kept.join(", "))
        );
    }
    Ok(())
}

/// Removes temporary files and folders that killed runs left in `dir` (only while locked: a live
/// run's are its own).
pub fn remove_leftover_temporaries(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_leftover_temporary(&name) {
            continue;
        }
        let path = entry.path();
        let _ = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
    }
}

/// Names of the temporary files and folders bertcls writes beside their destination: hidden,
/// with a `.tmp-` or `.deleting-` part.
fn is_leftover_temporary(name: &str) -> bool {
    name.starts_with('.') && (name.contains(".tmp-") || name.contains(".deleting-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("bertcls-outdir-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn one_holder_at_a_time_and_the_lock_file_goes_with_it() {
        let dir = fresh("lock");
        let lock = RunLock::acquire(&dir).unwrap();
        let pid = std::fs::read_to_string(dir.join(LOCK_FILE)).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());
        let err = RunLock::acquire(&dir).unwrap_err().to_string();
        assert!(err.contains("in use") && err.contains(pid.trim()), "{err}");
        assert!(!has_content(&dir), "the lock file alone is no content");
        drop(lock);
        assert!(!dir.join(LOCK_FILE).exists());
        drop(RunLock::acquire(&dir).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_lock_file_nobody_holds_is_stale() {
        let dir = fresh("stale");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(LOCK_FILE), "999999999\n").unwrap();
        let lock = RunLock::acquire(&dir).unwrap();
        drop(lock);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn clearing_keeps_only_foreign_files() {
        let dir = fresh("clear");
        std::fs::create_dir_all(dir.join("checkpoint-5")).unwrap();
        std::fs::create_dir_all(dir.join(".checkpoint-7.tmp-123")).unwrap();
        for name in ["eval_results.json", "config.json", "notes.txt", ".x.tmp-9"] {
            std::fs::write(dir.join(name), "{}").unwrap();
        }
        clear_previous_run(&dir).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["notes.txt"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_model_folder_is_not_an_output_folder() {
        let dir = fresh("source");
        let inner = dir.join("checkpoint-3");
        std::fs::create_dir_all(&inner).unwrap();
        assert!(check_not_model_source(&dir, &dir, false).is_err());
        assert!(check_not_model_source(&dir, &inner, true).is_err());
        assert!(check_not_model_source(&dir, &inner, false).is_ok());
        assert!(check_not_model_source(&inner, &dir, true).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
