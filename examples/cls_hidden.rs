//! Prints the encoder's final [CLS] hidden state for each line of a text file, as JSON (one
//! array per line), for comparison with transformers (scripts/reference/interop.py).
//!
//!   cargo run --release --example cls_hidden -- MODEL_SOURCE TEXTS.txt

use anyhow::{Context, Result};
use bertcls::model::weights::{self, HeadInit};
use bertcls::model::{ForwardMode, ModelConfig, SequenceClassifier};
use bertcls::tokenize::{Batch, Input, TextEncoder};
use candle_core::Device;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (source, texts) = match args.as_slice() {
        [s, t] => (s.clone(), t.clone()),
        _ => anyhow::bail!("usage: cls_hidden MODEL_SOURCE TEXTS.txt"),
    };
    let dir = bertcls::source::resolve_first(&[source])?;
    let text = std::fs::read_to_string(&texts).with_context(|| format!("cannot read {texts}"))?;
    let lines: Vec<Input> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(Input::from)
        .collect();
    let config = ModelConfig::load(&dir)?;
    // A base model has no head: give it one (unused here) so the classifier can be built.
    let loaded = weights::load(&dir, &config, 2, HeadInit::InitMissing(0), &Device::Cpu)?;
    let model = SequenceClassifier::from_tensors(&config, 2, &loaded.tensors)?;
    let tokenizer = TextEncoder::load(&dir, config.max_position_embeddings)?;
    let encoded = tokenizer.encode(&lines)?;
    let items: Vec<_> = encoded.iter().collect();
    let batch = Batch::collate(&items, tokenizer.pad_id(), None, &Device::Cpu)?;
    let hidden = model.forward(&batch, &mut ForwardMode::eval())?.hidden;
    let cls = hidden.narrow(1, 0, 1)?.squeeze(1)?.to_vec2::<f32>()?;
    println!("{}", serde_json::to_string(&cls)?);
    Ok(())
}
