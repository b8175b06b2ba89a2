//! `sdsim design import --from otel-servicegraph`: a known design is simulated, the metrics
//! the OpenTelemetry Collector's servicegraph connector would export for it are written from
//! the run (per-edge request counts, per-edge server-side latency histograms with the
//! connector's default bounds), imported, and the imported design simulated again: the
//! services' rates and mean latencies come back within 5 %. Plus the importer's errors.

use sdsim_engine::design::{parse, Design, Kind};
use sdsim_engine::engine::stats::{ComponentStats, Report};
use sdsim_engine::engine::Simulation;
use sdsim_engine::import::{
    otel_servicegraph, otel_servicegraph_between, ImportError, ImportOptions,
};
use std::collections::BTreeMap;
use std::fmt::Write;

/// The connector's default latency bounds (seconds).
const BOUNDS: [f64; 16] = [
    0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.4, 2.0, 5.0, 10.0, 15.0,
];

/// Two sources; a front end calling auth always and the API sometimes; the API calls the
/// database 1.5 times per request (two call entries); auth calls it too (a diamond). The
/// database has one worker, so its waiting is part of what the telemetry shows.
const KNOWN: &str = r#"{"version": 2, "duration_s": 660, "warmup_s": 60, "seed": 11,
 "components": [
  {"id": "users", "kind": "source", "rate_per_s": 30, "to": "frontend"},
  {"id": "batch", "kind": "source", "rate_per_s": 5, "to": "api"},
  {"id": "frontend", "kind": "service", "concurrency": 8,
   "service_time": {"dist": "exponential", "mean_ms": 20},
   "calls": [{"to": "auth", "p": 1}, {"to": "api", "p": 0.6}]},
  {"id": "auth", "kind": "service", "concurrency": 4,
   "service_time": {"dist": "erlang", "k": 4, "mean_ms": 8},
   "calls": [{"to": "db", "p": 0.2}]},
  {"id": "api", "kind": "service", "concurrency": 8,
   "service_time": {"dist": "lognormal", "mean_ms": 25, "stddev_ms": 40},
   "calls": [{"to": "db", "p": 1}, {"to": "db", "p": 0.5}]},
  {"id": "db", "kind": "service", "concurrency": 1,
   "service_time": {"dist": "exponential", "mean_ms": 6}}
 ]}"#;

fn run(design: Design) -> (Report, Vec<ComponentStats>) {
    let mut sim = Simulation::new(design);
    sim.run();
    (sim.report(), sim.component_stats())
}

/// The servicegraph metrics of a run, as the connector's Prometheus exporter would show them
/// over the measured window: an edge per call target and per source, the callee's requests
/// and latency histogram split over its callers by their share of its requests.
fn synthesize(design: &Design, stats: &[ComponentStats]) -> String {
    let ids: Vec<&str> = design.components.iter().map(|c| c.id.as_str()).collect();
    // (client, server) → requests, in design order.
    let mut edges: BTreeMap<(usize, usize), f64> = BTreeMap::new();
    for (c, comp) in design.components.iter().enumerate() {
        if let Kind::Station(s) = &comp.kind {
            for (k, call) in s.calls.iter().enumerate() {
                let sent = stats[c].calls_sent().get(k).copied().unwrap_or(0);
                *edges.entry((c, call.to)).or_default() += sent as f64;
            }
        }
    }
    for (c, comp) in design.components.iter().enumerate() {
        if let Kind::Source(src) = &comp.kind {
            let called: f64 = edges
                .iter()
                .filter(|((_, to), _)| *to == src.to)
                .map(|(_, n)| n)
                .sum();
            let served = stats[src.to].completed as f64;
            edges.insert((c, src.to), (served - called).max(0.0));
        }
    }
    let mut out = String::new();
    out.push_str("# HELP traces_service_graph_request_total Total count of requests between two nodes\n# TYPE traces_service_graph_request_total counter\n");
    for ((client, server), n) in &edges {
        let _ = writeln!(
            out,
            "traces_service_graph_request_total{{client=\"{}\",connection_type=\"\",server=\"{}\"}} {n}",
            ids[*client], ids[*server]
        );
    }
    out.push_str("# TYPE traces_service_graph_request_server_seconds histogram\n");
    for ((client, server), n) in &edges {
        let s = &stats[*server];
        let share = n / s.completed as f64;
        let labels = format!(
            "client=\"{}\",connection_type=\"\",server=\"{}\"",
            ids[*client], ids[*server]
        );
        let h = s.response_histogram();
        for bound in BOUNDS {
            let below = h.count_between(0, (bound * 1e6) as u64) as f64;
            let _ = writeln!(
                out,
                "traces_service_graph_request_server_seconds_bucket{{{labels},le=\"{bound}\"}} {}",
                (below * share).round()
            );
        }
        let count = (s.completed as f64 * share).round();
        let _ = writeln!(
            out,
            "traces_service_graph_request_server_seconds_bucket{{{labels},le=\"+Inf\"}} {count}\n\
             traces_service_graph_request_server_seconds_sum{{{labels}}} {}\n\
             traces_service_graph_request_server_seconds_count{{{labels}}} {count}",
            s.response_sum_s() * share
        );
    }
    out
}

