//! The encoder and classification head on tiny random BERTs built here.

mod common;

use std::collections::HashMap;

use bertcls::data::LabelSet;
use bertcls::infer::{Batching, Classifier, LoadOptions, batched_logits};
use bertcls::model::weights::{self, HeadInit};
use bertcls::model::{ForwardMode, Products, SequenceClassifier, bf16, cross_entropy};
use bertcls::testing::{TinyModel, max_abs_diff};
use bertcls::tokenize::{Batch, Input, TextEncoder};
use bertcls::train::Trainable;
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor};

/// Asserts that each parameter's gradient in `b` is within `rel` of the tensor's largest
/// magnitude, plus `abs`, of its gradient in `a`, and has the same dtype.
fn assert_gradients_close(
    a: (&Trainable, &GradStore),
    b: (&Trainable, &GradStore),
    rel: f32,
    abs: f32,
) {
    for ((name, var_a), var_b) in a.0.names.iter().zip(&a.0.vars).zip(&b.0.vars) {
        let ga = a.1.get(var_a.as_tensor()).unwrap();
        let gb = b.1.get(var_b.as_tensor()).unwrap();
        assert_eq!(ga.dtype(), gb.dtype(), "{name}: gradient dtype");
        let scale = ga
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let diff = max_abs_diff(ga, gb);
        assert!(
            diff <= f64::from(rel * scale + abs),
            "gradient of {name} differs by {diff} (scale {scale})"
        );
    }
}

fn labels() -> LabelSet {
    LabelSet::from_names(vec!["neg".into(), "neu".into(), "pos".into()])
}

/// A tiny model with a head, its tokenizer, and a batch of a pair and two single sentences
/// of different lengths.
fn setup(tiny: &TinyModel) -> (SequenceClassifier, Batch, Tensor, HashMap<String, Tensor>) {
    let dir = common::temp_dir("model");
    tiny.write(&dir).unwrap();
    let tokenizer = TextEncoder::load(&dir, 32).unwrap();
    let encoded = tokenizer
        .encode(&[
            ("the movie was very good !", "great fun").into(),
            "awful".into(),
            "not a boring film , what a fun movie".into(),
        ])
        .unwrap();
    let items: Vec<_> = encoded.iter().collect();
    let batch = Batch::collate(&items, 0, None, &Device::Cpu).unwrap();
    let targets = Tensor::new(&[2u32, 0, 1], &Device::Cpu).unwrap();
    let params = tiny.parameters().unwrap();
    let model = SequenceClassifier::from_tensors(&tiny.config(), 3, &params).unwrap();
    (model, batch, targets, params)
}

fn tiny() -> TinyModel {
    TinyModel {
        labels: Some(labels()),
        ..TinyModel::default()
    }
}

#[test]
fn every_parameter_receives_a_nonzero_gradient() {
    let t = tiny();
    let (_, batch, targets, params) = setup(&t);
    let trainable = Trainable::new(&t.config(), 3, &params).unwrap();
    let (loss, grads) = trainable
        .loss_and_grads(&batch, &targets, &mut ForwardMode::train(7), 1.0)
        .unwrap();
    assert!(loss.is_finite() && loss > 0.0);
    assert_eq!(trainable.vars.len(), 5 + 16 * 2 + 4);
    for (name, var) in trainable.names.iter().zip(&trainable.vars) {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let norm = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(norm > 0.0, "zero gradient for {name}");
    }
}

#[test]
fn dropout_is_active_in_training_only() {
    let (model, batch, _, _) = setup(&tiny());
    let eval1 = model.logits(&batch).unwrap();
    let eval2 = model.logits(&batch).unwrap();
    assert_eq!(max_abs_diff(&eval1, &eval2), 0.0, "eval is deterministic");
    let train_a = model
        .forward(&batch, &mut ForwardMode::train(1))
        .unwrap()
        .logits;
    let train_a2 = model
        .forward(&batch, &mut ForwardMode::train(1))
        .unwrap()
        .logits;
    let train_b = model
        .forward(&batch, &mut ForwardMode::train(2))
        .unwrap()
        .logits;
    assert!(
        max_abs_diff(&train_a, &eval1) > 1e-3,
        "dropout changes the output"
    );
    assert!(
        max_abs_diff(&train_a, &train_b) > 1e-3,
        "masks depend on the seed"
    );
    assert_eq!(
        max_abs_diff(&train_a, &train_a2),
        0.0,
        "the same seed repeats"
    );
    let no_dropout = TinyModel {
        dropout: 0.0,
        ..tiny()
    };
    let (model0, batch0, _, _) = setup(&no_dropout);
    let t = model0
        .forward(&batch0, &mut ForwardMode::train(1))
        .unwrap()
        .logits;
    assert!(max_abs_diff(&t, &model0.logits(&batch0).unwrap()) < 1e-6);
}

