//! Response-time counts recorded in the bucket layout of an HDR histogram of 1 µs to one
//! hour at 3 significant digits, turned into an `hdrhistogram::Histogram` only when a
//! report asks for one.
//!
//! Why: the simulation records a latency at every departure, and `Histogram::record` (range
//! checks, min/max tracking, saturating adds, not inlined) cost about a tenth of the engine's
//! time on a five-component model. Recording here is one index computation and one add; the
//! histogram built from these counts has the same count in every bucket as one recorded
//! directly, so every percentile, maximum and count a report reads is the same.

use hdrhistogram::Histogram;

/// Largest latency held, in microseconds of simulated time (one hour); smallest is 1.
pub(super) const MAX_US: u64 = 3_600_000_000;
/// Significant decimal digits kept.
const SIGNIFICANT_DIGITS: u8 = 3;
/// log2 of the sub-buckets per bucket: 2 × 10³ rounded up to a power of two is 2,048.
const SUB_BUCKET_BITS: u32 = 11;
/// Values below this share bucket 0 at full resolution.
const SUB_BUCKET_MASK: u64 = (1 << SUB_BUCKET_BITS) - 1;
/// Half the sub-buckets: buckets after the first use only their upper half.
const HALF_BITS: u32 = SUB_BUCKET_BITS - 1;

/// Bucket indexes held back before they are counted.
const PENDING: usize = 128;

/// Response times in HDR buckets, in microseconds.
///
/// A response's bucket is noted in `pending` and counted when `PENDING` have gathered: an
/// increment whose address waits on the time's conversion held up the loads after it at
/// every departure (8 % of the engine's time on bench-five, measured by leaving it out),
/// while a note goes to the next slot, whose address is known early.
#[derive(Clone)]
pub(super) struct LatencyCounts {
    counts: Vec<u64>,
    pending: [u32; PENDING],
    pending_len: usize,
}

impl std::fmt::Debug for LatencyCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyCounts")
            .field("recorded", &self.histogram().len())
            .finish()
    }
}

/// The bucket of `value` (1 ≤ value ≤ [`MAX_US`]), as HDR computes it for a lowest
/// discernible value of 1 (unit magnitude 0).
#[inline]
fn index_of(value: u64) -> usize {
    // The power of two above bucket 0's range that `value` reaches.
    let bucket = (64 - SUB_BUCKET_BITS) - (value | SUB_BUCKET_MASK).leading_zeros();
    let sub_bucket = value >> bucket;
    (((bucket + 1) as usize) << HALF_BITS) + sub_bucket as usize - (1 << HALF_BITS)
}

/// The smallest value that falls in bucket `index` (the inverse of [`index_of`]).
fn value_of(index: usize) -> u64 {
    let half = 1usize << HALF_BITS;
    let bucket = (index >> HALF_BITS) as i64 - 1;
    let sub_bucket = (index & (half - 1)) + half;
    if bucket < 0 {
        (sub_bucket - half) as u64
    } else {
        (sub_bucket as u64) << bucket
    }
}

impl LatencyCounts {
    /// No response times.
    pub(super) fn new() -> LatencyCounts {
        LatencyCounts {
            counts: vec![0; index_of(MAX_US) + 1],
            pending: [0; PENDING],
            pending_len: 0,
        }
    }

    /// Counts one response of `us` microseconds, held to [1, [`MAX_US`]].
    #[cfg(test)]
    fn record(&mut self, us: u64) {
        self.note(index_of(us.clamp(1, MAX_US)));
    }

    /// Counts one response of `seconds`, rounded to the nearest microsecond and held to
    /// [1, [`MAX_US`]]: what `record((seconds * 1e6 + 0.5) as u64)` counts, NaN and negative
    /// times included, without the saturating float-to-`u64` conversion (two conversions and
    /// four selects at every departure, on the path to the bucket increment).
    #[inline]
    pub(super) fn record_seconds(&mut self, seconds: f64) {
        let us = seconds * 1e6 + 0.5;
        let us = if us >= 1.0 {
            if us < MAX_US as f64 {
                // In range for `i64`, whose conversion is one instruction: the same truncation.
                us as i64 as u64
            } else {
                MAX_US
            }
        } else {
            // Below a microsecond, negative, or NaN.
            1
        };
        self.note(index_of(us));
    }

