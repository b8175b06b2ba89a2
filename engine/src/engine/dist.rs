//! Random numbers and the service-time distributions of design documents.
//!
//! The generator is xoshiro256++ seeded through splitmix64: small, fast, and fixed here so a
//! seed gives the same run on every build (no dependency's algorithm can change under us).

/// A deterministic pseudo-random generator (xoshiro256++).
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator for `seed`; streams for different purposes use different seeds.
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in (0, 1]: safe under `ln`.
    fn open_uniform(&mut self) -> f64 {
        1.0 - self.uniform()
    }

    /// Exponential with the given mean.
    pub fn exponential(&mut self, mean: f64) -> f64 {
        -mean * self.open_uniform().ln()
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.open_uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// A distribution of durations, in seconds of simulated time.
#[derive(Debug, Clone, PartialEq)]
pub enum Dist {
    /// Always `secs`.
    Constant(f64),
    /// Exponential with this mean.
    Exponential(f64),
    /// Uniform between the two bounds.
    Uniform(f64, f64),
    /// Lognormal with this mean and standard deviation (of the duration itself).
    Lognormal {
        /// Mean of the underlying normal.
        mu: f64,
        /// Standard deviation of the underlying normal.
        sigma: f64,
    },
    /// Erlang: the sum of `k` exponentials, with this overall mean.
    Erlang(u32, f64),
    /// A discrete table of (seconds, cumulative probability).
    Empirical(Vec<(f64, f64)>),
}

impl Dist {
    /// A lognormal with the given mean and standard deviation of the duration.
    pub fn lognormal(mean: f64, stddev: f64) -> Dist {
        let sigma2 = (1.0 + (stddev / mean).powi(2)).ln();
        Dist::Lognormal {
            mu: mean.ln() - sigma2 / 2.0,
            sigma: sigma2.sqrt(),
        }
    }

    /// An empirical table from (seconds, weight) points; weights need not sum to 1.
    pub fn empirical(points: &[(f64, f64)]) -> Dist {
        let total: f64 = points.iter().map(|(_, w)| w).sum();
        let mut acc = 0.0;
        Dist::Empirical(
            points
                .iter()
                .map(|(v, w)| {
                    acc += w / total;
                    (*v, acc)
                })
                .collect(),
        )
    }

    /// One sample.
    pub fn sample(&self, rng: &mut Rng) -> f64 {
        match self {
            Dist::Constant(v) => *v,
            Dist::Exponential(mean) => rng.exponential(*mean),
            Dist::Uniform(lo, hi) => lo + (hi - lo) * rng.uniform(),
            Dist::Lognormal { mu, sigma } => (mu + sigma * rng.normal()).exp(),
            Dist::Erlang(k, mean) => {
                let stage = mean / f64::from(*k);
                (0..*k).map(|_| rng.exponential(stage)).sum()
            }
            Dist::Empirical(table) => {
                let u = rng.uniform();
                table
                    .iter()
                    .find(|(_, cum)| u < *cum)
                    .or(table.last())
                    .map_or(0.0, |(v, _)| *v)
            }
        }
    }

    /// The mean.
    pub fn mean(&self) -> f64 {
        match self {
            Dist::Constant(v) => *v,
            Dist::Exponential(mean) | Dist::Erlang(_, mean) => *mean,
            Dist::Uniform(lo, hi) => (lo + hi) / 2.0,
            Dist::Lognormal { mu, sigma } => (mu + sigma * sigma / 2.0).exp(),
            Dist::Empirical(table) => empirical_moment(table, |v| v),
        }
    }

    /// The second moment E[S²] (for Pollaczek–Khinchine).
    pub fn second_moment(&self) -> f64 {
        match self {
            Dist::Constant(v) => v * v,
            Dist::Exponential(mean) => 2.0 * mean * mean,
            Dist::Uniform(lo, hi) => (lo * lo + lo * hi + hi * hi) / 3.0,
            Dist::Lognormal { mu, sigma } => (2.0 * mu + 2.0 * sigma * sigma).exp(),
            Dist::Erlang(k, mean) => mean * mean * (1.0 + 1.0 / f64::from(*k)),
            Dist::Empirical(table) => empirical_moment(table, |v| v * v),
        }
    }
}

/// E[f(X)] of an empirical table of (value, cumulative probability).
fn empirical_moment(table: &[(f64, f64)], f: impl Fn(f64) -> f64) -> f64 {
    let mut prev = 0.0;
    table
        .iter()
        .map(|&(v, cum)| {
            let p = cum - prev;
            prev = cum;
            f(v) * p
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moments(d: &Dist, n: usize) -> (f64, f64) {
        let mut rng = Rng::new(42);
        let samples: Vec<f64> = (0..n).map(|_| d.sample(&mut rng)).collect();
        let mean = samples.iter().sum::<f64>() / n as f64;
        let m2 = samples.iter().map(|x| x * x).sum::<f64>() / n as f64;
        (mean, m2)
    }

    #[test]
    fn sample_moments_match_the_formulas() {
        let dists = [
            Dist::Constant(0.04),
            Dist::Exponential(0.1),
            Dist::Uniform(0.01, 0.03),
            Dist::lognormal(0.05, 0.02),
            Dist::Erlang(3, 0.06),
            Dist::empirical(&[(0.01, 1.0), (0.1, 3.0)]),
        ];
        for d in &dists {
            let (mean, m2) = moments(d, 400_000);
            assert!(
                (mean - d.mean()).abs() / d.mean() < 0.01,
                "{d:?}: mean {mean} vs {}",
                d.mean()
            );
            let rel = (m2 - d.second_moment()).abs() / d.second_moment();
            assert!(rel < 0.03, "{d:?}: E[S^2] {m2} vs {}", d.second_moment());
        }
    }

    #[test]
    fn same_seed_same_stream() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(Rng::new(7).next_u64(), Rng::new(8).next_u64());
    }
}