/// Training and inference run the last layer for [CLS] only; that must compute exactly what the
/// full pass computes, and give every parameter the same gradient.
#[test]
fn cls_only_last_layer_matches_the_full_pass() {
    let no_dropout = TinyModel {
        dropout: 0.0,
        ..tiny()
    };
    let (model, batch, targets, params) = setup(&no_dropout);
    let full = model
        .forward(&batch, &mut ForwardMode::eval())
        .unwrap()
        .logits;
    let cls = model.classify(&batch, &mut ForwardMode::eval()).unwrap();
    assert!(max_abs_diff(&full, &cls) < 1e-6);

    let trainable = Trainable::new(&no_dropout.config(), 3, &params).unwrap();
    let logits = trainable
        .model
        .forward(&batch, &mut ForwardMode::train(3))
        .unwrap()
        .logits;
    let full_grads = cross_entropy(&logits, &targets)
        .unwrap()
        .backward()
        .unwrap();
    let (_, cls_grads) = trainable
        .loss_and_grads(&batch, &targets, &mut ForwardMode::train(3), 1.0)
        .unwrap();
    // The absolute term covers the key biases, whose true gradient is zero (softmax ignores a
    // shift shared by all keys): both sides hold rounding noise there.
    assert_gradients_close(
        (&trainable, &full_grads),
        (&trainable, &cls_grads),
        1e-5,
        1e-7,
    );
}

/// Mixed precision (`bf16 = true` on CUDA) runs the same code with a half compute dtype. The
/// CPU has no bfloat16 matrix product, so the path is checked here in f16: the loss and every
/// gradient follow the f32 run closely, and the gradients arrive in f32 on the f32 variables.
#[test]
fn half_precision_training_path_tracks_f32() {
    let no_dropout = TinyModel {
        dropout: 0.0,
        ..tiny()
    };
    let (_, batch, targets, params) = setup(&no_dropout);
    let full = Trainable::new(&no_dropout.config(), 3, &params).unwrap();
    let half = Trainable::new(&no_dropout.config(), 3, &params)
        .unwrap()
        .with_precision((DType::F16, Products::Plain))
        .unwrap();
    let (loss32, g32) = full
        .loss_and_grads(&batch, &targets, &mut ForwardMode::train(1), 1.0)
        .unwrap();
    let (loss16, g16) = half
        .loss_and_grads(&batch, &targets, &mut ForwardMode::train(1), 1.0)
        .unwrap();
    assert!(
        (loss32 - loss16).abs() < 1e-2 * loss32.abs(),
        "{loss32} vs {loss16}"
    );
    // f16 keeps 11 bits of mantissa: a few parts in a thousand of the tensor's scale. The
    // absolute term is for the key biases, whose true gradient is zero (rounding noise).
    assert_gradients_close((&full, &g32), (&half, &g16), 2e-2, 1e-4);
}

