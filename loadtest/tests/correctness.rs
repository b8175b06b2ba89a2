//! The generator measured against targets whose behaviour is known: a fixed delay, a stall, a
//! server that stops answering, and a server that closes every connection. Only 127.0.0.1, a
//! few seconds each. The targets decide by request counts, not by the clock, and the
//! assertions are on what the generator decided (its schedule, its counts, latencies the
//! target guarantees at least), never on what a busy machine's clock happened to allow.

use sdsim_loadtest::run::{build_request, run_http, HttpLoad};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// One request as the target reads it.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// Its connection, numbered in the order the target accepted them (from 0).
    connection: usize,
    /// Its place on that connection (from 0).
    nth: u64,
    /// Its place among all the requests the target has read (from 0).
    overall: u64,
}

/// What the target does with one request.
enum Reply {
    /// Answers after this long.
    After(Duration),
    /// Never answers: holds the connection, reading nothing more, until the client closes it.
    Never,
}

/// A thread-per-connection HTTP/1.1 target whose `reply` decides what to do with each request.
struct Target {
    addr: SocketAddr,
    /// Responses written.
    answered: Arc<AtomicU64>,
}

fn target(close_each: bool, reply: impl Fn(Seen) -> Reply + Send + Sync + 'static) -> Target {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let reply = Arc::new(reply);
    let answered = Arc::new(AtomicU64::new(0));
    let read = Arc::new(AtomicU64::new(0));
    let accepted = AtomicUsize::new(0);
    let counter = Arc::clone(&answered);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let connection = accepted.fetch_add(1, Ordering::SeqCst);
            let (reply, read, answered) =
                (Arc::clone(&reply), Arc::clone(&read), Arc::clone(&counter));
            std::thread::spawn(move || {
                serve(stream, close_each, connection, &read, &answered, &*reply)
            });
        }
    });
    Target { addr, answered }
}

fn serve(
    mut s: TcpStream,
    close_each: bool,
    connection: usize,
    read: &AtomicU64,
    answered: &AtomicU64,
    reply: &dyn Fn(Seen) -> Reply,
) {
    let _ = s.set_nodelay(true);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    for nth in 0.. {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        buf.drain(..end);
        let seen = Seen {
            connection,
            nth,
            overall: read.fetch_add(1, Ordering::SeqCst),
        };
        match reply(seen) {
            Reply::After(delay) => std::thread::sleep(delay),
            Reply::Never => {
                while matches!(s.read(&mut chunk), Ok(n) if n > 0) {}
                return;
            }
        }
        let conn = if close_each {
            "connection: close\r\n"
        } else {
            ""
        };
        let resp = format!("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n{conn}\r\nok");
        if s.write_all(resp.as_bytes()).is_err() {
            return;
        }
        answered.fetch_add(1, Ordering::SeqCst);
        if close_each {
            return;
        }
    }
}

/// The runs pin their threads to CPU 0 and each takes a few seconds: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn load(addr: SocketAddr, connections: usize, rate: Option<f64>, seconds: f64) -> HttpLoad {
    HttpLoad {
        addr,
        request: build_request("GET", "t", "/", &[], b""),
        connections,
        rate,
        duration: Duration::from_secs_f64(seconds),
        warmup: Duration::from_millis(200),
        cpus: vec![0],
        interval: Duration::from_millis(250),
        phases: Vec::new(),
        timeout: sdsim_loadtest::run::DEFAULT_TIMEOUT,
        protocol: Default::default(),
    }
}

/// The requests the open-loop schedule of `load` puts in its measured window: an open-loop
/// run sends every one of them, however late.
fn scheduled(load: &HttpLoad) -> u64 {
    let start = Instant::now();
    let measure_from = start + load.warmup;
    (0..load.connections)
        .map(|i| {
            load.schedule(start, i)
                .filter(|t| *t >= measure_from)
                .count() as u64
        })
        .sum()
}

/// Closed loop keeps one request outstanding per connection all the time, so the latencies
/// recorded add up to connections × duration (Little's law), give or take the one request
/// per connection that straddles each end of the window.
fn assert_latencies_fill_the_run(report: &sdsim_loadtest::report::Report, connections: usize) {
    let recorded = report.histogram.mean() * report.histogram.len() as f64 / 1e6;
    let busy = connections as f64 * report.duration.as_secs_f64();
    assert!(
        (recorded - busy).abs() <= busy * 0.1,
        "{recorded:.3} s of latency recorded over {busy:.3} s of busy connections: {:?}",
        report.counters
    );
}

#[test]
fn fixed_latency_is_reported_and_the_latencies_account_for_the_run() {
    let _one_at_a_time = serial();
    let target = target(false, |_| Reply::After(Duration::from_millis(5)));
    let report = run_http(&load(target.addr, 4, None, 1.5)).unwrap();
    let p = report.percentiles();
    assert_eq!(report.errors(), 0, "{:?}", report.counters);
    assert_eq!(report.histogram.len(), report.counters.completed);
    assert!(report.counters.completed > 0);
    // The target holds every request 5 ms: no latency can be less (from the intended send
    // time, which is before the request is written).
    assert!(p.p50 >= 5.0 && report.histogram.min() >= 5_000, "{p:?}");
    assert!(p.max >= p.p50);
    assert_latencies_fill_the_run(&report, 4);
}

