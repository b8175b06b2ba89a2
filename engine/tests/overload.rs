//! Stations under load: contention stretches service times (linear, and Gunther's Universal
//! Scalability Law), LIFO serves the newest first, CoDel sheds requests from a standing queue.

use sdsim_engine::design::parse;
use sdsim_engine::engine::stats::Report;
use sdsim_engine::engine::Simulation;

fn simulate(json: &str) -> Report {
    let design = parse(json).unwrap_or_else(|p| panic!("{p:?}"));
    let mut sim = Simulation::new(design);
    sim.run();
    sim.report()
}

/// `n` users with no think time keep exactly `n` requests in service at a station of 100 ms.
fn saturated(n: u32, contention: &str) -> f64 {
    let r = simulate(&format!(
        r#"{{"version": 2, "duration_s": 500, "warmup_s": 50, "seed": 4, "components": [
            {{"id": "u", "kind": "source", "users": {n},
             "think_time": {{"dist": "constant", "ms": 0}}, "to": "db"}},
            {{"id": "db", "kind": "database", "pool_size": 64, "contention": {contention},
             "read_time": {{"dist": "constant", "ms": 100}}, "write_time": {{"dist": "constant", "ms": 100}}}}
        ]}}"#
    ));
    r.components["db"].throughput_per_s
}

#[test]
fn throughput_under_contention_follows_the_models() {
    for n in [1u32, 4, 10, 32] {
        let nf = f64::from(n);
        // Linear: service × (1 + 0.1 (n − 1)).
        let want = nf / (0.1 * (1.0 + 0.1 * (nf - 1.0)));
        let got = saturated(n, r#"{"model": "linear", "per_request": 0.1}"#);
        assert!(
            (got - want).abs() / want < 0.005,
            "linear n={n}: {got} vs {want}"
        );
        // USL: X(n) = n·X(1) / (1 + σ(n − 1) + κ·n(n − 1)), X(1) = 10/s.
        let (sigma, kappa) = (0.05, 0.002);
        let want = nf * 10.0 / (1.0 + sigma * (nf - 1.0) + kappa * nf * (nf - 1.0));
        let got = saturated(
            n,
            &format!(r#"{{"model": "usl", "sigma": {sigma}, "kappa": {kappa}}}"#),
        );
        assert!(
            (got - want).abs() / want < 0.005,
            "usl n={n}: {got} vs {want}"
        );
    }
    // USL's retrograde region: past its peak (√((1−σ)/κ) ≈ 22), more load means less done.
    let usl = r#"{"model": "usl", "sigma": 0.05, "kappa": 0.002}"#;
    assert!(saturated(60, usl) < saturated(22, usl));
}

fn mm1(discipline: &str, rate: f64, extra: &str, duration: f64) -> Report {
    simulate(&format!(
        r#"{{"version": 2, "duration_s": {duration}, "warmup_s": 100, "seed": 8, "components": [
            {{"id": "c", "kind": "source", "rate_per_s": {rate}, "to": "s"}},
            {{"id": "s", "kind": "service", "discipline": "{discipline}" {extra},
             "service_time": {{"dist": "exponential", "mean_ms": 100}}}}
        ]}}"#
    ))
}

#[test]
fn lifo_keeps_the_mean_wait_and_stretches_the_tail() {
    // Work-conserving disciplines share M/M/1's mean (333 ms at ρ = 0.7); LIFO's waits are
    // far more spread.
    let fifo = &mm1("fifo", 7.0, "", 200_000.0).components["s"];
    let lifo = &mm1("lifo", 7.0, "", 200_000.0).components["s"];
    assert!(
        (fifo.mean_response_ms - 333.3).abs() / 333.3 < 0.03,
        "{fifo:?}"
    );
    assert!(
        (lifo.mean_response_ms - 333.3).abs() / 333.3 < 0.03,
        "{lifo:?}"
    );
    assert!(
        lifo.p99_ms > 1.5 * fifo.p99_ms,
        "{} vs {}",
        lifo.p99_ms,
        fifo.p99_ms
    );
    assert!(lifo.p50_ms < fifo.p50_ms);
}

#[test]
fn codel_sheds_a_standing_queue_and_keeps_waits_short() {
    // 15 requests/s against 10/s of capacity: FIFO's queue grows all run long.
    let fifo = mm1("fifo", 15.0, "", 1_000.0);
    assert!(fifo.components["s"].mean_wait_ms > 60_000.0);
    let codel = mm1(
        "codel",
        15.0,
        r#", "codel": {"target_ms": 300, "interval_ms": 1000}"#,
        1_000.0,
    );
    let s = &codel.components["s"];
    // The worker stays busy (idle only when every waiting request was too old) and the
    // excess third is shed.
    assert!(s.utilization > 0.9, "{s:?}");
    assert!(s.throughput_per_s > 9.0, "{s:?}");
    let shed = s.dropped as f64 / s.arrivals as f64;
    assert!((0.3..0.4).contains(&shed), "shed {shed}");
    // A standing queue holds requests at most the target (300 ms), so is what they wait.
    assert!(s.mean_wait_ms < 300.0, "{s:?}");
    assert_eq!(codel.end_to_end.dropped, s.dropped);
}