/// Mixed precision on the CPU (`bf16 = true`): f32 tensors whose linear layers multiply
/// bf16-rounded operands, forward and backward, with every bf16 kernel this CPU runs (the
/// emulating ones everywhere, AVX512-BF16 where present). The loss and gradients follow f32
/// within bf16's rounding, and differ from it (the products are really rounded).
#[test]
fn bf16_products_training_path_tracks_f32() {
    let no_dropout = TinyModel {
        dropout: 0.0,
        ..tiny()
    };
    let (_, batch, targets, params) = setup(&no_dropout);
    let full = Trainable::new(&no_dropout.config(), 3, &params).unwrap();
    let (loss32, g32) = full
        .loss_and_grads(&batch, &targets, &mut ForwardMode::train(1), 1.0)
        .unwrap();
    for kernel in bf16::Kernel::available() {
        let mixed = Trainable::new(&no_dropout.config(), 3, &params)
            .unwrap()
            .with_precision((DType::F32, Products::Bf16(kernel)))
            .unwrap();
        let (loss16, g16) = mixed
            .loss_and_grads(&batch, &targets, &mut ForwardMode::train(1), 1.0)
            .unwrap();
        assert!(
            loss16 != loss32 && (loss32 - loss16).abs() < 1e-2 * loss32.abs(),
            "{kernel:?}: {loss32} vs {loss16}"
        );
        // bf16 keeps 8 bits of mantissa: about 4 parts in a thousand per product.
        assert_gradients_close((&full, &g32), (&mixed, &g16), 5e-2, 1e-3);
    }
}

/// A bf16 model for inference packs its weights once when it is built; a trained one packs
/// them at every product (they change): the same logits either way.
#[test]
fn bf16_weights_packed_once_give_what_packing_at_each_product_gives() {
    let (_, batch, _, params) = setup(&tiny());
    for kernel in bf16::Kernel::available() {
        let trainable = Trainable::new(&tiny().config(), 3, &params)
            .unwrap()
            .with_precision((DType::F32, Products::Bf16(kernel)))
            .unwrap();
        let logits = |model: &SequenceClassifier| {
            model
                .classify(&batch, &mut ForwardMode::eval())
                .unwrap()
                .to_vec2::<f32>()
                .unwrap()
        };
        let snapshot = trainable.model.detached().unwrap();
        assert_eq!(logits(&trainable.model), logits(&snapshot), "{kernel:?}");
    }
}

/// Prediction batches inputs longest first; each input must get the logits it gets when
/// scored alone, in input order.
#[test]
fn length_sorted_prediction_keeps_input_order_and_values() {
    let t = tiny();
    let dir = common::temp_dir("sorted");
    t.write(&dir).unwrap();
    let tokenizer = TextEncoder::load(&dir, 32).unwrap();
    let texts = [
        "awful",
        "the movie was very good and great fun",
        "not a boring film",
        "fun",
        "what a fun movie , very good",
    ];
    let inputs: Vec<Input> = texts.iter().map(|&t| Input::from(t)).collect();
    let encoded = tokenizer.encode(&inputs).unwrap();
    let params = t.parameters().unwrap();
    let model = SequenceClassifier::from_tensors(&t.config(), 3, &params).unwrap();
    let sorted = batched_logits(
        &model,
        tokenizer.pad_id(),
        &encoded,
        Batching::rows(2),
        &Device::Cpu,
        &mut |_| Ok(()),
    )
    .unwrap();
    for (item, logits) in encoded.iter().zip(&sorted) {
        let alone = Batch::collate(&[item], tokenizer.pad_id(), None, &Device::Cpu).unwrap();
        let expected = model.logits(&alone).unwrap().to_vec2::<f32>().unwrap();
        for (a, b) in logits.iter().zip(&expected[0]) {
            assert!((a - b).abs() < 1e-5, "{logits:?} vs {:?}", expected[0]);
        }
    }
}

#[test]
fn padding_does_not_change_the_result() {
    let (model, batch, _, _) = setup(&tiny());
    let batched = model.forward(&batch, &mut ForwardMode::eval()).unwrap();
    // The second sentence alone, unpadded.
    let len = batch
        .attention_mask
        .get(1)
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as usize;
    let alone = Batch {
        input_ids: batch
            .input_ids
            .narrow(0, 1, 1)
            .unwrap()
            .narrow(1, 0, len)
            .unwrap(),
        token_type_ids: batch
            .token_type_ids
            .narrow(0, 1, 1)
            .unwrap()
            .narrow(1, 0, len)
            .unwrap(),
        attention_mask: batch
            .attention_mask
            .narrow(0, 1, 1)
            .unwrap()
            .narrow(1, 0, len)
            .unwrap(),
        real_tokens: len,
    };
    assert!(
        batch.input_ids.dim(1).unwrap() > len,
        "the test needs padding"
    );
    let single = model.forward(&alone, &mut ForwardMode::eval()).unwrap();
    let row = batched.logits.narrow(0, 1, 1).unwrap();
    assert!(max_abs_diff(&row, &single.logits) < 1e-5);
    let hidden = batched
        .hidden
        .narrow(0, 1, 1)
        .unwrap()
        .narrow(1, 0, len)
        .unwrap();
    assert!(max_abs_diff(&hidden, &single.hidden) < 1e-5);
}

