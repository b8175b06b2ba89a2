//! The cost of a run (schema version 2), computed from the report's own figures once a report
//! is asked for, never per event: the mean instances in service come from the time integral of
//! available workers the statistics already keep (so autoscaling and crashes count), the
//! billed requests from a component's arrivals.

use super::stats::{ComponentReport, Report};
use crate::design::{Design, Kind};
use serde::Serialize;
use std::collections::BTreeMap;

/// Seconds in the hour the prices are given for.
const HOUR_S: f64 = 3600.0;

/// What the measured part of a run cost.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct CostReport {
    /// Every priced component's cost per hour, added up.
    pub per_hour: f64,
    /// What the measured time cost: `per_hour` × measured hours.
    pub measured: f64,
    /// Requests that succeeded end to end while measuring (client requests answered in time).
    pub successful_requests: u64,
    /// `measured` per million successful requests; `None` (null) when none succeeded.
    pub per_million_requests: Option<f64>,
    /// Per priced component id.
    pub components: BTreeMap<String, ComponentCost>,
}

/// What one component cost.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct ComponentCost {
    /// Instances in service, averaged over the measured time.
    pub mean_instances: f64,
    /// Its price per instance-hour.
    pub per_instance_hour: f64,
    /// Requests that reached it (what a per-request price bills).
    pub requests: u64,
    /// Its price per million requests.
    pub per_million_requests: f64,
    /// `mean_instances × per_instance_hour` plus its requests per hour priced.
    pub per_hour: f64,
}

impl CostReport {
    /// The cost of what `report` measured, `None` when no component of `design` has a price
    /// (so reports of designs without prices keep the keys they always had).
    pub(crate) fn build(design: &Design, report: &Report) -> Option<CostReport> {
        let hours = report.measured_s / HOUR_S;
        let mut components = BTreeMap::new();
        for comp in &design.components {
            let (Some(cost), Some(figures)) = (&comp.cost, report.components.get(&comp.id)) else {
                continue;
            };
            let mean_instances = mean_instances(&comp.kind, figures);
            let requests = figures.arrivals;
            let per_hour = mean_instances * cost.per_instance_hour
                + requests as f64 * cost.per_million_requests / 1e6 / hours;
            components.insert(
                comp.id.clone(),
                ComponentCost {
                    mean_instances,
                    per_instance_hour: cost.per_instance_hour,
                    requests,
                    per_million_requests: cost.per_million_requests,
                    per_hour,
                },
            );
        }
        if components.is_empty() {
            return None;
        }
        let per_hour: f64 = components.values().map(|c| c.per_hour).sum();
        let measured = per_hour * hours;
        // A version-2 run counts success per client request (retries are cost, not output);
        // `end_to_end` counts attempts.
        let successful_requests = if report.clients.is_empty() {
            report.end_to_end.completed
        } else {
            report.clients.values().map(|c| c.succeeded).sum()
        };
        Some(CostReport {
            per_hour,
            measured,
            successful_requests,
            per_million_requests: (successful_requests > 0)
                .then(|| measured / successful_requests as f64 * 1e6),
            components,
        })
    }
}

impl CostReport {
    /// The cost for people: the total, then each priced component.
    pub(crate) fn lines(&self) -> String {
        let mut out = format!(
            "cost: {:.4} per hour ({:.4} for the measured time); {} per million successful requests\n",
            self.per_hour,
            self.measured,
            self.per_million_requests
                .map_or("none succeeded, nothing".to_string(), |c| format!("{c:.4}"))
        );
        for (id, c) in &self.components {
            out.push_str(&format!(
                "  {id}: {:.4} per hour ({:.3} instances × {}",
                c.per_hour, c.mean_instances, c.per_instance_hour
            ));
            if c.per_million_requests > 0.0 {
                out.push_str(&format!(
                    "; {} requests × {} per million",
                    c.requests, c.per_million_requests
                ));
            }
            out.push_str(")\n");
        }
        out
    }
}

/// Instances in service on average: a station's available workers over its concurrency; a
/// load balancer is one instance that is always there.
fn mean_instances(kind: &Kind, figures: &ComponentReport) -> f64 {
    match kind {
        // The integral is summed over every event that touched the station and carries its
        // rounding (3 instances came out 3.00000000000001): rounded to a billionth of an
        // instance, a fixed-size design costs exactly its instances, and a budget set to that
        // exact figure holds.
        Kind::Station(st) => (figures.mean_workers / f64::from(st.concurrency) * 1e9).round() / 1e9,
        Kind::Balancer(_) => 1.0,
        Kind::Source(_) => 0.0,
    }
}
