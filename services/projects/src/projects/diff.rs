//! What changed between two versions of a design.

use serde::Serialize;
use sonic_rs::{JsonContainerTrait, JsonValueTrait};
use std::collections::BTreeMap;

/// Components added, removed and changed between two designs, by `id`.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct ComponentDiff {
    /// Ids only in the new design.
    pub added: Vec<String>,
    /// Ids only in the old design.
    pub removed: Vec<String>,
    /// Ids in both whose definition differs.
    pub changed: Vec<String>,
}

/// Compares the `components` of two designs by id.
pub fn diff_components(old: &str, new: &str) -> ComponentDiff {
    let by_id = |text: &str| -> BTreeMap<String, sonic_rs::Value> {
        // Bounded nesting: the texts are stored designs, but a diff takes any text.
        let Ok(v) = sdsim_net::json::decode::<sonic_rs::Value>(text.as_bytes()) else {
            return BTreeMap::new();
        };
        v.get("components")
            .and_then(|c| c.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|c| Some((c.get("id")?.as_str()?.to_string(), c.clone())))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (a, b) = (by_id(old), by_id(new));
    ComponentDiff {
        added: b.keys().filter(|k| !a.contains_key(*k)).cloned().collect(),
        removed: a.keys().filter(|k| !b.contains_key(*k)).cloned().collect(),
        changed: a
            .iter()
            .filter(|(k, v)| b.get(*k).is_some_and(|w| !equal(v, w)))
            .map(|(k, _)| k.clone())
            .collect(),
    }
}

/// Whether two JSON texts hold the same value (object key order does not matter).
pub(super) fn same_json(a: &str, b: &str) -> bool {
    match (
        sdsim_net::json::decode::<sonic_rs::Value>(a.as_bytes()),
        sdsim_net::json::decode::<sonic_rs::Value>(b.as_bytes()),
    ) {
        (Ok(x), Ok(y)) => equal(&x, &y),
        _ => a == b,
    }
}

/// An object's values under each key, in order.
fn values_by_key(o: &sonic_rs::Object) -> BTreeMap<&str, Vec<&sonic_rs::Value>> {
    let mut keys: BTreeMap<&str, Vec<&sonic_rs::Value>> = BTreeMap::new();
    for (k, v) in o.iter() {
        keys.entry(k).or_default().push(v);
    }
    keys
}

/// JSON equality with objects compared by key, numbers by value. A key given twice is
/// compared by all its values in order (looking up one value per key made such an object
/// differ from itself).
fn equal(a: &sonic_rs::Value, b: &sonic_rs::Value) -> bool {
    if let (Some(x), Some(y)) = (a.as_object(), b.as_object()) {
        let (x, y) = (values_by_key(x), values_by_key(y));
        return x.len() == y.len()
            && x.iter().all(|(k, vs)| {
                y.get(k).is_some_and(|ws| {
                    vs.len() == ws.len() && vs.iter().zip(ws).all(|(v, w)| equal(v, w))
                })
            });
    }
    if let (Some(x), Some(y)) = (a.as_array(), b.as_array()) {
        return x.len() == y.len() && x.iter().zip(y.iter()).all(|(v, w)| equal(v, w));
    }
    if let (Some(x), Some(y)) = (a.as_f64(), b.as_f64()) {
        return x == y;
    }
    a == b
}

#[derive(Serialize)]
pub(super) struct Summary {
    pub(super) changed: Vec<&'static str>,
    pub(super) components: ComponentDiff,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) rollback_of: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_diff_by_id() {
        let old = r#"{"components":[{"x":1,"id":"a"},{"id":"b","x":1},{"id":"c"}]}"#;
        let new = r#"{"components":[{"id":"a","x":1},{"id":"b","x":2},{"id":"d"}]}"#;
        assert_eq!(
            diff_components(old, new),
            ComponentDiff {
                added: vec!["d".into()],
                removed: vec!["c".into()],
                changed: vec!["b".into()],
            }
        );
    }

    /// Found by the design_document fuzz target: a component with a key given twice was
    /// "changed" between a design and itself.
    #[test]
    fn a_design_does_not_differ_from_itself() {
        let text = r#"{"components":[{"id":"a","latency":1,"latency":2}]}"#;
        assert_eq!(diff_components(text, text), ComponentDiff::default());
        let other = r#"{"components":[{"id":"a","latency":1,"latency":3}]}"#;
        assert_eq!(diff_components(text, other).changed, ["a"]);
    }
}