#[test]
fn a_stall_shows_in_open_loop_percentiles() {
    let _one_at_a_time = serial();
    // When the target reads its 200th request (0.5 s into the schedule, so 0.3 s into the
    // measured window), it stalls for 500 ms: every request it reads meanwhile waits until the
    // stall ends. The clock decides only how long the stall lasts, never where it falls.
    let stall_ends = Arc::new(OnceLock::<Instant>::new());
    let target = target(false, move |seen| {
        if seen.overall == 199 {
            let _ = stall_ends.set(Instant::now() + Duration::from_millis(500));
        }
        match stall_ends.get() {
            Some(end) => Reply::After(end.saturating_duration_since(Instant::now())),
            None => Reply::After(Duration::ZERO),
        }
    });
    let load = load(target.addr, 4, Some(400.0), 2.0);
    let report = run_http(&load).unwrap();
    let p = report.percentiles();
    // A closed-loop tool would record ~4 slow requests. From the intended send times, every
    // request scheduled during the stall waits for its end: 200 requests (a quarter of the run)
    // late by 0 to 500 ms, 160 of them by 100 ms or more and 40 by 400 ms or more.
    assert!(p.p90 >= 100.0, "{p:?}");
    assert!(p.p99 >= 400.0, "{p:?}");
    assert!(report.counters.late > 0);
    assert_eq!(
        report.counters.sent,
        scheduled(&load),
        "the schedule holds through the stall: 400/s over 2 s"
    );
    assert_eq!(report.counters.sent, 800);
    assert_eq!(report.counters.completed, report.counters.sent);
}

#[test]
fn servers_that_close_every_connection_are_followed() {
    let _one_at_a_time = serial();
    let target = target(true, |_| Reply::After(Duration::ZERO));
    let report = run_http(&load(target.addr, 2, None, 0.8)).unwrap();
    let c = &report.counters;
    assert_eq!(report.errors(), 0, "{:?}", c.errors);
    // Every answer closes its connection, and every closed connection is replaced: each
    // connection carries exactly one exchange.
    assert_eq!(c.connects, c.reconnects, "{c:?}");
    assert_eq!(
        c.reconnects,
        target.answered.load(Ordering::SeqCst),
        "{c:?}"
    );
    // More answers than connections at once: some came on replacements.
    assert!(c.completed > 2, "{c:?}");
}

#[test]
fn unanswered_requests_time_out_and_their_connections_are_replaced() {
    let _one_at_a_time = serial();
    // The generator's first two connections each get their third request never answered;
    // every other request is answered at once. No warm-up: every request is measured, so
    // the count of timeouts cannot depend on when the held requests were sent.
    let target = target(false, |seen| {
        if seen.connection < 2 && seen.nth == 2 {
            Reply::Never
        } else {
            Reply::After(Duration::ZERO)
        }
    });
    let load = HttpLoad {
        timeout: Duration::from_millis(500),
        warmup: Duration::ZERO,
        ..load(target.addr, 2, None, 1.5)
    };
    let report = run_http(&load).unwrap();
    let c = &report.counters;
    let timeouts = c.errors.get("timeout").copied().unwrap_or(0);
    assert_eq!(timeouts, 2, "one timeout per connection: {c:?}");
    assert_eq!(report.errors(), timeouts, "{c:?}");
    assert_eq!(
        c.connects, 4,
        "each timed-out connection is replaced once: {c:?}"
    );
    // A timed-out request is an error, not a latency; every other one was answered.
    assert_eq!(c.sent, c.completed + timeouts, "{c:?}");
    assert_eq!(report.histogram.len(), c.completed);
    assert_eq!(target.answered.load(Ordering::SeqCst), c.completed);
    // Two answers on each first connection, then the replacements carry on.
    assert!(c.completed > 4, "{c:?}");
}

#[test]
fn the_time_series_covers_the_run_and_adds_up_to_the_report() {
    let _one_at_a_time = serial();
    let target = target(false, |_| Reply::After(Duration::from_millis(1)));
    let load = load(target.addr, 4, Some(200.0), 1.0);
    let mut points = Vec::new();
    let report = sdsim_loadtest::run::run_http_with(&load, |index, h, c| {
        points.push((index, h.len(), c.completed, c.sent));
    })
    .unwrap();
    let c = &report.counters;
    let indexes: Vec<u64> = points.iter().map(|p| p.0).collect();
    assert_eq!(indexes, [0, 1, 2, 3], "four 250 ms intervals in 1 s");
    assert!(
        points.iter().all(|p| p.1 == p.2),
        "one latency per response"
    );
    let completed: u64 = points.iter().map(|p| p.2).sum();
    let sent: u64 = points.iter().map(|p| p.3).sum();
    assert!(completed <= c.completed && sent <= c.sent);
    // After the last tick come only the answers to the requests then in flight (one per
    // connection at most) and to requests sent after it (by a connection behind schedule).
    assert!(
        c.completed - completed <= (c.sent - sent) + 4,
        "{points:?} {c:?}"
    );
    assert_eq!(c.sent, scheduled(&load));
    assert_eq!(c.completed, c.sent);
}

