//! Numerical parity with PyTorch + transformers, against fixtures written by
//! `scripts/reference/make_fixtures.py` (committed under tests/fixtures/; no Python needed
//! here). Each check cites the line of that script that produced the expected numbers, and
//! `cite` verifies the citation, so the two files cannot drift apart silently.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bertcls::config::SchedulerType;
use bertcls::infer::{Classifier, LoadOptions};
use bertcls::model::weights::{self, HeadInit};
use bertcls::model::{ForwardMode, ModelConfig};
use bertcls::optim::{AdamW, AdamWConfig, Gradients, LrSchedule};
use bertcls::task::Loss;
use bertcls::testing::max_abs_diff;
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
        Self::read("expected.safetensors", "inputs.json")
    }

    /// The task-loss fixtures: tasks.safetensors and tasks.json.
    fn tasks() -> Self {
        Self::read("tasks.safetensors", "tasks.json")
    }

    fn read(tensors: &str, inputs: &str) -> Self {
        let tensors =
            candle_core::safetensors::load(fixtures().join(tensors), &Device::Cpu).unwrap();
        let inputs =
            serde_json::from_slice(&std::fs::read(fixtures().join(inputs)).unwrap()).unwrap();
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
    let config = ModelConfig::load(dir).unwrap();
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
    let pooled = out.pooled.as_ref().expect("BERT has a pooler");
    assert!(max_abs_diff(pooled, r.get("pooler_output")) <= 1e-5);
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
    assert_eq!(
        t.names.len(),
        41,
        "every parameter of the fixture is compared"
    );
    assert_gradients_match(&t, &grads, |n| r.get(&format!("grad.{n}")), "");
}

/// Asserts that every parameter's gradient is within 1e-4 of transformers' (`theirs`),
/// relative to its scale.
fn assert_gradients_match<'a>(
    t: &Trainable,
    grads: &candle_core::backprop::GradStore,
    theirs: impl Fn(&str) -> &'a Tensor,
    case: &str,
) {
    // The attention key biases have a zero gradient in exact arithmetic (softmax is invariant
    // to a shift that is the same for every key), so theirs and ours are both rounding noise
    // of ~1e-9: errors are measured against max(the tensor's scale, 1e-3 x the largest
    // gradient of the model) so that noise is not divided by noise.
    let largest = t
        .names
        .iter()
        .map(|n| max_abs_diff(theirs(n), &theirs(n).zeros_like().unwrap()))
        .fold(0.0, f64::max);
    let mut worst = (0.0, String::new());
    for (name, var) in t.names.iter().zip(&t.vars) {
        let ours = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{case}: no gradient for {name}"));
        let theirs = theirs(name);
        let scale = max_abs_diff(theirs, &theirs.zeros_like().unwrap()).max(1e-3 * largest);
        let err = max_abs_diff(ours, theirs) / scale;
        if err > worst.0 {
            worst = (err, name.clone());
        }
    }
    eprintln!(
        "{case} gradients: worst relative error {:e} ({})",
        worst.0, worst.1
    );
    assert!(
        worst.0 <= 1e-4,
        "{case}: gradient of {} off by {:e} relative",
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
        .zip(&t.decays)
        .map(|(v, d)| (v.clone(), *d))
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
    assert_parameters_match(
        &t,
        &lrs,
        |n| r.get(&format!("adamw3.{n}")),
        |n| r.get(&format!("grad.{n}")),
        "",
    );
}

/// Asserts that every parameter after AdamW steps at `lrs` is within 1e-6 of transformers'
/// (`theirs`), relative to its scale. `first_grad` is transformers' gradient of the first
/// step: Adam divides each element's step by that element's own gradient size, so an
/// element whose gradient is at rounding-noise level (below 1e-4 of its tensor's largest)
/// takes a step of arbitrary size and sign on either side; for those only the bound on
/// Adam's step, |update| <= lr per step, can hold.
fn assert_parameters_match<'a>(
    t: &Trainable,
    lrs: &[f64],
    theirs: impl Fn(&str) -> &'a Tensor,
    first_grad: impl Fn(&str) -> &'a Tensor,
    case: &str,
) {
    let flat = |x: &Tensor| -> Vec<f64> {
        x.to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let bound = 2.0 * lrs.iter().sum::<f64>();
    let mut worst = (0.0, String::new());
    let mut noisy = 0;
    for (name, var) in t.names.iter().zip(&t.vars) {
        let (ours, theirs, grad) = (
            flat(var.as_tensor()),
            flat(theirs(name)),
            flat(first_grad(name)),
        );
        let scale = theirs.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-30);
        let grad_scale = grad.iter().fold(0f64, |m, v| m.max(v.abs()));
        // The attention key biases' whole gradient is rounding noise (see
        // gradients_match_transformers).
        let all_noise =
            name.ends_with("attention.self.key.bias") || name.ends_with("attention.k_lin.bias");
        for ((a, b), g) in ours.iter().zip(&theirs).zip(&grad) {
            // Exact zeros (embeddings of tokens not in the batch) are no noise: Adam leaves
            // them to weight decay alone, on both sides.
            if all_noise || (*g != 0.0 && g.abs() < 1e-4 * grad_scale) {
                noisy += 1;
                assert!(
                    (a - b).abs() <= bound,
                    "{case}: {name} moved more than Adam can"
                );
                continue;
            }
            let err = (a - b).abs() / scale;
            if err > worst.0 {
                worst = (err, name.clone());
            }
        }
    }
    eprintln!(
        "{case} after {} AdamW steps: worst relative error {:e} ({}); {noisy} elements with \
         noise-level gradients checked against Adam's bound",
        lrs.len(),
        worst.0,
        worst.1
    );
    assert!(
        worst.0 <= 1e-6,
        "{case}: {} off by {:e} relative after {} steps",
        worst.1,
        worst.0,
        lrs.len()
    );
}

