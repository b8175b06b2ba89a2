//! Is this shard overloaded, and how much new work may it take? A shard is one thread: when it
//! has more ready work than it can run, the work waits in its run queue, and that wait — the
//! **queueing delay** — is what a client feels before its handler even starts. A probe task
//! asks to be woken every `period` and measures how late it runs: it waits in the same queue as
//! the requests, so its lateness is the queueing delay of the moment (plus up to one tick of
//! the 1 ms timer wheel).
//!
//! [`Overload`] turns those samples into an admission decision in two steps.
//!
//! - **Detect** as CoDel does with packet sojourn times: a burst that drains within `interval`
//!   is normal; a delay that stays above `target` for a whole `interval` (every sample above
//!   it, so even the best moment of the interval was late) is a standing queue. Until then
//!   everything is admitted.
//! - **Limit the admission rate** instead of refusing everything. The first limit is the rate
//!   at which the shard admitted work during that interval — what it managed while saturated,
//!   an estimate of its capacity — cut by the share needed to drain the standing queue within
//!   one interval: with a minimum delay `d` over the interval, `(d - target) / interval` of
//!   the next interval's work must not be taken (at most half). Then, once per interval: still
//!   a standing queue → cut again by the same rule; the queue drained at some point while
//!   requests were refused → raise the limit by [`GROWTH`] (probe for capacity, as AIMD
//!   does); the queue drained and nothing was refused → the limit no longer binds, admit
//!   everything again. Admissions come from a token bucket refilled at the limit, holding at
//!   most `target`'s worth of admissions (a burst that adds at most `target` of queue).
//!
//! A refusal-everything policy (the first version) fed on itself: a client refused at once
//! sends again at once, the refusals kept the queue above target, and the shard ended up
//! refusing nearly everything (0.11 of capacity served at 2× load). A rate limit near
//! capacity keeps serving what the shard can serve and refuses only the excess.
//!
//! [`Priority::Low`] work is admitted while limiting only when the bucket is at least half
//! full — it gets the spare capacity, never the share normal work needs.
//!
//! Sans-IO: samples and decisions carry their time, so the policy is tested with a fake clock;
//! [`run_probe`] is the thin timer loop around it.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How much the limit rises after an interval whose queue drained while work was refused.
pub const GROWTH: f64 = 0.05;

/// The most one interval's cut takes off the limit.
const MAX_CUT: f64 = 0.5;

/// How much a request matters when the shard must refuse some.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Ordinary work: admitted up to the limit.
    Normal,
    /// Work refused first (`shedding.low`): admitted while limiting only from spare capacity.
    Low,
}

/// The state while the admission rate is limited.
#[derive(Debug, Clone, Copy)]
struct Limiting {
    /// Admissions per second.
    rate: f64,
    /// Admissions the bucket holds now.
    tokens: f64,
    /// When `tokens` was last refilled.
    refilled: Instant,
    /// The current evaluation interval: when it began, its smallest delay, and the refusal
    /// count at its start.
    window_start: Instant,
    window_min: Duration,
    refused_at_start: u64,
}

/// The overload decision of one shard (shard-local, no locks).
#[derive(Debug)]
pub struct Overload {
    target: Duration,
    interval: Duration,
    /// When the current run of samples above `target` began, the admission count then, and
    /// the smallest delay of the run; `None` when the last sample was at or under target.
    above: Cell<Option<(Instant, u64, Duration)>>,
    limiting: Cell<Option<Limiting>>,
    /// Requests admitted and refused so far.
    admitted: Cell<u64>,
    refused: Cell<u64>,
    /// The last sample, for metrics.
    last: Cell<Duration>,
    /// The largest sample since [`Overload::take_peak`] last ran (scrapes read it).
    peak: Cell<Duration>,
    /// Times the shard went from admitting everything to limiting.
    episodes: Cell<u64>,
}

