//! Arrival processes, rate schedules, request classes and SLOs.

use sdsim_engine::design::parse;
use sdsim_engine::engine::stats::Report;
use sdsim_engine::engine::Simulation;

fn simulate(json: &str) -> Report {
    let mut sim = Simulation::new(parse(json).unwrap_or_else(|p| panic!("{p:?}")));
    sim.run();
    sim.report()
}

fn with_source(source: &str, duration: f64) -> String {
    format!(
        r#"{{"duration_s": {duration}, "seed": 6, "components": [
        {{"id": "u", "kind": "source", {source}, "to": "s"}},
        {{"id": "s", "kind": "service", "concurrency": 1000, "service_time": {{"dist": "constant", "ms": 1}}}}]}}"#
    )
}

#[test]
fn on_off_bursts_halve_the_average_rate() {
    let r = simulate(&with_source(
        r#""rate_per_s": 10, "arrival": {"process": "on_off", "on_s": 1, "off_s": 1}"#,
        20000.0,
    ));
    let rate = r.components["s"].arrivals as f64 / 20000.0;
    assert!((rate - 5.0).abs() < 0.1, "{rate}");
}

#[test]
fn schedules_ramp_and_repeat() {
    // A linear ramp from 0 to 20/s over 1,000 s: 10,000 requests expected.
    let r = simulate(&with_source(
        r#""schedule": {"points": [{"at_s": 0, "rate_per_s": 0}, {"at_s": 1000, "rate_per_s": 20}]}"#,
        1000.0,
    ));
    let n = r.components["s"].arrivals as f64;
    assert!((n - 10_000.0).abs() / 10_000.0 < 0.02, "{n}");
    // A repeating 100 s curve 10 → 30 → 10/s averages 20/s.
    let r = simulate(&with_source(
        r#""schedule": {"repeat_s": 100, "points": [{"at_s": 0, "rate_per_s": 10}, {"at_s": 50, "rate_per_s": 30}, {"at_s": 100, "rate_per_s": 10}]}"#,
        10000.0,
    ));
    let rate = r.components["s"].arrivals as f64 / 10000.0;
    assert!((rate - 20.0).abs() < 0.3, "{rate}");
}

#[test]
fn classes_take_their_own_routes_and_are_reported_apart() {
    let r = simulate(
        r#"{"duration_s": 5000, "seed": 2, "components": [
        {"id": "u", "kind": "source", "rate_per_s": 20, "classes": [{"name": "read", "p": 0.8}, {"name": "write", "p": 0.2}], "to": "api"},
        {"id": "api", "kind": "service", "concurrency": 100, "service_time": {"dist": "constant", "ms": 2},
         "routes": [{"to": "replica", "p": 1, "class": "read"}, {"to": "primary", "p": 1, "class": "write"}]},
        {"id": "replica", "kind": "service", "concurrency": 100, "service_time": {"dist": "constant", "ms": 5}},
        {"id": "primary", "kind": "service", "concurrency": 100, "service_time": {"dist": "constant", "ms": 30}}]}"#,
    );
    let share = r.components["primary"].arrivals as f64 / r.components["api"].arrivals as f64;
    assert!((share - 0.2).abs() < 0.01, "{share}");
    assert!((r.classes["read"].mean_ms - 7.0).abs() < 0.01);
    assert!((r.classes["write"].mean_ms - 32.0).abs() < 0.01);
    assert_eq!(
        r.classes["read"].completed + r.classes["write"].completed,
        r.end_to_end.completed
    );
}

#[test]
fn slos_are_checked_and_bad_ones_rejected() {
    let design = r#"{"duration_s": 2000, "seed": 3, "slos": [
        {"metric": "p99_ms", "max": 50},
        {"name": "api fast enough", "metric": "mean_ms", "component": "api", "max": 5},
        {"metric": "utilization", "component": "api", "max": 0.5},
        {"metric": "throughput_per_s", "min": 9}],
      "components": [
        {"id": "u", "kind": "source", "rate_per_s": 10, "to": "api"},
        {"id": "api", "kind": "service", "service_time": {"dist": "exponential", "mean_ms": 20}}]}"#;
    let r = simulate(design);
    let met: Vec<(String, bool)> = r.slos.iter().map(|s| (s.name.clone(), s.met)).collect();
    // M/M/1 at ρ = 0.2: W = 25 ms, p99 = 25·ln 100 ≈ 115 ms.
    assert_eq!(
        met,
        [
            ("end-to-end p99_ms <= 50".to_string(), false),
            ("api fast enough".to_string(), false),
            ("api utilization <= 0.5".to_string(), true),
            ("end-to-end throughput_per_s >= 9".to_string(), true),
        ]
    );
    let bad = parse(&design.replace(
        r#""metric": "p99_ms", "max": 50"#,
        r#""metric": "p42", "max": 50, "min": 1"#,
    ))
    .unwrap_err();
    let text: Vec<String> = bad.iter().map(|p| p.to_string()).collect();
    assert!(
        text.iter().any(|t| t.starts_with("$.slos[0].metric")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|t| t.starts_with("$.slos[0]: needs exactly one")),
        "{text:?}"
    );
}

#[test]
fn traffic_problems_are_reported_by_path() {
    let bad = parse(
        r#"{"duration_s": 10, "components": [
        {"id": "u", "kind": "source", "arrival": {"process": "on_off", "on_s": 0}, "to": "s",
         "schedule": {"points": [{"at_s": 5, "rate_per_s": 1}]}, "classes": [{"name": "a", "p": 0.5}]},
        {"id": "s", "kind": "service", "service_time": {"dist": "constant", "ms": 1}, "routes": [{"to": "s", "p": 0.5, "class": "zzz"}]}]}"#,
    )
    .unwrap_err();
    let text: Vec<String> = bad.iter().map(|p| p.to_string()).collect();
    for want in [
        "$.components[0].arrival.on_s: 0 is not a positive number",
        "$.components[0].arrival.off_s: missing",
        "$.components[0].schedule.points[0].at_s: the first point must be at 0",
        "$.components[0].classes: class probabilities add up to 0.5, not 1",
        "$.components[1].routes[0].class: unknown request class `zzz`",
    ] {
        assert!(
            text.iter().any(|t| t.starts_with(want)),
            "missing {want:?} in {text:#?}"
        );
    }
}
