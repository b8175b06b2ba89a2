//! A servicegraph turned into a design.
//!
//! - Every node that serves requests is a `service`; every client that serves none (the
//!   virtual `user` node, an uninstrumented caller) is a `source` per service it calls, with
//!   `rate_per_s` = its requests / the window.
//! - An edge a → b is a synchronous call of a (servicegraph edges are request/response), with
//!   `p` = requests on the edge / requests a served. More calls than requests (r > 1 per
//!   request) are written as ⌊r⌋ calls with `p: 1` and one more with the remainder, in one
//!   sequential fan-out: the same expected number of calls (within 0.1 % of a whole number
//!   is that number: the counters of a scrape are not read at one instant). A `messaging_system` edge is a
//!   hand-off `route` instead (the producer does not wait for the consumer).
//! - A service's response time (its server-side histogram, over every edge into it) holds the
//!   time it spends waiting for its calls; its own time is the rest: the mean less, per call,
//!   calls per request × the call's mean (client-side when recorded, which includes the
//!   network, else server-side), and the variance less each call's share. The own time is
//!   exponential when its coefficient of variation is within 0.1 of 1, lognormal with that
//!   mean and standard deviation otherwise (cv at least 0.1: coarse buckets can make the
//!   estimate vanish).
//! - Telemetry holds no queue length or instance count, and the observed times already
//!   include any waiting. So the own time is taken as the work a worker holds, and workers are
//!   sized by Little's law (requests in service = rate × response time) so that an M/M/c
//!   station with that load would add less than 1 % of the response time in waiting (Erlang
//!   C): the model reproduces the observed rates and latencies at the observed load, not the
//!   system's capacity; to study saturation, set `instances` and `concurrency` to the real
//!   ones.
//! - `error_rate` is the share of failed requests that the service's calls do not explain
//!   (a failed call is taken to fail its caller): 1 − (1 − F) / Π(1 − p·F_callee).

use super::servicegraph::{Edge, Graph, Latency};
use super::{ImportError, ImportOptions, Imported};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Waiting that the sizing allows, as a share of the response time.
const WAIT_SHARE: f64 = 0.01;
/// The least coefficient of variation of a fitted service time.
const MIN_CV: f64 = 0.1;
/// How close to 1 a coefficient of variation must be for an exponential fit.
const EXPONENTIAL_WITHIN: f64 = 0.1;
/// Calls per request on one edge beyond which the edge is refused (each call is a list entry).
pub(super) const MAX_CALLS_PER_REQUEST: f64 = 100.0;
/// Requests in service at one node beyond which it is refused (workers are sized to it).
pub(super) const MAX_ERLANGS: f64 = 100_000.0;

#[derive(Serialize)]
struct Document {
    version: u64,
    duration_s: f64,
    warmup_s: f64,
    seed: u64,
    components: Vec<ComponentDoc>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum ComponentDoc {
    Source {
        id: String,
        kind: &'static str,
        rate_per_s: f64,
        to: String,
    },
    Service {
        id: String,
        kind: &'static str,
        instances: u32,
        concurrency: u32,
        service_time: DistDoc,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        calls: Vec<EdgeDoc>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        routes: Vec<EdgeDoc>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error_rate: Option<f64>,
    },
}

#[derive(Serialize)]
#[serde(untagged)]
enum DistDoc {
    Exponential {
        dist: &'static str,
        mean_ms: f64,
    },
    Lognormal {
        dist: &'static str,
        mean_ms: f64,
        stddev_ms: f64,
    },
}

#[derive(Serialize)]
struct EdgeDoc {
    to: String,
    p: f64,
}

/// `x` to six significant digits: readable, and never a small rate rounded to 0.
fn round(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let decimals = 6 - x.abs().log10().ceil() as i32;
    let scale = 10f64.powi(decimals);
    let rounded = (x * scale).round() / scale;
    if rounded.is_finite() {
        rounded
    } else {
        x
    }
}

/// Erlang C: the probability that a request waits at an M/M/c station offered `a` erlangs.
fn erlang_c(c: u32, a: f64) -> f64 {
    let mut b = 1.0; // Erlang B with 0 servers
    for k in 1..=c {
        b = a * b / (f64::from(k) + a * b);
    }
    let c = f64::from(c);
    c * b / (c - a * (1.0 - b))
}

/// The fewest workers that hold `a` erlangs with a mean wait under [`WAIT_SHARE`] of the
/// service time.
fn workers_for(a: f64) -> u32 {
    let mut c = (a.floor() as u32 + 1).max(1);
    while erlang_c(c, a) / (f64::from(c) - a) > WAIT_SHARE {
        c += 1;
    }
    c
}

/// What one server node served and how long it took.
struct Served<'a> {
    requests: f64,
    failed: f64,
    latency: Latency,
    outgoing: Vec<&'a Edge>,
}

