//! Open-loop HTTP load whose answers are told apart by outcome: **admitted** (2xx), **shed**
//! (503) and everything else (other statuses, I/O errors, timeouts). A load-shedding server
//! answers most requests with a quick 503 when overloaded, so one histogram over every answer
//! would report the refusals' speed as if it were the service's; here only admitted answers
//! make the latency figures, and goodput counts only them.
//!
//! The schedule is wrk2's (as in `sdsim_loadtest::run`): each connection has a fixed send
//! time every `connections / rate` seconds, staggered, and a request's latency is measured from
//! its **intended** send time, so a connection stuck behind a slow answer is charged for the
//! requests it could not send meanwhile. A connection that falls behind keeps going after the
//! measured window until its schedule reaches the window's end: every request intended in the
//! window gets an answer and a latency. Goodput and the per-interval series count answers by
//! the time they **arrived**, inside the window only, so a run that overruns is not credited
//! with work done after it.
//!
//! One thread pinned to one CPU, epoll driver (the engine of `sdsim-loadtest` is faster on
//! epoll for this one-request-per-connection ping-pong). The timer wheel has 1 ms resolution:
//! a request can leave up to ~1 ms after its intended time, and that delay is counted.

use crate::thread_cpu;
use bytes::Bytes;
use hdrhistogram::Histogram;
use sdsim_loadtest::client::{Connection, ExchangeError};
use sdsim_loadtest::report::Report;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// One load run.
#[derive(Debug, Clone)]
pub struct SplitLoad {
    /// Target address.
    pub addr: SocketAddr,
    /// The request bytes sent on every exchange.
    pub request: Bytes,
    /// Keep-alive connections, one request in flight on each.
    pub connections: usize,
    /// Requests per second over all connections; `None` = closed loop.
    pub rate: Option<f64>,
    /// When the warm-up begins (all connections start together).
    pub start: Instant,
    /// Unmeasured warm-up.
    pub warmup: Duration,
    /// The measured window, after the warm-up.
    pub duration: Duration,
    /// The CPU the generator thread is pinned to.
    pub cpu: usize,
    /// How long one exchange may take before it counts as a timeout (the connection is then
    /// replaced).
    pub timeout: Duration,
    /// Length of the intervals of [`SplitReport::series`].
    pub bucket: Duration,
}

impl SplitLoad {
    /// Start of the measured window.
    pub fn measure_from(&self) -> Instant {
        self.start + self.warmup
    }

    /// End of the measured window.
    pub fn end(&self) -> Instant {
        self.measure_from() + self.duration
    }
}

/// Answers in one interval of the window, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bucket {
    /// 2xx answers.
    pub admitted: u64,
    /// 503 answers.
    pub shed: u64,
    /// Other statuses, errors and timeouts.
    pub other: u64,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct SplitReport {
    /// Latency (µs, from the intended send time) of admitted answers to requests intended in
    /// the window.
    pub admitted: Histogram<u64>,
    /// The same answers' exchange time (µs, from the moment the request was sent): what the
    /// server took, without the time the request waited in the generator for its connection.
    pub admitted_exchange: Histogram<u64>,
    /// Latency (µs) of the 503 answers to requests intended in the window.
    pub shed: Histogram<u64>,
    /// Other outcomes of requests intended in the window, by kind (`status_404`, `io`,
    /// `timeout`, `connect`, ...).
    pub other: BTreeMap<String, u64>,
    /// Requests intended in the window that were sent.
    pub sent: u64,
    /// Requests sent during the window, whenever they were intended: the load the server was
    /// actually offered (below the schedule when connections are stuck behind slow answers).
    pub sent_in_window: u64,
    /// Of those, sent more than one schedule step after their intended time.
    pub late: u64,
    /// Connections opened (the first ones included).
    pub connects: u64,
    /// Answers that arrived in the window, by interval of [`SplitLoad::bucket`].
    pub series: Vec<Bucket>,
    /// CPU time the generator thread used during the window.
    pub generator_cpu: Duration,
    /// Time the generator thread spent runnable but waiting for its CPU during the window
    /// (other processes on it): a generator that waits sends late.
    pub generator_cpu_wait: Duration,
    /// The window's length.
    pub duration: Duration,
}

