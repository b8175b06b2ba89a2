//! Dynamics: scheduled faults, per-station timeouts and autoscaling, per-call retries and
//! circuit breakers.

use super::{Checker, NON_NEGATIVE, POSITIVE};
use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};
use std::collections::HashMap;

/// A scheduled fault.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// When it starts (simulated seconds).
    pub at: f64,
    /// How long it lasts; `None` = until the end.
    pub duration: Option<f64>,
    /// What happens.
    pub action: FaultAction,
}

/// What a fault does.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultAction {
    /// `instances` instances of a station go down: they take no new requests and their waiting
    /// requests fail; they come back when the fault ends.
    Crash {
        /// Station index.
        component: usize,
        /// How many instances.
        instances: u32,
    },
    /// Every service at the station takes `extra` seconds longer.
    AddLatency {
        /// Station index.
        component: usize,
        /// Extra seconds.
        extra: f64,
    },
    /// The station fails this share of requests.
    ErrorRate {
        /// Station index.
        component: usize,
        /// Probability.
        rate: f64,
    },
    /// A cache with a capacity loses every entry at once (schema version 2).
    Flush {
        /// Cache index.
        component: usize,
    },
    /// Requests and calls from `from` to `to` fail.
    Partition {
        /// Sender index.
        from: usize,
        /// Receiver index.
        to: usize,
    },
}

/// Autoscaling of a station's instances on utilisation (seed 002's 70 % rule).
#[derive(Debug, Clone, PartialEq)]
pub struct Autoscale {
    /// Utilisation aimed at.
    pub target: f64,
    /// Fewest instances.
    pub min: u32,
    /// Most instances.
    pub max: u32,
    /// How often utilisation is measured.
    pub interval: f64,
    /// Least time between two scaling decisions.
    pub cooldown: f64,
    /// Time a new instance takes to start serving.
    pub startup: f64,
}

/// Retries and a circuit breaker on a call.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CallPolicy {
    /// Retries after a failure.
    pub retries: u32,
    /// First backoff; doubles each retry.
    pub backoff: f64,
    /// The caller gives up on an answer after this long (a failure).
    pub timeout: Option<f64>,
    /// Consecutive failures that open the breaker, and how long it stays open.
    pub breaker: Option<(u32, f64)>,
}

pub(crate) fn parse_autoscale(
    c: &mut Checker,
    item: &Value,
    path: &str,
    instances: u32,
) -> Option<Autoscale> {
    let v = item.get("autoscale")?;
    let at = format!("{path}.autoscale");
    c.unknown_fields(
        v,
        &at,
        &[
            "target_utilization",
            "min",
            "max",
            "interval_s",
            "cooldown_s",
            "startup_s",
        ],
    );
    let target = c.number(
        v,
        &at,
        "target_utilization",
        Some(0.7),
        ("in (0, 1)", |x| x > 0.0 && x < 1.0),
    );
    let min = c.integer(v, &at, "min", 1, 1) as u32;
    let max = c.integer(v, &at, "max", u64::from(instances.max(min)) * 4, 1) as u32;
    if max < min || instances < min || instances > max {
        c.problem(
            &at,
            format!("needs min ≤ instances ({instances}) ≤ max, got min {min}, max {max}"),
        );
    }
    Some(Autoscale {
        target,
        min,
        max,
        interval: c.number(v, &at, "interval_s", Some(10.0), POSITIVE),
        cooldown: c.number(v, &at, "cooldown_s", Some(60.0), NON_NEGATIVE),
        startup: c.number(v, &at, "startup_s", Some(30.0), NON_NEGATIVE),
    })
}

pub(super) fn parse_policy(c: &mut Checker, edge: &Value, path: &str) -> CallPolicy {
    let retries = c.integer(edge, path, "retries", 0, 0) as u32;
    let backoff = c.number(edge, path, "backoff_ms", Some(100.0), NON_NEGATIVE) / 1e3;
    let timeout = edge
        .get("timeout_ms")
        .map(|_| c.number(edge, path, "timeout_ms", None, POSITIVE) / 1e3);
    let breaker = edge.get("breaker").map(|b| {
        let at = format!("{path}.breaker");
        c.unknown_fields(b, &at, &["failures", "open_s"]);
        (
            c.integer(b, &at, "failures", 5, 1) as u32,
            c.number(b, &at, "open_s", Some(30.0), POSITIVE),
        )
    });
    CallPolicy {
        retries,
        backoff,
        timeout,
        breaker,
    }
}

