//! Percentiles, medians and ratios as the report prints them.

use crate::median;
use sdsim_loadtest::report::Report;

/// `a / b` as a ratio with two decimals.
pub(super) fn ratio(a: f64, b: f64) -> String {
    format!("{:.2}×", a / b)
}

/// Percentiles of a report in ms: p50, p99, p99.9, max.
pub(super) fn pcts(r: &Report) -> [f64; 4] {
    let p = r.percentiles();
    [p.p50, p.p99, p.p999, p.max]
}

/// The median of each percentile over reports.
pub(super) fn median_pcts(reports: &[Report]) -> [f64; 4] {
    let all: Vec<[f64; 4]> = reports.iter().map(pcts).collect();
    std::array::from_fn(|i| median(all.iter().map(|p| p[i]).collect()))
}

pub(super) fn fmt_pcts(p: &[f64; 4]) -> String {
    format!("{:.3} / {:.3} / {:.3} / {:.3}", p[0], p[1], p[2], p[3])
}

pub(super) fn fmt_ratios(a: &[f64; 4], b: &[f64; 4]) -> String {
    format!(
        "{} / {} / {} / {}",
        ratio(a[0], b[0]),
        ratio(a[1], b[1]),
        ratio(a[2], b[2]),
        ratio(a[3], b[3])
    )
}

pub(super) fn errors_text(r: &Report) -> String {
    if r.counters.errors.is_empty() {
        "0".into()
    } else {
        r.counters
            .errors
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The reports of `kinds` merged into one.
pub(super) fn merged(reports: &[Report; 3], kinds: &[usize]) -> Report {
    let mut out = Report::new(reports[0].duration);
    for &k in kinds {
        out.merge(&reports[k].histogram, &reports[k].counters);
    }
    out
}
