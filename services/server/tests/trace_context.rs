//! W3C Trace Context over real sockets, on the gateway's HTTP listener and the auth service's
//! gRPC listener: a valid `traceparent` comes back with the same trace-id and a new span-id
//! (and `tracestate` unchanged), an invalid one comes back as a new trace, and the access-log
//! line of each request carries its trace-id and span-id.

mod support;

use sdsim_auth::pb;
use serde_json::Value;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Condvar, Mutex, Once};
use std::time::Duration;
use support::{runtime, start, stop, Client, Resp};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic_prost::ProstCodec;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";
const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// Upper-case hex: the specification's example of a traceparent to ignore.
const INVALID: &str = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01";
const STATE: &str = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";

/// Access-log lines of every server in this test binary, as JSON objects.
static ACCESS_LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());
/// Signalled on every write to [`ACCESS_LOG`].
static WRITTEN: Condvar = Condvar::new();

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        ACCESS_LOG.lock().unwrap().extend_from_slice(buf);
        WRITTEN.notify_all();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends `sdsim::access` events to [`ACCESS_LOG`], one JSON object per line.
fn capture_access_log() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_env_filter("sdsim::access=info")
            .with_writer(|| Capture)
            .init();
    });
}

/// The one access-log line whose `request_id` is `id`, once it is written (a gRPC call's
/// line comes after the client has its answer).
fn access_line(id: &str) -> Value {
    let with_id = |log: &[u8]| -> Vec<Value> {
        let text = std::str::from_utf8(log).unwrap();
        text.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|v| v["request_id"] == id)
            .collect()
    };
    let (log, _) = WRITTEN
        .wait_timeout_while(ACCESS_LOG.lock().unwrap(), Duration::from_secs(30), |log| {
            with_id(log).is_empty()
        })
        .unwrap();
    let lines = with_id(&log);
    assert_eq!(lines.len(), 1, "one line for {id}: {lines:?}");
    lines.into_iter().next().unwrap()
}

/// The (trace-id, parent-id, flags) of a `traceparent` this server sent, checked for form.
fn parts(traceparent: &str) -> (String, String, String) {
    let fields: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(fields.len(), 4, "{traceparent}");
    assert_eq!(fields[0], "00", "{traceparent}");
    let lower_hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    assert!(
        lower_hex(fields[1], 32) && fields[1] != "0".repeat(32),
        "{traceparent}"
    );
    assert!(
        lower_hex(fields[2], 16) && fields[2] != "0".repeat(16),
        "{traceparent}"
    );
    assert!(lower_hex(fields[3], 2), "{traceparent}");
    (fields[1].into(), fields[2].into(), fields[3].into())
}

/// The trace fields of an access-log line.
fn logged_ids(line: &Value) -> (String, String) {
    let span = &line["span"];
    assert_eq!(span["name"], "trace", "{line}");
    (
        span["trace_id"].as_str().unwrap().to_owned(),
        span["span_id"].as_str().unwrap().to_owned(),
    )
}

fn http_get(addr: SocketAddr, headers: &[(&str, &str)]) -> Resp {
    let mut c = Client::connect(addr);
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    c.send(
        format!("GET /health HTTP/1.1\r\nHost: t\r\n{extra}Connection: close\r\n\r\n").as_bytes(),
    );
    c.read_response(false)
}

#[test]
fn http_requests_continue_a_valid_trace_start_one_otherwise_and_log_it() {
    capture_access_log();
    let server = start(&["ratelimit.enabled=false", "log.access=true"]);
    let http = server.local_addr();

    let continued = http_get(
        http,
        &[
            ("traceparent", VALID),
            ("tracestate", STATE),
            ("x-request-id", "trace-http-valid"),
        ],
    );
    assert_eq!(continued.status, 200);
    let (trace_id, span_id, flags) = parts(continued.header("traceparent").unwrap());
    assert_eq!(trace_id, TRACE_ID, "the caller's trace goes on");
    assert_ne!(span_id, PARENT_ID, "this request has a span of its own");
    assert_eq!(flags, "01", "the caller's sampling decision stands");
    assert_eq!(continued.header("tracestate"), Some(STATE));
    let logged = logged_ids(&access_line("trace-http-valid"));
    assert_eq!(logged, (trace_id, span_id));

    let restarted = http_get(
        http,
        &[
            ("traceparent", INVALID),
            ("tracestate", STATE),
            ("x-request-id", "trace-http-invalid"),
        ],
    );
    assert_eq!(restarted.status, 200, "an invalid traceparent is no error");
    let (trace_id, span_id, flags) = parts(restarted.header("traceparent").unwrap());
    assert_ne!(trace_id, TRACE_ID.to_string(), "a new trace");
    assert_eq!(flags, "00");
    assert_eq!(
        restarted.header("tracestate"),
        None,
        "dropped with its traceparent"
    );
    assert_eq!(
        logged_ids(&access_line("trace-http-invalid")),
        (trace_id.clone(), span_id)
    );

    let fresh = http_get(http, &[("x-request-id", "trace-http-none")]);
    let (fresh_trace, _, _) = parts(fresh.header("traceparent").unwrap());
    assert_ne!(fresh_trace, trace_id, "every new trace is a different one");
    stop(server);
}