#[test]
fn phases_decide_how_many_requests_are_sent() {
    let _one_at_a_time = serial();
    let target = target(false, |_| Reply::After(Duration::from_micros(200)));
    let mut l = load(target.addr, 4, None, 1.5);
    l.phases = vec![
        sdsim_loadtest::run::Phase {
            duration: Duration::from_millis(500),
            rate: 200.0,
            ramp_to: None,
        },
        sdsim_loadtest::run::Phase {
            duration: Duration::from_millis(500),
            rate: 400.0,
            ramp_to: None,
        },
        sdsim_loadtest::run::Phase {
            duration: Duration::from_millis(500),
            rate: 400.0,
            ramp_to: Some(800.0),
        },
    ];
    let mut per_interval = Vec::new();
    let report =
        sdsim_loadtest::run::run_http_with(&l, |_, _, c| per_interval.push(c.sent)).unwrap();
    assert_eq!(per_interval.len(), 6, "{per_interval:?}");
    assert_eq!(report.errors(), 0);
    // The run sends exactly what the phases schedule (the schedule's rates per interval are
    // tested in `run`): 100 + 200 + 300 less the lag where the rate rises. When each request
    // leaves is up to the clock; a late one is sent late, not dropped or doubled.
    let want = scheduled(&l);
    assert!((595..=600).contains(&want), "{want}");
    assert_eq!(report.counters.sent, want, "{per_interval:?}");
    assert_eq!(report.counters.completed, want);
    assert!(per_interval.iter().sum::<u64>() <= want);
}

/// A gRPC target on its own monoio thread: grpc.health.v1 plus a method that sleeps 5 ms.
fn grpc_target() -> SocketAddr {
    use sdsim_net::grpc::{health::Health, Call, Services, Settings, Status};
    use std::rc::Rc;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let (_phase_tx, phase) =
                tokio::sync::watch::channel(sdsim_core::shutdown::Phase::Accepting);
            let mut services = Services::new();
            Health::new(&[], phase.clone()).register(&mut services);
            services.unary(
                "/grpc.health.v1.Health/Slow",
                |_c: Call, r: sdsim_net::grpc::pb::health::HealthCheckRequest| async move {
                    monoio::time::sleep(Duration::from_millis(5)).await;
                    Ok::<_, Status>(r)
                },
            );
            let services = Rc::new(services);
            let settings = Rc::new(Settings::default());
            loop {
                let (stream, peer) = listener.accept().await.unwrap();
                use monoio::io::IntoPollIo;
                monoio::spawn(sdsim_net::grpc::server::serve_connection(
                    stream.into_poll_io().unwrap(),
                    peer,
                    Rc::clone(&services),
                    Rc::clone(&settings),
                    phase.clone(),
                ));
            }
        });
    });
    rx.recv().unwrap()
}

/// A closed-loop gRPC load of `method` over 4 connections for 2 s.
fn grpc_load(addr: SocketAddr, method: &str) -> HttpLoad {
    let pool = sdsim_loadtest::grpc::load_pool(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto"),
    )
    .unwrap();
    let known = "/grpc.health.v1.Health/Check";
    let message = sdsim_loadtest::grpc::encode_request(&pool, known, r#"{"service":""}"#).unwrap();
    HttpLoad {
        protocol: sdsim_loadtest::run::Protocol::Grpc(sdsim_loadtest::run::GrpcCall {
            path: method.to_string(),
            message,
            more_messages: Default::default(),
            metadata: vec![("x-test".into(), "1".into())],
        }),
        ..load(addr, 4, None, 2.0)
    }
}

#[test]
fn grpc_unary_load_counts_calls_latency_and_status_errors() {
    let _serial = serial();
    let addr = grpc_target();
    // Closed loop against a 5 ms method: every call completes, none faster than 5 ms, and
    // the latencies account for the run as they do over HTTP.
    let report = run_http(&grpc_load(addr, "/grpc.health.v1.Health/Slow")).unwrap();
    let c = &report.counters;
    assert!(c.errors.is_empty(), "{c:?}");
    assert!(c.completed > 0, "{c:?}");
    assert_eq!(c.completed, c.sent);
    assert_eq!(report.histogram.len(), c.completed);
    let p50 = report.histogram.value_at_quantile(0.5);
    assert!(p50 >= 5_000, "p50 {p50} µs");
    assert_latencies_fill_the_run(&report, 4);
    // A method the server does not have: every call is an error of that kind.
    let report = run_http(&grpc_load(addr, "/grpc.health.v1.Health/Missing")).unwrap();
    let c = &report.counters;
    assert!(c.completed > 0, "{c:?}");
    assert_eq!(c.completed, c.sent);
    assert_eq!(c.errors.get("grpc_unimplemented"), Some(&c.completed));
}
