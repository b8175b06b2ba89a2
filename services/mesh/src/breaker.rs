//! The circuit breaker of one target instance, as a state machine over an injected clock:
//! closed → open (consecutive failures, or the error rate of a window) → half-open after the
//! cool-down, when exactly one probe call goes through → closed on its success, open again on
//! its failure.

use std::time::{Duration, Instant};

/// Where a breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are refused until the cool-down ends.
    Open,
    /// One probe call is allowed; the others are refused until it ends.
    HalfOpen,
}

impl BreakerState {
    /// The state's name as metrics label it.
    pub fn name(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// The value of the `sdsim_upstream_breaker_state` gauge: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

/// Whether a call may go to the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Yes, as an ordinary call.
    Call,
    /// Yes, as the half-open breaker's only probe: its outcome decides the state.
    Probe,
    /// No: the breaker is open (or half-open with its probe out).
    Refused,
}

/// The thresholds of a breaker (from `[mesh]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerPolicy {
    /// Consecutive failures that open it.
    pub failures: u32,
    /// Error rate over a window that opens it.
    pub error_rate: f64,
    /// The window.
    pub window: Duration,
    /// Calls in a window before its error rate counts.
    pub min_calls: u32,
    /// How long it stays open before a probe.
    pub cooldown: Duration,
}

/// One instance's breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    policy: BreakerPolicy,
    state: BreakerState,
    opened_at: Instant,
    probe_out: bool,
    consecutive: u32,
    window_start: Instant,
    window_calls: u32,
    window_failures: u32,
}

impl Breaker {
    /// A closed breaker whose first window starts at `now`.
    pub fn new(policy: BreakerPolicy, now: Instant) -> Breaker {
        Breaker {
            policy,
            state: BreakerState::Closed,
            opened_at: now,
            probe_out: false,
            consecutive: 0,
            window_start: now,
            window_calls: 0,
            window_failures: 0,
        }
    }

