//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use bertcls::testing::TinyModel;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh, empty folder under the test target folder.
pub fn temp_dir(tag: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The bertcls binary with a private cache and no network-dependent settings from the user.
pub fn bertcls(cache: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bertcls"));
    cmd.env("BERTCLS_CACHE", cache)
        .env("HF_HOME", cache.join("hf"))
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_ENDPOINT")
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("BERTCLS_BF16_KERNEL")
        .env_remove("BERTCLS_INT8_KERNEL");
    cmd
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts a run succeeded, showing its output if not.
pub fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "command failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    out
}

/// Asserts a run failed cleanly: exit code 1, no panic, and a last stderr line of the form
/// `error: ...` containing every one of `needles`. Returns that line.
pub fn fails_with(out: Output, needles: &[&str]) -> String {
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit code 1; stderr: {err}"
    );
    assert!(!err.contains("panicked"), "panic: {err}");
    let last = err.lines().last().unwrap_or("").to_string();
    assert!(
        last.starts_with("error: "),
        "last line is not an error line: {err}"
    );
    for needle in needles {
        assert!(last.contains(needle), "`{needle}` not in: {last}");
    }
    last
}

/// Fails if any temporary file of [`bertcls::atomic::AtomicFile`] (`.NAME.tmp-...`) remains
/// anywhere under `dir`.
pub fn assert_no_temp_files(dir: &Path) {
    let mut left = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().unwrap().is_dir() {
                pending.push(entry.path());
            } else if name.starts_with('.') && name.contains(bertcls::atomic::TEMP_MARKER) {
                left.push(entry.path());
            }
        }
    }
    assert!(left.is_empty(), "temporary files left behind: {left:?}");
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const POSITIVE: [&str; 4] = ["good", "great", "fun", "very good"];
const NEGATIVE: [&str; 4] = ["bad", "awful", "boring", "not good"];
const FRAMES: [&str; 5] = [
    "the movie was {}",
    "a {} film",
    "{} !",
    "the film was {} .",
    "what a {} movie",
];

/// Sentiment sentences a tiny model can learn: the label follows from one word.
pub fn sentences() -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    for frame in FRAMES {
        for (i, word) in POSITIVE.iter().enumerate() {
            out.push((frame.replace("{}", word), "pos"));
            out.push((frame.replace("{}", NEGATIVE[i]), "neg"));
        }
    }
    out
}

/// Writes a tiny fine-tuned model folder into `dir` with `labels` and `problem_type` in its
/// config.json, as transformers saves a model of that task.
pub fn fine_tuned(dir: &Path, labels: &[&str], problem_type: &str) {
    TinyModel {
        seed: 5,
        labels: Some(bertcls::data::LabelSet::from_names(
            labels.iter().map(|l| l.to_string()).collect(),
        )),
        ..TinyModel::default()
    }
    .write(dir)
    .unwrap();
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["problem_type"] = serde_json::json!(problem_type);
    std::fs::write(&path, config.to_string()).unwrap();
}

/// A TOML `config` with the keys of `extra`'s lines replacing its own, and `extra` added.
pub fn with_overrides(config: &str, extra: &str) -> String {
    let key = |line: &str| line.split('=').next().unwrap_or("").trim().to_string();
    let overridden: Vec<String> = extra.lines().map(key).filter(|k| !k.is_empty()).collect();
    let mut text: String = config
        .lines()
        .filter(|l| !overridden.contains(&key(l)))
        .map(|l| format!("{l}\n"))
        .collect();
    text.push_str(extra);
    text.push('\n');
    text
}

/// A tiny base model, a small sentiment data set and a private cache in a fresh folder.
pub struct Fixture {
    pub dir: PathBuf,
    pub model: PathBuf,
    pub cache: PathBuf,
}

impl Fixture {
    pub fn new(tag: &str) -> Self {
        let dir = temp_dir(tag);
        let model = dir.join("tiny-bert");
        TinyModel {
            seed: 3,
            ..TinyModel::default()
        }
        .write(&model)
        .unwrap();
        let rows = sentences();
        let mut csv = String::from("label,text\n");
        let mut tsv = String::from("sentiment\tcontent\n");
        for (text, label) in &rows {
            csv.push_str(&format!("{label},{text}\n"));
            tsv.push_str(&format!("{label}\t{text}\n"));
        }
        std::fs::write(dir.join("train.csv"), csv).unwrap();
        std::fs::write(dir.join("dev.tsv"), tsv).unwrap();
        let cache = dir.join("cache");
        Self { dir, model, cache }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn config(&self, extra: &str) -> PathBuf {
        let text = format!(
            r#"
model_name_or_path = {model:?}
train_file = {train:?}
validation_file = {dev:?}
validation_text_column = "content"
validation_label_column = "sentiment"
output_dir = {out:?}
max_seq_length = 16
per_device_train_batch_size = 8
num_train_epochs = 40
learning_rate = 2e-3
warmup_ratio = 0.1
weight_decay = 0.01
logging_steps = 5
device = "cpu"
"#,
            model = self.model,
            train = self.path("train.csv"),
            dev = self.path("dev.tsv"),
            out = self.path("run"),
        );
        let path = self.path("config.toml");
        std::fs::write(&path, with_overrides(&text, extra)).unwrap();
        path
    }

    pub fn run(&self, args: &[&str]) -> std::process::Output {
        bertcls(&self.cache).args(args).output().unwrap()
    }

    /// Trains one step with the fixture's config plus `extra` lines, in a fresh output folder.
    pub fn train_one_step(&self, extra: &str) -> std::process::Output {
        let config = self.config(extra);
        let out = self.path(&format!(
            "out-{}",
            std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos()
        ));
        self.train_one_step_into(&config, &out)
    }

    /// Trains one step with `config` into `out`.
    pub fn train_one_step_into(&self, config: &Path, out: &Path) -> std::process::Output {
        self.run(&[
            "train",
            "--config",
            s(config),
            "--output-dir",
            s(out),
            "--max-steps",
            "1",
        ])
    }

    /// Writes `long.csv`: 2,000 rows, so that training with batch 4 for 3 epochs (1,500
    /// updates of a tiny model, a few seconds) runs long enough to be interrupted.
    pub fn long_train_file(&self) -> PathBuf {
        let mut csv = String::from("label,text\n");
        for i in 0..50 {
            for (text, label) in sentences() {
                let suffix = if i % 2 == 0 { "" } else { " ." };
                csv.push_str(&format!("{label},{text}{suffix}\n"));
            }
        }
        let path = self.path("long.csv");
        std::fs::write(&path, csv).unwrap();
        path
    }

    pub fn train(&self) -> PathBuf {
        let config = self.config("");
        ok(self.run(&["train", "--config", config.to_str().unwrap()]));
        self.path("run")
    }
}
