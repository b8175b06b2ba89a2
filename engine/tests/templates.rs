//! The design templates of `config/designs/`: every file validates, runs, and gives a sane
//! report (requests complete, nothing saturated, nothing dropped, its SLOs met), and each of
//! the system templates does what its `description` says.
//!
//! Each template runs at its full length: shortening them would cut out what some are for
//! (the burst at 300 s of `event-pipeline.json`, the crash at 900 s of `url-shortener.json`),
//! and the engine is optimised even in debug builds, so all of them take seconds.

use sdsim_engine::design::parse;
use sdsim_engine::engine::stats::Report;
use sdsim_engine::engine::Simulation;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

/// A component busy this much of the run on average is saturated for these checks. A busy
/// fraction cannot exceed 1, so "below 1" would only catch a station pinned at 100%.
const SATURATED: f64 = 0.9;

/// Templates that must be there (the loop below checks whatever else is in the folder).
const SYSTEM_TEMPLATES: [&str; 3] = [
    "chat-notifications.json",
    "read-heavy-cache.json",
    "event-pipeline.json",
];

/// The metastability templates fail on purpose (and their fixed versions shed load): they are
/// validated and documented like the others, and `tests/metastability.rs` checks what they do.
const METASTABILITY_TEMPLATES: [&str; 6] = [
    "retry-storm.json",
    "retry-storm-budget.json",
    "cache-stampede.json",
    "cache-stampede-fixed.json",
    "slow-dependency.json",
    "slow-dependency-codel.json",
];

/// `minimal.json` is the bare form every schema version accepts: no name, no description.
const UNDOCUMENTED: [&str; 1] = ["minimal.json"];

fn designs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/designs")
}

/// File name → its text.
fn templates() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(designs_dir()).expect("config/designs") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            out.insert(name, std::fs::read_to_string(&path).expect("readable"));
        }
    }
    out
}

/// Every template run once (shared by the tests of this file): its report, or its problems.
fn reports() -> &'static BTreeMap<String, Result<Report, Vec<String>>> {
    static REPORTS: OnceLock<BTreeMap<String, Result<Report, Vec<String>>>> = OnceLock::new();
    REPORTS.get_or_init(|| {
        templates()
            .into_iter()
            .map(|(name, text)| {
                let result = parse(&text)
                    .map(|design| {
                        let mut sim = Simulation::new(design);
                        sim.run();
                        sim.report()
                    })
                    .map_err(|problems| problems.iter().map(|p| p.to_string()).collect());
                (name, result)
            })
            .collect()
    })
}

fn report(name: &str) -> &'static Report {
    match &reports()[name] {
        Ok(r) => r,
        Err(problems) => panic!("{name} is invalid: {problems:#?}"),
    }
}

/// What is wrong with one template's report (nothing, for a sane one).
fn check(name: &str, r: &Report) -> Vec<String> {
    let mut wrong = Vec::new();
    let e2e = &r.end_to_end;
    if e2e.completed == 0 {
        wrong.push(format!("{name}: no request completed"));
    }
    if e2e.dropped > 0 {
        wrong.push(format!("{name}: {} requests dropped", e2e.dropped));
    }
    if e2e.errors as f64 > 0.01 * e2e.completed as f64 {
        wrong.push(format!(
            "{name}: {} errors in {}",
            e2e.errors, e2e.completed
        ));
    }
    for (id, c) in &r.components {
        if c.kind == "source" {
            continue;
        }
        if c.arrivals == 0 {
            wrong.push(format!("{name}: {id} receives nothing (a mis-wired edge?)"));
        }
        if c.utilization >= SATURATED {
            wrong.push(format!(
                "{name}: {id} is saturated ({:.1}% busy)",
                c.utilization * 100.0
            ));
        }
        if c.dropped > 0 {
            wrong.push(format!("{name}: {id} dropped {}", c.dropped));
        }
    }
    for slo in r.slos.iter().filter(|s| !s.met) {
        wrong.push(format!(
            "{name}: SLO `{}` missed ({} against {})",
            slo.name, slo.actual, slo.target
        ));
    }
    wrong
}