#[test]
fn encoder_matches_candle_transformers_bert() {
    use candle_transformers::models::bert::{BertModel, Config};
    let t = TinyModel {
        dropout: 0.0,
        ..tiny()
    };
    let (model, batch, _, params) = setup(&t);
    let ours = model
        .forward(&batch, &mut ForwardMode::eval())
        .unwrap()
        .hidden;
    let config: Config = serde_json::from_value(serde_json::to_value(t.config()).unwrap()).unwrap();
    let vb = candle_nn::VarBuilder::from_tensors(params, DType::F32, &Device::Cpu);
    let stock = BertModel::load(vb.pp("bert"), &config).unwrap();
    let theirs = stock
        .forward(
            &batch.input_ids,
            &batch.token_type_ids,
            Some(&batch.attention_mask),
        )
        .unwrap();
    // Padding positions differ by design (the stock model leaves them unmasked as queries);
    // compare real tokens only.
    let mask = batch.attention_mask.unsqueeze(2).unwrap();
    let diff = max_abs_diff(
        &ours.broadcast_mul(&mask).unwrap(),
        &theirs.broadcast_mul(&mask).unwrap(),
    );
    assert!(diff < 1e-5, "max difference {diff}");
}

#[test]
fn checkpoint_naming_variants_load_identically() {
    let mut logits = Vec::new();
    for (bert_prefix, gamma_beta) in [(true, false), (false, false), (false, true), (true, true)] {
        let t = TinyModel {
            bert_prefix,
            gamma_beta,
            ..tiny()
        };
        let dir = common::temp_dir("naming");
        t.write(&dir).unwrap();
        let model = Classifier::load(&dir, &LoadOptions::cpu()).unwrap();
        let encoded = model
            .tokenizer()
            .encode(&["the film was fun".into()])
            .unwrap();
        let batch = Batch::collate(&[&encoded[0]], 0, None, &Device::Cpu).unwrap();
        logits.push(model.model().logits(&batch).unwrap());
    }
    for l in &logits[1..] {
        assert_eq!(max_abs_diff(&logits[0], l), 0.0);
    }
}

#[test]
fn base_model_gets_a_seeded_head_and_saved_model_round_trips() {
    let base = TinyModel::default();
    let dir = common::temp_dir("base");
    base.write(&dir).unwrap();
    let config = base.config();
    let load =
        |seed| weights::load(&dir, &config, 3, HeadInit::InitMissing(seed), &Device::Cpu).unwrap();
    let (a, b, c) = (load(1), load(1), load(2));
    assert_eq!(a.initialized, ["classifier.weight", "classifier.bias"]);
    let w = |l: &weights::LoadedWeights| l.tensors["classifier.weight"].clone();
    assert_eq!(max_abs_diff(&w(&a), &w(&b)), 0.0, "same seed, same head");
    assert!(
        max_abs_diff(&w(&a), &w(&c)) > 0.0,
        "another seed, another head"
    );
    let err = weights::load(&dir, &config, 3, HeadInit::Require, &Device::Cpu)
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("missing tensor `classifier.weight`"),
        "{err}"
    );

    let model = SequenceClassifier::from_tensors(&config, 3, &a.tensors).unwrap();
    let out = common::temp_dir("saved");
    model.save(&out, &labels()).unwrap();
    std::fs::copy(dir.join("vocab.txt"), out.join("vocab.txt")).unwrap();
    let reloaded = Classifier::load(
        &out,
        &LoadOptions {
            max_seq_length: Some(16),
            ..LoadOptions::cpu()
        },
    )
    .unwrap();
    assert_eq!(reloaded.labels(), &labels());
    let encoded = reloaded
        .tokenizer()
        .encode(&["a great film".into()])
        .unwrap();
    let batch = Batch::collate(&[&encoded[0]], 0, None, &Device::Cpu).unwrap();
    let diff = max_abs_diff(
        &model.logits(&batch).unwrap(),
        &reloaded.model().logits(&batch).unwrap(),
    );
    assert_eq!(diff, 0.0);
}

