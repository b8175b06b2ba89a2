//! The blocking pool: threads off the shards for work that would hold a shard longer than a
//! slice (rule 5 of docs/architecture.md), such as compressing a large response or validating a large design.
//!
//! A shard hands a closure to [`BlockingPool::run`] and awaits its result; the shard meanwhile
//! serves its other connections. The queue is bounded (`runtime.blocking_queue`): when it is
//! full, `run` fails at once with [`BlockingError::Busy`] and the caller decides (send the body
//! uncompressed, answer 503) instead of the queue growing. Refusals are counted
//! ([`BlockingPool::refused`]). The threads end when the last handle to the pool is dropped.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// Why a job did not run to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BlockingError {
    /// The queue was full (or the pool has stopped): the job was not taken.
    #[error("the blocking pool is busy ({0} jobs waiting)")]
    Busy(usize),
    /// The job panicked on its pool thread (the thread carries on).
    #[error("the job panicked on a blocking pool thread")]
    Panicked,
}

/// A fixed set of threads sharing one bounded queue of jobs.
pub struct BlockingPool {
    jobs: SyncSender<Job>,
    queue: usize,
    waiting: Arc<AtomicUsize>,
    completed: Arc<AtomicU64>,
    refused: AtomicU64,
}

impl std::fmt::Debug for BlockingPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingPool")
            .field("queue", &self.queue)
            .field("waiting", &self.waiting())
            .field("completed", &self.completed())
            .field("refused", &self.refused())
            .finish()
    }
}

impl BlockingPool {
    /// Starts `threads` threads (at least one) named `sdsim-blocking-N`, sharing a queue of
    /// `queue` jobs (at least one).
    pub fn start(threads: usize, queue: usize) -> std::io::Result<Arc<BlockingPool>> {
        let queue = queue.max(1);
        let (tx, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        let waiting = Arc::new(AtomicUsize::new(0));
        let completed = Arc::new(AtomicU64::new(0));
        for i in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("sdsim-blocking-{i}"))
                .spawn(move || work(&rx))?;
        }
        Ok(Arc::new(BlockingPool {
            jobs: tx,
            queue,
            waiting,
            completed,
            refused: AtomicU64::new(0),
        }))
    }

    /// Runs `f` on a pool thread and returns its result; fails at once with
    /// [`BlockingError::Busy`] when the queue is full.
    pub async fn run<F, R>(&self, f: F) -> Result<R, BlockingError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let (waiting, completed) = (Arc::clone(&self.waiting), Arc::clone(&self.completed));
        let job: Job = Box::new(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            // Counted before the result is sent: whoever awaited the job sees it counted.
            waiting.fetch_sub(1, Ordering::AcqRel);
            completed.fetch_add(1, Ordering::AcqRel);
            let _ = tx.send(result);
        });
        self.waiting.fetch_add(1, Ordering::AcqRel);
        if let Err(e) = self.jobs.try_send(job) {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(match e {
                TrySendError::Full(_) | TrySendError::Disconnected(_) => {
                    BlockingError::Busy(self.queue)
                }
            });
        }
        match rx.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) | Err(_) => Err(BlockingError::Panicked),
        }
    }

    /// Jobs queued or running now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// Jobs run to their end (or their panic), since the start.
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Acquire)
    }

    /// Jobs refused because the queue was full, since the start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

fn work(jobs: &Mutex<Receiver<Job>>) {
    loop {
        let job = match jobs.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(job) => job,
            // Every sender is gone: the pool was dropped.
            Err(_) => return,
        };
        job();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// Polls `run` once (which queues its job) and says whether it is now waiting for it.
    fn submitted<F: std::future::Future>(run: std::pin::Pin<&mut F>) -> bool {
        let mut run = run;
        block_on(std::future::poll_fn(|cx| {
            std::task::Poll::Ready(run.as_mut().poll(cx).is_pending())
        }))
    }

    #[test]
    fn runs_off_the_calling_thread_and_refuses_when_full() {
        let pool = BlockingPool::start(1, 1).unwrap();
        let here = std::thread::current().id();
        let there = block_on(pool.run(std::thread::current)).unwrap();
        assert_ne!(there.id(), here);
        assert_eq!(there.name(), Some("sdsim-blocking-0"));

        // Hold the only thread, fill the one queue slot: the next job is refused at once.
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
        let mut holder = Box::pin(pool.run(move || {
            held_tx.send(()).unwrap();
            release_rx.recv().unwrap();
        }));
        assert!(submitted(holder.as_mut()));
        held_rx.recv().unwrap();
        let mut queued = Box::pin(pool.run(|| 7));
        assert!(submitted(queued.as_mut()));
        assert_eq!(block_on(pool.run(|| 8)), Err(BlockingError::Busy(1)));
        assert_eq!(pool.refused(), 1);
        release_tx.send(()).unwrap();
        assert_eq!(block_on(holder), Ok(()));
        assert_eq!(block_on(queued), Ok(7));
        assert_eq!(
            block_on(pool.run(|| -> u8 { panic!("deliberate") })),
            Err(BlockingError::Panicked)
        );
        assert_eq!(block_on(pool.run(|| 9)), Ok(9));
    }
}
