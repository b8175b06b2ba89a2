//! Sweeps: one design run over a grid of parameter values (`components[api].instances=1..8`),
//! one row of figures per point, and the knee: the largest load whose p99 stays within an SLO.
//!
//! A parameter names a field of the design document by a path of keys and selectors:
//! `components[api].service_time.mean_ms` (a selector is an index, `[0]`, or the `id` of an
//! element, `[api]`). Its values are JSON literals, `1,2,4` or `"fifo","lifo"`, or a range of
//! whole numbers, `1..8` (both ends included). Each point is the document with those fields
//! set, validated and run like any design, so a point the engine would refuse is refused
//! with the problems of that point.

use crate::design::{self, Problem};
use crate::engine::stats::Report;
use crate::engine::Simulation;
use serde::Serialize;
use sonic_rs::{JsonValueMutTrait, JsonValueTrait, Value};

/// Points a sweep runs at most unless its caller says otherwise.
pub const MAX_POINTS: usize = 256;

/// What is wrong with a sweep.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// A parameter is not `PATH=VALUES` with a path and values this module reads.
    #[error("sweep parameter `{spec}`: {reason}")]
    Parameter {
        /// The parameter as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The grid has more points than allowed.
    #[error("the sweep has {points} points, more than the limit of {max}")]
    TooManyPoints {
        /// Points of the grid.
        points: usize,
        /// The limit.
        max: usize,
    },
    /// The design document is not JSON, or a path does not lead to a field of it.
    #[error("{0}")]
    Document(String),
    /// A point of the grid is not a valid design.
    #[error("at {point}: not a valid design: {}", list(.problems))]
    InvalidPoint {
        /// The point, `path=value, ...`.
        point: String,
        /// Every problem of the design at that point.
        problems: Vec<Problem>,
    },
}

fn list(problems: &[Problem]) -> String {
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    text.join("; ")
}

/// One swept field and the values it takes.
#[derive(Debug, Clone, PartialEq)]
pub struct Parameter {
    /// The field's path in the design document.
    pub path: String,
    /// Its values, as JSON literals.
    pub values: Vec<String>,
}

/// Largest number of values a `a..b` range expands to (the grid's cap applies on top).
const MAX_RANGE: u64 = 10_000;

impl Parameter {
    /// Reads `PATH=VALUES`: `components[api].instances=1..8`, `..rate_per_s=10,20,40`.
    pub fn parse(spec: &str) -> Result<Parameter, SweepError> {
        let bad = |reason: &str| SweepError::Parameter {
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        let (path, values) = spec
            .split_once('=')
            .ok_or_else(|| bad("expected PATH=VALUES, e.g. components[api].instances=1..8"))?;
        let path = path.trim();
        segments(path).map_err(|reason| bad(&reason))?;
        let values = values.trim();
        let values: Vec<String> = match values.split_once("..") {
            Some((from, to)) => {
                let (Ok(from), Ok(to)) = (from.trim().parse::<u64>(), to.trim().parse::<u64>())
                else {
                    return Err(bad("a range is two whole numbers, FROM..TO"));
                };
                range(from, to).map_err(|reason| bad(&reason))?
            }
            None => values.split(',').map(|v| v.trim().to_string()).collect(),
        };
        for v in &values {
            if sonic_rs::from_str::<Value>(v).is_err() {
                return Err(bad(&format!(
                    "`{v}` is not a JSON value (strings are quoted)"
                )));
            }
        }
        Ok(Parameter {
            path: path.to_string(),
            values,
        })
    }
}

impl Parameter {
    /// A parameter whose values are already JSON (a request body's `{"path", "values"}`):
    /// the path is checked, the values kept as their JSON text. The reason names no field:
    /// the caller knows where the parameter came from.
    pub fn from_json(path: &str, values: &[Value]) -> Result<Parameter, String> {
        check_path(path)?;
        if values.is_empty() {
            return Err("no values: a parameter takes at least one".into());
        }
        Ok(Parameter {
            path: path.to_string(),
            values: values.iter().map(|v| v.to_string()).collect(),
        })
    }
}

/// The whole numbers `from..=to` as values (both ends; at most [`MAX_RANGE`] of them).
pub fn range(from: u64, to: u64) -> Result<Vec<String>, String> {
    if from > to {
        return Err("a range goes up: FROM..TO with FROM ≤ TO".into());
    }
    if to - from >= MAX_RANGE {
        return Err(format!("a range has at most {MAX_RANGE} values"));
    }
    Ok((from..=to).map(|v| v.to_string()).collect())
}

/// Whether `path` reads as keys and selectors (`components[api].instances`).
pub fn check_path(path: &str) -> Result<(), String> {
    segments(path).map(|_| ())
}

/// Sets the field at `path` of the design document `doc` to `value`, as a sweep point does;
/// the reason of a refusal starts with the path.
pub fn set_field(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    set(doc, path, value)
}

/// One key of a path and its selector, if any.
type Segment<'a> = (&'a str, Option<&'a str>);

fn segments(path: &str) -> Result<Vec<Segment<'_>>, String> {
    if path.is_empty() {
        return Err("the path is empty".into());
    }
    path.split('.')
        .map(|part| match part.split_once('[') {
            None if !part.is_empty() => Ok((part, None)),
            Some((key, rest)) if !key.is_empty() => match rest.strip_suffix(']') {
                Some(sel) if !sel.is_empty() && !sel.contains(['[', ']']) => Ok((key, Some(sel))),
                _ => Err(format!("`{part}`: a selector is [index] or [id]")),
            },
            _ => Err(format!("`{part}`: a path is keys separated by dots")),
        })
        .collect()
}

