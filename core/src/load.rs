//! Is this shard overloaded? A shard is one thread: when it has more ready work than it can
//! run, the work waits in its run queue, and that wait — the **queueing delay** — is what a
//! client feels before its handler even starts. A probe task asks to be woken every `period`
//! and measures how late it runs: it waits in the same queue as the requests, so its lateness
//! is the queueing delay of the moment (plus up to one tick of the 1 ms timer wheel).
//!
//! [`Overload`] turns those samples into a decision the way CoDel turns packet sojourn times
//! into drops: a burst that drains within `interval` is normal; a delay that stays above
//! `target` for a whole `interval` (every sample above it, so even the best moment of the
//! interval was late) is a standing queue, and the shard is overloaded until a sample comes in
//! under `target` again. Sans-IO: samples carry their time, so the decision is tested with a
//! fake clock; [`run_probe`] is the thin timer loop around it.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The overload decision of one shard (shard-local, no locks).
#[derive(Debug)]
pub struct Overload {
    target: Duration,
    interval: Duration,
    /// When the current run of samples above `target` began; `None` when the last sample was
    /// at or under it.
    above_since: Cell<Option<Instant>>,
    overloaded: Cell<bool>,
    /// The last sample, for metrics.
    last: Cell<Duration>,
    /// The largest sample since [`Overload::take_peak`] last ran (scrapes read it).
    peak: Cell<Duration>,
    /// Times the shard went from normal to overloaded.
    episodes: Cell<u64>,
}

impl Overload {
    /// A detector that calls a delay above `target` for `interval` overload.
    pub fn new(target: Duration, interval: Duration) -> Overload {
        Overload {
            target,
            interval,
            above_since: Cell::new(None),
            overloaded: Cell::new(false),
            last: Cell::new(Duration::ZERO),
            peak: Cell::new(Duration::ZERO),
            episodes: Cell::new(0),
        }
    }

    /// Records one queueing-delay sample taken at `now`.
    pub fn sample(&self, delay: Duration, now: Instant) {
        self.last.set(delay);
        self.peak.set(self.peak.get().max(delay));
        if delay <= self.target {
            self.above_since.set(None);
            self.overloaded.set(false);
            return;
        }
        let since = match self.above_since.get() {
            Some(since) => since,
            None => {
                self.above_since.set(Some(now));
                now
            }
        };
        if !self.overloaded.get() && now.saturating_duration_since(since) >= self.interval {
            self.overloaded.set(true);
            self.episodes.set(self.episodes.get() + 1);
        }
    }

    /// Whether new low-priority work should be refused now.
    pub fn overloaded(&self) -> bool {
        self.overloaded.get()
    }

    /// The last queueing delay measured.
    pub fn last_delay(&self) -> Duration {
        self.last.get()
    }

    /// The largest queueing delay measured since the last call (and resets it).
    pub fn take_peak(&self) -> Duration {
        self.peak.replace(Duration::ZERO)
    }

    /// Times this shard became overloaded.
    pub fn episodes(&self) -> u64 {
        self.episodes.get()
    }
}

/// Samples this shard's queueing delay every `period` into `overload`, for ever (spawn it on the
/// shard it measures; it ends with the shard's runtime).
pub async fn run_probe(overload: Rc<Overload>, period: Duration) {
    loop {
        let asked = Instant::now() + period;
        monoio::time::sleep(period).await;
        let now = Instant::now();
        overload.sample(now.saturating_duration_since(asked), now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Feeds `(delay ms, at ms)` samples and returns the decision after each.
    fn decisions(samples: &[(u64, u64)]) -> Vec<bool> {
        let o = Overload::new(5 * MS, 100 * MS);
        let t0 = Instant::now();
        samples
            .iter()
            .map(|&(delay, at)| {
                o.sample(MS * delay as u32, t0 + MS * at as u32);
                o.overloaded()
            })
            .collect()
    }

    #[test]
    fn a_burst_that_drains_within_the_interval_is_not_overload() {
        // 90 ms above target, then one sample under it: never overloaded.
        let d = decisions(&[(20, 0), (30, 30), (40, 60), (12, 90), (2, 95), (20, 150)]);
        assert_eq!(d, [false; 6]);
    }

    #[test]
    fn a_delay_above_target_for_a_whole_interval_is_overload_until_it_drops_under() {
        let o = Overload::new(5 * MS, 100 * MS);
        let t0 = Instant::now();
        for at in (0..100).step_by(10) {
            o.sample(8 * MS, t0 + MS * at as u32);
            assert!(!o.overloaded(), "at {at} ms");
        }
        o.sample(8 * MS, t0 + 100 * MS);
        assert!(o.overloaded());
        assert_eq!(o.episodes(), 1);
        // Still late: stays overloaded, one episode.
        o.sample(50 * MS, t0 + 400 * MS);
        assert!(o.overloaded());
        assert_eq!(o.episodes(), 1);
        // One sample at or under target ends it at once.
        o.sample(5 * MS, t0 + 410 * MS);
        assert!(!o.overloaded());
        assert_eq!(o.last_delay(), 5 * MS);
        // A new episode needs a new full interval.
        o.sample(9 * MS, t0 + 420 * MS);
        o.sample(9 * MS, t0 + 519 * MS);
        assert!(!o.overloaded());
        o.sample(9 * MS, t0 + 520 * MS);
        assert!(o.overloaded());
        assert_eq!(o.episodes(), 2);
    }

    #[test]
    fn the_probe_measures_how_late_a_busy_shard_runs_it() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async {
            let o = Rc::new(Overload::new(5 * MS, 100 * MS));
            let probe = crate::runtime::spawn("load-probe", run_probe(Rc::clone(&o), MS));
            // Let the probe arm its timer, then hold the thread (as a handler that does not
            // yield would) for 50 ms: the probe's next sample is at least that late.
            monoio::time::sleep(2 * MS).await;
            let began = Instant::now();
            while began.elapsed() < 50 * MS {
                std::hint::spin_loop();
            }
            let held_until = Instant::now();
            o.take_peak();
            while o.take_peak() < 40 * MS {
                assert!(
                    held_until.elapsed() < Duration::from_secs(30),
                    "the probe never reported the delay"
                );
                monoio::time::sleep(MS).await;
            }
            drop(probe);
        });
    }
}
