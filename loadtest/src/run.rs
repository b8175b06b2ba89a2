//! The HTTP load engine: one pinned monoio thread per CPU given, connections split across them,
//! closed loop (next request when the previous answered) or open loop at a constant rate.
//!
//! Open loop follows wrk2: each connection has a fixed schedule (`connections / rate` seconds
//! apart, staggered), a request's latency is measured from its **intended** send time, so a
//! server that stalls is charged for every request that should have gone out meanwhile (no
//! coordinated omission). A request sent more than one interval after its intended time is
//! counted as `late`; it is still sent and measured from its intended time. Connections wait
//! for their send times with a [`Pacer`] (a timerfd, microsecond precision), not monoio's
//! millisecond timer.

use crate::client::{Connection, ExchangeError};
use crate::pace::Pacer;
use crate::report::{Counters, Report};
use bytes::Bytes;
use hdrhistogram::Histogram;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// One HTTP load run.
#[derive(Debug, Clone)]
pub struct HttpLoad {
    /// Target address.
    pub addr: SocketAddr,
    /// The request bytes sent on every exchange.
    pub request: Bytes,
    /// Connections in total.
    pub connections: usize,
    /// Total requests per second (open loop); `None` = closed loop.
    pub rate: Option<f64>,
    /// Measured duration.
    pub duration: Duration,
    /// Unmeasured warm-up before it.
    pub warmup: Duration,
    /// CPUs to run on, one thread each.
    pub cpus: Vec<usize>,
    /// Length of the intervals of the time series and the progress line.
    pub interval: Duration,
    /// Open-loop phases, back to back from the end of the warm-up (the warm-up runs at the
    /// first phase's starting rate). When set, they replace `rate` and `duration`.
    pub phases: Vec<Phase>,
    /// What each exchange is: the HTTP/1.1 `request`, or a gRPC unary call.
    pub protocol: Protocol,
    /// How long one exchange may take before it counts as a `timeout` error and its
    /// connection is closed (the next exchange opens a new one).
    pub timeout: Duration,
}

/// The exchange timeout when none is given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The protocol of a load run.
#[derive(Debug, Clone, Default)]
pub enum Protocol {
    /// HTTP/1.1: `HttpLoad::request` on a keep-alive connection.
    #[default]
    Http,
    /// gRPC unary calls over one HTTP/2 connection per load connection.
    Grpc(GrpcCall),
}

/// One gRPC unary call, repeated.
#[derive(Debug, Clone)]
pub struct GrpcCall {
    /// `/package.Service/Method`.
    pub path: String,
    /// The encoded request message.
    pub message: Bytes,
    /// More request messages: when not empty, calls send `message` and these in turn, round
    /// robin over each load thread's calls (e.g. distinct tokens, so a server's cache misses).
    pub more_messages: std::sync::Arc<[Bytes]>,
    /// Metadata sent with every call, e.g. `authorization`.
    pub metadata: Vec<(String, String)>,
}

/// One phase of an open-loop run: a constant rate, or a linear ramp.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    /// How long it lasts.
    pub duration: Duration,
    /// Requests per second at its start.
    pub rate: f64,
    /// Requests per second at its end (a ramp); `None` = constant.
    pub ramp_to: Option<f64>,
}

impl HttpLoad {
    /// The total rate `t` seconds after the end of the warm-up (`None` = closed loop).
    pub fn rate_at(&self, t: f64) -> Option<f64> {
        if self.phases.is_empty() {
            return self.rate;
        }
        rate_at(&self.phases, t)
    }

    /// Time between two requests of one connection at `t` seconds after the warm-up.
    fn step_at(&self, t: f64) -> Option<Duration> {
        self.rate_at(t)
            .filter(|r| *r > 0.0)
            .map(|r| Duration::from_secs_f64(self.connections as f64 / r))
    }

