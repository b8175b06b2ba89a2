//! `service` and `api_gateway`: instances × concurrency workers that serve for a service
//! time, then make their synchronous calls and hand the request on along their routes.

use super::{Entry, StationKind, RATIO};
use crate::design::{
    edges, parse_autoscale, parse_dist, parse_overload, Behavior, Checker, Fanout, Kind, Station,
    POSITIVE,
};
use sonic_rs::JsonValueTrait;

/// A plain service: every hook does the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service;

impl StationKind for Service {
    const REPORT_NAME: &'static str = "service";
    type State = ();
}

/// Parses a `service` or `api_gateway`.
pub(super) fn parse(c: &mut Checker, entry: &Entry<'_>) -> Option<Kind> {
    let Entry {
        item, path, index, ..
    } = *entry;
    c.unknown_fields(
        item,
        path,
        &super::fields(&[
            "instances",
            "concurrency",
            "service_time",
            "queue_capacity",
            "routes",
            "calls",
            "fanout",
            "error_rate",
            "timeout_ms",
            "autoscale",
            "contention",
            "discipline",
            "codel",
        ]),
    );
    let (contention, discipline) = parse_overload(c, item, path);
    let instances = c.integer(item, path, "instances", 1, 1) as u32;
    let timeout = item
        .get("timeout_ms")
        .map(|_| c.number(item, path, "timeout_ms", None, POSITIVE) / 1e3);
    let autoscale = parse_autoscale(c, item, path, instances);
    let error_rate = c.number(item, path, "error_rate", Some(0.0), RATIO);
    let concurrency = c.integer(item, path, "concurrency", 1, 1) as u32;
    let queue_capacity = super::queue_capacity(c, item, path, "queue_capacity");
    let service_time = match item.get("service_time") {
        Some(d) => parse_dist(c, d, &format!("{path}.service_time")),
        None => {
            c.problem(
                &format!("{path}.service_time"),
                "missing (required): a distribution",
            );
            None
        }
    };
    let (routes, total) = edges(c, item, path, "routes", entry.target, entry.classes);
    if total > 1.0 + 1e-9 {
        c.problem(
            &format!("{path}.routes"),
            format!("probabilities add up to {total}, more than 1"),
        );
    }
    let (calls, _) = edges(c, item, path, "calls", entry.target, entry.classes);
    let fanout = match item.get("fanout").map(|v| v.as_str()) {
        None | Some(Some("sequential")) => Fanout::Sequential,
        Some(Some("parallel")) => Fanout::Parallel,
        _ => {
            c.problem(
                &format!("{path}.fanout"),
                "must be \"sequential\" or \"parallel\"",
            );
            Fanout::Sequential
        }
    };
    for (j, call) in calls.iter().enumerate() {
        if call.to == index {
            c.problem(
                &format!("{path}.calls[{j}].to"),
                "a service cannot call itself",
            );
        }
    }
    service_time.map(|service_time| {
        Kind::Station(Station {
            instances,
            concurrency,
            service_time,
            queue_capacity,
            routes,
            calls,
            fanout,
            behavior: Behavior::Service(Service),
            error_rate,
            timeout,
            autoscale,
            contention,
            discipline,
        })
    })
}
