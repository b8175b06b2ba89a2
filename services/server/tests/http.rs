//! The HTTP/1.1 server over real sockets: keep-alive, pipelining, chunked bodies, 100-continue,
//! HEAD, limits, compression decoded by a real client, panics, timeouts, metrics, both drivers.

mod support;

use std::io::Read;
use std::time::Duration;
use support::{get, start, stop, Client};

#[sdsim_testing::backends(epoll, io_uring)]
fn health_answers_with_request_id_and_timing() {
    let server = start(&[]);
    let resp = get(server.local_addr(), "/health");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), r#"{"status":"ok"}"#);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(resp.header("x-request-id").map(str::len), Some(16));
    assert!(resp.header("x-response-time").unwrap().ends_with("ms"));
    assert!(resp.header("date").is_some());
    let mut c = Client::connect(server.local_addr());
    c.send(b"GET /health HTTP/1.1\r\nHost: t\r\nX-Request-Id: trace-abc.123\r\n\r\n");
    assert_eq!(
        c.read_response(false).header("x-request-id"),
        Some("trace-abc.123")
    );
    c.send(b"GET /health HTTP/1.1\r\nHost: t\r\nX-Request-Id: bad id with spaces\r\n\r\n");
    assert_ne!(
        c.read_response(false).header("x-request-id"),
        Some("bad id with spaces")
    );
    assert_eq!(stop(server).len(), 3);
}

#[sdsim_testing::backends(epoll, io_uring)]
fn keep_alive_and_pipelining_answer_in_order() {
    let server = start(&[]);
    let mut c = Client::connect(server.local_addr());
    for _ in 0..5 {
        assert_eq!(c.get("/health").status, 200);
    }
    // Three requests in one write, the last with a body: three responses, in order.
    c.send(
        b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /nope HTTP/1.1\r\nHost: t\r\n\r\n\
          POST /test/echo HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!(c.read_response(false).status, 200);
    let not_found = c.read_response(false);
    assert_eq!(not_found.status, 404);
    assert!(
        not_found.text().contains("\"code\":\"not_found\""),
        "{}",
        not_found.text()
    );
    let echo = c.read_response(false);
    assert_eq!((echo.status, echo.text().as_str()), (200, "hello"));
    stop(server);
}

#[test]
fn chunked_bodies_continue_and_head() {
    let server = start(&[]);
    let mut c = Client::connect(server.local_addr());
    c.send(
        b"POST /test/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: yes\r\n\r\n",
    );
    let resp = c.read_response(false);
    assert_eq!((resp.status, resp.text().as_str()), (200, "hello, world"));

    c.send(
        b"POST /test/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
    );
    let interim = c.read_response(true);
    assert_eq!(interim.status, 100);
    c.send(b"body");
    let resp = c.read_response(false);
    assert_eq!((resp.status, resp.text().as_str()), (200, "body"));

    c.send(b"HEAD /health HTTP/1.1\r\nHost: t\r\n\r\n");
    let head = c.read_response(true);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("15"));
    // The next response starts right after HEAD's headers: no body bytes were sent.
    assert_eq!(c.get("/health").text(), r#"{"status":"ok"}"#);

    c.send(b"DELETE /health HTTP/1.1\r\nHost: t\r\n\r\n");
    let resp = c.read_response(false);
    assert_eq!(resp.status, 405);
    assert_eq!(resp.header("allow"), Some("GET, HEAD"));
    stop(server);
}

#[test]
fn limits_answer_with_the_right_status_and_close() {
    let server = start(&["http.max_body_bytes=1024", "http.max_uri_bytes=256"]);
    let addr = server.local_addr();
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (
            b"POST /test/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n".to_vec(),
            413,
        ),
        (format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(300)).into_bytes(), 414),
        (
            format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n", "b".repeat(1024 * 1024 + 10)).into_bytes(),
            431,
        ),
        (b"GET / HTTP/2.0\r\nHost: t\r\n\r\n".to_vec(), 505),
        (b"GARBAGE\r\n\r\n".to_vec(), 400),
        (b"GET / HTTP/1.1\r\nNo-Colon-Header\r\n\r\n".to_vec(), 400),
        (
            b"POST /test/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
            400,
        ),
    ];
    for (request, status) in cases {
        let mut c = Client::connect(addr);
        c.send(&request);
        let resp = c.read_response(false);
        assert_eq!(
            resp.status,
            status,
            "{}",
            String::from_utf8_lossy(&request[..40.min(request.len())])
        );
        assert!(resp.text().contains("\"error\""), "{}", resp.text());
        assert!(
            c.is_closed(Duration::from_secs(5)),
            "connection closes after {status}"
        );
    }
    // The shard survived all of it.
    assert_eq!(get(addr, "/health").status, 200);
    stop(server);
}

