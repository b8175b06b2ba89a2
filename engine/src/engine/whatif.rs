//! Live what-if: [`Simulation::apply`] changes a running simulation at its current simulated
//! time (a station's instances, workers or service time, a source's rate or users, a fault
//! started or cleared), logs it on the timeline and keeps it for the report's `changes`.
//! [`Simulation::with_changes`] replays a run: each recorded change is applied at its time,
//! after every event of that time, exactly where the live run applied it, so the same design,
//! seed and changes give the same report bit for bit.
//!
//! A run without changes pays nothing per event: a replay's changes are looked at once per
//! [`Simulation::advance_to`], users leaving are counted only on a closed-loop user's wake-up,
//! and a station whose workers were cut takes the slow path of `next_waiting` only once cut.

use super::changes::{AppliedChange, Change, Setting, WhatIfFault};
use super::{arrivals, EventKind, Instance, Simulation};
use crate::design::{Design, Kind, Problem};
use std::collections::{HashMap, VecDeque};

/// Why a change was not applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApplyError {
    /// The change does not fit the design (unknown component, setting it does not have).
    #[error("{0}")]
    Invalid(Problem),
    /// The run has ended: nothing is left to change.
    #[error("the run has finished")]
    Finished,
}

/// What-if state of a run.
#[derive(Default)]
pub(super) struct WhatIf {
    /// Changes still to apply at their times (a replay), earliest first.
    scripted: VecDeque<AppliedChange>,
    /// Changes applied so far, in order.
    pub(super) applied: Vec<AppliedChange>,
    /// What-if faults in force, by station.
    faults: HashMap<usize, ActiveFaults>,
    /// Users of each closed-loop source still to leave (at their next wake-up), by component;
    /// empty until a change lowers a population.
    leaving: Vec<u32>,
}

/// The what-if faults of one station, so that `clear` undoes exactly them.
#[derive(Default)]
struct ActiveFaults {
    crashed: usize,
    extra_latency: f64,
    /// The error-rate override before the first what-if error rate.
    error_before: Option<Option<f64>>,
}

impl WhatIf {
    pub(super) fn scripted_is_empty(&self) -> bool {
        self.scripted.is_empty()
    }
}

