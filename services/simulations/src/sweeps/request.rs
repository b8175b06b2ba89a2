//! What a sweep request says, checked field by field: the HTTP body
//! (`POST /api/simulations/sweeps`) and the `parameters` array that the HTTP body and the
//! gRPC `StartSweep` message both carry. Every refusal names its field by JSON path.

use sdsim_engine::sweep::{self, Parameter};
use sdsim_projects::Failure;
use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

/// What a caller asks for: a grid of parameter values over a project's current design.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SweepRequest {
    /// The project whose design is swept (editor or owner).
    pub project_id: String,
    /// The `parameters` array as JSON text: `[{"path", "values": [...]}` or
    /// `{"path", "range": [from, to]}, ...]`.
    pub parameters: String,
    /// The p99 (end to end, ms) the knee must stay within; no knee without it.
    pub slo_p99_ms: Option<f64>,
    /// Simulated seconds of each point (default: the point's design's).
    pub duration_s: Option<f64>,
    /// Seed of each point (default: the point's design's).
    pub seed: Option<u64>,
    /// Points the caller allows at most (never more than `simulation.sweep_max_points`).
    pub max_points: Option<u64>,
}

/// Fields of the body, in the order the refusal of an unknown one lists them.
const FIELDS: [&str; 6] = [
    "project_id",
    "parameters",
    "slo_p99_ms",
    "duration_s",
    "seed",
    "max_points",
];

pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Failure {
    Failure::Invalid {
        field: field.into().into(),
        message: message.into(),
    }
}

/// Reads the body of `POST /api/simulations/sweeps`; what the fields mean is checked by the
/// service (so that gRPC callers get the same answers), their JSON types here.
pub fn sweep_of_body(body: &[u8]) -> Result<SweepRequest, Failure> {
    let v: Value = sdsim_net::json::decode(body)
        .map_err(|e| invalid("$", format!("the body must be a JSON object: {e}")))?;
    let Some(obj) = v.as_object() else {
        return Err(invalid(
            "$",
            "the body must be an object: {\"project_id\", \"parameters\": [...]}",
        ));
    };
    for (key, _) in obj.iter() {
        if !FIELDS.contains(&key) {
            return Err(invalid(
                format!("$.{key}"),
                format!("unknown field (allowed: {})", FIELDS.join(", ")),
            ));
        }
    }
    let project_id = match obj.get(&"project_id") {
        None => return Err(invalid("$.project_id", "missing (required): a project id")),
        Some(p) => p
            .as_str()
            .ok_or_else(|| invalid("$.project_id", "must be a string"))?
            .to_string(),
    };
    let parameters =
        match obj.get(&"parameters") {
            None => return Err(invalid(
                "$.parameters",
                "missing (required): an array of {\"path\", \"values\"} or {\"path\", \"range\"}",
            )),
            Some(p) if !p.is_array() => {
                return Err(invalid(
                    "$.parameters",
                    "must be an array of {\"path\", \"values\"} or {\"path\", \"range\"}",
                ))
            }
            Some(p) => p.to_string(),
        };
    let number = |key: &str| -> Result<Option<f64>, Failure> {
        match obj.get(&key) {
            None => Ok(None),
            Some(v) if v.is_null() => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| invalid(format!("$.{key}"), "must be a number")),
        }
    };
    let whole = |key: &str| -> Result<Option<u64>, Failure> {
        match obj.get(&key) {
            None => Ok(None),
            Some(v) if v.is_null() => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| invalid(format!("$.{key}"), "must be a whole number ≥ 0")),
        }
    };
    Ok(SweepRequest {
        project_id,
        parameters,
        slo_p99_ms: number("slo_p99_ms")?,
        duration_s: number("duration_s")?,
        seed: whole("seed")?,
        max_points: whole("max_points")?,
    })
}

/// Reads the `parameters` array: each `{"path", "values": [JSON, ...]}` or
/// `{"path", "range": [FROM, TO]}` (whole numbers, both ends), each path once.
pub fn parameters_of(text: &str) -> Result<Vec<Parameter>, Failure> {
    // Bounded nesting: over gRPC the text comes as the caller wrote it.
    let list: Value = sdsim_net::json::decode(text.as_bytes())
        .map_err(|e| invalid("$.parameters", format!("not JSON: {e}")))?;
    let Some(items) = list.as_array() else {
        return Err(invalid(
            "$.parameters",
            "must be an array of {\"path\", \"values\"} or {\"path\", \"range\"}",
        ));
    };
    if items.is_empty() {
        return Err(invalid("$.parameters", "must hold at least one parameter"));
    }
    let mut out: Vec<Parameter> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("$.parameters[{i}]");
        let Some(obj) = item.as_object() else {
            return Err(invalid(
                at,
                "must be an object: {\"path\", \"values\"} or {\"path\", \"range\"}",
            ));
        };
        for (key, _) in obj.iter() {
            if !["path", "values", "range"].contains(&key) {
                return Err(invalid(
                    format!("{at}.{key}"),
                    "unknown field (allowed: path, values, range)",
                ));
            }
        }
        let path = match obj.get(&"path") {
            None => return Err(invalid(format!("{at}.path"), "missing (required)")),
            Some(p) => p
                .as_str()
                .ok_or_else(|| invalid(format!("{at}.path"), "must be a string"))?,
        };
        sweep::check_path(path).map_err(|reason| invalid(format!("{at}.path"), reason))?;
        if out.iter().any(|p| p.path == path) {
            return Err(invalid(
                format!("{at}.path"),
                format!("`{path}` is swept twice: give each field once, with all its values"),
            ));
        }
        let values = match (obj.get(&"values"), obj.get(&"range")) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    format!("{at}.range"),
                    "give values or range, not both",
                ))
            }
            (None, None) => {
                return Err(invalid(
                    format!("{at}.values"),
                    "missing: give values (an array) or range ([from, to])",
                ))
            }
            (Some(values), None) => {
                let Some(values) = values.as_array() else {
                    return Err(invalid(
                        format!("{at}.values"),
                        "must be an array of values",
                    ));
                };
                let values: Vec<Value> = values.iter().cloned().collect();
                Parameter::from_json(path, &values)
                    .map_err(|reason| invalid(format!("{at}.values"), reason))?
                    .values
            }
            (None, Some(range)) => {
                let ends = range.as_array().filter(|r| r.len() == 2);
                let ends = ends.and_then(|r| Some((r[0].as_u64()?, r[1].as_u64()?)));
                let Some((from, to)) = ends else {
                    return Err(invalid(
                        format!("{at}.range"),
                        "must be [from, to], two whole numbers",
                    ));
                };
                sweep::range(from, to).map_err(|reason| invalid(format!("{at}.range"), reason))?
            }
        };
        out.push(Parameter {
            path: path.to_string(),
            values,
        });
    }
    Ok(out)
}

