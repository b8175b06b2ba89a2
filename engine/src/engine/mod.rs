//! The discrete-event engine: no I/O, deterministic for a seed, runnable in slices.
//!
//! State changes only at events, kept in a heap ordered by (time, sequence) so equal times
//! keep their scheduling order (`events`). Requests live in a slab reused as they finish, so
//! memory follows the number of requests in the system, not the length of the run. Statistics
//! are reset when the warm-up ends; time-weighted ones (busy workers, queue length) integrate
//! between events; response times are counted in HDR buckets (`histogram`).
//!
//! Schema version 2 lives in its own modules: `clients` (closed-loop users, timeouts, retries,
//! retry budgets), `goodput` (the series and the metastability verdict), `cache` (capacity,
//! TTL, eviction, key popularity) and `overload` (LIFO, CoDel); contention stretches service
//! times in `behavior`. Each reads its settings from the design when it acts, so a change to
//! the design (a later what-if) can apply from the next slice on.

mod arrivals;
mod behavior;
mod cache;
mod calls;
pub mod changes;
mod clients;
mod cost;
mod dynamics;
mod events;
mod goodput;
mod histogram;
pub mod kinds;
mod overload;
mod report;
mod whatif;

pub use cache::CacheReport;
pub use clients::ClientReport;
pub use cost::{ComponentCost, CostReport};
pub use dynamics::TimelineEntry;
pub use goodput::{GoodputPoint, Metastability};
pub use whatif::ApplyError;
pub mod dist;
pub mod stats;

use crate::design::{Design, Discipline, Kind};
use dist::Rng;
use stats::ComponentStats;
use std::collections::VecDeque;

#[derive(Debug, Clone, Copy)]
enum EventKind {
    /// A worker of `component`, instance `instance`, finishes `request`.
    Depart {
        component: u32,
        instance: u32,
        request: u32,
    },
    /// Request `request` arrives at `component` after crossing an edge with latency.
    Enter { component: u32, request: u32 },
    /// A call's answer (success or failure) reaches its caller's frame after the way back.
    Return { call: calls::CallRef, failed: bool },
    /// A scheduled fault starts (`start`) or ends.
    Fault { index: u32, start: bool },
    /// An autoscaled station measures its utilisation.
    ScaleTick { component: u32 },
    /// Started instances join an autoscaled station.
    ScaleUp { component: u32, instances: u32 },
    /// A call's timeout fires (ignored if that attempt has answered).
    CallTimeout { call: calls::CallRef },
    /// A failed call is tried again.
    Retry { frame: u32, call: u32 },
    /// A client gives up on attempt `attempt` of its request `slot` (ignored if answered).
    ClientTimeout { slot: u32, attempt: u32 },
    /// A client's backoff has passed: its request `slot` is tried again.
    ClientRetry { slot: u32 },
    /// A closed-loop user of `source` has thought and sends its next request.
    UserWakes { source: u32 },
    /// The warm-up ends: statistics restart.
    WarmupEnd,
}

/// Event payloads hold indexes as `u32` to keep heap entries small (the heap moves them a lot).
fn id(i: usize) -> u32 {
    i as u32
}

#[derive(Debug, Clone, Copy)]
struct Request {
    /// When it left its source (end-to-end latency).
    born: f64,
    /// When it entered its current component.
    entered: f64,
    /// When it started service there.
    started: f64,
    /// The call frame (and which of its caller's calls) this request answers when its chain
    /// completes: set on a call's child request.
    frame: Option<calls::CallRef>,
    /// Its request class (index in the design's classes).
    class: Option<usize>,
    /// The operation at its current station (cache hit, database write): `kinds::OP_SPECIAL`.
    op: u8,
    /// A queue's message processed after the producer was answered: not counted end to end.
    background: bool,
    /// The client request this is an attempt of (`clients::NONE` for version-1 sources).
    origin: u32,
    /// Which attempt of that client request it is.
    attempt: u32,
    /// The key it looks up at a cache with a capacity.
    key: u32,
    /// The cache its answer fills (a miss sent on to the origin), or `clients::NONE`.
    fill: u32,
}

