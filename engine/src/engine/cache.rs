//! Caches with a capacity: each request draws a key from the key space's popularity; a key held
//! and not expired is a hit, anything else a miss. A miss fills its key when the origin has
//! answered (or, without an origin, when the miss is served), evicting the least recently used
//! or the oldest entry of a full cache. A `flush` fault empties it: every key misses again at
//! once, and the origin takes the stampede.
//!
//! Entries live in a doubly linked list threaded through arrays indexed by key (no allocation
//! per request): the head is the entry to keep longest, the tail the next to evict.

use super::dist::Rng;
use crate::design::{CacheModel, Eviction, Popularity};
use serde::Serialize;

const NIL: u32 = u32::MAX;

/// One cache's entries and counters.
pub(super) struct CacheState {
    model: CacheModel,
    /// Cumulative popularity of keys 0..=k (Zipf only).
    cdf: Vec<f64>,
    prev: Vec<u32>,
    next: Vec<u32>,
    /// When each held key was filled; NaN when not held.
    filled: Vec<f64>,
    head: u32,
    tail: u32,
    len: u32,
    rng: Rng,
    counts: CacheCounts,
}

#[derive(Debug, Default, Clone)]
struct CacheCounts {
    hits: u64,
    misses: u64,
    evictions: u64,
    expired: u64,
}

/// One cache in the report.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct CacheReport {
    /// Lookups that found their key.
    pub hits: u64,
    /// Lookups that did not (absent or expired).
    pub misses: u64,
    /// hits / (hits + misses): emerges from capacity, TTL, eviction and popularity.
    pub hit_ratio: f64,
    /// Entries removed to make room.
    pub evictions: u64,
    /// Entries found expired.
    pub expired: u64,
    /// Entries held at the end.
    pub entries: u32,
}

impl CacheState {
    pub(super) fn new(model: &CacheModel, seed: u64) -> CacheState {
        let n = model.keys as usize;
        let cdf = match model.popularity {
            Popularity::Uniform => Vec::new(),
            Popularity::Zipf(s) => {
                let mut acc = 0.0;
                let mut cdf: Vec<f64> = (1..=n)
                    .map(|k| {
                        acc += (k as f64).powf(-s);
                        acc
                    })
                    .collect();
                for x in &mut cdf {
                    *x /= acc;
                }
                cdf
            }
        };
        CacheState {
            model: model.clone(),
            cdf,
            prev: vec![NIL; n],
            next: vec![NIL; n],
            filled: vec![f64::NAN; n],
            head: NIL,
            tail: NIL,
            len: 0,
            rng: Rng::new(seed),
            counts: CacheCounts::default(),
        }
    }

    /// The key of the next request.
    pub(super) fn draw_key(&mut self) -> u32 {
        let u = self.rng.uniform();
        let n = self.model.keys;
        if self.cdf.is_empty() {
            ((u * f64::from(n)) as u32).min(n - 1)
        } else {
            (self.cdf.partition_point(|&c| c <= u) as u32).min(n - 1)
        }
    }

    /// Whether `key` is held and fresh at `now` (counted as a hit or a miss).
    pub(super) fn lookup(&mut self, key: u32, now: f64) -> bool {
        let at = self.filled[key as usize];
        if at.is_nan() {
            self.counts.misses += 1;
            return false;
        }
        if self.model.ttl.is_some_and(|ttl| now - at >= ttl) {
            self.unlink(key);
            self.counts.expired += 1;
            self.counts.misses += 1;
            return false;
        }
        if self.model.eviction == Eviction::Lru {
            self.unlink(key);
            self.push_front(key, at);
        }
        self.counts.hits += 1;
        true
    }

    /// Stores `key` as filled at `now`, evicting from the tail when full.
    pub(super) fn fill(&mut self, key: u32, now: f64) {
        if !self.filled[key as usize].is_nan() {
            self.unlink(key);
        } else if self.len >= self.model.capacity {
            self.unlink(self.tail);
            self.counts.evictions += 1;
        }
        self.push_front(key, now);
    }

    /// Drops every entry; returns how many there were.
    pub(super) fn flush(&mut self) -> u32 {
        let held = self.len;
        while self.head != NIL {
            self.unlink(self.head);
        }
        held
    }

    /// Restarts the counters (end of the warm-up); the entries stay.
    pub(super) fn reset(&mut self) {
        self.counts = CacheCounts::default();
    }

    pub(super) fn report(&self) -> CacheReport {
        let c = &self.counts;
        let lookups = c.hits + c.misses;
        CacheReport {
            hits: c.hits,
            misses: c.misses,
            hit_ratio: if lookups == 0 {
                0.0
            } else {
                c.hits as f64 / lookups as f64
            },
            evictions: c.evictions,
            expired: c.expired,
            entries: self.len,
        }
    }

    fn push_front(&mut self, key: u32, filled: f64) {
        let k = key as usize;
        self.filled[k] = filled;
        self.prev[k] = NIL;
        self.next[k] = self.head;
        if self.head != NIL {
            self.prev[self.head as usize] = key;
        } else {
            self.tail = key;
        }
        self.head = key;
        self.len += 1;
    }

    fn unlink(&mut self, key: u32) {
        let k = key as usize;
        let (p, n) = (self.prev[k], self.next[k]);
        if p != NIL {
            self.next[p as usize] = n;
        } else {
            self.head = n;
        }
        if n != NIL {
            self.prev[n as usize] = p;
        } else {
            self.tail = p;
        }
        self.prev[k] = NIL;
        self.next[k] = NIL;
        self.filled[k] = f64::NAN;
        self.len -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(capacity: u32, eviction: Eviction, ttl: Option<f64>) -> CacheState {
        let model = CacheModel {
            capacity,
            ttl,
            eviction,
            keys: 10,
            popularity: Popularity::Uniform,
        };
        CacheState::new(&model, 1)
    }

    #[test]
    fn lru_evicts_the_least_recently_used_and_fifo_the_oldest_filled() {
        for (eviction, survivor, evicted) in [(Eviction::Lru, 1, 2), (Eviction::Fifo, 2, 1)] {
            let mut c = cache(2, eviction, None);
            c.fill(1, 0.0);
            c.fill(2, 1.0);
            assert!(c.lookup(1, 2.0)); // LRU: 1 is now the most recent
            c.fill(3, 3.0);
            assert!(c.lookup(survivor, 4.0), "{eviction:?}");
            assert!(!c.lookup(evicted, 4.0), "{eviction:?}");
            assert_eq!(c.report().evictions, 1);
        }
    }

    #[test]
    fn an_entry_expires_after_its_ttl_and_a_flush_empties_the_cache() {
        let mut c = cache(5, Eviction::Lru, Some(10.0));
        c.fill(4, 0.0);
        assert!(c.lookup(4, 9.9));
        assert!(!c.lookup(4, 10.0));
        assert_eq!((c.report().expired, c.report().entries), (1, 0));
        c.fill(5, 11.0);
        c.fill(6, 11.0);
        assert_eq!(c.flush(), 2);
        assert!(!c.lookup(5, 12.0) && !c.lookup(6, 12.0));
    }
}
