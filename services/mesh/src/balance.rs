//! Balancing: power of two choices over the instances a call may go to, scored by in-flight
//! calls and a moving average of latency; within an instance, the least-loaded connection.
//! The random source is injected so tests are deterministic.

use std::time::{Duration, Instant};

/// What the balancer knows of one instance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InstanceLoad {
    /// Whether it may take the call (healthy, not draining, breaker admits).
    pub eligible: bool,
    /// Calls in flight to it from this shard.
    pub in_flight: u32,
    /// Moving average of its latency (microseconds; 0 before any call).
    pub latency_us: f64,
}

impl InstanceLoad {
    /// Lower is better: expected wait, (in-flight + 1) × latency. An instance with no latency
    /// yet scores by in-flight calls alone, so new instances get tried.
    pub fn score(&self) -> f64 {
        f64::from(self.in_flight + 1) * self.latency_us.max(1.0)
    }
}

/// The instance (index into `loads`) a call goes to, or `None` when none is eligible. Two
/// distinct eligible instances are drawn with `random`; the lower score wins (the first drawn
/// on a tie).
pub fn pick(loads: &[InstanceLoad], random: &mut dyn FnMut() -> u64) -> Option<usize> {
    let eligible: Vec<usize> = (0..loads.len()).filter(|&i| loads[i].eligible).collect();
    match eligible.len() {
        0 => None,
        1 => Some(eligible[0]),
        n => {
            let a = (random() % n as u64) as usize;
            // A second draw among the others, so the two are distinct.
            let b = (a + 1 + (random() % (n as u64 - 1)) as usize) % n;
            let (a, b) = (eligible[a], eligible[b]);
            Some(if loads[b].score() < loads[a].score() {
                b
            } else {
                a
            })
        }
    }
}

/// The connection (index) with the fewest calls in flight; the first on a tie.
pub fn least_loaded(in_flight: &[u32]) -> Option<usize> {
    (0..in_flight.len()).min_by_key(|&i| in_flight[i])
}

/// An exponentially weighted moving average of latency that also fades with time since its
/// last sample, so an instance that was slow once is tried again after a while instead of
/// losing every draw for ever (the "peak EWMA" idea of linkerd and finagle).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Ewma {
    value_us: f64,
    at: Option<Instant>,
}

impl Ewma {
    /// Weight of a new sample: about the last ten calls count.
    const ALPHA: f64 = 0.2;
    /// Time constant of the fading: after this long without a sample, the average is 1/e of
    /// what it was.
    const FADE: Duration = Duration::from_secs(1);

    /// Adds one sample taken at `now`.
    pub fn observe(&mut self, latency: Duration, now: Instant) {
        let sample = latency.as_secs_f64() * 1e6;
        let current = self.micros(now);
        self.value_us = if self.at.is_none() {
            sample
        } else {
            current + Self::ALPHA * (sample - current)
        };
        self.at = Some(now);
    }

    /// The average at `now`, in microseconds (0 before any sample).
    pub fn micros(&self, now: Instant) -> f64 {
        match self.at {
            None => 0.0,
            Some(at) => {
                let idle = now.saturating_duration_since(at).as_secs_f64();
                self.value_us * (-idle / Self::FADE.as_secs_f64()).exp()
            }
        }
    }
}