    /// Notes one response in bucket `index`, counting the notes when there are enough.
    #[inline]
    fn note(&mut self, index: usize) {
        self.pending[self.pending_len] = index as u32;
        self.pending_len += 1;
        if self.pending_len == PENDING {
            for &i in &self.pending {
                self.counts[i as usize] += 1;
            }
            self.pending_len = 0;
        }
    }

    /// The count of bucket `index`, the notes not yet counted included.
    #[cfg(test)]
    fn count(&self, index: usize) -> u64 {
        let noted = self.pending[..self.pending_len]
            .iter()
            .filter(|&&i| i as usize == index)
            .count();
        self.counts[index] + noted as u64
    }

    /// The counts as an HDR histogram of the same buckets.
    pub(super) fn histogram(&self) -> Histogram<u64> {
        let mut h =
            Histogram::new_with_bounds(1, MAX_US, SIGNIFICANT_DIGITS).expect("valid bounds");
        let mut counts = self.counts.clone();
        for &i in &self.pending[..self.pending_len] {
            counts[i as usize] += 1;
        }
        for (index, &count) in counts.iter().enumerate() {
            if count > 0 {
                h.record_n(value_of(index), count)
                    .expect("every bucket's values are in range");
            }
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::super::dist::Rng;
    use super::*;

    /// The same response times recorded here and straight into an HDR histogram of the same
    /// bounds give the same percentiles, maximum, minimum, mean and counts between bounds.
    #[test]
    fn matches_a_histogram_recorded_directly() {
        let mut rng = Rng::new(11);
        let mut counts = LatencyCounts::new();
        let mut direct = Histogram::<u64>::new_with_bounds(1, MAX_US, 3).expect("bounds");
        // Spread over every bucket: log-uniform from 1 µs to past the top, plus the edges.
        let mut values: Vec<u64> = (0..200_000)
            .map(|_| (2f64.powf(rng.uniform() * 33.0)) as u64)
            .collect();
        values.extend([
            0,
            1,
            2047,
            2048,
            2049,
            4095,
            4096,
            MAX_US - 1,
            MAX_US,
            u64::MAX,
        ]);
        for v in values {
            counts.record(v);
            direct
                .record(v.clamp(1, MAX_US))
                .expect("clamped into range");
        }
        let built = counts.histogram();
        assert_eq!(built.len(), direct.len());
        assert_eq!(built.max(), direct.max());
        // Reports read the maximum as the 100th percentile.
        assert_eq!(built.value_at_quantile(1.0), direct.max());
        assert_eq!(built.min_nz(), direct.min_nz());
        assert_eq!(built.mean(), direct.mean());
        for q in [0.0, 0.001, 0.1, 0.5, 0.9, 0.95, 0.99, 0.999, 0.9999, 1.0] {
            assert_eq!(
                built.value_at_quantile(q),
                direct.value_at_quantile(q),
                "q {q}"
            );
        }
        for high in [0, 1, 999, 2048, 5_000, 1_000_000, MAX_US] {
            assert_eq!(built.count_between(0, high), direct.count_between(0, high));
        }
        for (a, b) in built.iter_recorded().zip(direct.iter_recorded()) {
            assert_eq!(a.value_iterated_to(), b.value_iterated_to());
            assert_eq!(a.count_at_value(), b.count_at_value());
        }
    }

    /// `record_seconds` counts each time in the bucket the rounded, clamped conversion picks.
    #[test]
    fn seconds_go_where_the_saturating_conversion_puts_them() {
        let mut rng = Rng::new(5);
        let mut seconds: Vec<f64> = (0..100_000)
            .map(|_| 2f64.powf(rng.uniform() * 40.0 - 24.0))
            .collect();
        seconds.extend([
            f64::NAN,
            f64::NEG_INFINITY,
            -1.0,
            -0.0,
            0.0,
            0.4e-6,
            0.5e-6,
            1.4999e-6,
            3_599.999_999_4,
            3_599.999_999_5,
            3_600.0,
            1e300,
            f64::INFINITY,
        ]);
        let mut counts = LatencyCounts::new();
        for s in seconds {
            let expected = index_of(((s * 1e6 + 0.5) as u64).clamp(1, MAX_US));
            let before = counts.count(expected);
            counts.record_seconds(s);
            assert_eq!(counts.count(expected), before + 1, "{s} s");
        }
    }
}
