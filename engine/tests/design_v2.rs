//! Schema version 2 documents: every malformed new field is reported by its JSON path, and
//! version-2 fields in a version-1 document are refused (such a document keeps its meaning).

use sdsim_engine::design::parse;

fn problems(json: &str) -> Vec<String> {
    parse(json)
        .expect_err("invalid")
        .into_iter()
        .map(|p| p.to_string())
        .collect()
}

fn assert_listed(got: &[String], expected: &[&str]) {
    for want in expected {
        assert!(
            got.iter().any(|g| g.starts_with(want)),
            "missing {want:?} in {got:#?}"
        );
    }
}

#[test]
fn malformed_version_2_fields_are_listed_by_path() {
    let got = problems(
        r#"{"version": 2, "duration_s": 100, "goodput": {"window_s": 0, "threshold": 1.5, "x": 1},
          "components": [
            {"id": "u", "kind": "source", "users": 0, "rate_per_s": 5, "to": "api",
             "timeout_ms": -1, "retries": 101,
             "backoff": {"kind": "linear", "base_ms": 200, "max_ms": 100, "factor": 2},
             "retry_budget": {"ratio": -0.5, "burst": 0.5, "size": 3}},
            {"id": "v", "kind": "source", "rate_per_s": 1, "to": "api",
             "think_time": {"dist": "constant", "ms": 1}, "retry_budget": {"ratio": 0.1}},
            {"id": "w", "kind": "source", "users": 3, "to": "api"},
            {"id": "api", "kind": "service", "service_time": {"dist": "constant", "ms": 1},
             "contention": {"model": "quadratic"}, "discipline": "random",
             "codel": {"target_ms": 5}},
            {"id": "db", "kind": "database", "read_time": {"dist": "constant", "ms": 1},
             "write_time": {"dist": "constant", "ms": 1},
             "contention": {"model": "usl", "kappa": -1}, "discipline": "codel",
             "codel": {"target_ms": 500, "interval_ms": 100, "limit": 1}},
            {"id": "c", "kind": "cache", "hit_time": {"dist": "constant", "ms": 1},
             "capacity": 0, "hit_ratio": 0.5, "ttl_s": 0, "eviction": "lfu",
             "keys": {"count": 2000000, "popularity": "pareto"}},
            {"id": "c2", "kind": "cache", "hit_time": {"dist": "constant", "ms": 1},
             "hit_ratio": 0.5, "ttl_s": 5, "keys": {"count": 10, "popularity": "uniform", "exponent": 2}},
            {"id": "c3", "kind": "cache", "hit_time": {"dist": "constant", "ms": 1},
             "capacity": 10, "keys": {"popularity": "zipf", "exponent": 0}},
            {"id": "s", "kind": "service", "service_time": {"dist": "linear", "ms": 1},
             "contention": {"model": "linear"}}
          ],
          "faults": [{"at_s": 10, "action": "flush", "component": "c2"},
                     {"at_s": 10, "duration_s": 5, "action": "flush", "component": "c3"},
                     {"at_s": 10, "action": "flush", "component": "api"}]}"#,
    );
    assert_listed(
        &got,
        &[
            "$.goodput.x: unknown field",
            "$.goodput.window_s: 0 is not a positive number",
            "$.goodput.threshold: 1.5 is not in (0, 1]",
            "$.components[0].users: must be a whole number ≥ 1",
            "$.components[0].rate_per_s: a closed-loop source (`users`)",
            "$.components[0].think_time: missing (required with `users`)",
            "$.components[0].timeout_ms: -1 is not a positive number",
            "$.components[0].retries: at most 100 retries",
            "$.components[0].backoff.factor: unknown field",
            "$.components[0].backoff.kind: must be \"fixed\", \"exponential\" or \"jitter\"",
            "$.components[0].backoff.max_ms: must be at least base_ms",
            "$.components[0].retry_budget.size: unknown field",
            "$.components[0].retry_budget.ratio: -0.5 is not a number ≥ 0",
            "$.components[0].retry_budget.burst: 0.5 is not a number ≥ 1",
            "$.components[1].think_time: applies to closed-loop sources only",
            "$.components[1].retry_budget: limits retries: set `retries` too",
            "$.components[2].think_time: missing (required with `users`)",
            "$.components[3].contention.model: must be \"linear\" (with per_request) or \"usl\"",
            "$.components[3].discipline: must be \"fifo\", \"lifo\" or \"codel\"",
            "$.components[3].codel: applies to \"discipline\": \"codel\" only",
            "$.components[4].contention.sigma: missing (required)",
            "$.components[4].contention.kappa: -1 is not a number ≥ 0",
            "$.components[4].codel.limit: unknown field",
            "$.components[4].codel.target_ms: must not exceed interval_ms",
            "$.components[5].hit_ratio: a cache with `capacity` measures its hit ratio",
            "$.components[5].capacity: must be a whole number ≥ 1",
            "$.components[5].ttl_s: 0 is not a positive number",
            "$.components[5].eviction: must be \"lru\" or \"fifo\"",
            "$.components[5].keys.count: 2000000 is more than 1000000 keys",
            "$.components[5].keys.popularity: must be \"uniform\" or \"zipf\"",
            "$.components[6].ttl_s: belongs to the capacity form: give `capacity` too",
            "$.components[6].keys: belongs to the capacity form",
            "$.components[7].keys.count: missing (required)",
            "$.components[7].keys.exponent: 0 is not a number in (0, 10]",
            "$.components[8].service_time.dist: unknown distribution `linear`",
            "$.components[8].contention.per_request: missing (required)",
            "$.faults[0].component: a flush empties a cache with a `capacity`",
            "$.faults[1].duration_s: a flush is instantaneous",
            "$.faults[2].component: a flush empties a cache with a `capacity`",
        ],
    );
}