pub(super) fn parse_faults(
    c: &mut Checker,
    root: &Value,
    index: &HashMap<String, usize>,
    kinds: &[String],
) -> Vec<Fault> {
    let Some(v) = root.get("faults") else {
        return Vec::new();
    };
    let Some(list) = v.as_array() else {
        c.problem("$.faults", "must be an array");
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, f) in list.iter().enumerate() {
        let path = format!("$.faults[{i}]");
        c.unknown_fields(
            f,
            &path,
            &[
                "at_s",
                "duration_s",
                "action",
                "component",
                "instances",
                "ms",
                "rate",
                "from",
                "to",
            ],
        );
        let at = c.number(f, &path, "at_s", None, NON_NEGATIVE);
        let duration = f
            .get("duration_s")
            .map(|_| c.number(f, &path, "duration_s", None, POSITIVE));
        let id = |c: &mut Checker, key: &str| -> Option<usize> {
            let name = f.get(key).and_then(|v| v.as_str());
            match name.and_then(|n| index.get(n)) {
                Some(&i) => Some(i),
                None => {
                    c.problem(
                        &format!("{path}.{key}"),
                        format!("must name a component (got {name:?})"),
                    );
                    None
                }
            }
        };
        let action = match f.get("action").and_then(|a| a.as_str()) {
            Some("crash") => id(c, "component").map(|component| FaultAction::Crash {
                component,
                instances: c.integer(f, &path, "instances", 1, 1) as u32,
            }),
            Some("add_latency") => id(c, "component").map(|component| FaultAction::AddLatency {
                component,
                extra: c.number(f, &path, "ms", None, POSITIVE) / 1e3,
            }),
            Some("error_rate") => id(c, "component").map(|component| FaultAction::ErrorRate {
                component,
                rate: c.number(
                    f,
                    &path,
                    "rate",
                    None,
                    ("a probability in [0, 1]", |p| (0.0..=1.0).contains(&p)),
                ),
            }),
            Some("flush") => {
                c.needs_v2(f, &path, &["action"]);
                if f.get("duration_s").is_some() {
                    c.problem(
                        &format!("{path}.duration_s"),
                        "a flush is instantaneous: drop duration_s",
                    );
                }
                let component = id(c, "component");
                let holds_entries = component.is_some_and(|k| {
                    let item = root.get("components").and_then(|l| l.get(k));
                    matches!(kinds[k].as_str(), "cache" | "cdn")
                        && item.is_some_and(|i| i.get("capacity").is_some())
                });
                if component.is_some() && !holds_entries {
                    c.problem(
                        &format!("{path}.component"),
                        "a flush empties a cache with a `capacity`",
                    );
                }
                component.map(|component| FaultAction::Flush { component })
            }
            Some("partition") => match (id(c, "from"), id(c, "to")) {
                (Some(from), Some(to)) => Some(FaultAction::Partition { from, to }),
                _ => None,
            },
            _ => {
                c.problem(
                    &format!("{path}.action"),
                    "must be crash, add_latency, error_rate, flush or partition",
                );
                None
            }
        };
        let station = match &action {
            Some(FaultAction::Crash { component, .. })
            | Some(FaultAction::AddLatency { component, .. })
            | Some(FaultAction::ErrorRate { component, .. })
            | Some(FaultAction::Flush { component }) => Some(*component),
            _ => None,
        };
        if station.is_some_and(|s| matches!(kinds[s].as_str(), "source" | "load_balancer")) {
            c.problem(
                &format!("{path}.component"),
                "faults apply to stations (not sources or load balancers)",
            );
        }
        if let Some(action) = action {
            out.push(Fault {
                at,
                duration,
                action,
            });
        }
    }
    out
}
