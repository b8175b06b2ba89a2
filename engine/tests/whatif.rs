//! Live what-if: changes applied to a running simulation change what follows, are logged on
//! the timeline and listed in the report, and replaying the design and seed with that list
//! gives the same report bit for bit.

use sdsim_engine::design::{parse, Design};
use sdsim_engine::engine::changes::{parse_changes, AppliedChange, Change};
use sdsim_engine::engine::stats::Report;
use sdsim_engine::engine::{ApplyError, Simulation};

fn design(json: &str) -> Design {
    parse(json).unwrap_or_else(|p| panic!("{p:?}"))
}

/// Changes as a user sends them (the `changes` array of a PATCH).
fn changes(design: &Design, json: &str) -> Vec<Change> {
    let v: sonic_rs::Value = sonic_rs::from_str(json).expect("JSON");
    parse_changes(&v, design, "$.changes").unwrap_or_else(|p| panic!("{p:?}"))
}

fn one(design: &Design, json: &str) -> Change {
    changes(design, &format!("[{json}]")).remove(0)
}

fn json(report: &Report) -> String {
    sonic_rs::to_string(report).expect("a report serialises")
}

/// Open traffic on `api` (two instances, overloaded: 150/s against 100/s), which calls `db`;
/// a closed-loop population on `api` too.
const MIXED: &str = r#"{"version": 2, "duration_s": 100, "seed": 11, "components": [
    {"id": "web", "kind": "source", "rate_per_s": 150, "to": "api"},
    {"id": "users", "kind": "source", "users": 20,
     "think_time": {"dist": "exponential", "mean_ms": 500}, "to": "api"},
    {"id": "api", "kind": "service", "instances": 2,
     "service_time": {"dist": "exponential", "mean_ms": 20},
     "calls": [{"to": "db", "p": 0.5}]},
    {"id": "db", "kind": "service", "concurrency": 4,
     "service_time": {"dist": "exponential", "mean_ms": 5}},
    {"id": "cache", "kind": "cache", "hit_ratio": 0.5,
     "hit_time": {"dist": "constant", "ms": 1}, "miss_to": "db"}
]}"#;

/// A live run in uneven slices, as the runner takes them, applying each change at the first
/// slice end at or after its time; returns the final report.
fn live_run(design: &Design, plan: &[(f64, &str)]) -> Report {
    let mut sim = Simulation::new(design.clone());
    let mut plan: Vec<(f64, Change)> = plan.iter().map(|(t, c)| (*t, one(design, c))).collect();
    plan.reverse();
    let mut step = 0.13;
    while !sim.is_finished() {
        while plan.last().is_some_and(|(t, _)| *t <= sim.now()) {
            let (_, change) = plan.pop().expect("a planned change");
            sim.apply(&change).expect("the change applies");
        }
        sim.advance_to(sim.now() + step);
        step = if step > 0.5 { 0.13 } else { step * 1.7 };
    }
    sim.report()
}