struct Instance {
    busy: u32,
    waiting: VecDeque<usize>,
    /// When the waiting room last went from empty to not empty (CoDel).
    nonempty_since: f64,
}

struct StationState {
    instances: Vec<Instance>,
    /// Busy workers over all instances.
    busy: u32,
    /// Waiting requests over all instances.
    waiting: usize,
    next_instance: usize,
    concurrency: u32,
    capacity: Option<usize>,
    rng: Rng,
    /// Instances in service (autoscaling); `instances` is sized for the maximum.
    active: usize,
    /// Instances down (crash faults).
    down: Vec<bool>,
    /// Whether any instance has ever been down (skips the scan of `down` otherwise).
    degraded: bool,
    /// Whether the station autoscales (skips its bookkeeping otherwise).
    autoscaled: bool,
    /// FIFO with no timeout and no workers to retire: freed workers take the next waiting
    /// request on `next_waiting`'s lean path.
    fifo_fast: bool,
    /// Added to every service time (latency faults).
    extra_latency: f64,
    /// Replaces the error rate while an error-rate fault lasts.
    error_override: Option<f64>,
    /// Autoscaling bookkeeping.
    scale: dynamics::ScaleState,
    /// Entries of a cache with a capacity.
    cache: Option<Box<cache::CacheState>>,
}

impl StationState {
    /// Workers able to take requests now.
    fn capacity_workers(&self) -> u32 {
        if !self.degraded {
            return self.active as u32 * self.concurrency;
        }
        let up = (0..self.active).filter(|&i| !self.down[i]).count() as u32;
        up * self.concurrency
    }
}

/// A running simulation.
pub struct Simulation {
    design: Design,
    now: f64,
    seq: u64,
    events: events::EventQueue,
    /// (next arrival key, source component) per source.
    arrivals: Vec<(u128, usize)>,
    slab: Vec<Request>,
    free: Vec<usize>,
    balancer_turn: Vec<usize>,
    /// What each station's kind remembers between requests (`KindState::None` elsewhere).
    kind_states: Vec<kinds::KindState>,
    frames: calls::Frames,
    dynamics: dynamics::Dynamics,
    stations: Vec<Option<StationState>>,
    source_rng: Vec<Rng>,
    routing_rng: Rng,
    stats: Vec<ComponentStats>,
    end_to_end: ComponentStats,
    class_stats: Vec<ComponentStats>,
    /// The clients of version-2 sources (`None` for a version-1 design).
    clients: Option<clients::Clients>,
    events_processed: u64,
    measuring_since: f64,
    finished: bool,
    whatif: whatif::WhatIf,
}

