//! Cost (schema version 2): prices per instance-hour and per million requests, the report's
//! cost per hour and per million successful requests, and budgets as SLOs.

use sdsim_engine::design::parse;
use sdsim_engine::engine::stats::Report;
use sdsim_engine::engine::Simulation;

fn simulate(json: &str) -> Report {
    let mut sim = Simulation::new(parse(json).unwrap_or_else(|p| panic!("{p:?}")));
    sim.run();
    sim.report()
}

/// Equal up to the rounding of the time integrals (relative).
fn same(what: &str, got: f64, want: f64) {
    assert!(
        (got - want).abs() <= 1e-9 * want.abs().max(1.0),
        "{what}: got {got}, want {want}"
    );
}

const FIXED: &str = r#"{"version": 2, "duration_s": 7800, "warmup_s": 600, "seed": 11,
    "components": [
    {"id": "users", "kind": "source", "rate_per_s": 20, "to": "lb"},
    {"id": "lb", "kind": "load_balancer", "targets": ["api"], "cost_per_instance_hour": 0.025},
    {"id": "api", "kind": "service", "instances": 3, "concurrency": 2, "cost_per_instance_hour": 0.25,
     "service_time": {"dist": "exponential", "mean_ms": 50}, "calls": [{"to": "db"}]},
    {"id": "db", "kind": "database", "replicas": 1, "pool_size": 4, "cost_per_instance_hour": 1.5,
     "read_time": {"dist": "constant", "ms": 5}, "write_time": {"dist": "constant", "ms": 9},
     "write_ratio": 0.1}]}"#;

#[test]
fn a_fixed_size_design_costs_instances_times_price_times_hours() {
    let r = simulate(FIXED);
    let cost = r
        .cost
        .as_ref()
        .expect("a design with prices reports its cost");
    // Measured from the end of the warm-up: 7,200 s, two hours.
    same("measured seconds", r.measured_s, 7200.0);
    same(
        "api mean instances",
        cost.components["api"].mean_instances,
        3.0,
    );
    same("api per hour", cost.components["api"].per_hour, 3.0 * 0.25);
    same(
        "db (primary + replica)",
        cost.components["db"].per_hour,
        2.0 * 1.5,
    );
    same("lb", cost.components["lb"].per_hour, 0.025);
    same("total per hour", cost.per_hour, 0.75 + 3.0 + 0.025);
    same("measured cost", cost.measured, 3.775 * 2.0);
    let succeeded: u64 = r.clients.values().map(|c| c.succeeded).sum();
    assert_eq!(cost.successful_requests, succeeded);
    // 20 req/s for two hours, nothing dropped at these loads.
    assert!(succeeded > 140_000, "{succeeded}");
    same(
        "per million successful requests",
        cost.per_million_requests.unwrap(),
        3.775 * 2.0 / succeeded as f64 * 1e6,
    );
    assert!(r
        .table()
        .contains("cost: 3.7750 per hour (7.5500 for the measured time)"));
}

#[test]
fn an_external_bills_every_call_made_to_it() {
    let r = simulate(
        r#"{"version": 2, "duration_s": 3600, "seed": 12, "components": [
        {"id": "u", "kind": "source", "rate_per_s": 50, "to": "api"},
        {"id": "api", "kind": "service", "concurrency": 50, "service_time": {"dist": "constant", "ms": 2},
         "calls": [{"to": "payments", "p": 0.3}]},
        {"id": "payments", "kind": "external", "latency": {"dist": "constant", "ms": 30},
         "cost_per_million_requests": 40, "cost_per_instance_hour": 0.5}]}"#,
    );
    let cost = r.cost.as_ref().unwrap();
    let payments = &cost.components["payments"];
    let calls = r.components["payments"].arrivals;
    assert_eq!(payments.requests, calls);
    // About 30 % of 180,000 requests call it.
    assert!((50_000..58_000).contains(&calls), "{calls}");
    // One hour measured: the per-request part is calls × price.
    same(
        "payments per hour",
        payments.per_hour,
        calls as f64 * 40.0 / 1e6 + 0.5,
    );
    same("total", cost.per_hour, payments.per_hour);
    assert!(!cost.components.contains_key("api"), "api has no price");
}