/// A small fast random source (xorshift64*), seeded per target; not for secrets.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from `seed` (0 is replaced, xorshift needs a non-zero state).
    pub fn new(seed: u64) -> XorShift {
        XorShift(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(eligible: bool, in_flight: u32, latency_us: f64) -> InstanceLoad {
        InstanceLoad {
            eligible,
            in_flight,
            latency_us,
        }
    }

    /// A scripted random source.
    fn script(values: &[u64]) -> impl FnMut() -> u64 + '_ {
        let mut i = 0;
        move || {
            let v = values[i % values.len()];
            i += 1;
            v
        }
    }

    #[test]
    fn the_table() {
        type Row = (&'static str, Vec<InstanceLoad>, Vec<u64>, Option<usize>);
        let rows: Vec<Row> = vec![
            ("none", vec![], vec![0], None),
            ("none eligible", vec![load(false, 0, 0.0); 3], vec![0], None),
            (
                "the only eligible",
                vec![load(false, 0, 0.0), load(true, 9, 900.0)],
                vec![0],
                Some(1),
            ),
            (
                "fewer in flight wins",
                vec![load(true, 5, 100.0), load(true, 1, 100.0)],
                vec![0, 0],
                Some(1),
            ),
            (
                "lower latency wins",
                vec![load(true, 1, 100.0), load(true, 1, 900.0)],
                vec![1, 0],
                Some(0),
            ),
            (
                "tie: the first drawn",
                vec![load(true, 1, 100.0), load(true, 1, 100.0)],
                vec![1, 0],
                Some(1),
            ),
            (
                "draws among eligible only: 0 → #1, then +1 → #3",
                vec![
                    load(false, 0, 0.0),
                    load(true, 3, 10.0),
                    load(true, 0, 1.0),
                    load(true, 1, 10.0),
                ],
                vec![0, 1],
                Some(3),
            ),
            (
                "the loaded one loses even when drawn first",
                vec![
                    load(true, 50, 1000.0),
                    load(true, 0, 1000.0),
                    load(true, 0, 1.0),
                ],
                vec![0, 0],
                Some(1),
            ),
        ];
        for (name, loads, random, want) in rows {
            let mut r = script(&random);
            assert_eq!(pick(&loads, &mut r), want, "{name}");
        }
    }

    #[test]
    fn a_draining_instance_is_never_picked() {
        let loads = [
            load(true, 100, 1e6),
            load(false, 0, 0.0),
            load(true, 100, 1e6),
        ];
        let mut rng = XorShift::new(7);
        for _ in 0..1000 {
            assert_ne!(pick(&loads, &mut || rng.next_u64()), Some(1));
        }
    }

    #[test]
    fn equal_instances_share_the_calls() {
        let loads = [load(true, 0, 100.0); 3];
        let mut rng = XorShift::new(42);
        let mut counts = [0u32; 3];
        for _ in 0..3000 {
            counts[pick(&loads, &mut || rng.next_u64()).unwrap()] += 1;
        }
        // Ties go to the first drawn, which is uniform.
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }

    #[test]
    fn least_loaded_connection_and_latency_average() {
        assert_eq!(least_loaded(&[]), None);
        assert_eq!(least_loaded(&[3, 1, 1, 2]), Some(1));
        let t0 = Instant::now();
        let mut e = Ewma::default();
        assert_eq!(e.micros(t0), 0.0);
        e.observe(Duration::from_micros(100), t0);
        assert_eq!(e.micros(t0), 100.0);
        e.observe(Duration::from_micros(600), t0);
        assert_eq!(e.micros(t0), 200.0);
    }

    #[test]
    fn an_idle_average_fades_so_a_once_slow_instance_is_tried_again() {
        let t0 = Instant::now();
        let mut slow = Ewma::default();
        slow.observe(Duration::from_millis(10), t0);
        let later = t0 + Duration::from_secs(3);
        // e^-3 of 10 ms is about 0.5 ms.
        assert!((slow.micros(later) - 10_000.0 * (-3.0f64).exp()).abs() < 1e-6);
        let mut fast = Ewma::default();
        fast.observe(Duration::from_millis(1), later);
        let loads = [
            InstanceLoad {
                eligible: true,
                in_flight: 0,
                latency_us: slow.micros(later),
            },
            InstanceLoad {
                eligible: true,
                in_flight: 0,
                latency_us: fast.micros(later),
            },
        ];
        assert_eq!(
            pick(&loads, &mut || 1),
            Some(0),
            "the faded one wins the draw"
        );
    }
}
