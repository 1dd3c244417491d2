//! Where a training step's time goes, phase by phase, on the real all-MiniLM-L6-v2 (fetched
//! as `configs/sentiment.toml` says) or on any model folder given as the first argument.
//!
//!   cargo bench --bench step                 # batch 32 x 64 tokens, 5 steps
//!   cargo bench --bench step -- DIR 8 32 10  # model folder, batch, tokens, steps
//!
//! Prints the median of each phase: forward, backward, gradient accumulation, clipping,
//! AdamW, and inference (forward without gradients) at the same shape.

use std::time::Instant;

use anyhow::Result;
use bertcls::config::TrainConfig;
use bertcls::model::weights::{self, HeadInit};
use bertcls::model::{ForwardMode, ModelConfig, cross_entropy};
use bertcls::optim::{AdamW, AdamWConfig, Gradients};
use bertcls::tokenize::{Batch, Encoded};
use bertcls::train::Trainable;
use candle_core::{Device, Tensor};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    bertcls::device::tune_cpu_runtime();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let dir = match args.first() {
        Some(d) => d.into(),
        None => {
            let config = TrainConfig::load("configs/sentiment.toml".as_ref(), &[])?;
            bertcls::source::resolve_first(&config.model_name_or_path.to_vec())?
        }
    };
    let num =
        |i: usize, default: usize| args.get(i).and_then(|v| v.parse().ok()).unwrap_or(default);
    let (batch_size, seq, steps) = (num(1, 32), num(2, 64), num(3, 5));
    let device = Device::Cpu;
    let config = ModelConfig::load(&dir)?;
    let loaded = weights::load(&dir, &config, 2, HeadInit::InitMissing(0), &device)?;
    let trainable = Trainable::new(&config, 2, &loaded.tensors)?;
    let encoded: Vec<Encoded> = (0..batch_size)
        .map(|i| Encoded {
            ids: (0..seq)
                .map(|t| ((i * 131 + t * 31) % 20_000 + 1000) as u32)
                .collect(),
            type_ids: vec![0; seq],
        })
        .collect();
    let items: Vec<&Encoded> = encoded.iter().collect();
    let batch = Batch::collate(&items, 0, None, &device)?;
    let labels = Tensor::new(
        (0..batch_size as u32)
            .map(|i| i % 2)
            .collect::<Vec<_>>()
            .as_slice(),
        &device,
    )?;
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
    let mut phases: Vec<(&str, Vec<f64>)> = [
        "forward",
        "backward",
        "accumulate",
        "clip",
        "adamw",
        "step total",
        "inference",
    ]
    .into_iter()
    .map(|p| (p, Vec::new()))
    .collect();
    let detached = trainable.model.detached()?;
    for step in 0..steps + 1 {
        let t0 = Instant::now();
        let logits = trainable
            .model
            .classify(&batch, &mut ForwardMode::train(step as u64))?;
        let loss = cross_entropy(&logits, &labels)?;
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
        let _ = detached.logits(&batch)?.to_vec2::<f32>()?;
        let t6 = Instant::now();
        if step == 0 {
            continue; // warm-up
        }
        let times = [
            t1 - t0,
            t2 - t1,
            t3 - t2,
            t4 - t3,
            t5 - t4,
            t5 - t0,
            t6 - t5,
        ];
        for ((_, v), t) in phases.iter_mut().zip(times) {
            v.push(t.as_secs_f64() * 1000.0);
        }
    }
    println!(
        "{} | batch {batch_size} x {seq} tokens | {steps} steps, median ms",
        dir.display()
    );
    for (name, v) in phases {
        println!("{name:<12} {:>9.1}", median(v));
    }
    Ok(())
}
