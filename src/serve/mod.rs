//! `bertcls serve`: a fine-tuned classifier behind an HTTP API shaped as
//! text-embeddings-inference's (`POST /predict`, `GET /info`, `GET /health`,
//! `GET /metrics`), with dynamic batching, bounded resources and graceful shutdown.
//!
//! Transport (this module and [`routes`]) is kept apart from the core: requests become
//! [`crate::infer::Classifier`] batches through the [`batcher`] queue.

pub mod api;
pub mod batcher;
pub mod metrics;
pub mod routes;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::infer::{Batching, Classifier};
use crate::task::Task;

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: String) -> Self {
        Self(key)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([hidden])")
    }
}

/// How the server listens, batches and bounds its work.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub addr: SocketAddr,
    /// The model as the user named it, shown by `/info`.
    pub model_id: String,
    /// Most padded tokens (inputs × longest) per forward pass.
    pub max_batch_tokens: usize,
    /// Most inputs per forward pass.
    pub max_batch_requests: usize,
    /// `/predict` requests answered at once; more get 429.
    pub max_concurrent_requests: usize,
    /// Most inputs in one request's batch.
    pub max_client_batch_size: usize,
    /// Largest request body in bytes; more get 413.
    pub payload_limit: usize,
    /// Open connections at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Time a client has to send its headers, and then its body.
    pub request_timeout: Duration,
    pub api_key: Option<ApiKey>,
}

/// Serves `classifier` until SIGINT or SIGTERM, then finishes the requests in flight and
/// returns. `on_ready` is called with the bound address once the server accepts requests.
pub fn run(
    classifier: Classifier,
    options: ServeOptions,
    on_ready: impl FnOnce(SocketAddr),
) -> Result<()> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("bertcls-http")
        .enable_all()
        .build()
        .context("cannot start the HTTP runtime")?;
    runtime.block_on(serve(classifier, options, on_ready, shutdown_signal()))
}

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// The `/info` body: TEI's fields where they apply, and what bertcls adds (task, labels,
/// thresholds, device).
fn info(classifier: &Classifier, options: &ServeOptions) -> serde_json::Value {
    let names = classifier.labels().names();
    let id2label: serde_json::Map<String, serde_json::Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (i.to_string(), json!(n)))
        .collect();
    let label2id: serde_json::Map<String, serde_json::Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), json!(i)))
        .collect();
    let thresholds = match classifier.task() {
        Task::MultiLabel { thresholds } => json!(thresholds),
        _ => serde_json::Value::Null,
    };
    json!({
        "model_id": options.model_id,
        "model_dtype": "float32",
        "model_type": {"classifier": {"id2label": id2label, "label2id": label2id}},
        "problem_type": classifier.task().problem_type(),
        "labels": names,
        "thresholds": thresholds,
        "max_input_length": classifier.max_length(),
        "max_batch_tokens": options.max_batch_tokens,
        "max_batch_requests": options.max_batch_requests,
        "max_client_batch_size": options.max_client_batch_size,
        "max_concurrent_requests": options.max_concurrent_requests,
        "payload_limit": options.payload_limit,
        "auto_truncate": false,
        "device": crate::device::describe(classifier.device()),
        "version": env!("CARGO_PKG_VERSION"),
    })
}

/// Serves until `shutdown` resolves. Each connection is HTTP/1.1 with a header timeout;
/// at most `max_connections` are open at once.
pub async fn serve(
    classifier: Classifier,
    options: ServeOptions,
    on_ready: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let listener = TcpListener::bind(options.addr)
        .await
        .with_context(|| format!("cannot listen on {}", options.addr))?;
    let addr = listener.local_addr()?;
    let classifier = Arc::new(classifier);
    let metrics = Arc::new(metrics::Metrics::new()?);
    let batching = Batching {
        max_rows: options.max_batch_requests,
        max_tokens: options.max_batch_tokens,
    };
    let (queue, inference) = batcher::start(classifier.clone(), batching, metrics.clone())?;
    let state = Arc::new(routes::AppState {
        info: info(&classifier, &options),
        permits: Arc::new(Semaphore::new(options.max_concurrent_requests)),
        classifier,
        queue,
        metrics,
        options: options.clone(),
    });
    let service = TowerToHyperService::new(routes::router(state));
    let connections = Arc::new(Semaphore::new(options.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.request_timeout)
        .max_buf_size(64 * 1024);
    on_ready(addr);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = connections.clone().acquire_owned() => permit?,
        };
        let (stream, _) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                // Out of file descriptors, or a connection reset before it was accepted:
                // wait a moment rather than spin, and go on.
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let connection = http.serve_connection(TokioIo::new(stream), service.clone());
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = watched.await {
                tracing::debug!("connection ended: {e}");
            }
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!("shutting down: finishing the requests in flight");
    drop(service);
    // Requests in flight end within the request timeout plus their inference.
    let drain = options.request_timeout * 2;
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        // Their requests still hold the queue, so the inference thread cannot be joined.
        tracing::warn!(
            "some connections were still open after {} s",
            drain.as_secs()
        );
        return Ok(());
    }
    tokio::task::spawn_blocking(move || inference.join())
        .await
        .context("the inference thread")?
        .map_err(|_| anyhow::anyhow!("the inference thread panicked"))?;
    Ok(())
}
