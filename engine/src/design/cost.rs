//! What components cost (schema version 2): a price per instance-hour on any component but a
//! source, and a price per million requests on an `external` (a third-party API bills calls,
//! not machines). The report turns them into a cost per hour and per million successful
//! requests, and an SLO may set a budget on either.

use super::{Checker, Slo, NON_NEGATIVE};
use sonic_rs::{JsonValueTrait, Value};

/// The field every component but a source may carry.
pub(crate) const INSTANCE_FIELD: &str = "cost_per_instance_hour";
/// The field an `external` may carry besides [`INSTANCE_FIELD`].
pub(crate) const REQUEST_FIELD: &str = "cost_per_million_requests";

/// SLO metrics measured on the cost report.
pub(super) const METRICS: [&str; 2] = ["cost_per_hour", "cost_per_million_requests"];

/// The prices of one component, in whatever currency the design's author uses throughout.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cost {
    /// Price of one instance for one hour in service (a load balancer counts as one instance).
    pub per_instance_hour: f64,
    /// Price of one million requests that reach the component (externals only).
    pub per_million_requests: f64,
}

/// The prices of a component, `None` when it sets neither field. Which kinds accept which
/// field is the kinds' allowed-field lists' business; this reads whatever is there.
pub(super) fn parse(c: &mut Checker, item: &Value, path: &str) -> Option<Cost> {
    c.needs_v2(item, path, &[INSTANCE_FIELD, REQUEST_FIELD]);
    if item.get(INSTANCE_FIELD).is_none() && item.get(REQUEST_FIELD).is_none() {
        return None;
    }
    let per_instance_hour = c.number(item, path, INSTANCE_FIELD, Some(0.0), NON_NEGATIVE);
    let per_million_requests = c.number(item, path, REQUEST_FIELD, Some(0.0), NON_NEGATIVE);
    Some(Cost {
        per_instance_hour,
        per_million_requests,
    })
}

/// Checks the SLOs on cost metrics against the design: a budget needs something that costs,
/// and a per-component budget a component that has a price.
pub(super) fn check_slos(c: &mut Checker, slos: &[Slo], ids: &[String], priced: &[&str]) {
    for (i, slo) in slos.iter().enumerate() {
        if !METRICS.contains(&slo.metric.as_str()) {
            continue;
        }
        let path = format!("$.slos[{i}]");
        if c.version < 2 {
            c.problem(
                &format!("{path}.metric"),
                format!(
                    "`{}` is a schema version 2 metric: set \"version\": 2",
                    slo.metric
                ),
            );
            continue;
        }
        if slo.class.is_some() {
            c.problem(
                &format!("{path}.class"),
                "cost is not measured per request class: drop `class`",
            );
        }
        match &slo.component {
            Some(_) if slo.metric == "cost_per_million_requests" => c.problem(
                &format!("{path}.component"),
                "cost per million requests is measured end to end: drop `component`",
            ),
            Some(id) if ids.contains(id) && !priced.contains(&id.as_str()) => c.problem(
                &format!("{path}.component"),
                format!("`{id}` has no price: set its {INSTANCE_FIELD} (or, for an external, {REQUEST_FIELD})"),
            ),
            None if priced.is_empty() => c.problem(
                &format!("{path}.metric"),
                format!("no component has a price: set {INSTANCE_FIELD} on the components that cost"),
            ),
            _ => {}
        }
    }
}