#[test]
fn compression_is_decoded_by_a_real_client() {
    let server = start(&[]);
    let base = format!("http://{}", server.local_addr());
    // ureq asks for gzip and decodes it transparently.
    let mut resp = ureq::get(&format!("{base}/test/big")).call().unwrap();
    let body = resp.body_mut().read_to_string().unwrap();
    assert!(body.starts_with("[{\"item\":0"), "{body}");
    assert!(body.len() > 1024);

    let mut c = Client::connect(server.local_addr());
    c.send(b"GET /test/big HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n");
    let raw = c.read_response(false);
    assert_eq!(raw.header("content-encoding"), Some("gzip"));
    assert!(raw
        .header("vary")
        .unwrap()
        .to_ascii_lowercase()
        .contains("accept-encoding"));
    let mut decoded = String::new();
    flate2::read::GzDecoder::new(&raw.body[..])
        .read_to_string(&mut decoded)
        .unwrap();
    assert_eq!(decoded, body);
    // Small bodies, images, and clients that do not ask are sent as is.
    c.send(b"GET /health HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n");
    assert_eq!(c.read_response(false).header("content-encoding"), None);
    c.send(b"GET /test/png HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip, br\r\n\r\n");
    assert_eq!(c.read_response(false).header("content-encoding"), None);
    c.send(b"GET /test/big HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.read_response(false).header("content-encoding"), None);
    stop(server);
}

#[test]
fn handler_panic_is_a_500_and_the_connection_survives() {
    let server = start(&[]);
    let mut c = Client::connect(server.local_addr());
    let resp = c.get("/test/panic");
    assert_eq!(resp.status, 500);
    assert!(resp.text().contains("internal_error"));
    assert_eq!(c.get("/health").status, 200, "same connection still served");
    let metrics = get(server.local_addr(), "/metrics").text();
    assert!(
        metrics.contains("sdsim_http_handler_panics_total 1"),
        "{metrics}"
    );
    stop(server);
}

#[test]
fn idle_and_read_timeouts_close_connections() {
    let server = start(&["http.idle_timeout=300ms", "http.read_timeout=300ms"]);
    let mut idle = Client::connect(server.local_addr());
    assert_eq!(idle.get("/health").status, 200);
    assert!(
        idle.is_closed(Duration::from_secs(10)),
        "idle connection closed"
    );
    let mut partial = Client::connect(server.local_addr());
    partial.send(b"GET /health HTTP/1.1\r\nHost:");
    assert!(
        partial.is_closed(Duration::from_secs(10)),
        "incomplete request closed"
    );
    stop(server);
}

#[test]
fn metrics_and_monitoring_report_requests_by_route() {
    let server = start(&[]);
    let addr = server.local_addr();
    for _ in 0..3 {
        assert_eq!(get(addr, "/health").status, 200);
    }
    assert_eq!(get(addr, "/nope").status, 404);
    let text = get(addr, "/metrics").text();
    assert!(
        text.contains(r#"sdsim_http_requests_total{route="/health",method="GET",status="200"} 3"#),
        "{text}"
    );
    assert!(text
        .contains(r#"sdsim_http_requests_total{route="unmatched",method="GET",status="404"} 1"#));
    assert!(
        text.contains(r#"sdsim_http_request_duration_seconds_bucket{route="/health",le="+Inf"} 3"#)
    );
    assert!(text.contains("# TYPE sdsim_mesh_queue_depth gauge"));
    assert!(text.contains("sdsim_stalls_total"));
    assert!(text.contains(r#"sdsim_connections_open{shard="0"}"#));
    let perf = get(addr, "/api/monitoring/performance").text();
    let v: serde_json::Value = serde_json::from_str(&perf).unwrap();
    let health = v["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "/health")
        .unwrap();
    assert_eq!(health["requests"], 3);
    assert!(health["p99_ms"].as_f64().unwrap() >= health["p50_ms"].as_f64().unwrap());
    stop(server);
}

#[test]
fn health_components_say_what_is_true() {
    let server = start(&[]);
    let addr = server.local_addr();
    let ready = get(addr, "/health/ready");
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert!(ready.text().contains("\"phase\":\"accepting\""));
    let db = get(addr, "/health/database");
    assert_eq!(db.status, 200);
    assert!(db.text().contains("\"kind\":\"sqlite\""));
    let redis = get(addr, "/health/redis");
    assert_eq!(redis.status, 200);
    assert!(redis.text().contains("not_configured"));
    assert!(get(addr, "/health/services").text().contains("\"gateway\""));
    stop(server);
    // A database that does not answer (nothing listens on port 1): the component and readiness
    // say so, the rest keeps serving.
    let down = start(&[
        "roles=[\"gateway\"]",
        "storage.url=postgres://sdsim@127.0.0.1:1/sdsim",
        "storage.connect_timeout=500ms",
    ]);
    let db = get(down.local_addr(), "/health/database");
    assert_eq!(db.status, 503, "{}", db.text());
    assert!(db.text().contains("postgres"), "{}", db.text());
    assert_eq!(get(down.local_addr(), "/health").status, 200);
    assert_eq!(get(down.local_addr(), "/health/database").status, 503);
    assert_eq!(get(down.local_addr(), "/health/ready").status, 503);
    stop(down);
}

#[test]
fn a_task_that_blocks_its_shard_is_counted_as_a_stall() {
    let server = start(&["runtime.stall_threshold=10ms"]);
    let addr = server.local_addr();
    assert_eq!(server.gateway().stalls.count(), 0);
    assert_eq!(get(addr, "/test/block").text(), "blocked");
    let stalls = server.gateway().stalls.count();
    assert!(stalls >= 1);
    assert!(server.gateway().stalls.worst() >= Duration::from_millis(40));
    let metrics = get(addr, "/metrics").text();
    assert!(!metrics.contains("sdsim_stalls_total 0"), "{metrics}");
    stop(server);
}