/// Where `parameters` lead in the design document `doc`: each path must reach a field (its
/// first value set on the design as it is), refused at `$.parameters[i].path` otherwise.
pub(crate) fn check_paths(doc: &Value, parameters: &[Parameter]) -> Result<(), Failure> {
    for (i, p) in parameters.iter().enumerate() {
        let mut at = doc.clone();
        let value: Value = sonic_rs::from_str(&p.values[0])
            .map_err(|e| invalid(format!("$.parameters[{i}].values"), e.to_string()))?;
        if let Err(reason) = sweep::set_field(&mut at, &p.path, value) {
            let reason = reason
                .strip_prefix(&format!("{}: ", p.path))
                .unwrap_or(&reason)
                .to_string();
            return Err(invalid(format!("$.parameters[{i}].path"), reason));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(f: Failure) -> String {
        f.to_string()
    }

    #[test]
    fn bodies_are_read_field_by_field_and_refusals_name_the_field() {
        let ok = sweep_of_body(
            br#"{"project_id": "p", "parameters": [{"path": "a", "values": [1]}], "slo_p99_ms": 200, "seed": 3, "max_points": 4}"#,
        )
        .unwrap();
        assert_eq!(ok.project_id, "p");
        assert_eq!(ok.slo_p99_ms, Some(200.0));
        assert_eq!(
            (ok.seed, ok.max_points, ok.duration_s),
            (Some(3), Some(4), None)
        );
        for (body, want) in [
            (&b"[]"[..], "$: the body must be an object"),
            (br#"{"parameters": []}"#, "$.project_id: missing"),
            (
                br#"{"project_id": 1, "parameters": []}"#,
                "$.project_id: must be a string",
            ),
            (br#"{"project_id": "p"}"#, "$.parameters: missing"),
            (
                br#"{"project_id": "p", "parameters": {}}"#,
                "$.parameters: must be an array",
            ),
            (
                br#"{"project_id": "p", "parameters": [], "speed": 1}"#,
                "$.speed: unknown field",
            ),
            (
                br#"{"project_id": "p", "parameters": [], "seed": -1}"#,
                "$.seed: must be a whole number",
            ),
            (
                br#"{"project_id": "p", "parameters": [], "slo_p99_ms": "x"}"#,
                "$.slo_p99_ms: must be a number",
            ),
        ] {
            let got = refusal(sweep_of_body(body).unwrap_err());
            assert!(
                got.starts_with(want),
                "{}: {got}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn parameters_take_values_or_a_range_and_refusals_name_the_parameter() {
        let p = parameters_of(
            r#"[{"path": "components[api].instances", "range": [1, 3]}, {"path": "x", "values": ["fifo", 2.5]}]"#,
        )
        .unwrap();
        assert_eq!(p[0].values, ["1", "2", "3"]);
        assert_eq!(p[1].values, ["\"fifo\"", "2.5"]);
        for (text, want) in [
            ("[]", "$.parameters: must hold at least one parameter"),
            ("[1]", "$.parameters[0]: must be an object"),
            (r#"[{"values": [1]}]"#, "$.parameters[0].path: missing"),
            (
                r#"[{"path": "a", "values": [1]}, {"path": "b[", "values": [1]}]"#,
                "$.parameters[1].path: `b[`: a selector",
            ),
            (
                r#"[{"path": "a", "values": []}]"#,
                "$.parameters[0].values: no values",
            ),
            (
                r#"[{"path": "a", "range": [3, 1]}]"#,
                "$.parameters[0].range: a range goes up",
            ),
            (
                r#"[{"path": "a", "range": [1]}]"#,
                "$.parameters[0].range: must be [from, to]",
            ),
            (
                r#"[{"path": "a", "range": [1, 2], "values": [1]}]"#,
                "$.parameters[0].range: give values or range",
            ),
            (
                r#"[{"path": "a", "values": [1]}, {"path": "a", "values": [2]}]"#,
                "$.parameters[1].path: `a` is swept twice",
            ),
            (
                r#"[{"path": "a", "step": 1}]"#,
                "$.parameters[0].step: unknown field",
            ),
        ] {
            let got = refusal(parameters_of(text).unwrap_err());
            assert!(got.starts_with(want), "{text}: {got}");
        }
    }
}
