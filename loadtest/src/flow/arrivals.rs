//! The arrival schedule of the users, sans IO: with phases of rate r₀ → r₁ over D back to back,
//! the expected number of arrivals by time t is the integral N(t) of the rate, and user k
//! arrives at the t where N(t) = k. Deterministic, so a phase of `rate × duration` users
//! starts exactly that many (the phase boundary is exact: a count is carried over, not a time).

use crate::run::Phase;

/// Users' intended arrival times, in seconds from the start, in order.
#[derive(Debug, Clone)]
pub struct Arrivals<'a> {
    phases: &'a [Phase],
    /// The phase the next user falls in.
    phase: usize,
    /// When that phase starts, s.
    begin: f64,
    /// Arrivals before that phase (N at its start; need not be whole).
    before: f64,
    /// The next user's number.
    next: u64,
}

/// Below this, two counts are the same (float error in N, never a user).
const EPSILON: f64 = 1e-6;

impl<'a> Arrivals<'a> {
    /// The schedule of `phases` (rates in users per second, all positive).
    pub fn new(phases: &'a [Phase]) -> Arrivals<'a> {
        Arrivals {
            phases,
            phase: 0,
            begin: 0.0,
            before: 0.0,
            next: 0,
        }
    }

    /// Users in `phase`: the integral of its rate (may be fractional).
    pub fn expected(phase: &Phase) -> f64 {
        let end = phase.ramp_to.unwrap_or(phase.rate);
        phase.duration.as_secs_f64() * (phase.rate + end) / 2.0
    }

    /// Which phase the user arriving at `t` belongs to.
    pub fn phase_of(phases: &[Phase], t: f64) -> usize {
        let mut begin = 0.0;
        for (i, p) in phases.iter().enumerate() {
            begin += p.duration.as_secs_f64();
            if t < begin {
                return i;
            }
        }
        phases.len().saturating_sub(1)
    }
}

impl Iterator for Arrivals<'_> {
    /// (user number, seconds from the start, phase).
    type Item = (u64, f64, usize);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let phase = self.phases.get(self.phase)?;
            let local = self.next as f64 - self.before;
            let count = Self::expected(phase);
            if local < count - EPSILON {
                // Solve r₀τ + (r₁ − r₀)τ²/(2D) = local for τ, in the form that stays exact
                // when r₁ = r₀: τ = 2·local / (r₀ + √(r₀² + 2·local·(r₁ − r₀)/D)).
                let d = phase.duration.as_secs_f64();
                let r0 = phase.rate;
                let slope = (phase.ramp_to.unwrap_or(r0) - r0) / d;
                let root = (r0 * r0 + 2.0 * local.max(0.0) * slope).max(0.0).sqrt();
                let tau = (2.0 * local.max(0.0) / (r0 + root)).min(d);
                let user = self.next;
                self.next += 1;
                return Some((user, self.begin + tau, self.phase));
            }
            self.before += count;
            self.begin += phase.duration.as_secs_f64();
            self.phase += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn phase(seconds: f64, rate: f64, ramp_to: Option<f64>) -> Phase {
        Phase {
            duration: Duration::from_secs_f64(seconds),
            rate,
            ramp_to,
        }
    }

    #[test]
    fn each_phase_starts_rate_times_duration_users_in_order() {
        let phases = [
            phase(2.0, 10.0, None),
            phase(2.0, 10.0, Some(30.0)),
            phase(1.0, 5.0, None),
            phase(0.1, 7.0, None),
        ];
        let all: Vec<_> = Arrivals::new(&phases).collect();
        let per_phase: Vec<usize> = (0..phases.len())
            .map(|p| all.iter().filter(|a| a.2 == p).count())
            .collect();
        // 20, (10 + 30) / 2 × 2 = 40, 5, then 0.7 → the one user at its start.
        assert_eq!(per_phase, vec![20, 40, 5, 1]);
        assert!(all
            .windows(2)
            .all(|w| w[0].1 < w[1].1 && w[0].0 + 1 == w[1].0));
        // Constant: k / rate exactly; a phase starts at its boundary.
        assert_eq!(all[3].1, 0.3);
        assert_eq!(all[20].1, 2.0);
        assert!((all[60].1 - 4.0).abs() < 1e-9, "{}", all[60].1);
        // The ramp's gaps shrink as its rate grows.
        let gap = |i: usize| all[i + 1].1 - all[i].1;
        assert!(gap(21) > gap(40) && gap(40) > gap(58));
        for (_, t, p) in &all {
            assert_eq!(Arrivals::phase_of(&phases, *t), *p);
        }
    }

    #[test]
    fn fractional_counts_carry_over_to_the_next_phase() {
        // 2.5 users, then 2.5: 3 arrive in the first (0, 0.2, 0.4 s) and 2 in the second.
        let phases = [phase(0.5, 5.0, None), phase(0.5, 5.0, None)];
        let all: Vec<_> = Arrivals::new(&phases).collect();
        assert_eq!(all.len(), 5);
        assert_eq!(all.iter().filter(|a| a.2 == 0).count(), 3);
        assert!((all[3].1 - 0.6).abs() < 1e-9, "{:?}", all);
    }
}
