//! OpenTelemetry tracing between two `sdsim` processes, against a real OTLP/HTTP receiver:
//! `tests/python/otlp_receiver.py` (the `opentelemetry-proto` package's generated messages;
//! `./test.sh` installs it) prints every span it is sent.
//!
//! A gateway-only process and a process running the auth, project and simulation roles share
//! PostgreSQL; one HTTP request with a known `traceparent` through the gateway to a project
//! route is one trace: the gateway's server span (the caller's span its parent), its client
//! span of the gRPC call, and the project process's server span, the client span's child.
//! Then: tracing is off unless configured, and `always_off` exports nothing.

use sdsim_testing::free_port;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sdsim");
const RECEIVER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/python/otlp_receiver.py"
);
const SERVICE_TOKEN: &str = "otel-test-service-token-0123";
const PASSWORD: &str = "correct horse battery staple 42!";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// A child process and the lines of its output.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        let (tx, lines) = mpsc::channel::<String>();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        Proc { child, lines }
    }

    /// Lines until one satisfies `found` (returned); panics after 30 s with what was seen.
    fn until<T>(&self, what: &str, mut found: impl FnMut(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        loop {
            let line = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("no {what} within 30 s; seen: {seen:#?}"));
            if let Some(value) = found(&line) {
                return value;
            }
            seen.push(line);
        }
    }

    /// SIGTERM, then every remaining line once the process has exited (it drains and exits 0).
    fn stop(mut self) -> Vec<String> {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status}");
        let mut rest = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            rest.push(line);
        }
        rest
    }
}

/// Starts the receiver; returns it and its port.
fn receiver() -> (Proc, u16) {
    let probe = Command::new("python3")
        .args(["-c", "import opentelemetry.proto.collector.trace.v1"])
        .status()
        .expect("python3 must be installed");
    assert!(
        probe.success(),
        "the opentelemetry-proto package is missing: python3 -m pip install \"opentelemetry-proto==1.*\" (./test.sh does)"
    );
    let mut cmd = Command::new("python3");
    cmd.arg(RECEIVER);
    let proc = Proc::spawn(cmd);
    let port = proc.until("receiver port", |l| {
        l.strip_prefix("listening ").map(|p| p.parse().unwrap())
    });
    (proc, port)
}

/// Starts `sdsim serve` with `env`; returns it and its gateway (or first HTTP) port.
fn sdsim(name: &str, env: &[(&str, String)]) -> (Proc, u16) {
    let dir = std::env::temp_dir().join(format!("sdsim-otel-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .current_dir(&dir)
        .env("NO_COLOR", "1")
        .env("SDSIM__GATEWAY__LISTEN", "127.0.0.1:0")
        .env("SDSIM__LOG__ACCESS", "false")
        .env("SDSIM__RATELIMIT__ENABLED", "false")
        .env("SDSIM__RUNTIME__SHARDS", "2")
        .env("SDSIM__SERVER__SHUTDOWN_TIMEOUT", "5s");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let proc = Proc::spawn(cmd);
    let port = proc.until(&format!("{name}'s listening line"), |line| {
        let rest = line.split("local_addr=").nth(1)?;
        let addr = rest.split_whitespace().next()?;
        addr.rsplit(':').next()?.parse().ok()
    });
    (proc, port)
}

/// One HTTP/1.1 request: status, JSON body, and the `traceparent` of the answer.
fn request(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    traceparent: Option<&str>,
    body: Option<Value>,
) -> (u16, Value, String) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut client = sdsim_testing::http::Client::connect(addr);
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if let Some(parent) = traceparent {
        head.push_str(&format!("traceparent: {parent}\r\n"));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    head.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    client.send(head.as_bytes());
    let resp = client.read_response(false);
    let json = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    let traceparent = resp.header("traceparent").unwrap_or_default().to_owned();
    (resp.status, json, traceparent)
}

fn login(port: u16, email: &str) -> String {
    let credentials = json!({"email": email, "password": PASSWORD});
    let (status, u, _) = request(
        port,
        "POST",
        "/api/auth/register",
        None,
        None,
        Some(credentials.clone()),
    );
    assert_eq!(status, 201, "{u}");
    let (status, t, _) = request(
        port,
        "POST",
        "/api/auth/login",
        None,
        None,
        Some(credentials),
    );
    assert_eq!(status, 200, "{t}");
    t["access_token"].as_str().unwrap().to_owned()
}

/// Spans the receiver printed, until `enough` holds for those of trace `trace_id`.
fn spans_of(receiver: &Proc, trace_id: &str, enough: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut spans = Vec::new();
    receiver.until(&format!("spans of trace {trace_id}"), |line| {
        let span: Value = serde_json::from_str(line).ok()?;
        if span["trace_id"] == trace_id {
            spans.push(span);
        }
        enough(&spans).then_some(())
    });
    spans
}

fn find<'a>(spans: &'a [Value], service: &str, kind: &str) -> Option<&'a Value> {
    spans
        .iter()
        .find(|s| s["service"] == service && s["kind"] == kind)
}

