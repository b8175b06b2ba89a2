//! Dynamics: scheduled faults (crash and recovery, added latency, error rate, partitions),
//! circuit breakers on calls, and autoscaling on utilisation. Each change is logged on the
//! report's timeline.

use super::{id, EventKind, Simulation};
use crate::design::{FaultAction, Kind};
use serde::Serialize;
use std::collections::HashMap;

/// One line of the timeline: what changed, when.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct TimelineEntry {
    /// Simulated seconds.
    pub t_s: f64,
    /// The component concerned.
    pub component: String,
    /// What happened.
    pub event: String,
}

/// Faults and breakers in force.
#[derive(Default)]
pub(super) struct Dynamics {
    partitions: Vec<(usize, usize)>,
    /// (caller, call) → (consecutive failures, open until)
    breakers: HashMap<(usize, usize), (u32, f64)>,
    pub(super) timeline: Vec<TimelineEntry>,
}

impl Dynamics {
    /// Whether traffic from `from` to `to` is cut.
    pub(super) fn partitioned(&self, from: usize, to: usize) -> bool {
        !self.partitions.is_empty() && self.partitions.contains(&(from, to))
    }

    pub(super) fn breaker_open(&self, caller: usize, call: usize, now: f64) -> bool {
        self.breakers
            .get(&(caller, call))
            .is_some_and(|&(_, until)| now < until)
    }

    /// Counts a call's outcome; opens its breaker after `failures` in a row.
    pub(super) fn record_call(
        &mut self,
        caller: usize,
        call: usize,
        failed: bool,
        breaker: Option<(u32, f64)>,
        now: f64,
    ) -> bool {
        let Some((threshold, open_for)) = breaker else {
            return false;
        };
        let state = self
            .breakers
            .entry((caller, call))
            .or_insert((0, f64::NEG_INFINITY));
        if !failed {
            state.0 = 0;
        } else if now >= state.1 {
            state.0 += 1;
            if state.0 >= threshold {
                *state = (0, now + open_for);
                return true;
            }
        }
        false
    }
}

/// Autoscaling bookkeeping of one station.
#[derive(Debug, Default, Clone)]
pub(super) struct ScaleState {
    busy_area: f64,
    capacity_area: f64,
    last: f64,
    busy_mark: f64,
    capacity_mark: f64,
    last_decision: f64,
    starting: usize,
}

impl ScaleState {
    pub(super) fn integrate_to(&mut self, now: f64, busy: f64, capacity: f64) {
        let dt = now - self.last;
        if dt > 0.0 {
            self.busy_area += busy * dt;
            self.capacity_area += capacity * dt;
            self.last = now;
        }
    }
}

impl Simulation {
    /// Schedules the design's faults and the autoscalers' first measurements.
    pub(super) fn schedule_dynamics(&mut self) {
        let faults: Vec<(f64, Option<f64>)> = self
            .design
            .faults
            .iter()
            .map(|f| (f.at, f.duration))
            .collect();
        for (index, (at, duration)) in faults.into_iter().enumerate() {
            self.schedule(
                at,
                EventKind::Fault {
                    index: id(index),
                    start: true,
                },
            );
            if let Some(d) = duration {
                self.schedule(
                    at + d,
                    EventKind::Fault {
                        index: id(index),
                        start: false,
                    },
                );
            }
        }
        for component in 0..self.design.components.len() {
            if let Kind::Station(s) = &self.design.components[component].kind {
                if let Some(a) = &s.autoscale {
                    let at = a.interval;
                    self.schedule(
                        at,
                        EventKind::ScaleTick {
                            component: id(component),
                        },
                    );
                }
            }
        }
    }

    pub(super) fn log(&mut self, component: usize, event: String) {
        let component = self.design.components[component].id.clone();
        self.dynamics.timeline.push(TimelineEntry {
            t_s: self.now,
            component,
            event,
        });
    }

