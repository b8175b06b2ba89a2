//! Synchronous calls: after its service time, a worker calls other components (each call taken
//! with its own probability), one after another or all at once, and stays busy until every
//! call has answered; only then is the request done there. A call's child request follows the
//! callee's routes; the end of that chain is the answer. A refused call (full queue) answers
//! with a failure, counted as an error of the caller, which carries on. Edge latency is paid on
//! the way there and on the way back.

use super::{EventKind, Request, Simulation};
use crate::design::{Fanout, Kind};
use std::collections::VecDeque;

/// A worker waiting for its calls.
struct Frame {
    request: usize,
    component: usize,
    instance: usize,
    pending: u32,
    failed: u32,
    /// Calls not issued yet (sequential fan-out), by index in the caller's `calls`.
    queued: VecDeque<usize>,
}

/// The frames of workers waiting on calls, in a reused slab.
#[derive(Default)]
pub(super) struct Frames {
    list: Vec<Option<Frame>>,
    free: Vec<usize>,
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
        let caller = f.component;
        let f_request = f.request;
        let Kind::Station(s) = &self.design.components[caller].kind else {
            return false;
        };
        let to = s.calls[call].to;
        let latency = s.calls[call]
            .latency
            .as_ref()
            .map(|d| d.sample(&mut self.routing_rng));
        let class = self.slab[f_request].class;
        let child = self.alloc(Request {
            born: self.now,
            entered: self.now,
            started: self.now,
            frame: Some((frame, call)),
            class,
            op: 0,
            background: false,
        });
        self.send(to, child, latency);
        true
    }

    /// A call's chain ended (or was refused): the answer travels back over the call's edge.
    pub(super) fn answer(&mut self, (frame, call): (usize, usize), failed: bool) {
        let caller = self.frames.list[frame].as_ref().map(|f| f.component);
        let latency = caller.and_then(|c| match &self.design.components[c].kind {
            Kind::Station(s) => s.calls[call]
                .latency
                .as_ref()
                .map(|d| d.sample(&mut self.routing_rng)),
            _ => None,
        });
        match latency {
            Some(delay) if delay > 0.0 => {
                self.schedule(self.now + delay, EventKind::Return { frame, failed })
            }
            _ => self.call_returned(frame, failed),
        }
    }

    /// An answer reached the caller: issue the next call, or finish once all have answered.
    pub(super) fn call_returned(&mut self, frame: usize, failed: bool) {
        let Some(f) = self.frames.list[frame].as_mut() else {
            return;
        };
        f.pending -= 1;
        f.failed += u32::from(failed);
        if f.pending > 0 || self.issue_next(frame) {
            return;
        }
        let Some(f) = self.frames.list[frame].take() else {
            return;
        };
        self.frames.free.push(frame);
        if f.failed > 0 {
            self.stats[f.component].errors += 1;
        }
        self.finish(f.component, f.instance, f.request);
    }
}