/// The instances in service over [0, end], integrated from the timeline's changes.
fn mean_instances_from_timeline(r: &Report, id: &str, start: f64, end: f64) -> f64 {
    let (mut area, mut last, mut now_instances) = (0.0, 0.0, start);
    for t in r.timeline.iter().filter(|t| t.component == id) {
        let changed = t.event.ends_with("instances in service") || t.event.starts_with("scale in");
        if !changed {
            continue;
        }
        let after = t.event.split('→').nth(1).unwrap().trim();
        let to: f64 = after.split(' ').next().unwrap().parse().unwrap();
        area += now_instances * (t.t_s - last);
        (last, now_instances) = (t.t_s, to);
    }
    area += now_instances * (end - last);
    area / end
}

#[test]
fn autoscaling_bills_the_mean_instances_over_time() {
    let r = simulate(
        r#"{"version": 2, "duration_s": 3000, "seed": 5, "components": [
        {"id": "u", "kind": "source", "to": "api",
         "schedule": {"points": [{"at_s": 0, "rate_per_s": 10}, {"at_s": 1500, "rate_per_s": 40},
                                 {"at_s": 2200, "rate_per_s": 5}, {"at_s": 3000, "rate_per_s": 5}]}},
        {"id": "api", "kind": "service", "instances": 2, "cost_per_instance_hour": 0.9,
         "service_time": {"dist": "exponential", "mean_ms": 100},
         "autoscale": {"target_utilization": 0.7, "min": 2, "max": 10, "interval_s": 10,
                       "cooldown_s": 30, "startup_s": 20}}]}"#,
    );
    let derived = mean_instances_from_timeline(&r, "api", 2.0, 3000.0);
    let api = &r.cost.as_ref().unwrap().components["api"];
    same("mean instances", api.mean_instances, derived);
    // It scaled out and back in: neither the minimum nor the maximum all along.
    assert!(derived > 2.5 && derived < 6.0, "{derived}");
    assert!(r.timeline.iter().any(|t| t.event.starts_with("scale in")));
    same("per hour", api.per_hour, derived * 0.9);
}

#[test]
fn crashed_instances_are_not_billed() {
    let r = simulate(
        r#"{"version": 2, "duration_s": 1000, "seed": 1,
        "faults": [{"at_s": 100, "duration_s": 100, "action": "crash", "component": "api", "instances": 1}],
        "components": [
        {"id": "u", "kind": "source", "rate_per_s": 5, "to": "api"},
        {"id": "api", "kind": "service", "instances": 2, "cost_per_instance_hour": 2,
         "service_time": {"dist": "exponential", "mean_ms": 50}}]}"#,
    );
    let api = &r.cost.as_ref().unwrap().components["api"];
    same("mean instances", api.mean_instances, 1.9);
    same("per hour", api.per_hour, 3.8);
}

