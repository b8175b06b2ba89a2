//! Traffic: arrival processes, rate schedules, request classes, and service-level objectives.

use super::Checker;
use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

/// How a source spaces its requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arrival {
    /// Exponential inter-arrival times.
    Poisson,
    /// Exactly 1/rate apart.
    Constant,
    /// Poisson during `on` seconds, silent for `off` seconds, repeating (bursty traffic).
    OnOff {
        /// Seconds of traffic.
        on: f64,
        /// Seconds of silence.
        off: f64,
    },
}

/// A rate that changes over time: linear between points, held after the last, optionally
/// repeating with a period (a daily curve is `repeat_s: 86400`).
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// (at second, requests per second), sorted by time, starting at 0.
    pub points: Vec<(f64, f64)>,
    /// Period after which the schedule starts again.
    pub repeat: Option<f64>,
}

impl Schedule {
    /// The rate at simulated time `t`.
    pub fn rate_at(&self, t: f64) -> f64 {
        let t = match self.repeat {
            Some(period) => t.rem_euclid(period),
            None => t,
        };
        let after = self.points.iter().position(|(at, _)| *at > t);
        match after {
            None => self.points.last().map_or(0.0, |p| p.1),
            Some(0) => self.points[0].1,
            Some(i) => {
                let (t0, r0) = self.points[i - 1];
                let (t1, r1) = self.points[i];
                r0 + (r1 - r0) * (t - t0) / (t1 - t0)
            }
        }
    }

    /// The highest rate (for thinning).
    pub fn max_rate(&self) -> f64 {
        self.points.iter().map(|p| p.1).fold(0.0, f64::max)
    }
}

/// How goodput is measured over time (schema version 2): successful client requests per
/// window against first tries per window; a run whose goodput stays below `threshold` of its
/// offered load after its last fault ended is called metastable.
#[derive(Debug, Clone, PartialEq)]
pub struct GoodputSettings {
    /// Length of a window of the goodput series (seconds).
    pub window: f64,
    /// Goodput / offered load below which a window counts as collapsed.
    pub threshold: f64,
}

impl Default for GoodputSettings {
    fn default() -> Self {
        GoodputSettings {
            window: 10.0,
            threshold: 0.9,
        }
    }
}

pub(super) fn parse_goodput(c: &mut Checker, root: &Value) -> GoodputSettings {
    let mut out = GoodputSettings::default();
    if let Some(v) = root.get("goodput") {
        c.unknown_fields(v, "$.goodput", &["window_s", "threshold"]);
        out.window = c.number(
            v,
            "$.goodput",
            "window_s",
            Some(out.window),
            super::POSITIVE,
        );
        out.threshold = c.number(
            v,
            "$.goodput",
            "threshold",
            Some(out.threshold),
            ("in (0, 1]", |x| x > 0.0 && x <= 1.0),
        );
    }
    out
}

/// A service-level objective checked against the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Slo {
    /// Its name (or a generated description).
    pub name: String,
    /// `mean_ms`, `p50_ms`, `p95_ms`, `p99_ms`, `drop_rate`, `utilization`, `throughput_per_s`,
    /// and (schema version 2) `cost_per_hour`, `cost_per_million_requests`.
    pub metric: String,
    /// A component id, or end to end when absent.
    pub component: Option<String>,
    /// A request class (end to end only).
    pub class: Option<String>,
    /// The bound.
    pub target: f64,
    /// True: the metric must stay at or below `target`; false: at or above.
    pub at_most: bool,
}

const METRICS: [&str; 9] = [
    "mean_ms",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "drop_rate",
    "utilization",
    "throughput_per_s",
    super::cost::METRICS[0],
    super::cost::METRICS[1],
];

pub(super) fn parse_arrival(c: &mut Checker, item: &Value, path: &str) -> Arrival {
    let at = format!("{path}.arrival");
    match item.get("arrival") {
        None => Arrival::Poisson,
        Some(v) if v.as_str() == Some("poisson") => Arrival::Poisson,
        Some(v) if v.as_str() == Some("constant") => Arrival::Constant,
        Some(v) if v.get("process").and_then(|p| p.as_str()) == Some("on_off") => {
            c.unknown_fields(v, &at, &["process", "on_s", "off_s"]);
            let on = c.number(v, &at, "on_s", None, super::POSITIVE);
            let off = c.number(v, &at, "off_s", None, super::POSITIVE);
            Arrival::OnOff { on, off }
        }
        Some(_) => {
            c.problem(&at, "must be \"poisson\", \"constant\" or {\"process\": \"on_off\", \"on_s\", \"off_s\"}");
            Arrival::Poisson
        }
    }
}

