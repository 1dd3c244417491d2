//! `bertcls serve`: arguments, logging set-up and the readiness line.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use crate::device;
use crate::limits;
use crate::serve::{ApiKey, ServeOptions};

/// Where the API key may also come from, kept out of the command line (and `ps`).
pub const API_KEY_VARIABLE: &str = "BERTCLS_API_KEY";

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Fine-tuned model: a folder written by `bertcls train` or transformers, or any source.
    #[arg(long)]
    pub model: String,
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Truncation length (default: the one the model was trained with).
    #[arg(long)]
    pub max_seq_length: Option<usize>,
    #[command(flatten)]
    pub precision: super::PrecisionArgs,
    /// Address to listen on; 0.0.0.0 exposes the server to the network.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// 0 picks a free port (the readiness line names it).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Most padded tokens (inputs × longest input) per forward pass.
    #[arg(long, default_value_t = 16384)]
    pub max_batch_tokens: usize,
    /// Most inputs per forward pass.
    #[arg(long, default_value_t = 64)]
    pub max_batch_requests: usize,
    /// Requests answered at once; more are refused with 429.
    #[arg(long, default_value_t = 512)]
    pub max_concurrent_requests: usize,
    /// Most inputs in one request.
    #[arg(long, default_value_t = 32)]
    pub max_client_batch_size: usize,
    /// Largest request body in bytes; larger ones are refused with 413.
    #[arg(long, default_value_t = 2_000_000)]
    pub payload_limit: usize,
    /// Open connections at once; more wait until one closes.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Seconds a client has to send its headers, and then its body.
    #[arg(long, default_value_t = 30)]
    pub request_timeout: u64,
    /// Require `Authorization: Bearer KEY` (except on /health). Prefer the BERTCLS_API_KEY
    /// variable: other users of the machine can read a command line.
    #[arg(long, value_parser = |key: &str| Ok::<_, String>(ApiKey::new(key.to_string())))]
    pub api_key: Option<ApiKey>,
    #[arg(long, value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Off,
    Error,
    Warn,
    /// One line per request.
    Info,
    Debug,
}

fn init_logging(level: LogLevel) {
    let level = match level {
        LogLevel::Off => return,
        LogLevel::Error => tracing::Level::ERROR,
        LogLevel::Warn => tracing::Level::WARN,
        LogLevel::Info => tracing::Level::INFO,
        LogLevel::Debug => tracing::Level::DEBUG,
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn api_key(args: &ServeArgs) -> Result<Option<ApiKey>> {
    let key = match &args.api_key {
        Some(key) => Some(key.expose().to_string()),
        None => match std::env::var(API_KEY_VARIABLE) {
            Ok(key) => Some(key),
            Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(_)) => {
                bail!("{API_KEY_VARIABLE} is not valid UTF-8")
            }
        },
    };
    // A key is sent in a header: it must be a header value's visible characters.
    match key.map(|k| k.trim().to_string()) {
        Some(k) if k.is_empty() => bail!("the API key is empty"),
        Some(k) if !k.bytes().all(|b| b.is_ascii_graphic()) => {
            bail!("the API key holds spaces or control characters (its value is not shown)")
        }
        key => Ok(key.map(ApiKey::new)),
    }
}

fn options(args: &ServeArgs, model_length: usize) -> Result<ServeOptions> {
    for (flag, value) in [
        ("--max-batch-tokens", args.max_batch_tokens),
        ("--max-batch-requests", args.max_batch_requests),
        ("--max-concurrent-requests", args.max_concurrent_requests),
        ("--max-client-batch-size", args.max_client_batch_size),
        ("--payload-limit", args.payload_limit),
        ("--max-connections", args.max_connections),
    ] {
        if value == 0 {
            bail!("{flag} must be at least 1");
        }
    }
    if args.max_batch_tokens > limits::MAX_BATCH_TOKENS {
        bail!(
            "--max-batch-tokens {} is over the limit of {}",
            args.max_batch_tokens,
            limits::MAX_BATCH_TOKENS
        );
    }
    if args.max_batch_tokens < model_length {
        bail!(
            "--max-batch-tokens {} is below the model's input length {model_length}: one \
             input must fit a batch",
            args.max_batch_tokens
        );
    }
    if args.request_timeout == 0 {
        bail!("--request-timeout must be at least 1 second");
    }
    Ok(ServeOptions {
        addr: SocketAddr::new(args.host, args.port),
        model_id: args.model.clone(),
        max_batch_tokens: args.max_batch_tokens,
        max_batch_requests: args.max_batch_requests,
        max_concurrent_requests: args.max_concurrent_requests,
        max_client_batch_size: args.max_client_batch_size,
        payload_limit: args.payload_limit,
        max_connections: args.max_connections,
        request_timeout: Duration::from_secs(args.request_timeout),
        api_key: api_key(args)?,
    })
}

pub fn serve(args: ServeArgs) -> Result<()> {
    init_logging(args.log_level);
    let classifier = super::load_classifier(
        &args.model,
        &args.device,
        args.max_seq_length,
        &args.precision,
    )?;
    let options = options(&args, classifier.max_length())?;
    eprintln!(
        "bertcls serve: {} ({}, {} labels, max {} tokens) on {}",
        crate::terminal::printable(&classifier.dir().display().to_string()),
        classifier.task().problem_type(),
        classifier.labels().len(),
        classifier.max_length(),
        device::describe(classifier.device())
    );
    if !options.addr.ip().is_loopback() && options.api_key.is_none() {
        eprintln!(
            "bertcls serve: warning: listening on {} without an API key: anyone who can reach \
             it can use the model (set {API_KEY_VARIABLE})",
            options.addr.ip()
        );
    }
    crate::serve::run(classifier, options, |addr| {
        eprintln!("bertcls serve: listening on http://{addr}");
    })
    .context("bertcls serve")
}
