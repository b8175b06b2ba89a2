//! Distributions of durations in design documents (`{"dist": "exponential", "mean_ms": 100}`).

use super::{Checker, NON_NEGATIVE, POSITIVE};
use crate::engine::dist::Dist;
use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

/// Parses a distribution at `path`; `None` (with problems recorded) when it is invalid.
pub(crate) fn parse_dist(c: &mut Checker, v: &Value, path: &str) -> Option<Dist> {
    let Some(name) = v.get("dist").and_then(|d| d.as_str()) else {
        c.problem(
            &format!("{path}.dist"),
            "missing (required): exponential, constant, uniform, lognormal, erlang or empirical",
        );
        return None;
    };
    let before = c.problems.len();
    let ms = 1e-3;
    let dist = match name {
        "exponential" => {
            c.unknown_fields(v, path, &["dist", "mean_ms"]);
            Dist::Exponential(c.number(v, path, "mean_ms", None, POSITIVE) * ms)
        }
        "constant" => {
            c.unknown_fields(v, path, &["dist", "ms"]);
            Dist::Constant(c.number(v, path, "ms", None, NON_NEGATIVE) * ms)
        }
        "uniform" => {
            c.unknown_fields(v, path, &["dist", "min_ms", "max_ms"]);
            let lo = c.number(v, path, "min_ms", None, NON_NEGATIVE);
            let hi = c.number(v, path, "max_ms", None, NON_NEGATIVE);
            if lo > hi {
                c.problem(&format!("{path}.max_ms"), "must be at least min_ms");
            }
            Dist::Uniform(lo * ms, hi * ms)
        }
        "lognormal" => {
            c.unknown_fields(v, path, &["dist", "mean_ms", "stddev_ms"]);
            let mean = c.number(v, path, "mean_ms", None, POSITIVE);
            let sd = c.number(v, path, "stddev_ms", None, NON_NEGATIVE);
            Dist::lognormal(mean * ms, sd * ms)
        }
        "erlang" => {
            c.unknown_fields(v, path, &["dist", "k", "mean_ms"]);
            let k = c.integer(v, path, "k", 1, 1) as u32;
            Dist::Erlang(k, c.number(v, path, "mean_ms", None, POSITIVE) * ms)
        }
        "empirical" => {
            c.unknown_fields(v, path, &["dist", "points"]);
            let mut points = Vec::new();
            match v.get("points").and_then(|p| p.as_array()) {
                Some(list) if !list.is_empty() => {
                    for (i, point) in list.iter().enumerate() {
                        let ppath = format!("{path}.points[{i}]");
                        c.unknown_fields(point, &ppath, &["ms", "weight"]);
                        let value = c.number(point, &ppath, "ms", None, NON_NEGATIVE);
                        let weight = c.number(point, &ppath, "weight", Some(1.0), POSITIVE);
                        points.push((value * ms, weight));
                    }
                }
                _ => c.problem(
                    &format!("{path}.points"),
                    "missing (required): a non-empty array of {\"ms\", \"weight\"}",
                ),
            }
            Dist::empirical(&points)
        }
        other => {
            c.problem(
                &format!("{path}.dist"),
                format!("unknown distribution `{other}`"),
            );
            return None;
        }
    };
    (c.problems.len() == before).then_some(dist)
}