#[test]
fn replaying_the_recorded_changes_gives_the_same_report_bit_for_bit() {
    let d = design(MIXED);
    let plan = [
        (
            0.0,
            r#"{"op": "set", "component": "db", "field": "concurrency", "value": 2}"#,
        ),
        // Overloaded since the start: requests are queued at both instances.
        (
            10.0,
            r#"{"op": "set", "component": "api", "field": "instances", "value": 1}"#,
        ),
        (
            12.0,
            r#"{"op": "set", "component": "api", "field": "instances", "value": 4}"#,
        ),
        (
            20.0,
            r#"{"op": "fault", "action": "crash", "component": "api", "instances": 1}"#,
        ),
        (
            21.0,
            r#"{"op": "fault", "action": "add_latency", "component": "db", "ms": 50}"#,
        ),
        (
            22.0,
            r#"{"op": "fault", "action": "error_rate", "component": "db", "rate": 0.3}"#,
        ),
        (
            25.0,
            r#"{"op": "set", "component": "web", "field": "rate_per_s", "value": 40}"#,
        ),
        (30.0, r#"{"op": "clear", "component": "api"}"#),
        (35.0, r#"{"op": "clear", "component": "db"}"#),
        (
            40.0,
            r#"{"op": "set", "component": "users", "field": "users", "value": 5}"#,
        ),
        (
            45.0,
            r#"{"op": "set", "component": "api", "field": "concurrency", "value": 3}"#,
        ),
        (
            50.0,
            r#"{"op": "set", "component": "users", "field": "users", "value": 30}"#,
        ),
        (
            55.0,
            r#"{"op": "set", "component": "api", "field": "concurrency", "value": 1}"#,
        ),
        (
            60.0,
            r#"{"op": "set", "component": "api", "field": "service_time",
                  "value": {"dist": "constant", "ms": 5}}"#,
        ),
        (
            70.0,
            r#"{"op": "fault", "action": "crash", "component": "cache", "instances": 1}"#,
        ),
    ];
    let live = live_run(&d, &plan);
    assert_eq!(live.changes.len(), plan.len(), "{:?}", live.changes);
    for (applied, (t, _)) in live.changes.iter().zip(&plan) {
        // Applied at the end of the slice that reached the planned time.
        assert!(applied.t_s >= *t && applied.t_s < t + 1.0, "{applied:?}");
    }
    let logged: Vec<&str> = live
        .timeline
        .iter()
        .filter(|e| e.event.starts_with("what-if: "))
        .map(|e| e.event.as_str())
        .collect();
    assert!(logged.contains(&"what-if: instances 2 → 1"), "{logged:?}");
    assert!(logged.contains(&"what-if: users 20 → 5"), "{logged:?}");
    assert!(logged.contains(&"what-if: cleared faults"), "{logged:?}");
    assert!(
        logged
            .iter()
            .any(|e| e.starts_with("what-if: crash 1 instance(s)")),
        "{logged:?}"
    );

    // The replay, from the report as stored (JSON), in one go.
    let stored: Report = sonic_rs::from_str(&json(&live)).expect("the report reads back");
    let mut replay = Simulation::with_changes(d.clone(), stored.changes).expect("replayable");
    replay.run();
    assert_eq!(json(&replay.report()), json(&live));

    // And the changes did change the run.
    let mut plain = Simulation::new(d);
    plain.run();
    assert_ne!(plain.report().end_to_end, live.end_to_end);
}

#[test]
fn more_instances_lower_the_utilisation_of_later_points() {
    let overloaded = design(
        r#"{"duration_s": 100, "seed": 3, "components": [
            {"id": "web", "kind": "source", "rate_per_s": 120, "to": "api"},
            {"id": "api", "kind": "service",
             "service_time": {"dist": "exponential", "mean_ms": 10}}]}"#,
    );
    let mut changed = Simulation::new(overloaded.clone());
    let mut unchanged = Simulation::new(overloaded.clone());
    changed.advance_to(50.0);
    unchanged.advance_to(50.0);
    let before = changed.series_point().utilization["api"];
    assert!(before > 0.95, "one instance is saturated: {before}");
    changed
        .apply(&one(
            &overloaded,
            r#"{"op": "set", "component": "api", "field": "instances", "value": 4}"#,
        ))
        .expect("applies");
    changed.advance_to(100.0);
    unchanged.advance_to(100.0);
    let (after, without) = (
        changed.series_point().utilization["api"],
        unchanged.series_point().utilization["api"],
    );
    // Cumulative since the start: half the run at ~1, half at 120/400 = 0.3.
    assert!(after < 0.75, "utilisation after 1 → 4: {after}");
    assert!(without > 0.95, "without the change: {without}");
    // Half the run with one worker, half with four.
    let workers = changed.report().components["api"].mean_workers;
    assert!((workers - 2.5).abs() < 1e-9, "{workers}");
}

#[test]
fn fewer_workers_retire_as_they_finish() {
    // Constant 10 ms services, always a queue: 4 workers complete 400/s, 1 worker 100/s.
    let d = design(
        r#"{"duration_s": 100, "seed": 4, "components": [
            {"id": "web", "kind": "source", "rate_per_s": 1000, "arrival": "constant",
             "to": "api"},
            {"id": "api", "kind": "service", "concurrency": 4, "queue_capacity": 1000,
             "service_time": {"dist": "constant", "ms": 10}}]}"#,
    );
    let mut sim = Simulation::new(d.clone());
    sim.advance_to(50.0);
    let at_50 = sim.series_point().completed;
    assert!((19_900..=20_000).contains(&at_50), "{at_50}");
    sim.apply(&one(
        &d,
        r#"{"op": "set", "component": "api", "field": "concurrency", "value": 1}"#,
    ))
    .expect("applies");
    sim.advance_to(100.0);
    let second_half = sim.series_point().completed - at_50;
    assert!(
        (4_990..=5_010).contains(&second_half),
        "one worker completes 100/s: {second_half}"
    );
    // And back up: the new workers take the queue at once.
    let mut up = Simulation::new(d.clone());
    up.apply(&one(
        &d,
        r#"{"op": "set", "component": "api", "field": "concurrency", "value": 1}"#,
    ))
    .expect("applies");
    up.advance_to(50.0);
    let one_worker = up.series_point().completed;
    up.apply(&one(
        &d,
        r#"{"op": "set", "component": "api", "field": "concurrency", "value": 8}"#,
    ))
    .expect("applies");
    up.advance_to(51.0);
    assert!(
        up.series_point().completed - one_worker >= 790,
        "eight workers complete 800/s"
    );
}

