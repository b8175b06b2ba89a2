//! The stall detector: a task that holds its shard longer than the threshold in one poll is
//! logged (with its name and how long it held the shard) and counted.
//!
//! Every task spawned with [`crate::shard::Shard::spawn`] is wrapped in [`Timed`], which reads
//! the clock around each poll (two `Instant::now()` calls, tens of nanoseconds). A shard is
//! single-threaded, so one long poll delays every other connection on it: rule 5 of docs/architecture.md says such
//! work belongs on a blocking pool or in slices, and this is how we find what broke the rule.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Stall totals for the whole process (written only when a stall happens).
#[derive(Debug, Default)]
pub struct StallStats {
    count: AtomicU64,
    total_us: AtomicU64,
    worst_us: AtomicU64,
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
        let us = held.as_micros() as u64;
        self.stats.count.fetch_add(1, Ordering::Relaxed);
        self.stats.total_us.fetch_add(us, Ordering::Relaxed);
        self.stats.worst_us.fetch_max(us, Ordering::Relaxed);
        tracing::warn!(
            shard = self.shard,
            task,
            held_ms = held.as_secs_f64() * 1e3,
            threshold_ms = self.threshold.as_secs_f64() * 1e3,
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
        assert!(stats.worst() >= Duration::from_millis(250));
    }
}
