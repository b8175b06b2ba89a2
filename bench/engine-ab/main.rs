//! The engine alone, for `bench/engine-ab.sh`: runs a design file flat out on the CPU it is
//! pinned to and prints `events wall_s` for each run. Built twice by the script, against the
//! engine of two commits, so their speeds compare in the same session.

use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: engine-ab DESIGN.json [DURATION_S]");
    let text = std::fs::read_to_string(&path).expect("the design file");
    let mut design = sdsim_engine::design::parse(&text).expect("a valid design");
    if let Some(duration) = args.next() {
        design.duration = duration.parse().expect("a duration in simulated seconds");
    }
    let mut sim = sdsim_engine::engine::Simulation::new(design);
    let start = Instant::now();
    sim.run();
    println!("{} {:.6}", sim.events_processed(), start.elapsed().as_secs_f64());
}
