//! What a WebSocket run measured: one histogram and one set of counters per request type
//! ([`Op`]), close codes and handshake statuses, the connections held, and the generator's own
//! memory; the table, the JSON report and the time-series point.

use crate::report::{Counters, Machine, Percentiles, Report, Section};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The request types of a WebSocket run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// TCP connect + upgrade + `subscribed` reply, from the connection's scheduled start.
    /// Its errors also count connections lost later (`closed`, `io`, `protocol`).
    Connect,
    /// Publish-to-receive of an event, from the publisher's intended send time (`data.t`).
    Deliver,
    /// `{"op":"ping"}` → `{"op":"pong"}`, from the ping's intended send time.
    Ping,
    /// The generator's own `POST /api/publish` requests, from their intended send time.
    Publish,
}

impl Op {
    /// Every type, in report order.
    pub const ALL: [Op; 4] = [Op::Connect, Op::Deliver, Op::Ping, Op::Publish];

    /// The name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Op::Connect => "connect",
            Op::Deliver => "deliver",
            Op::Ping => "ping",
            Op::Publish => "publish",
        }
    }
}

/// What one load thread counted: per interval, then in total; merged across threads.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Latency in µs per [`Op`] (indexed by `op as usize`).
    pub histograms: [Histogram<u64>; 4],
    /// Counters per [`Op`].
    pub counters: [Counters; 4],
    /// Close codes of connections the server closed (1006: closed without a close frame).
    pub close_codes: BTreeMap<u16, u64>,
    /// Statuses of refused upgrades.
    pub statuses: BTreeMap<u16, u64>,
    /// Events missing from the sequence a connection saw.
    pub seq_gaps: u64,
    /// Events that came again, or after a later one, on a connection.
    pub seq_out_of_order: u64,
    /// When the last timed event arrived.
    pub last_delivery: Option<Instant>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            histograms: std::array::from_fn(|_| Report::histogram()),
            counters: Default::default(),
            close_codes: BTreeMap::new(),
            statuses: BTreeMap::new(),
            seq_gaps: 0,
            seq_out_of_order: 0,
            last_delivery: None,
        }
    }
}

impl Tally {
    /// The counters of `op`.
    pub fn counters(&mut self, op: Op) -> &mut Counters {
        &mut self.counters[op as usize]
    }

    /// Records a completed `op` that took `latency`.
    pub fn complete(&mut self, op: Op, latency: Duration) {
        self.counters[op as usize].completed += 1;
        let micros = (latency.as_micros() as u64).clamp(1, Report::MAX_US);
        let _ = self.histograms[op as usize].record(micros);
    }

    /// Counts an error of `kind` against `op`.
    pub fn error(&mut self, op: Op, kind: &'static str) {
        self.counters[op as usize].error(true, kind);
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Tally) {
        for i in 0..4 {
            // Same bounds everywhere, so adding cannot fail.
            let _ = self.histograms[i].add(&other.histograms[i]);
            self.counters[i].add(&other.counters[i]);
        }
        for (k, v) in &other.close_codes {
            *self.close_codes.entry(*k).or_insert(0) += v;
        }
        for (k, v) in &other.statuses {
            *self.statuses.entry(*k).or_insert(0) += v;
        }
        self.seq_gaps += other.seq_gaps;
        self.seq_out_of_order += other.seq_out_of_order;
        self.last_delivery = self.last_delivery.max(other.last_delivery);
    }

    /// Errors of every kind and type.
    pub fn errors(&self) -> u64 {
        self.counters.iter().flat_map(|c| c.errors.values()).sum()
    }

    /// `op` as a [`Report`] over `duration`.
    pub fn report(&self, op: Op, duration: Duration) -> Report {
        let mut report = Report::new(duration);
        report.merge(&self.histograms[op as usize], &self.counters[op as usize]);
        report
    }
}