#[test]
fn every_template_validates_runs_and_stays_below_saturation() {
    let texts = templates();
    for name in SYSTEM_TEMPLATES.iter().chain(&METASTABILITY_TEMPLATES) {
        assert!(
            texts.contains_key(*name),
            "config/designs/{name} is missing"
        );
    }
    let mut wrong = Vec::new();
    for (name, text) in &texts {
        let doc: serde_json::Value = serde_json::from_str(text).expect("JSON");
        if !UNDOCUMENTED.contains(&name.as_str()) {
            for key in ["name", "description"] {
                if doc[key].as_str().is_none_or(str::is_empty) {
                    wrong.push(format!("{name}: no `{key}` saying what it models"));
                }
            }
        }
        match &reports()[name] {
            Err(problems) => wrong.push(format!("{name} is invalid: {problems:?}")),
            Ok(_) if METASTABILITY_TEMPLATES.contains(&name.as_str()) => {}
            Ok(r) => wrong.extend(check(name, r)),
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn the_check_flags_a_saturated_dropping_design() {
    // λ 12/s against one worker of 100 ms: 120% offered, a waiting room of 5.
    let design = parse(
        r#"{"duration_s": 600, "seed": 3, "components": [
            {"id": "users", "kind": "source", "rate_per_s": 12, "to": "api"},
            {"id": "api", "kind": "service", "queue_capacity": 5,
             "service_time": {"dist": "exponential", "mean_ms": 100}},
            {"id": "idle", "kind": "service", "service_time": {"dist": "constant", "ms": 1}}
        ]}"#,
    )
    .unwrap();
    let mut sim = Simulation::new(design);
    sim.run();
    let wrong = check("overload", &sim.report()).join("\n");
    for want in [
        "requests dropped",
        "api is saturated",
        "api dropped",
        "idle receives nothing",
    ] {
        assert!(wrong.contains(want), "{want} not in:\n{wrong}");
    }
}

fn share(r: &Report, part: &[&str], of: &str) -> f64 {
    let sum: u64 = part.iter().map(|id| r.components[*id].arrivals).sum();
    sum as f64 / r.components[of].arrivals as f64
}

#[test]
fn chat_messages_fan_out_to_the_websocket_nodes_and_offline_members_get_a_push() {
    let r = report("chat-notifications.json");
    // Sends (35%) go on to the pub/sub router; history reads stop at the message service.
    assert!((share(r, &["pubsub"], "messages") - 0.35).abs() < 0.01);
    // Each node holds members of a channel with its own probability (parallel calls).
    for (node, p) in [("ws-node-1", 0.9), ("ws-node-2", 0.7), ("ws-node-3", 0.5)] {
        assert!((share(r, &[node], "pubsub") - p).abs() < 0.01, "{node}");
    }
    assert!((share(r, &["notify-queue"], "pubsub") - 0.3).abs() < 0.01);
    assert_eq!(
        r.components["notification-workers"].arrivals,
        r.components["notify-queue"].arrivals
    );
    // A send waits for its fan-out; a push notification is background work it never waits for.
    assert!(r.classes["send"].mean_ms > r.classes["history"].mean_ms);
    assert!(r.classes["send"].p99_ms < r.components["push-provider"].p50_ms);
}

#[test]
fn the_cache_keeps_most_reads_off_the_replicas_and_writes_reach_only_the_primary() {
    let r = report("read-heavy-cache.json");
    assert!((share(r, &["cache"], "api") - 0.95).abs() < 0.005);
    assert!((share(r, &["primary"], "api") - 0.05).abs() < 0.005);
    // Misses (15%) go through the balancer, which splits them between the replicas.
    assert!((share(r, &["replica-1", "replica-2"], "cache") - 0.15).abs() < 0.005);
    assert_eq!(
        r.components["replica-lb"].arrivals,
        r.components["replica-1"].arrivals + r.components["replica-2"].arrivals
    );
    for replica in ["replica-1", "replica-2"] {
        assert!(share(r, &[replica], "replica-lb") > 0.35, "{replica}");
    }
}

#[test]
fn the_event_log_absorbs_the_burst_and_the_producers_never_wait_for_it() {
    let r = report("event-pipeline.json");
    let log = &r.components["event-log"];
    // The burst outruns the consumers: a backlog forms (seconds of lag at p99)...
    assert!(log.p99_ms > 5_000.0, "event-log p99 {} ms", log.p99_ms);
    // ...and drains: every event reaches the store, none is dropped.
    assert_eq!(log.dropped, 0);
    let store = r.components["event-store"].completed as f64;
    assert!(store >= 0.999 * r.end_to_end.completed as f64);
    // Producers are answered on enqueue, so their latency stays that of the ingestion API.
    assert!(
        r.end_to_end.p99_ms < 25.0,
        "ack p99 {}",
        r.end_to_end.p99_ms
    );
}
