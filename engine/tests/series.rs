//! The live point (`Simulation::series_point`, what a running run publishes every interval):
//! its end-to-end percentiles are the report's own at the same moment, and they follow the
//! run as it goes.

use sdsim_engine::design::parse;
use sdsim_engine::engine::Simulation;

#[test]
fn a_points_percentiles_are_the_reports_at_that_moment() {
    let text = include_str!("../../config/designs/three-tier.json");
    let mut design = parse(text).unwrap();
    design.duration = 240.0;
    let mut sim = Simulation::new(design);
    let mut seen = Vec::new();
    // After the warm-up, when requests have completed.
    for t in [90.0, 120.0, 180.0, 240.0] {
        sim.advance_to(t);
        let point = sim.series_point();
        let report = sim.report();
        assert_eq!(point.p50_ms, report.end_to_end.p50_ms, "t = {t}");
        assert_eq!(point.p99_ms, report.end_to_end.p99_ms, "t = {t}");
        assert!(
            point.p50_ms > 0.0 && point.p50_ms <= point.p99_ms,
            "{point:?}"
        );
        seen.push((point.p50_ms, point.p99_ms));
    }
    // Cumulative since the warm-up, so the figures move as requests complete.
    assert!(seen.windows(2).any(|w| w[0] != w[1]), "{seen:?}");
}
