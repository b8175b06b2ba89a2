//! When a source's next request arrives: Poisson, constant, bursty on/off, and rate schedules
//! (non-homogeneous Poisson by thinning: candidates at the peak rate, each kept with
//! probability rate(t)/peak).

use super::dist::Rng;
use crate::design::{Arrival, Source};

/// Candidates examined before giving up on a schedule that stays at rate zero.
const THINNING_LIMIT: u32 = 1_000_000;

fn rate_at(src: &Source, t: f64) -> f64 {
    src.schedule.as_ref().map_or(src.rate, |s| s.rate_at(t))
}

fn peak(src: &Source) -> f64 {
    src.schedule.as_ref().map_or(src.rate, |s| s.max_rate())
}

/// The next Poisson arrival after `now`, following the schedule if there is one.
fn poisson_after(src: &Source, now: f64, rng: &mut Rng) -> f64 {
    let top = peak(src);
    if src.schedule.is_none() {
        return now + rng.exponential(1.0 / top);
    }
    let mut t = now;
    for _ in 0..THINNING_LIMIT {
        t += rng.exponential(1.0 / top);
        if rng.uniform() * top <= rate_at(src, t) {
            return t;
        }
    }
    f64::INFINITY
}

/// The time of the request after the one at `now`.
pub(super) fn next_arrival(src: &Source, now: f64, rng: &mut Rng) -> f64 {
    match src.arrival {
        Arrival::Poisson => poisson_after(src, now, rng),
        Arrival::Constant => {
            let rate = rate_at(src, now);
            if rate > 0.0 {
                now + 1.0 / rate
            } else {
                // Silent for now: look again a little later (schedules are piecewise linear).
                poisson_after(src, now, rng)
            }
        }
        Arrival::OnOff { on, off } => {
            let period = on + off;
            let mut t = poisson_after(src, now, rng);
            // Arrivals that fall in a silent phase move to the next burst; Poisson is
            // memoryless, so restarting the draw there is exact.
            for _ in 0..THINNING_LIMIT {
                let phase = t.rem_euclid(period);
                if phase < on || !t.is_finite() {
                    return t;
                }
                t = poisson_after(src, t - phase + period, rng);
            }
            f64::INFINITY
        }
    }
}
