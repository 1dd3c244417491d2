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

fn run(
    classifier: &Classifier,
    batching: Batching,
    metrics: &Metrics,
    receiver: &mpsc::Receiver<Job>,
) {
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
        let mut longest = longest_of(&jobs[0].encoded);
        while rows < batching.max_rows {
            let Ok(job) = receiver.try_recv() else { break };
            let more_rows = rows + job.encoded.len();
            let more_longest = longest.max(longest_of(&job.encoded));
            if more_rows > batching.max_rows || more_rows * more_longest > batching.max_tokens {
                held = Some(job);
                break;
            }
            (rows, longest) = (more_rows, more_longest);
            jobs.push(job);
        }
        score_batch(classifier, batching, metrics, jobs);
    }
}

fn longest_of(encoded: &[Encoded]) -> usize {
    encoded.iter().map(|e| e.ids.len()).max().unwrap_or(0)
}

/// Scores the inputs of `jobs` together and answers each job with its share.
fn score_batch(classifier: &Classifier, batching: Batching, metrics: &Metrics, jobs: Vec<Job>) {
    let start = Instant::now();
    let mut counts = Vec::with_capacity(jobs.len());
    let mut inputs = Vec::new();
    let mut replies = Vec::with_capacity(jobs.len());
    for job in jobs {
        let queue_time = start - job.queued;
        metrics.queue_seconds.observe(queue_time.as_secs_f64());
        counts.push(job.encoded.len());
        inputs.extend(job.encoded);
        replies.push((job.reply, queue_time));
    }
    metrics.batch_size.observe(inputs.len() as f64);
    let tokens: usize = inputs.iter().map(|e| e.ids.len()).sum();
    metrics.batch_tokens.observe(tokens as f64);
    // A panic in inference must cost this batch, not the server.
    let result = crate::panics::contain(|| classifier.logits(&inputs, batching));
    let inference_time = start.elapsed();
    metrics
        .inference_seconds
        .observe(inference_time.as_secs_f64());
    match result {
        Ok(logits) => {
            let mut logits = logits.into_iter();
            for ((reply, queue_time), count) in replies.into_iter().zip(counts) {
                // A client that went away has dropped its receiver: nothing to do.
                let _ = reply.send(Ok(Scored {
                    logits: logits.by_ref().take(count).collect(),
                    queue_time,
                    inference_time,
                }));
            }
        }
        Err(e) => {
            let message = crate::terminal::error_line(&e);
            for (reply, _) in replies {
                let _ = reply.send(Err(message.clone()));
            }
        }
    }
}
