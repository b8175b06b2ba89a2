//! Pass/fail criteria of a run, as k6 has them: `p99 < 50ms`, `errors < 0.1%`,
//! `throughput >= 900`, or for one line of the table `login: p99 < 200ms`. Given with
//! `--threshold` or a scenario's `thresholds = [...]`, checked on the report at the end; any
//! failed one makes the process exit with [`EXIT_CODE`] after the outputs are written, so a CI
//! job fails on a slow or failing server.

use crate::report::Report;
use serde::Serialize;

/// The exit code of a run whose thresholds did not all hold (k6's too).
pub const EXIT_CODE: i32 = 99;

/// What a threshold measures.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Metric {
    /// A latency quantile in (0, 1], milliseconds.
    Quantile(f64),
    /// Mean latency, milliseconds.
    Mean,
    /// Errors / requests sent.
    Errors,
    /// Requests sent late / requests sent (open loop).
    Late,
    /// Completed requests per second of the measured time.
    Throughput,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Compare {
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

/// One criterion.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// As written.
    pub text: String,
    /// The table line it applies to; `None`: the run's main line.
    pub line: Option<String>,
    metric: Metric,
    compare: Compare,
    /// In the metric's unit: milliseconds, a ratio, or per second.
    limit: f64,
}

/// A threshold checked against a report.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// The threshold as written.
    pub threshold: String,
    /// The line it was checked on.
    pub line: String,
    /// The measured value, in the threshold's unit (ms, %, or per second).
    pub actual: f64,
    /// The unit of `actual`.
    pub unit: &'static str,
    /// Whether it held.
    pub passed: bool,
}

impl Threshold {
    /// Parses `[LINE:] METRIC OP VALUE`: METRIC `p50`, `p90`, `p95`, `p99`, `p99.9`, any
    /// `pN`, `max`, `mean` (VALUE a duration: `50ms`, `1.5s`, `800us`; a bare number is ms),
    /// `errors` or `late` (VALUE `0.1%` or a fraction `0.001`), `throughput` (per second, `/s`
    /// optional); OP `<`, `<=`, `>`, `>=`.
    pub fn parse(text: &str) -> Result<Threshold, String> {
        let bad = |why: &str| format!("threshold {text:?}: {why}");
        let (line, rest) = match text.split_once(':') {
            Some((line, rest)) if !line.trim().is_empty() => (Some(line.trim().to_string()), rest),
            Some(_) => return Err(bad("nothing before ':' (a line of the table, e.g. login)")),
            None => (None, text),
        };
        let at = rest
            .find(['<', '>'])
            .ok_or_else(|| bad("no comparison (<, <=, > or >=)"))?;
        let (name, tail) = rest.split_at(at);
        let (compare, value) = if let Some(v) = tail.strip_prefix("<=") {
            (Compare::LessOrEqual, v)
        } else if let Some(v) = tail.strip_prefix(">=") {
            (Compare::GreaterOrEqual, v)
        } else if let Some(v) = tail.strip_prefix('<') {
            (Compare::Less, v)
        } else {
            (Compare::Greater, &tail[1..])
        };
        let (name, value) = (name.trim(), value.trim());
        let metric = match name {
            "max" => Metric::Quantile(1.0),
            "mean" => Metric::Mean,
            "errors" => Metric::Errors,
            "late" => Metric::Late,
            "throughput" => Metric::Throughput,
            p if p.starts_with('p') => {
                let q: f64 = p[1..]
                    .parse()
                    .map_err(|_| bad(&format!("{p} is not a percentile such as p99 or p99.9")))?;
                if !(q > 0.0 && q <= 100.0) {
                    return Err(bad(&format!("{p}: the percentile must be in (0, 100]")));
                }
                Metric::Quantile(q / 100.0)
            }
            other => {
                return Err(bad(&format!(
                    "unknown metric {other:?} (pN such as p99, max, mean, errors, late, throughput)"
                )))
            }
        };
        let limit = match metric {
            Metric::Quantile(_) | Metric::Mean => parse_millis(value),
            Metric::Errors | Metric::Late => parse_ratio(value),
            Metric::Throughput => value
                .strip_suffix("/s")
                .unwrap_or(value)
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0),
        }
        .ok_or_else(|| bad(&format!("{value:?} is not a value for {name}")))?;
        Ok(Threshold {
            text: text.trim().to_string(),
            line,
            metric,
            compare,
            limit,
        })
    }

    /// Checks the threshold on `report`, the line named `line`.
    pub fn check(&self, line: &str, report: &Report) -> Verdict {
        let sent = report.counters.sent.max(1) as f64;
        let (actual, unit) = match self.metric {
            Metric::Quantile(_) | Metric::Mean if report.histogram.is_empty() => (f64::NAN, "ms"),
            Metric::Quantile(q) => (report.histogram.value_at_quantile(q) as f64 / 1e3, "ms"),
            Metric::Mean => (report.histogram.mean() / 1e3, "ms"),
            Metric::Errors => (report.errors() as f64 / sent, "ratio"),
            Metric::Late => (report.counters.late as f64 / sent, "ratio"),
            Metric::Throughput => (report.throughput(), "/s"),
        };
        // A latency of a line that recorded nothing fails: nothing shows it held.
        let passed = !actual.is_nan()
            && match self.compare {
                Compare::Less => actual < self.limit,
                Compare::LessOrEqual => actual <= self.limit,
                Compare::Greater => actual > self.limit,
                Compare::GreaterOrEqual => actual >= self.limit,
            };
        let (actual, unit) = if unit == "ratio" {
            (actual * 100.0, "%")
        } else {
            (actual, unit)
        };
        Verdict {
            threshold: self.text.clone(),
            line: line.to_string(),
            actual,
            unit,
            passed,
        }
    }
}

