//! Every wait bounded, no work that holds a shard, headers that protect browsers: the handler
//! deadline (503 `timeout`), large responses compressed on the blocking pool while the shard
//! answers others, large designs refused (413) or validated off the shard, a stop that waits
//! for the run's notification up to `simulation.stop_timeout`, and `X-Content-Type-Options` /
//! `Strict-Transport-Security`.

mod support;

use bytes::Bytes;
use http::{Method, StatusCode};
use sdsim_core::config::Overrides;
use sdsim_net::http::router::Router;
use sdsim_net::http::types::{with_body, Request};
use sdsim_server::config::Config;
use sdsim_server::Server;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::Duration;
use support::{call, get, login, register, start, stop, Client, STRONG};

/// Released by the test to let `/test/hold-pool`'s job end.
static RELEASE: Mutex<Option<mpsc::Receiver<()>>> = Mutex::new(None);

/// A compressible JSON body well over `compression.offload_bytes`.
fn huge_body() -> Bytes {
    static BODY: OnceLock<Bytes> = OnceLock::new();
    BODY.get_or_init(|| {
        let items: Vec<String> = (0..20_000)
            .map(|i| format!("{{\"item\":{i},\"name\":\"component-{i}\"}}"))
            .collect();
        Bytes::from(format!("[{}]", items.join(",")))
    })
    .clone()
}

fn bounds_routes(router: &mut Router) {
    support::test_routes(router);
    router
        .route(Method::GET, "/test/huge", |_req: Request| async move {
            with_body(StatusCode::OK, "application/json", huge_body())
        })
        .unwrap();
    // Occupies a blocking pool thread until the test releases it; answers once it has.
    router
        .route(Method::GET, "/test/hold-pool", |_req: Request| async move {
            let release = RELEASE.lock().unwrap().take().expect("the test armed it");
            let pool = Arc::clone(sdsim_core::runtime::Shard::current().blocking());
            let (started_tx, started_rx) = tokio::sync::oneshot::channel();
            sdsim_core::runtime::spawn("test-hold-pool", async move {
                let _ = pool
                    .run(move || {
                        let _ = started_tx.send(());
                        let _ = release.recv();
                    })
                    .await;
            });
            started_rx.await.unwrap();
            with_body(StatusCode::OK, "text/plain", Bytes::from_static(b"held"))
        })
        .unwrap();
}

/// A server on one shard with the routes above.
fn start_one_shard(sets: &[&str]) -> Server {
    let mut o = Overrides::default();
    let db = format!(
        "storage.url=sqlite://{}/sdsim.db",
        support::temp_dir().display()
    );
    for s in [
        "gateway.listen=127.0.0.1:0",
        "auth.http_listen=127.0.0.1:0",
        "auth.grpc_listen=127.0.0.1:0",
        "project.http_listen=127.0.0.1:0",
        "project.grpc_listen=127.0.0.1:0",
        "simulation.http_listen=127.0.0.1:0",
        "simulation.grpc_listen=127.0.0.1:0",
        "log.access=false",
        "runtime.shards=1",
        "runtime.cpus=[0]",
        "ratelimit.enabled=false",
        db.as_str(),
    ] {
        o.set(s).unwrap();
    }
    for s in sets {
        o.set(s).unwrap();
    }
    let config = Config::load(None, &o).unwrap();
    config.validate().unwrap();
    Server::start_with(config, bounds_routes).expect("server starts")
}

/// The value of the unlabelled metric `name` in a Prometheus text.
fn metric(text: &str, name: &str) -> Option<i64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Reads one whole response with a Content-Length body from a raw socket.
fn read_response(socket: &mut TcpStream) -> (String, Vec<u8>) {
    let mut data = Vec::new();
    let mut byte = [0u8; 1];
    while !data.ends_with(b"\r\n\r\n") {
        assert_eq!(socket.read(&mut byte).unwrap(), 1, "EOF in the head");
        data.push(byte[0]);
    }
    let head = String::from_utf8(data).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")?
                .parse()
                .ok()
        })
        .unwrap();
    let mut body = vec![0; len];
    socket.read_exact(&mut body).unwrap();
    (head, body)
}