/// The result of a WebSocket run.
#[derive(Debug, Clone)]
pub struct WsReport {
    /// Everything counted, merged over the threads.
    pub tally: Tally,
    /// Connections asked for.
    pub requested: usize,
    /// Connections that were subscribed at some point.
    pub subscribed: usize,
    /// Connections still subscribed when the run ended.
    pub held_at_end: i64,
    /// From the first scheduled connect to the last `subscribed` reply.
    pub ramp: Duration,
    /// The measured hold (publishing and pinging).
    pub hold: Duration,
    /// The generator's resident memory before the connections opened, bytes.
    pub rss_start: u64,
    /// The generator's resident memory with the connections held, at the end, bytes.
    pub rss_end: u64,
    /// RLIMIT_NOFILE (soft) during the run.
    pub fd_limit: u64,
    /// Load threads.
    pub threads: usize,
    /// Events published successfully, per channel (in the order of [`super::WsLoad::channels`]).
    pub published: Vec<u64>,
}

#[derive(Serialize)]
struct Connections {
    requested: usize,
    subscribed: usize,
    held_at_end: i64,
    connect_ramp_s: f64,
    connect_rate_per_s: f64,
}

#[derive(Serialize)]
struct Generator {
    rss_bytes_start: u64,
    rss_bytes_end: u64,
    rss_bytes_per_connection: f64,
    fd_limit: u64,
    threads: usize,
}

#[derive(Serialize)]
struct JsonWs<'a> {
    duration_s: f64,
    connections: Connections,
    types: BTreeMap<&'static str, Section<'a>>,
    errors_by_kind: BTreeMap<&'static str, u64>,
    close_codes: BTreeMap<String, u64>,
    handshake_statuses: BTreeMap<String, u64>,
    seq_gaps: u64,
    generator: Generator,
    machine: Machine,
    parameters: &'a BTreeMap<String, String>,
}

impl WsReport {
    /// `op` as a [`Report`]: connect over the ramp, the others over the hold.
    pub fn report(&self, op: Op) -> Report {
        let duration = if op == Op::Connect {
            self.ramp
        } else {
            self.hold
        };
        self.tally.report(op, duration)
    }

    /// Connections subscribed per second during the ramp.
    pub fn connect_rate(&self) -> f64 {
        self.subscribed as f64 / self.ramp.as_secs_f64().max(1e-9)
    }

    /// Resident bytes the generator grew by per connection held.
    pub fn rss_per_connection(&self) -> f64 {
        self.rss_end.saturating_sub(self.rss_start) as f64 / self.held_at_end.max(1) as f64
    }

