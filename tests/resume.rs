//! Never losing work: checkpoints, resuming after SIGKILL or Ctrl-C to bit-identical weights,
//! refusing to resume with other settings, stopping on a NaN loss, checkpoint rotation.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{Fixture, bertcls, fails_with, ok, s, stderr};

/// A job long enough to be interrupted: 2,000 rows, batch 4, 3 epochs (1,500 updates of a
/// tiny model, a few seconds), a checkpoint every 25 updates, no evaluation.
fn long_job(fx: &Fixture) -> PathBuf {
    fx.long_train_file();
    fx.config(&format!(
        "train_file = {:?}\nvalidation_file = {:?}\neval_strategy = \"no\"\nper_device_train_batch_size = 4\nnum_train_epochs = 3\nsave_steps = 25\nlearning_rate = 5e-4\nlogging_steps = 50",
        fx.path("long.csv"),
        fx.path("dev.tsv")
    ))
}

fn spawn_train(fx: &Fixture, config: &Path, out: &Path) -> Child {
    bertcls(&fx.cache)
        .args(["train", "--config", s(config), "--output-dir", s(out)])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `dir` exists (a checkpoint appeared), then returns.
fn wait_for(dir: &Path, child: &mut Child) {
    let start = Instant::now();
    while !dir.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "training ended before {} appeared",
            dir.display()
        );
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{} never appeared",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn weights(out: &Path) -> Vec<u8> {
    std::fs::read(out.join("model.safetensors")).unwrap()
}

fn resume(fx: &Fixture, config: &Path, out: &Path) -> std::process::Output {
    bertcls(&fx.cache)
        .args([
            "train",
            "--config",
            s(config),
            "--output-dir",
            s(out),
            "--resume",
        ])
        .output()
        .unwrap()
}

#[test]
fn killed_or_interrupted_runs_resume_to_identical_weights() {
    let fx = Fixture::new("resume");
    let config = long_job(&fx);
    let straight = fx.path("straight");
    ok(bertcls(&fx.cache)
        .args([
            "train",
            "--config",
            s(&config),
            "--output-dir",
            s(&straight),
        ])
        .output()
        .unwrap());
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(straight.join("trainer_state.json")).unwrap())
            .unwrap();
    assert_eq!(state["global_step"], 1500);

    // SIGKILL part-way: whatever instant it lands on, the newest complete checkpoint resumes.
    let killed = fx.path("killed");
    let mut child = spawn_train(&fx, &config, &killed);
    wait_for(&killed.join("checkpoint-100"), &mut child);
    std::thread::sleep(Duration::from_millis(37));
    child.kill().unwrap();
    assert!(!child.wait().unwrap().success());
    assert!(
        !killed.join("checkpoint-1500").exists(),
        "killed before the end"
    );
    let out = ok(resume(&fx, &config, &killed));
    assert!(stderr(&out).contains("resuming from"), "{}", stderr(&out));
    assert!(
        weights(&killed) == weights(&straight),
        "resumed weights differ from an uninterrupted run"
    );

    // Ctrl-C: a checkpoint at the current step, exit code 130, and how to resume.
    let interrupted = fx.path("interrupted");
    let mut child = spawn_train(&fx, &config, &interrupted);
    wait_for(&interrupted.join("checkpoint-50"), &mut child);
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    let last = err.lines().last().unwrap();
    assert!(
        last.contains("interrupted by SIGINT") && last.contains("--resume"),
        "{last}"
    );
    let saved = bertcls::checkpoint::latest(&interrupted).unwrap();
    assert!(last.contains(s(&saved)), "names the checkpoint: {last}");
    ok(resume(&fx, &config, &interrupted));
    assert!(
        weights(&interrupted) == weights(&straight),
        "weights after Ctrl-C and resume differ"
    );

    // Resuming a finished job does nothing more and keeps the weights.
    ok(resume(&fx, &config, &straight));
    assert!(weights(&straight) == weights(&killed));
}

#[test]
fn resume_needs_a_checkpoint_and_the_same_settings() {
    let fx = Fixture::new("resume-settings");
    let config = fx.config("save_steps = 5");
    let out = fx.path("run");
    ok(fx.run(&["train", "--config", s(&config), "--max-steps", "10"]));
    let changed = fx.run(&[
        "train",
        "--config",
        s(&config),
        "--max-steps",
        "10",
        "--resume",
        "--learning-rate",
        "1e-2",
    ]);
    fails_with(
        changed,
        &["cannot resume", "learning_rate = 0.01 (checkpoint: 0.002)"],
    );
    let empty = fx.path("empty");
    std::fs::create_dir_all(&empty).unwrap();
    fails_with(
        fx.run(&[
            "train",
            "--config",
            s(&config),
            "--output-dir",
            s(&empty),
            "--resume",
        ]),
        &["nothing to resume", "no complete checkpoint"],
    );
    // An explicit checkpoint folder.
    let from = out.join("checkpoint-5");
    let resumed = ok(fx.run(&[
        "train",
        "--config",
        s(&config),
        "--max-steps",
        "10",
        "--resume",
        s(&from),
    ]));
    assert!(
        stderr(&resumed).contains("(step 5)"),
        "{}",
        stderr(&resumed)
    );
    fails_with(
        fx.run(&[
            "train",
            "--config",
            s(&config),
            "--max-steps",
            "10",
            "--resume",
            s(&fx.dir),
        ]),
        &["not a complete checkpoint"],
    );
}

#[test]
fn checkpoints_rotate_keeping_the_best_and_are_model_folders() {
    let fx = Fixture::new("rotate");
    let config = fx.config("save_total_limit = 1\nnum_train_epochs = 6\nsave_steps = 2");
    let out = fx.path("run");
    ok(fx.run(&["train", "--config", s(&config)]));
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("trainer_state.json")).unwrap()).unwrap();
    let best = PathBuf::from(state["best_model_checkpoint"].as_str().unwrap());
    let kept = bertcls::checkpoint::list(&out);
    let newest = out.join(format!("checkpoint-{}", state["global_step"]));
    assert!(kept.contains(&newest), "{kept:?}");
    assert!(kept.contains(&best), "{kept:?}");
    assert!(kept.len() <= 2, "{kept:?}");
    // A checkpoint is a model folder that eval reads like any other.
    let eval = ok(fx.run(&[
        "eval",
        "--model",
        s(&newest),
        "--data",
        s(&fx.path("dev.tsv")),
        "--text-column",
        "content",
        "--label-column",
        "sentiment",
        "--json",
    ]));
    assert!(common::stdout(&eval).contains("\"accuracy\""));
}

#[test]
fn a_nan_loss_stops_training_with_a_clear_message() {
    let fx = Fixture::new("nan");
    let config =
        fx.config("learning_rate = 1e12\nwarmup_ratio = 0.0\nmax_grad_norm = 1e30\nsave_steps = 1");
    let line = fails_with(
        fx.run(&["train", "--config", s(&config)]),
        &["training loss became", "try a lower learning_rate"],
    );
    assert!(line.contains("last good checkpoint"), "{line}");
}
