//! Publishes pipelined: the publish scripts that relay connections start at about the same
//! time leave in one write and come back in one read, instead of a round trip each.
//!
//! On one Redis server most of a request's cost is its read and write system calls on
//! both sides (a bare `PUBLISH` costs Redis about 7 µs alone and under 1 µs in a pipeline
//! of 16). One task takes the publishes queued for it, lets the scheduler run once so
//! that publishers woken in the same pass add theirs, and sends them all as one pipeline;
//! while it waits for the answers the next batch gathers. A quiet relay sends each publish
//! at once (a batch of one), so latency does not grow at ordinary rates.
//!
//! On a Redis Cluster each script goes to its own key's master, so publishes go one by one
//! through the cluster client, which keeps one multiplexed connection per node.

use ::redis::{Cmd, RedisResult, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::requests::Requests;
use super::REQUEST_TIMEOUT;

/// Most publishes in one pipeline.
const MAX_BATCH: usize = 256;
/// Publishes waiting for the batcher, at most; past it a publisher waits for room.
const QUEUE: usize = 4096;

/// One publish script waiting to be sent.
struct Job {
    command: Cmd,
    answer: oneshot::Sender<RedisResult<Value>>,
}

/// The queue of the batching task.
#[derive(Debug)]
pub(super) struct Batcher {
    jobs: mpsc::Sender<Job>,
}

impl Batcher {
    /// A batcher and the queue its task (see [`run`]) drains.
    pub(super) fn new() -> (Self, Jobs) {
        let (jobs, queue) = mpsc::channel(QUEUE);
        (Self { jobs }, Jobs(queue))
    }

    /// Sends `command` in the next pipeline and returns its answer; `None` when the
    /// batcher is gone or the pipeline failed as a whole (the caller counts that as
    /// Redis unavailable).
    pub(super) async fn send(&self, command: Cmd) -> Option<RedisResult<Value>> {
        let (answer, answered) = oneshot::channel();
        self.jobs.send(Job { command, answer }).await.ok()?;
        answered.await.ok()
    }
}

/// The receiving end of a [`Batcher`]'s queue.
pub(super) struct Jobs(mpsc::Receiver<Job>);

/// Sends the queued publishes in pipelines until `stop`.
pub(super) async fn run(requests: &Requests, mut jobs: Jobs, stop: CancellationToken) {
    let mut batch: Vec<Job> = Vec::new();
    loop {
        let first = tokio::select! {
            () = stop.cancelled() => return,
            job = jobs.0.recv() => match job {
                Some(job) => job,
                None => return,
            },
        };
        batch.push(first);
        // Publishers woken in the same pass of the scheduler join this batch.
        tokio::task::yield_now().await;
        while batch.len() < MAX_BATCH {
            match jobs.0.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        send(requests, &mut batch).await;
    }
}

/// Sends `batch` as one pipeline and hands each job its answer; leaves `batch` empty.
async fn send(requests: &Requests, batch: &mut Vec<Job>) {
    let mut pipe = ::redis::pipe();
    pipe.ignore_errors();
    let mut answers = Vec::with_capacity(batch.len());
    for job in batch.drain(..) {
        pipe.add_command(job.command);
        answers.push(job.answer);
    }
    let Ok(mut redis) = requests.connection() else {
        return;
    };
    let sent = tokio::time::timeout(
        REQUEST_TIMEOUT,
        pipe.query_async::<Vec<RedisResult<Value>>>(&mut redis),
    )
    .await;
    // A pipeline that failed as a whole (timeout, connection lost) drops every answer:
    // each publisher then counts its publish as not done.
    if let Ok(Ok(results)) = sent {
        for (answer, result) in answers.into_iter().zip(results) {
            let _ = answer.send(result);
        }
    }
}
