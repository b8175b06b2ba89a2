//! Goodput over time (schema version 2) and the metastability verdict: per window, the first
//! tries (offered load), all attempts, and the client requests answered successfully in time.
//! A run is **metastable** when its goodput stays below a threshold of its offered load after
//! the last fault has ended: the trigger is gone, the collapse sustains itself.

use crate::design::{Design, FaultAction};
use serde::Serialize;

/// What a window counts.
#[derive(Debug, Clone, Copy)]
pub(super) enum Counter {
    /// A client request's first try.
    Offered,
    /// Any attempt (first tries and retries).
    Attempt,
    /// A client request answered successfully in time.
    Good,
}

/// Counts per window of the whole run (warm-up included: a collapse can start there).
pub(super) struct GoodputSeries {
    window: f64,
    counts: Vec<[u64; 3]>,
}

impl GoodputSeries {
    pub(super) fn new(window: f64) -> GoodputSeries {
        GoodputSeries {
            window,
            counts: Vec::new(),
        }
    }

    pub(super) fn count(&mut self, now: f64, what: Counter) {
        let k = (now / self.window) as usize;
        if self.counts.len() <= k {
            self.counts.resize(k + 1, [0; 3]);
        }
        self.counts[k][what as usize] += 1;
    }

    /// The series up to `now`, as rates per second of each window's covered length.
    pub(super) fn points(&self, now: f64) -> Vec<GoodputPoint> {
        self.counts
            .iter()
            .enumerate()
            .filter_map(|(k, c)| {
                let start = k as f64 * self.window;
                let length = (now.min(start + self.window) - start).max(0.0);
                (length > 0.0).then(|| GoodputPoint {
                    t_s: start,
                    offered_per_s: c[Counter::Offered as usize] as f64 / length,
                    attempts_per_s: c[Counter::Attempt as usize] as f64 / length,
                    goodput_per_s: c[Counter::Good as usize] as f64 / length,
                })
            })
            .collect()
    }
}

/// One window of the goodput series.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct GoodputPoint {
    /// Start of the window (simulated seconds).
    pub t_s: f64,
    /// First tries per second: the load the clients offer.
    pub offered_per_s: f64,
    /// Attempts per second (first tries and retries): the load the system receives.
    pub attempts_per_s: f64,
    /// Client requests answered successfully in time, per second.
    pub goodput_per_s: f64,
}

impl GoodputPoint {
    /// Goodput as a share of the offered load (1 when nothing was offered).
    pub fn ratio(&self) -> f64 {
        if self.offered_per_s > 0.0 {
            self.goodput_per_s / self.offered_per_s
        } else {
            1.0
        }
    }
}

/// Whether the run came back after its faults.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Metastability {
    /// `unaffected` (goodput never fell below the threshold from the first fault on),
    /// `recovered` (it fell, and stayed at or above it from `recovered_at_s` to the end), or
    /// `metastable` (still below it in the last window, long after the trigger ended).
    pub verdict: String,
    /// When the last fault ended (simulated seconds).
    pub trigger_end_s: f64,
    /// Start of the window from which goodput stayed at or above the threshold.
    pub recovered_at_s: Option<f64>,
    /// The goodput / offered threshold of the verdict.
    pub threshold: f64,
    /// Goodput / offered load over the whole time after the trigger ended.
    pub goodput_ratio_after: f64,
}

/// The verdict of a run whose series is `points` at `now`; `None` without a fault that ends
/// before the run does (nothing to recover from).
pub(super) fn verdict(design: &Design, points: &[GoodputPoint], now: f64) -> Option<Metastability> {
    let mut first_start = f64::INFINITY;
    let mut trigger_end = f64::NEG_INFINITY;
    for fault in &design.faults {
        let end = match (&fault.action, fault.duration) {
            (FaultAction::Flush { .. }, _) => fault.at,
            (_, Some(d)) => fault.at + d,
            (_, None) => return None,
        };
        first_start = first_start.min(fault.at);
        trigger_end = trigger_end.max(end);
    }
    if !trigger_end.is_finite() || trigger_end >= now {
        return None;
    }
    let threshold = design.goodput.threshold;
    // Windows wholly after the trigger, with load offered.
    let after: Vec<&GoodputPoint> = points
        .iter()
        .filter(|p| p.t_s >= trigger_end && p.offered_per_s > 0.0)
        .collect();
    let last = after.last()?;
    let (good, offered) = after.iter().fold((0.0, 0.0), |(g, o), p| {
        (g + p.goodput_per_s, o + p.offered_per_s)
    });
    let goodput_ratio_after = good / offered;
    let affected = points
        .iter()
        .any(|p| p.t_s + design.goodput.window > first_start && p.ratio() < threshold);
    let recovered_at = after
        .iter()
        .rposition(|p| p.ratio() < threshold)
        .map_or(Some(after[0].t_s), |k| after.get(k + 1).map(|p| p.t_s));
    let verdict = if last.ratio() < threshold {
        "metastable"
    } else if affected {
        "recovered"
    } else {
        "unaffected"
    };
    Some(Metastability {
        verdict: verdict.to_string(),
        trigger_end_s: trigger_end,
        recovered_at_s: if verdict == "metastable" {
            None
        } else {
            recovered_at
        },
        threshold,
        goodput_ratio_after,
    })
}
