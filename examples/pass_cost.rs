use bertcls::infer::{Batching, Classifier, LoadOptions};
use bertcls::tokenize::Encoded;
use std::time::Instant;
fn main() -> anyhow::Result<()> {
    bertcls::device::tune_cpu_runtime();
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap());
    let c = Classifier::load(&dir, &LoadOptions::cpu())?;
    for &(rows, len) in &[
        (1usize, 8usize),
        (1, 16),
        (1, 25),
        (1, 48),
        (4, 25),
        (8, 25),
        (16, 25),
        (32, 25),
        (64, 25),
        (64, 50),
        (16, 50),
    ] {
        let e: Vec<Encoded> = (0..rows)
            .map(|_| Encoded {
                ids: vec![1000; len],
                type_ids: vec![0; len],
            })
            .collect();
        c.logits(&e, Batching::rows(64))?;
        let n = 20;
        let t = Instant::now();
        for _ in 0..n {
            c.logits(&e, Batching::rows(64))?;
        }
        let ms = t.elapsed().as_secs_f64() * 1000.0 / n as f64;
        println!(
            "{rows:>3} x {len:>3}: {ms:7.2} ms  {:7.1} us/token",
            ms * 1000.0 / (rows * len) as f64
        );
    }
    Ok(())
}