impl SplitReport {
    fn new(load: &SplitLoad) -> SplitReport {
        let buckets = (load.duration.as_secs_f64() / load.bucket.as_secs_f64()).ceil() as usize;
        SplitReport {
            admitted: Report::histogram(),
            admitted_exchange: Report::histogram(),
            shed: Report::histogram(),
            other: BTreeMap::new(),
            sent: 0,
            sent_in_window: 0,
            late: 0,
            connects: 0,
            series: vec![Bucket::default(); buckets.max(1)],
            generator_cpu: Duration::ZERO,
            generator_cpu_wait: Duration::ZERO,
            duration: load.duration,
        }
    }

    /// Admitted answers per second that arrived in the window.
    pub fn goodput(&self) -> f64 {
        self.series.iter().map(|b| b.admitted).sum::<u64>() as f64 / self.duration.as_secs_f64()
    }

    /// 503 answers that arrived in the window.
    pub fn shed_in_window(&self) -> u64 {
        self.series.iter().map(|b| b.shed).sum()
    }

    /// Admitted answers that arrived in the window.
    pub fn admitted_in_window(&self) -> u64 {
        self.series.iter().map(|b| b.admitted).sum()
    }

    /// Answers of every kind that arrived in the window.
    pub fn answered_in_window(&self) -> u64 {
        self.series
            .iter()
            .map(|b| b.admitted + b.shed + b.other)
            .sum()
    }

    /// Every outcome that is neither admitted nor shed.
    pub fn other_total(&self) -> u64 {
        self.other.values().sum()
    }

    /// Admitted latency percentiles in ms: p50, p99, p99.9, max (NaN when nothing was
    /// admitted).
    pub fn admitted_ms(&self) -> [f64; 4] {
        percentiles_ms(&self.admitted)
    }

    /// The same for the 503 answers.
    pub fn shed_ms(&self) -> [f64; 4] {
        percentiles_ms(&self.shed)
    }
}

/// p50, p99, p99.9 and max of a µs histogram, in ms (NaN when empty).
pub fn percentiles_ms(h: &Histogram<u64>) -> [f64; 4] {
    if h.is_empty() {
        return [f64::NAN; 4];
    }
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
    [ms(0.5), ms(0.99), ms(0.999), h.max() as f64 / 1e3]
}

/// Runs the load on a new thread pinned to `load.cpu` and waits for it to finish.
pub fn run(load: &SplitLoad) -> anyhow::Result<SplitReport> {
    spawn(load)?
        .join()
        .map_err(|_| anyhow::anyhow!("the load thread panicked"))?
}

/// Starts the load on a new thread pinned to `load.cpu` (the caller can watch the server
/// meanwhile; the load begins at `load.start`).
pub fn spawn(
    load: &SplitLoad,
) -> std::io::Result<std::thread::JoinHandle<anyhow::Result<SplitReport>>> {
    sdsim_loadtest::run::raise_fd_limit();
    let load = load.clone();
    std::thread::Builder::new().name("split-load".into()).spawn(
        move || -> anyhow::Result<SplitReport> {
            monoio::utils::bind_to_cpu_set(Some(load.cpu))
                .map_err(|e| anyhow::anyhow!("pinning to CPU {}: {e}", load.cpu))?;
            let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .build()?;
            Ok(rt.block_on(generate(load)))
        },
    )
}

async fn generate(load: SplitLoad) -> SplitReport {
    let load = Rc::new(load);
    let report = Rc::new(RefCell::new(SplitReport::new(&load)));
    let tasks: Vec<_> = (0..load.connections)
        .map(|i| monoio::spawn(connection(Rc::clone(&load), i, Rc::clone(&report))))
        .collect();
    // The generator's own CPU over the window: a saturated generator sends late, and the
    // report must be able to say so.
    sleep_until(load.measure_from()).await;
    let (cpu_from, wait_from) = (thread_cpu(), thread_cpu_wait());
    sleep_until(load.end()).await;
    report.borrow_mut().generator_cpu = thread_cpu().saturating_sub(cpu_from);
    report.borrow_mut().generator_cpu_wait = thread_cpu_wait().saturating_sub(wait_from);
    for task in tasks {
        task.await;
    }
    let done = report.borrow().clone();
    done
}

