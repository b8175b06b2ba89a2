//! What a station does under load (schema version 2): service times that grow with the work
//! it holds (`contention`) and the order its waiting room is served in (`discipline`).

use super::{Checker, NON_NEGATIVE, POSITIVE};
use sonic_rs::{JsonValueTrait, Value};

/// Load-dependent latency: a request's service time is multiplied by a factor of the requests
/// in service at its instance when it starts (itself included).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Contention {
    /// `1 + per_request × (n − 1)`.
    Linear {
        /// Extra share of service time per other request in service.
        per_request: f64,
    },
    /// Gunther's Universal Scalability Law: `1 + σ(n − 1) + κ·n(n − 1)`, so throughput with n
    /// in service is `n / (1 + σ(n − 1) + κ·n(n − 1))`.
    Usl {
        /// Contention (serialisation) coefficient σ.
        sigma: f64,
        /// Coherency (crosstalk) coefficient κ.
        kappa: f64,
    },
}

impl Contention {
    /// The service-time factor with `n` requests in service (n ≥ 1).
    pub fn factor(&self, n: u32) -> f64 {
        let n = f64::from(n.max(1));
        match *self {
            Contention::Linear { per_request } => 1.0 + per_request * (n - 1.0),
            Contention::Usl { sigma, kappa } => 1.0 + sigma * (n - 1.0) + kappa * n * (n - 1.0),
        }
    }
}

/// The order in which a station's waiting room is served.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Discipline {
    /// First come, first served.
    Fifo,
    /// Newest first: under overload the fresh requests, whose clients still wait, are served.
    Lifo,
    /// First come, first served with CoDel shedding as in Facebook's "Fail at Scale": while the
    /// queue has not been empty for `interval`, a request that waited longer than `target` is
    /// dropped when it reaches the head; otherwise the limit is `interval`.
    Codel {
        /// Longest wait while the queue stands (seconds).
        target: f64,
        /// How long the queue must stand before `target` applies, and the wait limit before.
        interval: f64,
    },
}

/// Fields of this module, for the allowed-field lists of the station kinds that take them.
pub(super) const FIELDS: [&str; 3] = ["contention", "discipline", "codel"];

/// Parses `contention`, `discipline` and `codel` of a station.
pub(crate) fn parse(c: &mut Checker, item: &Value, path: &str) -> (Option<Contention>, Discipline) {
    c.needs_v2(item, path, &FIELDS);
    let contention = item.get("contention").and_then(|v| {
        let at = format!("{path}.contention");
        match v.get("model").and_then(|m| m.as_str()) {
            Some("linear") => {
                c.unknown_fields(v, &at, &["model", "per_request"]);
                let per_request = c.number(v, &at, "per_request", None, NON_NEGATIVE);
                Some(Contention::Linear { per_request })
            }
            Some("usl") => {
                c.unknown_fields(v, &at, &["model", "sigma", "kappa"]);
                let sigma = c.number(v, &at, "sigma", None, NON_NEGATIVE);
                let kappa = c.number(v, &at, "kappa", Some(0.0), NON_NEGATIVE);
                Some(Contention::Usl { sigma, kappa })
            }
            _ => {
                c.problem(
                    &format!("{at}.model"),
                    "must be \"linear\" (with per_request) or \"usl\" (with sigma, kappa)",
                );
                None
            }
        }
    });
    let discipline = match item.get("discipline").map(|v| v.as_str()) {
        None | Some(Some("fifo")) => Discipline::Fifo,
        Some(Some("lifo")) => Discipline::Lifo,
        Some(Some("codel")) => {
            let at = format!("{path}.codel");
            let empty = Value::new_object();
            let v = item.get("codel").unwrap_or(&empty);
            c.unknown_fields(v, &at, &["target_ms", "interval_ms"]);
            let target = c.number(v, &at, "target_ms", Some(5.0), POSITIVE) / 1e3;
            let interval = c.number(v, &at, "interval_ms", Some(100.0), POSITIVE) / 1e3;
            if target > interval {
                c.problem(&format!("{at}.target_ms"), "must not exceed interval_ms");
            }
            Discipline::Codel { target, interval }
        }
        _ => {
            c.problem(
                &format!("{path}.discipline"),
                "must be \"fifo\", \"lifo\" or \"codel\"",
            );
            Discipline::Fifo
        }
    };
    if item.get("codel").is_some() && !matches!(discipline, Discipline::Codel { .. }) {
        c.problem(
            &format!("{path}.codel"),
            "applies to \"discipline\": \"codel\" only",
        );
    }
    (contention, discipline)
}
