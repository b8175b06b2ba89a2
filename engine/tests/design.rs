//! Design documents: every problem listed with its JSON path; determinism; slices.

use sdsim_engine::design::parse;
use sdsim_engine::engine::Simulation;

fn problems(json: &str) -> Vec<String> {
    parse(json)
        .expect_err("invalid")
        .into_iter()
        .map(|p| p.to_string())
        .collect()
}

#[test]
fn the_minimal_form_is_accepted() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/designs/minimal.json"
    ))
    .unwrap();
    let d = parse(&text).unwrap();
    assert_eq!(d.components.len(), 3);
    assert_eq!((d.duration, d.warmup, d.seed), (600.0, 60.0, 7));
}

#[test]
fn every_problem_is_listed_by_path() {
    let got = problems(
        r#"{"duration_s": -5, "seed": 1, "colour": "red", "components": [
            {"id": "u", "kind": "source", "rate_per_s": 0, "arrival": "bursty-ish", "to": "nowhere"},
            {"id": "a", "kind": "service", "concurrency": 0, "service_time": {"dist": "exponential"},
             "routes": [{"to": "u", "p": 0.5}, {"to": "a", "p": 1.5}]},
            {"id": "a", "kind": "service", "service_time": {"dist": "uniform", "min_ms": 9, "max_ms": 3, "extra": 1}},
            {"id": "c", "kind": "cache"},
            {"id": "w", "kind": "wormhole"},
            {"kind": "service", "service_time": {"dist": "gamma"}}
        ]}"#,
    );
    let expected = [
        "$.colour: unknown field",
        "$.duration_s: -5 is not a positive number",
        "$.components[2].id: duplicate id `a`",
        "$.components[5].id: missing (required)",
        "$.components[0].rate_per_s: 0 is not a positive number",
        "$.components[0].arrival: must be \"poisson\", \"constant\"",
        "$.components[0].to: unknown component id `nowhere`",
        "$.components[1].concurrency: must be a whole number ≥ 1",
        "$.components[1].service_time.mean_ms: missing (required)",
        "$.components[1].routes[0].to: `u` is a source",
        "$.components[1].routes[1].p: 1.5 is not a probability in (0, 1]",
        "$.components[2].service_time.extra: unknown field",
        "$.components[2].service_time.max_ms: must be at least min_ms",
        "$.components[3].hit_ratio: missing (required)",
        "$.components[3].hit_time: missing (required)",
        "$.components[4].kind: unknown kind `wormhole`",
        "$.components[5].service_time.dist: unknown distribution `gamma`",
    ];
    for want in expected {
        assert!(
            got.iter().any(|g| g.starts_with(want)),
            "missing {want:?} in:\n{}",
            got.join("\n")
        );
    }
}

#[test]
fn a_cycle_with_probability_one_is_rejected() {
    let got = problems(
        r#"{"duration_s": 10, "components": [
            {"id": "u", "kind": "source", "rate_per_s": 1, "to": "a"},
            {"id": "a", "kind": "service", "service_time": {"dist": "constant", "ms": 1}, "routes": [{"to": "b", "p": 1}]},
            {"id": "b", "kind": "service", "service_time": {"dist": "constant", "ms": 1}, "routes": [{"to": "a", "p": 1}]}]}"#,
    );
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].contains("a, b can never complete"), "{got:?}");
}

#[test]
fn malformed_json_and_shapes_are_clear() {
    assert!(problems("{\"duration_s\": ")[0].starts_with("$: not valid JSON"));
    assert_eq!(problems("[1, 2]"), ["$: a design is a JSON object"]);
    assert!(problems(r#"{"duration_s": 1}"#)[0].starts_with("$.components: missing"));
    assert!(problems(
        r#"{"duration_s": 10, "warmup_s": 20, "components": [
        {"id": "u", "kind": "source", "rate_per_s": 1, "to": "a"},
        {"id": "a", "kind": "service", "service_time": {"dist": "constant", "ms": 1}}]}"#
    )[0]
    .starts_with("$.warmup_s: 20 must be shorter"));
}

const DESIGN: &str = r#"{"duration_s": 2000, "warmup_s": 100, "seed": 9, "components": [
    {"id": "u", "kind": "source", "rate_per_s": 50, "to": "a"},
    {"id": "a", "kind": "service", "instances": 2, "concurrency": 2, "queue_capacity": 5,
     "service_time": {"dist": "lognormal", "mean_ms": 60, "stddev_ms": 40}, "routes": [{"to": "b", "p": 0.4}]},
    {"id": "b", "kind": "service", "concurrency": 4, "service_time": {"dist": "exponential", "mean_ms": 50}}]}"#;

