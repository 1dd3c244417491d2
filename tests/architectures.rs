//! Every architecture through the command line, from the tiny random checkpoints of
//! tests/fixtures/arch/ (each with its own tokenizer.json): fine-tuning on text pairs with
//! evaluation and checkpoints, a resume that reaches the same weights, eval and predict of
//! the saved folder, its config.json in the architecture's own spelling, a regression; and the
//! errors for an unsupported `model_type` and a SentencePiece-only tokenizer.

mod common;

use std::path::{Path, PathBuf};

use common::{Fixture, fails_with, ok, s, sentences, stdout};
use serde_json::Value;

const ARCHITECTURES: [(&str, &str); 6] = [
    ("roberta", "RobertaForSequenceClassification"),
    ("xlm-roberta", "XLMRobertaForSequenceClassification"),
    ("camembert", "CamembertForSequenceClassification"),
    ("distilbert", "DistilBertForSequenceClassification"),
    ("electra", "ElectraForSequenceClassification"),
    ("deberta-v2", "DebertaV2ForSequenceClassification"),
];

fn checkpoint(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/arch")
        .join(name)
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A CSV of sentence pairs whose label follows from the first sentence, and a score column.
fn write_pairs(path: &Path) {
    let mut csv = String::from("label,score,text,text_pair\n");
    for (i, (text, label)) in sentences().into_iter().enumerate() {
        let score = if label == "pos" { 4.5 } else { 0.5 } + (i % 3) as f64 * 0.25;
        csv.push_str(&format!("{label},{score},{text},what a film\n"));
    }
    std::fs::write(path, csv).unwrap();
}

fn config(fx: &Fixture, name: &str, data: &Path, out: &Path, extra: &str) -> PathBuf {
    let text = format!(
        r#"model_name_or_path = {model:?}
train_file = {data:?}
validation_file = {data:?}
text_column = "text"
text_pair_column = "text_pair"
validation_text_pair_column = "text_pair"
output_dir = {out:?}
max_seq_length = 24
per_device_train_batch_size = 8
num_train_epochs = 2
learning_rate = 1e-3
save_strategy = "steps"
save_steps = 4
eval_strategy = "epoch"
device = "cpu"
"#,
        model = checkpoint(name),
    );
    let path = fx.path(&format!("{name}.toml"));
    std::fs::write(&path, common::with_overrides(&text, extra)).unwrap();
    path
}

/// `bertcls eval --json` of `model` on the pairs of `data`, with `extra` arguments.
fn eval_json(fx: &Fixture, model: &Path, data: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["eval", "--model", s(model), "--data", s(data)];
    args.extend([
        "--text-pair-column",
        "text_pair",
        "--device",
        "cpu",
        "--json",
    ]);
    args.extend(extra);
    serde_json::from_str(&stdout(&ok(fx.run(&args)))).unwrap()
}

#[test]
fn every_architecture_fine_tunes_resumes_evaluates_and_predicts_on_pairs() {
    let fx = Fixture::new("architectures");
    let data = fx.path("pairs.csv");
    write_pairs(&data);
    for (name, class) in ARCHITECTURES {
        let out = fx.path(&format!("{name}-run"));
        let config = config(&fx, name, &data, &out, "label_column = \"label\"");
        let run = ok(fx.run(&["train", "--config", s(&config)]));
        let err = common::stderr(&run);
        // The fixtures' heads have 3 labels; these data 2, so the output layer starts anew.
        let output = if matches!(name, "distilbert" | "deberta-v2") {
            "classifier"
        } else {
            "classifier.out_proj"
        };
        assert!(
            err.contains(&format!(
                "newly initialised: {output}.weight, {output}.bias\n"
            )),
            "{name}: {err}"
        );

        let saved = json(&out.join("config.json"));
        let original = json(&checkpoint(name).join("config.json"));
        assert_eq!(saved["architectures"][0], class, "{name}");
        assert_eq!(saved["model_type"], original["model_type"], "{name}");
        for (key, value) in original.as_object().unwrap() {
            if !matches!(
                key.as_str(),
                "architectures" | "id2label" | "label2id" | "transformers_version"
            ) {
                assert_eq!(
                    &saved[key], value,
                    "{name}: config.json key {key} kept as it was"
                );
            }
        }
        assert_eq!(saved["id2label"]["0"], "neg", "{name}");
        if name == "distilbert" {
            assert!(
                saved.get("hidden_size").is_none() && saved["dim"] == 32,
                "{name}: DistilBERT's own keys"
            );
        }

        // A resume from the first checkpoint ends on the same weights.
        let resumed = fx.path(&format!("{name}-resumed"));
        std::fs::create_dir_all(&resumed).unwrap();
        let copy = |from: &Path, to: &Path| {
            std::fs::create_dir_all(to).unwrap();
            for entry in std::fs::read_dir(from).unwrap() {
                let entry = entry.unwrap();
                std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
            }
        };
        copy(&out.join("checkpoint-4"), &resumed.join("checkpoint-4"));
        ok(fx.run(&[
            "train",
            "--config",
            s(&config),
            "--output-dir",
            s(&resumed),
            "--resume",
        ]));
        assert!(
            std::fs::read(resumed.join("model.safetensors")).unwrap()
                == std::fs::read(out.join("model.safetensors")).unwrap(),
            "{name}: resumed weights differ"
        );

        // eval measures what the trainer measured; predict writes one probability row per pair.
        let report = eval_json(&fx, &out, &data, &[]);
        let state = json(&out.join("trainer_state.json"));
        // The best evaluation's model is the one kept.
        let logged = state["best_metric"].as_f64().unwrap();
        assert_eq!(
            report["accuracy"].as_f64().unwrap(),
            logged,
            "{name}: eval = trainer"
        );
        let predictions = fx.path(&format!("{name}-predictions.csv"));
        ok(fx.run(&[
            "predict",
            "--model",
            s(&out),
            "--input",
            s(&data),
            "--text-pair-column",
            "text_pair",
            "--output",
            s(&predictions),
            "--device",
            "cpu",
        ]));
        let rows = std::fs::read_to_string(&predictions)
            .unwrap()
            .lines()
            .count();
        assert_eq!(
            rows,
            sentences().len() + 1,
            "{name}: a header and one row per pair"
        );
    }
}

#[test]
fn a_distilbert_regression_on_pairs() {
    let fx = Fixture::new("arch-regression");
    let data = fx.path("pairs.csv");
    write_pairs(&data);
    let out = fx.path("run");
    let config = config(&fx, "distilbert", &data, &out, "label_column = \"score\"");
    ok(fx.run(&["train", "--config", s(&config)]));
    let saved = json(&out.join("config.json"));
    assert_eq!(saved["problem_type"], "regression");
    assert_eq!(saved["num_labels"], 1);
    let report = eval_json(&fx, &out, &data, &["--label-column", "score"]);
    let state = json(&out.join("trainer_state.json"));
    // The best evaluation's model is the one kept.
    let logged = state["best_metric"].as_f64().unwrap();
    // Equal up to the order of float sums: eval and the trainer batch the rows differently.
    let pearson = report["pearson"].as_f64().unwrap();
    assert!(
        (pearson - logged).abs() <= 1e-5,
        "eval {pearson} = trainer {logged}"
    );
}

#[test]
fn unsupported_architectures_and_sentencepiece_only_tokenizers_are_one_line_errors() {
    let fx = Fixture::new("arch-errors");
    let gpt2 = fx.path("gpt2");
    std::fs::create_dir_all(&gpt2).unwrap();
    for file in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(checkpoint("roberta").join(file), gpt2.join(file)).unwrap();
    }
    let mut config = json(&checkpoint("roberta").join("config.json"));
    config["model_type"] = "gpt2".into();
    std::fs::write(gpt2.join("config.json"), config.to_string()).unwrap();
    let data = fx.path("pairs.csv");
    write_pairs(&data);
    let err = fails_with(
        fx.run(&[
            "eval",
            "--model",
            s(&gpt2),
            "--data",
            s(&data),
            "--device",
            "cpu",
        ]),
        &["config.json", "model_type `gpt2` is not supported"],
    );
    assert!(
        err.contains("bert, roberta, xlm-roberta, camembert, distilbert, electra, deberta-v2"),
        "lists the supported ones: {err}"
    );

    let spm = fx.path("spm-only");
    std::fs::create_dir_all(&spm).unwrap();
    for file in ["model.safetensors", "config.json"] {
        std::fs::copy(checkpoint("deberta-v2").join(file), spm.join(file)).unwrap();
    }
    std::fs::write(spm.join("spm.model"), b"not read").unwrap();
    let train = fx.path("train.toml");
    std::fs::write(
        &train,
        format!(
            "model_name_or_path = {spm:?}\ntrain_file = {data:?}\noutput_dir = {:?}\ndevice = \"cpu\"\n",
            fx.path("out")
        ),
    )
    .unwrap();
    fails_with(
        fx.run(&["train", "--config", s(&train)]),
        &["has spm.model but no tokenizer.json", "save_pretrained"],
    );
}