async fn validate(
    grpc: &mut tonic::client::Grpc<Channel>,
    path: &'static str,
    metadata: &[(&'static str, &str)],
) -> (tonic::Code, tonic::metadata::MetadataMap) {
    grpc.ready().await.unwrap();
    let mut req = tonic::Request::new(pb::ValidateTokenRequest {
        token: "not-a-token".into(),
        ..Default::default()
    });
    for (k, v) in metadata {
        req.metadata_mut().insert(*k, v.parse().unwrap());
    }
    let codec = ProstCodec::<pb::ValidateTokenRequest, pb::ValidateTokenResponse>::default();
    match grpc
        .unary(req, PathAndQuery::from_static(path), codec)
        .await
    {
        Ok(resp) => (tonic::Code::Ok, resp.metadata().clone()),
        Err(status) => (status.code(), status.metadata().clone()),
    }
}

fn meta<'a>(m: &'a tonic::metadata::MetadataMap, name: &str) -> Option<&'a str> {
    m.get(name).and_then(|v| v.to_str().ok())
}

#[test]
fn grpc_calls_continue_a_valid_trace_start_one_otherwise_and_log_it() {
    const VALIDATE: &str = "/sdsim.auth.v1.AuthService/ValidateToken";
    capture_access_log();
    let server = start(&["ratelimit.enabled=false", "log.access=true"]);
    let addr = server.auth_grpc_addr().unwrap();
    let (continued, restarted, unknown) = runtime().block_on(async {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut grpc = tonic::client::Grpc::new(channel);
        let continued = validate(
            &mut grpc,
            VALIDATE,
            &[
                ("traceparent", VALID),
                ("tracestate", STATE),
                ("x-request-id", "trace-grpc-valid"),
            ],
        )
        .await;
        let restarted = validate(
            &mut grpc,
            VALIDATE,
            &[
                ("traceparent", INVALID),
                ("tracestate", STATE),
                ("x-request-id", "trace-grpc-invalid"),
            ],
        )
        .await;
        // A call no handler takes is answered Trailers-Only: the context is there too.
        let unknown = validate(
            &mut grpc,
            "/sdsim.auth.v1.AuthService/NoSuchMethod",
            &[
                ("traceparent", VALID),
                ("x-request-id", "trace-grpc-unknown"),
            ],
        )
        .await;
        (continued, restarted, unknown)
    });

    let (code, metadata) = continued;
    assert_eq!(code, tonic::Code::Ok);
    let (trace_id, span_id, flags) = parts(meta(&metadata, "traceparent").unwrap());
    assert_eq!(trace_id, TRACE_ID);
    assert_ne!(span_id, PARENT_ID);
    assert_eq!(flags, "01");
    assert_eq!(meta(&metadata, "tracestate"), Some(STATE));
    let line = access_line("trace-grpc-valid");
    assert_eq!(line["message"], "grpc call");
    assert_eq!(logged_ids(&line), (trace_id, span_id));

    let (code, metadata) = restarted;
    assert_eq!(code, tonic::Code::Ok, "an invalid traceparent is no error");
    let (trace_id, span_id, _) = parts(meta(&metadata, "traceparent").unwrap());
    assert_ne!(trace_id, TRACE_ID);
    assert_eq!(meta(&metadata, "tracestate"), None);
    assert_eq!(
        logged_ids(&access_line("trace-grpc-invalid")),
        (trace_id, span_id)
    );

    let (code, metadata) = unknown;
    assert_eq!(code, tonic::Code::Unimplemented);
    let (trace_id, span_id, _) = parts(meta(&metadata, "traceparent").unwrap());
    assert_eq!(trace_id, TRACE_ID);
    assert_eq!(
        logged_ids(&access_line("trace-grpc-unknown")),
        (trace_id, span_id)
    );
    stop(server);
}
