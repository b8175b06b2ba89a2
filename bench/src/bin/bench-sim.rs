//! Simulation engine benchmark: simulated events per second on one pinned core for the
//! five-component design `config/designs/bench-five.json`, and the wall time of the same model
//! over the same simulated duration in Ciw (`bench/peers/ciw_bench.py`), as a ratio.
//!
//! `cargo build --release -p sdsim-bench && target/release/bench-sim --runs 3`

use anyhow::{bail, Context};
use clap::Parser;
use mimalloc::MiMalloc;
use sdsim_bench::{machine_line, median, pin_current};
use sdsim_engine::design::parse;
use sdsim_engine::engine::Simulation;
use std::time::Instant;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

#[derive(Parser)]
struct Args {
    /// Runs (medians are reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// CPU to pin both simulators to (one at a time).
    #[arg(long, default_value_t = 1)]
    cpu: usize,
    /// Simulated seconds of the comparison with Ciw.
    #[arg(long, default_value_t = 300.0)]
    duration: f64,
    /// Simulated seconds of the long events/s run.
    #[arg(long, default_value_t = 20000.0)]
    long_duration: f64,
}

fn run_ours(text: &str, duration: f64) -> anyhow::Result<(f64, u64)> {
    let mut design = parse(text).map_err(|p| anyhow::anyhow!("{p:?}"))?;
    design.duration = duration;
    let mut sim = Simulation::new(design);
    let start = Instant::now();
    sim.run();
    Ok((start.elapsed().as_secs_f64(), sim.events_processed()))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string("config/designs/bench-five.json")
        .context("run from the repository root")?;
    pin_current(args.cpu);
    let mut events_per_s = Vec::new();
    let mut ours_wall = Vec::new();
    let mut ciw_wall = Vec::new();
    let mut events_short = 0;
    for run in 1..=args.runs {
        let (wall, events) = run_ours(&text, args.long_duration)?;
        events_per_s.push(events as f64 / wall);
        let (wall, events) = run_ours(&text, args.duration)?;
        ours_wall.push(wall);
        events_short = events;
        let out = std::process::Command::new("taskset")
            .args([
                "-c",
                &args.cpu.to_string(),
                "python3",
                "bench/peers/ciw_bench.py",
            ])
            .arg(args.duration.to_string())
            .arg(run.to_string())
            .output()
            .context("running python3 with Ciw")?;
        if !out.status.success() {
            bail!(
                "Ciw run failed (python3 -m pip install ciw): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        ciw_wall.push(v["wall_s"].as_f64().context("wall_s")?);
        eprintln!(
            "run {run}: sdsim {:.1} M events/s; {} s simulated: sdsim {:.4} s, Ciw {:.2} s",
            events_per_s.last().unwrap() / 1e6,
            args.duration,
            ours_wall.last().unwrap(),
            ciw_wall.last().unwrap()
        );
    }
    let (ours, ciw) = (median(ours_wall), median(ciw_wall));
    println!("# simulation benchmark: {}", machine_line());
    println!("# config/designs/bench-five.json (5 components, 300 req/s), pinned to CPU {}; medians of {} runs", args.cpu, args.runs);
    println!("| | simulated | wall time | events/s (sdsim's event count of the model) |");
    println!("|---|---|---|---|");
    println!(
        "| sdsim engine, long run | {} s | | {:.2} M |",
        args.long_duration,
        median(events_per_s) / 1e6
    );
    println!(
        "| sdsim engine | {} s ({} events) | {:.4} s | {:.2} M |",
        args.duration,
        events_short,
        ours,
        events_short as f64 / ours / 1e6
    );
    println!(
        "| Ciw 3 (Python) | {} s | {:.2} s | {:.3} M |",
        args.duration,
        ciw,
        events_short as f64 / ciw / 1e6
    );
    println!("| **Ciw / sdsim wall time** | | **{:.0}×** | |", ciw / ours);
    Ok(())
}