/// `--quantize int8` and `--dtype bf16` (an emulating bf16 kernel where the CPU lacks
/// AVX512-BF16) against f32, for every architecture.
#[test]
fn lower_precision_inference_tracks_f32_for_every_architecture() {
    let fx = Fixture::new("arch-int8");
    let data = fx.path("pairs.csv");
    write_pairs(&data);
    for (name, _) in ARCHITECTURES {
        let model = checkpoint(name);
        let probabilities = |extra: &[&str]| -> Vec<f64> {
            let out = fx.path(&format!("{name}{}.csv", extra.join("")));
            let mut args = vec![
                "predict",
                "--model",
                s(&model),
                "--input",
                s(&data),
                "--text-pair-column",
                "text_pair",
                "--output",
                s(&out),
                "--device",
                "cpu",
            ];
            args.extend(extra);
            let mut cmd = common::bertcls(&fx.cache);
            if !bertcls::model::bf16::Kernel::available()
                .iter()
                .any(|k| k.is_native())
            {
                cmd.env("BERTCLS_BF16_KERNEL", "portable");
            }
            ok(cmd.args(&args).output().unwrap());
            let text = std::fs::read_to_string(&out).unwrap();
            let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
            let at = header.iter().position(|h| *h == "probability").unwrap();
            text.lines()
                .skip(1)
                .map(|l| l.split(',').nth(at).unwrap().parse().unwrap())
                .collect()
        };
        let f32s = probabilities(&[]);
        for (lower, bound) in [(["--quantize", "int8"], 0.05), (["--dtype", "bf16"], 0.02)] {
            let other = probabilities(&lower);
            let worst = f32s
                .iter()
                .zip(&other)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(worst > 0.0, "{name}: {lower:?} is a different computation");
            assert!(
                worst < bound,
                "{name}: {lower:?} probabilities within {bound} of f32: {worst}"
            );
        }
    }
}

