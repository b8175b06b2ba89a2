//! Client behaviour of version-2 sources: timeouts give up on attempts that go on inside the
//! system, retries follow their backoff, a retry budget caps retries at a share of first tries.

use sdsim_engine::design::{parse, Backoff, BackoffKind};
use sdsim_engine::engine::stats::Report;
use sdsim_engine::engine::Simulation;

fn simulate(json: &str) -> Report {
    let design = parse(json).unwrap_or_else(|p| panic!("{p:?}"));
    let mut sim = Simulation::new(design);
    sim.run();
    sim.report()
}

#[test]
fn a_timed_out_attempt_is_retried_after_its_backoff_and_still_served() {
    // One request per second (t = 1 … 1000); the service takes 200 ms, the client waits 100 ms, retries twice
    // 50 ms after each timeout. Attempt 1 (t=0) times out at 0.1, attempt 2 goes at 0.15 and
    // waits for the worker until 0.2, times out at 0.25; attempt 3 goes at 0.3 and times out
    // at 0.4: every request fails after three attempts, all three are served anyway.
    let r = simulate(
        r#"{"version": 2, "duration_s": 1000.7, "seed": 1, "components": [
            {"id": "c", "kind": "source", "rate_per_s": 1, "arrival": "constant", "to": "s",
             "timeout_ms": 100, "retries": 2, "backoff": {"kind": "fixed", "base_ms": 50}},
            {"id": "s", "kind": "service", "service_time": {"dist": "constant", "ms": 200}}
        ]}"#,
    );
    let c = &r.clients["c"];
    assert_eq!(c.first_tries, 1000);
    assert_eq!(c.retries, 2000);
    assert_eq!(c.timeouts, 3000);
    assert_eq!((c.succeeded, c.failed), (0, 1000));
    assert_eq!(
        c.late_answers, 3000,
        "every abandoned attempt was still served"
    );
    assert_eq!(r.components["s"].completed, 3000);
    assert_eq!(c.goodput_per_s, 0.0);
    // The same client with a timeout the service meets succeeds at once.
    let r = simulate(
        r#"{"version": 2, "duration_s": 1000.7, "seed": 1, "components": [
            {"id": "c", "kind": "source", "rate_per_s": 1, "arrival": "constant", "to": "s",
             "timeout_ms": 250, "retries": 2},
            {"id": "s", "kind": "service", "service_time": {"dist": "constant", "ms": 200}}
        ]}"#,
    );
    let c = &r.clients["c"];
    assert_eq!((c.succeeded, c.retries, c.timeouts), (1000, 0, 0));
    assert!((c.latency.mean_ms - 200.0).abs() < 1e-6);
}

#[test]
fn errors_are_retried_and_a_retry_budget_caps_retries() {
    let design = |budget: &str| {
        format!(
            r#"{{"version": 2, "duration_s": 2000, "seed": 3, "components": [
            {{"id": "c", "kind": "source", "rate_per_s": 20, "to": "s", "retries": 3,
             "backoff": {{"kind": "exponential", "base_ms": 10}} {budget}}},
            {{"id": "s", "kind": "service", "concurrency": 8, "error_rate": 0.5,
             "service_time": {{"dist": "exponential", "mean_ms": 20}}}}
        ]}}"#
        )
    };
    // Without a budget: 0.5 + 0.25 + 0.125 retries per first try; 1/16 fail after the last.
    let free = simulate(&design(""));
    let c = &free.clients["c"];
    let per_first = c.retries as f64 / c.first_tries as f64;
    assert!((per_first - 0.875).abs() < 0.02, "{per_first}");
    assert!((c.failed as f64 / c.first_tries as f64 - 0.0625).abs() < 0.01);
    assert_eq!(c.budget_denied, 0);
    // A budget of 10 % (burst 5): retries ≤ 0.1 × first tries + 5; the rest fail.
    let capped = simulate(&design(r#", "retry_budget": {"ratio": 0.1, "burst": 5}"#));
    let c = &capped.clients["c"];
    assert!(
        c.retries as f64 <= 0.1 * c.first_tries as f64 + 5.0,
        "{c:?}"
    );
    assert!(c.retries as f64 >= 0.09 * c.first_tries as f64, "{c:?}");
    assert!(c.budget_denied > c.first_tries / 3, "{c:?}");
    assert!(c.failed > free.clients["c"].failed * 4, "{c:?}");
}

#[test]
fn backoffs_grow_as_named() {
    let make = |kind| Backoff {
        kind,
        base: 0.1,
        max: 1.0,
    };
    let exponential: Vec<f64> = (1..=6)
        .map(|n| make(BackoffKind::Exponential).delay(n, 0.5))
        .collect();
    assert_eq!(exponential, [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]);
    assert_eq!(make(BackoffKind::Fixed).delay(5, 0.5), 0.1);
    // Full jitter: a uniform share of the exponential wait.
    assert_eq!(make(BackoffKind::Jitter).delay(3, 0.25), 0.1);
    assert_eq!(make(BackoffKind::Jitter).delay(3, 0.0), 0.0);
}

#[test]
fn a_closed_loop_user_waits_out_its_timeout_before_thinking() {
    // One user, no think time, a service of 1 s and a client timeout of 300 ms without
    // retries: the user sends every 300 ms, and the abandoned attempts pile up at the service.
    let r = simulate(
        r#"{"version": 2, "duration_s": 30, "seed": 2, "components": [
            {"id": "u", "kind": "source", "users": 1, "think_time": {"dist": "constant", "ms": 0},
             "timeout_ms": 300, "to": "s"},
            {"id": "s", "kind": "service", "service_time": {"dist": "constant", "ms": 1000}}
        ]}"#,
    );
    let c = &r.clients["u"];
    assert_eq!(c.first_tries, 100);
    assert_eq!(c.failed, 99);
    assert_eq!(r.components["s"].completed, 30);
    assert!(r.components["s"].mean_queue_length > 30.0);
}

#[test]
fn a_timeout_never_fires_for_a_later_request_of_the_same_client_slot() {
    // 50 requests/s, 10 workers of 20 ms: answers come in ~20 ms, far inside the 1 s timeout,
    // so no attempt may time out, although each timeout is still pending when the finished
    // request's slot is reused by a newer request.
    let r = simulate(
        r#"{"version": 2, "duration_s": 2000, "seed": 12, "components": [
            {"id": "c", "kind": "source", "rate_per_s": 50, "to": "s", "timeout_ms": 1000,
             "retries": 2},
            {"id": "s", "kind": "service", "concurrency": 10,
             "service_time": {"dist": "exponential", "mean_ms": 20}}
        ]}"#,
    );
    let c = &r.clients["c"];
    assert_eq!(
        (c.timeouts, c.retries, c.failed, c.late_answers),
        (0, 0, 0, 0),
        "{c:?}"
    );
    assert!(c.first_tries - c.succeeded <= 10, "{c:?}");
}
