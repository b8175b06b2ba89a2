//! Report generation across instances: with Redis set, the bottleneck analysis of a completed
//! run (which re-runs the design to confirm its recommendations) is queued on
//! `async:reports:queue` and done by whichever simulation instance takes it first, so a busy
//! instance's finished runs are analysed by idle ones.
//!
//! The queue is reliable: a taker moves a job with `BLMOVE` onto its own list
//! `async:reports:processing:{instance}` and removes it from there only once the analysis is
//! stored; at start an instance puts back whatever its previous life left on its list, so a
//! crash mid-analysis delays a report but never loses it. Storing an analysis is idempotent
//! (a run's row is updated, not appended to), so a job done twice does no harm.
//!
//! redis 1.x needs tokio, so one small thread runs a tokio current-thread runtime with two
//! connections: one blocks in `BLMOVE`, the other pushes and acknowledges. Shard 0 of the
//! instance computes (on a helper thread) and stores each analysis, one at a time.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// The list jobs wait on.
pub const QUEUE: &str = "async:reports:queue";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one `BLMOVE` waits before the taker checks whether the process is stopping.
const TAKE_WAIT_S: f64 = 1.0;
/// How much longer than its wait a reply may take before Redis is taken for unreachable.
const REPLY_MARGIN: Duration = Duration::from_secs(2);

/// The list instance `instance` keeps the jobs it is working on.
pub fn processing_list(instance: &str) -> String {
    format!("async:reports:processing:{instance}")
}

/// One analysis to do: a completed run, its design as it ran and its report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReportJob {
    /// The run.
    pub simulation_id: String,
    /// The design document as the run read it (before its duration and seed were applied).
    pub design: String,
    /// Simulated seconds the run lasted.
    pub duration_s: f64,
    /// The run's seed.
    pub seed: u64,
    /// The run's report (JSON).
    pub report: String,
}

/// Counters of the queue, read by `/metrics`.
#[derive(Debug, Default)]
pub struct ReportStats {
    /// Connected to Redis.
    pub up: AtomicBool,
    /// Jobs this instance pushed.
    pub queued: AtomicU64,
    /// Jobs not pushed (Redis down or unreachable for the whole retry).
    pub queue_failed: AtomicU64,
    /// Jobs this instance took.
    pub taken: AtomicU64,
    /// Jobs put back from this instance's processing list (at start and after a reconnect).
    pub requeued: AtomicU64,
    /// Jobs whose value was not a job (dropped from the list).
    pub malformed: AtomicU64,
    /// Connection attempts that failed or connections lost.
    pub failures: AtomicU64,
}

/// A job taken from the queue: its exact value (to acknowledge) and what it says.
pub(crate) struct Taken {
    pub(crate) raw: String,
    pub(crate) job: Result<ReportJob, String>,
}

enum Command {
    Push(String),
    Done(String),
}

/// This instance's end of the queue.
pub struct ReportQueue {
    commands: mpsc::UnboundedSender<Command>,
    taken: Mutex<Option<mpsc::Receiver<Taken>>>,
    /// Its counters.
    pub stats: Arc<ReportStats>,
}

/// The queue's thread could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ReportQueueError {
    /// `redis.url` is not a URL the client accepts.
    #[error("redis.url: {0}")]
    Url(String),
    /// The thread that owns the connections could not be started.
    #[error("cannot start the report queue's thread: {0}")]
    Thread(std::io::Error),
}

impl ReportQueue {
    /// Starts the queue's thread for instance `instance` on Redis `url`.
    pub fn start(url: &str, instance: &str) -> Result<ReportQueue, ReportQueueError> {
        let client = redis::Client::open(url).map_err(|e| ReportQueueError::Url(e.to_string()))?;
        let (commands, command_rx) = mpsc::unbounded_channel();
        // One job at a time: the next is taken once the shard has received this one.
        let (taken_tx, taken_rx) = mpsc::channel(1);
        let stats = Arc::new(ReportStats::default());
        let worker = Worker {
            client,
            processing: processing_list(instance),
            stats: Arc::clone(&stats),
        };
        std::thread::Builder::new()
            .name("sdsim-reports".into())
            .spawn(move || worker.run(command_rx, taken_tx))
            .map_err(ReportQueueError::Thread)?;
        Ok(ReportQueue {
            commands,
            taken: Mutex::new(Some(taken_rx)),
            stats,
        })
    }

    /// Queues `job` (retried by the thread while Redis is down).
    pub(crate) fn push(&self, job: &ReportJob) {
        let value = serde_json::to_string(job).expect("a job always serializes");
        let _ = self.commands.send(Command::Push(value));
    }

    /// Says the job taken as `raw` is done (its analysis is stored, or it was malformed).
    pub(crate) fn done(&self, raw: String) {
        let _ = self.commands.send(Command::Done(raw));
    }

    /// The jobs this instance takes (once: the shard that analyses them).
    pub(crate) fn take_jobs(&self) -> Option<mpsc::Receiver<Taken>> {
        self.taken.lock().ok()?.take()
    }
}

struct Worker {
    client: redis::Client,
    processing: String,
    stats: Arc<ReportStats>,
}

