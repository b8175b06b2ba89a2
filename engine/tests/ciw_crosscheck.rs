//! Cross-check against Ciw, an independent simulator (PyPI), on a network with no closed form:
//! an M/G/2/5 loss-and-wait station feeding, with probability 0.3, a G/E2/1 station.
//! `./test.sh` installs Ciw; without it this test fails and says how to install it.

use sdsim_engine::design::parse;
use sdsim_engine::engine::Simulation;
use std::process::Command;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ciw/network.py");

#[test]
fn engine_agrees_with_ciw_on_a_loss_station_feeding_another() {
    let out = Command::new("python3")
        .args([SCRIPT, "4000", "3"])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the Ciw model failed (install it with `python3 -m pip install ciw`):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ciw: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    let design = r#"{"duration_s": 200000, "warmup_s": 200, "seed": 21, "components": [
        {"id": "src", "kind": "source", "rate_per_s": 25, "to": "a"},
        {"id": "a", "kind": "service", "concurrency": 2, "queue_capacity": 3,
         "service_time": {"dist": "uniform", "min_ms": 40, "max_ms": 100}, "routes": [{"to": "b", "p": 0.3}]},
        {"id": "b", "kind": "service", "concurrency": 1,
         "service_time": {"dist": "erlang", "k": 2, "mean_ms": 60}}]}"#;
    let mut sim = Simulation::new(parse(design).unwrap());
    sim.run();
    let ours = sim.report();
    // Ciw runs 4,000 s (about 80,000 customers) in a few seconds; our run is 50× longer, so the
    // difference is dominated by Ciw's sampling error: a 5% tolerance on means of waits that
    // are themselves noisy, 3% on responses.
    let check = |what: &str, got: f64, theirs: f64, rel: f64| {
        let err = (got - theirs).abs() / theirs;
        eprintln!(
            "{what}: sdsim {got:.3}, Ciw {theirs:.3} ({:+.1}%)",
            (got - theirs) / theirs * 100.0
        );
        assert!(
            err <= rel,
            "{what}: sdsim {got:.3}, Ciw {theirs:.3}, off by {:.1}% (tolerance {:.0}%)",
            err * 100.0,
            rel * 100.0
        );
    };
    let a = &ours.components["a"];
    let b = &ours.components["b"];
    check(
        "A mean response",
        a.mean_response_ms,
        ciw["a"]["mean_response_ms"].as_f64().unwrap(),
        0.03,
    );
    check(
        "A mean wait",
        a.mean_wait_ms,
        ciw["a"]["mean_wait_ms"].as_f64().unwrap(),
        0.10,
    );
    check(
        "B mean response",
        b.mean_response_ms,
        ciw["b"]["mean_response_ms"].as_f64().unwrap(),
        0.05,
    );
    let blocked = a.dropped as f64 / a.arrivals as f64;
    check(
        "A blocked fraction",
        blocked,
        ciw["a"]["blocked_fraction"].as_f64().unwrap(),
        0.08,
    );
}