/// `name`'s checkpoint loaded for inference, and a padded batch of sentence pairs.
fn padded_batch(name: &str) -> (bertcls::infer::Classifier, bertcls::tokenize::Batch) {
    use bertcls::infer::{Classifier, LoadOptions};
    use bertcls::tokenize::{Batch, Input};

    let texts = sentences();
    let inputs: Vec<Input> = texts
        .iter()
        .map(|(text, _)| Input::new(text, Some("what a film")))
        .collect();
    let classifier = Classifier::load(&checkpoint(name), &LoadOptions::cpu()).unwrap();
    let encoded = classifier.encode(&inputs).unwrap();
    let items: Vec<_> = encoded.iter().collect();
    let pad = classifier.tokenizer().pad_id();
    let batch = Batch::collate(&items, pad, None, classifier.device()).unwrap();
    (classifier, batch)
}

/// Inference (`Classifier::logits`, the fused attention kernel) computes what the
/// differentiable graph computes, for every architecture, on a padded batch.
#[test]
fn inference_matches_the_differentiable_pass_for_every_architecture() {
    use bertcls::model::ForwardMode;

    for (name, _) in ARCHITECTURES {
        let (classifier, batch) = padded_batch(name);
        let model = classifier.model();
        let fused = model.logits(&batch).unwrap();
        let graph = model
            .classify(&batch, &mut ForwardMode::eval().with_graph_attention())
            .unwrap();
        let diff = bertcls::testing::max_abs_diff(&fused, &graph);
        assert!(diff < 1e-5, "{name}: logits differ by {diff}");
    }
}

/// Training's attention kernel gives the graph's loss and gradients, dropout included (the
/// same masks from the same seeds), for every architecture.
#[test]
fn training_attention_matches_the_graph_for_every_architecture() {
    use bertcls::model::ForwardMode;
    use bertcls::train::Trainable;
    use candle_core::{DType, Tensor};

    for (name, _) in ARCHITECTURES {
        let (classifier, batch) = padded_batch(name);
        let model = classifier.model();
        let tensors = model.named_tensors().into_iter().collect();
        let trainable = Trainable::new(model.config(), model.num_labels(), &tensors).unwrap();
        let rows = batch.input_ids.dim(0).unwrap();
        let targets = Tensor::zeros(rows, DType::U32, classifier.device()).unwrap();
        let run = |mode: ForwardMode| {
            trainable
                .loss_and_grads(&batch, &targets, &mut { mode }, 1.0)
                .unwrap()
        };
        let (loss, grads) = run(ForwardMode::train(5));
        let (graph_loss, graph_grads) = run(ForwardMode::train(5).with_graph_attention());
        assert!(
            (loss - graph_loss).abs() < 1e-5,
            "{name}: loss {loss} vs {graph_loss}"
        );
        for (var, param) in trainable.vars.iter().zip(&trainable.names) {
            let (a, b) = (graph_grads.get(var).unwrap(), grads.get(var).unwrap());
            let diff = bertcls::testing::max_abs_diff(a, b);
            assert!(diff < 1e-5, "{name}: gradient of {param} differs by {diff}");
        }
    }
}
