//! What the client saw, per instance: every measured step's outcome as the load generator
//! reported it, and the ids of the writes it saw accepted (captured from the responses). The
//! test reads it to decide when an instance has recovered and, at the end, to check the rows
//! in PostgreSQL and where each failure happened.

use super::HANG;
use sdsim_loadtest::flow::StepOutcome;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Instant;

/// One step's outcome.
#[derive(Debug, Clone)]
pub struct Record {
    /// The step's index in the flow.
    pub step: usize,
    /// When it was issued.
    pub issued: Instant,
    /// When its outcome was known.
    pub ended: Instant,
    /// Its error kind, `None` when it passed.
    pub error: Option<&'static str>,
}

/// Outcomes per instance and the accepted writes.
pub struct Ledger {
    outcomes: Receiver<(usize, StepOutcome)>,
    /// Step names, by index.
    pub steps: Vec<String>,
    /// Indices of the steps that write (a success means a row the client was promised).
    writes: Vec<usize>,
    /// Per instance, in the order the outcomes arrived.
    pub records: Vec<Vec<Record>>,
    /// Capture name -> the ids the client saw accepted under it.
    pub accepted: BTreeMap<String, BTreeSet<String>>,
    /// Whether every sender has gone.
    closed: bool,
}

impl Ledger {
    /// A ledger of `instances` instances fed by `outcomes`; `writes` names the writing steps.
    pub fn new(
        outcomes: Receiver<(usize, StepOutcome)>,
        steps: Vec<String>,
        writes: &[&str],
        instances: usize,
    ) -> Ledger {
        let writes = writes
            .iter()
            .map(|w| {
                steps
                    .iter()
                    .position(|s| s == w)
                    .unwrap_or_else(|| panic!("no step {w} in {steps:?}"))
            })
            .collect();
        Ledger {
            outcomes,
            steps,
            writes,
            records: vec![Vec::new(); instances],
            accepted: BTreeMap::new(),
            closed: false,
        }
    }

    fn take(&mut self, (instance, outcome): (usize, StepOutcome)) {
        if outcome.error.is_none() {
            for (name, value) in outcome.captured {
                self.accepted.entry(name).or_default().insert(value);
            }
        }
        self.records[instance].push(Record {
            step: outcome.step,
            issued: outcome.issued,
            ended: outcome.ended,
            error: outcome.error,
        });
    }

    /// Reads outcomes until `done` answers; panics naming `what` if that takes [`HANG`].
    pub fn wait_for<T>(&mut self, what: &str, mut done: impl FnMut(&Ledger) -> Option<T>) -> T {
        let deadline = Instant::now() + HANG;
        loop {
            if let Some(answer) = done(self) {
                return answer;
            }
            assert!(!self.closed, "the load ended before {what}");
            match self
                .outcomes
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(outcome) => self.take(outcome),
                Err(RecvTimeoutError::Disconnected) => self.closed = true,
                Err(RecvTimeoutError::Timeout) => panic!("no {what} within {HANG:?}"),
            }
        }
    }

    /// Reads every outcome left (the load has ended).
    pub fn drain(&mut self) {
        while let Ok(outcome) = self.outcomes.recv_timeout(HANG) {
            self.take(outcome);
        }
    }

    /// The end of the first successful write on `instance` issued at or after `since`.
    pub fn first_write_ok(&self, instance: usize, since: Instant) -> Option<Instant> {
        self.records[instance]
            .iter()
            .filter(|r| r.error.is_none() && r.issued >= since && self.writes.contains(&r.step))
            .map(|r| r.ended)
            .min()
    }

    /// Successful writes on `instance` issued at or after `since` and after the end of the
    /// last failure seen there.
    pub fn quiet_writes(&self, instance: usize, since: Instant) -> usize {
        let records = &self.records[instance];
        let after = records
            .iter()
            .filter(|r| r.error.is_some())
            .map(|r| r.ended)
            .max()
            .map_or(since, |f| f.max(since));
        records
            .iter()
            .filter(|r| r.error.is_none() && r.issued >= after && self.writes.contains(&r.step))
            .count()
    }

    /// Every failed step: (instance, record).
    pub fn failures(&self) -> impl Iterator<Item = (usize, &Record)> {
        self.records
            .iter()
            .enumerate()
            .flat_map(|(i, rs)| rs.iter().filter(|r| r.error.is_some()).map(move |r| (i, r)))
    }

    /// Steps that ended before `t`, and how many of them failed.
    pub fn before(&self, t: Instant) -> (usize, usize) {
        let early = self.records.iter().flatten().filter(|r| r.ended < t);
        early.fold((0, 0), |(n, f), r| {
            (n + 1, f + usize::from(r.error.is_some()))
        })
    }
}
