//! Metastability, reproduced: each template of `config/designs/` collapses after a trigger and
//! stays collapsed long after the trigger ended, and the same design with its fix recovers to
//! at least 95 % goodput within a bound. Times are simulated seconds: the engine is
//! deterministic for a seed, so these bounds are exact properties of the runs, not timing.

use sdsim_engine::engine::stats::Report;
use sdsim_engine::engine::{GoodputPoint, Simulation};

fn run(name: &str) -> Report {
    let path = format!("{}/../config/designs/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).expect("template");
    let design = sdsim_engine::design::parse(&text).unwrap_or_else(|p| panic!("{p:?}"));
    let mut sim = Simulation::new(design);
    sim.run();
    sim.report()
}

/// The windows starting at or after `from`.
fn after(r: &Report, from: f64) -> Vec<&GoodputPoint> {
    r.goodput.iter().filter(|p| p.t_s >= from).collect()
}

/// Goodput / offered load over the windows starting at or after `from`.
fn ratio_after(r: &Report, from: f64) -> f64 {
    let windows = after(r, from);
    let good: f64 = windows.iter().map(|p| p.goodput_per_s).sum();
    let offered: f64 = windows.iter().map(|p| p.offered_per_s).sum();
    good / offered
}

/// The collapsed run: metastable, and every window from `from` to the end of the run (at
/// least `long` seconds after the trigger) below `ceiling` of the offered load, with the
/// system receiving more than `amplified` times that load.
fn assert_collapsed(name: &str, from_trigger: f64, long: f64, ceiling: f64, amplified: f64) {
    let r = run(name);
    let m = r.metastability.as_ref().expect("a verdict");
    assert_eq!(m.verdict, "metastable", "{name}: {m:?}");
    assert!(r
        .table()
        .contains("metastability: metastable (trigger ended at"));
    let end = r.simulated_s;
    assert!(
        end - m.trigger_end_s >= long,
        "{name} ends too soon to tell"
    );
    // Healthy before the trigger.
    let before: Vec<&GoodputPoint> = r.goodput.iter().filter(|p| p.t_s < 250.0).collect();
    assert!(
        before.iter().all(|p| p.ratio() > 0.95),
        "{name} was not healthy first"
    );
    let windows = after(&r, m.trigger_end_s + from_trigger);
    assert!(!windows.is_empty());
    for p in windows {
        assert!(p.ratio() < ceiling, "{name} recovered at {}: {p:?}", p.t_s);
        assert!(
            p.attempts_per_s > amplified * p.offered_per_s,
            "{name}: {p:?}"
        );
    }
}

/// The fixed run: recovered, no later than `within` seconds after the trigger ended, and at
/// least 95 % goodput over everything after that.
fn assert_recovers(name: &str, within: f64) {
    let r = run(name);
    let m = r.metastability.as_ref().expect("a verdict");
    assert!(
        m.verdict == "recovered" || m.verdict == "unaffected",
        "{name}: {m:?}"
    );
    let at = m.recovered_at_s.expect("a recovery time");
    assert!(
        at <= m.trigger_end_s + within,
        "{name} recovered at {at}: {m:?}"
    );
    let ratio = ratio_after(&r, m.trigger_end_s + within);
    assert!(ratio >= 0.95, "{name}: goodput {ratio} of the offered load");
    for p in after(&r, m.trigger_end_s + within) {
        assert!(p.ratio() >= 0.9, "{name} dipped at {}: {p:?}", p.t_s);
    }
}

#[test]
fn a_retry_storm_outlives_its_latency_spike_and_a_retry_budget_ends_it() {
    // The spike ends at 330 s; goodput is still nil 1,170 s later, with four attempts per
    // request.
    assert_collapsed("retry-storm.json", 10.0, 1000.0, 0.05, 3.5);
    assert_recovers("retry-storm-budget.json", 120.0);
}

#[test]
fn a_cache_flush_stampede_keeps_the_database_swamped_until_fixed() {
    // Only misses fail, so goodput stays near the hit ratio while the database does twice the
    // offered load's work.
    assert_collapsed("cache-stampede.json", 300.0, 1000.0, 0.95, 1.5);
    assert_recovers("cache-stampede-fixed.json", 60.0);
}

#[test]
fn timeouts_shorter_than_the_queueing_delay_collapse_a_slow_dependency_and_codel_prevents_it() {
    assert_collapsed("slow-dependency.json", 10.0, 1000.0, 0.05, 2.5);
    assert_recovers("slow-dependency-codel.json", 30.0);
}

#[test]
fn a_run_without_a_trigger_that_ends_gets_no_verdict() {
    let r = run("minimal.json");
    assert!(
        r.metastability.is_none() && r.goodput.is_empty(),
        "a version-1 run"
    );
}
