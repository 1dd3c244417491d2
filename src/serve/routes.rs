//! The HTTP routes and the layers around them: authentication, the request log and metrics.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use prometheus::IntGauge;
use subtle::ConstantTimeEq;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ServeOptions;
use super::api::{
    ApiError, ErrorType, LabelScore, PredictRequest, PredictResponse, Sequence, parse_predict,
};
use super::batcher::{Queue, QueueError};
use super::metrics::Metrics;
use crate::infer::Classifier;
use crate::task::{Prediction, Task};
use crate::tokenize::{Encoded, Input};

/// What every request handler shares.
pub struct AppState {
    pub classifier: Arc<Classifier>,
    pub queue: Queue,
    pub metrics: Arc<Metrics>,
    pub options: ServeOptions,
    /// `/predict` requests being answered, up to `max_concurrent_requests`.
    pub permits: Arc<Semaphore>,
    /// `GET /info`'s body, fixed at start.
    pub info: serde_json::Value,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/predict", post(predict))
        .route("/info", get(info))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// With an API key set, every route but `/health` asks for `Authorization: Bearer KEY`. The
/// comparison takes the same time wherever the first wrong byte is.
async fn authenticate(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(key) = &state.options.api_key else {
        return next.run(request).await;
    };
    if request.uri().path() == "/health" {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    match given {
        Some(token) if bool::from(token.ct_eq(key.expose().as_bytes())) => next.run(request).await,
        _ => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong API key: send `Authorization: Bearer KEY`",
        )
        .into_response(),
    }
}

/// Counts every answer in the metrics and logs one line per request. Neither holds a
/// header, so the API key never reaches the log.
async fn observe(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    let status = response.status();
    let seconds = start.elapsed().as_secs_f64();
    let route = match path.as_str() {
        "/predict" | "/info" | "/metrics" | "/health" => path.as_str(),
        _ => "other",
    };
    let m = &state.metrics;
    m.requests
        .with_label_values(&[route, status.as_str()])
        .inc();
    m.request_seconds.observe(seconds);
    let error_type = response.extensions().get::<ErrorType>().map(|e| e.0);
    if let Some(error_type) = error_type {
        m.failures.with_label_values(&[error_type]).inc();
    }
    tracing::info!(
        "{method} {} {} {:.1} ms{}",
        crate::terminal::printable(&path),
        status.as_u16(),
        seconds * 1000.0,
        error_type.map_or(String::new(), |e| format!(" {e}"))
    );
    response
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route: POST /predict, GET /info, GET /health, GET /metrics",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "wrong method: POST /predict, GET /info, GET /health, GET /metrics",
    )
}

async fn health() -> StatusCode {
    StatusCode::OK
}

async fn info(State(state): State<Arc<AppState>>) -> axum::Json<serde_json::Value> {
    axum::Json(state.info.clone())
}

async fn metrics(State(state): State<Arc<AppState>>) -> Result<String, ApiError> {
    state
        .metrics
        .render()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "backend", e.to_string()))
}

async fn predict(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<axum::Json<PredictResponse>, ApiError> {
    // Taken before the body is read: the permits bound the bodies held in memory too.
    let _permit = InProgress::acquire(&state)?;
    check_content_type(&headers)?;
    let bytes = read_body(&state.options, body).await?;
    let request = parse_predict(&bytes, state.options.max_client_batch_size)?;
    drop(bytes);
    let classifier = state.classifier.clone();
    let (encoded, request) = tokio::task::spawn_blocking(move || {
        encode(&classifier, &request).map(|encoded| (encoded, request))
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "backend", e.to_string()))??;
    let scored = state.queue.score(encoded).await.map_err(|e| match e {
        QueueError::Closed => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unhealthy", e.to_string())
        }
        QueueError::Inference(_) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "backend", e.to_string())
        }
    })?;
    let answers: Vec<Vec<LabelScore>> = scored
        .logits
        .iter()
        .map(|logits| answer(&state.classifier, logits, request.raw_scores))
        .collect();
    Ok(axum::Json(if request.batch {
        PredictResponse::Batch(answers)
    } else {
        PredictResponse::Single(answers.into_iter().next().unwrap_or_default())
    }))
}

