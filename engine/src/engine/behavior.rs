//! What the special component kinds do: load balancers pick a target, queues complete the
//! producer's request and process the message in the background, databases send writes to the
//! primary, caches serve hits and pass misses on, and any station may fail a request.

use super::dist::Rng;
use super::{Request, Simulation};
use crate::design::{Behavior, Kind, Strategy};

/// What happens to a request once its service (and calls) at a station are done.
pub(super) enum After {
    /// Follow the station's routes.
    Route,
    /// Go to this component (a cache miss to its origin).
    To(usize),
    /// Stop here successfully (a cache hit).
    Complete,
    /// Stop here with an error.
    Fail,
}

/// An operation flag kept on the request: a cache hit, or a database write.
pub(super) const OP_SPECIAL: u8 = 1;

impl Simulation {
    /// Handles arrivals at balancers and queues; false when the request enters normally.
    pub(super) fn enter_special(&mut self, component: usize, request: usize) -> bool {
        match &self.design.components[component].kind {
            Kind::Balancer(b) => {
                // Health checks: targets with no instance up are skipped while others are up.
                let healthy: Vec<usize> = (0..b.targets.len())
                    .filter(|&k| {
                        self.stations[b.targets[k]]
                            .as_ref()
                            .is_none_or(|s| s.capacity_workers() > 0)
                    })
                    .collect();
                let candidates: Vec<usize> = if healthy.is_empty() {
                    (0..b.targets.len()).collect()
                } else {
                    healthy
                };
                let pick = match b.strategy {
                    Strategy::RoundRobin => {
                        let n = self.balancer_turn[component];
                        self.balancer_turn[component] = n.wrapping_add(1);
                        candidates[n % candidates.len()]
                    }
                    Strategy::Random => {
                        candidates[((self.routing_rng.uniform() * candidates.len() as f64)
                            as usize)
                            .min(candidates.len() - 1)]
                    }
                    Strategy::Weighted => {
                        let weights: Vec<f64> = candidates.iter().map(|&k| b.weights[k]).collect();
                        candidates[weighted(&weights, &mut self.routing_rng)]
                    }
                    Strategy::LeastConnections => {
                        let load = |t: usize| {
                            self.stations[t]
                                .as_ref()
                                .map_or(0, |s| s.busy as usize + s.waiting)
                        };
                        candidates
                            .iter()
                            .copied()
                            .min_by_key(|&k| load(b.targets[k]))
                            .unwrap_or(0)
                    }
                };
                let to = b.targets[pick.min(b.targets.len() - 1)];
                let latency = b.latency.as_ref().map(|d| d.sample(&mut self.routing_rng));
                self.stats[component].arrivals += 1;
                self.stats[component].complete(0.0, 0.0);
                self.send(to, request, latency);
                true
            }
            Kind::Station(s)
                if matches!(s.behavior, Behavior::Queue) && !self.slab[request].background =>
            {
                // The producer is answered on enqueue; the message lives on as a background
                // request that consumers process.
                let r = self.slab[request];
                let message = self.alloc(Request {
                    background: true,
                    frame: None,
                    ..r
                });
                self.complete(request);
                self.enter(component, message);
                true
            }
            _ => false,
        }
    }

    /// Marks the request's operation (cache hit, database write) and picks the instance.
    pub(super) fn pick_instance(&mut self, component: usize, request: usize) -> Option<usize> {
        let Kind::Station(s) = &self.design.components[component].kind else {
            return None;
        };
        let op = match &s.behavior {
            Behavior::Cache { model: Some(_), .. } => {
                // Hits and misses follow the keys held; no draw of the routing stream.
                let cache = self.stations[component].as_mut()?.cache.as_mut()?;
                let key = cache.draw_key();
                self.slab[request].key = key;
                cache.lookup(key, self.now)
            }
            Behavior::Cache { hit_ratio, .. } => self.routing_rng.uniform() < *hit_ratio,
            Behavior::Database { write_ratio, .. } => self.routing_rng.uniform() < *write_ratio,
            _ => false,
        };
        self.slab[request].op = if op { OP_SPECIAL } else { 0 };
        let is_write = op && matches!(s.behavior, Behavior::Database { .. });
        let st = self.stations[component].as_mut()?;
        if is_write {
            return (!st.down[0]).then_some(0);
        }
        // Round robin over the instances that are in service and up.
        for _ in 0..st.active {
            let i = st.next_instance % st.active;
            st.next_instance = (i + 1) % st.active;
            if !st.down[i] {
                return Some(i);
            }
        }
        None
    }

    /// Samples the service time of `request` at `component`, starting on a worker of
    /// `instance` (`newcomer`: not yet counted among its busy workers), stretched by the
    /// station's contention with the requests in service there.
    pub(super) fn service_time(
        &mut self,
        component: usize,
        request: usize,
        instance: usize,
        newcomer: bool,
    ) -> f64 {
        let special = self.slab[request].op == OP_SPECIAL;
        let Kind::Station(s) = &self.design.components[component].kind else {
            return 0.0;
        };
        let Some(st) = self.stations[component].as_mut() else {
            return 0.0;
        };
        let base = match &s.behavior {
            Behavior::Cache { hit, miss, .. } => {
                if special { hit } else { miss }.sample(&mut st.rng)
            }
            Behavior::Database { read, write, .. } => {
                if special { write } else { read }.sample(&mut st.rng)
            }
            Behavior::Service | Behavior::Queue => s.service_time.sample(&mut st.rng),
        };
        let time = base + st.extra_latency;
        match &s.contention {
            None => time,
            Some(c) => time * c.factor(st.instances[instance].busy + u32::from(newcomer)),
        }
    }

    /// Decides where the request goes after its service at `component`.
    pub(super) fn after_service(&mut self, component: usize, request: usize) -> After {
        let Kind::Station(s) = &self.design.components[component].kind else {
            return After::Route;
        };
        let error_rate = self.stations[component]
            .as_ref()
            .and_then(|st| st.error_override)
            .unwrap_or(s.error_rate);
        if error_rate > 0.0 && self.routing_rng.uniform() < error_rate {
            return After::Fail;
        }
        match &s.behavior {
            Behavior::Cache { miss_to, model, .. } => {
                if self.slab[request].op == OP_SPECIAL {
                    return After::Complete;
                }
                let miss_to = *miss_to;
                if model.is_some() {
                    // Cache-aside: the origin's answer fills the entry; without an origin the
                    // miss time includes fetching it, so the entry is filled now.
                    match miss_to {
                        Some(_) => self.slab[request].fill = component as u32,
                        None => self.fill_cache(component, self.slab[request].key),
                    }
                }
                miss_to.map_or(After::Complete, After::To)
            }
            _ => After::Route,
        }
    }

    /// Fills `key` into the capacity cache `component`.
    pub(super) fn fill_cache(&mut self, component: usize, key: u32) {
        let now = self.now;
        if let Some(cache) = self.stations[component]
            .as_mut()
            .and_then(|st| st.cache.as_mut())
        {
            cache.fill(key, now);
        }
    }
}

fn weighted(weights: &[f64], rng: &mut Rng) -> usize {
    let total: f64 = weights.iter().sum();
    let mut u = rng.uniform() * total;
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i;
        }
        u -= w;
    }
    weights.len().saturating_sub(1)
}