    /// The open-loop schedule of connection `index` in a run that starts at `start`: its
    /// intended send times, up to the end of the run. Empty in closed loop, where a request is
    /// due when the previous one is answered.
    ///
    /// The connections' schedules are staggered evenly over one step; each next time is one
    /// step (at the rate in force at the previous one) later, whenever the request is really
    /// sent, so a late connection keeps its schedule and catches up.
    pub fn schedule(&self, start: Instant, index: usize) -> impl Iterator<Item = Instant> + '_ {
        let measure_from = start + self.warmup;
        let end = measure_from + self.duration;
        std::iter::successors(self.first_due(start, index), move |&due| {
            self.next_due(due, measure_from)
        })
        .take_while(move |&due| due < end)
    }

    /// The first intended send time of connection `index` (`None` in closed loop).
    fn first_due(&self, start: Instant, index: usize) -> Option<Instant> {
        self.step_at(0.0)
            .map(|step| start + step.mul_f64(index as f64 / self.connections as f64))
    }

    /// The intended send time after `due` (`None` in closed loop).
    fn next_due(&self, due: Instant, measure_from: Instant) -> Option<Instant> {
        let since = due.saturating_duration_since(measure_from).as_secs_f64();
        self.step_at(since).map(|step| due + step)
    }
}

/// The rate of back-to-back `phases` at `t` seconds from their start (the last phase's final
/// rate after their end; `None` without phases).
pub fn rate_at(phases: &[Phase], t: f64) -> Option<f64> {
    let mut begin = 0.0;
    for phase in phases {
        let length = phase.duration.as_secs_f64();
        if t < begin + length || std::ptr::eq(phase, phases.last()?) {
            let into = ((t - begin) / length).clamp(0.0, 1.0);
            let end_rate = phase.ramp_to.unwrap_or(phase.rate);
            return Some(phase.rate + (end_rate - phase.rate) * into);
        }
        begin += length;
    }
    None
}

/// Builds the request bytes for `method url` with extra headers and a body.
pub fn build_request(
    method: &str,
    host: &str,
    path: &str,
    headers: &[String],
    body: &[u8],
) -> Bytes {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    for h in headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    if !body.is_empty() {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    Bytes::from(bytes)
}

/// Raises RLIMIT_NOFILE to its hard limit (many connections need many descriptors).
pub fn raise_fd_limit() {
    // SAFETY: plain getrlimit/setrlimit on an initialised struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Runs the load and returns the merged report.
pub fn run_http(load: &HttpLoad) -> anyhow::Result<Report> {
    run_http_with(load, |_, _, _| {})
}

/// Like [`run_http`], calling `on_interval(index, histogram, counters)` with the merged
/// figures of every interval (`HttpLoad::interval`) as soon as all threads have reported it.
pub fn run_http_with(
    load: &HttpLoad,
    mut on_interval: impl FnMut(u64, &Histogram<u64>, &Counters),
) -> anyhow::Result<Report> {
    raise_fd_limit();
    let (sender, receiver) = std::sync::mpsc::channel::<Tick>();
    let ticks = Some(sender);
    let threads = load.cpus.len().max(1);
    // Everyone starts together, a little after the threads are up.
    let start = Instant::now() + Duration::from_millis(200);
    let mut handles = Vec::new();
    for (t, &cpu) in load.cpus.iter().enumerate() {
        let conns: Vec<usize> = (0..load.connections).filter(|c| c % threads == t).collect();
        let load = load.clone();
        let tx = ticks.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("loadgen-{t}"))
                .spawn(move || {
                    monoio::utils::bind_to_cpu_set(Some(cpu))
                        .map_err(|e| anyhow::anyhow!("pinning to CPU {cpu}: {e}"))?;
                    // epoll, not io_uring: on this engine's one-request-per-connection ping-pong
                    // the io_uring driver ran at ~0.8x of wrk's throughput against the same server
                    // and CPU, the epoll driver at ~1.0x (README, "Against wrk").
                    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                        .enable_timer()
                        .build()?;
                    Ok::<_, anyhow::Error>(rt.block_on(worker(load, conns, start, tx)))
                })?,
        );
    }
    drop(ticks);
    // Merge each interval once every thread has sent it.
    let mut pending: std::collections::BTreeMap<u64, (usize, Histogram<u64>, Counters)> =
        Default::default();
    for tick in receiver {
        let entry = pending
            .entry(tick.index)
            .or_insert_with(|| (0, Report::histogram(), Counters::default()));
        entry.0 += 1;
        let _ = entry.1.add(&tick.histogram);
        entry.2.add(&tick.counters);
        if entry.0 == threads {
            if let Some((_, h, c)) = pending.remove(&tick.index) {
                on_interval(tick.index, &h, &c);
            }
        }
    }
    let mut report = Report::new(load.duration);
    for h in handles {
        let (hist, counters) = h
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
        report.merge(&hist, &counters);
    }
    Ok(report)
}