pub(super) fn build(graph: &Graph, options: &ImportOptions) -> Result<Imported, ImportError> {
    let mut notes = Vec::new();
    let live: Vec<&Edge> = graph.edges.iter().filter(|e| e.requests > 0.0).collect();
    for e in graph.edges.iter().filter(|e| e.requests == 0.0) {
        notes.push(format!(
            "{} → {}: no requests in the window, left out",
            e.client, e.server
        ));
    }
    if live.is_empty() {
        return Err(ImportError::NoTraffic);
    }
    let mut served: BTreeMap<&str, Served<'_>> = BTreeMap::new();
    for e in &live {
        let s = served.entry(e.server.as_str()).or_insert(Served {
            requests: 0.0,
            failed: 0.0,
            latency: Latency::default(),
            outgoing: Vec::new(),
        });
        s.requests += e.requests;
        s.failed += e.failed;
        s.latency.add(&e.server_latency);
    }
    // A node without server-side spans (a virtual node: no histogram, or durations of 0) is
    // timed by its callers.
    for (server, s) in served.iter_mut() {
        if s.latency.count > 0.0 && s.latency.sum_s > 0.0 {
            continue;
        }
        let mut seen_by_clients = Latency::default();
        for e in live.iter().filter(|e| e.server == *server) {
            seen_by_clients.add(&e.client_latency);
        }
        if seen_by_clients.count > 0.0 {
            s.latency = seen_by_clients;
        }
        if s.latency.count == 0.0 {
            let line = live
                .iter()
                .find(|e| e.server == *server)
                .map_or(0, |e| e.line);
            return Err(ImportError::MissingLatency {
                line,
                server: server.to_string(),
            });
        }
    }
    let mut sources: Vec<&Edge> = Vec::new();
    for e in &live {
        match served.get_mut(e.client.as_str()) {
            Some(s) => s.outgoing.push(e),
            None => sources.push(e),
        }
    }
    let mut ids: BTreeSet<String> = served.keys().map(|k| k.to_string()).collect();
    let mut components = Vec::new();
    let per_client = |client: &str| sources.iter().filter(|e| e.client == client).count();
    for e in &sources {
        let mut id = if per_client(&e.client) == 1 {
            e.client.clone()
        } else {
            format!("{}-{}", e.client, e.server)
        };
        while ids.contains(&id) {
            id.push_str("-source");
        }
        ids.insert(id.clone());
        components.push(ComponentDoc::Source {
            id,
            kind: "source",
            rate_per_s: round(e.requests / options.window_s),
            to: e.server.clone(),
        });
    }
    for (server, s) in &served {
        components.push(service(server, s, &served, options, &mut notes)?);
    }
    let document = Document {
        version: 2,
        duration_s: options.duration_s,
        warmup_s: options.warmup_s,
        seed: options.seed,
        components,
    };
    let text = sonic_rs::to_string_pretty(&document).expect("a design serialises");
    let design = crate::design::parse(&text).map_err(ImportError::Design)?;
    Ok(Imported {
        document: format!("{text}\n"),
        design,
        notes,
    })
}

/// The time a caller spends on one edge per call: client-side when recorded, else
/// server-side, else the callee's own response time.
fn call_time(e: &Edge, served: &BTreeMap<&str, Served<'_>>) -> Latency {
    if e.client_latency.count > 0.0 {
        e.client_latency
    } else if e.server_latency.count > 0.0 {
        e.server_latency
    } else {
        served
            .get(e.server.as_str())
            .map_or_else(Latency::default, |s| s.latency)
    }
}