/// Milliseconds from `50ms`, `1.5s`, `800us`, `800µs`, or a bare number of milliseconds.
fn parse_millis(value: &str) -> Option<f64> {
    let (number, scale) = if let Some(v) = value.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = value.strip_suffix("us").or(value.strip_suffix("µs")) {
        (v, 1e-3)
    } else if let Some(v) = value.strip_suffix('s') {
        (v, 1e3)
    } else {
        (value, 1.0)
    };
    let n: f64 = number.trim().parse().ok()?;
    (n.is_finite() && n >= 0.0).then_some(n * scale)
}

/// A ratio from `0.1%` or `0.001`.
fn parse_ratio(value: &str) -> Option<f64> {
    let (number, scale) = match value.strip_suffix('%') {
        Some(v) => (v, 0.01),
        None => (value, 1.0),
    };
    let n: f64 = number.trim().parse().ok()?;
    let r = n * scale;
    (r.is_finite() && (0.0..=1.0).contains(&r)).then_some(r)
}

/// Parses every threshold and checks that each names a line the run has (`lines`; `main`
/// is the line of thresholds without one, `None` when the run has no main line), before the
/// run starts: a typo must not cost a whole run.
pub fn prepare(
    texts: &[String],
    lines: &[&str],
    main: Option<&str>,
) -> anyhow::Result<Vec<Threshold>> {
    texts
        .iter()
        .map(|text| {
            let t = Threshold::parse(text).map_err(|e| anyhow::anyhow!(e))?;
            match (&t.line, main) {
                (Some(line), _) if !lines.contains(&line.as_str()) => anyhow::bail!(
                    "threshold {text:?}: this run has no line {line:?} (it has {lines:?})"
                ),
                (None, None) => anyhow::bail!(
                    "threshold {text:?}: name the line it is for, one of {lines:?} (e.g. \"{}: {}\")",
                    lines.first().copied().unwrap_or("line"),
                    text.trim()
                ),
                _ => Ok(t),
            }
        })
        .collect()
}

/// Checks `thresholds`; `report_of` gives the report of a line (the main line is `main`).
pub fn check_all(
    thresholds: &[Threshold],
    main: &str,
    report_of: impl Fn(&str) -> Option<Report>,
) -> Vec<Verdict> {
    thresholds
        .iter()
        .filter_map(|t| {
            let line = t.line.as_deref().unwrap_or(main);
            report_of(line).map(|r| t.check(line, &r))
        })
        .collect()
}

/// The table of verdicts, printed after the run's own table.
pub fn table(verdicts: &[Verdict]) -> String {
    let width = verdicts
        .iter()
        .map(|v| v.threshold.len())
        .max()
        .unwrap_or(0);
    let mut out = String::from("thresholds\n");
    for v in verdicts {
        out.push_str(&format!(
            "  {:<6}  {:<width$}  {} {:.3} {}\n",
            if v.passed { "ok" } else { "FAILED" },
            v.threshold,
            v.line,
            v.actual,
            v.unit
        ));
    }
    out
}

