//! The retry budget of one target, per shard: a token bucket that each call fills by
//! `mesh.retry_budget` tokens and each retry empties by one, topped up by
//! `mesh.retry_min_per_second` whatever the traffic. Retries therefore stay a bounded share of
//! calls when an instance fails, instead of multiplying the load on the others.

use std::time::Instant;

/// A retry budget over an injected clock.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    ratio: f64,
    min_per_second: f64,
    cap: f64,
    balance: f64,
    last_refill: Instant,
}

impl RetryBudget {
    /// A budget earning `ratio` tokens per call and `min_per_second` per second, full at `now`.
    pub fn new(ratio: f64, min_per_second: f64, now: Instant) -> RetryBudget {
        // Enough for a burst of retries after a quiet spell, not for a storm.
        let cap = (min_per_second + 100.0 * ratio).max(1.0);
        RetryBudget {
            ratio,
            min_per_second,
            cap,
            balance: cap,
            last_refill: now,
        }
    }

    /// A call was made: it earns its share of a retry.
    pub fn deposit(&mut self) {
        self.balance = (self.balance + self.ratio).min(self.cap);
    }

    /// Takes one retry at `now`; `false` when the budget is spent.
    pub fn withdraw(&mut self, now: Instant) -> bool {
        let elapsed = now
            .saturating_duration_since(self.last_refill)
            .as_secs_f64();
        self.last_refill = now;
        self.balance = (self.balance + elapsed * self.min_per_second).min(self.cap);
        if self.balance >= 1.0 {
            self.balance -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn retries_are_a_share_of_calls_once_the_reserve_is_spent() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(0.1, 0.0, t0);
        // The reserve: 100 × 0.1 = 10 retries.
        let reserve = (0..20).filter(|_| b.withdraw(t0)).count();
        assert_eq!(reserve, 10);
        // Then one retry per ten calls.
        let mut allowed = 0;
        for _ in 0..100 {
            b.deposit();
            if b.withdraw(t0) {
                allowed += 1;
            }
        }
        assert!(
            (9..=10).contains(&allowed),
            "{allowed} retries for 100 calls"
        );
    }

    #[test]
    fn the_minimum_refills_with_time_without_calls() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(0.0, 2.0, t0);
        assert!(b.withdraw(t0));
        assert!(b.withdraw(t0));
        assert!(!b.withdraw(t0), "two tokens at most");
        assert!(!b.withdraw(t0 + Duration::from_millis(400)));
        // 0.8 + 0.6 s × 2/s = 2.0: two more.
        assert!(b.withdraw(t0 + Duration::from_millis(1000)));
        assert!(b.withdraw(t0 + Duration::from_millis(1000)));
        assert!(!b.withdraw(t0 + Duration::from_millis(1000)));
    }

    #[test]
    fn deposits_never_exceed_the_cap() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(0.1, 0.0, t0);
        for _ in 0..10_000 {
            b.deposit();
        }
        assert_eq!((0..100).filter(|_| b.withdraw(t0)).count(), 10);
    }
}
