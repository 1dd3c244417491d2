//! Numerical parity with PyTorch + transformers, against fixtures written by
//! `scripts/reference/make_fixtures.py` (committed under tests/fixtures/; no Python needed
//! here). Each check cites the line of that script that produced the expected numbers, and
//! `cite` verifies the citation, so the two files cannot drift apart silently.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bertcls::config::SchedulerType;
use bertcls::infer::{Classifier, LoadOptions};
use bertcls::model::weights::{self, HeadInit};
use bertcls::model::{BertConfig, ForwardMode};
use bertcls::optim::{AdamW, AdamWConfig, Gradients, LrSchedule};
use bertcls::tokenize::{Batch, Input, TextEncoder};
use bertcls::train::Trainable;
use candle_core::{DType, Device, Tensor};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Asserts that line `line` of the reference script contains `needle`.
fn cite(line: usize, needle: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/reference/make_fixtures.py");
    let text = std::fs::read_to_string(script).unwrap();
    let at = text.lines().nth(line - 1).unwrap_or("");
    assert!(
        at.contains(needle),
        "make_fixtures.py:{line} is `{at}`, expected it to contain `{needle}`"
    );
}

struct Reference {
    tensors: HashMap<String, Tensor>,
    inputs: serde_json::Value,
}

impl Reference {
    fn load() -> Self {
        let tensors =
            candle_core::safetensors::load(fixtures().join("expected.safetensors"), &Device::Cpu)
                .unwrap();
        let inputs =
            serde_json::from_slice(&std::fs::read(fixtures().join("inputs.json")).unwrap())
                .unwrap();
        Self { tensors, inputs }
    }

    fn get(&self, key: &str) -> &Tensor {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("no `{key}` in expected.safetensors"))
    }

    fn f64s(&self, key: &str) -> Vec<f64> {
        self.get(key).to_vec1::<f64>().unwrap()
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.to_dtype(DType::F64).unwrap();
    let b = b.to_dtype(DType::F64).unwrap();
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// max |a - b| / max |b|: the error relative to the tensor's scale.
fn relative_error(a: &Tensor, b: &Tensor) -> f64 {
    let scale = b
        .to_dtype(DType::F64)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    max_abs_diff(a, b) / scale.max(1e-30)
}

/// Tokenizes `items` (text, optional pair) with bertcls and pads them into a batch.
fn batch(tokenizer: &TextEncoder, items: &serde_json::Value) -> Batch {
    let pairs: Vec<(String, Option<String>)> = items
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_string(),
                p[1].as_str().map(str::to_string),
            )
        })
        .collect();
    let inputs: Vec<Input> = pairs
        .iter()
        .map(|(a, b)| Input::new(a, b.as_deref()))
        .collect();
    let encoded = tokenizer.encode(&inputs).unwrap();
    let refs: Vec<_> = encoded.iter().collect();
    Batch::collate(&refs, tokenizer.pad_id(), None, &Device::Cpu).unwrap()
}

fn labels(values: &serde_json::Value) -> Tensor {
    let v: Vec<u32> = values
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_u64().unwrap() as u32)
        .collect();
    Tensor::new(v.as_slice(), &Device::Cpu).unwrap()
}

/// The fixture model as trainable variables.
fn trainable(dir: &Path) -> (Trainable, TextEncoder) {
    let config = BertConfig::load(dir).unwrap();
    let loaded = weights::load(dir, &config, 3, HeadInit::Require, &Device::Cpu).unwrap();
    let tokenizer = TextEncoder::load(dir, 64).unwrap();
    (
        Trainable::new(&config, 3, &loaded.tensors).unwrap(),
        tokenizer,
    )
}

#[test]
fn tokenization_matches_transformers() {
    let r = Reference::load();
    let model = Classifier::load(&fixtures().join("tiny-bert"), &LoadOptions::cpu()).unwrap();
    let b = batch(model.tokenizer(), &r.inputs["texts"]);
    cite(128, "expected[key] = batch[key]");
    for (ours, key) in [
        (&b.input_ids, "input_ids"),
        (&b.token_type_ids, "token_type_ids"),
        (&b.attention_mask, "attention_mask"),
    ] {
        assert_eq!(max_abs_diff(ours, r.get(key)), 0.0, "{key} differs");
    }
}

