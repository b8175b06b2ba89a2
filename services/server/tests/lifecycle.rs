//! Rate limiting across shards, graceful shutdown, TLS.

mod support;

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{get, start, Client};

#[test]
fn rate_limit_holds_for_a_client_across_connections_on_both_shards() {
    let server = start(&["ratelimit.rate_per_s=0.01", "ratelimit.burst=6"]);
    let addr = server.local_addr();
    // Eight connections from 127.0.0.1: SO_REUSEPORT spreads them over both shards, yet the
    // client's bucket lives on one owner shard, so exactly `burst` requests pass in total.
    let mut clients: Vec<Client> = (0..8).map(|_| Client::connect(addr)).collect();
    let mut statuses = Vec::new();
    for round in 0..2 {
        for c in clients.iter_mut() {
            let resp = c.get("/api/monitoring/performance");
            if resp.status == 429 {
                assert!(resp.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
                assert!(resp.text().contains("rate_limited"));
            } else {
                assert_eq!(resp.header("x-ratelimit-limit"), Some("6"), "round {round}");
            }
            assert!(resp.header("x-ratelimit-remaining").is_some());
            statuses.push(resp.status);
        }
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        6,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        10,
        "{statuses:?}"
    );
    // Health endpoints are exempt.
    for _ in 0..20 {
        assert_eq!(get(addr, "/health").status, 200);
    }
    let metrics = clients[0].get("/metrics");
    assert_eq!(metrics.status, 429, "metrics is not exempt by default");
    support::stop(server);

    let open = start(&["ratelimit.enabled=false"]);
    for _ in 0..50 {
        assert_eq!(
            get(open.local_addr(), "/api/monitoring/performance").status,
            200
        );
    }
    support::stop(open);
}

#[test]
fn shutdown_drains_in_order_and_lets_in_flight_requests_finish() {
    // A deadline no drain of this test reaches unless it waits for the deadline itself.
    let server = start(&["server.shutdown_timeout=60s"]);
    let addr = server.local_addr();
    let shutdown = Arc::clone(server.shutdown());
    let mut idle = Client::connect(addr);
    assert_eq!(idle.get("/health").status, 200);
    let mut busy = Client::connect(addr);
    busy.send(b"GET /test/slow/700 HTTP/1.1\r\nHost: t\r\n\r\n");
    support::wait_until_handling("/test/slow/700");
    let began = Instant::now();
    shutdown.drain(Duration::from_secs(60));
    // The idle keep-alive connection is closed at once; new connections are refused once
    // every shard has closed its listener.
    assert!(
        idle.is_closed(Duration::from_secs(10)),
        "idle connection closed on drain"
    );
    let refused_by = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_ok() {
        assert!(
            Instant::now() < refused_by,
            "listener still open 10 s into the drain"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The request in flight completes, and its response says the connection closes.
    let resp = busy.read_response(false);
    assert_eq!((resp.status, resp.text().as_str()), (200, "slept 700"));
    assert_eq!(resp.header("connection"), Some("close"));
    server.join().unwrap();
    assert!(
        began.elapsed() < Duration::from_secs(30),
        "stopped once drained, not at the deadline: {:?}",
        began.elapsed()
    );
    use sdsim_core::shutdown::Phase::*;
    assert_eq!(shutdown.history(), vec![Accepting, Draining, Closed]);
    assert_eq!(shutdown.forced_closes(), 0);
}

#[test]
fn shutdown_deadline_closes_and_counts_stuck_connections() {
    let server = start(&["server.shutdown_timeout=300ms"]);
    let shutdown = Arc::clone(server.shutdown());
    let mut stuck = Client::connect(server.local_addr());
    stuck.send(b"GET /test/slow/60000 HTTP/1.1\r\nHost: t\r\n\r\n");
    support::wait_until_handling("/test/slow/60000");
    let began = Instant::now();
    shutdown.drain(Duration::from_millis(300));
    server.join().unwrap();
    // At the deadline, not when the 60 s handler would have finished.
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(30),
        "{took:?}"
    );
    assert_eq!(shutdown.forced_closes(), 1);
    assert!(stuck.is_closed(Duration::from_secs(10)));
}

#[test]
fn https_serves_the_same_app() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = std::env::temp_dir().join(format!("sdsim-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let server = start(&[
        &format!("tls.cert={}", cert_path.display()),
        &format!("tls.key={}", key_path.display()),
    ]);

    let tls_exchange = |request: &[u8]| -> (String, Option<Vec<u8>>) {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let tcp = std::net::TcpStream::connect(server.local_addr()).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        tls.write_all(request).unwrap();
        let mut text = String::new();
        let _ = tls.read_to_string(&mut text);
        (text, tls.conn.alpn_protocol().map(|p| p.to_vec()))
    };
    let (text, alpn) = tls_exchange(
        b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\nGET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    assert!(text.ends_with(r#"{"status":"ok"}"#), "{text}");
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    // Plain HTTP on the TLS port gets no HTTP answer, and the server carries on.
    let mut plain = std::net::TcpStream::connect(server.local_addr()).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    plain
        .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).contains("HTTP/1.1"),
        "at most a TLS alert, then EOF"
    );
    let (text, _) =
        tls_exchange(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    assert!(
        text.ends_with(r#"{"status":"ok"}"#),
        "TLS still served: {text}"
    );
    support::stop(server);
    let _ = std::fs::remove_dir_all(dir);
}