/// `json` (a report) with the verdicts added under `thresholds`.
pub fn with_verdicts(json: String, verdicts: &[Verdict]) -> String {
    if verdicts.is_empty() {
        return json;
    }
    let Ok(mut value) = sonic_rs::from_str::<sonic_rs::Value>(&json) else {
        return json;
    };
    if let (Some(object), Ok(list)) = (
        sonic_rs::JsonValueMutTrait::as_object_mut(&mut value),
        sonic_rs::to_value(verdicts),
    ) {
        object.insert("thresholds", list);
    }
    sonic_rs::to_string(&value).unwrap_or(json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Counters, Report};
    use std::time::Duration;

    fn report(latencies_us: &[u64], sent: u64, errors: u64, late: u64) -> Report {
        let mut r = Report::new(Duration::from_secs(10));
        let mut h = Report::histogram();
        for l in latencies_us {
            h.record(*l).unwrap();
        }
        let mut c = Counters {
            sent,
            completed: latencies_us.len() as u64,
            late,
            ..Counters::default()
        };
        if errors > 0 {
            c.errors.insert("status_500", errors);
        }
        r.merge(&h, &c);
        r
    }

    #[test]
    fn thresholds_parse_with_units_and_refuse_what_they_cannot_mean() {
        let t = Threshold::parse("login: p99.9 <= 1.5s").unwrap();
        assert_eq!(t.line.as_deref(), Some("login"));
        assert!(matches!(t.metric, Metric::Quantile(q) if (q - 0.999).abs() < 1e-12));
        assert_eq!((t.compare, t.limit), (Compare::LessOrEqual, 1500.0));
        assert_eq!(Threshold::parse("errors < 0.1%").unwrap().limit, 0.001);
        assert_eq!(Threshold::parse("late<0.02").unwrap().limit, 0.02);
        assert_eq!(Threshold::parse("max < 800us").unwrap().limit, 0.8);
        assert_eq!(
            Threshold::parse("throughput >= 900/s").unwrap().limit,
            900.0
        );
        assert_eq!(Threshold::parse("mean > 3").unwrap().limit, 3.0);
        for (text, why) in [
            ("p99 50ms", "no comparison"),
            ("p101 < 5ms", "(0, 100]"),
            ("pX < 5ms", "not a percentile"),
            ("latency < 5ms", "unknown metric \"latency\""),
            ("errors < 150%", "not a value for errors"),
            ("p99 < fast", "not a value for p99"),
            (": p99 < 5ms", "nothing before ':'"),
            ("throughput > -1", "not a value for throughput"),
        ] {
            let err = Threshold::parse(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
            assert!(err.starts_with(&format!("threshold {text:?}")), "{err}");
        }
    }

    #[test]
    fn verdicts_follow_the_report() {
        // 100 requests of 1..=100 ms, 2 errors, 5 late, over 10 s.
        let latencies: Vec<u64> = (1..=100).map(|ms| ms * 1000).collect();
        let r = report(&latencies, 100, 2, 5);
        let verdict = |text: &str| Threshold::parse(text).unwrap().check("run", &r);
        assert!(verdict("p50 < 51ms").passed);
        assert!(!verdict("p99 < 99ms").passed);
        assert!(verdict("max <= 100.1ms").passed);
        let errors = verdict("errors < 1%");
        assert!(!errors.passed);
        assert_eq!((errors.actual, errors.unit), (2.0, "%"));
        assert!(verdict("errors <= 2%").passed);
        assert!(verdict("late < 6%").passed);
        assert!(verdict("throughput >= 10").passed);
        assert!(!verdict("throughput > 10").passed);
        // A line that recorded no latency cannot show a latency held.
        let empty = report(&[], 0, 0, 0);
        assert!(
            !Threshold::parse("p99 < 3600s")
                .unwrap()
                .check("x", &empty)
                .passed
        );
    }

    #[test]
    fn a_threshold_naming_a_line_the_run_lacks_is_refused_before_it_runs() {
        let lines = ["register", "login", "flow"];
        let ok = prepare(
            &["login: p99 < 1s".into(), "p99 < 5s".into()],
            &lines,
            Some("flow"),
        );
        assert_eq!(ok.unwrap().len(), 2);
        let typo = prepare(&["logn: p99 < 1s".into()], &lines, Some("flow")).unwrap_err();
        assert!(typo.to_string().contains("no line \"logn\""), "{typo}");
        let unnamed = prepare(&["p99 < 1s".into()], &["event", "ping"], None).unwrap_err();
        assert!(unnamed.to_string().contains("event: p99 < 1s"), "{unnamed}");
    }
}
