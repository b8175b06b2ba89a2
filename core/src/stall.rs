//! The stall detector: a task that holds its shard longer than the threshold in one poll is
//! logged (with its name and how long it held the shard) and counted.
//!
//! Every task is wrapped in [`Timed`], which reads the clock around each poll (two
//! `Instant::now()` calls, tens of nanoseconds): tasks start through
//! [`crate::runtime::spawn`] (or [`crate::runtime::Shard::spawn`]), and clippy's
//! `disallowed-methods` (`clippy.toml`) refuses a plain `monoio::spawn` anywhere else; the
//! shard's main future and its mesh receiver (which runs the jobs other shards send) are timed
//! too. A shard is single-threaded, so one long poll delays every other connection on it:
//! rule 5 of docs/architecture.md says such work belongs on a blocking pool or in slices, and this is how we find
//! what broke the rule.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Stall totals for the whole process (written only when a stall happens).
#[derive(Debug, Default)]
pub struct StallStats {
    count: AtomicU64,
    total_us: AtomicU64,
    worst_us: AtomicU64,
    /// Stalls per task name. A lock is fine here: it is taken only when a stall has already
    /// happened, never on the path of a poll that stayed within the threshold.
    by_task: Mutex<Vec<(&'static str, u64)>>,
}

impl StallStats {
    /// Polls that held a shard longer than the threshold.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Total time spent in those polls.
    pub fn total(&self) -> Duration {
        Duration::from_micros(self.total_us.load(Ordering::Relaxed))
    }

    /// The longest such poll.
    pub fn worst(&self) -> Duration {
        Duration::from_micros(self.worst_us.load(Ordering::Relaxed))
    }

    /// Stalls of the task named `task` (the name it was spawned under).
    pub fn count_for(&self, task: &str) -> u64 {
        self.by_task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(name, _)| *name == task)
            .map_or(0, |(_, n)| *n)
    }

    fn record(&self, task: &'static str, held_us: u64) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.total_us.fetch_add(held_us, Ordering::Relaxed);
        self.worst_us.fetch_max(held_us, Ordering::Relaxed);
        let mut by_task = self.by_task.lock().unwrap_or_else(|e| e.into_inner());
        match by_task.iter_mut().find(|(name, _)| *name == task) {
            Some((_, n)) => *n += 1,
            None => by_task.push((task, 1)),
        }
    }
}

/// One shard's detector.
#[derive(Debug)]
pub struct StallDetector {
    shard: usize,
    threshold: Duration,
    stats: Arc<StallStats>,
}

impl StallDetector {
    /// A detector for `shard` reporting polls longer than `threshold` into `stats`.
    pub fn new(shard: usize, threshold: Duration, stats: Arc<StallStats>) -> Rc<StallDetector> {
        Rc::new(StallDetector {
            shard,
            threshold,
            stats,
        })
    }

    /// The configured threshold.
    pub fn threshold(&self) -> Duration {
        self.threshold
    }

    /// Records one poll of `task` that took `held`, if it is over the threshold.
    pub fn observe(&self, task: &'static str, held: Duration) {
        if held <= self.threshold {
            return;
        }
        self.stats.record(task, held.as_micros() as u64);
        tracing::warn!(
            shard = self.shard,
            task,
            held_ms = crate::millis(held),
            threshold_ms = crate::millis(self.threshold),
            "stall: a task held its shard too long"
        );
    }
}

/// A future whose every poll is timed by a [`StallDetector`].
pub struct Timed<F> {
    name: &'static str,
    detector: Rc<StallDetector>,
    future: F,
}

impl<F> Timed<F> {
    /// Wraps `future`, naming it `name` in stall reports.
    pub fn new(name: &'static str, detector: Rc<StallDetector>, future: F) -> Self {
        Timed {
            name,
            detector,
            future,
        }
    }
}

impl<F: Future> Future for Timed<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `future` is structurally pinned: it is never moved out of `self`, and `Timed`
        // has no Drop impl; the other fields are not pinned.
        let this = unsafe { self.get_unchecked_mut() };
        let future = unsafe { Pin::new_unchecked(&mut this.future) };
        let start = Instant::now();
        let result = future.poll(cx);
        this.detector.observe(this.name, start.elapsed());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_polls_are_counted_short_ones_are_not() {
        let stats = Arc::new(StallStats::default());
        // A threshold no empty poll reaches even when a busy machine preempts it; the sleeper
        // holds its poll longer than that.
        let detector = StallDetector::new(0, Duration::from_millis(200), Arc::clone(&stats));
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap();
        rt.block_on(async {
            Timed::new("quick", Rc::clone(&detector), async {}).await;
            assert_eq!(stats.count(), 0);
            Timed::new("sleeper", Rc::clone(&detector), async {
                std::thread::sleep(Duration::from_millis(250));
            })
            .await;
        });
        assert_eq!(stats.count(), 1);
        assert_eq!(stats.count_for("sleeper"), 1);
        assert!(stats.worst() >= Duration::from_millis(250));
    }
}