    /// Errors by kind over every type.
    pub fn errors_by_kind(&self) -> BTreeMap<&'static str, u64> {
        let mut all = BTreeMap::new();
        for c in &self.tally.counters {
            for (k, v) in &c.errors {
                *all.entry(*k).or_insert(0) += v;
            }
        }
        all
    }

    /// The report as JSON, with the run's parameters.
    pub fn to_json(&self, parameters: &BTreeMap<String, String>) -> String {
        let reports: Vec<(Op, Report)> = Op::ALL.iter().map(|op| (*op, self.report(*op))).collect();
        let keyed = |m: &BTreeMap<u16, u64>| m.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        let json = JsonWs {
            duration_s: self.hold.as_secs_f64(),
            connections: Connections {
                requested: self.requested,
                subscribed: self.subscribed,
                held_at_end: self.held_at_end,
                connect_ramp_s: self.ramp.as_secs_f64(),
                connect_rate_per_s: self.connect_rate(),
            },
            types: reports
                .iter()
                .map(|(op, r)| (op.name(), r.section()))
                .collect(),
            errors_by_kind: self.errors_by_kind(),
            close_codes: keyed(&self.tally.close_codes),
            handshake_statuses: keyed(&self.tally.statuses),
            seq_gaps: self.tally.seq_gaps,
            generator: Generator {
                rss_bytes_start: self.rss_start,
                rss_bytes_end: self.rss_end,
                rss_bytes_per_connection: self.rss_per_connection(),
                fd_limit: self.fd_limit,
                threads: self.threads,
            },
            machine: Machine::current(),
            parameters,
        };
        sonic_rs::to_string_pretty(&json).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// A table for people.
    pub fn table(&self) -> String {
        let mut out = format!(
            "connections  requested {}  subscribed {}  held at end {}  ramp {:.2} s ({:.0}/s)\n",
            self.requested,
            self.subscribed,
            self.held_at_end,
            self.ramp.as_secs_f64(),
            self.connect_rate()
        );
        for op in Op::ALL {
            out.push_str(&self.report(op).type_line(op.name(), 12));
        }
        let errors = self.errors_by_kind();
        if !errors.is_empty() {
            out.push_str(&format!("errors       {errors:?}\n"));
        }
        if !self.tally.close_codes.is_empty() {
            out.push_str(&format!("close codes  {:?}\n", self.tally.close_codes));
        }
        if !self.tally.statuses.is_empty() {
            out.push_str(&format!("statuses     {:?}\n", self.tally.statuses));
        }
        if self.tally.seq_gaps > 0 {
            out.push_str(&format!("seq gaps     {}\n", self.tally.seq_gaps));
        }
        out.push_str(&format!(
            "generator    RSS {:.1} MiB -> {:.1} MiB, {:.0} bytes per held connection; fd limit {}; {} thread(s)\n",
            self.rss_start as f64 / 1048576.0,
            self.rss_end as f64 / 1048576.0,
            self.rss_per_connection(),
            self.fd_limit,
            self.threads
        ));
        out
    }
}

/// One request type in one interval of the time series.
#[derive(Debug, Clone, Serialize)]
pub struct TypePoint {
    /// Completed in the interval.
    pub completed: u64,
    /// Completed per second.
    pub throughput_per_s: f64,
    /// Errors in the interval.
    pub errors: u64,
    /// Sent late in the interval.
    pub late: u64,
    /// Latency percentiles of the interval.
    pub latency_ms: Percentiles,
}

impl TypePoint {
    /// The point of one type's interval report.
    pub fn of(r: &Report) -> TypePoint {
        TypePoint {
            completed: r.counters.completed,
            throughput_per_s: r.throughput(),
            errors: r.errors(),
            late: r.counters.late,
            latency_ms: r.percentiles(),
        }
    }
}

/// One interval of a WebSocket run (`--series`, NDJSON, and the progress line).
#[derive(Debug, Clone, Serialize)]
pub struct WsSeriesPoint {
    /// Seconds since the start of the run (the first scheduled connect).
    pub t_s: f64,
    /// Connections subscribed at the end of the interval.
    pub held: i64,
    /// Errors of every type in the interval.
    pub errors: u64,
    /// Per request type.
    pub types: BTreeMap<&'static str, TypePoint>,
}

impl WsSeriesPoint {
    /// The point of interval `index` (each `step` long) from its tally.
    pub fn new(index: u64, step: Duration, held: i64, tally: &Tally) -> WsSeriesPoint {
        let types = Op::ALL
            .iter()
            .map(|op| (op.name(), TypePoint::of(&tally.report(*op, step))))
            .collect();
        WsSeriesPoint {
            t_s: (index + 1) as f64 * step.as_secs_f64(),
            held,
            errors: tally.errors(),
            types,
        }
    }

    /// The progress line.
    pub fn line(&self) -> String {
        let mut out = format!("[{:>7.1}s] held {:>7}", self.t_s, self.held);
        for (name, p) in &self.types {
            if p.completed == 0 && p.errors == 0 {
                continue;
            }
            out.push_str(&format!(
                "  {name} {:.0}/s p50 {:.3} p99 {:.3} ms",
                p.throughput_per_s, p.latency_ms.p50, p.latency_ms.p99
            ));
        }
        out.push_str(&format!("  errors {}", self.errors));
        out
    }
}