#[test]
fn same_seed_same_report_and_slices_change_nothing() {
    let run = |design: &str| {
        let mut sim = Simulation::new(parse(design).unwrap());
        sim.run();
        sim.report()
    };
    let whole = run(DESIGN);
    assert_eq!(whole, run(DESIGN), "deterministic for a seed");
    assert_ne!(whole, run(&DESIGN.replace("\"seed\": 9", "\"seed\": 10")));
    let mut sliced = Simulation::new(parse(DESIGN).unwrap());
    let mut t = 0.0;
    while !sliced.is_finished() {
        t += 0.37;
        sliced.advance_to(t);
        assert!(sliced.now() <= t + 1e-9);
    }
    assert_eq!(
        sliced.report(),
        whole,
        "running in slices gives the same result"
    );
    assert!(
        whole.components["a"].dropped > 0,
        "the bounded queue drops under bursts"
    );
}

#[test]
fn max_requests_stops_the_run() {
    let design = DESIGN.replace("\"seed\": 9,", "\"seed\": 9, \"max_requests\": 1000,");
    let mut sim = Simulation::new(parse(&design).unwrap());
    sim.run();
    assert!(sim.is_finished());
    assert_eq!(sim.report().end_to_end.completed, 1000);
    assert!(sim.now() < 2000.0);
}

#[test]
fn bottleneck_analysis_ranks_explains_and_confirms_a_resize() {
    use sdsim_engine::analysis::analyze;
    let text = r#"{"duration_s": 50000, "warmup_s": 500, "seed": 4, "components": [
        {"id": "u", "kind": "source", "rate_per_s": 9, "to": "api"},
        {"id": "api", "kind": "service", "service_time": {"dist": "exponential", "mean_ms": 100}, "routes": [{"to": "db", "p": 1}]},
        {"id": "db", "kind": "service", "concurrency": 4, "service_time": {"dist": "exponential", "mean_ms": 100}}]}"#;
    let design = parse(text).unwrap();
    let mut sim = Simulation::new(design.clone());
    sim.run();
    let findings = analyze(&design, &sim.report(), 0.7);
    assert_eq!(findings[0].component, "api", "the most saturated first");
    assert_eq!(findings[0].status, "saturated");
    assert!(
        findings[0].explanation.contains("90% busy"),
        "{}",
        findings[0].explanation
    );
    let r = findings[0].recommendation.as_ref().expect("more instances");
    assert_eq!((r.instances_now, r.instances), (1, 2));
    // Pooled M/M/2 at a = 0.9: Wq = C(2, 0.9)·S/(2 - 0.9).
    assert!(
        (r.predicted_wait_ms - 0.9 * 0.9 / (2.0 + 0.9) / 1.1 * 100.0).abs() < 1.0,
        "{r:?}"
    );
    let confirmed = r.confirmed_utilization.unwrap();
    assert!((confirmed - 0.45).abs() < 0.01, "{confirmed}");
    assert!(r.confirmed_wait_ms.unwrap() < 100.0);
    assert_eq!(findings[1].status, "ok");
    assert!(findings[1].recommendation.is_none());
}

#[test]
fn every_example_design_runs_and_meets_its_slos() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/designs");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let design = parse(&text).unwrap_or_else(|p| panic!("{}: {p:?}", path.display()));
        let mut sim = Simulation::new(design);
        sim.run();
        let report = sim.report();
        assert!(report.end_to_end.completed > 0, "{}", path.display());
        for slo in &report.slos {
            assert!(slo.met, "{}: {slo:?}", path.display());
        }
        seen += 1;
    }
    assert!(seen >= 4, "examples found: {seen}");
}

/// A document nested deeper than any stack allows is refused with one problem at `$`: the
/// JSON parser recursed once per level, and before the limit this test overflowed its
/// thread's stack (which aborts the process).
#[test]
fn deeply_nested_documents_are_refused_before_parsing() {
    let levels = 1_000_000;
    let deep = format!(
        r#"{{"components":{}{}}}"#,
        "[".repeat(levels),
        "]".repeat(levels)
    );
    let got = problems(&deep);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].contains("nested deeper than 32 levels"), "{got:?}");
    let within = format!(r#"{{"x":{}{}}}"#, "[".repeat(31), "]".repeat(31));
    assert!(!problems(&within)[0].contains("nested"));
}

/// A key given twice is a problem (found by the design_document fuzz target): the engine read
/// the first value, while most JSON readers (a browser's included) take the last, so the
/// design run was not the design shown.
#[test]
fn keys_given_twice_are_refused() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/designs/minimal.json"
    ))
    .unwrap();
    let twice = text.replacen('{', r#"{"seed": 99, "#, 1);
    assert_eq!(problems(&twice), ["$.seed: given more than once"]);
}