#[test]
fn budgets_are_checked_against_the_cost() {
    let design = |slos: &str| {
        FIXED.replace(
            r#""seed": 11,"#,
            &format!(r#""seed": 11, "slos": [{slos}],"#),
        )
    };
    let r = simulate(&design(
        r#"{"name": "budget", "metric": "cost_per_hour", "max": 4},
           {"name": "tight", "metric": "cost_per_hour", "max": 3.5},
           {"name": "api budget", "metric": "cost_per_hour", "component": "api", "max": 0.75},
           {"name": "per million", "metric": "cost_per_million_requests", "max": 1}"#,
    ));
    let verdict: Vec<(&str, bool, f64)> = r
        .slos
        .iter()
        .map(|s| (s.name.as_str(), s.met, s.actual))
        .collect();
    let cost = r.cost.as_ref().unwrap();
    assert_eq!(
        verdict,
        [
            ("budget", true, cost.per_hour),
            ("tight", false, cost.per_hour),
            ("api budget", true, 0.75),
            ("per million", false, cost.per_million_requests.unwrap()),
        ]
    );
    assert!(r
        .table()
        .contains("SLO tight: MISSED (measured 3.775, target 3.5)"));
}

#[test]
fn designs_without_prices_report_what_they_did_before() {
    let priced = simulate(FIXED);
    let unpriced_doc = FIXED
        .replace(r#", "cost_per_instance_hour": 0.025"#, "")
        .replace(r#" "cost_per_instance_hour": 0.25,"#, "")
        .replace(r#" "cost_per_instance_hour": 1.5,"#, "");
    assert!(!unpriced_doc.contains("cost"), "{unpriced_doc}");
    let unpriced = simulate(&unpriced_doc);
    assert!(unpriced.cost.is_none());
    let unpriced_json = serde_json::to_value(&unpriced).unwrap();
    assert!(unpriced_json.get("cost").is_none());
    // Prices are accounting: every other figure of the run is the same, to the bit.
    let mut priced_json = serde_json::to_value(&priced).unwrap();
    assert!(priced_json.get("cost").is_some());
    priced_json.as_object_mut().unwrap().remove("cost");
    assert_eq!(priced_json, unpriced_json);
    assert!(!unpriced.table().contains("cost"));

    let v1 = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/designs/minimal.json"
    ))
    .unwrap();
    let json = serde_json::to_string(&simulate(&v1)).unwrap();
    assert!(!json.contains("cost"), "{json}");
}

#[test]
fn bad_prices_and_budgets_are_refused_by_path() {
    let bad = parse(
        r#"{"version": 2, "duration_s": 10, "slos": [
            {"metric": "cost_per_hour", "component": "free", "max": 1},
            {"metric": "cost_per_million_requests", "component": "pay", "max": 1},
            {"metric": "cost_per_hour", "class": "read", "max": 1}],
          "components": [
            {"id": "u", "kind": "source", "rate_per_s": 1, "to": "api", "cost_per_instance_hour": 1,
             "classes": [{"name": "read", "p": 1}]},
            {"id": "api", "kind": "service", "service_time": {"dist": "constant", "ms": 1},
             "cost_per_million_requests": 3, "calls": [{"to": "pay"}, {"to": "db"}, {"to": "ext"}]},
            {"id": "pay", "kind": "external", "latency": {"dist": "constant", "ms": 1},
             "cost_per_instance_hour": -0.5, "cost_per_million_requests": "cheap"},
            {"id": "db", "kind": "service", "service_time": {"dist": "constant", "ms": 1}},
            {"id": "ext", "kind": "external", "latency": {"dist": "constant", "ms": 1},
             "cost_per_million_requests": 2},
            {"id": "free", "kind": "service", "service_time": {"dist": "constant", "ms": 1}}]}"#,
    )
    .unwrap_err();
    let text: Vec<String> = bad.iter().map(|p| p.to_string()).collect();
    for want in [
        "$.components[0].cost_per_instance_hour: unknown field",
        "$.components[1].cost_per_million_requests: unknown field",
        "$.components[2].cost_per_instance_hour: -0.5 is not a number ≥ 0",
        "$.components[2].cost_per_million_requests: must be a number",
        "$.slos[0].component: `free` has no price",
        "$.slos[1].component: cost per million requests is measured end to end",
        "$.slos[2].class: cost is not measured per request class",
    ] {
        assert!(
            text.iter().any(|t| t.starts_with(want)),
            "missing {want:?} in {text:#?}"
        );
    }

    // JSON has no infinite numbers: one too large to be finite is refused where it is read.
    let infinite = parse(&FIXED.replace("0.25", "1e999")).unwrap_err();
    assert!(
        infinite[0].message.contains("must be finite"),
        "{infinite:?}"
    );

    let nothing_priced = parse(
        r#"{"version": 2, "duration_s": 10, "slos": [{"metric": "cost_per_hour", "max": 1}],
          "components": [
            {"id": "u", "kind": "source", "rate_per_s": 1, "to": "api"},
            {"id": "api", "kind": "service", "service_time": {"dist": "constant", "ms": 1}}]}"#,
    )
    .unwrap_err();
    assert_eq!(
        nothing_priced[0].to_string(),
        "$.slos[0].metric: no component has a price: set cost_per_instance_hour on the components that cost"
    );

    let v1 = parse(
        r#"{"duration_s": 10, "slos": [{"metric": "cost_per_hour", "max": 1}],
          "components": [
            {"id": "u", "kind": "source", "rate_per_s": 1, "to": "api"},
            {"id": "api", "kind": "service", "service_time": {"dist": "constant", "ms": 1},
             "cost_per_instance_hour": 1}]}"#,
    )
    .unwrap_err();
    let text: Vec<String> = v1.iter().map(|p| p.to_string()).collect();
    assert_eq!(
        text,
        [
            "$.components[1].cost_per_instance_hour: a schema version 2 field: set \"version\": 2",
            "$.slos[0].metric: `cost_per_hour` is a schema version 2 metric: set \"version\": 2",
        ]
    );
}