#[test]
fn twenty_step_trajectory_matches_torch() {
    let r = Reference::load();
    let (t, tokenizer) = trainable(&fixtures().join("tiny-bert"));
    let batches = trajectory_batches(&r, &tokenizer);
    let (losses, lrs) = train_steps(&t, &batches, &r.inputs["trajectory_optimizer"], 20);
    cite(172, "trajectory_lrs.append(scheduler.get_last_lr()[0])");
    assert_eq!(lrs, r.f64s("trajectory_lrs"), "learning rates are exact");
    cite(171, "losses.append(loss.item())");
    assert_trajectory_matches(&losses, r.get("trajectory_losses"), "");
}

/// The 4 batches the 20-step trajectory cycles through.
fn trajectory_batches(r: &Reference, tokenizer: &TextEncoder) -> Vec<(Batch, Tensor)> {
    r.inputs["trajectory"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (batch(tokenizer, &b["texts"]), labels(&b["labels"])))
        .collect()
}

/// Asserts that each step's loss is within 1e-4 of transformers' (`expected`), and that the
/// trajectory trains.
fn assert_trajectory_matches(losses: &[f64], expected: &Tensor, case: &str) {
    let expected = expected.to_vec1::<f32>().unwrap();
    let worst = losses
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - *b as f64).abs())
        .fold(0.0, f64::max);
    eprintln!("{case} 20-step trajectory: worst loss difference {worst:e}");
    for (step, (ours, theirs)) in losses.iter().zip(&expected).enumerate() {
        assert!(
            (ours - *theirs as f64).abs() <= 1e-4,
            "{case} step {step}: loss {ours} vs {theirs}"
        );
    }
    assert!(
        expected[19] < expected[0] * 0.8,
        "{case}: the trajectory actually trains"
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

/// The cases of tasks.json: a loss for each task, from the same tiny model and batch.
fn task_case(r: &Reference, case: &str) -> (Trainable, Tensor) {
    let spec = &r.inputs["cases"][case];
    let dir = fixtures().join("tiny-bert");
    let config = ModelConfig::load(&dir).unwrap();
    let num_labels = spec["num_labels"].as_u64().unwrap() as usize;
    let mut loaded = weights::load(&dir, &config, 3, HeadInit::Require, &Device::Cpu).unwrap();
    if case == "mse" {
        for name in ["classifier.weight", "classifier.bias"] {
            let head = r.get(&format!("mse.init.{name}")).clone();
            loaded.tensors.insert(name.to_string(), head);
        }
    }
    let floats = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    let (loss, targets) = match case {
        "weighted_ce" => (
            Loss::CrossEntropy {
                weights: Some(floats(&spec["class_weights"])),
                label_smoothing: spec["label_smoothing"].as_f64().unwrap(),
            },
            labels(&spec["targets"]),
        ),
        "bce" | "bce_pos_weight" => {
            let rows: Vec<Vec<f32>> = spec["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(floats)
                .collect();
            let pos_weight = spec.get("pos_weight").map(floats);
            (
                Loss::BinaryCrossEntropy { pos_weight },
                Tensor::new(rows, &Device::Cpu).unwrap(),
            )
        }
        "mse" => (
            Loss::MeanSquaredError,
            Tensor::new(floats(&spec["targets"]), &Device::Cpu).unwrap(),
        ),
        other => panic!("unknown case {other}"),
    };
    let t = Trainable::new(&config, num_labels, &loaded.tensors)
        .unwrap()
        .with_loss(loss);
    (t, targets)
}

/// Class-weighted, label-smoothed cross-entropy; BCE (transformers' multi-label loss) with and
/// without pos_weight; MSE (its regression loss): logits, loss, every gradient and the
/// parameters after 3 AdamW steps, as PyTorch computes them.
#[test]
fn task_losses_match_torch() {
    let r = Reference::tasks();
    let tokenizer = TextEncoder::load(&fixtures().join("tiny-bert"), 64).unwrap();
    let b = batch(&tokenizer, &r.inputs["texts"]);
    for case in ["weighted_ce", "bce", "bce_pos_weight", "mse"] {
        let (t, targets) = task_case(&r, case);
        let logits = t.model.classify(&b, &mut ForwardMode::eval()).unwrap();
        cite(276, "tensors[f\"{case}.logits\"]");
        let diff = max_abs_diff(&logits, r.get(&format!("{case}.logits")));
        assert!(diff <= 1e-5, "{case}: logits max |diff| {diff}");
        let (loss, grads) = t
            .loss_and_grads(&b, &targets, &mut ForwardMode::eval(), 1.0)
            .unwrap();
        cite(277, "tensors[f\"{case}.loss\"]");
        let expected = r.get(&format!("{case}.loss")).to_vec1::<f32>().unwrap()[0] as f64;
        assert!(
            (loss - expected).abs() <= 1e-5,
            "{case}: loss {loss} vs {expected}"
        );
        cite(280, "tensors[f\"{case}.grad.{name}\"]");
        assert_gradients_match(&t, &grads, |n| r.get(&format!("{case}.grad.{n}")), case);

        let (t, targets) = task_case(&r, case);
        let batches = [(batch(&tokenizer, &r.inputs["texts"]), targets)];
        let (_, lrs) = train_steps(&t, &batches, &r.inputs["adamw"], 3);
        cite(296, "tensors[f\"{case}.adamw3.{name}\"]");
        assert_parameters_match(
            &t,
            &lrs,
            |n| r.get(&format!("{case}.adamw3.{n}")),
            |n| r.get(&format!("{case}.grad.{n}")),
            case,
        );
    }
}

/// The fixtures of one architecture (`scripts/reference/arch_fixtures.py`): a tiny random
/// model folder with its own tokenizer, and what transformers computes from it.
fn architecture_reference(name: &str) -> (PathBuf, Reference) {
    let dir = fixtures().join("arch");
    let r = Reference::read(
        &format!("arch/{name}.safetensors"),
        &format!("arch/{name}.json"),
    );
    (dir.join(name), r)
}

/// Token ids, logits, loss, every gradient, the parameter list and its weight-decay groups,
/// 3 AdamW steps and a 20-step trajectory of one architecture against transformers, with the
/// tolerances of the BERT checks above.
fn check_architecture(name: &str) {
    let (dir, r) = architecture_reference(name);
    let model = Classifier::load(&dir, &LoadOptions::cpu()).unwrap();
    assert_eq!(model.labels().names(), ["negative", "neutral", "positive"]);
    assert_eq!(
        model.model().config().model_type(),
        r.inputs["model_type"].as_str().unwrap()
    );
    let b = batch(model.tokenizer(), &r.inputs["texts"]);
    assert_eq!(
        model.tokenizer().pad_id() as u64,
        r.inputs["pad_token_id"].as_u64().unwrap()
    );
    for (ours, key) in [
        (&b.input_ids, "input_ids"),
        (&b.attention_mask, "attention_mask"),
        (&b.token_type_ids, "token_type_ids"),
    ] {
        if key == "token_type_ids" && !r.tensors.contains_key(key) {
            continue;
        }
        assert_eq!(max_abs_diff(ours, r.get(key)), 0.0, "{name}: {key} differs");
    }

    let logits = model.model().logits(&b).unwrap();
    let diff = max_abs_diff(&logits, r.get("logits"));
    eprintln!("{name}: logits max |diff| {diff:e}");
    assert!(diff <= 1e-5, "{name}: logits max |diff| {diff}");
    // Both through the differentiable pass: inference's attention kernel sums in another
    // order (tests/architectures.rs compares the two).
    let full = model.model().forward(&b, &mut ForwardMode::eval()).unwrap();
    let cls_only = model
        .model()
        .classify(&b, &mut ForwardMode::eval())
        .unwrap();
    assert!(
        max_abs_diff(&full.logits, &cls_only) <= 1e-6,
        "{name}: the first-token-only pass gives the full pass's logits"
    );

    let (t, tokenizer) = trainable(&dir);
    let parameters: Vec<(String, Vec<usize>)> =
        serde_json::from_value(r.inputs["parameters"].clone()).unwrap();
    let mut expected: Vec<_> = parameters.iter().map(|(n, _)| n.clone()).collect();
    let mut ours = t.names.clone();
    expected.sort();
    ours.sort();
    assert_eq!(
        ours, expected,
        "{name}: the same parameters as transformers"
    );
    let decay: std::collections::BTreeSet<String> =
        serde_json::from_value(r.inputs["decay"].clone()).unwrap();
    for (n, d) in t.names.iter().zip(&t.decays) {
        assert_eq!(
            *d,
            decay.contains(n),
            "{name}: weight decay of {n} (Trainer's groups)"
        );
    }

    let targets = labels(&r.inputs["labels"]);
    let (loss, grads) = t
        .loss_and_grads(&b, &targets, &mut ForwardMode::eval(), 1.0)
        .unwrap();
    let expected_loss = r.get("loss").to_vec1::<f32>().unwrap()[0] as f64;
    assert!(
        (loss - expected_loss).abs() <= 1e-5,
        "{name}: loss {loss} vs {expected_loss}"
    );
    assert_gradients_match(&t, &grads, |n| r.get(&format!("grad.{n}")), name);

    let (t, _) = trainable(&dir);
    let (_, lrs) = train_steps(&t, &[(b, targets)], &r.inputs["adamw"], 3);
    assert_eq!(lrs, r.f64s("adamw_lrs"), "learning rates are exact");
    assert_parameters_match(
        &t,
        &lrs,
        |n| r.get(&format!("adamw3.{n}")),
        |n| r.get(&format!("grad.{n}")),
        name,
    );

    let (t, _) = trainable(&dir);
    let batches = trajectory_batches(&r, &tokenizer);
    let (losses, lrs) = train_steps(&t, &batches, &r.inputs["trajectory_optimizer"], 20);
    assert_eq!(lrs, r.f64s("trajectory_lrs"), "learning rates are exact");
    assert_trajectory_matches(&losses, r.get("trajectory_losses"), name);
}

#[test]
fn roberta_matches_transformers() {
    check_architecture("roberta");
}

#[test]
fn xlm_roberta_matches_transformers() {
    check_architecture("xlm-roberta");
}

#[test]
fn camembert_matches_transformers() {
    check_architecture("camembert");
}

#[test]
fn distilbert_matches_transformers() {
    check_architecture("distilbert");
}

#[test]
fn electra_matches_transformers() {
    check_architecture("electra");
}

#[test]
fn deberta_v2_matches_transformers() {
    check_architecture("deberta-v2");
}
