//! The `rate_limiter` kind: a token bucket that refuses what exceeds its rate at once.

use sdsim_engine::design::parse;
use sdsim_engine::engine::stats::Report;
use sdsim_engine::engine::Simulation;

fn simulate(duration_s: f64, components: &str) -> Report {
    let json =
        format!(r#"{{"duration_s": {duration_s}, "seed": 21, "components": [{components}]}}"#);
    let mut sim = Simulation::new(parse(&json).unwrap_or_else(|p| panic!("{p:?}")));
    sim.run();
    sim.report()
}

fn limited(arrival: &str, rate_per_s: f64, limit: f64, burst: u32, duration_s: f64) -> Report {
    simulate(
        duration_s,
        &format!(
            r#"{{"id": "clients", "kind": "source", "rate_per_s": {rate_per_s}, "arrival": "{arrival}", "to": "limiter"}},
               {{"id": "limiter", "kind": "rate_limiter", "rate_per_s": {limit}, "burst": {burst}, "routes": [{{"to": "api"}}]}},
               {{"id": "api", "kind": "service", "concurrency": 100, "service_time": {{"dist": "constant", "ms": 1}}}}"#
        ),
    )
}

#[test]
fn offered_load_over_the_limit_is_refused_at_the_rate_the_bucket_predicts() {
    let (offered, rate, burst, duration) = (200.0, 100.0, 20, 1000.0);
    let r = limited("poisson", offered, rate, burst, duration);
    let limiter = &r.components["limiter"];
    assert_eq!(limiter.kind, "rate_limiter");
    let admitted = limiter.arrivals - limiter.errors;
    // A token bucket admits at most its burst plus its rate over the run; at twice the rate
    // it is empty nearly all the time, so it wastes (almost) no token and admits at least
    // the rate over the run.
    assert!(
        admitted as f64 <= rate * duration + f64::from(burst),
        "{admitted}"
    );
    assert!(admitted as f64 >= rate * duration, "{admitted}");
    // Rejected: 1 - rate / offered = 50 %. The arrivals are Poisson (standard deviation
    // √200,000 ≈ 447, 0.11 % of the rejection fraction); 0.006 is five of them.
    let refused = limiter.errors as f64 / limiter.arrivals as f64;
    assert!(
        (refused - (1.0 - rate / offered)).abs() < 0.006,
        "{refused}"
    );
    // Refused requests go no further and fail end to end; admitted ones reach the api.
    assert_eq!(r.components["api"].arrivals, admitted);
    assert_eq!(r.end_to_end.errors, limiter.errors);
    assert_eq!(r.end_to_end.dropped, 0);
}

#[test]
fn load_under_the_limit_passes_untouched() {
    let r = limited("poisson", 50.0, 100.0, 20, 1000.0);
    let limiter = &r.components["limiter"];
    assert_eq!(limiter.errors, 0);
    assert_eq!(r.components["api"].arrivals, limiter.arrivals);
    assert_eq!(r.end_to_end.errors, 0);
}

#[test]
fn a_full_bucket_admits_its_burst_then_the_rate() {
    // One request every 5 ms for 10 s against 100 tokens/s and a burst of 50: the bucket
    // starts full, so 50 pass on top of the 1,000 the rate allows in 10 s.
    let r = limited("constant", 200.0, 100.0, 50, 10.0);
    let limiter = &r.components["limiter"];
    let admitted = limiter.arrivals - limiter.errors;
    assert!(limiter.arrivals >= 1999, "{}", limiter.arrivals);
    assert!(
        (admitted as i64 - 1050).abs() <= 1,
        "{admitted} admitted of {}",
        limiter.arrivals
    );
}

#[test]
fn a_refused_call_is_an_error_of_the_caller() {
    let r = simulate(
        1000.0,
        r#"{"id": "u", "kind": "source", "rate_per_s": 40, "to": "api"},
           {"id": "api", "kind": "service", "concurrency": 50, "service_time": {"dist": "constant", "ms": 1}, "calls": [{"to": "partner"}]},
           {"id": "partner", "kind": "rate_limiter", "rate_per_s": 30, "burst": 50, "routes": [{"to": "partner-api"}]},
           {"id": "partner-api", "kind": "external", "latency": {"dist": "constant", "ms": 20}}"#,
    );
    let partner = &r.components["partner"];
    // 40 calls/s against 30 tokens/s: the bucket (50 deep) is full so rarely that it
    // admits its burst plus the rate, no fewer than the rate; the rest are refused, each an
    // error of the api.
    let admitted = (partner.arrivals - partner.errors) as f64;
    assert!((30_000.0..=30_050.0).contains(&admitted), "{admitted}");
    assert_eq!(r.components["api"].errors, partner.errors);
    assert_eq!(r.end_to_end.errors, 0);
}

#[test]
fn rate_limiter_problems_name_the_field() {
    let json = r#"{"duration_s": 10, "components": [
        {"id": "u", "kind": "source", "rate_per_s": 1, "to": "a"},
        {"id": "a", "kind": "rate_limiter", "burst": 0, "window": 1, "routes": [{"to": "nowhere"}]},
        {"id": "b", "kind": "rate_limiter", "rate_per_s": -5}]}"#;
    let text: Vec<String> = parse(json)
        .unwrap_err()
        .iter()
        .map(|p| p.to_string())
        .collect();
    for want in [
        "$.components[1].window: unknown field",
        "$.components[1].rate_per_s: missing (required)",
        "$.components[1].burst: must be a whole number ≥ 1",
        "$.components[1].routes[0].to: unknown component id `nowhere`",
        "$.components[2].rate_per_s: -5 is not a positive number",
    ] {
        assert!(
            text.iter().any(|t| t.starts_with(want)),
            "missing {want:?} in {text:#?}"
        );
    }
}
