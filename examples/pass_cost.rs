//! What a forward pass costs by its shape: milliseconds and microseconds per token for
//! passes of 1 to 64 inputs of 8 to 50 tokens, on the CPU. The fixed part of a pass (the
//! one-input rows) against the per-token part (the 64-input rows) is where
//! `infer::plan_passes` cuts a batch of mixed lengths.
//!
//!   cargo run --release --example pass_cost -- runs/sentiment

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use bertcls::infer::{Batching, Classifier, LoadOptions};
use bertcls::tokenize::Encoded;

const SHAPES: [(usize, usize); 10] = [
    (1, 8),
    (1, 16),
    (1, 32),
    (1, 48),
    (4, 25),
    (16, 25),
    (64, 25),
    (16, 50),
    (64, 50),
    (64, 64),
];

fn main() -> anyhow::Result<()> {
    bertcls::device::tune_cpu_runtime();
    let dir = PathBuf::from(std::env::args().nth(1).context("give a model folder")?);
    let classifier = Classifier::load(&dir, &LoadOptions::cpu())?;
    // Any id the vocabulary has: the cost does not depend on which.
    let id = classifier.tokenizer().unk_id().unwrap_or(0);
    for (rows, len) in SHAPES {
        let inputs: Vec<Encoded> = (0..rows)
            .map(|_| Encoded {
                ids: vec![id; len],
                type_ids: vec![0; len],
            })
            .collect();
        let batching = Batching::rows(rows);
        classifier.logits(&inputs, batching)?;
        let runs = 10;
        let start = Instant::now();
        for _ in 0..runs {
            classifier.logits(&inputs, batching)?;
        }
        let ms = start.elapsed().as_secs_f64() * 1000.0 / runs as f64;
        let per_token = ms * 1000.0 / (rows * len) as f64;
        println!("{rows:>3} x {len:>3} tokens: {ms:8.2} ms  {per_token:7.1} us/token");
    }
    Ok(())
}
