//! Caches with a capacity (schema version 2): entries, a time to live, an eviction policy and a
//! key space with a popularity; the hit ratio emerges from the traffic.

use super::{Checker, POSITIVE};
use sonic_rs::{JsonValueTrait, Value};

/// A cache that holds `capacity` of `keys` keys.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheModel {
    /// Entries it holds.
    pub capacity: u32,
    /// An entry expires this long after it was filled (seconds).
    pub ttl: Option<f64>,
    /// Which entry makes room for a new one.
    pub eviction: Eviction,
    /// Distinct keys requested.
    pub keys: u32,
    /// How requests pick a key.
    pub popularity: Popularity,
}

/// Which entry leaves a full cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// The least recently used.
    Lru,
    /// The oldest filled.
    Fifo,
}

/// How requests pick a key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Popularity {
    /// Every key equally likely.
    Uniform,
    /// Key k (1-based) with probability proportional to 1 / k^exponent.
    Zipf(f64),
}

/// Most keys of one cache (the engine keeps a few bytes per key).
pub const MAX_KEYS: u64 = 1_000_000;

impl CacheModel {
    /// The hit ratio of an ideal cache holding the `capacity` most popular keys: an estimate
    /// for sizing only (the run measures the real one).
    pub fn estimated_hit_ratio(&self) -> f64 {
        let held = self.capacity.min(self.keys);
        match self.popularity {
            Popularity::Uniform => f64::from(held) / f64::from(self.keys),
            Popularity::Zipf(s) => zipf_mass(held, s) / zipf_mass(self.keys, s),
        }
    }
}

/// The sum of k^-s for k in 1..=n: exact for the first terms, then the integral (the terms
/// change slowly there, and a design may have millions of keys).
fn zipf_mass(n: u32, s: f64) -> f64 {
    const EXACT: u32 = 10_000;
    let exact: f64 = (1..=n.min(EXACT)).map(|k| f64::from(k).powf(-s)).sum();
    if n <= EXACT {
        return exact;
    }
    let (a, b) = (f64::from(EXACT) + 0.5, f64::from(n) + 0.5);
    let tail = if (s - 1.0).abs() < 1e-12 {
        (b / a).ln()
    } else {
        (b.powf(1.0 - s) - a.powf(1.0 - s)) / (1.0 - s)
    };
    exact + tail
}

/// Fields of this module, for the cache kinds' allowed-field lists.
pub(super) const FIELDS: [&str; 4] = ["capacity", "ttl_s", "eviction", "keys"];

/// Parses the capacity form of a cache, when `capacity` is given.
pub(crate) fn parse(c: &mut Checker, item: &Value, path: &str) -> Option<CacheModel> {
    c.needs_v2(item, path, &FIELDS);
    if item.get("capacity").is_none() {
        for key in ["ttl_s", "eviction", "keys"] {
            if item.get(key).is_some() {
                c.problem(
                    &format!("{path}.{key}"),
                    "belongs to the capacity form: give `capacity` too",
                );
            }
        }
        return None;
    }
    if item.get("hit_ratio").is_some() {
        c.problem(
            &format!("{path}.hit_ratio"),
            "a cache with `capacity` measures its hit ratio: drop `hit_ratio`",
        );
    }
    let capacity = c.integer(item, path, "capacity", 1, 1).min(MAX_KEYS) as u32;
    let ttl = item
        .get("ttl_s")
        .map(|_| c.number(item, path, "ttl_s", None, POSITIVE));
    let eviction = match item.get("eviction").map(|v| v.as_str()) {
        None | Some(Some("lru")) => Eviction::Lru,
        Some(Some("fifo")) => Eviction::Fifo,
        _ => {
            c.problem(&format!("{path}.eviction"), "must be \"lru\" or \"fifo\"");
            Eviction::Lru
        }
    };
    let at = format!("{path}.keys");
    let Some(keys) = item.get("keys") else {
        c.problem(
            &at,
            "missing (required with `capacity`): {\"count\", \"popularity\"}",
        );
        return None;
    };
    c.unknown_fields(keys, &at, &["count", "popularity", "exponent"]);
    let count = c.integer(keys, &at, "count", 1, 1);
    if keys.get("count").is_none() {
        c.problem(&format!("{at}.count"), "missing (required)");
    } else if count > MAX_KEYS {
        c.problem(
            &format!("{at}.count"),
            format!("{count} is more than {MAX_KEYS} keys"),
        );
    }
    let popularity = match keys.get("popularity").map(|v| v.as_str()) {
        None | Some(Some("uniform")) => {
            if keys.get("exponent").is_some() {
                c.problem(
                    &format!("{at}.exponent"),
                    "applies to \"popularity\": \"zipf\" only",
                );
            }
            Popularity::Uniform
        }
        Some(Some("zipf")) => Popularity::Zipf(c.number(
            keys,
            &at,
            "exponent",
            Some(1.0),
            ("a number in (0, 10]", |s| s > 0.0 && s <= 10.0),
        )),
        _ => {
            c.problem(
                &format!("{at}.popularity"),
                "must be \"uniform\" or \"zipf\"",
            );
            Popularity::Uniform
        }
    };
    Some(CacheModel {
        capacity,
        ttl,
        eviction,
        keys: count.min(MAX_KEYS) as u32,
        popularity,
    })
}
