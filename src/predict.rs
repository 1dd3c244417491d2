//! Scoring texts with a fine-tuned model: batched inference in length order, and streaming a
//! data file through the model into an output file with every input column kept.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::Device;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::Value;

use crate::atomic::AtomicFile;
use crate::data::{Columns, Format, RawRecord, RowReader};
use crate::model::{BertClassifier, FineTuned};
use crate::tokenize::{Batch, Encoded};

/// A model set up for batched inference.
pub struct Scorer<'a> {
    /// Should be detached from any gradient graph (see [`BertClassifier::detached`]).
    pub model: &'a BertClassifier,
    pub pad_id: u32,
    pub batch_size: usize,
    pub device: &'a Device,
}

impl Scorer<'_> {
    pub fn for_model<'a>(
        model: &'a FineTuned,
        batch_size: usize,
        device: &'a Device,
    ) -> Scorer<'a> {
        Scorer {
            model: &model.model,
            pad_id: model.tokenizer.pad_id(),
            batch_size,
            device,
        }
    }

    /// Class probabilities for each input, in input order. Inputs are batched longest first
    /// so that each batch holds similar lengths and little padding.
    pub fn probabilities(
        &self,
        encoded: &[Encoded],
        progress: Option<&ProgressBar>,
    ) -> Result<Vec<Vec<f32>>> {
        let mut order: Vec<usize> = (0..encoded.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(encoded[i].ids.len()));
        let mut out = vec![Vec::new(); encoded.len()];
        for chunk in order.chunks(self.batch_size.max(1)) {
            let items: Vec<&Encoded> = chunk.iter().map(|&i| &encoded[i]).collect();
            let batch = Batch::collate(&items, self.pad_id, None, self.device)?;
            let logits = self
                .model
                .logits(&batch)?
                .to_dtype(candle_core::DType::F32)?;
            let probs = candle_nn::ops::softmax_last_dim(&logits)?.to_vec2::<f32>()?;
            for (&i, p) in chunk.iter().zip(probs) {
                out[i] = p;
            }
            if let Some(bar) = progress {
                bar.inc(chunk.len() as u64);
            }
        }
        Ok(out)
    }
}

/// Index of the largest probability.
pub fn argmax(probs: &[f32]) -> usize {
    probs
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

/// One prediction for `--text`.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub text: String,
    pub label: String,
    pub probability: f32,
    pub probabilities: Vec<f32>,
}

/// Scores a few texts held in memory.
pub fn predict_texts(
    model: &FineTuned,
    texts: &[String],
    batch_size: usize,
    device: &Device,
) -> Result<Vec<Prediction>> {
    let inputs: Vec<(&str, Option<&str>)> = texts.iter().map(|t| (t.as_str(), None)).collect();
    let encoded = model.tokenizer.encode(&inputs)?;
    let probs = Scorer::for_model(model, batch_size, device).probabilities(&encoded, None)?;
    Ok(texts
        .iter()
        .zip(probs)
        .map(|(text, p)| {
            let best = argmax(&p);
            Prediction {
                text: text.clone(),
                label: model.labels.name(best).to_string(),
                probability: p[best],
                probabilities: p,
            }
        })
        .collect())
}

pub struct PredictOptions {
    /// Input file, or `-` for standard input.
    pub input: PathBuf,
    /// Output file, or `-` for standard output.
    pub output: PathBuf,
    /// Format of the input; defaults to the input's extension (CSV for `-`).
    pub input_format: Option<Format>,
    /// Format of the output; defaults to the output's extension, else the input's format.
    pub output_format: Option<Format>,
    pub text_column: String,
    pub text_pair_column: Option<String>,
    pub batch_size: usize,
    /// Add one `prob_<label>` column per class.
    pub all_probabilities: bool,
    /// Rows read, scored and written at a time: bounds memory whatever the file size.
    pub chunk_rows: usize,
}

/// Column names added to the output.
pub const LABEL_COLUMN: &str = "predicted_label";
pub const PROBABILITY_COLUMN: &str = "probability";

#[derive(Debug, Clone, Serialize)]
pub struct PredictSummary {
    pub rows: usize,
    pub seconds: f64,
    pub examples_per_second: f64,
}

/// Where predictions go: standard output, or a file that appears only when complete.
enum Output {
    Stdout(std::io::BufWriter<std::io::Stdout>),
    File(AtomicFile),
}

impl Output {
    fn open(path: &Path) -> Result<Self> {
        if path.as_os_str() == "-" {
            Ok(Self::Stdout(std::io::BufWriter::new(std::io::stdout())))
        } else {
            Ok(Self::File(AtomicFile::create(path)?))
        }
    }

    fn finish(self) -> Result<()> {
        match self {
            Self::Stdout(mut w) => Ok(w.flush()?),
            Self::File(f) => f.commit(),
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Stdout(w) => w.write(buf),
            Self::File(f) => f.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Stdout(w) => w.flush(),
            Self::File(f) => f.flush(),
        }
    }
}

enum Sink {
    Delimited(Box<csv::Writer<Output>>),
    Jsonl(Output),
}

impl Sink {
    fn finish(self) -> Result<()> {
        match self {
            Self::Delimited(w) => w
                .into_inner()
                .map_err(|e| anyhow::anyhow!("cannot write output: {}", e.error()))?
                .finish(),
            Self::Jsonl(o) => o.finish(),
        }
    }
}