    /// Starts or ends fault `index`.
    pub(super) fn fault(&mut self, index: usize, start: bool) {
        let action = self.design.faults[index].action.clone();
        let (component, text) = match action {
            FaultAction::Crash {
                component,
                instances,
            } => {
                self.touch(component);
                let failed = self.crash(component, instances as usize, start);
                let verb = if start { "crash" } else { "recover" };
                (
                    component,
                    format!("{verb} {instances} instance(s); {failed} waiting request(s) failed"),
                )
            }
            FaultAction::AddLatency { component, extra } => {
                if let Some(st) = self.stations[component].as_mut() {
                    st.extra_latency += if start { extra } else { -extra };
                }
                let verb = if start { "add" } else { "remove" };
                (
                    component,
                    format!("{verb} {:.1} ms of latency", extra * 1e3),
                )
            }
            FaultAction::ErrorRate { component, rate } => {
                if let Some(st) = self.stations[component].as_mut() {
                    st.error_override = start.then_some(rate);
                }
                let text = if start {
                    format!("error rate {rate}")
                } else {
                    "error rate restored".into()
                };
                (component, text)
            }
            FaultAction::Flush { component } => {
                let dropped = self.stations[component]
                    .as_mut()
                    .and_then(|st| st.cache.as_mut())
                    .map_or(0, |cache| cache.flush());
                (component, format!("flush: {dropped} entries dropped"))
            }
            FaultAction::Partition { from, to } => {
                if start {
                    self.dynamics.partitions.push((from, to));
                } else if let Some(i) = self
                    .dynamics
                    .partitions
                    .iter()
                    .position(|p| *p == (from, to))
                {
                    self.dynamics.partitions.swap_remove(i);
                }
                let to_id = self.design.components[to].id.clone();
                (
                    from,
                    format!(
                        "partition to {to_id} {}",
                        if start { "starts" } else { "ends" }
                    ),
                )
            }
        };
        self.log(component, text);
    }

    /// Takes `n` instances down (or back up); waiting requests of crashed instances fail.
    pub(super) fn crash(&mut self, component: usize, n: usize, start: bool) -> usize {
        let Some(st) = self.stations[component].as_mut() else {
            return 0;
        };
        let mut victims = Vec::new();
        st.degraded = true;
        let mut changed = 0;
        for i in (0..st.down.len()).rev() {
            if changed == n {
                break;
            }
            if st.down[i] != start {
                st.down[i] = start;
                changed += 1;
                if start {
                    st.waiting -= st.instances[i].waiting.len();
                    victims.extend(st.instances[i].waiting.drain(..));
                }
            }
        }
        let failed = victims.len();
        for request in victims {
            self.fail(component, request);
        }
        failed
    }

    /// Measures utilisation over the last interval and scales out or in.
    pub(super) fn scale_tick(&mut self, component: usize) {
        let Kind::Station(s) = &self.design.components[component].kind else {
            return;
        };
        let Some(a) = s.autoscale.clone() else { return };
        self.touch(component);
        let now = self.now;
        let Some(st) = self.stations[component].as_mut() else {
            return;
        };
        let busy = st.scale.busy_area - st.scale.busy_mark;
        let capacity = st.scale.capacity_area - st.scale.capacity_mark;
        st.scale.busy_mark = st.scale.busy_area;
        st.scale.capacity_mark = st.scale.capacity_area;
        self.schedule(
            now + a.interval,
            EventKind::ScaleTick {
                component: id(component),
            },
        );
        let Some(st) = self.stations[component].as_mut() else {
            return;
        };
        if capacity <= 0.0
            || now - st.scale.last_decision < a.cooldown && st.scale.last_decision > 0.0
        {
            return;
        }
        let utilization = busy / capacity;
        let current = st.active + st.scale.starting;
        let desired = ((st.active as f64 * utilization / a.target).ceil() as usize)
            .clamp(a.min as usize, a.max as usize);
        if desired > current {
            let add = desired - current;
            st.scale.starting += add;
            st.scale.last_decision = now;
            self.schedule(
                now + a.startup,
                EventKind::ScaleUp {
                    component: id(component),
                    instances: id(add),
                },
            );
            self.log(
                component,
                format!(
                    "scale out by {add} at {:.0}% utilisation (ready in {} s)",
                    utilization * 100.0,
                    a.startup
                ),
            );
        } else if desired < st.active && st.scale.starting == 0 {
            let from = st.active;
            st.active = desired;
            st.next_instance = 0;
            st.scale.last_decision = now;
            self.touch(component);
            self.log(
                component,
                format!(
                    "scale in {from} → {desired} at {:.0}% utilisation",
                    utilization * 100.0
                ),
            );
        }
    }

    /// Started instances begin taking requests.
    pub(super) fn scale_up(&mut self, component: usize, instances: usize) {
        self.touch(component);
        let Some(st) = self.stations[component].as_mut() else {
            return;
        };
        st.scale.starting -= instances;
        let from = st.active;
        st.active = (st.active + instances).min(st.instances.len());
        let to = st.active;
        self.touch(component);
        self.log(component, format!("{from} → {to} instances in service"));
    }
}
