//! A stored report reads back as the report it was: the reports queue hands a run's report to
//! another instance as JSON, and the analysis it computes there must be the one the running
//! instance would have computed.

use sdsim_engine::engine::stats::Report;
use sdsim_engine::engine::Simulation;

#[test]
fn every_templates_report_round_trips_through_json() {
    let dir = format!("{}/../config/designs", env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("the templates directory") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == "bench-five.json" {
            continue; // The engine benchmark: minutes of simulated load, nothing new here.
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let design = sdsim_engine::design::parse(&text).unwrap_or_else(|p| panic!("{name}: {p:?}"));
        let mut sim = Simulation::new(design);
        sim.run();
        let report = sim.report();
        let json = sonic_rs::to_string(&report).unwrap();
        let back: Report = sonic_rs::from_str(&json).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(back, report, "{name}");
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} templates");
}
