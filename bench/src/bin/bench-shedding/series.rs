//! The answers of the first run of every load point over time, shedding on beside off.

use super::{find, Point};
use sdsim_bench::split_load::{percentiles_ms, Bucket};
use std::fmt::Write as _;

/// Answers per second over the window, and how much of it was spent shedding, for the first
/// run of each load point with shedding on and its twin without.
pub(crate) fn write_series(out: &mut String, points: &[Point]) -> anyhow::Result<()> {
    for on in points.iter().filter(|p| p.shedding) {
        let Some(off) = find(points, on.multiplier, false) else {
            continue;
        };
        let (Some(a), Some(b)) = (off.samples.first(), on.samples.first()) else {
            continue;
        };
        let shedding_intervals = b.report.series.iter().filter(|x| x.shed > 0).count();
        writeln!(
            out,
            "\n### Over time at {}× C (run 1)\n\nWith shedding on, {} of {} 100-ms intervals had a 503; the longest run of consecutive intervals without one was {} ms. Answers per second:\n",
            on.multiplier,
            shedding_intervals,
            b.report.series.len(),
            longest_without_shed(&b.report.series) * 100,
        )?;
        writeln!(
            out,
            "| second | off: 2xx | off: other | on: 2xx | on: 503 | on: other | on: max 503 in 100 ms |\n|---|---|---|---|---|---|---|"
        )?;
        let off_s = per_second(&a.report.series);
        let on_s = per_second(&b.report.series);
        for (i, (x, y)) in off_s.iter().zip(&on_s).enumerate() {
            let peak = b
                .report
                .series
                .iter()
                .skip(i * 10)
                .take(10)
                .map(|b| b.shed)
                .max()
                .unwrap_or(0);
            writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {peak} |",
                i + 1,
                x.admitted,
                x.other,
                y.admitted,
                y.shed,
                y.other
            )?;
        }
        let shed_lat = percentiles_ms(&b.report.shed);
        writeln!(
            out,
            "\n503 latency in that run (p50 / p99 / max): {:.2} / {:.2} / {:.2} ms.",
            shed_lat[0], shed_lat[1], shed_lat[3]
        )?;
    }
    Ok(())
}

fn per_second(series: &[Bucket]) -> Vec<Bucket> {
    series
        .chunks(10)
        .map(|c| Bucket {
            admitted: c.iter().map(|b| b.admitted).sum(),
            shed: c.iter().map(|b| b.shed).sum(),
            other: c.iter().map(|b| b.other).sum(),
        })
        .collect()
}

fn longest_without_shed(series: &[Bucket]) -> usize {
    let (mut best, mut current) = (0, 0);
    for b in series {
        current = if b.shed == 0 { current + 1 } else { 0 };
        best = best.max(current);
    }
    best
}
