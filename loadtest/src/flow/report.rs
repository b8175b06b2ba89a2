//! What a flow run measured: per request type (each measured step, each pinging ws step's
//! pings, and `flow`, a whole user) one HDR histogram and one set of [`Counters`]; the users
//! started, completed, failed, late and unfinished; the table, the JSON report and the
//! time-series point.

use crate::report::{Counters, Machine, Report, Section};
use crate::ws::report::TypePoint;
use hdrhistogram::Histogram;
use serde::ser::SerializeMap;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Users by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Users {
    /// Users whose flow began.
    pub started: u64,
    /// Users that ran every step and closed their connections.
    pub completed: u64,
    /// Users a step failed for (the flow ends at the failed step).
    pub failed: u64,
    /// Users that began later than one arrival gap of their thread (and at least 2 ms) after
    /// their intended arrival; still measured from that intended time.
    pub late: u64,
    /// Users still running when the drain time after the phases ran out.
    pub unfinished: u64,
}

/// How one measured step of one user ended, sent to [`super::FlowLoad::outcomes`] when a
/// caller wants more than counts: which writes the client saw accepted (their captured ids), and
/// when each failure happened.
#[derive(Debug, Clone)]
pub struct StepOutcome {
    /// The user's number (`{{user}}`).
    pub user: u64,
    /// The step's index in the flow.
    pub step: usize,
    /// When the step was issued (the first step: the user's intended arrival; a held
    /// WebSocket's end: when the connection was opened).
    pub issued: Instant,
    /// When its outcome was known.
    pub ended: Instant,
    /// The error kind (`status_503`, `connect_refused`, ...); `None` when it passed.
    pub error: Option<&'static str>,
    /// The values the step captured (name, value), when it passed.
    pub captured: Vec<(String, String)>,
}

/// What one load thread counted (per interval, then in total); merged across threads.
#[derive(Debug, Clone)]
pub struct FlowTally {
    /// Latency in µs per request type, successes only.
    pub histograms: Vec<Histogram<u64>>,
    /// Counters per request type.
    pub counters: Vec<Counters>,
    /// Events received per request type (ws steps).
    pub events: Vec<u64>,
    /// Users by outcome.
    pub users: Users,
    /// Users that failed, by the step that failed.
    pub failed_by_step: Vec<u64>,
    /// Unfinished users, by the step they were in.
    pub unfinished_by_step: Vec<u64>,
    /// Users started, by the phase of their intended arrival.
    pub started_by_phase: Vec<u64>,
}

impl FlowTally {
    /// An empty tally for `types` request types, `steps` steps and `phases` phases.
    pub fn new(types: usize, steps: usize, phases: usize) -> FlowTally {
        FlowTally {
            histograms: (0..types).map(|_| Report::histogram()).collect(),
            counters: vec![Counters::default(); types],
            events: vec![0; types],
            users: Users::default(),
            failed_by_step: vec![0; steps],
            unfinished_by_step: vec![0; steps],
            started_by_phase: vec![0; phases],
        }
    }

    /// An empty tally shaped like `self`.
    pub fn empty_like(&self) -> FlowTally {
        FlowTally::new(
            self.histograms.len(),
            self.failed_by_step.len(),
            self.started_by_phase.len(),
        )
    }

    /// Records a completed request of type `t` that took `latency`.
    pub fn complete(&mut self, t: usize, latency: Duration) {
        self.counters[t].completed += 1;
        let micros = (latency.as_micros() as u64).clamp(1, Report::MAX_US);
        let _ = self.histograms[t].record(micros);
    }

    /// Counts an error of `kind` against type `t`.
    pub fn error(&mut self, t: usize, kind: &'static str) {
        self.counters[t].error(true, kind);
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &FlowTally) {
        for (mine, theirs) in self.histograms.iter_mut().zip(&other.histograms) {
            // Same bounds everywhere, so adding cannot fail.
            let _ = mine.add(theirs);
        }
        for (mine, theirs) in self.counters.iter_mut().zip(&other.counters) {
            mine.add(theirs);
        }
        let sum = |mine: &mut Vec<u64>, theirs: &Vec<u64>| {
            for (m, t) in mine.iter_mut().zip(theirs) {
                *m += t;
            }
        };
        sum(&mut self.events, &other.events);
        sum(&mut self.failed_by_step, &other.failed_by_step);
        sum(&mut self.unfinished_by_step, &other.unfinished_by_step);
        sum(&mut self.started_by_phase, &other.started_by_phase);
        let (u, o) = (&mut self.users, &other.users);
        u.started += o.started;
        u.completed += o.completed;
        u.failed += o.failed;
        u.late += o.late;
        u.unfinished += o.unfinished;
    }

    /// Errors of every kind and type.
    pub fn errors(&self) -> u64 {
        self.counters.iter().flat_map(|c| c.errors.values()).sum()
    }

    /// Type `t` as a [`Report`] over `duration`.
    pub fn report(&self, t: usize, duration: Duration) -> Report {
        let mut report = Report::new(duration);
        report.merge(&self.histograms[t], &self.counters[t]);
        report
    }
}

/// The result of a flow run.
#[derive(Debug, Clone)]
pub struct FlowReport {
    /// Everything counted, merged over the threads.
    pub tally: FlowTally,
    /// Names of the request types (the last is `flow`).
    pub types: Vec<String>,
    /// Names of the steps.
    pub steps: Vec<String>,
    /// From the first intended arrival to the end of the run (the drain included).
    pub duration: Duration,
    /// Load threads.
    pub threads: usize,
}

/// Sections in the order of the flow (a JSON object whose keys keep that order).
struct Ordered<'a>(Vec<(&'a str, Section<'a>)>);

