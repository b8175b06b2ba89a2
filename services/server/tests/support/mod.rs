//! Test support: the harness's in-process server (`sdsim_testing::server`: 127.0.0.1:0, the
//! test's backend) with test-only routes mounted, and the auth calls most suites begin with. The
//! blocking HTTP client and `stop` are `sdsim_testing`'s, re-exported here.
#![allow(dead_code)]

#[allow(unused_imports)] // each test binary uses its own part
pub use sdsim_testing::{
    http::{call, get, Client, Resp},
    server::stop,
};

use bytes::Bytes;
use http::{Method, StatusCode};
use sdsim_net::http::router::Router;
use sdsim_net::http::types::{with_body, Request};
use sdsim_server::Server;
use std::net::SocketAddr;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// The paths of the `/test/slow/{ms}` requests whose handler has started.
static HANDLING: (Mutex<Vec<String>>, Condvar) = (Mutex::new(Vec::new()), Condvar::new());

fn handling(path: &str) {
    let (paths, changed) = &HANDLING;
    paths
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(path.to_string());
    changed.notify_all();
}

/// Waits until a request for `path` (a `/test/slow/{ms}` path) is in its handler, so a test
/// knows the request is in flight and not merely sent; panics after 10 s.
pub fn wait_until_handling(path: &str) {
    let (paths, changed) = &HANDLING;
    let paths = paths
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let (_paths, waited) = changed
        .wait_timeout_while(paths, Duration::from_secs(10), |paths| {
            !paths.iter().any(|p| p == path)
        })
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    assert!(
        !waited.timed_out(),
        "no request for {path} reached its handler within 10 s"
    );
}

/// Routes only tests mount: echo, panic, slow, big.
pub fn test_routes(router: &mut Router) {
    router
        .route(Method::POST, "/test/echo", |req: Request| async move {
            let ct = req
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/octet-stream")
                .to_string();
            let mut resp = with_body(
                StatusCode::OK,
                "application/octet-stream",
                req.body().clone(),
            );
            resp.headers_mut()
                .insert("content-type", ct.parse().unwrap());
            resp
        })
        .unwrap();
    router
        .route(Method::GET, "/test/panic", |_req: Request| async move {
            if std::hint::black_box(true) {
                panic!("deliberate test panic");
            }
            with_body(StatusCode::OK, "text/plain", Bytes::new())
        })
        .unwrap();
    router
        .route(Method::GET, "/test/slow/{ms}", |req: Request| async move {
            let ms: u64 = req
                .extensions()
                .get::<sdsim_net::http::types::PathParams>()
                .and_then(|p| p.get("ms"))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            handling(req.uri().path());
            monoio::time::sleep(Duration::from_millis(ms)).await;
            with_body(
                StatusCode::OK,
                "text/plain",
                Bytes::from(format!("slept {ms}")),
            )
        })
        .unwrap();
    router
        .route(Method::GET, "/test/block", |_req: Request| async move {
            // Breaks thread-per-core rule 5 (docs/architecture.md) on purpose: blocks the shard for 40 ms.
            std::thread::sleep(Duration::from_millis(40));
            with_body(StatusCode::OK, "text/plain", Bytes::from_static(b"blocked"))
        })
        .unwrap();
    router
        .route(Method::GET, "/test/big", |_req: Request| async move {
            let text: String = (0..400)
                .map(|i| format!("{{\"item\":{i},\"name\":\"component-{i}\"}},"))
                .collect();
            with_body(
                StatusCode::OK,
                "application/json",
                Bytes::from(format!("[{}0]", text)),
            )
        })
        .unwrap();
    router
        .route(Method::GET, "/test/png", |_req: Request| async move {
            with_body(StatusCode::OK, "image/png", Bytes::from(vec![7u8; 4096]))
        })
        .unwrap();
}

/// A fresh directory under the system temp dir (storage of one test server).
pub fn temp_dir() -> std::path::PathBuf {
    sdsim_testing::temp_dir("test")
}

/// Starts a server with `sets` over the harness's test defaults and the test's backend
/// (`sdsim_testing::server`), with [`test_routes`] mounted.
pub fn start(sets: &[&str]) -> Server {
    sdsim_testing::server::start_with(sets, test_routes)
}

/// A password zxcvbn scores 4.
pub const STRONG: &str = "correct horse battery staple";

pub fn register(addr: SocketAddr, email: &str) -> serde_json::Value {
    let (status, v, _) = call(
        addr,
        "POST",
        "/api/auth/register",
        None,
        Some(serde_json::json!({"email": email, "password": STRONG})),
    );
    assert_eq!(status, 201, "{v}");
    v["user"].clone()
}

pub fn login(addr: SocketAddr, email: &str, password: &str) -> (u16, serde_json::Value) {
    let (status, v, _) = call(
        addr,
        "POST",
        "/api/auth/login",
        None,
        Some(serde_json::json!({"email": email, "password": password})),
    );
    (status, v)
}

/// A current-thread tokio runtime for the real clients (tonic, tokio-tungstenite).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}