fn within(actual: f64, expected: f64, share: f64) -> bool {
    (actual - expected).abs() <= share * expected
}

#[test]
fn a_known_design_comes_back_from_its_servicegraph_metrics() {
    let known = parse(KNOWN).unwrap_or_else(|p| panic!("{p:?}"));
    let (before, stats) = run(known.clone());
    let metrics = synthesize(&known, &stats);
    // The README's example scrape is this one (the run is deterministic for its seed).
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/examples/servicegraph.prom"
    );
    if std::env::var_os("SDSIM_WRITE_EXAMPLE").is_some() {
        std::fs::write(example, &metrics).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(example).unwrap_or_default(),
        metrics,
        "{example} is not the scrape of the known design: SDSIM_WRITE_EXAMPLE=1 rewrites it"
    );
    let imported = otel_servicegraph(&metrics, &ImportOptions::new(before.measured_s))
        .unwrap_or_else(|e| panic!("{e}\n{metrics}"));
    // The same graph: the sources, one service per server, the API's 1.5 database calls as
    // a certain call and one with the remainder.
    let ids: Vec<&str> = imported
        .design
        .components
        .iter()
        .map(|c| c.id.as_str())
        .collect();
    assert_eq!(ids, ["batch", "users", "api", "auth", "db", "frontend"]);
    let api = imported.design.components.iter().find(|c| c.id == "api");
    let Some(Kind::Station(api)) = api.map(|c| &c.kind) else {
        panic!("api is a service");
    };
    assert_eq!(api.calls.len(), 2, "{}", imported.document);
    assert_eq!(api.calls[0].p, 1.0);
    assert!((api.calls[1].p - 0.5).abs() < 0.03, "{}", api.calls[1].p);
    // The front end calls auth once per request: one certain call, however the counters of
    // the warm-up's end fell.
    let frontend = imported
        .design
        .components
        .iter()
        .find(|c| c.id == "frontend");
    let Some(Kind::Station(frontend)) = frontend.map(|c| &c.kind) else {
        panic!("frontend is a service");
    };
    assert_eq!(frontend.calls.len(), 2, "{}", imported.document);
    assert!(
        imported
            .notes
            .iter()
            .any(|n| n.starts_with("api calls db 1.")),
        "{:?}",
        imported.notes
    );
    // Re-simulated: every service's rate and mean latency within 5 %.
    let (after, _) = run(imported.design.clone());
    for id in ["frontend", "auth", "api", "db"] {
        let (b, a) = (&before.components[id], &after.components[id]);
        assert!(
            within(a.throughput_per_s, b.throughput_per_s, 0.05),
            "{id}: {} req/s after import, {} before\n{}",
            a.throughput_per_s,
            b.throughput_per_s,
            imported.document
        );
        assert!(
            within(a.mean_response_ms, b.mean_response_ms, 0.05),
            "{id}: {} ms after import, {} before\n{}",
            a.mean_response_ms,
            b.mean_response_ms,
            imported.document
        );
    }
    for id in ["users", "batch"] {
        let (b, a) = (&before.clients[id], &after.clients[id]);
        assert!(
            within(a.goodput_per_s, b.goodput_per_s, 0.05),
            "{id}: {} / {}",
            a.goodput_per_s,
            b.goodput_per_s
        );
    }
    assert!(within(
        after.end_to_end.mean_ms,
        before.end_to_end.mean_ms,
        0.05
    ));
}

/// A one-edge scrape with `extra` lines appended (or replacing nothing): user → api.
fn scrape(lines: &[&str]) -> String {
    let mut text = String::from("# TYPE traces_service_graph_request_total counter\n");
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    text
}

const COUNT: &str =
    "traces_service_graph_request_total{client=\"user\",server=\"api\",connection_type=\"\"} 100";