impl Overload {
    /// A policy that calls a delay above `target` for `interval` overload.
    pub fn new(target: Duration, interval: Duration) -> Overload {
        Overload {
            target,
            interval,
            above: Cell::new(None),
            limiting: Cell::new(None),
            admitted: Cell::new(0),
            refused: Cell::new(0),
            last: Cell::new(Duration::ZERO),
            peak: Cell::new(Duration::ZERO),
            episodes: Cell::new(0),
        }
    }

    /// The share of the limit one interval keeps when its smallest delay was `min`: what is
    /// left after draining the standing queue (`min - target` of work) within one interval.
    fn keep_after(&self, min: Duration) -> f64 {
        let excess = min.saturating_sub(self.target).as_secs_f64();
        (1.0 - excess / self.interval.as_secs_f64()).max(1.0 - MAX_CUT)
    }

    /// The lowest limit: one admission per interval, so a limit can always grow back.
    fn floor(&self) -> f64 {
        1.0 / self.interval.as_secs_f64()
    }

    /// The most the bucket holds at `rate`: `target`'s worth of admissions, at least one.
    fn burst(&self, rate: f64) -> f64 {
        (rate * self.target.as_secs_f64()).max(1.0)
    }

    /// Records one queueing-delay sample taken at `now`.
    pub fn sample(&self, delay: Duration, now: Instant) {
        self.last.set(delay);
        self.peak.set(self.peak.get().max(delay));
        match self.limiting.get() {
            None => self.detect(delay, now),
            Some(limiting) => self.adjust(limiting, delay, now),
        }
    }

    /// CoDel's rule, while everything is admitted.
    fn detect(&self, delay: Duration, now: Instant) {
        if delay <= self.target {
            self.above.set(None);
            return;
        }
        let (since, admitted_then, min) = match self.above.get() {
            Some((since, admitted, min)) => (since, admitted, min.min(delay)),
            None => (now, self.admitted.get(), delay),
        };
        self.above.set(Some((since, admitted_then, min)));
        let lasted = now.saturating_duration_since(since);
        if lasted < self.interval {
            return;
        }
        let managed = (self.admitted.get() - admitted_then) as f64 / lasted.as_secs_f64();
        let rate = (managed * self.keep_after(min)).max(self.floor());
        self.above.set(None);
        self.episodes.set(self.episodes.get() + 1);
        self.limiting.set(Some(Limiting {
            rate,
            // The queue stands: no burst on top of it.
            tokens: 0.0,
            refilled: now,
            window_start: now,
            window_min: Duration::MAX,
            refused_at_start: self.refused.get(),
        }));
    }

    /// Once per interval while limiting: cut, raise or stop.
    fn adjust(&self, mut limiting: Limiting, delay: Duration, now: Instant) {
        limiting.window_min = limiting.window_min.min(delay);
        if now.saturating_duration_since(limiting.window_start) < self.interval {
            self.limiting.set(Some(limiting));
            return;
        }
        let refused = self.refused.get() - limiting.refused_at_start;
        let min = limiting.window_min;
        if min > self.target {
            limiting.rate = (limiting.rate * self.keep_after(min)).max(self.floor());
        } else if refused == 0 {
            self.limiting.set(None);
            return;
        } else {
            limiting.rate *= 1.0 + GROWTH;
        }
        limiting.tokens = limiting.tokens.min(self.burst(limiting.rate));
        limiting.window_start = now;
        limiting.window_min = Duration::MAX;
        limiting.refused_at_start = self.refused.get();
        self.limiting.set(Some(limiting));
    }

    /// Decides one new request of `priority` at `now` (and counts it). Cheap when the shard
    /// keeps up: a flag test and a counter.
    pub fn admit(&self, priority: Priority, now: Instant) -> bool {
        let Some(mut limiting) = self.limiting.get() else {
            self.admitted.set(self.admitted.get() + 1);
            return true;
        };
        let burst = self.burst(limiting.rate);
        let elapsed = now
            .saturating_duration_since(limiting.refilled)
            .as_secs_f64();
        limiting.tokens = (limiting.tokens + elapsed * limiting.rate).min(burst);
        limiting.refilled = limiting.refilled.max(now);
        let needed = match priority {
            Priority::Normal => 1.0,
            Priority::Low => (burst / 2.0).max(1.0),
        };
        let admitted = limiting.tokens >= needed;
        if admitted {
            limiting.tokens -= 1.0;
            self.admitted.set(self.admitted.get() + 1);
        } else {
            self.refused.set(self.refused.get() + 1);
        }
        self.limiting.set(Some(limiting));
        admitted
    }