    /// Its state at `now` (an open breaker past its cool-down reads half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.state {
            BreakerState::Open if now.duration_since(self.opened_at) >= self.policy.cooldown => {
                BreakerState::HalfOpen
            }
            s => s,
        }
    }

    /// Whether a call may start at `now`; a [`Admission::Probe`] must be followed by
    /// [`Breaker::record`] (or [`Breaker::abandon`] when it never reached the instance).
    /// Returns the state change it caused, if any.
    pub fn admit(&mut self, now: Instant) -> (Admission, Option<BreakerState>) {
        let before = self.state;
        self.state = self.state(now);
        let changed = (self.state != before).then_some(self.state);
        let admission = match self.state {
            BreakerState::Closed => Admission::Call,
            BreakerState::Open => Admission::Refused,
            BreakerState::HalfOpen if self.probe_out => Admission::Refused,
            BreakerState::HalfOpen => {
                self.probe_out = true;
                Admission::Probe
            }
        };
        (admission, changed)
    }

    /// Whether a call may start at `now`, without taking the probe.
    pub fn would_admit(&self, now: Instant) -> bool {
        match self.state(now) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => !self.probe_out,
        }
    }

    /// The outcome of a call admitted earlier; returns the new state when it changed.
    pub fn record(&mut self, now: Instant, success: bool) -> Option<BreakerState> {
        if now.duration_since(self.window_start) >= self.policy.window {
            self.window_start = now;
            self.window_calls = 0;
            self.window_failures = 0;
        }
        self.window_calls += 1;
        if success {
            self.consecutive = 0;
        } else {
            self.consecutive += 1;
            self.window_failures += 1;
        }
        let next = match self.state(now) {
            BreakerState::HalfOpen if self.probe_out => {
                self.probe_out = false;
                if success {
                    self.reset_window(now);
                    BreakerState::Closed
                } else {
                    self.opened_at = now;
                    BreakerState::Open
                }
            }
            BreakerState::Closed if !success && self.trips() => {
                self.opened_at = now;
                BreakerState::Open
            }
            s => s,
        };
        let changed = (next != self.state).then_some(next);
        self.state = next;
        changed
    }

    /// Opens it at `now` whatever the counts say: the instance stopped answering the
    /// connection's pings (a frozen or partitioned process accepts connections and calls but
    /// answers nothing, so waiting for calls to fail would take their whole deadline). An open
    /// breaker's cool-down starts again. Returns the new state when it changed.
    pub fn trip(&mut self, now: Instant) -> Option<BreakerState> {
        let before = self.state(now);
        self.state = BreakerState::Open;
        self.opened_at = now;
        self.probe_out = false;
        (before != BreakerState::Open).then_some(BreakerState::Open)
    }

    /// A probe that never reached the instance (cancelled, deadline before sending): the next
    /// call may probe instead.
    pub fn abandon(&mut self) {
        self.probe_out = false;
    }

    fn trips(&self) -> bool {
        self.consecutive >= self.policy.failures
            || (self.window_calls >= self.policy.min_calls
                && f64::from(self.window_failures)
                    >= self.policy.error_rate * f64::from(self.window_calls))
    }

    fn reset_window(&mut self, now: Instant) {
        self.consecutive = 0;
        self.window_start = now;
        self.window_calls = 0;
        self.window_failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Admission::*;
    use BreakerState::*;

    const S: Duration = Duration::from_secs(1);

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            failures: 5,
            error_rate: 0.5,
            window: 10 * S,
            min_calls: 20,
            cooldown: 5 * S,
        }
    }

    /// Events at times (seconds after start) and what the breaker says after each.
    #[test]
    fn consecutive_failures_open_it_and_one_probe_closes_it() {
        let t0 = Instant::now();
        let mut b = Breaker::new(policy(), t0);
        for i in 0..4 {
            assert_eq!(b.admit(t0).0, Call);
            assert_eq!(b.record(t0, false), None, "failure {i} keeps it closed");
        }
        assert_eq!(b.record(t0, false), Some(Open), "the fifth opens it");
        assert_eq!(b.admit(t0 + 4 * S), (Refused, None));
        assert_eq!(b.state(t0 + 5 * S), HalfOpen);
        assert_eq!(b.admit(t0 + 5 * S), (Probe, Some(HalfOpen)));
        assert_eq!(b.admit(t0 + 5 * S).0, Refused, "one probe at a time");
        assert!(!b.would_admit(t0 + 5 * S));
        assert_eq!(b.record(t0 + 6 * S, true), Some(Closed));
        assert_eq!(b.admit(t0 + 6 * S), (Call, None));
    }

    #[test]
    fn a_failed_probe_opens_it_for_another_cooldown() {
        let t0 = Instant::now();
        let mut b = Breaker::new(policy(), t0);
        for _ in 0..5 {
            b.record(t0, false);
        }
        assert_eq!(b.admit(t0 + 5 * S).0, Probe);
        assert_eq!(b.record(t0 + 5 * S, false), Some(Open));
        assert_eq!(b.admit(t0 + 9 * S).0, Refused);
        assert_eq!(b.admit(t0 + 10 * S).0, Probe);
    }

    #[test]
    fn a_trip_opens_it_at_once_and_restarts_an_open_ones_cooldown() {
        let t0 = Instant::now();
        let mut b = Breaker::new(policy(), t0);
        assert_eq!(b.trip(t0), Some(Open));
        assert_eq!(b.admit(t0).0, Refused);
        // Tripped again just before the cool-down ends: it stays open a whole cool-down more.
        let late = t0 + policy().cooldown - S / 10;
        assert_eq!(b.trip(late), None);
        assert_eq!(b.admit(t0 + policy().cooldown).0, Refused);
        assert_eq!(b.admit(late + policy().cooldown).0, Probe);
        assert_eq!(b.record(late + policy().cooldown, true), Some(Closed));
        // A half-open breaker whose probe is out is tripped back to open.
        let mut b = Breaker::new(policy(), t0);
        b.trip(t0);
        assert_eq!(b.admit(t0 + policy().cooldown).0, Probe);
        assert_eq!(b.trip(t0 + policy().cooldown), Some(Open));
        assert_eq!(b.admit(t0 + policy().cooldown).0, Refused);
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_call_probe() {
        let t0 = Instant::now();
        let mut b = Breaker::new(policy(), t0);
        for _ in 0..5 {
            b.record(t0, false);
        }
        assert_eq!(b.admit(t0 + 5 * S).0, Probe);
        b.abandon();
        assert_eq!(b.admit(t0 + 5 * S).0, Probe);
    }

    #[test]
    fn the_error_rate_of_a_window_opens_it() {
        let t0 = Instant::now();
        let mut b = Breaker::new(policy(), t0);
        // Alternating: never 5 in a row, 50 % over the window.
        let mut opened = None;
        for i in 0..20 {
            if let Some(s) = b.record(t0 + S, i % 2 == 0) {
                opened = Some((i, s));
            }
        }
        assert_eq!(
            opened,
            Some((19, Open)),
            "the 20th call reaches min_calls at 50 %"
        );
    }

    #[test]
    fn an_old_window_does_not_count() {
        let t0 = Instant::now();
        let mut b = Breaker::new(policy(), t0);
        for i in 0..19 {
            b.record(t0, i % 2 == 0);
        }
        // The window has passed: its failures no longer count.
        assert_eq!(b.record(t0 + 11 * S, false), None);
        assert_eq!(b.state(t0 + 11 * S), Closed);
    }

    #[test]
    fn successes_reset_the_consecutive_count() {
        let t0 = Instant::now();
        let mut b = Breaker::new(policy(), t0);
        for _ in 0..4 {
            b.record(t0, false);
        }
        b.record(t0, true);
        for _ in 0..4 {
            assert_eq!(b.record(t0, false), None);
        }
    }
}