#[test]
fn forward_matches_transformers() {
    let r = Reference::load();
    let model = Classifier::load(&fixtures().join("tiny-bert"), &LoadOptions::cpu()).unwrap();
    assert_eq!(model.labels().names(), ["negative", "neutral", "positive"]);
    let b = batch(model.tokenizer(), &r.inputs["texts"]);
    let out = model.model().forward(&b, &mut ForwardMode::eval()).unwrap();
    cite(134, "expected[\"last_hidden_state\"]");
    // Padding positions are not compared: transformers computes them unmasked as queries too,
    // but nothing reads them.
    let mask = b.attention_mask.unsqueeze(2).unwrap();
    let hidden = out.hidden.broadcast_mul(&mask).unwrap();
    let expected_hidden = r.get("last_hidden_state").broadcast_mul(&mask).unwrap();
    assert!(
        max_abs_diff(&hidden, &expected_hidden) <= 1e-5,
        "hidden {}",
        max_abs_diff(&hidden, &expected_hidden)
    );
    cite(135, "expected[\"pooler_output\"]");
    assert!(max_abs_diff(&out.pooled, r.get("pooler_output")) <= 1e-5);
    cite(137, "expected[\"logits\"]");
    let diff = max_abs_diff(&out.logits, r.get("logits"));
    eprintln!("logits max |diff|: {diff:e}");
    assert!(diff <= 1e-5, "logits max |diff| {diff}");
    cite(138, "expected[\"loss\"]");
    let loss = bertcls::model::cross_entropy(&out.logits, &labels(&r.inputs["labels"])).unwrap();
    assert!(max_abs_diff(&loss.reshape(1).unwrap(), r.get("loss")) <= 1e-5);
}

#[test]
fn gradients_match_transformers() {
    let r = Reference::load();
    let (t, tokenizer) = trainable(&fixtures().join("tiny-bert"));
    let b = batch(&tokenizer, &r.inputs["texts"]);
    let (_, grads) = t
        .loss_and_grads(
            &b,
            &labels(&r.inputs["labels"]),
            &mut ForwardMode::eval(),
            1.0,
        )
        .unwrap();
    cite(141, "expected[\"grad.\" + name]");
    // The attention key biases have a zero gradient in exact arithmetic (softmax is invariant
    // to a shift that is the same for every key), so theirs and ours are both rounding noise
    // of ~1e-9: errors are measured against max(the tensor's scale, 1e-3 x the largest
    // gradient of the model) so that noise is not divided by noise.
    let largest = t
        .names
        .iter()
        .map(|n| {
            max_abs_diff(
                r.get(&format!("grad.{n}")),
                &r.get(&format!("grad.{n}")).zeros_like().unwrap(),
            )
        })
        .fold(0.0, f64::max);
    let mut worst = (0.0, String::new());
    for (name, var) in t.names.iter().zip(&t.vars) {
        let ours = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let theirs = r.get(&format!("grad.{name}"));
        let scale = max_abs_diff(theirs, &theirs.zeros_like().unwrap()).max(1e-3 * largest);
        let err = max_abs_diff(ours, theirs) / scale;
        if err > worst.0 {
            worst = (err, name.clone());
        }
    }
    assert_eq!(
        t.names.len(),
        41,
        "every parameter of the fixture is compared"
    );
    eprintln!(
        "gradients: worst relative error {:e} ({})",
        worst.0, worst.1
    );
    assert!(
        worst.0 <= 1e-4,
        "gradient of {} off by {:e} relative",
        worst.1,
        worst.0
    );
}

/// Runs `steps` training updates as transformers' Trainer loop in the reference script does:
/// backward, clip to `max_grad_norm`, AdamW step, scheduler step; dropout off. Returns the
/// loss and learning rate of each step.
fn train_steps(
    t: &Trainable,
    batches: &[(Batch, Tensor)],
    opt: &serde_json::Value,
    steps: usize,
) -> (Vec<f64>, Vec<f64>) {
    let schedule = LrSchedule::new(
        opt["lr"].as_f64().unwrap(),
        SchedulerType::Linear,
        opt["total_steps"].as_u64().unwrap() as usize,
        opt["warmup_steps"].as_u64().unwrap() as usize,
        0.0,
    );
    let params = t
        .vars
        .iter()
        .zip(&t.names)
        .map(|(v, n)| (v.clone(), weights::decays(n)))
        .collect();
    let config = AdamWConfig {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: opt["weight_decay"].as_f64().unwrap(),
    };
    let mut optimizer = AdamW::new(params, config).unwrap();
    let mut grads = Gradients::new(t.vars.len());
    let (mut losses, mut lrs) = (Vec::new(), Vec::new());
    for step in 0..steps {
        let (b, y) = &batches[step % batches.len()];
        let (loss, store) = t
            .loss_and_grads(b, y, &mut ForwardMode::eval(), 1.0)
            .unwrap();
        grads.accumulate(&store, &t.vars).unwrap();
        grads.clip(opt["max_grad_norm"].as_f64().unwrap()).unwrap();
        let lr = schedule.lr(step);
        optimizer.step(&grads, lr).unwrap();
        grads.clear();
        losses.push(loss);
        lrs.push(lr);
    }
    (losses, lrs)
}

