//! Scoring texts with a fine-tuned model: batched inference in length order, and streaming a
//! data file through the model into an output file with every input column kept.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::Device;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::atomic::AtomicFile;
use crate::data::{Columns, Format, RawRecord, RowReader};
use crate::interrupt;
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
        self.probabilities_checked(encoded, progress, &mut || Ok(()))
    }

    /// As [`Self::probabilities`], calling `check` before each batch: an error from it stops
    /// the scoring (a signal asking the process to stop, say).
    pub fn probabilities_checked(
        &self,
        encoded: &[Encoded],
        progress: Option<&ProgressBar>,
        check: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Vec<Vec<f32>>> {
        let mut order: Vec<usize> = (0..encoded.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(encoded[i].ids.len()));
        let mut out = vec![Vec::new(); encoded.len()];
        for chunk in order.chunks(self.batch_size.max(1)) {
            check()?;
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
    pub on_error: OnError,
}

/// What to do with a row that cannot be scored (bad UTF-8, wrong field count, empty text...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OnError {
    /// Stop with an error naming the row's line (the output file is not written).
    #[default]
    Fail,
    /// Keep the row with an empty prediction, count it, and go on. Its fields are cut or
    /// padded to the header's width so that the prediction columns stay in place.
    SkipRow,
}

/// Column names added to the output.
pub const LABEL_COLUMN: &str = "predicted_label";
pub const PROBABILITY_COLUMN: &str = "probability";

#[derive(Debug, Clone, Serialize)]
pub struct PredictSummary {
    /// Rows written, skipped ones included.
    pub rows: usize,
    /// Rows kept with an empty prediction under `--on-error skip-row`, and the first error.
    pub skipped: usize,
    pub first_skipped: Option<String>,
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
            Self::Stdout(mut w) => w.flush().context("cannot write standard output"),
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

/// Writes each input row back with the prediction columns added.
struct RowWriter {
    sink: Sink,
    headers: Vec<String>,
    labels: Vec<String>,
    all_probabilities: bool,
    /// The input and output as named in messages.
    input: String,
    output: String,
    /// TSV output has no quoting: a field holding a tab or a line break cannot be written.
    tsv: bool,
}

/// What in `field` a TSV file cannot hold, if anything.
fn tsv_breaker(field: &str) -> Option<&'static str> {
    if field.contains('\t') {
        Some("a tab")
    } else if field.contains(['\n', '\r']) {
        Some("a line break")
    } else {
        None
    }
}

/// The error for a field a TSV output cannot hold. bertcls reads TSV as GLUE writes it, with
/// no quoting, and so do most readers: escaping would change the text in ways nothing reads
/// back, and a tab or line break kept as is would split the row.
fn tsv_error(place: String, what: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{place} holds {what}, which a TSV output cannot hold (TSV has no quoting): write CSV \
         or JSON Lines instead (name the output .csv or .jsonl, or pass --output-format)"
    )
}

impl RowWriter {
    /// The columns (or JSON fields) predict adds.
    fn added(&self) -> Vec<String> {
        let mut added = vec![LABEL_COLUMN.to_string(), PROBABILITY_COLUMN.to_string()];
        if self.all_probabilities {
            added.extend(self.labels.iter().map(|l| format!("prob_{l}")));
        }
        added
    }

    /// Checks that the header and the label names fit the output format, and writes the
    /// header of a CSV or TSV output.
    fn start(&mut self) -> Result<()> {
        let added = self.added();
        if let Some(clash) = self.headers.iter().find(|h| added.contains(h)) {
            bail!(
                "{}: input already has a column `{clash}`, which predict would add",
                self.input
            );
        }
        if self.tsv {
            for h in &self.headers {
                if let Some(what) = tsv_breaker(h) {
                    return Err(tsv_error(
                        format!("{}:1: the name of column `{h}`", self.input),
                        what,
                    ));
                }
            }
            for l in &self.labels {
                if let Some(what) = tsv_breaker(l) {
                    return Err(tsv_error(format!("the model's label `{l}`"), what));
                }
            }
        }
        let output = &self.output;
        if let Sink::Delimited(w) = &mut self.sink {
            w.write_record(self.headers.iter().chain(&added))
                .with_context(|| format!("cannot write {output}"))?;
        }
        Ok(())
    }

