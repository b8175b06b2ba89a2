//! The generator measured against targets whose behaviour is known: a fixed delay, a stall, a
//! server that stops answering, and a server that closes every connection. Only 127.0.0.1, a few seconds each.

use sdsim_loadtest::run::{build_request, run_http, HttpLoad};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A thread-per-connection HTTP target; `delay(now_since_start)` says how long to hold a request.
fn target(
    close_each: bool,
    delay: impl Fn(Duration) -> Duration + Send + Sync + 'static,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let delay = Arc::new(delay);
    let started = Instant::now();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let delay = Arc::clone(&delay);
            std::thread::spawn(move || serve(stream, close_each, started, &*delay));
        }
    });
    addr
}

fn serve(
    mut s: TcpStream,
    close_each: bool,
    started: Instant,
    delay: &dyn Fn(Duration) -> Duration,
) {
    let _ = s.set_nodelay(true);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        buf.drain(..end);
        std::thread::sleep(delay(started.elapsed()));
        let conn = if close_each {
            "connection: close\r\n"
        } else {
            ""
        };
        let resp = format!("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n{conn}\r\nok");
        if s.write_all(resp.as_bytes()).is_err() || close_each {
            return;
        }
    }
}

/// The measurements below are about time: run them one at a time, not beside each other.
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

#[test]
fn fixed_latency_is_reported_within_clock_and_scheduling_slack() {
    let _one_at_a_time = serial();
    let addr = target(false, |_| Duration::from_millis(5));
    let report = run_http(&load(addr, 4, None, 1.5)).unwrap();
    let p = report.percentiles();
    assert_eq!(report.errors(), 0);
    assert!(report.counters.completed > 100);
    // 5 ms of server delay, plus loopback and thread wake-ups on a shared 2-core machine.
    assert!(p.p50 >= 5.0 && p.p50 < 7.5, "{p:?}");
    assert!(p.max >= p.p50);
}

#[test]
fn a_stall_shows_in_open_loop_percentiles() {
    let _one_at_a_time = serial();
    // Every request that arrives between 0.7 s and 1.2 s after start waits until 1.2 s.
    let addr = target(false, |t| {
        let (from, to) = (Duration::from_millis(700), Duration::from_millis(1200));
        if t >= from && t < to {
            to - t
        } else {
            Duration::from_micros(200)
        }
    });
    let report = run_http(&load(addr, 4, Some(400.0), 2.0)).unwrap();
    let p = report.percentiles();
    // A closed-loop tool would record ~4 slow requests; from the intended send times, every
    // request scheduled during the stall is late by up to 500 ms: a fifth of the run.
    assert!(p.p90 >= 100.0, "{p:?}");
    assert!(p.p99 >= 400.0, "{p:?}");
    assert!(report.counters.late > 0);
    let sent = report.counters.sent as f64;
    assert!(
        (sent - 800.0).abs() < 80.0,
        "the schedule holds: {sent} sent for 400/s over 2 s"
    );
}

#[test]
fn servers_that_close_every_connection_are_followed() {
    let _one_at_a_time = serial();
    let addr = target(true, |_| Duration::ZERO);
    let report = run_http(&load(addr, 2, None, 0.8)).unwrap();
    assert_eq!(report.errors(), 0, "{:?}", report.counters.errors);
    assert!(report.counters.reconnects > 10);
    assert!(report.counters.connects >= report.counters.reconnects);
}

