//! `sdsim simulate DESIGN.json [--json] [--series FILE] [--interval SECONDS] [--plot-goodput FILE.svg]
//! [--sweep PATH=VALUES]... [--slo-p99 MS]`

use anyhow::{bail, Context};
use sdsim_engine::engine::Simulation;
use sdsim_engine::{analysis, design, plot, sweep};
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
    /// Run the design once per value instead, e.g. `components[api].instances=1..8` or
    /// `components[users].rate_per_s=10,20,40`; several make the grid (256 points at most).
    #[arg(long, value_name = "PATH=VALUES")]
    pub sweep: Vec<String>,
    /// Draw goodput, attempts and offered load over time (schema version 2) into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot_goodput: Option<String>,
    /// With `--sweep`: the p99 (end to end, ms) the knee must stay within.
    #[arg(long, value_name = "MS")]
    pub slo_p99: Option<f64>,
}

#[derive(serde::Serialize)]
struct SweepOutput<'a> {
    parameters: Vec<&'a str>,
    points: &'a [sweep::SweepRow],
    /// Index in `points`.
    knee: Option<usize>,
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
    if !args.sweep.is_empty() {
        return run_sweep(&args, &text);
    }
    if args.slo_p99.is_some() {
        bail!("--slo-p99 applies to a sweep: add --sweep PATH=VALUES");
    }
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
    if let Some(path) = &args.plot_goodput {
        if report.goodput.is_empty() {
            bail!("--plot-goodput draws the goodput series of a version-2 design (\"version\": 2); {} has none", args.design);
        }
        let title = std::path::Path::new(&args.design)
            .file_name()
            .map_or(args.design.clone(), |n| n.to_string_lossy().into_owned());
        let svg = plot::goodput_svg(
            &title,
            &report.goodput,
            &plot::fault_windows(&design, report.simulated_s),
            report.metastability.as_ref(),
        );
        std::fs::write(path, svg).with_context(|| format!("writing {path}"))?;
    }
    let findings = analysis::analyze(&design, &report, args.target_utilization);
    if args.json {
        let output = Output {
            report: &report,
            bottlenecks: &findings,
        };
        emit(&format!("{}\n", sonic_rs::to_string_pretty(&output)?))
    } else {
        emit(&format!("{}{}", report.table(), analysis::table(&findings)))
    }
}

/// `--sweep`: every point of the grid, a table (or JSON) and the knee.
fn run_sweep(args: &SimulateArgs, text: &str) -> anyhow::Result<()> {
    if args.series.is_some() || args.plot_goodput.is_some() {
        bail!("--series and --plot-goodput show one run: they do not combine with --sweep");
    }
    if let Some(slo) = args.slo_p99 {
        if !(slo.is_finite() && slo > 0.0) {
            bail!("--slo-p99 must be a positive number of milliseconds");
        }
    }
    let parameters = args
        .sweep
        .iter()
        .map(|spec| sweep::Parameter::parse(spec))
        .collect::<Result<Vec<_>, _>>()?;
    let rows = sweep::run(text, &parameters, sweep::MAX_POINTS)
        .with_context(|| format!("sweeping {}", args.design))?;
    let knee = args.slo_p99.and_then(|slo| sweep::knee(&rows, slo));
    if args.json {
        let output = SweepOutput {
            parameters: parameters.iter().map(|p| p.path.as_str()).collect(),
            points: &rows,
            knee,
        };
        return emit(&format!("{}\n", sonic_rs::to_string_pretty(&output)?));
    }
    let mut out = sweep::table(&parameters, &rows, knee);
    if let Some(slo) = args.slo_p99 {
        out.push_str(&match knee {
            Some(i) => format!(
                "knee: {} — the largest load ({:.2}/s offered) with p99 within {slo} ms\n",
                sweep::describe(&parameters, &rows[i].values),
                rows[i].offered_per_s
            ),
            None => format!("knee: none — no point keeps p99 within {slo} ms\n"),
        });
    }
    emit(&out)
}

/// Writes `text` to standard output. A reader that went away (`sdsim simulate ... | head`) is
/// not an error: `print!` panicked with a backtrace there.
pub(crate) fn emit(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        written => Ok(written?),
    }
}
