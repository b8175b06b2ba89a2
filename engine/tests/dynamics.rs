//! Faults, retries, timeouts, circuit breakers and autoscaling.

use sdsim_engine::design::parse;
use sdsim_engine::engine::stats::Report;
use sdsim_engine::engine::Simulation;

fn simulate(json: &str) -> Report {
    let mut sim = Simulation::new(parse(json).unwrap_or_else(|p| panic!("{p:?}")));
    sim.run();
    sim.report()
}

fn near(what: &str, got: f64, want: f64, tol: f64) {
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got}, want {want} ± {tol}"
    );
}

#[test]
fn crash_and_recovery_take_capacity_away_for_a_while() {
    let r = simulate(
        r#"{"duration_s": 1000, "seed": 1,
            "faults": [{"at_s": 100, "duration_s": 100, "action": "crash", "component": "api", "instances": 1}],
            "components": [
            {"id": "u", "kind": "source", "rate_per_s": 5, "to": "api"},
            {"id": "api", "kind": "service", "instances": 2, "service_time": {"dist": "exponential", "mean_ms": 50}}]}"#,
    );
    near("mean workers", r.components["api"].mean_workers, 1.9, 0.001);
    assert_eq!(r.timeline.len(), 2, "{:?}", r.timeline);
    assert!(r.timeline[0].event.starts_with("crash 1 instance"));
    assert!(r.timeline[1].event.starts_with("recover 1 instance"));
    near("crash start", r.timeline[0].t_s, 100.0, 1e-9);
}

#[test]
fn latency_and_error_faults_apply_while_they_last() {
    let base = r#"{"duration_s": 2000, "seed": 2, "faults": [FAULT], "components": [
        {"id": "u", "kind": "source", "rate_per_s": 20, "to": "api"},
        {"id": "api", "kind": "service", "concurrency": 100, "service_time": {"dist": "constant", "ms": 10}}]}"#;
    let slow = simulate(&base.replace(
        "FAULT",
        r#"{"at_s": 1000, "action": "add_latency", "component": "api", "ms": 20}"#,
    ));
    near(
        "mean response with latency half the time",
        slow.components["api"].mean_response_ms,
        20.0,
        0.5,
    );
    let failing = simulate(&base.replace(
        "FAULT",
        r#"{"at_s": 500, "duration_s": 200, "action": "error_rate", "component": "api", "rate": 1.0}"#,
    ));
    let share = failing.end_to_end.errors as f64 / failing.end_to_end.arrivals as f64;
    near("error share", share, 0.1, 0.01);
}

fn caller_and_payments(payments: &str, call: &str, faults: &str) -> Report {
    simulate(&format!(
        r#"{{"duration_s": 4000, "seed": 3, "faults": [{faults}], "components": [
        {{"id": "u", "kind": "source", "rate_per_s": 20, "to": "api"}},
        {{"id": "api", "kind": "service", "concurrency": 200, "service_time": {{"dist": "constant", "ms": 1}},
         "calls": [{{"to": "payments" {call}}}]}},
        {{"id": "payments", "kind": "external", {payments}}}]}}"#
    ))
}

#[test]
fn retries_turn_flaky_calls_into_rare_failures() {
    let plain = caller_and_payments(
        r#""latency": {"dist": "constant", "ms": 20}, "error_rate": 0.5"#,
        "",
        "",
    );
    let api = &plain.components["api"];
    near(
        "failures without retries",
        api.errors as f64 / api.completed as f64,
        0.5,
        0.01,
    );
    let retried = caller_and_payments(
        r#""latency": {"dist": "constant", "ms": 20}, "error_rate": 0.5"#,
        r#", "retries": 3, "backoff_ms": 10"#,
        "",
    );
    let api = &retried.components["api"];
    near(
        "failures after 3 retries (0.5^4)",
        api.errors as f64 / api.completed as f64,
        0.0625,
        0.006,
    );
    assert!(
        retried.components["payments"].arrivals > plain.components["payments"].arrivals * 18 / 10
    );
}

#[test]
fn call_timeouts_bound_the_wait_and_count_as_failures() {
    let r = caller_and_payments(
        r#""latency": {"dist": "constant", "ms": 100}"#,
        r#", "timeout_ms": 50"#,
        "",
    );
    let api = &r.components["api"];
    assert_eq!(api.errors, api.completed, "every call times out");
    near(
        "api response: 1 ms + the 50 ms timeout",
        api.mean_response_ms,
        51.0,
        0.01,
    );
}

#[test]
fn an_open_breaker_stops_calling_a_failing_dependency() {
    let r = caller_and_payments(
        r#""latency": {"dist": "constant", "ms": 5}, "error_rate": 1.0"#,
        r#", "breaker": {"failures": 5, "open_s": 10}"#,
        "",
    );
    let (api, pay) = (&r.components["api"], &r.components["payments"]);
    assert_eq!(api.errors, api.completed);
    // 20 req/s: each 10 s open period skips ~200 calls, and 5 failures reopen it.
    assert!(
        pay.arrivals * 20 < api.completed,
        "{} calls for {} requests",
        pay.arrivals,
        api.completed
    );
    let opened = r
        .timeline
        .iter()
        .filter(|t| t.event == "breaker to payments opens for 10 s")
        .count();
    // 4,000 s with 10 s open periods, each followed by 5 failing calls: ~390 openings.
    assert!(opened > 300, "{opened}");
}

