//! Version-1 documents give the same figures, to the bit, as the engine gave before schema
//! version 2 existed: the numbers below were recorded from that engine (same seeds). A change
//! to the engine that moves any of them changes what every saved version-1 design reports.

use sdsim_engine::design::parse;
use sdsim_engine::engine::Simulation;

/// (template, events, completed, dropped, errors, mean_ms, p99_ms, timeline entries)
type Pinned = (&'static str, u64, u64, u64, u64, f64, f64, usize);

const PINNED: [Pinned; 7] = [
    (
        "minimal.json",
        11657,
        4161,
        0,
        0,
        508.48506150340324,
        2455.551,
        0,
    ),
    (
        "three-tier.json",
        1080782,
        252260,
        0,
        0,
        55.48471394784427,
        270.335,
        0,
    ),
    (
        "bench-five.json",
        360796,
        90188,
        0,
        0,
        54.575844416696185,
        124.031,
        0,
    ),
    (
        "url-shortener.json",
        9744939,
        1845101,
        0,
        0,
        6.931538165821109,
        17.007,
        7,
    ),
    (
        "chat-notifications.json",
        13861549,
        1079920,
        0,
        0,
        10.194811234874871,
        20.911,
        0,
    ),
    (
        "read-heavy-cache.json",
        11303742,
        1618437,
        0,
        0,
        5.933256228434238,
        19.231,
        0,
    ),
    (
        "event-pipeline.json",
        19186904,
        1951083,
        0,
        0,
        2.0068118592663344,
        4.755,
        0,
    ),
];

#[test]
fn version_1_templates_report_the_recorded_figures() {
    let mut wrong = Vec::new();
    for (name, events, completed, dropped, errors, mean_ms, p99_ms, timeline) in PINNED {
        let path = format!("{}/../config/designs/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).expect("template");
        let design = parse(&text).unwrap_or_else(|p| panic!("{name}: {p:?}"));
        let mut sim = Simulation::new(design);
        sim.run();
        let r = sim.report();
        let e = &r.end_to_end;
        let got = (
            name,
            r.events,
            e.completed,
            e.dropped,
            e.errors,
            e.mean_ms,
            e.p99_ms,
            r.timeline.len(),
        );
        if got
            != (
                name, events, completed, dropped, errors, mean_ms, p99_ms, timeline,
            )
        {
            wrong.push(format!("{got:?}"));
        }
    }
    assert!(wrong.is_empty(), "figures moved:\n{}", wrong.join("\n"));
}

/// Features that no template uses together: calls with retries, timeouts and a breaker, a
/// partition, classes, a schedule, on/off arrivals, a lossy queue and a station timeout.
#[test]
fn a_version_1_design_with_every_dynamic_reports_the_recorded_figures() {
    let design = parse(
        r#"{"duration_s": 900, "warmup_s": 30, "seed": 42, "components": [
            {"id": "web", "kind": "source", "rate_per_s": 40, "to": "api",
             "classes": [{"name": "read", "p": 0.7}, {"name": "write", "p": 0.3}]},
            {"id": "burst", "kind": "source", "to": "api",
             "arrival": {"process": "on_off", "on_s": 20, "off_s": 40},
             "schedule": {"points": [{"at_s": 0, "rate_per_s": 5}, {"at_s": 300, "rate_per_s": 30}], "repeat_s": 600}},
            {"id": "api", "kind": "service", "instances": 2, "concurrency": 2, "queue_capacity": 20,
             "timeout_ms": 800, "service_time": {"dist": "lognormal", "mean_ms": 30, "stddev_ms": 20},
             "calls": [{"to": "db", "p": 0.9, "retries": 2, "backoff_ms": 20, "timeout_ms": 300,
                        "breaker": {"failures": 5, "open_s": 10}, "latency": {"dist": "constant", "ms": 1}},
                       {"to": "pay", "p": 1, "class": "write", "retries": 1}],
             "fanout": "parallel", "error_rate": 0.01,
             "routes": [{"to": "q", "p": 0.2, "class": "write"}]},
            {"id": "db", "kind": "database", "pool_size": 6, "replicas": 1, "write_ratio": 0.2,
             "read_time": {"dist": "exponential", "mean_ms": 8}, "write_time": {"dist": "erlang", "k": 3, "mean_ms": 20}},
            {"id": "pay", "kind": "external", "latency": {"dist": "uniform", "min_ms": 50, "max_ms": 150},
             "max_concurrency": 20, "queue_capacity": 5, "error_rate": 0.02},
            {"id": "q", "kind": "queue", "consumers": 2, "capacity": 100,
             "consumer_time": {"dist": "empirical", "points": [{"ms": 10, "weight": 3}, {"ms": 90, "weight": 1}]}}
         ],
         "faults": [{"at_s": 200, "duration_s": 60, "action": "add_latency", "component": "db", "ms": 400},
                    {"at_s": 400, "duration_s": 30, "action": "partition", "from": "api", "to": "pay"},
                    {"at_s": 600, "duration_s": 50, "action": "crash", "component": "api", "instances": 1},
                    {"at_s": 700, "duration_s": 20, "action": "error_rate", "component": "db", "rate": 0.5}]}"#,
    )
    .expect("valid");
    let mut sim = Simulation::new(design);
    // In slices, as the server runs it.
    let mut t = 0.0;
    while !sim.is_finished() {
        t += 7.0;
        sim.advance_to(t);
    }
    let r = sim.report();
    let e = &r.end_to_end;
    let got = (
        r.events,
        e.completed,
        e.dropped,
        e.errors,
        e.mean_ms,
        e.p99_ms,
        r.timeline.len(),
        r.components["api"].timed_out,
        r.components["db"].completed,
        r.components["pay"].dropped,
    );
    assert_eq!(
        got,
        (
            237071,
            39150,
            1063,
            675,
            208.25611690088687,
            859.647,
            16,
            312,
            32647,
            0
        )
    );
}