    /// Whether the admission rate is limited now (some new work is being refused).
    pub fn overloaded(&self) -> bool {
        self.limiting.get().is_some()
    }

    /// The admission limit (requests per second) while limiting.
    pub fn limit(&self) -> Option<f64> {
        self.limiting.get().map(|l| l.rate)
    }

    /// Requests admitted and refused by [`Overload::admit`] so far.
    pub fn decisions(&self) -> (u64, u64) {
        (self.admitted.get(), self.refused.get())
    }

    /// The last queueing delay measured.
    pub fn last_delay(&self) -> Duration {
        self.last.get()
    }

    /// The largest queueing delay measured since the last call (and resets it).
    pub fn take_peak(&self) -> Duration {
        self.peak.replace(Duration::ZERO)
    }

    /// Times this shard started limiting.
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

    /// A policy with target 5 ms and interval 100 ms, and its clock's origin.
    fn policy() -> (Overload, Instant) {
        (Overload::new(5 * MS, 100 * MS), Instant::now())
    }

    /// `count` normal requests spread evenly over `[from, from + span)`; how many were admitted.
    fn offer(o: &Overload, t0: Instant, from: Duration, span: Duration, count: u32) -> u32 {
        (0..count)
            .filter(|i| o.admit(Priority::Normal, t0 + from + span * *i / count))
            .count() as u32
    }

    /// Samples of `delay` every 10 ms over `[from, to]`.
    fn samples(o: &Overload, t0: Instant, delay: Duration, from: u32, to: u32) {
        for at in (from..=to).step_by(10) {
            o.sample(delay, t0 + MS * at);
        }
    }

    /// Drives a policy into limiting: 2,000 admissions/s over 100 ms with the delay at 8 ms
    /// (3 ms of standing queue over the target); returns it at t0 + 100 ms.
    fn limiting() -> (Overload, Instant) {
        let (o, t0) = policy();
        o.sample(8 * MS, t0);
        assert_eq!(offer(&o, t0, Duration::ZERO, 100 * MS, 200), 200);
        samples(&o, t0, 8 * MS, 10, 100);
        assert!(o.overloaded());
        (o, t0)
    }

    #[test]
    fn a_burst_that_drains_within_the_interval_is_not_overload() {
        let (o, t0) = policy();
        // 90 ms above target, then one sample under it: every request admitted throughout.
        for (delay, at) in [(20, 0), (30, 30), (40, 60), (12, 90), (2, 95), (20, 150)] {
            o.sample(MS * delay, t0 + MS * at);
            assert!(!o.overloaded(), "at {at} ms");
            assert!(o.admit(Priority::Normal, t0 + MS * at));
        }
        assert_eq!(o.decisions(), (6, 0));
        assert_eq!(o.episodes(), 0);
    }

    #[test]
    fn a_standing_queue_limits_admissions_to_what_the_shard_managed_less_the_queue() {
        let (o, _) = limiting();
        // 2,000/s managed, 3 ms of 100 ms to drain: 2,000 × 0.97.
        let limit = o.limit().unwrap();
        assert!((limit - 1940.0).abs() < 1e-6, "{limit}");
        assert_eq!(o.episodes(), 1);
    }