/// What one load thread has counted since its last tick.
pub(crate) struct Tally {
    histogram: Histogram<u64>,
    counters: Counters,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            histogram: Report::histogram(),
            counters: Counters::default(),
        }
    }
}

/// One interval of one load thread, sent to the reporting thread.
pub struct Tick {
    /// Interval number, from 0 at the end of the warm-up.
    pub index: u64,
    /// Latencies recorded in the interval.
    pub histogram: Histogram<u64>,
    /// Counters of the interval.
    pub counters: Counters,
}

async fn worker(
    load: HttpLoad,
    conns: Vec<usize>,
    start: Instant,
    ticks: Option<std::sync::mpsc::Sender<Tick>>,
) -> (Histogram<u64>, Counters) {
    let tally = Rc::new(RefCell::new(Tally::new()));
    // Thread t of T starts its round robin over the messages t/T of the way along, so two
    // threads do not send the same message at the same time.
    let messages = match &load.protocol {
        Protocol::Grpc(call) => call.more_messages.len() + 1,
        Protocol::Http => 1,
    };
    let thread = conns.first().copied().unwrap_or(0);
    let cursor = Rc::new(std::cell::Cell::new(
        thread * (messages / load.cpus.len().max(1)),
    ));
    let mut tasks = Vec::new();
    for index in conns {
        let load = load.clone();
        tasks.push(monoio::spawn(connection(
            load,
            index,
            start,
            Rc::clone(&tally),
            Rc::clone(&cursor),
        )));
    }
    let mut totals = Tally::new();
    // Every interval, move what the connections counted into the totals and report it.
    let measure_from = start + load.warmup;
    let end = measure_from + load.duration;
    let mut index = 0u64;
    loop {
        let tick_at = measure_from + load.interval * (index as u32 + 1);
        sleep_until(tick_at.min(end)).await;
        let done = std::mem::replace(&mut *tally.borrow_mut(), Tally::new());
        let _ = totals.histogram.add(&done.histogram);
        totals.counters.add(&done.counters);
        if let Some(tx) = &ticks {
            let _ = tx.send(Tick {
                index,
                histogram: done.histogram,
                counters: done.counters,
            });
        }
        index += 1;
        if tick_at >= end {
            break;
        }
    }
    for task in tasks {
        task.await;
    }
    // Whatever completed after the last tick (requests in flight at the end).
    let rest = std::mem::replace(&mut *tally.borrow_mut(), Tally::new());
    let _ = totals.histogram.add(&rest.histogram);
    totals.counters.add(&rest.counters);
    (totals.histogram, totals.counters)
}

async fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        monoio::time::sleep(t - now).await;
    }
}

enum Conn {
    Http(Connection),
    Grpc(sdsim_net::grpc::client::Client),
}

/// One exchange's outcome: an error kind (None = success) and whether to keep the connection.
struct Outcome {
    error: Option<&'static str>,
    keep: bool,
}

/// The request message of the next call: the only one, or the next of the round robin.
fn next_message(call: &GrpcCall, cursor: &std::cell::Cell<usize>) -> Bytes {
    if call.more_messages.is_empty() {
        return call.message.clone();
    }
    let k = cursor.get();
    cursor.set(k.wrapping_add(1));
    match k % (call.more_messages.len() + 1) {
        0 => call.message.clone(),
        i => call.more_messages[i - 1].clone(),
    }
}

