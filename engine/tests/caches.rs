//! Caches with a capacity: the hit ratio emerges from capacity, popularity, eviction and TTL,
//! and matches what the independent reference model predicts; a flush sends every request to
//! the origin at once.

use sdsim_engine::design::{parse, Behavior, Kind};
use sdsim_engine::engine::kinds::Cache;
use sdsim_engine::engine::stats::Report;
use sdsim_engine::engine::Simulation;

fn cache_design(rate: f64, cache: &str, faults: &str) -> String {
    format!(
        r#"{{"version": 2, "duration_s": 3000, "warmup_s": 500, "seed": 6, "components": [
            {{"id": "c", "kind": "source", "rate_per_s": {rate}, "to": "cache"}},
            {{"id": "cache", "kind": "cache", {cache}, "miss_to": "db",
             "hit_time": {{"dist": "constant", "ms": 1}}}},
            {{"id": "db", "kind": "service", "concurrency": 1000,
             "service_time": {{"dist": "constant", "ms": 5}}}}
        ]{faults}}}"#
    )
}

fn simulate(json: &str) -> Report {
    let design = parse(json).unwrap_or_else(|p| panic!("{p:?}"));
    let mut sim = Simulation::new(design);
    sim.run();
    sim.report()
}

/// Che's approximation of an LRU cache of `capacity` under popularities `p`: the
/// characteristic time T solves Σ(1 − e^(−p·T)) = capacity; the hit ratio is Σ p(1 − e^(−p·T)).
fn che_lru(p: &[f64], capacity: f64) -> f64 {
    let held = |t: f64| p.iter().map(|pi| 1.0 - (-pi * t).exp()).sum::<f64>();
    let (mut lo, mut hi) = (0.0, 1e12);
    for _ in 0..200 {
        let mid = (lo + hi) / 2.0;
        if held(mid) < capacity {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    p.iter().map(|pi| pi * (1.0 - (-pi * lo).exp())).sum()
}

fn zipf(n: usize, s: f64) -> Vec<f64> {
    let w: Vec<f64> = (1..=n).map(|k| (k as f64).powf(-s)).collect();
    let total: f64 = w.iter().sum();
    w.iter().map(|x| x / total).collect()
}

#[test]
fn the_hit_ratio_emerges_and_matches_the_independent_reference_model() {
    // Uniform popularity: any C of N keys held, so the hit ratio is C/N.
    let r = simulate(&cache_design(
        200.0,
        r#""capacity": 200, "keys": {"count": 1000}"#,
        "",
    ));
    let c = &r.caches["cache"];
    assert!((c.hit_ratio - 0.2).abs() < 0.005, "{c:?}");
    assert_eq!(c.entries, 200);
    // Misses, and only misses, reach the origin.
    assert_eq!(r.components["db"].arrivals, c.misses);
    // Zipf(0.9) over 10,000 keys, 500 entries: LRU within 3 % of Che's approximation, FIFO
    // below LRU.
    let zipf_cache = |eviction: &str| {
        simulate(&cache_design(
            500.0,
            &format!(
                r#""capacity": 500, "eviction": "{eviction}",
                   "keys": {{"count": 10000, "popularity": "zipf", "exponent": 0.9}}"#
            ),
            "",
        ))
        .caches["cache"]
            .hit_ratio
    };
    let want = che_lru(&zipf(10_000, 0.9), 500.0);
    let lru = zipf_cache("lru");
    assert!((lru - want).abs() / want < 0.03, "LRU {lru} vs Che {want}");
    let fifo = zipf_cache("fifo");
    assert!(fifo < lru - 0.01, "FIFO {fifo} vs LRU {lru}");
    // The sizing estimate (the 500 most popular keys held) bounds LRU from above.
    let design = parse(&cache_design(
        500.0,
        r#""capacity": 500, "keys": {"count": 10000, "popularity": "zipf", "exponent": 0.9}"#,
        "",
    ))
    .unwrap();
    let Kind::Station(s) = &design.components[1].kind else {
        panic!()
    };
    let Behavior::Cache(Cache { hit_ratio, .. }) = s.behavior else {
        panic!()
    };
    assert!(hit_ratio > lru && hit_ratio < 1.0, "{hit_ratio}");
}

#[test]
fn entries_expire_after_their_ttl() {
    // Room for every key; each of 1,000 keys is asked 0.1 times a second and lives 10 s, so a
    // fill is followed by λT = 1 hit on average: hit ratio λT / (1 + λT) = 0.5.
    let r = simulate(&cache_design(
        100.0,
        r#""capacity": 1000, "ttl_s": 10, "keys": {"count": 1000}"#,
        "",
    ));
    let c = &r.caches["cache"];
    assert!((c.hit_ratio - 0.5).abs() < 0.01, "{c:?}");
    assert!(c.expired > 0 && c.evictions == 0, "{c:?}");
}

#[test]
fn a_flush_sends_the_traffic_to_the_origin_until_the_cache_fills_again() {
    let cache =
        r#""capacity": 2000, "keys": {"count": 2000, "popularity": "zipf", "exponent": 1.0}"#;
    let flushed = simulate(&cache_design(
        400.0,
        cache,
        r#", "faults": [{"at_s": 1500, "action": "flush", "component": "cache"}]"#,
    ));
    let steady = simulate(&cache_design(400.0, cache, ""));
    let entry = flushed
        .timeline
        .iter()
        .find(|t| t.component == "cache")
        .expect("the flush is on the timeline");
    assert_eq!(entry.t_s, 1500.0);
    assert_eq!(entry.event, "flush: 2000 entries dropped");
    // The warm cache held every key: only the flush's refill reaches the origin (one miss per
    // key, at most the 2,000 keys, plus any still in flight).
    let extra = flushed.components["db"].arrivals - steady.components["db"].arrivals;
    assert!(
        (1_000..=2_000).contains(&extra),
        "extra origin requests {extra}"
    );
}
