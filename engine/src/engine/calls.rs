//! Synchronous calls: after its service time, a worker calls other components (each call taken
//! with its own probability), one after another or all at once, and stays busy until every
//! call has answered; only then is the request done there. A call's child request follows the
//! callee's routes; the end of that chain is the answer. Edge latency is paid on the way there
//! and on the way back.
//!
//! Failures (a refused call, a callee's error, a partition, a call timeout, an open breaker)
//! are retried with exponential backoff up to the call's `retries`; a call that still fails is
//! an error of the caller, which carries on. Every attempt has a generation number, so an
//! answer that arrives after its timeout fired is ignored.

use super::{id, EventKind, Request, Simulation};
use crate::design::{Fanout, Kind};
use std::collections::VecDeque;

/// Which attempt of which call of which frame a child request answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CallRef {
    frame: u32,
    call: u32,
    /// Unique over the whole run (frames are reused, attempt numbers never are).
    attempt: u64,
}

impl CallRef {
    fn frame(&self) -> usize {
        self.frame as usize
    }

    fn index(&self) -> usize {
        self.call as usize
    }
}

/// A worker waiting for its calls.
struct Frame {
    request: usize,
    component: usize,
    instance: usize,
    pending: u32,
    failed: u32,
    /// Calls not issued yet (sequential fan-out), by index in the caller's `calls`.
    queued: VecDeque<usize>,
    /// The outstanding attempt per call (0 = none).
    attempt: Vec<u64>,
    /// Retries used per call.
    retries: Vec<u32>,
}

/// The frames of workers waiting on calls, in a reused slab.
#[derive(Default)]
pub(super) struct Frames {
    list: Vec<Option<Frame>>,
    free: Vec<usize>,
    attempts: u64,
}

impl Frames {
    fn alloc(&mut self, frame: Frame) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.list[i] = Some(frame);
                i
            }
            None => {
                self.list.push(Some(frame));
                self.list.len() - 1
            }
        }
    }
}

impl Simulation {
    /// Picks the calls this request makes at `component` and issues them; false when it makes
    /// none (the worker is then released at once).
    pub(super) fn start_calls(
        &mut self,
        component: usize,
        instance: usize,
        request: usize,
    ) -> bool {
        let Kind::Station(s) = &self.design.components[component].kind else {
            return false;
        };
        if s.calls.is_empty() {
            return false;
        }
        let fanout = s.fanout;
        let class = self.slab[request].class;
        let n = s.calls.len();
        let p: Vec<(f64, bool)> = s
            .calls
            .iter()
            .map(|c| (c.p, c.class.is_none() || c.class == class))
            .collect();
        let chosen: VecDeque<usize> = p
            .iter()
            .enumerate()
            .filter(|(_, (p, applies))| *applies && (*p >= 1.0 || self.routing_rng.uniform() < *p))
            .map(|(k, _)| k)
            .collect();
        if chosen.is_empty() {
            return false;
        }
        let frame = self.frames.alloc(Frame {
            request,
            component,
            instance,
            pending: 0,
            failed: 0,
            queued: chosen,
            attempt: vec![0; n],
            retries: vec![0; n],
        });
        match fanout {
            Fanout::Sequential => {
                self.issue_next(frame);
            }
            Fanout::Parallel => while self.issue_next(frame) {},
        }
        true
    }

    /// Issues the next queued call of `frame`; false when none is left.
    fn issue_next(&mut self, frame: usize) -> bool {
        let Some(f) = self.frames.list[frame].as_mut() else {
            return false;
        };
        let Some(call) = f.queued.pop_front() else {
            return false;
        };
        f.pending += 1;
        self.issue(frame, call);
        true
    }