const BUCKETS: [&str; 4] = [
    "traces_service_graph_request_server_seconds_bucket{client=\"user\",server=\"api\",le=\"0.01\"} 40",
    "traces_service_graph_request_server_seconds_bucket{client=\"user\",server=\"api\",le=\"0.05\"} 90",
    "traces_service_graph_request_server_seconds_bucket{client=\"user\",server=\"api\",le=\"+Inf\"} 100",
    "traces_service_graph_request_server_seconds_sum{client=\"user\",server=\"api\"} 2.5",
];
const COUNT_LINE: &str =
    "traces_service_graph_request_server_seconds_count{client=\"user\",server=\"api\"} 100";

#[test]
fn a_one_edge_scrape_is_a_source_and_a_service() {
    let mut lines = vec![COUNT];
    lines.extend(BUCKETS);
    lines.push(COUNT_LINE);
    let imported = otel_servicegraph(&scrape(&lines), &ImportOptions::new(50.0)).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&imported.document).unwrap();
    assert_eq!(doc["version"], 2);
    assert_eq!(doc["components"][0]["id"], "user");
    assert_eq!(doc["components"][0]["rate_per_s"], 2.0);
    assert_eq!(doc["components"][0]["to"], "api");
    assert_eq!(doc["components"][1]["service_time"]["mean_ms"], 25.0);
}

#[test]
fn errors_name_the_line_and_the_field() {
    let full = |replace: usize, with: &'static str| {
        let mut lines = vec![COUNT];
        lines.extend(BUCKETS);
        lines.push(COUNT_LINE);
        if with.is_empty() {
            lines.remove(replace);
        } else {
            lines[replace] = with;
        }
        scrape(&lines)
    };
    let cases: Vec<(String, &str)> = vec![
        (
            scrape(&[]),
            "no `traces_service_graph_request_total` samples",
        ),
        (
            scrape(&[COUNT]),
            "no `traces_service_graph_request_server_seconds` samples",
        ),
        (
            full(0, "traces_service_graph_request_total{client=\"user\",server=\"api\"} -3"),
            "line 2: `traces_service_graph_request_total` is -3",
        ),
        (
            full(0, "traces_service_graph_request_total{server=\"api\"} 3"),
            "line 2: `traces_service_graph_request_total` needs the label `client`",
        ),
        (
            full(2, "traces_service_graph_request_server_seconds_bucket{client=\"user\",server=\"api\",le=\"fast\"} 90"),
            "line 4: `traces_service_graph_request_server_seconds_bucket` field `le`: `fast` is not a bucket bound",
        ),
        (
            full(2, "traces_service_graph_request_server_seconds_bucket{client=\"user\",server=\"api\"} 90"),
            "line 4: `traces_service_graph_request_server_seconds_bucket` needs the label `le`",
        ),
        (
            full(2, "traces_service_graph_request_server_seconds_bucket{client=\"user\",server=\"api\",le=\"0.05\"} 30"),
            "line 4: `traces_service_graph_request_server_seconds` field `le`: count falls from 40",
        ),
        (
            full(3, ""),
            "field `le`: no `+Inf` bucket",
        ),
        (
            full(5, "traces_service_graph_request_server_seconds_count{client=\"user\",server=\"api\"} 99"),
            "line 7: `traces_service_graph_request_server_seconds` field `_count`: 99 differs",
        ),
        (
            full(4, ""),
            "field `_sum`: the histogram has no `_sum`",
        ),
        (
            full(4, "traces_service_graph_request_server_seconds_sum{client=\"user\",server=\"api\"} NaN"),
            "line 6: `traces_service_graph_request_server_seconds_sum` is NaN",
        ),
        (
            full(0, "traces_service_graph_request_total{client=\"user\",server=\"api\"} 1 2 3"),
            "line 2: unexpected `3` after the sample",
        ),
    ];
    for (text, message) in cases {
        let err: ImportError =
            otel_servicegraph(&text, &ImportOptions::new(60.0)).expect_err(&text);
        assert!(
            err.to_string().contains(message),
            "{err}\nexpected: {message}\n{text}"
        );
    }
    let bad_window = otel_servicegraph(&full(0, COUNT), &ImportOptions::new(0.0));
    assert_eq!(bad_window.unwrap_err(), ImportError::BadWindow(0.0));
}

