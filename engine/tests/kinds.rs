//! The component kinds: cache / cdn, database, queue, load balancer, external.

use sdsim_engine::design::parse;
use sdsim_engine::engine::stats::Report;
use sdsim_engine::engine::Simulation;

fn simulate(components: &str) -> Report {
    let json = format!(r#"{{"duration_s": 4000, "seed": 12, "components": [{components}]}}"#);
    let mut sim = Simulation::new(parse(&json).unwrap_or_else(|p| panic!("{p:?}")));
    sim.run();
    sim.report()
}

fn share(r: &Report, a: &str, of: &str) -> f64 {
    r.components[a].arrivals as f64 / r.components[of].arrivals as f64
}

#[test]
fn cache_hits_complete_and_misses_go_to_the_origin() {
    let r = simulate(
        r#"{"id": "u", "kind": "source", "rate_per_s": 50, "to": "cache"},
           {"id": "cache", "kind": "cache", "hit_ratio": 0.8, "hit_time": {"dist": "constant", "ms": 1},
            "miss_time": {"dist": "constant", "ms": 2}, "miss_to": "db"},
           {"id": "db", "kind": "service", "concurrency": 100, "service_time": {"dist": "constant", "ms": 20}}"#,
    );
    assert!((share(&r, "db", "cache") - 0.2).abs() < 0.01);
    // 0.8 × 1 ms + 0.2 × (2 + 20) ms.
    assert!(
        (r.end_to_end.mean_ms - 5.2).abs() < 0.15,
        "{}",
        r.end_to_end.mean_ms
    );
    assert_eq!(r.components["cache"].kind, "cache");
}

#[test]
fn databases_mix_reads_and_writes_and_writes_queue_on_the_primary() {
    // Writes (25%) all go to the primary; reads spread over primary + 2 replicas. With one
    // connection per instance, writes wait far longer than the mix would suggest.
    let r = simulate(
        r#"{"id": "u", "kind": "source", "rate_per_s": 30, "to": "db"},
           {"id": "db", "kind": "database", "replicas": 2, "pool_size": 1, "write_ratio": 0.25,
            "read_time": {"dist": "exponential", "mean_ms": 10}, "write_time": {"dist": "exponential", "mean_ms": 40}}"#,
    );
    let db = &r.components["db"];
    assert_eq!(db.kind, "database");
    // Offered load: 30/s × (0.75·10 + 0.25·40) ms = 0.525 Erlangs over 3 connections.
    assert!(
        (db.utilization - 0.525 / 3.0).abs() < 0.01,
        "{}",
        db.utilization
    );
    let service = 0.75 * 10.0 + 0.25 * 40.0;
    assert!(
        db.mean_response_ms > service,
        "waiting on the primary shows: {}",
        db.mean_response_ms
    );
}

#[test]
fn queues_answer_producers_at_once_and_consumers_work_in_the_background() {
    let r = simulate(
        r#"{"id": "u", "kind": "source", "rate_per_s": 20, "to": "api"},
           {"id": "api", "kind": "service", "concurrency": 10, "service_time": {"dist": "constant", "ms": 3}, "routes": [{"to": "jobs"}]},
           {"id": "jobs", "kind": "queue", "consumers": 4, "consumer_time": {"dist": "exponential", "mean_ms": 100}, "routes": [{"to": "mailer"}]},
           {"id": "mailer", "kind": "service", "concurrency": 10, "service_time": {"dist": "constant", "ms": 50}}"#,
    );
    assert!(
        (r.end_to_end.mean_ms - 3.0).abs() < 0.01,
        "producers see only the api: {}",
        r.end_to_end.mean_ms
    );
    let jobs = &r.components["jobs"];
    assert!(
        (jobs.utilization - 0.5).abs() < 0.02,
        "20/s × 100 ms over 4 consumers: {}",
        jobs.utilization
    );
    assert!(jobs.completed > 70_000);
    assert!((r.components["mailer"].completed as i64 - jobs.completed as i64).abs() <= 10);
    assert_eq!(r.end_to_end.completed, r.components["api"].completed);
}

#[test]
fn load_balancers_spread_by_strategy() {
    let targets = r#"{"id": "a", "kind": "service", "concurrency": 50, "service_time": {"dist": "constant", "ms": 5}},
           {"id": "b", "kind": "service", "concurrency": 50, "service_time": {"dist": "constant", "ms": 5}},
           {"id": "c", "kind": "service", "concurrency": 50, "service_time": {"dist": "constant", "ms": 5}}"#;
    let lb = |extra: &str| {
        simulate(&format!(
            r#"{{"id": "u", "kind": "source", "rate_per_s": 30, "to": "lb"}},
               {{"id": "lb", "kind": "load_balancer", "targets": ["a", "b", "c"] {extra}}}, {targets}"#
        ))
    };
    let rr = lb("");
    for t in ["a", "b", "c"] {
        assert!((share(&rr, t, "lb") - 1.0 / 3.0).abs() < 0.001, "{t}");
    }
    let weighted = lb(r#", "strategy": "weighted", "weights": [1, 2, 1]"#);
    assert!((share(&weighted, "b", "lb") - 0.5).abs() < 0.01);
    let random = lb(r#", "strategy": "random""#);
    assert!((share(&random, "c", "lb") - 1.0 / 3.0).abs() < 0.01);
    // Least connections avoids a slow target.
    let slow = targets
        .replacen(r#""ms": 5}"#, r#""ms": 200}"#, 1)
        .replacen(r#""concurrency": 50"#, r#""concurrency": 2"#, 1);
    let r = simulate(&format!(
        r#"{{"id": "u", "kind": "source", "rate_per_s": 60, "to": "lb"}},
           {{"id": "lb", "kind": "load_balancer", "strategy": "least_connections", "targets": ["a", "b", "c"]}}, {slow}"#
    ));
    assert!(share(&r, "a", "lb") < 0.2, "{}", share(&r, "a", "lb"));
}

#[test]
fn external_errors_are_caller_errors_or_end_to_end_errors() {
    let r = simulate(
        r#"{"id": "u", "kind": "source", "rate_per_s": 40, "to": "api"},
           {"id": "api", "kind": "service", "concurrency": 50, "service_time": {"dist": "constant", "ms": 1}, "calls": [{"to": "payments"}]},
           {"id": "payments", "kind": "external", "latency": {"dist": "lognormal", "mean_ms": 80, "stddev_ms": 30}, "error_rate": 0.1}"#,
    );
    let api = &r.components["api"];
    assert!((api.errors as f64 / api.completed as f64 - 0.1).abs() < 0.01);
    assert_eq!(r.end_to_end.errors, 0);
    let r = simulate(
        r#"{"id": "u", "kind": "source", "rate_per_s": 40, "to": "payments"},
           {"id": "payments", "kind": "external", "latency": {"dist": "constant", "ms": 80}, "error_rate": 0.1}"#,
    );
    let errors = r.end_to_end.errors as f64 / r.end_to_end.arrivals as f64;
    assert!((errors - 0.1).abs() < 0.01, "{errors}");
}

#[test]
fn kind_specific_problems_are_listed() {
    let json = r#"{"duration_s": 10, "components": [
        {"id": "u", "kind": "source", "rate_per_s": 1, "to": "lb"},
        {"id": "lb", "kind": "load_balancer", "strategy": "weighted", "targets": ["x", "s"]},
        {"id": "s", "kind": "database", "read_time": {"dist": "constant", "ms": 1}, "write_ratio": 2},
        {"id": "q", "kind": "queue", "consumers": 0}]}"#;
    let text: Vec<String> = parse(json)
        .unwrap_err()
        .iter()
        .map(|p| p.to_string())
        .collect();
    for want in [
        "$.components[1].targets[0].to: unknown component id `x`",
        "$.components[1].weights: missing (required by strategy weighted)",
        "$.components[2].write_time: missing (required)",
        "$.components[2].write_ratio: 2 is not a probability in [0, 1]",
        "$.components[3].consumers: must be a whole number ≥ 1",
        "$.components[3].consumer_time: missing (required)",
    ] {
        assert!(
            text.iter().any(|t| t.starts_with(want)),
            "missing {want:?} in {text:#?}"
        );
    }
}

#[test]
fn load_balancers_skip_targets_with_every_instance_down() {
    let json = r#"{"duration_s": 1000, "seed": 9,
        "faults": [{"at_s": 0, "duration_s": 500, "action": "crash", "component": "a", "instances": 1}],
        "components": [
        {"id": "u", "kind": "source", "rate_per_s": 20, "to": "lb"},
        {"id": "lb", "kind": "load_balancer", "targets": ["a", "b"]},
        {"id": "a", "kind": "service", "concurrency": 50, "service_time": {"dist": "constant", "ms": 5}},
        {"id": "b", "kind": "service", "concurrency": 50, "service_time": {"dist": "constant", "ms": 5}}]}"#;
    let mut sim = Simulation::new(parse(json).unwrap());
    sim.run();
    let r = sim.report();
    // While `a` is down (first half) everything goes to `b`; then round robin again.
    assert!(
        (share(&r, "b", "lb") - 0.75).abs() < 0.01,
        "{}",
        share(&r, "b", "lb")
    );
    assert_eq!(
        r.end_to_end.errors, 0,
        "no request was sent to the dead target"
    );
}
