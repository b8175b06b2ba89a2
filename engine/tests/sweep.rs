//! Sweeps: parameters, the grid and its cap, a row per point equal to a run of that point's
//! design, and the knee.

use sdsim_engine::design::parse;
use sdsim_engine::engine::Simulation;
use sdsim_engine::sweep::{self, Parameter, SweepError, SweepRow, MAX_POINTS};

const DESIGN: &str = r#"{"version": 2, "duration_s": 2000, "warmup_s": 100, "seed": 23,
    "components": [
    {"id": "users", "kind": "source", "rate_per_s": 25, "to": "api"},
    {"id": "api", "kind": "service", "instances": 1, "cost_per_instance_hour": 0.2,
     "service_time": {"dist": "exponential", "mean_ms": 100}, "queue_capacity": 200}]}"#;

#[test]
fn parameters_read_ranges_and_lists_and_name_what_is_wrong() {
    let p = Parameter::parse("components[api].instances=1..4").unwrap();
    assert_eq!(p.path, "components[api].instances");
    assert_eq!(p.values, ["1", "2", "3", "4"]);
    let p = Parameter::parse("components[api].discipline=\"fifo\", \"lifo\"").unwrap();
    assert_eq!(p.values, ["\"fifo\"", "\"lifo\""]);
    for (spec, want) in [
        ("components[api].instances", "expected PATH=VALUES"),
        ("components[api].instances=4..1", "a range goes up"),
        (
            "components[api].instances=1..x",
            "a range is two whole numbers",
        ),
        (
            "components[api].discipline=lifo",
            "`lifo` is not a JSON value",
        ),
        (
            "components[api.instances=1",
            "`components[api`: a selector is [index] or [id]",
        ),
        ("=1", "the path is empty"),
    ] {
        let err = Parameter::parse(spec).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("sweep parameter `{spec}`: {want}")),
            "{spec}: {err}"
        );
    }
}

#[test]
fn the_grid_is_every_combination_up_to_the_cap() {
    let a = Parameter::parse("x=1,2").unwrap();
    let b = Parameter::parse("y=1..3").unwrap();
    let points = sweep::grid(&[a.clone(), b.clone()], MAX_POINTS).unwrap();
    assert_eq!(
        points,
        [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]].map(Vec::from)
    );
    let big = Parameter::parse("z=1..50").unwrap();
    match sweep::grid(&[a, b, big], MAX_POINTS) {
        Err(SweepError::TooManyPoints { points, max }) => assert_eq!((points, max), (300, 256)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn each_row_is_the_run_of_its_point_and_the_knee_is_the_fewest_instances_within_the_slo() {
    let parameters = [Parameter::parse("components[api].instances=1..5").unwrap()];
    let rows = sweep::run(DESIGN, &parameters, MAX_POINTS).unwrap();
    assert_eq!(rows.len(), 5);
    for (k, row) in rows.iter().enumerate() {
        let instances = k + 1;
        let text = DESIGN.replace(
            r#""instances": 1,"#,
            &format!(r#""instances": {instances},"#),
        );
        let mut sim = Simulation::new(parse(&text).unwrap());
        sim.run();
        let direct = SweepRow::from_report(vec![instances.to_string()], &sim.report());
        assert_eq!(row, &direct, "{instances} instances");
        // A fixed-size design: the cost is exactly the instances at their price.
        assert_eq!(row.cost_per_hour, Some(instances as f64 * 0.2));
        // And a million successful requests cost the measured time's cost over their number.
        let cost = sim.report().cost.unwrap();
        let per_million = cost.measured / cost.successful_requests as f64 * 1e6;
        let got = row.cost_per_million_requests.unwrap();
        assert!(
            (got - per_million).abs() <= 1e-9 * per_million,
            "{got} vs {per_million}"
        );
        assert_eq!(row.busiest.as_ref().unwrap().component, "api");
    }
    // 25 req/s of 100 ms on one instance is 2.5 times its capacity: it drops, and is full.
    assert!(rows[0].drop_rate > 0.5, "{:?}", rows[0]);
    assert!(rows[0].busiest.as_ref().unwrap().utilization > 0.99);
    // From three instances on (83 % busy) nothing is dropped and p99 falls with each instance.
    assert!(rows[2..].iter().all(|r| r.drop_rate == 0.0), "{rows:?}");
    assert!(rows[2].p99_ms > rows[3].p99_ms && rows[3].p99_ms > rows[4].p99_ms);
    // The knee for an SLO between the p99 of four and three instances: four.
    let slo = (rows[2].p99_ms + rows[3].p99_ms) / 2.0;
    assert_eq!(sweep::knee(&rows, slo), Some(3));
    assert_eq!(sweep::knee(&rows, rows[4].p99_ms / 2.0), None);
    let table = sweep::table(&parameters, &rows, Some(3));
    assert_eq!(table.lines().count(), 6, "{table}");
    assert!(
        table.lines().nth(4).unwrap().ends_with("<- knee"),
        "{table}"
    );
    assert!(table.lines().next().unwrap().contains("api.instances"));
}

#[test]
fn the_knee_is_the_largest_load_within_the_slo() {
    let parameters = [Parameter::parse("components[users].rate_per_s=2..9").unwrap()];
    let rows = sweep::run(DESIGN, &parameters, MAX_POINTS).unwrap();
    // M/M/1 at 100 ms: p99 = 0.1 s · ln 100 / (1 − ρ), 1 s near ρ = 0.54 (5.4 req/s).
    let slo = 1000.0;
    let within: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].p99_ms <= slo).collect();
    // Some loads hold it, the heaviest do not.
    assert!(!within.is_empty() && within.len() < rows.len(), "{rows:?}");
    let knee = sweep::knee(&rows, slo).unwrap();
    assert!(rows[knee].p99_ms <= slo);
    assert!(within
        .iter()
        .all(|&i| rows[i].offered_per_s <= rows[knee].offered_per_s * 1.005));
    assert!(rows[knee + 1..].iter().all(|r| r.p99_ms > slo), "{rows:?}");
}

#[test]
fn a_point_that_is_not_a_valid_design_is_named_with_its_problems() {
    let parameters = [Parameter::parse("components[api].instances=1,0").unwrap()];
    let err = sweep::run(DESIGN, &parameters, MAX_POINTS).unwrap_err();
    assert_eq!(
        err.to_string(),
        "at components[api].instances=0: not a valid design: \
         $.components[1].instances: must be a whole number ≥ 1"
    );
    let nowhere = [Parameter::parse("components[db].instances=1").unwrap()];
    let err = sweep::run(DESIGN, &nowhere, MAX_POINTS).unwrap_err();
    assert_eq!(
        err.to_string(),
        "components[db].instances: `components` has no `db`"
    );
}