async fn exchange(conn: &mut Conn, load: &HttpLoad, cursor: &std::cell::Cell<usize>) -> Outcome {
    match conn {
        Conn::Http(c) => match c.exchange(load.request.clone()).await {
            Ok(x) => Outcome {
                error: match x.status {
                    500.. => Some("status_5xx"),
                    400.. => Some("status_4xx"),
                    _ => None,
                },
                keep: x.reusable,
            },
            Err(ExchangeError::Io(_)) => Outcome {
                error: Some("io"),
                keep: false,
            },
            Err(ExchangeError::Parse(_)) => Outcome {
                error: Some("parse"),
                keep: false,
            },
        },
        Conn::Grpc(client) => {
            let Protocol::Grpc(call) = &load.protocol else {
                unreachable!("a gRPC connection exists only for a gRPC load")
            };
            let mut opts = sdsim_net::grpc::client::CallOptions::default();
            for (k, v) in &call.metadata {
                if let (Ok(k), Ok(v)) = (
                    http::HeaderName::from_bytes(k.as_bytes()),
                    http::HeaderValue::from_str(v),
                ) {
                    opts.metadata.insert(k, v);
                }
            }
            let message = next_message(call, cursor);
            match client.unary_raw(&call.path, &message, opts).await {
                Ok(_) => Outcome {
                    error: None,
                    keep: true,
                },
                Err(status) => Outcome {
                    error: Some(grpc_error_kind(status.code)),
                    keep: status.code != sdsim_net::grpc::Code::Unavailable,
                },
            }
        }
    }
}

/// The error kind of a gRPC status code (`grpc_unavailable`, ...).
pub(crate) fn grpc_error_kind(code: sdsim_net::grpc::Code) -> &'static str {
    use sdsim_net::grpc::Code::*;
    match code {
        Ok => "grpc_ok",
        Cancelled => "grpc_cancelled",
        Unknown => "grpc_unknown",
        InvalidArgument => "grpc_invalid_argument",
        DeadlineExceeded => "grpc_deadline_exceeded",
        NotFound => "grpc_not_found",
        AlreadyExists => "grpc_already_exists",
        PermissionDenied => "grpc_permission_denied",
        ResourceExhausted => "grpc_resource_exhausted",
        FailedPrecondition => "grpc_failed_precondition",
        Aborted => "grpc_aborted",
        OutOfRange => "grpc_out_of_range",
        Unimplemented => "grpc_unimplemented",
        Internal => "grpc_internal",
        Unavailable => "grpc_unavailable",
        DataLoss => "grpc_data_loss",
        Unauthenticated => "grpc_unauthenticated",
    }
}

async fn open(load: &HttpLoad) -> std::io::Result<Conn> {
    match load.protocol {
        Protocol::Http => Connection::connect(load.addr).await.map(Conn::Http),
        Protocol::Grpc(_) => Ok(Conn::Grpc(sdsim_net::grpc::client::Client::new(load.addr))),
    }
}