/// Sets the field at `path` of `doc` to `value`: every step but the last must exist; the last
/// key is added to its object if absent (a field that was left to its default).
fn set(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let steps = segments(path)?;
    let mut at = doc;
    for (n, (key, selector)) in steps.iter().enumerate() {
        let last = n + 1 == steps.len() && selector.is_none();
        let object = at
            .as_object_mut()
            .ok_or_else(|| format!("{path}: `{key}` is not in an object"))?;
        if last {
            object.insert(key, value);
            return Ok(());
        }
        let inner = object
            .get_mut(key)
            .ok_or_else(|| format!("{path}: no field `{key}`"))?;
        at = match selector {
            None => inner,
            Some(sel) => {
                let items = inner
                    .as_array_mut()
                    .ok_or_else(|| format!("{path}: `{key}` is not an array"))?;
                let position = match sel.parse::<usize>() {
                    Ok(i) if i < items.len() => Some(i),
                    Ok(_) => None,
                    Err(_) => items
                        .iter()
                        .position(|item| item.get("id").and_then(|v| v.as_str()) == Some(*sel)),
                };
                let i = position.ok_or_else(|| format!("{path}: `{key}` has no `{sel}`"))?;
                &mut items[i]
            }
        };
        if n + 1 == steps.len() {
            // A path ending in a selector replaces the element itself.
            *at = value;
            return Ok(());
        }
    }
    Ok(())
}

/// The points of the grid of `parameters` (every combination, the first parameter varying
/// slowest), each a list of value indexes; refused beyond `max` points.
pub fn grid(parameters: &[Parameter], max: usize) -> Result<Vec<Vec<usize>>, SweepError> {
    let points = parameters
        .iter()
        .try_fold(1usize, |n, p| n.checked_mul(p.values.len()))
        .unwrap_or(usize::MAX);
    if points > max {
        return Err(SweepError::TooManyPoints { points, max });
    }
    let mut out = vec![Vec::new()];
    for p in parameters {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                (0..p.values.len()).map(move |v| {
                    let mut point = prefix.clone();
                    point.push(v);
                    point
                })
            })
            .collect();
    }
    Ok(out)
}

/// The most utilised component of a point.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Busiest {
    /// Its id.
    pub component: String,
    /// Its utilisation, 0 to 1.
    pub utilization: f64,
}

/// The figures of one point.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct SweepRow {
    /// The value of each parameter at this point, as written.
    pub values: Vec<String>,
    /// Requests offered per second: first tries (version 2) or arrivals (version 1).
    pub offered_per_s: f64,
    /// Completed per second, end to end.
    pub throughput_per_s: f64,
    /// End-to-end median latency.
    pub p50_ms: f64,
    /// End-to-end 99th percentile.
    pub p99_ms: f64,
    /// Dropped / arrivals, end to end.
    pub drop_rate: f64,
    /// The component with the highest utilisation.
    pub busiest: Option<Busiest>,
    /// The cost per hour, when the design has prices.
    pub cost_per_hour: Option<f64>,
    /// The cost of a million successful requests, when the design has prices and some
    /// succeeded.
    pub cost_per_million_requests: Option<f64>,
}

impl SweepRow {
    /// The row of a point's report.
    pub fn from_report(values: Vec<String>, report: &Report) -> SweepRow {
        let e = &report.end_to_end;
        let offered = if report.clients.is_empty() {
            e.arrivals
        } else {
            report.clients.values().map(|c| c.first_tries).sum()
        };
        let busiest = report
            .components
            .iter()
            .filter(|(_, c)| c.kind != "source" && c.kind != "load_balancer")
            .max_by(|a, b| a.1.utilization.total_cmp(&b.1.utilization))
            .map(|(id, c)| Busiest {
                component: id.clone(),
                utilization: c.utilization,
            });
        SweepRow {
            values,
            offered_per_s: offered as f64 / report.measured_s,
            throughput_per_s: e.throughput_per_s,
            p50_ms: e.p50_ms,
            p99_ms: e.p99_ms,
            drop_rate: e.dropped as f64 / e.arrivals.max(1) as f64,
            busiest,
            cost_per_hour: report.cost.as_ref().map(|c| c.per_hour),
            cost_per_million_requests: report.cost.as_ref().and_then(|c| c.per_million_requests),
        }
    }
}

