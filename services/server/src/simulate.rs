//! `sdsim simulate DESIGN.json [--json] [--series FILE] [--interval SECONDS]`

use anyhow::{bail, Context};
use sdsim_engine::engine::Simulation;
use sdsim_engine::{analysis, design};
use std::io::Write;

/// Arguments of `sdsim simulate`.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// The design document (JSON).
    pub design: String,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write one NDJSON line per interval of simulated time to this file.
    #[arg(long, value_name = "FILE")]
    pub series: Option<String>,
    /// Interval of the series, in simulated seconds.
    #[arg(long, default_value_t = 10.0)]
    pub interval: f64,
    /// Utilisation the bottleneck analysis sizes components for.
    #[arg(long, default_value_t = 0.7)]
    pub target_utilization: f64,
}

#[derive(serde::Serialize)]
struct Output<'a> {
    #[serde(flatten)]
    report: &'a sdsim_engine::engine::stats::Report,
    bottlenecks: &'a [analysis::Finding],
}

/// Runs the simulation and prints its report. An invalid design lists every problem.
pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.design)
        .with_context(|| format!("reading {}", args.design))?;
    let design = match design::parse(&text) {
        Ok(d) => d,
        Err(problems) => {
            let list: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
            bail!(
                "{} is not a valid design:\n{}",
                args.design,
                list.join("\n")
            );
        }
    };
    if args.interval.is_nan() || args.interval <= 0.0 {
        bail!("--interval must be positive");
    }
    if !(0.05..=0.99).contains(&args.target_utilization) {
        bail!("--target-utilization must be between 0.05 and 0.99");
    }
    let mut sim = Simulation::new(design.clone());
    match &args.series {
        Some(path) => {
            let file = std::fs::File::create(path).with_context(|| format!("creating {path}"))?;
            let mut out = std::io::BufWriter::new(file);
            let mut t = 0.0;
            while !sim.is_finished() {
                t += args.interval;
                sim.advance_to(t);
                let line = sonic_rs::to_string(&sim.series_point())?;
                writeln!(out, "{line}")?;
            }
            out.flush()?;
        }
        None => sim.run(),
    }
    let report = sim.report();
    let findings = analysis::analyze(&design, &report, args.target_utilization);
    if args.json {
        let output = Output {
            report: &report,
            bottlenecks: &findings,
        };
        println!("{}", sonic_rs::to_string_pretty(&output)?);
    } else {
        print!("{}{}", report.table(), analysis::table(&findings));
    }
    Ok(())
}
