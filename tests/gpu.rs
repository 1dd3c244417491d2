//! Device tests: training (f32 and bf16), eval and predict on `cuda:0`, each checked against the
//! same run on the CPU, on the tiny fixture model. They need an NVIDIA GPU and a build with
//! `--features cuda`, so they are ignored everywhere else; scripts/gpu-check.sh runs them:
//!
//!   cargo test --release --features cuda --test gpu -- --ignored
//!
//! The rest of the suite pins its runs to the CPU (`device = "cpu"` in the fixture config), so in
//! a CUDA build it tests the CPU path of that build.

mod common;

use std::path::Path;

use common::{Fixture, ok, s, stderr, stdout};
use serde_json::Value;

/// Trains the fixture config plus `extra` into `name`; returns the folder and all_results.json.
fn train(fx: &Fixture, name: &str, extra: &str) -> (std::path::PathBuf, Value) {
    let config = fx.config(extra);
    let out = fx.path(name);
    let run = ok(fx.run(&["train", "--config", s(&config), "--output-dir", s(&out)]));
    let device = if extra.contains("cuda") {
        "device: cuda:0"
    } else {
        "device: cpu"
    };
    assert!(stderr(&run).contains(device), "{}", stderr(&run));
    let results = serde_json::from_slice(&std::fs::read(out.join("all_results.json")).unwrap());
    (out, results.unwrap())
}

/// Predicted labels and probabilities of the fixture's dev sentences.
fn predict(fx: &Fixture, model: &Path, device: &str) -> (Vec<String>, Vec<f64>) {
    let output = fx.path(&format!("predicted-{device}.tsv"));
    let run = ok(fx.run(&[
        "predict",
        "--model",
        s(model),
        "--device",
        device,
        "--input",
        s(&fx.path("dev.tsv")),
        "--text-column",
        "content",
        "--output",
        s(&output),
    ]));
    let shown = if device == "cpu" { "cpu" } else { "cuda:0" };
    assert!(
        stderr(&run).contains(&format!("device: {shown}")),
        "{}",
        stderr(&run)
    );
    let text = std::fs::read_to_string(&output).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (label, prob) = (col("predicted_label"), col("probability"));
    lines
        .map(|l| {
            let cells: Vec<&str> = l.split('\t').collect();
            (
                cells[label].to_string(),
                cells[prob].parse::<f64>().unwrap(),
            )
        })
        .unzip()
}

fn agreement(a: &[String], b: &[String]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64
}

fn eval_accuracy(fx: &Fixture, model: &Path, device: &str) -> f64 {
    let out = ok(fx.run(&[
        "eval",
        "--model",
        s(model),
        "--device",
        device,
        "--data",
        s(&fx.path("dev.tsv")),
        "--text-column",
        "content",
        "--label-column",
        "sentiment",
        "--json",
    ]));
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    report["accuracy"].as_f64().unwrap()
}

#[test]
#[ignore = "needs an NVIDIA GPU and --features cuda (scripts/gpu-check.sh runs it)"]
fn f32_training_on_cuda_learns_what_the_cpu_learns() {
    let fx = Fixture::new("gpu-train");
    let (cpu, on_cpu) = train(&fx, "cpu", "");
    let (gpu, on_gpu) = train(&fx, "gpu", "device = \"cuda\"");
    for (name, r) in [("cpu", &on_cpu), ("cuda", &on_gpu)] {
        let acc = r["eval_accuracy"].as_f64().unwrap();
        assert!(acc >= 0.95, "{name}: eval_accuracy {acc}: {r}");
        let loss = r["train_loss"].as_f64().unwrap();
        assert!(loss.is_finite(), "{name}: train_loss {loss}");
    }
    // Same seed, same batches: the losses differ only by rounding.
    let (a, b) = (
        on_cpu["train_loss"].as_f64().unwrap(),
        on_gpu["train_loss"].as_f64().unwrap(),
    );
    assert!(
        (a - b).abs() <= 0.05 * a.max(b) + 1e-3,
        "train_loss cpu {a} vs cuda {b}"
    );
    let (cpu_labels, _) = predict(&fx, &cpu, "cpu");
    let (gpu_labels, _) = predict(&fx, &gpu, "cpu");
    let same = agreement(&cpu_labels, &gpu_labels);
    assert!(same >= 0.95, "CPU- and GPU-trained models agree on {same}");
}

#[test]
#[ignore = "needs an NVIDIA GPU and --features cuda (scripts/gpu-check.sh runs it)"]
fn bf16_training_on_cuda_learns() {
    let fx = Fixture::new("gpu-bf16");
    let (model, r) = train(&fx, "bf16", "device = \"cuda\"\nbf16 = true");
    let loss = r["train_loss"].as_f64().unwrap();
    assert!(loss.is_finite(), "train_loss {loss}");
    let acc = r["eval_accuracy"].as_f64().unwrap();
    assert!(acc >= 0.95, "eval_accuracy {acc}: {r}");
    // The saved weights are the f32 master weights: the CPU scores them as the GPU does.
    let (on_gpu, _) = predict(&fx, &model, "cuda");
    let (on_cpu, _) = predict(&fx, &model, "cpu");
    assert!(agreement(&on_gpu, &on_cpu) >= 0.95);
    let bytes = std::fs::read(model.join("model.safetensors")).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    for (name, tensor) in header.as_object().unwrap() {
        if name != "__metadata__" {
            assert_eq!(
                tensor["dtype"], "F32",
                "{name} saved as {}",
                tensor["dtype"]
            );
        }
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU and --features cuda (scripts/gpu-check.sh runs it)"]
fn eval_and_predict_on_cuda_match_the_cpu() {
    let fx = Fixture::new("gpu-predict");
    let run = fx.train();
    let (cpu_labels, cpu_probs) = predict(&fx, &run, "cpu");
    let (gpu_labels, gpu_probs) = predict(&fx, &run, "cuda");
    assert_eq!(cpu_labels, gpu_labels);
    for (i, (a, b)) in cpu_probs.iter().zip(&gpu_probs).enumerate() {
        assert!(
            (a - b).abs() <= 1e-3,
            "row {i}: probability cpu {a} vs cuda {b}"
        );
    }
    let (cpu_acc, gpu_acc) = (
        eval_accuracy(&fx, &run, "cpu"),
        eval_accuracy(&fx, &run, "cuda:0"),
    );
    assert_eq!(cpu_acc, gpu_acc);
    // `auto` takes the GPU in a CUDA build.
    let auto = ok(fx.run(&["predict", "--model", s(&run), "--text", "a good film"]));
    assert!(
        stderr(&auto).contains("device: cuda:0"),
        "{}",
        stderr(&auto)
    );
}