#[test]
fn unanswered_requests_time_out_and_their_connections_are_replaced() {
    let _one_at_a_time = serial();
    // Requests arriving between 0.4 s and 0.7 s after start are held for 3 s: far past the
    // generator's 300 ms timeout.
    let addr = target(false, |t| {
        if t >= Duration::from_millis(400) && t < Duration::from_millis(700) {
            Duration::from_secs(3)
        } else {
            Duration::from_micros(200)
        }
    });
    let load = HttpLoad {
        timeout: Duration::from_millis(300),
        ..load(addr, 2, None, 1.5)
    };
    let report = run_http(&load).unwrap();
    let timeouts = report.counters.errors.get("timeout").copied().unwrap_or(0);
    // Each connection's request in the window times out once; the requests its replacement
    // sends after 0.7 s are answered at once.
    assert_eq!(
        timeouts, 2,
        "one timeout per connection: {:?}",
        report.counters.errors
    );
    assert_eq!(report.errors(), timeouts, "{:?}", report.counters.errors);
    assert!(
        report.counters.connects >= 4,
        "timed-out connections are replaced: {} connects",
        report.counters.connects
    );
    let p = report.percentiles();
    assert!(
        p.max < 300.0,
        "a timed-out request is an error, not a latency: max {} ms",
        p.max
    );
    assert!(report.counters.completed > 100, "{:?}", report.counters);
}

#[test]
fn the_time_series_covers_the_run_and_adds_up_to_the_report() {
    let _one_at_a_time = serial();
    let addr = target(false, |_| Duration::from_millis(1));
    let mut points = Vec::new();
    let report =
        sdsim_loadtest::run::run_http_with(&load(addr, 4, Some(200.0), 1.0), |index, h, c| {
            points.push((index, h.len(), c.completed));
        })
        .unwrap();
    let indexes: Vec<u64> = points.iter().map(|p| p.0).collect();
    assert_eq!(indexes, [0, 1, 2, 3], "four 250 ms intervals in 1 s");
    let completed: u64 = points.iter().map(|p| p.2).sum();
    assert!(completed <= report.counters.completed);
    assert!(
        report.counters.completed - completed < 10,
        "only requests in flight at the end come after the last tick"
    );
    assert!(
        points.iter().all(|p| p.1 == p.2),
        "one latency per response"
    );
}

#[test]
fn phases_start_and_stop_on_time() {
    let _one_at_a_time = serial();
    let addr = target(false, |_| Duration::from_micros(200));
    let mut l = load(addr, 4, None, 1.5);
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
    // 250 ms intervals: 50, 50 at 200/s; 100, 100 at 400/s; then the ramp 400→800/s
    // (average 500/s and 700/s over its two halves): 125, 175.
    let want = [50.0, 50.0, 100.0, 100.0, 125.0, 175.0];
    assert_eq!(per_interval.len(), want.len(), "{per_interval:?}");
    for (got, want) in per_interval.iter().zip(want) {
        assert!(
            (*got as f64 - want).abs() <= want * 0.08 + 2.0,
            "{per_interval:?}"
        );
    }
    assert_eq!(report.errors(), 0);
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

fn grpc_load(addr: SocketAddr, method: &str, rate: Option<f64>) -> HttpLoad {
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
            metadata: vec![("x-test".into(), "1".into())],
        }),
        ..load(addr, 4, rate, 2.0)
    }
}

#[test]
fn grpc_unary_load_counts_calls_latency_and_status_errors() {
    let _serial = serial();
    let addr = grpc_target();
    // Open loop at 400 calls/s against a 5 ms method: every call completes, latency ≥ 5 ms.
    let report = run_http(&grpc_load(addr, "/grpc.health.v1.Health/Slow", Some(400.0))).unwrap();
    let c = &report.counters;
    assert!((750..=850).contains(&c.completed), "{c:?}");
    assert!(c.errors.is_empty(), "{c:?}");
    let p50 = report.histogram.value_at_quantile(0.5);
    assert!((5_000..20_000).contains(&p50), "p50 {p50} µs");
    // A method the server does not have: every call is an error of that kind.
    let report = run_http(&grpc_load(addr, "/grpc.health.v1.Health/Missing", None)).unwrap();
    let c = &report.counters;
    assert!(c.completed > 100);
    assert_eq!(c.errors.get("grpc_unimplemented"), Some(&c.completed));
}
