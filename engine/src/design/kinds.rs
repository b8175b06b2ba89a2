//! The component kinds beyond plain services: `external`, `cache` / `cdn`, `database`, `queue`
//! and `load_balancer`. Each becomes a [`Station`] with a [`Behavior`] (or a [`Balancer`]).

use super::cache::CacheModel;
use super::overload::{self, Discipline};
use super::{parse_dist, Checker, Fanout, Kind, Station};
use crate::engine::dist::Dist;
use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

/// What a station does with a request besides serving it.
#[derive(Debug, Clone, PartialEq)]
pub enum Behavior {
    /// Serve for `service_time`, then route / call.
    Service,
    /// A hit is served in `hit` and completes; a miss takes `miss` and goes to `miss_to`.
    Cache {
        /// Probability of a hit: given, or for a cache with a `model` the estimate of
        /// [`CacheModel::estimated_hit_ratio`] (sizing only; the run decides hits by key).
        hit_ratio: f64,
        /// Capacity, TTL, eviction and key space, when hits emerge from the traffic.
        model: Option<CacheModel>,
        /// Time of a hit.
        hit: Dist,
        /// Time of a miss (before it goes downstream).
        miss: Dist,
        /// Where misses go (the origin), if anywhere.
        miss_to: Option<usize>,
    },
    /// Reads on any instance (primary and replicas), writes on the primary (instance 0).
    Database {
        /// Time of a read.
        read: Dist,
        /// Time of a write.
        write: Dist,
        /// Probability an operation is a write.
        write_ratio: f64,
    },
    /// Asynchronous hand-off: the producer's request completes on enqueue; consumers process
    /// the message in the background and follow the queue's routes.
    Queue,
}

/// How a load balancer picks a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// In turn.
    RoundRobin,
    /// Uniformly at random.
    Random,
    /// The target with the fewest requests in it (busy + waiting).
    LeastConnections,
    /// At random, proportionally to `weights`.
    Weighted,
}

/// A `load_balancer`: forwards each request at once to one of its targets.
#[derive(Debug, Clone, PartialEq)]
pub struct Balancer {
    /// Target component indexes.
    pub targets: Vec<usize>,
    /// Weights (for `Weighted`), one per target.
    pub weights: Vec<f64>,
    /// The strategy.
    pub strategy: Strategy,
    /// Latency of the hop to the target.
    pub latency: Option<Dist>,
}

type Target<'a> = super::Target<'a>;

fn station(
    instances: u32,
    concurrency: u32,
    service_time: Dist,
    queue_capacity: Option<usize>,
) -> Station {
    Station {
        instances,
        concurrency,
        service_time,
        queue_capacity,
        routes: Vec::new(),
        calls: Vec::new(),
        fanout: Fanout::Sequential,
        behavior: Behavior::Service,
        error_rate: 0.0,
        timeout: None,
        autoscale: None,
        contention: None,
        discipline: Discipline::Fifo,
    }
}

fn dist_field(
    c: &mut Checker,
    item: &Value,
    path: &str,
    key: &str,
    default: Option<Dist>,
) -> Option<Dist> {
    match item.get(key) {
        Some(d) => parse_dist(c, d, &format!("{path}.{key}")),
        None if default.is_some() => default,
        None => {
            c.problem(
                &format!("{path}.{key}"),
                "missing (required): a distribution",
            );
            None
        }
    }
}

fn queue_capacity(c: &mut Checker, item: &Value, path: &str, key: &str) -> Option<usize> {
    item.get(key)
        .filter(|v| !v.is_null())
        .map(|_| c.integer(item, path, key, 0, 0) as usize)
}