impl Simulation {
    /// Prepares a run of `design` (nothing happens until [`Simulation::advance_to`]).
    pub fn new(design: Design) -> Simulation {
        let mut seeds = Rng::new(design.seed);
        let mut stations = Vec::new();
        let mut source_rng = Vec::new();
        for comp in &design.components {
            source_rng.push(Rng::new(seeds.next_u64()));
            stations.push(match &comp.kind {
                Kind::Station(s) => Some(StationState {
                    instances: (0..s
                        .autoscale
                        .as_ref()
                        .map_or(s.instances, |a| a.max.max(s.instances)))
                        .map(|_| Instance {
                            busy: 0,
                            waiting: VecDeque::new(),
                            nonempty_since: 0.0,
                        })
                        .collect(),
                    busy: 0,
                    waiting: 0,
                    next_instance: 0,
                    concurrency: s.concurrency,
                    capacity: s.queue_capacity,
                    rng: Rng::new(seeds.next_u64()),
                    active: s.instances as usize,
                    down: vec![
                        false;
                        s.autoscale
                            .as_ref()
                            .map_or(s.instances, |a| a.max.max(s.instances))
                            as usize
                    ],
                    degraded: false,
                    autoscaled: s.autoscale.is_some(),
                    fifo_fast: s.timeout.is_none() && s.discipline == Discipline::Fifo,
                    extra_latency: 0.0,
                    error_override: None,
                    scale: dynamics::ScaleState::default(),
                    cache: cache_model(s).map(|m| {
                        // Its own stream: drawing keys moves no draw of the version-1 streams.
                        let seed = design.seed ^ (0x6b65_7973 << 20) ^ stations_len(&stations);
                        Box::new(cache::CacheState::new(m, seed))
                    }),
                }),
                Kind::Source(_) | Kind::Balancer(_) => None,
            });
        }
        let stats = design
            .components
            .iter()
            .map(|c| match &c.kind {
                Kind::Station(s) => ComponentStats::new(f64::from(s.instances * s.concurrency)),
                Kind::Source(_) | Kind::Balancer(_) => ComponentStats::new(0.0),
            })
            .collect();
        let kind_states = design
            .components
            .iter()
            .map(|c| match &c.kind {
                Kind::Station(s) => s.behavior.new_state(),
                Kind::Source(_) | Kind::Balancer(_) => kinds::KindState::None,
            })
            .collect();
        let mut sim = Simulation {
            kind_states,
            routing_rng: Rng::new(seeds.next_u64()),
            design,
            now: 0.0,
            seq: 0,
            events: events::EventQueue::default(),
            arrivals: Vec::new(),
            slab: Vec::new(),
            free: Vec::new(),
            balancer_turn: Vec::new(),
            frames: calls::Frames::default(),
            dynamics: dynamics::Dynamics::default(),
            stations,
            source_rng,
            stats,
            end_to_end: ComponentStats::new(0.0),
            class_stats: Vec::new(),
            clients: None,
            events_processed: 0,
            measuring_since: 0.0,
            finished: false,
            whatif: whatif::WhatIf::default(),
        };
        sim.balancer_turn = vec![0; sim.design.components.len()];
        sim.class_stats = sim
            .design
            .classes
            .iter()
            .map(|_| ComponentStats::new(0.0))
            .collect();
        for i in 0..sim.design.components.len() {
            if let Kind::Source(src) = &sim.design.components[i].kind {
                if src.closed.is_some() {
                    continue; // its users wake up from the event heap
                }
                let first = arrivals::next_arrival(src, 0.0, &mut sim.source_rng[i]);
                let key = sim.key(first);
                sim.arrivals.push((key, i));
            }
        }
        if sim.design.version >= 2 {
            let (n, window) = (sim.design.components.len(), sim.design.goodput.window);
            sim.clients = Some(clients::Clients::new(sim.design.seed, n, window));
            sim.start_users();
        }
        sim.schedule_dynamics();
        if sim.design.warmup > 0.0 {
            sim.schedule(sim.design.warmup, EventKind::WarmupEnd);
        }
        sim
    }

    fn schedule(&mut self, time: f64, kind: EventKind) {
        let key = self.key(time);
        self.events.push(key, kind);
    }

    /// The ordering key of something happening at `time`, scheduled now.
    fn key(&mut self, time: f64) -> u128 {
        self.seq += 1;
        // `max(0.0)` also turns -0.0 into +0.0, whose bits sort first.
        let bits = time.max(0.0).to_bits();
        (u128::from(bits) << 64) | u128::from(self.seq)
    }

    /// The simulated time reached.
    pub fn now(&self) -> f64 {
        self.now
    }

    /// Events processed so far.
    pub fn events_processed(&self) -> u64 {
        self.events_processed
    }

    /// Whether the run has ended (duration reached, or `max_requests` completed).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Runs events up to simulated time `t` (or the end of the run), then returns, so a caller
    /// can interleave the simulation with other work.
    pub fn advance_to(&mut self, t: f64) {
        let until = t.min(self.design.duration);
        // A replay's recorded changes (`whatif`); a run without them pays this one check.
        if !self.whatif.scripted_is_empty() && !self.replay_changes_until(until) {
            return;
        }
        if !self.run_events(until) {
            return;
        }
        self.advance_clock(until);
        if until >= self.design.duration {
            self.finished = true;
        }
    }