impl Simulation {
    /// Prepares a replay of `design` that applies each of `changes` at its `t_s`; a change
    /// that does not fit the design is refused with its path (`$.changes[i]...`).
    pub fn with_changes(
        design: Design,
        changes: Vec<AppliedChange>,
    ) -> Result<Simulation, Vec<Problem>> {
        let problems: Vec<Problem> = changes
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.change.check(&design, &format!("$.changes[{i}]")).err())
            .collect();
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut sim = Simulation::new(design);
        let mut scripted: Vec<AppliedChange> = changes;
        // Stable: changes of one instant keep their order.
        scripted.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
        sim.whatif.scripted = scripted.into();
        Ok(sim)
    }

    /// The timeline so far: faults, scaling decisions and what-if changes, in order.
    pub fn timeline(&self) -> &[super::TimelineEntry] {
        &self.dynamics.timeline
    }

    /// The changes applied so far, with their times.
    pub fn changes(&self) -> &[AppliedChange] {
        &self.whatif.applied
    }

    /// Applies `change` now (after every event of the current instant), logs it on the
    /// timeline and records it for the report.
    pub fn apply(&mut self, change: &Change) -> Result<(), ApplyError> {
        change
            .check(&self.design, "$")
            .map_err(ApplyError::Invalid)?;
        // Events of this very instant first, as a replay does.
        let now = self.now;
        self.advance_to(now);
        if self.finished {
            return Err(ApplyError::Finished);
        }
        self.apply_now(change);
        Ok(())
    }

    /// Applies the replay's changes due by `until`, each after every event up to its time;
    /// false when the run finished on the way.
    pub(super) fn replay_changes_until(&mut self, until: f64) -> bool {
        while let Some(at) = self.whatif.scripted.front().map(|c| c.t_s) {
            if at > until {
                break;
            }
            if !self.run_events(at) {
                return false;
            }
            self.advance_clock(at);
            if let Some(next) = self.whatif.scripted.pop_front() {
                self.apply_now(&next.change);
            }
        }
        true
    }

    /// Whether a user of closed-loop `source` leaves instead of sending (its population was
    /// lowered).
    #[inline]
    pub(super) fn user_leaves(&mut self, source: usize) -> bool {
        match self.whatif.leaving.get_mut(source) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }

    fn apply_now(&mut self, change: &Change) {
        let Some(c) = self
            .design
            .components
            .iter()
            .position(|comp| comp.id == change.component())
        else {
            return;
        };
        let text = match change {
            Change::Set { setting, .. } => self.set(c, setting),
            Change::Fault { fault, .. } => self.start_fault(c, fault),
            Change::Clear { .. } => self.clear_faults(c),
        };
        self.log(c, format!("what-if: {text}"));
        self.whatif.applied.push(AppliedChange {
            t_s: self.now,
            change: change.clone(),
        });
    }

    fn set(&mut self, c: usize, setting: &Setting) -> String {
        self.touch(c);
        let now = self.now;
        match (setting, &mut self.design.components[c].kind) {
            (Setting::Instances(n), Kind::Station(s)) => {
                let from = s.instances;
                s.instances = *n;
                if let Some(st) = self.stations[c].as_mut() {
                    while st.instances.len() < *n as usize {
                        st.instances.push(Instance {
                            busy: 0,
                            waiting: VecDeque::new(),
                            nonempty_since: 0.0,
                        });
                        st.down.push(false);
                    }
                    // Instances taken out finish what they hold and take nothing new, as
                    // when an autoscaler scales in.
                    st.active = *n as usize;
                    st.next_instance = 0;
                }
                format!("instances {from} → {n}")
            }
            (Setting::Concurrency(n), Kind::Station(s)) => {
                let from = s.concurrency;
                s.concurrency = *n;
                if let Some(st) = self.stations[c].as_mut() {
                    st.concurrency = *n;
                    if *n < from {
                        // Workers over the new count retire as they finish (the slow path
                        // of `next_waiting` checks for them).
                        st.fifo_fast = false;
                    }
                }
                if *n > from {
                    self.start_waiting(c);
                }
                format!("concurrency {from} → {n}")
            }
            (Setting::ServiceTime(spec), Kind::Station(s)) => {
                s.service_time = spec.dist.clone();
                let text = sonic_rs::to_string(spec).unwrap_or_default();
                format!("service_time → {text}")
            }
            (Setting::RatePerS(r), Kind::Source(src)) => {
                let from = src.rate;
                src.rate = *r;
                // The pending arrival was drawn at the old rate: draw it again from now
                // (exact for Poisson arrivals, which have no memory).
                if let Some(slot) = self.arrivals.iter().position(|a| a.1 == c) {
                    let src = src.clone();
                    let next = arrivals::next_arrival(&src, now, &mut self.source_rng[c]);
                    self.arrivals[slot].0 = self.key(next);
                }
                format!("rate_per_s {from} → {r}")
            }
            (Setting::Users(n), Kind::Source(src)) => {
                let Some(closed) = src.closed.as_mut() else {
                    return "users unchanged (not a closed-loop source)".into();
                };
                let from = closed.users;
                closed.users = *n;
                let think = closed.think_time.clone();
                if self.whatif.leaving.len() <= c {
                    self.whatif.leaving.resize(c + 1, 0);
                }
                let leaving = &mut self.whatif.leaving[c];
                if *n < from {
                    *leaving += from - n;
                } else {
                    // Users still due to leave stay instead; the rest arrive, thinking first.
                    let stay = (*leaving).min(n - from);
                    *leaving -= stay;
                    for _ in 0..(n - from - stay) {
                        let t = think.sample(&mut self.source_rng[c]);
                        self.schedule(now + t, EventKind::UserWakes { source: c as u32 });
                    }
                }
                format!("users {from} → {n}")
            }
            (setting, _) => format!("{} unchanged (not settable here)", setting.name()),
        }
    }

    /// Workers freed by a higher concurrency take waiting requests at once.
    fn start_waiting(&mut self, c: usize) {
        let instances = self.stations[c].as_ref().map_or(0, |st| st.instances.len());
        let mut shed = Vec::new();
        for i in 0..instances {
            loop {
                let free = self.stations[c]
                    .as_ref()
                    .is_some_and(|st| st.instances[i].busy < st.concurrency);
                if !free {
                    break;
                }
                let Some(next) = self.next_waiting(c, i, &mut shed) else {
                    break;
                };
                let service = self.service_time(c, next, i, true);
                if let Some(st) = self.stations[c].as_mut() {
                    st.instances[i].busy += 1;
                    st.busy += 1;
                }
                self.slab[next].started = self.now;
                self.schedule(
                    self.now + service,
                    EventKind::Depart {
                        component: c as u32,
                        instance: i as u32,
                        request: next as u32,
                    },
                );
            }
        }
        for (waited, why) in shed {
            match why {
                super::overload::Shed::TimedOut => self.abandon(c, waited),
                super::overload::Shed::Dropped => self.drop_request(c, waited),
            }
        }
    }

    fn start_fault(&mut self, c: usize, fault: &WhatIfFault) -> String {
        self.touch(c);
        match *fault {
            WhatIfFault::Crash { instances } => {
                let up_before = self.instances_up(c);
                let failed = self.crash(c, instances as usize, true);
                let crashed = up_before - self.instances_up(c);
                self.whatif.faults.entry(c).or_default().crashed += crashed;
                format!("crash {instances} instance(s); {failed} waiting request(s) failed")
            }
            WhatIfFault::AddLatency { ms } => {
                self.whatif.faults.entry(c).or_default().extra_latency += ms / 1e3;
                if let Some(st) = self.stations[c].as_mut() {
                    st.extra_latency += ms / 1e3;
                }
                format!("add {ms} ms of latency")
            }
            WhatIfFault::ErrorRate { rate } => {
                let active = self.whatif.faults.entry(c).or_default();
                if let Some(st) = self.stations[c].as_mut() {
                    if active.error_before.is_none() {
                        active.error_before = Some(st.error_override);
                    }
                    st.error_override = Some(rate);
                }
                format!("error rate {rate}")
            }
        }
    }

    fn clear_faults(&mut self, c: usize) -> String {
        self.touch(c);
        let Some(active) = self.whatif.faults.remove(&c) else {
            return "cleared faults (none in force)".into();
        };
        if active.crashed > 0 {
            self.crash(c, active.crashed, false);
        }
        if let Some(st) = self.stations[c].as_mut() {
            st.extra_latency -= active.extra_latency;
            if let Some(before) = active.error_before {
                st.error_override = before;
            }
        }
        "cleared faults".into()
    }

    fn instances_up(&self, c: usize) -> usize {
        self.stations[c]
            .as_ref()
            .map_or(0, |st| st.down.iter().filter(|d| !**d).count())
    }
}
