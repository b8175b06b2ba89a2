//! Clients (schema version 2): every request of a version-2 source is a client request made of
//! attempts. The client gives up on an attempt at its timeout (the attempt goes on inside the
//! system: wasted work), retries failures and timeouts after a backoff while its retries and
//! its retry budget allow, and a closed-loop user thinks after the final outcome before its
//! next request. Successes, failures and first tries feed the goodput series.

use super::dist::Rng;
use super::goodput::{Counter, GoodputSeries};
use super::stats::{ComponentStats, EndToEnd};
use super::{id, EventKind, Request, Simulation};
use crate::design::{BackoffKind, Kind};
use serde::Serialize;

/// No client request (version-1 sources, calls' children), no cache key, no cache to fill.
pub(super) const NONE: u32 = u32::MAX;

/// One client request, alive until its final outcome and kept until its last attempt has left
/// the system (so a late answer still finds the request it belongs to).
struct ClientRequest {
    source: u32,
    /// Sent by a closed-loop user, who thinks after the final outcome.
    closed: bool,
    first_try: f64,
    class: Option<usize>,
    /// Number of the latest attempt; an answer to an older one is late.
    attempt: u32,
    retries: u32,
    /// The client still waits for an answer to `attempt`.
    waiting: bool,
    /// Not finished yet (success, or failure after the last retry).
    live: bool,
    /// Attempts still inside the system.
    in_system: u32,
}

/// Counters of one source's client since the warm-up.
#[derive(Debug, Clone)]
pub(super) struct ClientCounts {
    first_tries: u64,
    retries: u64,
    succeeded: u64,
    failed: u64,
    timeouts: u64,
    late_answers: u64,
    budget_denied: u64,
    /// Latency of successful client requests, first try to answer.
    latency: ComponentStats,
}

impl Default for ClientCounts {
    fn default() -> Self {
        ClientCounts {
            first_tries: 0,
            retries: 0,
            succeeded: 0,
            failed: 0,
            timeouts: 0,
            late_answers: 0,
            budget_denied: 0,
            latency: ComponentStats::new(0.0),
        }
    }
}

/// One source's client in the report.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct ClientReport {
    /// Client requests started (first attempts).
    pub first_tries: u64,
    /// Attempts after the first.
    pub retries: u64,
    /// Client requests answered successfully in time.
    pub succeeded: u64,
    /// Client requests that failed after their last allowed attempt.
    pub failed: u64,
    /// Attempts the client gave up on at its timeout.
    pub timeouts: u64,
    /// Answers that arrived after the client had given up: work the system did for nobody.
    pub late_answers: u64,
    /// Retries the retry budget refused.
    pub budget_denied: u64,
    /// Successful client requests per simulated second.
    pub goodput_per_s: f64,
    /// Succeeded / finished client requests.
    pub success_ratio: f64,
    /// Latency of successful client requests, from the first try (retries included).
    pub latency: EndToEnd,
}

/// The clients of every source.
pub(super) struct Clients {
    requests: Vec<ClientRequest>,
    free: Vec<u32>,
    /// Per component index (used for sources only).
    counts: Vec<ClientCounts>,
    /// Retry-budget tokens per component index.
    tokens: Vec<f64>,
    /// Draws of jittered backoffs (its own stream, so jitter moves no other draw).
    rng: Rng,
    pub(super) series: GoodputSeries,
}

impl Clients {
    pub(super) fn new(sim_seed: u64, components: usize, window: f64) -> Clients {
        Clients {
            requests: Vec::new(),
            free: Vec::new(),
            counts: vec![ClientCounts::default(); components],
            tokens: vec![0.0; components],
            // A fixed offset keeps this stream apart from the seeds the engine draws in order.
            rng: Rng::new(sim_seed ^ 0x636c_6965_6e74_7321),
            series: GoodputSeries::new(window),
        }
    }

    /// Restarts the counters at the end of the warm-up (the goodput series covers the run).
    pub(super) fn reset(&mut self, now: f64) {
        for c in &mut self.counts {
            *c = ClientCounts::default();
            c.latency.reset(now);
        }
    }