#[test]
fn a_smaller_population_sends_less_and_a_larger_one_more() {
    // N users thinking 1 s against a fast service: about N requests per second.
    let d = design(
        r#"{"version": 2, "duration_s": 300, "seed": 6, "components": [
            {"id": "users", "kind": "source", "users": 50,
             "think_time": {"dist": "exponential", "mean_ms": 1000}, "to": "api"},
            {"id": "api", "kind": "service", "concurrency": 100,
             "service_time": {"dist": "constant", "ms": 1}}]}"#,
    );
    let mut sim = Simulation::new(d.clone());
    let rate = |sim: &mut Simulation, users: u32, from: f64| {
        sim.apply(&one(
            &d,
            &format!(
                r#"{{"op": "set", "component": "users", "field": "users", "value": {users}}}"#
            ),
        ))
        .expect("applies");
        // Let the population settle (a leaving user leaves at its next wake-up).
        sim.advance_to(from + 20.0);
        let start = sim.series_point().completed;
        sim.advance_to(from + 100.0);
        (sim.series_point().completed - start) as f64 / 80.0
    };
    sim.advance_to(20.0);
    let fifty = (sim.series_point().completed as f64) / 20.0;
    let ten = rate(&mut sim, 10, 20.0);
    let eighty = rate(&mut sim, 80, 120.0);
    assert!((40.0..60.0).contains(&fifty), "{fifty}");
    assert!((8.0..12.0).contains(&ten), "{ten}");
    assert!((70.0..90.0).contains(&eighty), "{eighty}");
}

#[test]
fn bad_changes_are_refused_with_the_field_named() {
    let d = design(MIXED);
    let v: sonic_rs::Value = sonic_rs::from_str(
        r#"[
        {"op": "set", "component": "nope", "field": "instances", "value": 2},
        {"op": "set", "component": "api", "field": "instances", "value": 0},
        {"op": "set", "component": "cache", "field": "service_time",
         "value": {"dist": "constant", "ms": 1}},
        {"op": "set", "component": "users", "field": "rate_per_s", "value": 5},
        {"op": "set", "component": "api", "field": "service_time",
         "value": {"dist": "exponential"}},
        {"op": "fault", "action": "melt", "component": "api"},
        {"op": "fault", "action": "error_rate", "component": "web", "rate": 0.1},
        {"op": "grow", "component": "api"},
        {"op": "set", "component": "api", "field": "instances", "value": "3", "why": 1}
    ]"#,
    )
    .expect("JSON");
    let problems = parse_changes(&v, &d, "$.changes").expect_err("refused");
    let got: Vec<String> = problems.iter().map(ToString::to_string).collect();
    let want = [
        "$.changes[0].component: no component `nope` in the design",
        "$.changes[1].value: instances must be an integer in 1..=1000",
        "$.changes[2].field: `service_time` cannot be set on `cache` (settable there: instances, concurrency)",
        "$.changes[3].field: `rate_per_s` cannot be set on `users` (settable there: users)",
        "$.changes[4].value.mean_ms: missing (required)",
        "$.changes[5].action: unknown action `melt` (crash, add_latency, error_rate)",
        "$.changes[6].component: `web` has no instances or workers: faults apply to stations",
        "$.changes[7].op: unknown op `grow` (set, fault, clear)",
        "$.changes[8].why: unknown field (allowed: op, component, field, value)",
        "$.changes[8].value: instances must be an integer in 1..=1000",
    ];
    assert_eq!(got, want);
}

#[test]
fn a_finished_run_takes_no_change() {
    let d = design(MIXED);
    let mut sim = Simulation::new(d.clone());
    sim.run();
    let change = one(&d, r#"{"op": "clear", "component": "api"}"#);
    assert_eq!(sim.apply(&change), Err(ApplyError::Finished));
    assert!(sim.report().changes.is_empty());
}

#[test]
fn applied_changes_read_back_as_written() {
    let d = design(MIXED);
    let written = r#"[{"op":"set","component":"api","field":"service_time","value":{"dist":"lognormal","mean_ms":20,"stddev_ms":5}},{"op":"fault","action":"add_latency","component":"db","ms":100.5},{"op":"set","component":"web","field":"rate_per_s","value":40.25},{"op":"clear","component":"api"}]"#;
    let list = changes(&d, written);
    assert_eq!(sonic_rs::to_string(&list).expect("serialises"), written);
    let applied = AppliedChange {
        t_s: 12.345,
        change: list[1].clone(),
    };
    let text = sonic_rs::to_string(&applied).expect("serialises");
    assert_eq!(
        text,
        r#"{"t_s":12.345,"op":"fault","action":"add_latency","component":"db","ms":100.5}"#
    );
    let back: AppliedChange = sonic_rs::from_str(&text).expect("reads back");
    assert_eq!(back, applied);
}