#[test]
fn a_large_response_is_compressed_off_the_shard_while_the_shard_answers_others() {
    let server = start_one_shard(&["runtime.blocking_threads=1", "runtime.blocking_queue=1"]);
    let addr = server.local_addr();
    // The pool's only thread is held: a compression job can only wait in its queue.
    let (release, held) = mpsc::channel();
    *RELEASE.lock().unwrap() = Some(held);
    assert_eq!(get(addr, "/test/hold-pool").text(), "held");

    let huge = b"GET /test/huge HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n";
    let mut a = TcpStream::connect(addr).unwrap();
    a.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    a.write_all(huge).unwrap();
    // The same shard answers other requests while A's body waits to be compressed: the gauge
    // reaches 2 (the holder and A's job) only through answers given while A is unanswered.
    let mut b = Client::connect(addr);
    let polling = std::time::Instant::now();
    while metric(&b.get("/metrics").text(), "sdsim_blocking_queued") != Some(2) {
        // A guard against a compression that never reaches the pool, not a measurement.
        assert!(
            polling.elapsed() < Duration::from_secs(120),
            "A's compression never reached the pool"
        );
    }
    assert_eq!(b.get("/health").status, 200);
    a.set_nonblocking(true).unwrap();
    let mut probe = [0u8; 1];
    assert_eq!(
        a.read(&mut probe).map_err(|e| e.kind()).unwrap_err(),
        std::io::ErrorKind::WouldBlock,
        "A is answered only once its body is compressed"
    );
    a.set_nonblocking(false).unwrap();

    // The queue (1 job) is full: the next large response goes uncompressed, at once.
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(huge).unwrap();
    let (head, body) = read_response(&mut c);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("content-encoding"),
        "{head}"
    );
    assert_eq!(body, huge_body());
    let text = b.get("/metrics").text();
    assert_eq!(
        metric(&text, "sdsim_blocking_refused_total"),
        Some(1),
        "{text}"
    );

    release.send(()).unwrap();
    let (head, body) = read_response(&mut a);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("content-encoding: gzip"),
        "{head}"
    );
    assert!(body.len() < huge_body().len() / 4, "{} bytes", body.len());
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_end(&mut plain)
        .unwrap();
    assert_eq!(plain, huge_body());
    stop(server);
}

#[test]
fn a_handler_past_its_deadline_is_answered_503_naming_the_request() {
    let server = start(&["http.handler_timeout=300ms"]);
    let addr = server.local_addr();
    let mut c = Client::connect(addr);
    let late = c.get("/test/slow/20000");
    assert_eq!(late.status, 503, "{}", late.text());
    let v: Value = serde_json::from_slice(&late.body).unwrap();
    assert_eq!(v["error"]["code"], "timeout", "{v}");
    assert_eq!(
        v["error"]["message"],
        "GET /test/slow/{ms} timed out after 300ms (http.handler_timeout)"
    );
    // The connection and the shard carry on; a quick handler is answered.
    let quick = c.get("/test/slow/1");
    assert_eq!((quick.status, quick.text().as_str()), (200, "slept 1"));
    let metrics = get(addr, "/metrics").text();
    assert_eq!(
        metric(&metrics, "sdsim_http_handler_timeouts_total"),
        Some(1),
        "{metrics}"
    );
    stop(server);
}