    /// The report of each source's client, by component index.
    pub(super) fn reports(&self, measured: f64) -> Vec<ClientReport> {
        self.counts
            .iter()
            .map(|c| {
                let finished = c.succeeded + c.failed;
                ClientReport {
                    first_tries: c.first_tries,
                    retries: c.retries,
                    succeeded: c.succeeded,
                    failed: c.failed,
                    timeouts: c.timeouts,
                    late_answers: c.late_answers,
                    budget_denied: c.budget_denied,
                    goodput_per_s: c.succeeded as f64 / measured,
                    success_ratio: if finished == 0 {
                        0.0
                    } else {
                        c.succeeded as f64 / finished as f64
                    },
                    latency: EndToEnd::from_stats(&c.latency, measured),
                }
            })
            .collect()
    }
}

impl Simulation {
    /// The clients, which exist for version-2 designs only.
    fn clients(&mut self) -> &mut Clients {
        self.clients
            .as_mut()
            .expect("client requests come from version-2 sources, which have clients")
    }

    /// Starts the closed-loop users of every source: each thinks once before its first request,
    /// so a population does not arrive all at the same instant.
    pub(super) fn start_users(&mut self) {
        for source in 0..self.design.components.len() {
            let Kind::Source(src) = &self.design.components[source].kind else {
                continue;
            };
            let Some(closed) = src.closed.clone() else {
                continue;
            };
            for _ in 0..closed.users {
                let think = closed.think_time.sample(&mut self.source_rng[source]);
                let key = self.key(think);
                self.events
                    .push(key, EventKind::UserWakes { source: id(source) });
            }
        }
    }

    /// A closed-loop user of `source` has thought: it sends its next request.
    pub(super) fn user_wakes(&mut self, source: usize) {
        if self.user_leaves(source) {
            return;
        }
        let Kind::Source(src) = &self.design.components[source].kind else {
            return;
        };
        let class = super::pick_class(&src.classes, &mut self.source_rng[source]);
        self.client_request(source, true, class);
    }

    /// A client of `source` starts a request.
    pub(super) fn client_request(&mut self, source: usize, closed: bool, class: Option<usize>) {
        let now = self.now;
        let budget = match &self.design.components[source].kind {
            Kind::Source(s) => s.client.as_ref().and_then(|c| c.budget.clone()),
            _ => None,
        };
        let clients = self.clients();
        if let Some(b) = budget {
            clients.tokens[source] = (clients.tokens[source] + b.ratio).min(b.burst);
        }
        clients.counts[source].first_tries += 1;
        clients.series.count(now, Counter::Offered);
        let request = ClientRequest {
            source: id(source),
            closed,
            first_try: now,
            class,
            attempt: 0,
            retries: 0,
            waiting: false,
            live: true,
            in_system: 0,
        };
        let slot = match clients.free.pop() {
            Some(i) => {
                // Attempt numbers go on from the slot's previous request: a timeout still
                // scheduled for one of its attempts must not match an attempt of this one.
                let previous = clients.requests[i as usize].attempt;
                clients.requests[i as usize] = ClientRequest {
                    attempt: previous,
                    ..request
                };
                i as usize
            }
            None => {
                clients.requests.push(request);
                clients.requests.len() - 1
            }
        };
        self.send_attempt(slot);
    }

    /// Sends the next attempt of client request `slot` into the system.
    fn send_attempt(&mut self, slot: usize) {
        let now = self.now;
        let clients = self.clients();
        clients.series.count(now, Counter::Attempt);
        let r = &mut clients.requests[slot];
        r.attempt = r.attempt.wrapping_add(1);
        r.waiting = true;
        r.in_system += 1;
        let (source, attempt, class) = (r.source as usize, r.attempt, r.class);
        let Kind::Source(src) = &self.design.components[source].kind else {
            return;
        };
        let (to, timeout) = (src.to, src.client.as_ref().and_then(|c| c.timeout));
        self.stats[source].arrivals += 1;
        self.end_to_end.arrivals += 1;
        let request = self.alloc(Request {
            born: now,
            entered: now,
            started: now,
            frame: None,
            class,
            op: 0,
            background: false,
            origin: id(slot),
            attempt,
            key: NONE,
            fill: NONE,
        });
        if let Some(t) = timeout {
            self.schedule(
                now + t,
                EventKind::ClientTimeout {
                    slot: id(slot),
                    attempt,
                },
            );
        }
        self.enter(to, request);
    }