    /// Sends one attempt of `call` (or fails it at once: open breaker, partition).
    fn issue(&mut self, frame: usize, call: usize) {
        if self.frames.list[frame].is_none() {
            return;
        }
        self.frames.attempts += 1;
        let attempt = self.frames.attempts;
        let Some(f) = self.frames.list[frame].as_mut() else {
            return;
        };
        f.attempt[call] = attempt;
        let reference = CallRef {
            frame: id(frame),
            call: id(call),
            attempt,
        };
        let (caller, parent) = (f.component, f.request);
        let Kind::Station(s) = &self.design.components[caller].kind else {
            return;
        };
        let edge = &s.calls[call];
        let (to, timeout) = (edge.to, edge.policy.timeout);
        if self.dynamics.breaker_open(caller, call, self.now)
            || self.dynamics.partitioned(caller, to)
        {
            self.call_returned(reference, true);
            return;
        }
        let latency = edge
            .latency
            .as_ref()
            .map(|d| d.sample(&mut self.routing_rng));
        self.stats[caller].count_call(call);
        let child = self.alloc(Request {
            born: self.now,
            entered: self.now,
            started: self.now,
            frame: Some(reference),
            class: self.slab[parent].class,
            op: 0,
            background: false,
            origin: super::clients::NONE,
            attempt: 0,
            key: super::clients::NONE,
            fill: super::clients::NONE,
        });
        if let Some(t) = timeout {
            self.schedule(self.now + t, EventKind::CallTimeout { call: reference });
        }
        self.send(to, child, latency);
    }

    /// A call's chain ended (or was refused): the answer travels back over the call's edge.
    pub(super) fn answer(&mut self, call: CallRef, failed: bool) {
        let caller = self.frames.list[call.frame()].as_ref().map(|f| f.component);
        let latency = caller.and_then(|c| match &self.design.components[c].kind {
            Kind::Station(s) => s.calls[call.index()]
                .latency
                .as_ref()
                .map(|d| d.sample(&mut self.routing_rng)),
            _ => None,
        });
        match latency {
            Some(delay) if delay > 0.0 => {
                self.schedule(self.now + delay, EventKind::Return { call, failed })
            }
            _ => self.call_returned(call, failed),
        }
    }

    /// An answer (or a timeout) reached the caller: retry a failure if allowed, otherwise
    /// count it, then issue the next call, or finish once all have answered.
    pub(super) fn call_returned(&mut self, call: CallRef, failed: bool) {
        let Some(f) = self.frames.list[call.frame()].as_mut() else {
            return;
        };
        if f.attempt[call.index()] != call.attempt {
            return; // a late answer to an attempt that already timed out
        }
        f.attempt[call.index()] = 0; // later answers or timeouts of this attempt are stale
        let caller = f.component;
        let Kind::Station(s) = &self.design.components[caller].kind else {
            return;
        };
        let edge = &s.calls[call.index()];
        let policy = &edge.policy;
        if self
            .dynamics
            .record_call(caller, call.index(), failed, policy.breaker, self.now)
        {
            let (to, open_s) = (edge.to, policy.breaker.map_or(0.0, |b| b.1));
            let text = format!(
                "breaker to {} opens for {open_s} s",
                self.design.components[to].id
            );
            self.log(caller, text);
        }
        // Logging needed `self` whole: take the frame again.
        let Some(f) = self.frames.list[call.frame()].as_mut() else {
            return;
        };
        let Kind::Station(s) = &self.design.components[caller].kind else {
            return;
        };
        let policy = &s.calls[call.index()].policy;
        if failed && f.retries[call.index()] < policy.retries {
            f.retries[call.index()] += 1;
            let backoff = policy.backoff * f64::from(1u32 << (f.retries[call.index()] - 1).min(20));
            self.schedule(
                self.now + backoff,
                EventKind::Retry {
                    frame: id(call.frame()),
                    call: id(call.index()),
                },
            );
            return;
        }
        f.pending -= 1;
        f.failed += u32::from(failed);
        if f.pending > 0 || self.issue_next(call.frame()) {
            return;
        }
        let Some(f) = self.frames.list[call.frame()].take() else {
            return;
        };
        self.frames.free.push(call.frame());
        if f.failed > 0 {
            self.stats[f.component].errors += 1;
        }
        self.finish(f.component, f.instance, f.request);
    }

    /// A retry's backoff has passed.
    pub(super) fn retry(&mut self, frame: usize, call: usize) {
        self.issue(frame, call);
    }
}
