//! Where a training step's time goes, phase by phase, on the real all-MiniLM-L6-v2 (fetched
//! as `configs/sentiment.toml` says) or on any model folder given as the first argument; or,
//! with `--architectures`, on random models of every architecture at MiniLM's shape (6 layers,
//! hidden 384, 12 heads, feed-forward 1536), side by side, so that one that trains much slower
//! per token than BERT shows.
//!
//!   cargo bench --bench step                                 # batch 32 x 64 tokens, 5 steps
//!   cargo bench --bench step -- DIR 8 32 10                  # model folder, batch, tokens, steps
//!   cargo bench --bench step -- --architectures [32 64 5]    # batch, tokens, steps
//!
//! Prints the median of each phase: forward, backward, gradient accumulation, clipping,
//! AdamW, and inference (forward without gradients) at the same shape, in f32 and with every
//! linear layer in int8 (`--quantize int8`), and in f32 through the differentiable graph
//! attention instead of the inference kernel; the training step's forward and backward
//! passes with the graph attention instead of training's attention kernel; and, where the CPU
//! has a native bf16 kernel (AMX, AVX512-BF16) or `BERTCLS_BF16_KERNEL` names one, inference
//! and the forward and backward passes with bf16 products; interleaved so that their ratios
//! hold on a busy machine.

use std::time::Instant;

use anyhow::Result;
use bertcls::config::TrainConfig;
use bertcls::model::weights::{self, HeadInit};
use bertcls::model::{ForwardMode, ModelConfig, Products, cross_entropy};
use bertcls::optim::{AdamW, AdamWConfig, Gradients};
use bertcls::tokenize::{Batch, Encoded};
use bertcls::train::Trainable;
use candle_core::{Device, Tensor};
use serde_json::json;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// MiniLM's shape in each architecture's config.json spelling.
fn shaped_configs() -> Vec<(&'static str, serde_json::Value)> {
    let bert = json!({"vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6,
        "num_attention_heads": 12, "intermediate_size": 1536, "max_position_embeddings": 512});
    let with = |extra: serde_json::Value| {
        let mut c = bert.clone();
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    };
    vec![
        ("bert", with(json!({"model_type": "bert"}))),
        (
            "roberta",
            with(json!({"model_type": "roberta", "pad_token_id": 1,
                "max_position_embeddings": 514, "type_vocab_size": 1, "layer_norm_eps": 1e-5})),
        ),
        (
            "distilbert",
            json!({"model_type": "distilbert", "vocab_size": 30522, "dim": 384, "n_layers": 6,
                "n_heads": 12, "hidden_dim": 1536, "max_position_embeddings": 512}),
        ),
        (
            "electra",
            with(json!({"model_type": "electra", "embedding_size": 128})),
        ),
        (
            "deberta-v2",
            with(
                json!({"model_type": "deberta-v2", "relative_attention": true,
                "position_buckets": 256, "pos_att_type": ["p2c", "c2p"], "share_att_key": true,
                "norm_rel_ebd": "layer_norm", "position_biased_input": false,
                "type_vocab_size": 0}),
            ),
        ),
    ]
}

/// A batch of `batch_size` random inputs of `seq` tokens (no padding) and binary labels.
fn random_batch(batch_size: usize, seq: usize, device: &Device) -> Result<(Batch, Tensor)> {
    let encoded: Vec<Encoded> = (0..batch_size)
        .map(|i| Encoded {
            ids: (0..seq)
                .map(|t| ((i * 131 + t * 31) % 20_000 + 1000) as u32)
                .collect(),
            type_ids: vec![0; seq],
        })
        .collect();
    let items: Vec<&Encoded> = encoded.iter().collect();
    let batch = Batch::collate(&items, 0, None, device)?;
    let labels = Tensor::new(
        (0..batch_size as u32)
            .map(|i| i % 2)
            .collect::<Vec<_>>()
            .as_slice(),
        device,
    )?;
    Ok((batch, labels))
}

