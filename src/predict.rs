//! `predict`: streaming a data file through a classifier into an output file with every input
//! column kept and the task's columns added, and scoring texts given on the command line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::atomic::AtomicFile;
use crate::data::{Columns, Format, LabelSet, RawRecord, RowReader};
use crate::infer::{Batching, Classifier};
use crate::interrupt;
use crate::task::{Prediction, Task};
use crate::tokenize::Input;

/// One prediction for `--text`: the text and the task's answer, with label names.
#[derive(Debug, Clone, Serialize)]
pub struct TextPrediction {
    pub text: String,
    #[serde(flatten)]
    pub answer: Answer,
}

/// A task's answer for one input, with label names: what `predict --text` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Answer {
    /// Single-label: the most probable label, its probability, and every label's.
    Label {
        label: String,
        probability: f32,
        probabilities: Vec<f32>,
    },
    /// Multi-label: the labels at or over their threshold, and every label's probability.
    Labels {
        labels: Vec<String>,
        probabilities: Vec<f32>,
    },
    /// Regression with one output.
    Value { value: f32 },
    /// Regression with several outputs, one value each.
    Values { values: Vec<f32> },
}

impl Answer {
    pub fn new(prediction: Prediction, labels: &LabelSet) -> Self {
        match prediction {
            Prediction::SingleLabel {
                label,
                probabilities,
            } => Self::Label {
                label: labels.name(label).to_string(),
                probability: probabilities[label],
                probabilities,
            },
            Prediction::MultiLabel {
                probabilities,
                labels: chosen,
            } => Self::Labels {
                labels: chosen.iter().map(|&i| labels.name(i).to_string()).collect(),
                probabilities,
            },
            Prediction::Regression { values } if values.len() == 1 => {
                Self::Value { value: values[0] }
            }
            Prediction::Regression { values } => Self::Values { values },
        }
    }
}

