//! The tables of `bench-auth`: one row per target and load point (medians over runs), the
//! server's CPU per call beside the latencies, and each sdsim configuration as a ratio to the
//! peer.

use crate::median;
use sdsim_loadtest::report::Report;
use std::fmt::Write as _;

/// One measured run of one target at one load point.
#[derive(Clone)]
pub struct Measured {
    /// The load generator's report.
    pub report: Report,
    /// The server process's CPU time (user + system) over the measured window per call
    /// completed in it, µs.
    pub cpu_us_per_call: f64,
    /// Share of the server's token checks answered from its cache during the run (sdsim with a
    /// `/metrics` to read only).
    pub hit_ratio: Option<f64>,
}

/// The figures of one target at one load point, medians over runs (latencies in µs).
pub struct Row {
    /// Calls per second completed.
    pub throughput: f64,
    /// Latency percentiles and maximum, µs.
    pub p50: f64,
    /// 99th percentile, µs.
    pub p99: f64,
    /// 99.9th percentile, µs.
    pub p999: f64,
    /// Maximum, µs.
    pub max: f64,
    /// Server CPU per call, µs.
    pub cpu: f64,
    /// Cache hit ratio, when known.
    pub hit_ratio: Option<f64>,
    /// Errors, summed over runs.
    pub errors: u64,
    /// Late calls, summed over runs.
    pub late: u64,
}

/// Medians over `runs` (sums for errors and late calls).
pub fn summarize(runs: &[Measured]) -> Row {
    let med = |f: &dyn Fn(&Measured) -> f64| median(runs.iter().map(f).collect());
    let ratios: Vec<f64> = runs.iter().filter_map(|m| m.hit_ratio).collect();
    Row {
        throughput: med(&|m| m.report.throughput()),
        p50: med(&|m| m.report.percentiles().p50 * 1e3),
        p99: med(&|m| m.report.percentiles().p99 * 1e3),
        p999: med(&|m| m.report.percentiles().p999 * 1e3),
        max: med(&|m| m.report.percentiles().max * 1e3),
        cpu: med(&|m| m.cpu_us_per_call),
        hit_ratio: (!ratios.is_empty()).then(|| median(ratios)),
        errors: runs.iter().map(|m| m.report.errors()).sum(),
        late: runs.iter().map(|m| m.report.counters.late).sum(),
    }
}

/// `a / b` with two decimals, or two significant digits when it is below 0.1.
pub fn ratio(a: f64, b: f64) -> String {
    let r = a / b;
    if r > 0.0 && r < 0.1 {
        let decimals = (1 - r.log10().floor() as i32).max(2) as usize;
        format!("{r:.decimals$}×")
    } else {
        format!("{r:.2}×")
    }
}

/// One line per run for the log and the report's last section.
pub fn run_line(name: &str, load: &str, m: &Measured) -> String {
    let p = m.report.percentiles();
    let hits = m
        .hit_ratio
        .map_or(String::new(), |h| format!("  cache hits {:.1}%", h * 100.0));
    format!(
        "{:<17} {:>22} {:>9.0} calls/s  p50 {:.0} µs  p99 {:.0} µs  p99.9 {:.0} µs  max {:.0} µs  server CPU {:.2} µs/call{hits}  errors {} {:?}  late {}",
        name,
        load,
        m.report.throughput(),
        p.p50 * 1e3,
        p.p99 * 1e3,
        p.p999 * 1e3,
        p.max * 1e3,
        m.cpu_us_per_call,
        m.report.errors(),
        m.report.counters.errors,
        m.report.counters.late
    )
}

/// A target of the tables: its name and whether it is one of sdsim's configurations (ratios to
/// the peer are given for those).
pub struct Column<'a> {
    /// Name in the report.
    pub name: &'a str,
    /// An sdsim configuration.
    pub sdsim: bool,
}

/// One row per target and load point, then each sdsim configuration against `peer` (the index
/// of the peer among `targets`). `results[load][target]` holds the runs.
pub fn load_table(
    title: &str,
    targets: &[Column<'_>],
    peer: usize,
    loads: &[String],
    results: &[Vec<Vec<Measured>>],
) -> anyhow::Result<String> {
    let mut out = format!("\n## {title}\n\n| load | target | calls/s | p50 µs | p99 µs | p99.9 µs | max µs | server CPU µs/call | cache hits | errors | late |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (load, per_target) in loads.iter().zip(results) {
        let rows: Vec<Option<Row>> = per_target
            .iter()
            .map(|runs| (!runs.is_empty()).then(|| summarize(runs)))
            .collect();
        for (target, row) in targets.iter().zip(&rows) {
            let Some(row) = row else { continue };
            writeln!(
                out,
                "| {load} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {} | {} | {} |",
                target.name,
                row.throughput,
                row.p50,
                row.p99,
                row.p999,
                row.max,
                row.cpu,
                row.hit_ratio
                    .map_or("".into(), |h| format!("{:.1}%", h * 100.0)),
                row.errors,
                row.late
            )?;
        }
        let Some(Some(b)) = rows.get(peer) else {
            continue;
        };
        for (target, row) in targets.iter().zip(&rows) {
            let (true, Some(a)) = (target.sdsim, row) else {
                continue;
            };
            writeln!(
                out,
                "| {load} | **{} / {}** | **{}** | {} | {} | {} | {} | **{}** | | | |",
                target.name,
                targets[peer].name,
                ratio(a.throughput, b.throughput),
                ratio(a.p50, b.p50),
                ratio(a.p99, b.p99),
                ratio(a.p999, b.p999),
                ratio(a.max, b.max),
                ratio(a.cpu, b.cpu),
            )?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ratios_keep_two_significant_digits() {
        assert_eq!(super::ratio(7.0, 1.0), "7.00×");
        assert_eq!(super::ratio(1.0, 4.0), "0.25×");
        assert_eq!(super::ratio(7.0, 100.0), "0.070×");
        assert_eq!(super::ratio(1299.0, 2_410_495.0), "0.00054×");
    }
}
