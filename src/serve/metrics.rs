//! The server's Prometheus metrics (`GET /metrics`, text format).

use anyhow::Result;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

pub struct Metrics {
    registry: Registry,
    /// Answered requests by route and status code.
    pub requests: IntCounterVec,
    /// Failed requests by `error_type`.
    pub failures: IntCounterVec,
    /// `/predict` requests holding a permit: reading, queued or being scored.
    pub in_progress: IntGauge,
    pub request_seconds: Histogram,
    /// From a request's arrival in the queue to the start of its batch's inference.
    pub queue_seconds: Histogram,
    /// One batch's inference, all its forward passes.
    pub inference_seconds: Histogram,
    /// Inputs in one batch.
    pub batch_size: Histogram,
    /// Tokens (without padding) in one batch.
    pub batch_tokens: Histogram,
}

fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Result<Histogram> {
    Ok(Histogram::with_opts(
        HistogramOpts::new(name, help).buckets(buckets),
    )?)
}

impl Metrics {
    pub fn new() -> Result<Self> {
        let seconds = prometheus::exponential_buckets(0.000_5, 2.0, 16)?;
        let sizes = prometheus::exponential_buckets(1.0, 2.0, 11)?;
        let tokens = prometheus::exponential_buckets(16.0, 2.0, 14)?;
        let metrics = Self {
            registry: Registry::new(),
            requests: IntCounterVec::new(
                Opts::new("bertcls_requests_total", "Requests answered"),
                &["route", "status"],
            )?,
            failures: IntCounterVec::new(
                Opts::new("bertcls_request_failures_total", "Requests that failed"),
                &["error_type"],
            )?,
            in_progress: IntGauge::new(
                "bertcls_requests_in_progress",
                "Predict requests being answered",
            )?,
            request_seconds: histogram(
                "bertcls_request_duration_seconds",
                "Time to answer a request",
                seconds.clone(),
            )?,
            queue_seconds: histogram(
                "bertcls_queue_duration_seconds",
                "Time a request waited for inference",
                seconds.clone(),
            )?,
            inference_seconds: histogram(
                "bertcls_inference_duration_seconds",
                "Time of one batch's inference",
                seconds,
            )?,
            batch_size: histogram("bertcls_batch_size", "Inputs per batch", sizes)?,
            batch_tokens: histogram(
                "bertcls_batch_tokens",
                "Tokens per batch, padding excluded",
                tokens,
            )?,
        };
        let r = &metrics.registry;
        r.register(Box::new(metrics.requests.clone()))?;
        r.register(Box::new(metrics.failures.clone()))?;
        r.register(Box::new(metrics.in_progress.clone()))?;
        r.register(Box::new(metrics.request_seconds.clone()))?;
        r.register(Box::new(metrics.queue_seconds.clone()))?;
        r.register(Box::new(metrics.inference_seconds.clone()))?;
        r.register(Box::new(metrics.batch_size.clone()))?;
        r.register(Box::new(metrics.batch_tokens.clone()))?;
        Ok(metrics)
    }

    /// Every metric in Prometheus' text format.
    pub fn render(&self) -> Result<String> {
        use prometheus::Encoder;
        let mut out = Vec::new();
        prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8(out)?)
    }
}