    #[test]
    fn while_limiting_the_shard_admits_its_limit_and_refuses_only_the_excess() {
        let (o, t0) = limiting();
        // Offered 4× the limit for the next 100 ms (no new sample): ~194 admitted, the rest
        // refused. The bucket starts empty; it holds at most 5 ms of admissions.
        let admitted = offer(&o, t0, 100 * MS, 100 * MS, 4 * 194);
        assert!((190..=195).contains(&admitted), "{admitted}");
        let (_, refused) = o.decisions();
        assert_eq!(refused, u64::from(4 * 194 - admitted));
        // Offered half the limit: everything admitted.
        let before = o.decisions().1;
        let admitted = offer(&o, t0, 210 * MS, 100 * MS, 97);
        assert_eq!(admitted, 97);
        assert_eq!(o.decisions().1, before);
    }

    #[test]
    fn the_limit_is_cut_while_the_queue_stands_and_raised_once_it_drains_under_refusals() {
        let (o, t0) = limiting();
        let first = o.limit().unwrap();
        // Next interval: refusals, and the delay still at least 25 ms (20 ms over the target):
        // cut by 20 %.
        offer(&o, t0, 100 * MS, 100 * MS, 1000);
        samples(&o, t0, 25 * MS, 110, 200);
        let cut = o.limit().unwrap();
        assert!((cut - first * 0.8).abs() < 1e-6, "{first} → {cut}");
        // A huge delay cuts at most by half.
        offer(&o, t0, 200 * MS, 100 * MS, 1000);
        samples(&o, t0, 900 * MS, 210, 300);
        let halved = o.limit().unwrap();
        assert!((halved - cut * 0.5).abs() < 1e-6, "{cut} → {halved}");
        // The queue drained at some point while work was refused: raised by GROWTH.
        offer(&o, t0, 300 * MS, 100 * MS, 1000);
        samples(&o, t0, 9 * MS, 310, 390);
        o.sample(2 * MS, t0 + 400 * MS);
        let raised = o.limit().unwrap();
        assert!(
            (raised - halved * (1.0 + GROWTH)).abs() < 1e-6,
            "{halved} → {raised}"
        );
        assert!(o.overloaded());
    }

    #[test]
    fn limiting_ends_when_the_queue_drained_and_nothing_was_refused() {
        let (o, t0) = limiting();
        // Demand fell under the limit: everything admitted, the delay low.
        assert_eq!(offer(&o, t0, 105 * MS, 95 * MS, 50), 50);
        samples(&o, t0, MS, 110, 200);
        assert!(!o.overloaded());
        assert_eq!(o.limit(), None);
        // Everything admitted again, however many.
        assert_eq!(offer(&o, t0, 200 * MS, MS, 1000), 1000);
        // A new episode needs a new whole interval above the target.
        samples(&o, t0, 9 * MS, 210, 300);
        assert!(!o.overloaded());
        o.sample(9 * MS, t0 + 310 * MS);
        assert!(o.overloaded());
        assert_eq!(o.episodes(), 2);
    }

    #[test]
    fn a_shard_that_admitted_nothing_still_admits_a_little_and_can_recover() {
        let (o, t0) = policy();
        // Above target for an interval without a single request (something else held it).
        samples(&o, t0, 50 * MS, 0, 100);
        assert_eq!(o.limit(), Some(10.0));
        // One admission per 100 ms; the rest refused.
        assert_eq!(offer(&o, t0, 100 * MS, 150 * MS, 150), 1);
    }

    #[test]
    fn low_priority_work_gets_only_the_spare_capacity() {
        let (o, t0) = limiting();
        // 1,940/s: the bucket holds 9.7 admissions; low priority needs it half full.
        let t = t0 + 150 * MS;
        // 50 ms without a request: the bucket is full.
        assert!(o.admit(Priority::Low, t));
        // Normal work takes the bucket down; low priority is refused once under half.
        let normal = (0..5).filter(|_| o.admit(Priority::Normal, t)).count();
        assert_eq!(normal, 5);
        assert!(!o.admit(Priority::Low, t), "3.7 left, under half of 9.7");
        assert!(o.admit(Priority::Normal, t));
        // Not limiting: low priority is admitted like anything else.
        let (calm, t0) = policy();
        assert!(calm.admit(Priority::Low, t0));
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