    /// An attempt's chain ended (completed, failed, dropped, abandoned): the answer reaches
    /// its client, unless the client gave up on that attempt already.
    #[inline]
    pub(super) fn client_answered(&mut self, r: &Request, ok: bool) {
        // Version-1 requests, queue messages and calls' children have no client.
        if r.origin != NONE && !r.background && r.frame.is_none() {
            self.answer_client(r, ok);
        }
    }

    fn answer_client(&mut self, r: &Request, ok: bool) {
        let (slot, now) = (r.origin as usize, self.now);
        let clients = self.clients();
        let c = &mut clients.requests[slot];
        c.in_system -= 1;
        let source = c.source as usize;
        if !(c.live && c.waiting && c.attempt == r.attempt) {
            clients.counts[source].late_answers += 1;
            if !c.live && c.in_system == 0 {
                clients.free.push(id(slot));
            }
            return;
        }
        c.waiting = false;
        if ok {
            let latency = now - c.first_try;
            clients.counts[source].succeeded += 1;
            clients.counts[source].latency.complete(latency, 0.0);
            clients.series.count(now, Counter::Good);
            self.finish_client_request(slot);
        } else {
            self.retry_or_fail(slot);
        }
    }

    /// The client's timeout of an attempt fired.
    pub(super) fn client_timeout(&mut self, slot: usize, attempt: u32) {
        let clients = self.clients();
        let c = &mut clients.requests[slot];
        if !(c.live && c.waiting && c.attempt == attempt) {
            return; // answered in time, or an older attempt
        }
        c.waiting = false;
        clients.counts[c.source as usize].timeouts += 1;
        self.retry_or_fail(slot);
    }

    /// A backoff has passed: the next attempt goes out.
    pub(super) fn client_retry(&mut self, slot: usize) {
        if self.clients().requests[slot].live {
            self.send_attempt(slot);
        }
    }

    /// After a failed or timed-out attempt: another attempt if the retries and the budget
    /// allow it, otherwise the request has failed.
    fn retry_or_fail(&mut self, slot: usize) {
        let source = self.clients().requests[slot].source as usize;
        let Some(policy) = (match &self.design.components[source].kind {
            Kind::Source(s) => s.client.clone(),
            _ => None,
        }) else {
            return;
        };
        let now = self.now;
        let clients = self.clients();
        let c = &mut clients.requests[slot];
        if c.retries < policy.retries {
            let allowed = match &policy.budget {
                None => true,
                Some(_) if clients.tokens[source] >= 1.0 => {
                    clients.tokens[source] -= 1.0;
                    true
                }
                Some(_) => {
                    clients.counts[source].budget_denied += 1;
                    false
                }
            };
            if allowed {
                c.retries += 1;
                let n = c.retries;
                clients.counts[source].retries += 1;
                let uniform = match policy.backoff.kind {
                    BackoffKind::Jitter => clients.rng.uniform(),
                    BackoffKind::Fixed | BackoffKind::Exponential => 0.0,
                };
                let delay = policy.backoff.delay(n, uniform);
                self.schedule(now + delay, EventKind::ClientRetry { slot: id(slot) });
                return;
            }
        }
        clients.counts[source].failed += 1;
        self.finish_client_request(slot);
    }

    /// The request has its final outcome: a closed-loop user starts thinking.
    fn finish_client_request(&mut self, slot: usize) {
        let clients = self.clients();
        let c = &mut clients.requests[slot];
        c.live = false;
        let (source, closed) = (c.source as usize, c.closed);
        if c.in_system == 0 {
            clients.free.push(id(slot));
        }
        if !closed {
            return;
        }
        let Kind::Source(src) = &self.design.components[source].kind else {
            return;
        };
        let Some(loop_) = &src.closed else { return };
        let think = loop_.think_time.sample(&mut self.source_rng[source]);
        self.schedule(
            self.now + think,
            EventKind::UserWakes { source: id(source) },
        );
    }
}