async fn connection(
    load: HttpLoad,
    index: usize,
    start: Instant,
    tally: Rc<RefCell<Tally>>,
    cursor: Rc<std::cell::Cell<usize>>,
) {
    let measure_from = start + load.warmup;
    let end = measure_from + load.duration;
    let since = |t: Instant| t.saturating_duration_since(measure_from).as_secs_f64();
    // The open-loop schedule, as `HttpLoad::schedule` lists it.
    let mut due = load.first_due(start, index).unwrap_or(start);
    sleep_until(start).await;
    let mut conn: Option<Conn> = None;
    let mut pacer = Pacer::new();
    // One timer per connection, moved later before each exchange: moving a deadline later only
    // updates it (the wheel re-registers the entry when it comes due early), where a fresh
    // `timeout` per exchange inserted and removed a timer-wheel entry every time.
    let mut timer = std::pin::pin!(monoio::time::sleep(load.timeout));
    loop {
        let intended = match load.step_at(since(due)) {
            Some(step) => {
                let now = Instant::now();
                if now < due {
                    pacer.until(due).await;
                } else if now - due > step {
                    tally.borrow_mut().counters.late += u64::from(due >= measure_from);
                }
                due
            }
            None => Instant::now(),
        };
        if intended >= end {
            break;
        }
        let measured = intended >= measure_from;
        if conn.is_none() {
            match open(&load).await {
                Ok(fresh) => {
                    tally.borrow_mut().counters.connects += 1;
                    conn = Some(fresh);
                }
                Err(_) => {
                    tally.borrow_mut().counters.error(measured, "connect");
                    monoio::time::sleep(Duration::from_millis(10)).await;
                    if let Some(next) = load.next_due(due, measure_from) {
                        due = next;
                    }
                    continue;
                }
            }
        }
        let Some(active) = conn.as_mut() else {
            continue;
        };
        tally.borrow_mut().counters.sent += u64::from(measured);
        timer
            .as_mut()
            .reset(monoio::time::Instant::now() + load.timeout);
        let result = monoio::select! {
            outcome = exchange(active, &load, &cursor) => Ok(outcome),
            _ = timer.as_mut() => Err(()),
        };
        let done = Instant::now();
        match result {
            Ok(outcome) => {
                if measured {
                    tally.borrow_mut().counters.completed += 1;
                    let micros = done.saturating_duration_since(intended).as_micros() as u64;
                    let _ = tally
                        .borrow_mut()
                        .histogram
                        .record(micros.clamp(1, Report::MAX_US));
                    if let Some(kind) = outcome.error {
                        tally.borrow_mut().counters.error(true, kind);
                    }
                }
                if !outcome.keep {
                    conn = None;
                    tally.borrow_mut().counters.reconnects += 1;
                }
            }
            Err(_) => {
                tally.borrow_mut().counters.error(measured, "timeout");
                conn = None;
            }
        }
        if let Some(next) = load.next_due(due, measure_from) {
            due = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 4 connections, a 200 ms warm-up, then 200/s for 0.5 s, 400/s for 0.5 s and a ramp from
    /// 400/s to 800/s over 0.5 s, in 250 ms intervals.
    fn phased() -> HttpLoad {
        let phase = |ms, rate, ramp_to| Phase {
            duration: Duration::from_millis(ms),
            rate,
            ramp_to,
        };
        HttpLoad {
            addr: "127.0.0.1:9".parse().unwrap(),
            request: Bytes::new(),
            connections: 4,
            rate: None,
            duration: Duration::from_millis(1500),
            warmup: Duration::from_millis(200),
            cpus: vec![0],
            interval: Duration::from_millis(250),
            phases: vec![
                phase(500, 200.0, None),
                phase(500, 400.0, None),
                phase(500, 400.0, Some(800.0)),
            ],
            protocol: Protocol::Http,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Intended send times of every connection by interval of the measured run, and how many
    /// fall in the warm-up.
    fn scheduled(load: &HttpLoad) -> (Vec<u64>, u64) {
        let start = Instant::now();
        let measure_from = start + load.warmup;
        let intervals = load.duration.as_nanos().div_ceil(load.interval.as_nanos()) as usize;
        let mut per_interval = vec![0; intervals];
        let mut warmup = 0;
        for index in 0..load.connections {
            for due in load.schedule(start, index) {
                match due.checked_duration_since(measure_from) {
                    Some(t) => {
                        per_interval[(t.as_nanos() / load.interval.as_nanos()) as usize] += 1
                    }
                    None => warmup += 1,
                }
            }
        }
        (per_interval, warmup)
    }

    #[test]
    fn phases_set_the_rate_of_every_interval() {
        let (per_interval, warmup) = scheduled(&phased());
        // 50, 50 at 200/s; 100, 100 at 400/s; the ramp 400→800/s averages 500/s and 700/s
        // over its halves: 125 and 175. A step is as long as the rate at its start says, so
        // where the rate rises a connection lags by up to one old step, which shifts a request
        // or two between neighbouring intervals.
        let want = [50, 50, 100, 100, 125, 175];
        for (got, want) in per_interval.iter().zip(want) {
            assert!(got.abs_diff(want) <= 2, "{per_interval:?}");
        }
        assert_eq!(per_interval.len(), want.len());
        assert_eq!(warmup, 40, "the warm-up runs at the first phase's rate");
    }

    #[test]
    fn a_constant_rate_is_staggered_over_the_connections_and_closed_loop_has_no_schedule() {
        let load = HttpLoad {
            rate: Some(400.0),
            phases: Vec::new(),
            ..phased()
        };
        let start = Instant::now();
        // 10 ms apart per connection, the four offset by 2.5 ms from each other.
        let firsts: Vec<Duration> = (0..4)
            .map(|i| load.schedule(start, i).next().unwrap() - start)
            .collect();
        assert_eq!(firsts, [0, 2_500, 5_000, 7_500].map(Duration::from_micros));
        let (per_interval, warmup) = scheduled(&load);
        assert_eq!(per_interval, [100; 6]);
        assert_eq!(warmup, 80);
        let closed = HttpLoad { rate: None, ..load };
        assert_eq!(closed.schedule(start, 0).count(), 0);
    }
}