    /// Runs the events up to `until`; false when the run finished on the way.
    fn run_events(&mut self, until: f64) -> bool {
        loop {
            // Each source has exactly one pending arrival: they wait beside the heap (a short
            // scan) instead of in it, which saves a push and a pop per request.
            let next_arrival = self
                .arrivals
                .iter()
                .enumerate()
                .min_by_key(|(_, (key, _))| *key)
                .map(|(k, (key, _))| (k, *key));
            let next_event = self.events.first_key();
            let key = match (next_arrival, next_event) {
                (Some((_, a)), Some(e)) => a.min(e),
                (Some((_, a)), None) => a,
                (None, Some(e)) => e,
                (None, None) => break,
            };
            let time = f64::from_bits((key >> 64) as u64);
            if time > until {
                break;
            }
            self.advance_clock(time);
            self.events_processed += 1;
            match next_arrival {
                Some((slot, a)) if a == key => self.arrive(slot),
                _ => {
                    let Some(event) = self.events.pop() else {
                        break;
                    };
                    self.handle(event);
                }
            }
            if self.finished {
                return false;
            }
        }
        true
    }

    /// Runs to the end.
    pub fn run(&mut self) {
        self.advance_to(f64::INFINITY);
    }

    fn advance_clock(&mut self, to: f64) {
        if to > self.now {
            self.now = to;
        }
    }

    /// Integrates component `c`'s busy workers and queue length up to now, before they change.
    fn touch(&mut self, c: usize) {
        if let Some(st) = self.stations[c].as_mut() {
            let capacity = f64::from(st.capacity_workers());
            self.stats[c].integrate_to(self.now, f64::from(st.busy), st.waiting as f64, capacity);
            if st.autoscaled {
                st.scale
                    .integrate_to(self.now, f64::from(st.busy), capacity);
            }
        }
    }

    /// The source in arrival slot `slot` emits a request and draws its next arrival.
    fn arrive(&mut self, slot: usize) {
        let source = self.arrivals[slot].1;
        let Kind::Source(src) = &self.design.components[source].kind else {
            return;
        };
        let to = src.to;
        let next = arrivals::next_arrival(src, self.now, &mut self.source_rng[source]);
        let class = pick_class(&src.classes, &mut self.source_rng[source]);
        let client = src.client.is_some();
        self.arrivals[slot].0 = self.key(next);
        if client {
            self.client_request(source, false, class);
            return;
        }
        self.stats[source].arrivals += 1;
        let request = self.alloc(Request {
            born: self.now,
            entered: self.now,
            started: self.now,
            frame: None,
            class,
            op: 0,
            background: false,
            origin: clients::NONE,
            attempt: 0,
            key: clients::NONE,
            fill: clients::NONE,
        });
        self.end_to_end.arrivals += 1;
        self.enter(to, request);
    }

    fn handle(&mut self, kind: EventKind) {
        match kind {
            EventKind::Depart {
                component,
                instance,
                request,
            } => self.depart(component as usize, instance as usize, request as usize),
            EventKind::Enter { component, request } => {
                self.enter(component as usize, request as usize)
            }
            EventKind::Return { call, failed } => self.call_returned(call, failed),
            EventKind::Fault { index, start } => self.fault(index as usize, start),
            EventKind::ScaleTick { component } => self.scale_tick(component as usize),
            EventKind::ScaleUp {
                component,
                instances,
            } => self.scale_up(component as usize, instances as usize),
            EventKind::CallTimeout { call } => self.call_returned(call, true),
            EventKind::Retry { frame, call } => self.retry(frame as usize, call as usize),
            EventKind::ClientTimeout { slot, attempt } => {
                self.client_timeout(slot as usize, attempt)
            }
            EventKind::ClientRetry { slot } => self.client_retry(slot as usize),
            EventKind::UserWakes { source } => self.user_wakes(source as usize),
            EventKind::WarmupEnd => {
                if let Some(c) = self.clients.as_mut() {
                    c.reset(self.now);
                }
                for st in self.stations.iter_mut().flatten() {
                    if let Some(cache) = st.cache.as_mut() {
                        cache.reset();
                    }
                }
                for s in &mut self.stats {
                    s.reset(self.now);
                }
                self.end_to_end.reset(self.now);
                for s in &mut self.class_stats {
                    s.reset(self.now);
                }
                self.measuring_since = self.now;
            }
        }
    }