/// The median milliseconds of each phase over `steps` steps after one warm-up step.
fn measure(
    trainable: &Trainable,
    batch: &Batch,
    labels: &Tensor,
    steps: usize,
) -> Result<Vec<(&'static str, f64)>> {
    let params = trainable
        .vars
        .iter()
        .zip(&trainable.decays)
        .map(|(v, d)| (v.clone(), *d))
        .collect();
    let mut optimizer = AdamW::new(
        params,
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        },
    )?;
    let mut grads = Gradients::new(trainable.vars.len());
    let mut phases: Vec<(&str, Vec<f64>)> = Vec::new();
    let detached = trainable.model.detached()?;
    let quantized =
        detached.with_products(Products::Int8(bertcls::model::int8::Kernel::detect()))?;
    let bf16 = match bertcls::model::bf16::Kernel::from_env() {
        Ok(kernel) => {
            eprintln!("bf16 rows: the {} kernel", kernel.name());
            let products = Products::Bf16(kernel);
            Some((
                trainable.model.with_products(products)?,
                detached.with_products(products)?,
            ))
        }
        Err(why) => {
            eprintln!("no bf16 rows: {why}");
            None
        }
    };
    for step in 0..steps + 1 {
        let t0 = Instant::now();
        let logits = trainable
            .model
            .classify(batch, &mut ForwardMode::train(step as u64))?;
        let loss = cross_entropy(&logits, labels)?;
        let _ = loss.to_scalar::<f32>()?;
        let t1 = Instant::now();
        let store = loss.backward()?;
        let t2 = Instant::now();
        grads.accumulate(&store, &trainable.vars)?;
        drop(store);
        let t3 = Instant::now();
        grads.clip(1.0)?;
        let t4 = Instant::now();
        optimizer.step(&grads, 1e-5)?;
        grads.clear();
        let t5 = Instant::now();
        let _ = detached.logits(batch)?.to_vec2::<f32>()?;
        let t6 = Instant::now();
        let _ = quantized.logits(batch)?.to_vec2::<f32>()?;
        let t7 = Instant::now();
        // `eval` keeps the differentiable graph attention: the fused kernel's A/B.
        let _ = detached
            .classify(batch, &mut ForwardMode::eval().with_graph_attention())?
            .to_vec2::<f32>()?;
        let t8 = Instant::now();
        // Training's attention kernel's A/B: the same pass, dropout masks and backward through
        // the graph.
        let mut graph = ForwardMode::train(step as u64).with_graph_attention();
        let graph_loss = cross_entropy(&trainable.model.classify(batch, &mut graph)?, labels)?;
        let _ = graph_loss.to_scalar::<f32>()?;
        drop(graph_loss.backward()?);
        let t9 = Instant::now();
        let mut times = vec![
            ("forward", t1 - t0),
            ("backward", t2 - t1),
            ("accumulate", t3 - t2),
            ("clip", t4 - t3),
            ("adamw", t5 - t4),
            ("step total", t5 - t0),
            ("inference", t6 - t5),
            ("inference int8", t7 - t6),
            ("inference, graph attention", t8 - t7),
            ("forward + backward", t2 - t0),
            ("forward + backward, graph attention", t9 - t8),
        ];
        if let Some((training, inference)) = &bf16 {
            let t0 = Instant::now();
            let _ = inference.logits(batch)?.to_vec2::<f32>()?;
            let t1 = Instant::now();
            let logits = training.classify(batch, &mut ForwardMode::train(step as u64))?;
            let loss = cross_entropy(&logits, labels)?;
            let _ = loss.to_scalar::<f32>()?;
            drop(loss.backward()?);
            let t2 = Instant::now();
            times.extend([
                ("inference bf16", t1 - t0),
                ("forward + backward bf16", t2 - t1),
            ]);
        }
        if step == 0 {
            continue; // warm-up
        }
        for (name, t) in times {
            let ms = t.as_secs_f64() * 1000.0;
            match phases.iter_mut().find(|(n, _)| *n == name) {
                Some((_, v)) => v.push(ms),
                None => phases.push((name, vec![ms])),
            }
        }
    }
    Ok(phases.into_iter().map(|(n, v)| (n, median(v))).collect())
}

/// Every architecture at the same shape, one row each.
fn architectures(batch_size: usize, seq: usize, steps: usize) -> Result<()> {
    let device = Device::Cpu;
    let (batch, labels) = random_batch(batch_size, seq, &device)?;
    println!(
        "random models of MiniLM's shape | batch {batch_size} x {seq} tokens | {steps} steps, median ms"
    );
    println!(
        "{:<12} {:>9} {:>9} {:>11} {:>10} {:>12} {:>10}",
        "model_type", "forward", "backward", "step total", "inference", "train tok/s", "vs bert"
    );
    let mut bert_rate = None;
    for (name, json) in shaped_configs() {
        let config: ModelConfig = serde_json::from_value(json)?;
        config.validate()?;
        let tensors = bertcls::testing::random_parameters(&config, 2, 0)?;
        let trainable = Trainable::new(&config, 2, &tensors)?;
        let phases = measure(&trainable, &batch, &labels, steps)?;
        let get = |p: &str| {
            phases
                .iter()
                .find(|(n, _)| *n == p)
                .map_or(0.0, |(_, v)| *v)
        };
        let rate = (batch_size * seq) as f64 / (get("step total") / 1000.0);
        let base = *bert_rate.get_or_insert(rate);
        println!(
            "{name:<12} {:>9.1} {:>9.1} {:>11.1} {:>10.1} {:>12.0} {:>9.2}x",
            get("forward"),
            get("backward"),
            get("step total"),
            get("inference"),
            rate,
            rate / base
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    bertcls::device::tune_cpu_runtime();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let num =
        |i: usize, default: usize| args.get(i).and_then(|v| v.parse().ok()).unwrap_or(default);
    if args.first().is_some_and(|a| a == "--architectures") {
        return architectures(num(1, 32), num(2, 64), num(3, 5));
    }
    let dir = match args.first() {
        Some(d) => d.into(),
        None => {
            let config = TrainConfig::load("configs/sentiment.toml".as_ref(), &[])?;
            bertcls::source::resolve_first(&config.model_name_or_path.to_vec())?
        }
    };
    let (batch_size, seq, steps) = (num(1, 32), num(2, 64), num(3, 5));
    let device = Device::Cpu;
    let config = ModelConfig::load(&dir)?;
    let loaded = weights::load(&dir, &config, 2, HeadInit::InitMissing(0), &device)?;
    let trainable = Trainable::new(&config, 2, &loaded.tensors)?;
    let (batch, labels) = random_batch(batch_size, seq, &device)?;
    let phases = measure(&trainable, &batch, &labels, steps)?;
    println!(
        "{} | batch {batch_size} x {seq} tokens | {steps} steps, median ms",
        dir.display()
    );
    for (name, v) in phases {
        println!("{name:<12} {v:>9.1}");
    }
    Ok(())
}