#[test]
fn three_adamw_steps_match_torch() {
    let r = Reference::load();
    let (t, tokenizer) = trainable(&fixtures().join("tiny-bert"));
    let batches = vec![(
        batch(&tokenizer, &r.inputs["texts"]),
        labels(&r.inputs["labels"]),
    )];
    let (_, lrs) = train_steps(&t, &batches, &r.inputs["adamw"], 3);
    cite(153, "adamw_lrs.append(scheduler.get_last_lr()[0])");
    assert_eq!(lrs, r.f64s("adamw_lrs"), "learning rates are exact");
    cite(158, "expected[\"adamw3.\" + name]");
    let mut worst = (0.0, String::new());
    for (name, var) in t.names.iter().zip(&t.vars) {
        let theirs = r.get(&format!("adamw3.{name}"));
        if name.ends_with("attention.self.key.bias") {
            // Its gradient is rounding noise (see gradients_match_transformers), which Adam
            // normalises into full-size steps of either sign: only the bound on Adam's step,
            // |update| <= lr per step, can hold.
            let bound = 2.0 * lrs.iter().sum::<f64>();
            assert!(
                max_abs_diff(var.as_tensor(), theirs) <= bound,
                "{name} moved more than Adam can"
            );
            continue;
        }
        let err = relative_error(var.as_tensor(), theirs);
        if err > worst.0 {
            worst = (err, name.clone());
        }
    }
    eprintln!(
        "after 3 AdamW steps: worst relative error {:e} ({})",
        worst.0, worst.1
    );
    assert!(
        worst.0 <= 1e-6,
        "{} off by {:e} relative after 3 steps",
        worst.1,
        worst.0
    );
}

#[test]
fn twenty_step_trajectory_matches_torch() {
    let r = Reference::load();
    let (t, tokenizer) = trainable(&fixtures().join("tiny-bert"));
    let batches: Vec<(Batch, Tensor)> = r.inputs["trajectory"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (batch(&tokenizer, &b["texts"]), labels(&b["labels"])))
        .collect();
    let (losses, lrs) = train_steps(&t, &batches, &r.inputs["trajectory_optimizer"], 20);
    cite(172, "trajectory_lrs.append(scheduler.get_last_lr()[0])");
    assert_eq!(lrs, r.f64s("trajectory_lrs"), "learning rates are exact");
    cite(171, "losses.append(loss.item())");
    let expected = r.get("trajectory_losses").to_vec1::<f32>().unwrap();
    let worst = losses
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - *b as f64).abs())
        .fold(0.0, f64::max);
    eprintln!("20-step trajectory: worst loss difference {worst:e}");
    for (step, (ours, theirs)) in losses.iter().zip(&expected).enumerate() {
        assert!(
            (ours - *theirs as f64).abs() <= 1e-4,
            "step {step}: loss {ours} vs {theirs}"
        );
    }
    assert!(
        expected[19] < expected[0] * 0.8,
        "the trajectory actually trains"
    );
}

#[test]
fn pytorch_bin_checkpoint_and_vocab_txt_load_alike() {
    let r = Reference::load();
    let safetensors = Classifier::load(&fixtures().join("tiny-bert"), &LoadOptions::cpu()).unwrap();
    cite(
        121,
        "torch.save(model.state_dict(), MODEL_BIN / \"pytorch_model.bin\")",
    );
    let bin = Classifier::load(&fixtures().join("tiny-bert-bin"), &LoadOptions::cpu()).unwrap();
    let a = batch(safetensors.tokenizer(), &r.inputs["texts"]);
    let b = batch(bin.tokenizer(), &r.inputs["texts"]);
    assert_eq!(
        max_abs_diff(&a.input_ids, &b.input_ids),
        0.0,
        "vocab.txt tokenizer agrees with tokenizer.json"
    );
    let diff = max_abs_diff(
        &safetensors.model().logits(&a).unwrap(),
        &bin.model().logits(&b).unwrap(),
    );
    assert_eq!(diff, 0.0);
}
