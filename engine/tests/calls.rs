//! Synchronous calls (sequential and parallel fan-out), edge latency, refused calls.

use sdsim_engine::design::parse;
use sdsim_engine::engine::stats::Report;
use sdsim_engine::engine::Simulation;

fn simulate(json: &str) -> Report {
    let mut sim = Simulation::new(parse(json).unwrap_or_else(|p| panic!("{p:?}")));
    sim.run();
    sim.report()
}

fn chain(fanout: &str, p_db: f64) -> String {
    format!(
        r#"{{"duration_s": 2000, "seed": 2, "components": [
        {{"id": "u", "kind": "source", "rate_per_s": 10, "arrival": "constant", "to": "api"}},
        {{"id": "api", "kind": "service", "concurrency": 8, "fanout": "{fanout}",
         "service_time": {{"dist": "constant", "ms": 10}},
         "calls": [{{"to": "db", "p": {p_db}, "latency": {{"dist": "constant", "ms": 1}}}},
                   {{"to": "cache", "latency": {{"dist": "constant", "ms": 1}}}}]}},
        {{"id": "db", "kind": "service", "concurrency": 8, "service_time": {{"dist": "constant", "ms": 20}}}},
        {{"id": "cache", "kind": "service", "concurrency": 8, "service_time": {{"dist": "constant", "ms": 5}}}}]}}"#
    )
}

#[test]
fn sequential_calls_hold_the_worker_for_the_sum_parallel_for_the_max() {
    // 10 ms of own work, then db (1 + 20 + 1 ms) and cache (1 + 5 + 1 ms).
    let r = simulate(&chain("sequential", 1.0));
    let api = &r.components["api"];
    assert!(
        (api.mean_response_ms - 39.0).abs() < 0.01,
        "{}",
        api.mean_response_ms
    );
    assert!((r.end_to_end.mean_ms - 39.0).abs() < 0.01);
    // 10 requests/s each holding a worker 39 ms, over 8 workers.
    assert!(
        (api.utilization - 10.0 * 0.039 / 8.0).abs() < 0.001,
        "{}",
        api.utilization
    );
    assert_eq!(
        r.components["db"].completed,
        r.components["cache"].completed
    );
    let r = simulate(&chain("parallel", 1.0));
    assert!((r.components["api"].mean_response_ms - 32.0).abs() < 0.01);
    assert_eq!(r.end_to_end.completed, r.components["api"].completed);
}

#[test]
fn calls_are_taken_with_their_probability() {
    let r = simulate(&chain("sequential", 0.5));
    // 10 + 7 + half of 22 ms.
    let mean = r.components["api"].mean_response_ms;
    assert!((mean - 28.0).abs() < 0.3, "{mean}");
    let share = r.components["db"].completed as f64 / r.components["api"].completed as f64;
    assert!((share - 0.5).abs() < 0.02, "{share}");
}

#[test]
fn a_held_worker_makes_an_mg1_station() {
    // api: exponential 50 ms of its own, then a 50 ms call to a never-busy db, one worker:
    // S = 50 ms + Exp(50 ms), E[S] = 0.1 s, E[S²] = 0.0125 s²; λ = 7: Wq = λE[S²]/(2(1-ρ)).
    let r = simulate(
        r#"{"duration_s": 200000, "warmup_s": 1000, "seed": 8, "components": [
        {"id": "u", "kind": "source", "rate_per_s": 7, "to": "api"},
        {"id": "api", "kind": "service", "service_time": {"dist": "exponential", "mean_ms": 50},
         "calls": [{"to": "db"}]},
        {"id": "db", "kind": "service", "concurrency": 64, "service_time": {"dist": "constant", "ms": 50}}]}"#,
    );
    let api = &r.components["api"];
    let wq = 7.0 * 0.0125 / (2.0 * 0.3) * 1e3;
    assert!((api.utilization - 0.7).abs() < 0.01, "{}", api.utilization);
    assert!(
        (api.mean_wait_ms - wq).abs() / wq < 0.04,
        "{} vs {wq}",
        api.mean_wait_ms
    );
}

#[test]
fn refused_calls_are_errors_of_the_caller_not_drops_of_the_request() {
    let r = simulate(
        r#"{"duration_s": 5000, "seed": 3, "components": [
        {"id": "u", "kind": "source", "rate_per_s": 20, "to": "api"},
        {"id": "api", "kind": "service", "concurrency": 50, "service_time": {"dist": "constant", "ms": 1},
         "calls": [{"to": "db"}]},
        {"id": "db", "kind": "service", "concurrency": 1, "queue_capacity": 0,
         "service_time": {"dist": "exponential", "mean_ms": 40}}]}"#,
    );
    let (api, db) = (&r.components["api"], &r.components["db"]);
    assert!(db.dropped > 0);
    assert_eq!(
        api.errors, db.dropped,
        "every refused call is one failed request at api"
    );
    assert_eq!(r.end_to_end.dropped, 0);
    assert_eq!(r.end_to_end.completed, api.completed);
}

#[test]
fn route_latency_adds_to_the_path() {
    let base = r#"{"duration_s": 1000, "seed": 1, "components": [
        {"id": "u", "kind": "source", "rate_per_s": 5, "arrival": "constant", "to": "a"},
        {"id": "a", "kind": "service", "service_time": {"dist": "constant", "ms": 3}, "routes": [{"to": "b"LAT}]},
        {"id": "b", "kind": "service", "service_time": {"dist": "constant", "ms": 4}}]}"#;
    let plain = simulate(&base.replace("LAT", ""));
    let slow = simulate(&base.replace("LAT", r#", "latency": {"dist": "constant", "ms": 5}"#));
    assert!((plain.end_to_end.mean_ms - 7.0).abs() < 0.01);
    assert!(
        (slow.end_to_end.mean_ms - 12.0).abs() < 0.01,
        "{}",
        slow.end_to_end.mean_ms
    );
}

#[test]
fn calling_yourself_or_a_certain_call_cycle_is_rejected() {
    let me = parse(
        r#"{"duration_s": 10, "components": [
        {"id": "u", "kind": "source", "rate_per_s": 1, "to": "a"},
        {"id": "a", "kind": "service", "service_time": {"dist": "constant", "ms": 1}, "calls": [{"to": "a"}]}]}"#,
    )
    .unwrap_err();
    assert!(me[0].to_string().contains("cannot call itself"), "{me:?}");
    let cycle = parse(
        r#"{"duration_s": 10, "components": [
        {"id": "u", "kind": "source", "rate_per_s": 1, "to": "a"},
        {"id": "a", "kind": "service", "service_time": {"dist": "constant", "ms": 1}, "calls": [{"to": "b"}]},
        {"id": "b", "kind": "service", "service_time": {"dist": "constant", "ms": 1}, "routes": [{"to": "a"}]}]}"#,
    )
    .unwrap_err();
    assert!(
        cycle[0].to_string().contains("can never complete"),
        "{cycle:?}"
    );
}