fn resolve_format(path: &Path, given: Option<Format>, fallback: Format) -> Result<Format> {
    match given {
        Some(f) => Ok(f),
        None if path.as_os_str() == "-" => Ok(fallback),
        None => Ok(Format::from_path(path).unwrap_or(fallback)),
    }
}

/// Streams `input` through the model into `output`: one output row per input row, in the
/// same order, every input column kept, plus the predicted label and its probability. The
/// output file appears only once complete.
pub fn predict_file(
    model: &FineTuned,
    opts: &PredictOptions,
    device: &Device,
) -> Result<PredictSummary> {
    let input_format = match opts.input_format {
        Some(f) => f,
        None if opts.input.as_os_str() == "-" => Format::Csv,
        None => Format::from_path(&opts.input)?,
    };
    let output_format = resolve_format(&opts.output, opts.output_format, input_format)?;
    let columns = Columns {
        text: opts.text_column.clone(),
        text_pair: opts.text_pair_column.clone(),
        label: None,
    };
    let mut reader = RowReader::open(&opts.input, input_format, &columns)?;
    let labels = model.labels.names();
    let mut added = vec![LABEL_COLUMN.to_string(), PROBABILITY_COLUMN.to_string()];
    if opts.all_probabilities {
        added.extend(labels.iter().map(|l| format!("prob_{l}")));
    }
    if let Some(clash) = reader.headers().iter().find(|h| added.contains(h)) {
        bail!(
            "{}: input already has a column `{clash}`, which predict would add",
            opts.input.display()
        );
    }
    if input_format == Format::Jsonl && output_format != Format::Jsonl {
        bail!("JSON Lines input can only be written as JSON Lines (name the output .jsonl)");
    }
    let output = Output::open(&opts.output)?;
    let mut sink = match output_format {
        Format::Jsonl => Sink::Jsonl(output),
        f => {
            let mut w = csv::WriterBuilder::new()
                .delimiter(if f == Format::Tsv { b'\t' } else { b',' })
                .quote_style(if f == Format::Tsv {
                    csv::QuoteStyle::Never
                } else {
                    csv::QuoteStyle::Necessary
                })
                .from_writer(output);
            let header: Vec<&str> = reader
                .headers()
                .iter()
                .map(String::as_str)
                .chain(added.iter().map(String::as_str))
                .collect();
            w.write_record(&header)?;
            Sink::Delimited(Box::new(w))
        }
    };

    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {pos} rows scored [{elapsed}] {per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let scorer = Scorer::for_model(model, opts.batch_size, device);
    let start = Instant::now();
    let mut rows = 0usize;
    let chunk_rows = opts.chunk_rows.max(1);
    loop {
        let mut chunk = Vec::with_capacity(chunk_rows);
        while chunk.len() < chunk_rows {
            match reader.next_row()? {
                Some(row) => chunk.push(row),
                None => break,
            }
        }
        if chunk.is_empty() {
            break;
        }
        let inputs: Vec<(&str, Option<&str>)> = chunk
            .iter()
            .map(|(r, _)| (r.text.as_str(), r.text_pair.as_deref()))
            .collect();
        let encoded = model
            .tokenizer
            .encode(&inputs)
            .with_context(|| format!("{}: cannot tokenize", opts.input.display()))?;
        let probs = scorer.probabilities(&encoded, Some(&bar))?;
        for ((_, raw), p) in chunk.into_iter().zip(probs) {
            let best = argmax(&p);
            let mut extra = vec![labels[best].clone(), format!("{:.6}", p[best])];
            if opts.all_probabilities {
                extra.extend(p.iter().map(|v| format!("{v:.6}")));
            }
            write_row(
                &mut sink,
                raw,
                reader.headers(),
                &added,
                extra,
                &p,
                opts.all_probabilities,
            )?;
        }
        rows += encoded.len();
    }
    bar.finish_and_clear();
    if rows == 0 {
        bail!("{}: has no data rows", opts.input.display());
    }
    sink.finish()?;
    let seconds = start.elapsed().as_secs_f64();
    Ok(PredictSummary {
        rows,
        seconds,
        examples_per_second: rows as f64 / seconds.max(1e-9),
    })
}

fn write_row(
    sink: &mut Sink,
    raw: RawRecord,
    headers: &[String],
    added: &[String],
    extra: Vec<String>,
    probs: &[f32],
    all: bool,
) -> Result<()> {
    match (sink, raw) {
        (Sink::Delimited(w), RawRecord::Fields(mut fields)) => {
            fields.extend(extra);
            w.write_record(&fields)?;
        }
        (Sink::Jsonl(w), RawRecord::Object(mut object)) => {
            object.insert(added[0].clone(), Value::String(extra[0].clone()));
            object.insert(added[1].clone(), Value::from(probs[argmax(probs)] as f64));
            if all {
                for (name, p) in added[2..].iter().zip(probs) {
                    object.insert(name.clone(), Value::from(*p as f64));
                }
            }
            serde_json::to_writer(&mut *w, &object)?;
            w.write_all(b"\n")?;
        }
        (sink @ Sink::Jsonl(_), RawRecord::Fields(fields)) => {
            let object = headers
                .iter()
                .cloned()
                .zip(fields.into_iter().map(Value::String))
                .collect();
            return write_row(
                sink,
                RawRecord::Object(object),
                headers,
                added,
                extra,
                probs,
                all,
            );
        }
        (Sink::Delimited(_), RawRecord::Object(_)) => {
            bail!("JSON Lines input can only be written as JSON Lines (name the output .jsonl)");
        }
    }
    Ok(())
}