impl Serialize for Ordered<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct JsonUsers<'a> {
    #[serde(flatten)]
    counts: Users,
    started_by_phase: &'a [u64],
    failed_by_step: BTreeMap<&'a str, u64>,
    unfinished_by_step: BTreeMap<&'a str, u64>,
}

#[derive(Serialize)]
struct JsonFlow<'a> {
    duration_s: f64,
    users: JsonUsers<'a>,
    steps: Ordered<'a>,
    errors: u64,
    ws_events_received: BTreeMap<&'a str, u64>,
    threads: usize,
    machine: Machine,
    parameters: &'a BTreeMap<String, String>,
}

impl FlowReport {
    /// Request type `t` over the run's duration.
    pub fn report(&self, t: usize) -> Report {
        self.tally.report(t, self.duration)
    }

    /// The index of the type named `name`.
    pub fn type_index(&self, name: &str) -> Option<usize> {
        self.types.iter().position(|t| t == name)
    }

    /// Type `name` (a step, `step.ping` or `flow`).
    pub fn by_name(&self, name: &str) -> Option<Report> {
        self.type_index(name).map(|t| self.report(t))
    }

    fn by_step(&self, counts: &[u64]) -> BTreeMap<&str, u64> {
        self.steps
            .iter()
            .zip(counts)
            .filter(|(_, n)| **n > 0)
            .map(|(s, n)| (s.as_str(), *n))
            .collect()
    }

    /// The report as JSON, with the run's parameters.
    pub fn to_json(&self, parameters: &BTreeMap<String, String>) -> String {
        let reports: Vec<Report> = (0..self.types.len()).map(|t| self.report(t)).collect();
        let json = JsonFlow {
            duration_s: self.duration.as_secs_f64(),
            users: JsonUsers {
                counts: self.tally.users,
                started_by_phase: &self.tally.started_by_phase,
                failed_by_step: self.by_step(&self.tally.failed_by_step),
                unfinished_by_step: self.by_step(&self.tally.unfinished_by_step),
            },
            steps: Ordered(
                self.types
                    .iter()
                    .zip(&reports)
                    .map(|(name, r)| (name.as_str(), r.section()))
                    .collect(),
            ),
            errors: self.tally.errors(),
            ws_events_received: self
                .types
                .iter()
                .zip(&self.tally.events)
                .filter(|(_, n)| **n > 0)
                .map(|(t, n)| (t.as_str(), *n))
                .collect(),
            threads: self.threads,
            machine: Machine::current(),
            parameters,
        };
        sonic_rs::to_string_pretty(&json).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// A table for people.
    pub fn table(&self) -> String {
        let u = &self.tally.users;
        let mut out = format!(
            "users        started {}  completed {}  failed {}  late {}  unfinished {}  (by phase {:?}) in {:.2} s\n",
            u.started,
            u.completed,
            u.failed,
            u.late,
            u.unfinished,
            self.tally.started_by_phase,
            self.duration.as_secs_f64()
        );
        let width = self
            .types
            .iter()
            .map(String::len)
            .max()
            .unwrap_or(0)
            .max(12);
        for (t, name) in self.types.iter().enumerate() {
            out.push_str(&self.report(t).type_line(name, width));
        }
        for (t, name) in self.types.iter().enumerate() {
            if !self.tally.counters[t].errors.is_empty() {
                out.push_str(&format!(
                    "errors       {name}: {:?}\n",
                    self.tally.counters[t].errors
                ));
            }
        }
        let failed = self.by_step(&self.tally.failed_by_step);
        if !failed.is_empty() {
            out.push_str(&format!("failed at    {failed:?}\n"));
        }
        let unfinished = self.by_step(&self.tally.unfinished_by_step);
        if !unfinished.is_empty() {
            out.push_str(&format!("unfinished   {unfinished:?}\n"));
        }
        for (t, name) in self.types.iter().enumerate() {
            if self.tally.events[t] > 0 {
                out.push_str(&format!(
                    "ws events    {name}: {} received\n",
                    self.tally.events[t]
                ));
            }
        }
        out
    }
}

/// One interval of a flow run (`--series`, NDJSON, and the progress line).
#[derive(Debug, Clone, Serialize)]
pub struct FlowSeriesPoint {
    /// Seconds since the first intended arrival, at the end of the interval.
    pub t_s: f64,
    /// Users running at the end of the interval.
    pub active: u64,
    /// Users by outcome in the interval.
    pub users: Users,
    /// Errors of every type in the interval.
    pub errors: u64,
    /// Per request type.
    pub types: BTreeMap<String, TypePoint>,
}

impl FlowSeriesPoint {
    /// The point of interval `index` (each `step` long).
    pub fn new(
        index: u64,
        step: Duration,
        active: u64,
        types: &[String],
        tally: &FlowTally,
    ) -> FlowSeriesPoint {
        let types = types
            .iter()
            .enumerate()
            .map(|(t, name)| (name.clone(), TypePoint::of(&tally.report(t, step))))
            .collect();
        FlowSeriesPoint {
            t_s: (index + 1) as f64 * step.as_secs_f64(),
            active,
            users: tally.users,
            errors: tally.errors(),
            types,
        }
    }

    /// The progress line: users, then the whole-flow latency.
    pub fn line(&self) -> String {
        let u = &self.users;
        let mut out = format!(
            "[{:>7.1}s] users +{} done {} failed {} late {} active {}",
            self.t_s, u.started, u.completed, u.failed, u.late, self.active
        );
        if let Some(flow) = self.types.get("flow").filter(|f| f.completed > 0) {
            out.push_str(&format!(
                "  flow p50 {:.3} p99 {:.3} ms",
                flow.latency_ms.p50, flow.latency_ms.p99
            ));
        }
        out.push_str(&format!("  errors {}", self.errors));
        out
    }
}