fn service(
    id: &str,
    s: &Served<'_>,
    served: &BTreeMap<&str, Served<'_>>,
    options: &ImportOptions,
    notes: &mut Vec<String>,
) -> Result<ComponentDoc, ImportError> {
    let response = s.latency.mean_s().expect("checked: observations");
    let (mut downstream, mut downstream_var, mut survive) = (0.0, 0.0, 1.0);
    let (mut calls, mut routes, mut handed_off) = (Vec::new(), Vec::new(), 0.0);
    for e in &s.outgoing {
        let mut r = e.requests / s.requests;
        // Counters are not all read at one instant: within 0.1 % of a whole number of calls
        // per request is that number.
        if (r - r.round()).abs() < 1e-3 && r.round() >= 1.0 {
            r = r.round();
        }
        if e.connection_type == "messaging_system" {
            handed_off += r;
            routes.push(EdgeDoc {
                to: e.server.clone(),
                p: round(r.min(1.0)),
            });
            continue;
        }
        if r > MAX_CALLS_PER_REQUEST {
            return Err(ImportError::TooManyCalls {
                client: id.to_string(),
                server: e.server.clone(),
                ratio: r,
            });
        }
        let time = call_time(e, served);
        let (mean, var) = (time.mean_s().unwrap_or(0.0), time.variance_s2());
        let (whole, rest) = (r.floor(), r - r.floor());
        downstream += r * mean;
        downstream_var += (whole + rest) * var + rest * (1.0 - rest) * mean * mean;
        let callee_fails = served
            .get(e.server.as_str())
            .map_or(0.0, |c| (c.failed / c.requests).min(1.0));
        survive *= (1.0 - callee_fails).powf(whole) * (1.0 - rest * callee_fails);
        for _ in 0..whole as u64 {
            calls.push(EdgeDoc {
                to: e.server.clone(),
                p: 1.0,
            });
        }
        if rest >= 1e-6 {
            calls.push(EdgeDoc {
                to: e.server.clone(),
                p: round(rest),
            });
        }
        if r > 1.0 {
            notes.push(format!(
                "{id} calls {} {r:.3} times per request: written as {whole} call(s) with p = 1{}",
                e.server,
                if rest >= 1e-6 {
                    format!(" and one with p = {}", round(rest))
                } else {
                    String::new()
                }
            ));
        }
    }
    if handed_off > 1.0 + 1e-9 {
        return Err(ImportError::TooManyMessages {
            client: id.to_string(),
            ratio: handed_off,
        });
    }
    let mut own = response - downstream;
    if response <= 0.0 {
        notes.push(format!(
            "{id}: every response took 0 s; its own time is set to 1 µs"
        ));
        own = 1e-6;
    } else if own < 0.01 * response {
        notes.push(format!(
            "{id}: its calls take {:.3} ms per request, its responses {:.3} ms (parallel calls?); its own time is set to 1 % of its response time",
            downstream * 1e3,
            response * 1e3
        ));
        own = 0.01 * response;
    }
    let own_var = s.latency.variance_s2() - downstream_var;
    let cv = (own_var.max(0.0).sqrt() / own).max(MIN_CV);
    let mean_ms = round(own * 1e3);
    let service_time = if (cv - 1.0).abs() <= EXPONENTIAL_WITHIN {
        DistDoc::Exponential {
            dist: "exponential",
            mean_ms,
        }
    } else {
        DistDoc::Lognormal {
            dist: "lognormal",
            mean_ms,
            stddev_ms: round(cv * own * 1e3),
        }
    };
    let failed = (s.failed / s.requests).min(1.0);
    let error_rate = if survive > 1e-12 {
        (1.0 - (1.0 - failed) / survive).clamp(0.0, 0.999)
    } else {
        0.0
    };
    let offered = s.requests / options.window_s * response;
    if offered.is_nan() || offered > MAX_ERLANGS {
        return Err(ImportError::TooBusy {
            server: id.to_string(),
            erlangs: offered,
        });
    }
    Ok(ComponentDoc::Service {
        id: id.to_string(),
        kind: "service",
        instances: 1,
        concurrency: workers_for(offered),
        service_time,
        calls,
        routes,
        error_rate: (error_rate >= 1e-6).then(|| round(error_rate)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_follow_little_and_erlang_c() {
        // One erlang: two workers wait 1/3 of the time, 1/3 × 1/(2 − 1) = 33 % > 1 %.
        assert!((erlang_c(2, 1.0) - 1.0 / 3.0).abs() < 1e-12);
        let c = workers_for(1.0);
        assert!(erlang_c(c, 1.0) / (f64::from(c) - 1.0) <= WAIT_SHARE);
        assert!(erlang_c(c - 1, 1.0) / (f64::from(c - 1) - 1.0) > WAIT_SHARE);
        assert_eq!(workers_for(0.0), 1);
        assert!(workers_for(50.0) > 50);
    }
}