    fn alloc(&mut self, r: Request) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.slab[i] = r;
                i
            }
            None => {
                self.slab.push(r);
                self.slab.len() - 1
            }
        }
    }

    fn enter(&mut self, component: usize, request: usize) {
        self.slab[request].entered = self.now;
        if self.enter_special(component, request) {
            return;
        }
        self.stats[component].arrivals += 1;
        self.touch(component);
        let Some(i) = self.pick_instance(component, request) else {
            // Every instance is down or scaled away: the request fails here.
            self.fail(component, request);
            return;
        };
        let free_worker = self.stations[component]
            .as_ref()
            .is_some_and(|st| st.instances[i].busy < st.concurrency);
        let service = if free_worker {
            self.service_time(component, request, i, true)
        } else {
            0.0
        };
        let Some(st) = self.stations[component].as_mut() else {
            return;
        };
        let inst = &mut st.instances[i];
        if free_worker {
            inst.busy += 1;
            st.busy += 1;
            self.slab[request].started = self.now;
            self.schedule(
                self.now + service,
                EventKind::Depart {
                    component: id(component),
                    instance: id(i),
                    request: id(request),
                },
            );
        } else if st.capacity.is_some_and(|cap| inst.waiting.len() >= cap) {
            self.drop_request(component, request);
        } else {
            if inst.waiting.is_empty() {
                inst.nonempty_since = self.now;
            }
            inst.waiting.push_back(request);
            st.waiting += 1;
        }
    }

    /// The station has no room for `request` (full waiting room, or shed by CoDel).
    fn drop_request(&mut self, component: usize, request: usize) {
        self.stats[component].dropped += 1;
        self.free.push(request);
        let r = self.slab[request];
        match r.frame {
            // A call that is refused answers its caller with a failure.
            Some(frame) => self.answer(frame, true),
            None if !r.background => {
                self.end_to_end.dropped += 1;
                self.client_answered(&r, false);
            }
            None => {}
        }
    }

    fn depart(&mut self, component: usize, instance: usize, request: usize) {
        // A service with synchronous calls keeps its worker until they answer.
        if !self.start_calls(component, instance, request) {
            self.finish(component, instance, request);
        }
    }

    /// The request is done at `component`: free the worker, then hand it on or complete it.
    fn finish(&mut self, component: usize, instance: usize, request: usize) {
        let r = self.slab[request];
        self.stats[component].complete(self.now - r.entered, r.started - r.entered);
        self.touch(component);
        let after = self.after_service(component, request);
        let route = match after {
            kinds::After::Route => self.pick_route(component, r.class),
            _ => None,
        };
        // The freed worker takes the next waiting request; those that waited past the
        // station's timeout (or CoDel's limit) are shed on the way.
        let mut shed = Vec::new();
        let next = self.next_waiting(component, instance, &mut shed);
        match next {
            Some(next) => {
                let service = self.service_time(component, next, instance, false);
                self.slab[next].started = self.now;
                self.schedule(
                    self.now + service,
                    EventKind::Depart {
                        component: id(component),
                        instance: id(instance),
                        request: id(next),
                    },
                );
            }
            None => {
                if let Some(st) = self.stations[component].as_mut() {
                    st.instances[instance].busy -= 1;
                    st.busy -= 1;
                }
            }
        }
        for (waited, why) in shed {
            match why {
                overload::Shed::TimedOut => self.abandon(component, waited),
                overload::Shed::Dropped => self.drop_request(component, waited),
            }
        }
        match (after, route) {
            (kinds::After::Fail, _) => self.fail(component, request),
            (kinds::After::To(to), _) if self.dynamics.partitioned(component, to) => {
                self.fail(component, request)
            }
            (kinds::After::To(to), _) => self.send(to, request, None),
            (_, Some((to, _))) if self.dynamics.partitioned(component, to) => {
                self.fail(component, request)
            }
            (_, Some((to, k))) => {
                let latency = self.route_latency(component, k);
                self.send(to, request, latency);
            }
            _ => self.complete(request),
        }
    }

    /// Sends `request` to `to` across an edge with `latency` (`None` = arrives now).
    fn send(&mut self, to: usize, request: usize, latency: Option<f64>) {
        match latency {
            Some(delay) if delay > 0.0 => self.schedule(
                self.now + delay,
                EventKind::Enter {
                    component: id(to),
                    request: id(request),
                },
            ),
            _ => self.enter(to, request),
        }
    }

    /// Picks the hand-off route of a request of `class` (routes for other classes do not apply).
    fn pick_route(&mut self, component: usize, class: Option<usize>) -> Option<(usize, usize)> {
        let Kind::Station(s) = &self.design.components[component].kind else {
            return None;
        };
        if s.routes.is_empty() {
            return None;
        }
        let u = self.routing_rng.uniform();
        let mut acc = 0.0;
        for (k, r) in s.routes.iter().enumerate() {
            if r.class.is_some() && r.class != class {
                continue;
            }
            acc += r.p;
            if u < acc {
                return Some((r.to, k));
            }
        }
        None
    }

    fn route_latency(&mut self, component: usize, route: usize) -> Option<f64> {
        let Kind::Station(s) = &self.design.components[component].kind else {
            return None;
        };
        s.routes[route]
            .latency
            .as_ref()
            .map(|d| d.sample(&mut self.routing_rng))
    }

    /// The end of a request's chain: a call's child answers its caller; a top-level request
    /// completes end to end.
    fn complete(&mut self, request: usize) {
        let r = self.slab[request];
        self.free.push(request);
        if r.fill != clients::NONE {
            self.fill_cache(r.fill as usize, r.key);
        }
        if let Some(frame) = r.frame {
            self.answer(frame, false);
            return;
        }
        if r.background {
            return;
        }
        self.end_to_end.complete(self.now - r.born, 0.0);
        if let Some(class) = r.class {
            self.class_stats[class].complete(self.now - r.born, 0.0);
        }
        self.client_answered(&r, true);
        if self
            .design
            .max_requests
            .is_some_and(|max| self.end_to_end.completed >= max)
        {
            self.finished = true;
        }
    }

    /// The request failed at `component` (its `error_rate`): an error there, and a failed
    /// answer to a caller or an end-to-end error.
    fn fail(&mut self, component: usize, request: usize) {
        let r = self.slab[request];
        self.stats[component].errors += 1;
        self.free.push(request);
        match r.frame {
            Some(frame) => self.answer(frame, true),
            None if !r.background => {
                self.end_to_end.errors += 1;
                self.client_answered(&r, false);
            }
            None => {}
        }
    }

    /// A request abandoned after waiting past the station's timeout.
    fn abandon(&mut self, component: usize, request: usize) {
        let r = self.slab[request];
        self.stats[component].timed_out += 1;
        self.free.push(request);
        match r.frame {
            Some(frame) => self.answer(frame, true),
            None if !r.background => {
                self.end_to_end.errors += 1;
                self.client_answered(&r, false);
            }
            None => {}
        }
    }
}

/// The capacity model of a cache station, if it has one.
fn cache_model(s: &crate::design::Station) -> Option<&crate::design::CacheModel> {
    match &s.behavior {
        crate::design::Behavior::Cache(cache) => cache.model.as_ref(),
        _ => None,
    }
}

/// The index the next station state gets (a cache's stream differs per component).
fn stations_len(stations: &[Option<StationState>]) -> u64 {
    stations.len() as u64
}

/// Draws a request class from a source's mix.
fn pick_class(classes: &[(usize, f64)], rng: &mut Rng) -> Option<usize> {
    if classes.is_empty() {
        return None;
    }
    let u = rng.uniform();
    let mut acc = 0.0;
    for &(class, p) in classes {
        acc += p;
        if u < acc {
            return Some(class);
        }
    }
    classes.last().map(|c| c.0)
}