#[test]
fn every_response_says_nosniff_and_tls_ones_say_hsts() {
    let server = start(&[]);
    let addr = server.local_addr();
    for path in ["/health", "/nope"] {
        let r = get(addr, path);
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(
            r.header("strict-transport-security"),
            None,
            "{path}: plain HTTP"
        );
    }
    // An answer from the codec (malformed request) too.
    let mut c = Client::connect(addr);
    c.send(b"GARBAGE\r\n\r\n");
    let bad = c.read_response(false);
    assert_eq!(bad.status, 400);
    assert_eq!(bad.header("x-content-type-options"), Some("nosniff"));
    stop(server);

    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = support::temp_dir();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let server = start(&[
        &format!("tls.cert={}", cert_path.display()),
        &format!("tls.key={}", key_path.display()),
    ]);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(server.local_addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    let _ = tls.read_to_string(&mut text);
    let text = text.to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(
        text.contains("strict-transport-security: max-age=31536000\r\n"),
        "{text}"
    );
    assert!(
        text.contains("x-content-type-options: nosniff\r\n"),
        "{text}"
    );
    stop(server);
}

struct User {
    token: String,
}

fn user(addr: SocketAddr, email: &str) -> User {
    register(addr, email);
    let (status, tokens) = login(addr, email, STRONG);
    assert_eq!(status, 200, "{tokens}");
    User {
        token: tokens["access_token"].as_str().unwrap().to_string(),
    }
}

fn as_user(
    addr: SocketAddr,
    u: &User,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let (status, v, _) = call(addr, method, path, Some(&u.token), body);
    (status, v)
}

/// config/designs/minimal.json with a description of `pad` bytes.
fn design(pad: usize) -> Value {
    let mut d: Value =
        serde_json::from_str(include_str!("../../../config/designs/minimal.json")).unwrap();
    d["description"] = Value::String("d".repeat(pad));
    d
}

#[test]
fn designs_over_the_limit_are_413_and_large_ones_are_validated_off_the_shard() {
    let server = start(&[
        "ratelimit.enabled=false",
        "simulation.max_design_bytes=200000",
    ]);
    let addr = server.local_addr();
    let ada = user(addr, "ada@example.com");
    let too_big = design(200_000);
    for (method, path, body) in [
        (
            "POST",
            "/api/simulations/validate",
            json!({"design": too_big}),
        ),
        (
            "POST",
            "/api/projects",
            json!({"name": "Big", "design": too_big}),
        ),
    ] {
        let (status, v) = as_user(addr, &ada, method, path, Some(body));
        assert_eq!(status, 413, "{path}: {v}");
        assert_eq!(v["error"]["code"], "payload_too_large", "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("design: ")
                && message.contains("over the limit of 200000 bytes (simulation.max_design_bytes)"),
            "{message}"
        );
    }
    // Over 64 KiB but within the limit: validated on the blocking pool (one job each), with
    // the same verdicts as on the shard.
    let completed = || {
        metric(
            &get(addr, "/metrics").text(),
            "sdsim_blocking_completed_total",
        )
    };
    let before = completed().unwrap();
    let (status, v) = as_user(
        addr,
        &ada,
        "POST",
        "/api/simulations/validate",
        Some(json!({"design": design(100_000)})),
    );
    assert_eq!((status, v["valid"].as_bool()), (200, Some(true)), "{v}");
    let mut broken = design(100_000);
    broken["duration_s"] = json!(-1);
    let (status, v) = as_user(
        addr,
        &ada,
        "POST",
        "/api/simulations/validate",
        Some(json!({"design": broken})),
    );
    assert_eq!((status, v["valid"].as_bool()), (200, Some(false)), "{v}");
    assert_eq!(v["problems"][0]["path"], "$.duration_s", "{v}");
    assert_eq!(completed().unwrap(), before + 2);
    // A small design stays on the shard.
    let (status, v) = as_user(
        addr,
        &ada,
        "POST",
        "/api/simulations/validate",
        Some(json!({"design": design(10)})),
    );
    assert_eq!((status, v["valid"].as_bool()), (200, Some(true)), "{v}");
    assert_eq!(completed().unwrap(), before + 2);
    stop(server);
}

/// Polls the run until its status is one of `want` (each poll is an answered request).
fn wait_status(addr: SocketAddr, u: &User, id: &str, want: &[&str]) -> Value {
    let polling = std::time::Instant::now();
    loop {
        let (_, run) = as_user(addr, u, "GET", &format!("/api/simulations/{id}"), None);
        if want.contains(&run["status"].as_str().unwrap_or_default()) {
            return run;
        }
        // A guard against a run that never gets there, not a measurement.
        assert!(
            polling.elapsed() < Duration::from_secs(120),
            "simulation {id} never reached {want:?}: {run}"
        );
    }
}

#[test]
fn stop_waits_for_the_run_to_record_its_end_up_to_stop_timeout() {
    let dir = support::temp_dir();
    let db = dir.join("sdsim.db");
    let server = start(&[
        &format!("storage.url=sqlite://{}", db.display()),
        "ratelimit.enabled=false",
        "simulation.stop_timeout=300ms",
    ]);
    let addr = server.local_addr();
    let ada = user(addr, "ada@example.com");
    let (_, project) = as_user(
        addr,
        &ada,
        "POST",
        "/api/projects",
        Some(json!({"name": "Long", "template_id": "three-tier"})),
    );
    let slow = json!({"project_id": project["id"], "duration_s": 3600, "speed": 1});

    // A run stops and the stop answers once the run has recorded it (no polling needed).
    let (status, run) = as_user(addr, &ada, "POST", "/api/simulations", Some(slow.clone()));
    assert_eq!(status, 202, "{run}");
    let first = run["simulation_id"].as_str().unwrap().to_string();
    wait_status(addr, &ada, &first, &["running"]);
    let (status, stopped) = as_user(
        addr,
        &ada,
        "POST",
        &format!("/api/simulations/{first}/stop"),
        None,
    );
    assert_eq!(
        (status, stopped["status"].as_str()),
        (200, Some("stopped")),
        "{stopped}"
    );

    // While another writer holds the database, the run cannot record its stop: the stop
    // answers 503 `timeout` at simulation.stop_timeout, naming the run and the bound.
    let (status, run) = as_user(addr, &ada, "POST", "/api/simulations", Some(slow));
    assert_eq!(status, 202, "{run}");
    let second = run["simulation_id"].as_str().unwrap().to_string();
    wait_status(addr, &ada, &second, &["running"]);
    // The runs live in the simulation schema's file, attached next to the main one.
    let lock = rusqlite::Connection::open(dir.join("sdsim.simulation_schema.db")).unwrap();
    lock.busy_timeout(Duration::from_secs(10)).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (status, v) = as_user(
        addr,
        &ada,
        "POST",
        &format!("/api/simulations/{second}/stop"),
        None,
    );
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["error"]["code"], "timeout", "{v}");
    assert_eq!(
        v["error"]["message"],
        format!("stopping simulation {second} timed out after 300ms (simulation.stop_timeout): the run did not record its end in time; it stops at its next slice")
    );
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    // Once the database is free the run records its stop.
    let run = wait_status(addr, &ada, &second, &["stopped", "completed", "failed"]);
    assert_eq!(run["status"], "stopped", "{run}");
    stop(server);
}