/// The lines of one edge: `n` requests, `failed` of them failed, server-side durations adding
/// up to `sum_s` (all under 10 ms when `fast`), and its connection type.
fn edge(client: &str, server: &str, n: u32, failed: u32, sum_s: f64, kind: &str) -> String {
    let labels = format!("client=\"{client}\",server=\"{server}\",connection_type=\"{kind}\"");
    let mut text = format!("traces_service_graph_request_total{{{labels}}} {n}\n");
    if failed > 0 {
        text += &format!("traces_service_graph_request_failed_total{{{labels}}} {failed}\n");
    }
    text += &format!(
        "traces_service_graph_request_server_seconds_bucket{{{labels},le=\"0.1\"}} {n}\n\
         traces_service_graph_request_server_seconds_bucket{{{labels},le=\"+Inf\"}} {n}\n\
         traces_service_graph_request_server_seconds_sum{{{labels}}} {sum_s}\n\
         traces_service_graph_request_server_seconds_count{{{labels}}} {n}\n"
    );
    text
}

fn component<'a>(doc: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    doc["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {doc}"))
}

#[test]
fn failures_the_calls_do_not_explain_are_the_services_own() {
    // 20 % of the API's requests fail; each calls the database once, which fails 10 %: the
    // API's own share is 1 − 0.8 / 0.9.
    let text = edge("user", "api", 100, 20, 5.0, "") + &edge("api", "db", 100, 10, 1.0, "database");
    let imported = otel_servicegraph(&text, &ImportOptions::new(100.0)).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&imported.document).unwrap();
    let api = component(&doc, "api");
    let own = api["error_rate"].as_f64().unwrap();
    assert!((own - (1.0 - 0.8 / 0.9)).abs() < 1e-5, "{own}");
    assert_eq!(component(&doc, "db")["error_rate"], 0.1);
    // 50 ms per API request, 10 of them waiting for the database.
    assert_eq!(api["service_time"]["mean_ms"], 40.0);
    assert_eq!(api["calls"][0]["to"], "db");
}

#[test]
fn a_messaging_edge_is_a_hand_off_and_its_time_stays_with_the_producer() {
    let text = edge("user", "api", 100, 0, 3.0, "")
        + &edge("api", "worker", 50, 0, 10.0, "messaging_system");
    let imported = otel_servicegraph(&text, &ImportOptions::new(100.0)).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&imported.document).unwrap();
    let api = component(&doc, "api");
    assert_eq!(api["routes"][0]["to"], "worker");
    assert_eq!(api["routes"][0]["p"], 0.5);
    assert!(api.get("calls").is_none(), "{api}");
    assert_eq!(api["service_time"]["mean_ms"], 30.0);
    // Two messages per request cannot be handed off.
    let text = edge("user", "api", 100, 0, 3.0, "")
        + &edge("api", "worker", 200, 0, 10.0, "messaging_system");
    let err = otel_servicegraph(&text, &ImportOptions::new(100.0)).unwrap_err();
    assert!(matches!(err, ImportError::TooManyMessages { .. }), "{err}");
}

#[test]
fn more_than_a_hundred_calls_per_request_are_refused_with_the_edge() {
    let text = edge("user", "api", 1, 0, 1.0, "") + &edge("api", "db", 101, 0, 0.1, "");
    let err = otel_servicegraph(&text, &ImportOptions::new(100.0)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("`api` calls `db` 101.000 times per request"),
        "{err}"
    );
}

#[test]
fn two_scrapes_give_what_happened_between_them() {
    let before = edge("user", "api", 100, 0, 5.0, "");
    // 200 more requests taking 8 s in all; the database edge is new in the later scrape.
    let after = edge("user", "api", 300, 0, 13.0, "") + &edge("api", "db", 100, 0, 1.0, "");
    let imported = otel_servicegraph_between(&before, &after, &ImportOptions::new(100.0)).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&imported.document).unwrap();
    assert_eq!(component(&doc, "user")["rate_per_s"], 2.0);
    let api = component(&doc, "api");
    // 40 ms per request, half of them calling the database for 10 ms.
    assert_eq!(api["calls"][0]["p"], 0.5);
    assert_eq!(api["service_time"]["mean_ms"], 35.0);
    // A counter that fell: the collector restarted between the scrapes.
    let restarted = edge("user", "api", 50, 0, 2.0, "");
    let err =
        otel_servicegraph_between(&before, &restarted, &ImportOptions::new(100.0)).unwrap_err();
    assert!(
        err.to_string().starts_with(
            "line 1: `traces_service_graph_request_total{client=\"user\",connection_type=\"\",server=\"api\"}` fell from 100 to 50"
        ),
        "{err}"
    );
    let err = otel_servicegraph_between("a{", &after, &ImportOptions::new(100.0)).unwrap_err();
    assert!(
        err.to_string().starts_with("the earlier scrape: line 1:"),
        "{err}"
    );
}