    /// Writes the row of input line `line`; `probs` is `None` for a row skipped for `error`.
    fn write(
        &mut self,
        line: u64,
        raw: RawRecord,
        probs: Option<&[f32]>,
        error: Option<&str>,
    ) -> Result<()> {
        let best = probs.map(argmax);
        let added = self.added();
        let output = &self.output;
        match (&mut self.sink, raw) {
            (Sink::Delimited(w), RawRecord::Fields(mut fields)) => {
                // A row read well has exactly the header's fields; a ragged one skipped
                // under skip-row is cut or padded so that no field lands under a prediction
                // column (the row is counted and reported as skipped).
                fields.resize(self.headers.len(), String::new());
                if self.tsv {
                    for (field, column) in fields.iter().zip(&self.headers) {
                        if let Some(what) = tsv_breaker(field) {
                            return Err(tsv_error(
                                format!("{}:{line}: column `{column}`", self.input),
                                what,
                            ));
                        }
                    }
                }
                match (probs, best) {
                    (Some(p), Some(b)) => {
                        fields.push(self.labels[b].clone());
                        fields.push(format!("{:.6}", p[b]));
                        if self.all_probabilities {
                            fields.extend(p.iter().map(|v| format!("{v:.6}")));
                        }
                    }
                    _ => fields.resize(fields.len() + added.len(), String::new()),
                }
                w.write_record(&fields)
                    .with_context(|| format!("cannot write {output}"))?;
            }
            (Sink::Jsonl(_), RawRecord::Fields(fields)) => {
                let object = self
                    .headers
                    .iter()
                    .cloned()
                    .zip(fields.into_iter().map(Value::String))
                    .collect();
                return self.write(line, RawRecord::Object(object), probs, error);
            }
            (Sink::Jsonl(_), RawRecord::Line(text)) => {
                let mut object = Map::new();
                object.insert("raw_line".into(), Value::String(text));
                return self.write(line, RawRecord::Object(object), probs, error);
            }
            (Sink::Jsonl(w), RawRecord::Object(mut object)) => {
                match (probs, best) {
                    (Some(p), Some(b)) => {
                        object.insert(added[0].clone(), Value::String(self.labels[b].clone()));
                        object.insert(added[1].clone(), Value::from(p[b] as f64));
                        for (name, v) in added[2..].iter().zip(p) {
                            object.insert(name.clone(), Value::from(*v as f64));
                        }
                    }
                    _ => {
                        for name in added {
                            object.insert(name, Value::Null);
                        }
                        if let Some(e) = error {
                            object.insert("error".into(), Value::String(e.to_string()));
                        }
                    }
                }
                serde_json::to_writer(&mut *w, &object)
                    .map_err(std::io::Error::from)
                    .and_then(|()| w.write_all(b"\n"))
                    .with_context(|| format!("cannot write {output}"))?;
            }
            (Sink::Delimited(_), _) => {
                bail!(
                    "JSON Lines input can only be written as JSON Lines (name the output .jsonl)"
                );
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<()> {
        let output = self.output;
        match self.sink {
            Sink::Delimited(w) => w
                .into_inner()
                .map_err(|e| anyhow::anyhow!("cannot write {output}: {}", e.error()))?
                .finish(),
            Sink::Jsonl(o) => o.finish(),
        }
    }
}

fn stream_name(path: &Path, stream: &str) -> String {
    if path.as_os_str() == "-" {
        stream.to_string()
    } else {
        path.display().to_string()
    }
}

/// The regular file behind `path`, or behind the standard stream `fd` for `-`.
fn file_id(path: &Path, fd: std::os::fd::BorrowedFd) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = if path.as_os_str() == "-" {
        std::fs::File::from(fd.try_clone_to_owned().ok()?)
            .metadata()
            .ok()?
    } else {
        std::fs::metadata(path).ok()?
    };
    // A terminal can be both standard input and output; only a regular file is clobbered.
    meta.is_file().then(|| (meta.dev(), meta.ino()))
}

/// Refuses to write the predictions over their own input, whether named by the same path, a
/// symbolic link, a hard link or a redirected standard stream: the output would replace (or,
/// appended to, grow under) the data being read.
fn refuse_same_file(input: &Path, output: &Path) -> Result<()> {
    use std::os::fd::AsFd;
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let same = match (
        file_id(input, stdin.as_fd()),
        file_id(output, stdout.as_fd()),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    };
    if same {
        bail!(
            "{}: is the input file {} itself; write the predictions to another file",
            stream_name(output, "standard output"),
            stream_name(input, "standard input")
        );
    }
    Ok(())
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
    if input_format == Format::Jsonl && output_format != Format::Jsonl {
        bail!("JSON Lines input can only be written as JSON Lines (name the output .jsonl)");
    }
    refuse_same_file(&opts.input, &opts.output)?;
    let output = Output::open(&opts.output)?;
    let sink = match output_format {
        Format::Jsonl => Sink::Jsonl(output),
        f => Sink::Delimited(Box::new(
            csv::WriterBuilder::new()
                .delimiter(if f == Format::Tsv { b'\t' } else { b',' })
                .quote_style(if f == Format::Tsv {
                    csv::QuoteStyle::Never
                } else {
                    csv::QuoteStyle::Necessary
                })
                .flexible(true)
                .from_writer(output),
        )),
    };
    let mut writer = RowWriter {
        sink,
        headers: reader.headers().to_vec(),
        labels: model.labels.names().to_vec(),
        all_probabilities: opts.all_probabilities,
        input: stream_name(&opts.input, "standard input"),
        output: stream_name(&opts.output, "standard output"),
        tsv: output_format == Format::Tsv,
    };
    writer.start()?;

    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {pos} rows scored [{elapsed}] {per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let scorer = Scorer::for_model(model, opts.batch_size, device);
    let stopped = || {
        if opts.output.as_os_str() == "-" {
            "the predictions on standard output are incomplete".to_string()
        } else if opts.output.exists() {
            format!("{} is left as it was", opts.output.display())
        } else {
            format!("{} was not written", opts.output.display())
        }
    };
    let mut check = || Ok(interrupt::check(stopped)?);
    let start = Instant::now();
    let (mut rows, mut skipped, mut first_skipped) = (0usize, 0usize, None);
    let chunk_rows = opts.chunk_rows.max(1);
    loop {
        check()?;
        let mut chunk = Vec::with_capacity(chunk_rows);
        while chunk.len() < chunk_rows {
            match reader.next_record()? {
                Some(record) => chunk.push(record),
                None => break,
            }
        }
        if chunk.is_empty() {
            break;
        }
        let mut inputs = Vec::with_capacity(chunk.len());
        for record in &chunk {
            match &record.row {
                Ok(row) => inputs.push((row.text.as_str(), row.text_pair.as_deref())),
                Err(e) if opts.on_error == OnError::SkipRow => {
                    skipped += 1;
                    first_skipped.get_or_insert_with(|| e.to_string());
                }
                Err(e) => bail!("{e} (pass --on-error skip-row to keep going)"),
            }
        }
        let encoded = model
            .tokenizer
            .encode(&inputs)
            .with_context(|| format!("{}: cannot tokenize", opts.input.display()))?;
        let mut probs = scorer
            .probabilities_checked(&encoded, Some(&bar), &mut check)?
            .into_iter();
        for record in chunk {
            match record.row {
                Ok(_) => {
                    let p = probs.next().context("a prediction per scored row")?;
                    writer.write(record.line, record.raw, Some(&p), None)?;
                }
                Err(e) => writer.write(record.line, record.raw, None, Some(&e.to_string()))?,
            }
            rows += 1;
        }
    }
    bar.finish_and_clear();
    if rows == 0 {
        bail!("{}: has no data rows", opts.input.display());
    }
    writer.finish()?;
    let seconds = start.elapsed().as_secs_f64();
    Ok(PredictSummary {
        rows,
        skipped,
        first_skipped,
        seconds,
        examples_per_second: (rows - skipped) as f64 / seconds.max(1e-9),
    })
}
