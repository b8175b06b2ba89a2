//! Test support: an in-process server on 127.0.0.1:0 and a small blocking HTTP/1.1 client that
//! reads responses exactly (status, headers, Content-Length body), for keep-alive and pipelining.
#![allow(dead_code)]

pub mod redis;

use bytes::Bytes;
use http::{Method, StatusCode};
use sdsim_core::config::Overrides;
use sdsim_net::http::router::Router;
use sdsim_net::http::types::{with_body, Request};
use sdsim_server::config::Config;
use sdsim_server::Server;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
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
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sdsim-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts a server with `sets` applied over test defaults (loopback, port 0, quiet, storage in
/// a fresh temporary directory).
pub fn start(sets: &[&str]) -> Server {
    let mut o = Overrides::default();
    let db = format!("storage.url=sqlite://{}/sdsim.db", temp_dir().display());
    for s in [
        "gateway.listen=127.0.0.1:0",
        "auth.http_listen=127.0.0.1:0",
        "auth.grpc_listen=127.0.0.1:0",
        "project.http_listen=127.0.0.1:0",
        "project.grpc_listen=127.0.0.1:0",
        "simulation.http_listen=127.0.0.1:0",
        "simulation.grpc_listen=127.0.0.1:0",
        "log.access=false",
        "runtime.shards=2",
        "runtime.cpus=[0, 1]",
        db.as_str(),
    ] {
        o.set(s).unwrap();
    }
    for s in sets {
        o.set(s).unwrap();
    }
    let mut config = Config::load(None, &o).unwrap();
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        config.runtime.cpus = vec![0, 0];
    }
    config.validate().unwrap();
    Server::start_with(config, test_routes).expect("server starts")
}

/// Drains the server and waits for it; returns the phase history.
pub fn stop(server: Server) -> Vec<sdsim_core::shutdown::Phase> {
    let shutdown = std::sync::Arc::clone(server.shutdown());
    shutdown.drain(Duration::from_secs(5));
    server.join().unwrap();
    shutdown.history()
}

/// A parsed response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A blocking client connection.
pub struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Client {
            reader: BufReader::new(stream),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).unwrap();
    }

    /// Reads one response; `head_request` = no body follows despite Content-Length.
    pub fn read_response(&mut self, head_request: bool) -> Resp {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("no status line: {line:?}"))
            .parse()
            .unwrap();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            self.reader.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        let mut resp = Resp {
            status,
            headers,
            body: Vec::new(),
        };
        if status >= 200 && !head_request && status != 204 && status != 304 {
            let len: usize = resp
                .header("content-length")
                .map_or(0, |v| v.parse().unwrap());
            resp.body = vec![0; len];
            self.reader.read_exact(&mut resp.body).unwrap();
        }
        resp
    }

    pub fn get(&mut self, path: &str) -> Resp {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        self.read_response(false)
    }

    /// True when the server has closed the connection (EOF within the read timeout).
    pub fn is_closed(&mut self, within: Duration) -> bool {
        self.reader
            .get_ref()
            .set_read_timeout(Some(within))
            .unwrap();
        let mut byte = [0u8; 1];
        matches!(self.reader.read(&mut byte), Ok(0))
    }
}

/// One request on a fresh connection with `Connection: close`.
pub fn get(addr: SocketAddr, path: &str) -> Resp {
    let mut c = Client::connect(addr);
    c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes());
    c.read_response(false)
}

/// A password zxcvbn scores 4.
pub const STRONG: &str = "correct horse battery staple";

/// One HTTP request on a fresh connection; the JSON body of the answer (Null when empty).
pub fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value, Resp) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut c = Client::connect(addr);
    c.send(req.as_bytes());
    let resp = c.read_response(false);
    let value = serde_json::from_slice(&resp.body).unwrap_or(serde_json::Value::Null);
    (resp.status, value, resp)
}

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