#[test]
fn one_request_through_the_gateway_is_one_trace_across_both_processes() {
    let pg = sdsim_testing::postgres::Postgres::start();
    let (receiver, receiver_port) = receiver();
    let endpoint = format!("http://127.0.0.1:{receiver_port}");
    let (auth_grpc, project_grpc, sim_grpc) = (free_port(), free_port(), free_port());
    let any = "127.0.0.1:0".to_string();
    let (_services, _) = sdsim(
        "services",
        &[
            ("SDSIM__STORAGE__URL", pg.url()),
            (
                "SDSIM__ROLES",
                r#"["auth", "project", "simulation"]"#.into(),
            ),
            ("SDSIM__AUTH__GRPC_LISTEN", format!("127.0.0.1:{auth_grpc}")),
            (
                "SDSIM__PROJECT__GRPC_LISTEN",
                format!("127.0.0.1:{project_grpc}"),
            ),
            (
                "SDSIM__SIMULATION__GRPC_LISTEN",
                format!("127.0.0.1:{sim_grpc}"),
            ),
            ("SDSIM__AUTH__HTTP_LISTEN", any.clone()),
            ("SDSIM__PROJECT__HTTP_LISTEN", any.clone()),
            ("SDSIM__SIMULATION__HTTP_LISTEN", any.clone()),
            (
                "SDSIM__AUTH__TOKENS",
                format!(r#"[{{token="{SERVICE_TOKEN}",user="gateway",roles=["service"]}}]"#),
            ),
            // The standard variable turns tracing on; service.name is the default one.
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
        ],
    );
    let (gateway, port) = sdsim(
        "gateway",
        &[
            ("SDSIM__STORAGE__URL", pg.url()),
            ("SDSIM__ROLES", r#"["gateway"]"#.into()),
            ("SDSIM__GATEWAY__SERVICE_TOKEN", SERVICE_TOKEN.into()),
            (
                "SDSIM__GATEWAY__AUTH_SERVICE",
                format!("127.0.0.1:{auth_grpc}"),
            ),
            (
                "SDSIM__GATEWAY__PROJECT_SERVICE",
                format!("127.0.0.1:{project_grpc}"),
            ),
            (
                "SDSIM__GATEWAY__SIMULATION_SERVICE",
                format!("127.0.0.1:{sim_grpc}"),
            ),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                format!("{endpoint}/v1/traces"),
            ),
            ("OTEL_SERVICE_NAME", "edge".into()),
            ("OTEL_TRACES_SAMPLER", "parentbased_always_off".into()),
        ],
    );
    // A gateway-only process is ready once it has the auth service's verification keys.
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(30);
    while sdsim_testing::http::get(addr, "/health/ready").status != 200 {
        assert!(Instant::now() < deadline, "the gateway never became ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let token = login(port, "ada@example.com");
    let caller = format!("00-{TRACE_ID}-{CALLER_SPAN}-01");
    let (status, templates, traceparent) = request(
        port,
        "GET",
        "/api/templates",
        Some(&token),
        Some(&caller),
        None,
    );
    assert_eq!(status, 200, "{templates}");
    assert!(
        traceparent.starts_with(&format!("00-{TRACE_ID}-")) && traceparent.ends_with("-01"),
        "the caller's sampled trace continues: {traceparent}"
    );

    let project_service = "sdsim-auth-project-simulation";
    let spans = spans_of(&receiver, TRACE_ID, |spans| {
        find(spans, "edge", "SPAN_KIND_SERVER").is_some()
            && find(spans, "edge", "SPAN_KIND_CLIENT").is_some()
            && find(spans, project_service, "SPAN_KIND_SERVER").is_some()
    });
    let gateway_server = find(&spans, "edge", "SPAN_KIND_SERVER").unwrap();
    let client = find(&spans, "edge", "SPAN_KIND_CLIENT").unwrap();
    let project_server = find(&spans, project_service, "SPAN_KIND_SERVER").unwrap();

    assert_eq!(
        gateway_server["name"], "GET /api/templates",
        "{gateway_server}"
    );
    assert_eq!(gateway_server["parent_span_id"], CALLER_SPAN);
    assert_eq!(
        gateway_server["span_id"].as_str(),
        traceparent.split('-').nth(2),
        "the answer names the gateway's span"
    );
    let attrs = &gateway_server["attributes"];
    assert_eq!(attrs["http.request.method"], "GET");
    assert_eq!(attrs["http.route"], "/api/templates");
    assert_eq!(attrs["http.response.status_code"], 200);
    assert_eq!(attrs["client.address"], "127.0.0.1");
    assert_eq!(gateway_server["status_code"], "STATUS_CODE_UNSET");

    assert_eq!(
        client["parent_span_id"], gateway_server["span_id"],
        "{client}"
    );
    let attrs = &client["attributes"];
    assert_eq!(attrs["rpc.system"], "grpc");
    assert_eq!(attrs["rpc.service"], "sdsim.project.v1.ProjectService");
    assert_eq!(attrs["rpc.grpc.status_code"], 0);
    let method = attrs["rpc.method"].as_str().unwrap().to_owned();

    assert_eq!(
        project_server["parent_span_id"], client["span_id"],
        "the project's span is the child of the gateway's call: {project_server}"
    );
    assert_eq!(
        project_server["name"],
        format!("sdsim.project.v1.ProjectService/{method}")
    );
    let attrs = &project_server["attributes"];
    assert_eq!(attrs["rpc.system"], "grpc");
    assert_eq!(attrs["rpc.method"], method.as_str());
    assert_eq!(attrs["rpc.grpc.status_code"], 0);
    assert_eq!(attrs["client.address"], "127.0.0.1");
    assert!(project_server["flags"].as_u64().unwrap() & 1 == 1);

    // The gateway samples with parentbased_always_off: a request without a sampled caller is
    // not recorded, and its answer says so. What it sent is counted on /metrics.
    let (status, _, unsampled) = request(port, "GET", "/api/templates", Some(&token), None, None);
    assert_eq!(status, 200);
    assert!(unsampled.ends_with("-00"), "{unsampled}");
    let metrics = sdsim_testing::http::get(addr, "/metrics").text();
    assert!(
        metrics.contains("sdsim_otel_spans_dropped_total 0"),
        "{metrics}"
    );
    websocket_operations_are_spans_of_the_upgrade(port, &token, &receiver);

    // On a graceful stop the exporter sends what it still holds, and says what it did.
    let rest = gateway.stop();
    let finished = rest
        .iter()
        .find(|l| l.contains("span exporter finished"))
        .unwrap_or_else(|| panic!("no exporter summary in {rest:#?}"));
    assert!(finished.contains("dropped=0"), "{finished}");
    let exported = finished
        .split("exported=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap();
    assert!(exported >= 2, "{finished}");
    // The gateway has exited, so the receiver has printed whatever it was sent.
    let unsampled_trace = unsampled.split('-').nth(1).unwrap();
    while let Ok(line) = receiver.lines.recv_timeout(Duration::from_millis(500)) {
        assert!(
            !line.contains(unsampled_trace),
            "an unsampled trace was exported: {line}"
        );
    }
}

/// A WebSocket session whose upgrade continues a sampled trace: its `auth` and a refused
/// `subscribe` are spans of that trace, children of the upgrade request's span.
fn websocket_operations_are_spans_of_the_upgrade(port: u16, token: &str, receiver: &Proc) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    const WS_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut req = format!("ws://127.0.0.1:{port}/ws")
            .into_client_request()
            .unwrap();
        req.headers_mut().insert(
            "traceparent",
            format!("00-{WS_TRACE}-{CALLER_SPAN}-01").parse().unwrap(),
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        for op in [
            json!({"op": "auth", "token": token}),
            json!({"op": "subscribe", "channel": "no spaces allowed"}),
        ] {
            ws.send(Message::text(op.to_string())).await.unwrap();
            loop {
                let reply = tokio::time::timeout(Duration::from_secs(30), ws.next())
                    .await
                    .expect("an answer within 30 s")
                    .unwrap()
                    .unwrap();
                if let Message::Text(text) = reply {
                    let reply: Value = serde_json::from_str(&text).unwrap();
                    assert_ne!(reply["op"], "event", "{reply}");
                    break;
                }
            }
        }
        ws.close(None).await.unwrap();
    });
    let spans = spans_of(receiver, WS_TRACE, |spans| {
        ["GET /ws", "ws auth", "ws subscribe"]
            .iter()
            .all(|name| spans.iter().any(|s| s["name"] == *name))
    });
    let named = |name: &str| spans.iter().find(|s| s["name"] == name).unwrap();
    let upgrade = named("GET /ws");
    assert_eq!(upgrade["parent_span_id"], CALLER_SPAN);
    assert_eq!(upgrade["attributes"]["http.response.status_code"], 101);
    let auth = named("ws auth");
    assert_eq!(auth["parent_span_id"], upgrade["span_id"], "{auth}");
    assert_eq!(auth["status_code"], "STATUS_CODE_UNSET");
    let subscribe = named("ws subscribe");
    assert_eq!(subscribe["parent_span_id"], upgrade["span_id"]);
    assert_eq!(
        subscribe["attributes"]["websocket.channel"],
        "no spaces allowed"
    );
    assert_eq!(subscribe["status_code"], "STATUS_CODE_ERROR", "{subscribe}");
}

/// Requests through a process configured with `env`, then a graceful stop: the spans the
/// receiver got, and the process's output.
fn serve_and_stop(env: &[(&str, String)], receiver: &Proc) -> (Vec<String>, Vec<String>) {
    let any = "127.0.0.1:0".to_string();
    let mut env = env.to_vec();
    for key in [
        "SDSIM__AUTH__GRPC_LISTEN",
        "SDSIM__AUTH__HTTP_LISTEN",
        "SDSIM__PROJECT__GRPC_LISTEN",
        "SDSIM__PROJECT__HTTP_LISTEN",
        "SDSIM__SIMULATION__GRPC_LISTEN",
        "SDSIM__SIMULATION__HTTP_LISTEN",
    ] {
        env.push((key, any.clone()));
    }
    let (proc, port) = sdsim("quiet", &env);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    for path in ["/health", "/health/ready", "/api/templates"] {
        let mut c = sdsim_testing::http::Client::connect(addr);
        c.send(
            format!(
                "GET {path} HTTP/1.1\r\nHost: t\r\ntraceparent: 00-{TRACE_ID}-{CALLER_SPAN}-01\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        );
        let resp = c.read_response(false);
        assert!(resp.header("traceparent").is_some());
    }
    let output = proc.stop();
    // The process has exited: whatever it exported has been received and printed.
    let mut spans = Vec::new();
    while let Ok(line) = receiver.lines.recv_timeout(Duration::from_millis(500)) {
        spans.push(line);
    }
    (spans, output)
}

#[test]
fn tracing_is_off_by_default_and_always_off_exports_nothing() {
    let (receiver, receiver_port) = receiver();
    let endpoint = format!("http://127.0.0.1:{receiver_port}");
    let sqlite = |name: &str| {
        let dir = std::env::temp_dir().join(format!("sdsim-otel-{name}-{}", std::process::id()));
        format!("sqlite://{}/data.db", dir.display())
    };
    // The endpoint alone, in [otel], does not turn tracing on.
    let (spans, output) = serve_and_stop(
        &[
            ("SDSIM__STORAGE__URL", sqlite("off")),
            ("SDSIM__OTEL__ENDPOINT", endpoint.clone()),
        ],
        &receiver,
    );
    assert!(spans.is_empty(), "{spans:#?}");
    assert!(
        !output.iter().any(|l| l.contains("span exporter")),
        "{output:#?}"
    );

    let (spans, output) = serve_and_stop(
        &[
            ("SDSIM__STORAGE__URL", sqlite("always-off")),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
            ("OTEL_TRACES_SAMPLER", "always_off".into()),
        ],
        &receiver,
    );
    assert!(spans.is_empty(), "{spans:#?}");
    let finished = output
        .iter()
        .find(|l| l.contains("span exporter finished"))
        .unwrap_or_else(|| panic!("the exporter ran: {output:#?}"));
    assert!(finished.contains("exported=0"), "{finished}");
}