#[test]
fn partitions_fail_calls_and_routes_across_them() {
    let r = caller_and_payments(
        r#""latency": {"dist": "constant", "ms": 5}"#,
        "",
        r#"{"at_s": 1000, "duration_s": 800, "action": "partition", "from": "api", "to": "payments"}"#,
    );
    let api = &r.components["api"];
    near(
        "share failed by the partition",
        api.errors as f64 / api.completed as f64,
        0.2,
        0.01,
    );
}

#[test]
fn station_timeouts_abandon_requests_that_waited_too_long() {
    // Overloaded (λ 15/s, μ 10/s): without a timeout the queue grows without bound.
    let r = simulate(
        r#"{"duration_s": 2000, "seed": 4, "components": [
        {"id": "u", "kind": "source", "rate_per_s": 15, "to": "api"},
        {"id": "api", "kind": "service", "timeout_ms": 300, "service_time": {"dist": "exponential", "mean_ms": 100}}]}"#,
    );
    let api = &r.components["api"];
    assert!(api.timed_out > 5_000, "{}", api.timed_out);
    assert!(
        api.mean_wait_ms <= 300.0,
        "served requests waited at most the timeout: {}",
        api.mean_wait_ms
    );
    assert_eq!(r.end_to_end.errors, api.timed_out);
}

#[test]
fn autoscaling_follows_a_traffic_ramp() {
    let r = simulate(
        r#"{"duration_s": 3000, "seed": 5, "components": [
        {"id": "u", "kind": "source", "to": "api",
         "schedule": {"points": [{"at_s": 0, "rate_per_s": 10}, {"at_s": 1500, "rate_per_s": 40}, {"at_s": 3000, "rate_per_s": 40}]}},
        {"id": "api", "kind": "service", "instances": 2, "service_time": {"dist": "exponential", "mean_ms": 100},
         "autoscale": {"target_utilization": 0.7, "min": 2, "max": 10, "interval_s": 10, "cooldown_s": 30, "startup_s": 20}}]}"#,
    );
    let api = &r.components["api"];
    assert!(
        r.timeline.iter().any(|t| t.event.starts_with("scale out")),
        "{:?}",
        r.timeline
    );
    // 40 req/s × 0.1 s = 4 Erlangs at the end: at 70 % that is 6 instances.
    assert!(api.mean_workers > 3.0, "{}", api.mean_workers);
    assert!(api.utilization < 0.9, "{}", api.utilization);
    let last = r
        .timeline
        .iter()
        .rev()
        .find(|t| t.event.contains("instances in service"))
        .unwrap();
    assert!(
        last.event.ends_with("→ 6 instances in service")
            || last.event.ends_with("→ 7 instances in service"),
        "{}",
        last.event
    );
}

#[test]
fn dynamics_problems_are_listed() {
    let bad = parse(
        r#"{"duration_s": 10, "faults": [{"at_s": 1, "action": "explode", "component": "api"},
            {"at_s": 1, "action": "crash", "component": "u"}, {"at_s": -1, "action": "partition", "from": "api", "to": "nope"}],
          "components": [
            {"id": "u", "kind": "source", "rate_per_s": 1, "to": "api"},
            {"id": "api", "kind": "service", "service_time": {"dist": "constant", "ms": 1}, "timeout_ms": 0,
             "autoscale": {"min": 3, "max": 2}, "calls": [{"to": "db", "retries": -1, "breaker": {"failures": 0}}]},
            {"id": "db", "kind": "service", "service_time": {"dist": "constant", "ms": 1}, "routes": [{"to": "api", "retries": 2, "p": 0.5}]}]}"#,
    )
    .unwrap_err();
    let text: Vec<String> = bad.iter().map(|p| p.to_string()).collect();
    for want in [
        "$.faults[0].action: must be crash, add_latency, error_rate, flush or partition",
        "$.faults[1].component: faults apply to stations",
        "$.faults[2].at_s: -1 is not a number ≥ 0",
        "$.faults[2].to: must name a component",
        "$.components[1].timeout_ms: 0 is not a positive number",
        "$.components[1].autoscale: needs min ≤ instances (1) ≤ max",
        "$.components[1].calls[0].retries: must be a whole number ≥ 0",
        "$.components[1].calls[0].breaker.failures: must be a whole number ≥ 1",
        "$.components[2].routes[0].retries: unknown field",
    ] {
        assert!(
            text.iter().any(|t| t.starts_with(want)),
            "missing {want:?} in {text:#?}"
        );
    }
}
