//! The training output folder: never the pretrained model's folder, one run at a time, and a
//! replaced run leaves nothing of its own behind.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

const LOCK_FILE: &str = ".bertcls-train.lock";

fn file_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    files.sort();
    files
}

#[test]
fn training_into_the_model_folder_is_refused_and_leaves_it_untouched() {
    let f = Fixture::new("outdir-source");
    let before = file_bytes(&f.model);
    let config = f.config(&format!("output_dir = {:?}", f.model));
    let config = s(&config);
    fails_with(
        f.run(&["train", "--config", config, "--overwrite-output-dir"]),
        &["is the folder of the model being fine-tuned", s(&f.model)],
    );
    fails_with(f.run(&["train", "--config", config]), &["not empty"]);
    assert_eq!(file_bytes(&f.model), before, "the pretrained model changed");
    assert!(!f.model.join(LOCK_FILE).exists());
}

#[test]
fn a_second_run_into_the_same_folder_is_refused_and_a_killed_runs_lock_is_stale() {
    let f = Fixture::new("outdir-lock");
    let config = f.config("max_steps = 1000000\nsave_strategy = \"no\"");
    let config = s(&config);
    let run = f.path("run");
    let mut first = bertcls(&f.cache)
        .args(["train", "--config", config])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !run.join(LOCK_FILE).is_file()
        || std::fs::read_to_string(run.join(LOCK_FILE))
            .unwrap_or_default()
            .trim()
            != first.id().to_string()
    {
        assert!(
            Instant::now() < deadline,
            "the first run never locked its folder"
        );
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first run ended early"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = f.run(&["train", "--config", config, "--overwrite-output-dir"]);
    fails_with(
        second,
        &[
            "in use by another bertcls run",
            &format!("pid {}", first.id()),
        ],
    );
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(run.join(LOCK_FILE).exists(), "SIGKILL leaves the lock file");

    let config = f.config("max_steps = 3");
    ok(f.run(&["train", "--config", s(&config), "--overwrite-output-dir"]));
    assert!(run.join("model.safetensors").is_file());
    assert!(
        !run.join(LOCK_FILE).exists(),
        "the lock file is removed at the end"
    );
}

#[test]
fn overwriting_removes_the_previous_runs_results_and_keeps_foreign_files() {
    let f = Fixture::new("outdir-overwrite");
    let run = f.train();
    let old_checkpoints: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("checkpoint-"))
        .collect();
    assert!(run.join("eval_results.json").is_file());
    assert!(!old_checkpoints.is_empty());
    std::fs::write(run.join("notes.txt"), "mine").unwrap();
    std::fs::write(run.join(".config.json.tmp-999999"), "left by a killed run").unwrap();

    let config = f.config("max_steps = 2\neval_strategy = \"no\"\nsave_strategy = \"no\"");
    let out = ok(f.run(&["train", "--config", s(&config), "--overwrite-output-dir"]));
    assert!(stderr(&out).contains("kept files bertcls does not write: notes.txt"));
    assert!(
        !run.join("eval_results.json").exists(),
        "an evaluation of the previous model was left beside the new one"
    );
    for name in &old_checkpoints {
        assert!(
            !run.join(name).exists(),
            "{name} of the previous run is left"
        );
    }
    assert!(!run.join(".config.json.tmp-999999").exists());
    assert_eq!(
        std::fs::read_to_string(run.join("notes.txt")).unwrap(),
        "mine"
    );
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("train_results.json")).unwrap()).unwrap();
    assert_eq!(state["global_step"], 2);
}