/// A `/predict` request's permit, counted in the metrics while held.
struct InProgress {
    _permit: OwnedSemaphorePermit,
    gauge: IntGauge,
}

impl InProgress {
    fn acquire(state: &AppState) -> Result<Self, ApiError> {
        let permit = state.permits.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "overloaded",
                format!(
                    "model is overloaded: {} requests are being answered \
                     (--max-concurrent-requests)",
                    state.options.max_concurrent_requests
                ),
            )
        })?;
        let gauge = state.metrics.in_progress.clone();
        gauge.inc();
        Ok(Self {
            _permit: permit,
            gauge,
        })
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// JSON bodies only: a browser page can send a cross-origin `text/plain` POST without
/// asking, but must ask (a CORS preflight this server never grants) to send JSON.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if json {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "validation",
            "the body must be JSON, sent with `Content-Type: application/json`",
        ))
    }
}

/// The whole body, at most `payload_limit` bytes, read within `request_timeout`.
async fn read_body(options: &ServeOptions, body: Body) -> Result<bytes::Bytes, ApiError> {
    let limit = options.payload_limit;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "validation",
            format!("the body is over the payload limit of {limit} bytes (--payload-limit)"),
        )
    };
    let collect = Limited::new(body, limit).collect();
    match tokio::time::timeout(options.request_timeout, collect).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!(
                "the body did not arrive within {} s",
                options.request_timeout.as_secs()
            ),
        )),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(ApiError::validation(format!("cannot read the body: {e}"))),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// Token ids of each input; an input over the model's length is refused unless the request
/// asks to truncate.
fn encode(classifier: &Classifier, request: &PredictRequest) -> Result<Vec<Encoded>, ApiError> {
    let inputs: Vec<Input> = request
        .inputs
        .iter()
        .map(|s| match s {
            Sequence::Single(text) => Input::new(text, None),
            Sequence::Pair(text, pair) => Input::new(text, Some(pair)),
        })
        .collect();
    let blank = |text: &str| text.trim().is_empty();
    if let Some(i) = inputs
        .iter()
        .position(|i| blank(i.text) || i.text_pair.is_some_and(blank))
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "empty",
            format!("input {i} holds an empty text"),
        ));
    }
    let tokenizer_error = |e: anyhow::Error| ApiError::validation(crate::terminal::error_line(&e));
    let max = classifier.max_length();
    let tokenizer = classifier.tokenizer();
    if request.truncate {
        return tokenizer
            .encode_here(&inputs, true)
            .map_err(tokenizer_error);
    }
    let untruncated = tokenizer
        .encode_here(&inputs, false)
        .map_err(tokenizer_error)?;
    match untruncated.iter().position(|e| e.ids.len() > max) {
        None => Ok(untruncated),
        Some(i) => Err(ApiError::validation(format!(
            "input {i} has {} tokens, over the model's maximum of {max}: shorten it or send \
             \"truncate\": true",
            untruncated[i].ids.len()
        ))),
    }
}

/// One input's label scores, sorted by score, highest first.
fn answer(classifier: &Classifier, logits: &[f32], raw_scores: bool) -> Vec<LabelScore> {
    let task = classifier.task();
    let prediction = task.predict(logits);
    let scores = if raw_scores {
        logits
    } else {
        prediction.scores()
    };
    let predicted = |i: usize| match &prediction {
        Prediction::MultiLabel { labels, .. } => Some(labels.contains(&i)),
        _ => None,
    };
    let mut out: Vec<LabelScore> = classifier
        .labels()
        .names()
        .iter()
        .zip(scores)
        .enumerate()
        .map(|(i, (label, &score))| LabelScore {
            label: label.clone(),
            score,
            predicted: predicted(i),
        })
        .collect();
    if !matches!(task, Task::Regression) {
        out.sort_by(|a, b| b.score.total_cmp(&a.score));
    }
    out
}