/// Scores a few texts held in memory.
pub fn predict_texts(
    classifier: &Classifier,
    texts: &[String],
    batching: Batching,
) -> Result<Vec<TextPrediction>> {
    let inputs: Vec<Input> = texts.iter().map(|t| Input::from(t.as_str())).collect();
    let predictions = classifier.predict(&inputs, batching)?;
    Ok(texts
        .iter()
        .zip(predictions)
        .map(|(text, p)| TextPrediction {
            text: text.clone(),
            answer: Answer::new(p, classifier.labels()),
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
    pub batching: Batching,
    /// Add one `prob_<label>` column per label (classification tasks).
    pub all_probabilities: bool,
    /// Joins a multi-label row's labels in `predicted_labels` (CSV and TSV outputs).
    pub label_delimiter: String,
    /// Rows read, scored and written at a time: bounds memory whatever the file size.
    pub chunk_rows: usize,
    pub on_error: OnError,
}

/// What to do with a row that cannot be scored (bad UTF-8, wrong field count, empty text...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Stop with an error naming the row's line (the output file is not written).
    #[default]
    Fail,
    /// Keep the row with an empty prediction, count it, and go on. Its fields are cut or
    /// padded to the header's width so that the prediction columns stay in place.
    SkipRow,
}

/// Column names added to the output, by task.
pub const LABEL_COLUMN: &str = "predicted_label";
pub const PROBABILITY_COLUMN: &str = "probability";
pub const LABELS_COLUMN: &str = "predicted_labels";
pub const PREDICTION_COLUMN: &str = "prediction";

/// One added cell, before it is written as a CSV field or a JSON value.
enum Cell {
    Text(String),
    Number(f32),
    List(Vec<String>),
}

/// The columns predict adds for a model's task, and their cells for one prediction.
struct AddedColumns {
    names: Vec<String>,
    labels: Vec<String>,
    all_probabilities: bool,
}

impl AddedColumns {
    fn new(task: &Task, labels: &LabelSet, all_probabilities: bool) -> Self {
        let labels = labels.names().to_vec();
        let mut names = match task {
            Task::SingleLabel => vec![LABEL_COLUMN.to_string(), PROBABILITY_COLUMN.to_string()],
            Task::MultiLabel { .. } => vec![LABELS_COLUMN.to_string()],
            Task::Regression if labels.len() == 1 => vec![PREDICTION_COLUMN.to_string()],
            Task::Regression => labels
                .iter()
                .map(|l| format!("{PREDICTION_COLUMN}_{l}"))
                .collect(),
        };
        let all_probabilities = all_probabilities && !matches!(task, Task::Regression);
        if all_probabilities {
            names.extend(labels.iter().map(|l| format!("prob_{l}")));
        }
        Self {
            names,
            labels,
            all_probabilities,
        }
    }

    fn cells(&self, prediction: &Prediction) -> Vec<Cell> {
        let mut cells = match prediction {
            Prediction::SingleLabel {
                label,
                probabilities,
            } => vec![
                Cell::Text(self.labels[*label].clone()),
                Cell::Number(probabilities[*label]),
            ],
            Prediction::MultiLabel { labels, .. } => vec![Cell::List(
                labels.iter().map(|&i| self.labels[i].clone()).collect(),
            )],
            Prediction::Regression { values } => values.iter().map(|&v| Cell::Number(v)).collect(),
        };
        if self.all_probabilities {
            cells.extend(prediction.scores().iter().map(|&p| Cell::Number(p)));
        }
        cells
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PredictSummary {
    /// Rows written, skipped ones included.
    pub rows: usize,
    /// Rows kept with an empty prediction under `--on-error skip-row`, and the first error.
    pub skipped: usize,
    pub first_skipped: Option<String>,
    pub seconds: f64,
    pub examples_per_second: f64,
    /// The forward passes alone (padding the batches, the model, reading the logits back):
    /// what a benchmark compares with another engine's model time.
    pub model_seconds: f64,
    pub model_examples_per_second: f64,
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
    added: AddedColumns,
    /// Joins a multi-label row's labels in a CSV or TSV field.
    label_delimiter: String,
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
    /// Checks that the header and the label names fit the output format, and writes the
    /// header of a CSV or TSV output.
    fn start(&mut self) -> Result<()> {
        let added = &self.added.names;
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
            for l in &self.added.labels {
                if let Some(what) = tsv_breaker(l) {
                    return Err(tsv_error(format!("the model's label `{l}`"), what));
                }
            }
        }
        let output = &self.output;
        if let Sink::Delimited(w) = &mut self.sink {
            if self.added.names.iter().any(|n| n == LABELS_COLUMN)
                && let Some(l) = self
                    .added
                    .labels
                    .iter()
                    .find(|l| l.contains(self.label_delimiter.as_str()))
            {
                bail!(
                    "the model's label `{l}` holds the label delimiter `{}`, so predicted_labels \
                     could not be read back: pass another --label-delimiter, or write JSON Lines",
                    self.label_delimiter
                );
            }
            w.write_record(self.headers.iter().chain(added.iter()))
                .with_context(|| format!("cannot write {output}"))?;
        }
        Ok(())
    }

    /// Writes the row of input line `line`; `prediction` is `None` for a row skipped for
    /// `error`.
    fn write(
        &mut self,
        line: u64,
        raw: RawRecord,
        prediction: Option<&Prediction>,
        error: Option<&str>,
    ) -> Result<()> {
        let cells = prediction.map(|p| self.added.cells(p));
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
                match cells {
                    Some(cells) => fields.extend(cells.into_iter().map(|c| match c {
                        Cell::Text(t) => t,
                        Cell::Number(v) => format!("{v:.6}"),
                        Cell::List(items) => items.join(&self.label_delimiter),
                    })),
                    None => fields.resize(fields.len() + self.added.names.len(), String::new()),
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
                return self.write(line, RawRecord::Object(object), prediction, error);
            }
            (Sink::Jsonl(_), RawRecord::Line(text)) => {
                let mut object = Map::new();
                object.insert("raw_line".into(), Value::String(text));
                return self.write(line, RawRecord::Object(object), prediction, error);
            }
            (Sink::Jsonl(w), RawRecord::Object(mut object)) => {
                match cells {
                    Some(cells) => {
                        for (name, cell) in self.added.names.iter().zip(cells) {
                            let value = match cell {
                                Cell::Text(t) => Value::String(t),
                                Cell::Number(v) => Value::from(v as f64),
                                Cell::List(items) => {
                                    Value::Array(items.into_iter().map(Value::String).collect())
                                }
                            };
                            object.insert(name.clone(), value);
                        }
                    }
                    None => {
                        for name in &self.added.names {
                            object.insert(name.clone(), Value::Null);
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
pub fn predict_file(classifier: &Classifier, opts: &PredictOptions) -> Result<PredictSummary> {
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
        added: AddedColumns::new(
            classifier.task(),
            classifier.labels(),
            opts.all_probabilities,
        ),
        label_delimiter: opts.label_delimiter.clone(),
        input: stream_name(&opts.input, "standard input"),
        output: stream_name(&opts.output, "standard output"),
        tsv: output_format == Format::Tsv,
    };
    writer.start()?;

    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {pos} rows scored [{elapsed}] {per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let stopped = || {
        if opts.output.as_os_str() == "-" {
            "the predictions on standard output are incomplete".to_string()
        } else if opts.output.exists() {
            format!("{} is left as it was", opts.output.display())
        } else {
            format!("{} was not written", opts.output.display())
        }
    };
    let check = || Ok(interrupt::check(stopped)?);
    let start = Instant::now();
    let (mut rows, mut skipped, mut first_skipped) = (0usize, 0usize, None);
    let mut model_seconds = 0.0;
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
                Ok(row) => inputs.push(Input::from(row)),
                Err(e) if opts.on_error == OnError::SkipRow => {
                    skipped += 1;
                    first_skipped.get_or_insert_with(|| e.to_string());
                }
                Err(e) => bail!("{e} (pass --on-error skip-row to keep going)"),
            }
        }
        let encoded = classifier
            .encode(&inputs)
            .with_context(|| format!("{}: cannot tokenize", opts.input.display()))?;
        let model_start = Instant::now();
        let logits = classifier.logits_observed(&encoded, opts.batching, &mut |rows| {
            bar.inc(rows as u64);
            check()
        })?;
        model_seconds += model_start.elapsed().as_secs_f64();
        let mut predictions = logits
            .into_iter()
            .map(|logits| classifier.task().predict(&logits));
        for record in chunk {
            match record.row {
                Ok(_) => {
                    let p = predictions.next().context("a prediction per scored row")?;
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
        model_seconds,
        model_examples_per_second: (rows - skipped) as f64 / model_seconds.max(1e-9),
    })
}