/// Parses a component of one of the kinds of this module; `None` if `kind` is not one of them.
pub(super) fn parse(
    c: &mut Checker,
    kind: &str,
    item: &Value,
    path: &str,
    target: &Target<'_>,
    classes: &[String],
) -> Option<Option<Kind>> {
    let allow = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut all = vec!["id", "kind", "name"];
        all.extend_from_slice(extra);
        all
    };
    Some(match kind {
        "external" => {
            c.unknown_fields(
                item,
                path,
                &allow(&["latency", "max_concurrency", "error_rate", "queue_capacity"]),
            );
            let latency = dist_field(c, item, path, "latency", None);
            let concurrency = c.integer(item, path, "max_concurrency", 10_000, 1) as u32;
            let error_rate = c.number(
                item,
                path,
                "error_rate",
                Some(0.0),
                ("a probability in [0, 1]", |p| (0.0..=1.0).contains(&p)),
            );
            let cap = queue_capacity(c, item, path, "queue_capacity");
            latency.map(|d| {
                let mut s = station(1, concurrency, d, cap);
                s.error_rate = error_rate;
                Kind::Station(s)
            })
        }
        "cache" | "cdn" => {
            c.unknown_fields(
                item,
                path,
                &allow(&[
                    "instances",
                    "concurrency",
                    "hit_ratio",
                    "hit_time",
                    "miss_time",
                    "miss_to",
                    "queue_capacity",
                    "capacity",
                    "ttl_s",
                    "eviction",
                    "keys",
                ]),
            );
            let model = super::cache::parse(c, item, path);
            let instances = c.integer(item, path, "instances", 1, 1) as u32;
            let concurrency = c.integer(
                item,
                path,
                "concurrency",
                if kind == "cdn" { 10_000 } else { 1_000 },
                1,
            ) as u32;
            let hit_ratio = match &model {
                Some(m) => m.estimated_hit_ratio(),
                None if item.get("capacity").is_some() => 0.0,
                None => c.number(
                    item,
                    path,
                    "hit_ratio",
                    None,
                    ("a probability in [0, 1]", |p| (0.0..=1.0).contains(&p)),
                ),
            };
            let hit = dist_field(c, item, path, "hit_time", None);
            let miss = dist_field(c, item, path, "miss_time", Some(Dist::Constant(0.0)));
            let miss_to = item
                .get("miss_to")
                .and_then(|_| target(c, item, path, "miss_to"));
            let cap = queue_capacity(c, item, path, "queue_capacity");
            match (hit, miss) {
                (Some(hit), Some(miss)) => {
                    let mut s = station(instances, concurrency, hit.clone(), cap);
                    s.behavior = Behavior::Cache {
                        hit_ratio,
                        model,
                        hit,
                        miss,
                        miss_to,
                    };
                    Some(Kind::Station(s))
                }
                _ => None,
            }
        }
        "database" => {
            c.unknown_fields(
                item,
                path,
                &allow(&[
                    "replicas",
                    "pool_size",
                    "read_time",
                    "write_time",
                    "write_ratio",
                    "queue_capacity",
                    "contention",
                    "discipline",
                    "codel",
                ]),
            );
            let (contention, discipline) = overload::parse(c, item, path);
            let replicas = c.integer(item, path, "replicas", 0, 0) as u32;
            let pool = c.integer(item, path, "pool_size", 10, 1) as u32;
            let read = dist_field(c, item, path, "read_time", None);
            let write = dist_field(c, item, path, "write_time", None);
            let write_ratio = c.number(
                item,
                path,
                "write_ratio",
                Some(0.0),
                ("a probability in [0, 1]", |p| (0.0..=1.0).contains(&p)),
            );
            let cap = queue_capacity(c, item, path, "queue_capacity");
            match (read, write) {
                (Some(read), Some(write)) => {
                    let mut s = station(1 + replicas, pool, read.clone(), cap);
                    s.contention = contention;
                    s.discipline = discipline;
                    s.behavior = Behavior::Database {
                        read,
                        write,
                        write_ratio,
                    };
                    Some(Kind::Station(s))
                }
                _ => None,
            }
        }
        "queue" => {
            c.unknown_fields(
                item,
                path,
                &allow(&["consumers", "consumer_time", "capacity", "routes"]),
            );
            let consumers = c.integer(item, path, "consumers", 1, 1) as u32;
            let work = dist_field(c, item, path, "consumer_time", None);
            let cap = queue_capacity(c, item, path, "capacity");
            let (routes, total) = super::edges(c, item, path, "routes", target, classes);
            if total > 1.0 + 1e-9 {
                c.problem(
                    &format!("{path}.routes"),
                    format!("probabilities add up to {total}, more than 1"),
                );
            }
            work.map(|d| {
                let mut s = station(1, consumers, d, cap);
                s.behavior = Behavior::Queue;
                s.routes = routes;
                Kind::Station(s)
            })
        }
        "load_balancer" => {
            c.unknown_fields(
                item,
                path,
                &allow(&["targets", "strategy", "weights", "latency"]),
            );
            let strategy = match item.get("strategy").map(|v| v.as_str()) {
                None | Some(Some("round_robin")) => Strategy::RoundRobin,
                Some(Some("random")) => Strategy::Random,
                Some(Some("least_connections")) => Strategy::LeastConnections,
                Some(Some("weighted")) => Strategy::Weighted,
                _ => {
                    c.problem(
                        &format!("{path}.strategy"),
                        "must be round_robin, random, least_connections or weighted",
                    );
                    Strategy::RoundRobin
                }
            };
            let mut targets = Vec::new();
            match item
                .get("targets")
                .and_then(|t| t.as_array())
                .filter(|l| !l.is_empty())
            {
                None => c.problem(
                    &format!("{path}.targets"),
                    "missing (required): a non-empty array of component ids",
                ),
                Some(list) => {
                    for (i, t) in list.iter().enumerate() {
                        let holder = sonic_rs::json!({ "to": t });
                        if let Some(to) = target(c, &holder, &format!("{path}.targets[{i}]"), "to")
                        {
                            targets.push(to);
                        }
                    }
                }
            }
            let mut weights = vec![1.0; targets.len()];
            if let Some(w) = item.get("weights") {
                match w.as_array() {
                    Some(list)
                        if list.len() == targets.len()
                            && list.iter().all(|x| x.as_f64().is_some_and(|x| x > 0.0)) =>
                    {
                        weights = list.iter().filter_map(|x| x.as_f64()).collect();
                    }
                    _ => c.problem(
                        &format!("{path}.weights"),
                        "must be one positive number per target",
                    ),
                }
            } else if strategy == Strategy::Weighted {
                c.problem(
                    &format!("{path}.weights"),
                    "missing (required by strategy weighted)",
                );
            }
            let latency = item
                .get("latency")
                .and_then(|d| parse_dist(c, d, &format!("{path}.latency")));
            Some(Kind::Balancer(Balancer {
                targets,
                weights,
                strategy,
                latency,
            }))
        }
        _ => return None,
    })
}

impl Station {
    /// The mean service time over the behaviour's mix (for sizing).
    pub fn mean_service(&self) -> f64 {
        match &self.behavior {
            Behavior::Cache {
                hit_ratio,
                hit,
                miss,
                ..
            } => hit_ratio * hit.mean() + (1.0 - hit_ratio) * miss.mean(),
            Behavior::Database {
                read,
                write,
                write_ratio,
            } => write_ratio * write.mean() + (1.0 - write_ratio) * read.mean(),
            Behavior::Service | Behavior::Queue => self.service_time.mean(),
        }
    }
}