/// Runs every point of the grid of `parameters` over the design document `text`.
pub fn run(
    text: &str,
    parameters: &[Parameter],
    max_points: usize,
) -> Result<Vec<SweepRow>, SweepError> {
    let doc: Value = sonic_rs::from_str(text)
        .map_err(|e| SweepError::Document(format!("the design is not valid JSON: {e}")))?;
    let mut rows = Vec::new();
    for point in grid(parameters, max_points)? {
        let (at, values) = apply_point(&doc, parameters, &point)?;
        let design = check_point(&at, parameters, &values)?;
        let mut sim = Simulation::new(design);
        sim.run();
        rows.push(SweepRow::from_report(values, &sim.report()));
    }
    Ok(rows)
}

/// The design document `doc` at `point` (a value index per parameter, as [`grid`] gives),
/// and the point's values as written.
pub fn apply_point(
    doc: &Value,
    parameters: &[Parameter],
    point: &[usize],
) -> Result<(Value, Vec<String>), SweepError> {
    let mut at = doc.clone();
    let mut values = Vec::new();
    for (p, &v) in parameters.iter().zip(point) {
        let literal = &p.values[v];
        let value: Value = sonic_rs::from_str(literal)
            .map_err(|e| SweepError::Document(format!("{}: `{literal}`: {e}", p.path)))?;
        set(&mut at, &p.path, value).map_err(SweepError::Document)?;
        values.push(literal.clone());
    }
    Ok((at, values))
}

/// The design of a point's document, or the point (`path=value, ...`) with the engine's
/// problems.
pub fn check_point(
    at: &Value,
    parameters: &[Parameter],
    values: &[String],
) -> Result<design::Design, SweepError> {
    design::parse(&at.to_string()).map_err(|problems| SweepError::InvalidPoint {
        point: describe(parameters, values),
        problems,
    })
}

/// A point as people read it: `components[api].instances=2, ...`.
pub fn describe(parameters: &[Parameter], values: &[String]) -> String {
    let named: Vec<String> = parameters
        .iter()
        .zip(values)
        .map(|(p, v)| format!("{}={v}", p.path))
        .collect();
    named.join(", ")
}

/// The knee: the row with the largest offered load whose p99 is at most `slo_p99_ms`. Loads
/// within 0.5 % of each other count as the same load (the same arrivals drawn by a different
/// configuration); among those the cheapest, then the first in sweep order, is the knee (in
/// `instances=1..8`, the fewest instances that hold the SLO).
pub fn knee(rows: &[SweepRow], slo_p99_ms: f64) -> Option<usize> {
    let within: Vec<usize> = (0..rows.len())
        .filter(|&i| rows[i].throughput_per_s > 0.0 && rows[i].p99_ms <= slo_p99_ms)
        .collect();
    let top = within
        .iter()
        .map(|&i| rows[i].offered_per_s)
        .fold(f64::NEG_INFINITY, f64::max);
    within
        .into_iter()
        .filter(|&i| rows[i].offered_per_s >= top * 0.995)
        .min_by(|&a, &b| {
            let cost = |i: usize| rows[i].cost_per_hour.unwrap_or(0.0);
            cost(a).total_cmp(&cost(b)).then(a.cmp(&b))
        })
}

/// The sweep for people: one line per point, the knee marked.
pub fn table(parameters: &[Parameter], rows: &[SweepRow], knee: Option<usize>) -> String {
    let mut out = String::new();
    for p in parameters {
        out.push_str(&format!("{:>14} ", short(&p.path)));
    }
    out.push_str(&format!(
        "{:>10} {:>10} {:>10} {:>10} {:>8} {:>22} {:>12}\n",
        "offered/s", "thru/s", "p50 ms", "p99 ms", "drop", "busiest", "cost/h"
    ));
    for (i, row) in rows.iter().enumerate() {
        for v in &row.values {
            out.push_str(&format!("{v:>14} "));
        }
        let busiest = row.busiest.as_ref().map_or("-".to_string(), |b| {
            format!("{} {:.1}%", b.component, b.utilization * 100.0)
        });
        let cost = row
            .cost_per_hour
            .map_or("-".to_string(), |c| format!("{c:.4}"));
        out.push_str(&format!(
            "{:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>7.2}% {:>22} {:>12}{}\n",
            row.offered_per_s,
            row.throughput_per_s,
            row.p50_ms,
            row.p99_ms,
            row.drop_rate * 100.0,
            busiest,
            cost,
            if knee == Some(i) { "  <- knee" } else { "" }
        ));
    }
    out
}

/// The last key of a path with its selector's owner: `components[api].instances` → `api.instances`.
fn short(path: &str) -> String {
    match path.rsplit_once('.') {
        Some((head, key)) => match head.rsplit_once('[') {
            Some((_, sel)) => format!("{}.{key}", sel.trim_end_matches(']')),
            None => key.to_string(),
        },
        None => path.to_string(),
    }
}