#[test]
fn version_2_fields_in_a_version_1_document_are_refused() {
    let got = problems(
        r#"{"duration_s": 100, "goodput": {"window_s": 5}, "components": [
            {"id": "u", "kind": "source", "users": 3, "think_time": {"dist": "constant", "ms": 1},
             "timeout_ms": 100, "retries": 1, "to": "api"},
            {"id": "api", "kind": "service", "service_time": {"dist": "constant", "ms": 1},
             "discipline": "lifo", "contention": {"model": "linear", "per_request": 0.1}},
            {"id": "c", "kind": "cache", "hit_time": {"dist": "constant", "ms": 1},
             "capacity": 10, "keys": {"count": 100}}
          ],
          "faults": [{"at_s": 1, "action": "flush", "component": "c"}]}"#,
    );
    let v2 = "a schema version 2 field: set \"version\": 2";
    for path in [
        "$.goodput",
        "$.components[0].users",
        "$.components[0].think_time",
        "$.components[0].timeout_ms",
        "$.components[0].retries",
        "$.components[1].discipline",
        "$.components[1].contention",
        "$.components[2].capacity",
        "$.components[2].keys",
        "$.faults[0].action",
    ] {
        assert!(
            got.contains(&format!("{path}: {v2}")),
            "{path} not refused: {got:#?}"
        );
    }
    assert_listed(
        &problems(r#"{"version": 3, "duration_s": 1, "components": []}"#),
        &["$.version: schema version 3 is not supported (this engine reads 1 to 2)"],
    );
}

#[test]
fn a_version_2_document_reads_back_its_settings() {
    let d = parse(
        r#"{"version": 2, "duration_s": 100, "goodput": {"window_s": 5, "threshold": 0.8},
          "components": [
            {"id": "u", "kind": "source", "users": 7, "think_time": {"dist": "constant", "ms": 250},
             "timeout_ms": 300, "retries": 2, "backoff": {"kind": "jitter", "base_ms": 20, "max_ms": 500},
             "retry_budget": {"ratio": 0.2}, "to": "api"},
            {"id": "api", "kind": "service", "service_time": {"dist": "constant", "ms": 1},
             "discipline": "codel", "contention": {"model": "usl", "sigma": 0.1}}
          ]}"#,
    )
    .expect("valid");
    use sdsim_engine::design::{BackoffKind, Contention, Discipline, Kind};
    assert_eq!(
        (d.version, d.goodput.window, d.goodput.threshold),
        (2, 5.0, 0.8)
    );
    let Kind::Source(s) = &d.components[0].kind else {
        panic!()
    };
    assert_eq!(s.closed.as_ref().map(|c| c.users), Some(7));
    let client = s.client.as_ref().expect("a v2 source has a client");
    assert_eq!((client.timeout, client.retries), (Some(0.3), 2));
    assert_eq!(client.backoff.kind, BackoffKind::Jitter);
    assert_eq!((client.backoff.base, client.backoff.max), (0.02, 0.5));
    let budget = client.budget.as_ref().expect("a retry budget");
    assert_eq!((budget.ratio, budget.burst), (0.2, 10.0));
    let Kind::Station(st) = &d.components[1].kind else {
        panic!()
    };
    assert_eq!(
        st.discipline,
        Discipline::Codel {
            target: 0.005,
            interval: 0.1
        }
    );
    assert_eq!(
        st.contention,
        Some(Contention::Usl {
            sigma: 0.1,
            kappa: 0.0
        })
    );
}