pub(super) fn parse_schedule(c: &mut Checker, item: &Value, path: &str) -> Option<Schedule> {
    let v = item.get("schedule")?;
    let at = format!("{path}.schedule");
    c.unknown_fields(v, &at, &["points", "repeat_s"]);
    let repeat = v
        .get("repeat_s")
        .map(|_| c.number(v, &at, "repeat_s", None, super::POSITIVE));
    let Some(list) = v
        .get("points")
        .and_then(|p| p.as_array())
        .filter(|l| !l.is_empty())
    else {
        c.problem(
            &format!("{at}.points"),
            "missing (required): [{\"at_s\", \"rate_per_s\"}] starting at 0",
        );
        return None;
    };
    let mut points = Vec::new();
    for (i, p) in list.iter().enumerate() {
        let ppath = format!("{at}.points[{i}]");
        c.unknown_fields(p, &ppath, &["at_s", "rate_per_s"]);
        let t = c.number(p, &ppath, "at_s", None, super::NON_NEGATIVE);
        let r = c.number(p, &ppath, "rate_per_s", None, super::NON_NEGATIVE);
        if let Some(&(prev, _)) = points.last() {
            if t <= prev {
                c.problem(
                    &format!("{ppath}.at_s"),
                    "points must be in increasing time",
                );
            }
        } else if t != 0.0 {
            c.problem(&format!("{ppath}.at_s"), "the first point must be at 0");
        }
        points.push((t, r));
    }
    let schedule = Schedule { points, repeat };
    if schedule.max_rate() <= 0.0 {
        c.problem(
            &format!("{at}.points"),
            "at least one rate must be positive",
        );
    }
    Some(schedule)
}

/// Parses `classes: [{"name", "p"}]`; returns (name, probability) pairs.
pub(super) fn parse_classes(c: &mut Checker, item: &Value, path: &str) -> Vec<(String, f64)> {
    let Some(v) = item.get("classes") else {
        return Vec::new();
    };
    let at = format!("{path}.classes");
    let Some(list) = v.as_array().filter(|l| !l.is_empty()) else {
        c.problem(&at, "must be a non-empty array of {\"name\", \"p\"}");
        return Vec::new();
    };
    let mut out: Vec<(String, f64)> = Vec::new();
    for (i, class) in list.iter().enumerate() {
        let cpath = format!("{at}[{i}]");
        c.unknown_fields(class, &cpath, &["name", "p"]);
        let name = class
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap_or("")
            .to_string();
        if name.is_empty() {
            c.problem(
                &format!("{cpath}.name"),
                "missing (required): a non-empty string",
            );
        } else if out.iter().any(|(n, _)| *n == name) {
            c.problem(
                &format!("{cpath}.name"),
                format!("duplicate class `{name}`"),
            );
        }
        let p = c.number(class, &cpath, "p", None, super::PROBABILITY);
        out.push((name, p));
    }
    let total: f64 = out.iter().map(|(_, p)| p).sum();
    if (total - 1.0).abs() > 1e-6 && total.is_finite() {
        c.problem(&at, format!("class probabilities add up to {total}, not 1"));
    }
    out
}

pub(super) fn parse_slos(
    c: &mut Checker,
    root: &Value,
    ids: &[String],
    classes: &[String],
) -> Vec<Slo> {
    let Some(v) = root.get("slos") else {
        return Vec::new();
    };
    let Some(list) = v.as_array() else {
        c.problem("$.slos", "must be an array");
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, s) in list.iter().enumerate() {
        let path = format!("$.slos[{i}]");
        c.unknown_fields(
            s,
            &path,
            &["name", "metric", "component", "class", "max", "min"],
        );
        let metric = s
            .get("metric")
            .and_then(|m| m.as_str())
            .unwrap_or("")
            .to_string();
        if !METRICS.contains(&metric.as_str()) {
            c.problem(
                &format!("{path}.metric"),
                format!("must be one of {}", METRICS.join(", ")),
            );
        }
        let component = s
            .get("component")
            .and_then(|v| v.as_str())
            .map(str::to_string);
        if let Some(id) = &component {
            if !ids.contains(id) {
                c.problem(
                    &format!("{path}.component"),
                    format!("unknown component id `{id}`"),
                );
            }
        } else if metric == "utilization" {
            c.problem(
                &format!("{path}.component"),
                "utilization is per component: name one",
            );
        }
        let class = s.get("class").and_then(|v| v.as_str()).map(str::to_string);
        if let Some(name) = &class {
            if !classes.contains(name) {
                c.problem(
                    &format!("{path}.class"),
                    format!("unknown request class `{name}`"),
                );
            }
            if component.is_some() {
                c.problem(
                    &format!("{path}.class"),
                    "classes are measured end to end: drop `component`",
                );
            }
        }
        let (target, at_most) = match (s.get("max"), s.get("min")) {
            (Some(_), None) => (c.number(s, &path, "max", None, super::NON_NEGATIVE), true),
            (None, Some(_)) => (c.number(s, &path, "min", None, super::NON_NEGATIVE), false),
            _ => {
                c.problem(&path, "needs exactly one of \"max\" or \"min\"");
                (f64::NAN, true)
            }
        };
        let name = s.get("name").and_then(|n| n.as_str()).map_or_else(
            || {
                format!(
                    "{} {} {} {}",
                    component
                        .as_deref()
                        .or(class.as_deref())
                        .unwrap_or("end-to-end"),
                    metric,
                    if at_most { "<=" } else { ">=" },
                    target
                )
            },
            str::to_string,
        );
        out.push(Slo {
            name,
            metric,
            component,
            class,
            target,
            at_most,
        });
    }
    out
}
