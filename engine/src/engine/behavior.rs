//! The engine's side of the component kinds (`kinds`): it asks the kind of the component a
//! request is at what to do (on arrival, which operation, how long, where next) and carries
//! the answer out. Any station may also fail a request (its error rate, or a fault's).

use super::kinds::{After, Arrival, Ctx, Operation, OP_SPECIAL};
use super::{Request, Simulation};
use crate::design::Kind;

impl Simulation {
    /// The kind's decision about `request` arriving at `component`, carried out; false when
    /// the request is served there as at any station.
    pub(super) fn enter_special(&mut self, component: usize, request: usize) -> bool {
        let now = self.now;
        let mut ctx = Ctx {
            now,
            component,
            request: &mut self.slab[request],
            routing: &mut self.routing_rng,
            stations: &mut self.stations,
        };
        let arrival = match &self.design.components[component].kind {
            Kind::Station(s) => s
                .behavior
                .arrive(&mut ctx, &mut self.kind_states[component]),
            Kind::Balancer(b) => b.arrive(&mut ctx, &mut self.balancer_turn[component]),
            Kind::Source(_) => Arrival::Serve,
        };
        match arrival {
            Arrival::Serve => return false,
            Arrival::Forward { to, latency } => {
                self.stats[component].arrivals += 1;
                self.stats[component].complete(0.0, 0.0);
                self.send(to, request, latency);
            }
            Arrival::Reject => {
                self.stats[component].arrivals += 1;
                self.fail(component, request);
            }
            Arrival::Detach => {
                // The sender is answered now; the message lives on as a background request.
                let r = self.slab[request];
                let message = self.alloc(Request {
                    background: true,
                    frame: None,
                    ..r
                });
                self.complete(request);
                self.enter(component, message);
            }
        }
        true
    }

    /// Marks the request's operation (cache hit, database write) and picks the instance.
    pub(super) fn pick_instance(&mut self, component: usize, request: usize) -> Option<usize> {
        let Kind::Station(s) = &self.design.components[component].kind else {
            return None;
        };
        let mut ctx = Ctx {
            now: self.now,
            component,
            request: &mut self.slab[request],
            routing: &mut self.routing_rng,
            stations: &mut self.stations,
        };
        let operation = s.behavior.operation(&mut ctx);
        ctx.request.op = match operation {
            Operation::Plain => 0,
            Operation::Special | Operation::SpecialOnPrimary => OP_SPECIAL,
        };
        let st = self.stations[component].as_mut()?;
        if let Operation::SpecialOnPrimary = operation {
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
        let base = s.behavior.service_time(s, special).sample(&mut st.rng);
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
        let mut ctx = Ctx {
            now: self.now,
            component,
            request: &mut self.slab[request],
            routing: &mut self.routing_rng,
            stations: &mut self.stations,
        };
        s.behavior.after_service(&mut ctx)
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
