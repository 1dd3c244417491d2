//! Dynamic batching: requests queue, and one inference thread takes whatever has queued
//! (within the batch bounds) as one batch, sorted by length. An idle server answers a lone
//! request at once; a busy one answers many per forward pass.

use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::sync::oneshot;

use super::metrics::Metrics;
use crate::infer::{Batching, Classifier};
use crate::tokenize::Encoded;

/// One request's inputs and where its logits go.
struct Job {
    encoded: Vec<Encoded>,
    queued: Instant,
    reply: oneshot::Sender<Result<Scored, String>>,
}

/// A request's logits, in input order, and what they cost.
#[derive(Debug)]
pub struct Scored {
    pub logits: Vec<Vec<f32>>,
    pub queue_time: Duration,
    pub inference_time: Duration,
}

/// The sending side of the queue; cheap to clone into every request.
#[derive(Clone)]
pub struct Queue {
    sender: mpsc::Sender<Job>,
}

/// Why a request got no logits.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("the server is shutting down")]
    Closed,
    #[error("inference failed: {0}")]
    Inference(String),
}

impl Queue {
    /// Queues `encoded` and waits for its logits.
    pub async fn score(&self, encoded: Vec<Encoded>) -> Result<Scored, QueueError> {
        if encoded.is_empty() {
            return Ok(Scored {
                logits: Vec::new(),
                queue_time: Duration::ZERO,
                inference_time: Duration::ZERO,
            });
        }
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Job {
                encoded,
                queued: Instant::now(),
                reply,
            })
            .map_err(|_| QueueError::Closed)?;
        answer
            .await
            .map_err(|_| QueueError::Closed)?
            .map_err(QueueError::Inference)
    }
}

/// Starts the inference thread. It ends once every [`Queue`] is dropped and the queue is
/// empty.
pub fn start(
    classifier: Arc<Classifier>,
    batching: Batching,
    metrics: Arc<Metrics>,
) -> Result<(Queue, JoinHandle<()>)> {
    let (sender, receiver) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("bertcls-inference".into())
        .spawn(move || run(&classifier, batching, &metrics, &receiver))
        .context("cannot start the inference thread")?;
    Ok((Queue { sender }, thread))
}

/// A batch takes up to this many forward passes' worth of queued inputs: the more inputs
/// are sorted together, the closer in length those sharing a pass are, and the less of the
/// work is padding (a pass of 58 mixed SST-2 lengths cost 1.5 times one of equal lengths).
const POOL_PASSES: usize = 4;

fn run(
    classifier: &Classifier,
    batching: Batching,
    metrics: &Metrics,
    receiver: &mpsc::Receiver<Job>,
) {
    let max_rows = batching.max_rows.saturating_mul(POOL_PASSES);
    let max_tokens = batching.max_tokens.saturating_mul(POOL_PASSES);
    let mut held = None;
    loop {
        let first = match held.take() {
            Some(job) => job,
            None => match receiver.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        let mut jobs = vec![first];
        let mut rows = jobs[0].encoded.len();
        let mut tokens = tokens_of(&jobs[0].encoded);
        while rows < max_rows {
            let Ok(job) = receiver.try_recv() else { break };
            let more_rows = rows + job.encoded.len();
            let more_tokens = tokens + tokens_of(&job.encoded);
            if more_rows > max_rows || more_tokens > max_tokens {
                held = Some(job);
                break;
            }
            (rows, tokens) = (more_rows, more_tokens);
            jobs.push(job);
        }
        score_batch(classifier, batching, metrics, jobs);
    }
}

fn tokens_of(encoded: &[Encoded]) -> usize {
    encoded.iter().map(|e| e.ids.len()).sum()
}

/// A job being answered: its logits so far, and where its answer goes.
struct Pending {
    logits: Vec<Vec<f32>>,
    missing: usize,
    queue_time: Duration,
    reply: Option<oneshot::Sender<Result<Scored, String>>>,
}

/// Scores the inputs of `jobs` sorted by length, in the forward passes
/// [`Classifier::plan_passes`] makes of them, and answers each job as soon as its last input
/// is scored.
fn score_batch(classifier: &Classifier, batching: Batching, metrics: &Metrics, jobs: Vec<Job>) {
    let start = Instant::now();
    let mut pending = Vec::with_capacity(jobs.len());
    // (job, position in the job, input)
    let mut inputs = Vec::new();
    for (j, job) in jobs.into_iter().enumerate() {
        let queue_time = start - job.queued;
        metrics.queue_seconds.observe(queue_time.as_secs_f64());
        pending.push(Pending {
            logits: vec![Vec::new(); job.encoded.len()],
            missing: job.encoded.len(),
            queue_time,
            reply: Some(job.reply),
        });
        inputs.extend(job.encoded.into_iter().enumerate().map(|(i, e)| (j, i, e)));
    }
    inputs.sort_by_key(|(_, _, e)| std::cmp::Reverse(e.ids.len()));
    let lengths: Vec<usize> = inputs.iter().map(|(_, _, e)| e.ids.len()).collect();
    let mut rest = &inputs[..];
    for rows in classifier.plan_passes(&lengths, batching) {
        let (pass, tail) = rest.split_at(rows);
        rest = tail;
        let items: Vec<&Encoded> = pass.iter().map(|(_, _, e)| e).collect();
        metrics.batch_size.observe(items.len() as f64);
        metrics.batch_tokens.observe(tokens_of_refs(&items) as f64);
        let pass_start = Instant::now();
        // A panic in inference must cost these requests, not the server.
        let result = crate::panics::contain(|| classifier.pass_logits(&items));
        metrics
            .inference_seconds
            .observe(pass_start.elapsed().as_secs_f64());
        let logits = match result {
            Ok(logits) => logits,
            Err(e) => {
                let message = crate::terminal::error_line(&e);
                for p in &mut pending {
                    if let Some(reply) = p.reply.take() {
                        let _ = reply.send(Err(message.clone()));
                    }
                }
                return;
            }
        };
        for ((j, i, _), l) in pass.iter().zip(logits) {
            let p = &mut pending[*j];
            p.logits[*i] = l;
            p.missing -= 1;
            if p.missing == 0
                && let Some(reply) = p.reply.take()
            {
                // A client that went away has dropped its receiver: nothing to do.
                let _ = reply.send(Ok(Scored {
                    logits: std::mem::take(&mut p.logits),
                    queue_time: p.queue_time,
                    inference_time: start.elapsed(),
                }));
            }
        }
    }
}

fn tokens_of_refs(items: &[&Encoded]) -> usize {
    items.iter().map(|e| e.ids.len()).sum()
}