#[test]
fn shape_mismatch_names_the_tensor() {
    let t = tiny();
    let dir = common::temp_dir("shapes");
    t.write(&dir).unwrap();
    let mut config = t.config();
    config.intermediate_size = 48;
    let err = weights::load(&dir, &config, 3, HeadInit::Require, &Device::Cpu)
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains("intermediate.dense.weight")
            && msg.contains("[64, 32]")
            && msg.contains("[48, 32]"),
        "{msg}"
    );
}

/// The analytic gradient of a few parameter entries against central finite differences.
#[test]
fn gradients_match_finite_differences() {
    let t = TinyModel {
        dropout: 0.0,
        ..tiny()
    };
    let (_, batch, targets, params) = setup(&t);
    let loss_with = |params: &HashMap<String, Tensor>| -> f64 {
        let model = SequenceClassifier::from_tensors(&t.config(), 3, params).unwrap();
        let logits = model.logits(&batch).unwrap().to_dtype(DType::F64).unwrap();
        cross_entropy(&logits, &targets)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let params64: HashMap<String, Tensor> = params
        .iter()
        .map(|(k, v)| (k.clone(), v.to_dtype(DType::F64).unwrap()))
        .collect();
    let trainable = Trainable::new(&t.config(), 3, &params).unwrap();
    let (_, grads) = trainable
        .loss_and_grads(&batch, &targets, &mut ForwardMode::eval(), 1.0)
        .unwrap();
    for name in [
        "bert.embeddings.word_embeddings.weight",
        "bert.embeddings.LayerNorm.weight",
        "bert.encoder.layer.0.attention.self.query.weight",
        "bert.encoder.layer.1.intermediate.dense.bias",
        "bert.encoder.layer.1.output.LayerNorm.bias",
        "bert.pooler.dense.weight",
        "classifier.weight",
    ] {
        let i = trainable.names.iter().position(|n| n == name).unwrap();
        let grad = grads
            .get(trainable.vars[i].as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        // The entry with the largest gradient: well above finite-difference noise.
        let (k, &g) = grad
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
            .unwrap();
        let h = 1e-4;
        let shifted = |delta: f64| {
            let mut p = params64.clone();
            let flat = p[name].flatten_all().unwrap();
            let mut v = flat.to_vec1::<f64>().unwrap();
            v[k] += delta;
            p.insert(
                name.to_string(),
                Tensor::from_vec(v, p[name].shape(), &Device::Cpu).unwrap(),
            );
            loss_with(&p)
        };
        let numeric = (shifted(h) - shifted(-h)) / (2.0 * h);
        let rel = (numeric - g as f64).abs() / numeric.abs().max(1e-6);
        assert!(rel < 1e-3, "{name}[{k}]: analytic {g}, numeric {numeric}");
    }
}

/// transformers 5 leaves default label names out of config.json: the classifier's shape
/// gives the classes, named as transformers names them, and eval data may hold the integers.
#[test]
fn default_label_names_come_from_the_classifier_shape() {
    let t = tiny();
    let dir = common::temp_dir("default-labels");
    t.write(&dir).unwrap();
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let object = config.as_object_mut().unwrap();
    object.remove("id2label");
    object.remove("label2id");
    object.remove("num_labels");
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    let model = Classifier::load(&dir, &LoadOptions::cpu()).unwrap();
    assert_eq!(model.labels().names(), ["LABEL_0", "LABEL_1", "LABEL_2"]);
    let data = dir.join("eval.csv");
    std::fs::write(&data, "label,text\n2,a great film\n0,awful\n").unwrap();
    let opts = bertcls::eval::EvalOptions {
        data,
        format: None,
        columns: bertcls::data::Columns {
            text: "text".into(),
            text_pair: None,
            label: Some("label".into()),
        },
        batching: Batching::rows(8),
        max_samples: None,
        label_delimiter: ",".into(),
    };
    let report = bertcls::eval::evaluate_file(&model, &opts).unwrap();
    assert_eq!(report.labels, ["0", "1", "2"]);
    assert_eq!(report.examples, 2);
}