impl Worker {
    fn run(self, mut commands: mpsc::UnboundedReceiver<Command>, taken: mpsc::Sender<Taken>) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the report queue's runtime");
                return;
            }
        };
        rt.block_on(async move {
            let worker = Arc::new(self);
            let taker = tokio::spawn(Arc::clone(&worker).take_loop(taken));
            let mut pending: Option<Command> = None;
            let mut backoff = Duration::from_millis(100);
            loop {
                match worker.serve(&mut commands, &mut pending).await {
                    Ok(()) => break, // The queue was dropped: the service is gone.
                    Err(e) => {
                        worker.stats.failures.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(error = %e, ?backoff, "report queue: Redis unavailable");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
            taker.abort();
        });
    }

    /// A connection whose replies may take `TAKE_WAIT_S` plus a margin (the client's default
    /// of 500 ms would cut every `BLMOVE` that waits).
    async fn connect(&self) -> Result<redis::aio::MultiplexedConnection, String> {
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(Duration::from_secs_f64(TAKE_WAIT_S) + REPLY_MARGIN));
        let connect = self
            .client
            .get_multiplexed_async_connection_with_config(&config);
        tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| e.to_string())
    }

    /// Pushes and acknowledges until the queue is dropped (`Ok`) or Redis fails (`Err`; the
    /// command in flight is kept in `pending` and sent first after reconnecting).
    async fn serve(
        &self,
        commands: &mut mpsc::UnboundedReceiver<Command>,
        pending: &mut Option<Command>,
    ) -> Result<(), String> {
        let mut conn = self.connect().await?;
        self.stats.up.store(true, Ordering::Relaxed);
        loop {
            let command = match pending.take() {
                Some(c) => c,
                None => match commands.recv().await {
                    Some(c) => c,
                    None => return Ok(()),
                },
            };
            let sent: redis::RedisResult<i64> = match &command {
                Command::Push(value) => {
                    redis::cmd("RPUSH")
                        .arg(QUEUE)
                        .arg(value)
                        .query_async(&mut conn)
                        .await
                }
                Command::Done(value) => {
                    redis::cmd("LREM")
                        .arg(&self.processing)
                        .arg(1)
                        .arg(value)
                        .query_async(&mut conn)
                        .await
                }
            };
            if let Err(e) = sent {
                self.stats.up.store(false, Ordering::Relaxed);
                *pending = Some(command);
                return Err(e.to_string());
            }
            if matches!(command, Command::Push(_)) {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Takes jobs one at a time for as long as the shard receives them, reconnecting while
    /// Redis is unreachable.
    async fn take_loop(self: Arc<Self>, taken: mpsc::Sender<Taken>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.take_some(&taken).await {
                Ok(()) => return,
                Err(e) => {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, ?backoff, "report queue taker: Redis unavailable");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Puts back whatever this instance's list holds (what a previous life left, or a job whose
    /// `BLMOVE` reply was lost with the connection; one still being analysed may then be done
    /// twice, which stores the same analysis again), then takes jobs.
    async fn take_some(&self, taken: &mpsc::Sender<Taken>) -> Result<(), String> {
        let mut conn = self.connect().await?;
        let failed = |e: redis::RedisError| e.to_string();
        loop {
            let moved: Option<String> = redis::cmd("LMOVE")
                .arg(&self.processing)
                .arg(QUEUE)
                .arg("LEFT")
                .arg("RIGHT")
                .query_async(&mut conn)
                .await
                .map_err(failed)?;
            if moved.is_none() {
                break;
            }
            self.stats.requeued.fetch_add(1, Ordering::Relaxed);
        }
        loop {
            // Wait for the shard to be ready for a job before taking one off the queue.
            let Ok(permit) = taken.reserve().await else {
                return Ok(());
            };
            let moved: Option<String> = redis::cmd("BLMOVE")
                .arg(QUEUE)
                .arg(&self.processing)
                .arg("LEFT")
                .arg("RIGHT")
                .arg(TAKE_WAIT_S)
                .query_async(&mut conn)
                .await
                .map_err(failed)?;
            let Some(raw) = moved else { continue };
            self.stats.taken.fetch_add(1, Ordering::Relaxed);
            let job = serde_json::from_str::<ReportJob>(&raw).map_err(|e| e.to_string());
            if job.is_err() {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
            }
            permit.send(Taken { raw, job });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job survives its trip through the queue exactly; anything else on the list is
    /// recognised as not a job.
    #[test]
    fn a_job_round_trips_and_strangers_are_refused() {
        let job = ReportJob {
            simulation_id: "s1".into(),
            design: r#"{"components":[]}"#.into(),
            duration_s: 60.0,
            seed: 7,
            report: "{}".into(),
        };
        let raw = serde_json::to_string(&job).unwrap();
        assert_eq!(serde_json::from_str::<ReportJob>(&raw).unwrap(), job);
        for stranger in [
            "",
            "null",
            "{}",
            r#"{"simulation_id":"s1"}"#,
            &raw.replace("\"seed\":7", "\"seed\":-1"),
            &raw.replace('}', ",\"extra\":1}"),
        ] {
            assert!(
                serde_json::from_str::<ReportJob>(stranger).is_err(),
                "{stranger:?} is not a job"
            );
        }
        assert_eq!(processing_list("node-a"), "async:reports:processing:node-a");
    }
}