/// Time the calling thread has spent waiting on a run queue (`/proc/thread-self/schedstat`,
/// second field, ns); zero where the kernel does not keep it.
fn thread_cpu_wait() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

async fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        monoio::time::sleep(t - now).await;
    }
}

/// How one exchange ended.
enum Outcome {
    Answered { status: u16, reusable: bool },
    Failed(&'static str),
    TimedOut,
}

async fn connection(load: Rc<SplitLoad>, index: usize, report: Rc<RefCell<SplitReport>>) {
    let (measure_from, end) = (load.measure_from(), load.end());
    let step = load
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(load.connections as f64 / r));
    let mut due = load.start
        + step.map_or(Duration::ZERO, |s| {
            s.mul_f64(index as f64 / load.connections as f64)
        });
    let mut conn: Option<Connection> = None;
    // One timer per connection, moved later before each exchange (cheaper than a new
    // timer-wheel entry per request).
    let mut timer = std::pin::pin!(monoio::time::sleep(load.timeout));
    sleep_until(load.start).await;
    loop {
        let intended = match step {
            Some(step) => {
                let now = Instant::now();
                if now < due {
                    sleep_until(due).await;
                } else if now - due > step && due >= measure_from {
                    report.borrow_mut().late += 1;
                }
                let intended = due;
                due += step;
                intended
            }
            None => Instant::now(),
        };
        if intended >= end {
            break;
        }
        let measured = intended >= measure_from;
        if conn.is_none() {
            match Connection::connect(load.addr).await {
                Ok(fresh) => {
                    report.borrow_mut().connects += 1;
                    conn = Some(fresh);
                }
                Err(_) => {
                    if measured {
                        *report
                            .borrow_mut()
                            .other
                            .entry("connect".into())
                            .or_insert(0) += 1;
                    }
                    monoio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(active) = conn.as_mut() else {
            continue;
        };
        let sent = Instant::now();
        {
            let mut r = report.borrow_mut();
            r.sent += u64::from(measured);
            r.sent_in_window += u64::from(sent >= measure_from && sent < end);
        }
        timer
            .as_mut()
            .reset(monoio::time::Instant::now() + load.timeout);
        let outcome = monoio::select! {
            result = active.exchange(load.request.clone()) => match result {
                Ok(x) => Outcome::Answered { status: x.status, reusable: x.reusable },
                Err(ExchangeError::Io(_)) => Outcome::Failed("io"),
                Err(ExchangeError::Parse(_)) => Outcome::Failed("parse"),
            },
            _ = timer.as_mut() => Outcome::TimedOut,
        };
        let done = Instant::now();
        let keep = matches!(outcome, Outcome::Answered { reusable: true, .. });
        record(
            &load,
            &mut report.borrow_mut(),
            &outcome,
            Times {
                intended,
                sent,
                done,
            },
        );
        if !keep {
            conn = None;
        }
    }
}

/// When one request was meant to leave, left, and was answered.
#[derive(Clone, Copy)]
struct Times {
    intended: Instant,
    sent: Instant,
    done: Instant,
}

fn micros(from: Instant, to: Instant) -> u64 {
    (to.saturating_duration_since(from).as_micros() as u64).clamp(1, Report::MAX_US)
}

/// Counts one outcome: in the latency figures if it was intended in the window, in the series
/// if it arrived in the window.
fn record(load: &SplitLoad, report: &mut SplitReport, outcome: &Outcome, times: Times) {
    let (measure_from, end) = (load.measure_from(), load.end());
    let Times {
        intended,
        sent,
        done,
    } = times;
    let latency = micros(intended, done);
    let kind = match outcome {
        Outcome::Answered { status, .. } => *status,
        _ => 0,
    };
    if intended >= measure_from {
        match outcome {
            Outcome::Answered {
                status: 200..=299, ..
            } => {
                let _ = report.admitted.record(latency);
                let _ = report.admitted_exchange.record(micros(sent, done));
            }
            Outcome::Answered { status: 503, .. } => {
                let _ = report.shed.record(latency);
            }
            Outcome::Answered { status, .. } => {
                *report.other.entry(format!("status_{status}")).or_insert(0) += 1;
            }
            Outcome::Failed(what) => *report.other.entry((*what).into()).or_insert(0) += 1,
            Outcome::TimedOut => *report.other.entry("timeout".into()).or_insert(0) += 1,
        }
    }
    if done >= measure_from && done < end {
        let at = done.duration_since(measure_from).as_secs_f64() / load.bucket.as_secs_f64();
        let last = report.series.len() - 1;
        let bucket = &mut report.series[(at as usize).min(last)];
        match kind {
            200..=299 => bucket.admitted += 1,
            503 => bucket.shed += 1,
            _ => bucket.other += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A 1 s window after 1 s of warm-up, in 100 ms intervals.
    fn load() -> SplitLoad {
        SplitLoad {
            addr: "127.0.0.1:9".parse().unwrap(),
            request: Bytes::new(),
            connections: 1,
            rate: Some(100.0),
            start: Instant::now(),
            warmup: 1000 * MS,
            duration: 1000 * MS,
            cpu: 0,
            timeout: 1000 * MS,
            bucket: 100 * MS,
        }
    }

    fn answered(status: u16) -> Outcome {
        Outcome::Answered {
            status,
            reusable: true,
        }
    }

    #[test]
    fn refusals_and_failures_never_count_as_admitted_work() {
        let load = load();
        let mut report = SplitReport::new(&load);
        let at = |ms: u32| load.measure_from() + MS * ms;
        let times = |intended: u32, sent: u32, done: u32| Times {
            intended: at(intended),
            sent: at(sent),
            done: at(done),
        };
        record(&load, &mut report, &answered(200), times(10, 12, 14));
        record(&load, &mut report, &answered(204), times(20, 20, 21));
        record(&load, &mut report, &answered(503), times(110, 110, 111));
        record(&load, &mut report, &answered(404), times(120, 120, 121));
        record(
            &load,
            &mut report,
            &Outcome::Failed("io"),
            times(130, 130, 131),
        );
        record(
            &load,
            &mut report,
            &Outcome::TimedOut,
            times(140, 140, 1140),
        );
        assert_eq!(report.admitted.len(), 2);
        assert!(
            report.admitted.equivalent(report.admitted.max(), 4000),
            "µs from the intended send time: {}",
            report.admitted.max()
        );
        assert!(
            report
                .admitted_exchange
                .equivalent(report.admitted_exchange.max(), 2000),
            "µs from the actual send: {}",
            report.admitted_exchange.max()
        );
        assert_eq!(report.shed.len(), 1);
        assert_eq!(report.other.get("status_404"), Some(&1));
        assert_eq!(report.other.get("io"), Some(&1));
        assert_eq!(report.other.get("timeout"), Some(&1));
        assert_eq!(report.other_total(), 3);
        // The timeout arrived after the window: in the outcome counts, not in the series.
        assert_eq!(
            report.series[..2],
            [
                Bucket {
                    admitted: 2,
                    shed: 0,
                    other: 0
                },
                Bucket {
                    admitted: 0,
                    shed: 1,
                    other: 2
                }
            ]
        );
        assert_eq!(report.answered_in_window(), 5);
        assert_eq!(report.goodput(), 2.0);
    }

    #[test]
    fn goodput_counts_answers_by_arrival_and_latency_by_intention() {
        let load = load();
        let mut report = SplitReport::new(&load);
        let at = |ms: i64| {
            if ms < 0 {
                load.measure_from() - MS * (-ms) as u32
            } else {
                load.measure_from() + MS * ms as u32
            }
        };
        // Intended in the warm-up, answered in the window: server work done in the window,
        // but not a latency of the window.
        let times = |intended: i64, done: i64| Times {
            intended: at(intended),
            sent: at(intended),
            done: at(done),
        };
        record(&load, &mut report, &answered(200), times(-500, 50));
        // Intended in the window, answered after it: a latency of the window, not goodput.
        record(&load, &mut report, &answered(200), times(900, 1500));
        assert_eq!(report.admitted.len(), 1);
        assert!(report.admitted.equivalent(report.admitted.max(), 600_000));
        assert_eq!(report.admitted_in_window(), 1);
        assert_eq!(report.series[0].admitted, 1);
        assert_eq!(report.series.len(), 10);
    }
}
