//! The README tour with roles split over two `sdsim` processes on PostgreSQL and Redis:
//! process A runs the gateway and auth roles, process B the project and simulation roles. A
//! serves the project and simulation HTTP routes through B's gRPC services (service token,
//! forwarded user context), checks WebSocket subscriptions to a run's live metrics with B, and
//! delivers the points B publishes through Redis; a sweep takes the same path.
//!
//! Needs PostgreSQL's and redis-server's Debian packages (test.sh installs them).

use futures_util::{SinkExt, StreamExt};
use sdsim_testing::free_port;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_sdsim");
const SERVICE_TOKEN: &str = "split-test-service-token-0123";
const PASSWORD: &str = "correct horse battery staple 42!";

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `sdsim serve` with `env` (SDSIM__… variables); returns it and its gateway port.
fn sdsim(name: &str, env: &[(String, String)]) -> (Proc, u16) {
    let dir = std::env::temp_dir().join(format!("sdsim-split-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .current_dir(&dir)
        .env("NO_COLOR", "1")
        .env("SDSIM__GATEWAY__LISTEN", "127.0.0.1:0")
        .env("SDSIM__LOG__ACCESS", "false")
        .env("SDSIM__RATELIMIT__ENABLED", "false")
        .env("SDSIM__RUNTIME__SHARDS", "2")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
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
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let port = loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("{name} did not start: {seen:#?}"));
        if let Some(rest) = line.split("local_addr=").nth(1) {
            let addr = rest.split_whitespace().next().unwrap();
            break addr.rsplit(':').next().unwrap().parse().unwrap();
        }
        seen.push(line);
    };
    // Keep draining the output so the child never blocks on a full pipe.
    std::thread::spawn(move || while lines.recv().is_ok() {});
    (Proc(child), port)
}

/// One request to the process listening on `port`: status and JSON body.
fn call(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let (status, value, _) = sdsim_testing::http::call(addr, method, path, token, body);
    (status, value)
}

fn user(port: u16, email: &str) -> (String, String) {
    let (status, u) = call(
        port,
        "POST",
        "/api/auth/register",
        None,
        Some(json!({"email": email, "password": PASSWORD})),
    );
    assert_eq!(status, 201, "{u}");
    let (status, t) = call(
        port,
        "POST",
        "/api/auth/login",
        None,
        Some(json!({"email": email, "password": PASSWORD})),
    );
    assert_eq!(status, 200, "{t}");
    (
        u["user"]["id"].as_str().unwrap().to_string(),
        t["access_token"].as_str().unwrap().to_string(),
    )
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_subscribe(port: u16, token: &str, channel: &str) -> (Ws, Value) {
    let mut req = format!("ws://127.0.0.1:{port}/ws")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(Message::text(
        json!({"op": "subscribe", "channel": channel, "since": 0}).to_string(),
    ))
    .await
    .unwrap();
    let first = next_json(&mut ws).await;
    (ws, first)
}

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("a message within 30 s")
            .unwrap()
            .unwrap();
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn the_tour_with_roles_split_over_two_processes_on_postgres() {
    let pg = sdsim_testing::postgres::Postgres::start();
    let redis_port = free_port();
    let _redis = Proc(
        Command::new("redis-server")
            .args([
                "--port",
                &redis_port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (./test.sh installs Debian's redis-server)"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", redis_port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let shared = |extra: &[(&str, String)]| {
        let mut env = vec![
            ("SDSIM__STORAGE__URL".to_string(), pg.url()),
            (
                "SDSIM__REDIS__URL".to_string(),
                format!("redis://127.0.0.1:{redis_port}/0"),
            ),
            (
                "SDSIM__SIMULATION__METRICS_INTERVAL".to_string(),
                "100ms".to_string(),
            ),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        env
    };
    let (project_grpc, sim_grpc) = (free_port(), free_port());
    let any = "127.0.0.1:0".to_string();
    let (_b, _) = sdsim(
        "services",
        &shared(&[
            ("SDSIM__ROLES", r#"["project", "simulation"]"#.into()),
            (
                "SDSIM__PROJECT__GRPC_LISTEN",
                format!("127.0.0.1:{project_grpc}"),
            ),
            (
                "SDSIM__SIMULATION__GRPC_LISTEN",
                format!("127.0.0.1:{sim_grpc}"),
            ),
            ("SDSIM__PROJECT__HTTP_LISTEN", any.clone()),
            ("SDSIM__SIMULATION__HTTP_LISTEN", any.clone()),
            (
                "SDSIM__AUTH__TOKENS",
                format!(r#"[{{token="{SERVICE_TOKEN}",user="gateway",roles=["service"]}}]"#),
            ),
        ]),
    );
    let (_a, port) = sdsim(
        "gateway",
        &shared(&[
            ("SDSIM__ROLES", r#"["gateway", "auth"]"#.into()),
            ("SDSIM__AUTH__HTTP_LISTEN", any.clone()),
            ("SDSIM__AUTH__GRPC_LISTEN", any.clone()),
            ("SDSIM__GATEWAY__SERVICE_TOKEN", SERVICE_TOKEN.into()),
            (
                "SDSIM__GATEWAY__PROJECT_SERVICE",
                format!("127.0.0.1:{project_grpc}"),
            ),
            (
                "SDSIM__GATEWAY__SIMULATION_SERVICE",
                format!("127.0.0.1:{sim_grpc}"),
            ),
        ]),
    );

    let (_, services) = call(port, "GET", "/health/services", None, None);
    let project = services["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "project")
        .unwrap()
        .clone();
    assert_eq!(project["status"], "remote", "{services}");

    let (ada_id, ada) = user(port, "ada@example.com");
    let (_, eve) = user(port, "eve@example.com");
    let (status, t) = call(port, "GET", "/api/templates", Some(&ada), None);
    assert_eq!(status, 200, "{t}");
    assert!(t["templates"].as_array().unwrap().len() >= 5);
    let (status, p) = call(
        port,
        "POST",
        "/api/projects",
        Some(&ada),
        Some(json!({"name": "Shop", "template_id": "three-tier"})),
    );
    assert_eq!(status, 201, "{p}");
    assert_eq!(
        (p["owner_id"].as_str(), p["role"].as_str()),
        (Some(ada_id.as_str()), Some("owner"))
    );
    let id = p["id"].as_str().unwrap().to_string();
    // Failures cross the process boundary intact: status, code, every design problem.
    let (status, e) = call(
        port,
        "GET",
        &format!("/api/projects/{id}"),
        Some(&eve),
        None,
    );
    assert_eq!(status, 404, "{e}");
    let (status, e) = call(
        port,
        "PUT",
        &format!("/api/projects/{id}"),
        Some(&ada),
        Some(
            json!({"design": {"version": 1, "components": [{"id": "a", "kind": "service", "instances": 0}]}}),
        ),
    );
    assert_eq!(status, 422, "{e}");
    assert_eq!(e["error"]["code"], "invalid_design");
    assert!(
        !e["error"]["problems"].as_array().unwrap().is_empty(),
        "{e}"
    );
    let (status, e) = call(
        port,
        "PUT",
        &format!("/api/projects/{id}"),
        Some(&ada),
        Some(json!({"name": ""})),
    );
    assert_eq!(status, 400, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().starts_with("name:"),
        "{e}"
    );

    let (status, run) = call(
        port,
        "POST",
        "/api/simulations",
        Some(&ada),
        Some(json!({"project_id": id, "duration_s": 40, "seed": 7, "speed": 40})),
    );
    assert_eq!(status, 202, "{run}");
    let sid = run["simulation_id"].as_str().unwrap().to_string();
    let channel = run["websocket_channel"].as_str().unwrap().to_string();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let points = rt.block_on(async {
        // A stranger is refused by the simulation service in the other process.
        let (_, refused) = ws_subscribe(port, &eve, &channel).await;
        assert_eq!(refused["code"], "forbidden", "{refused}");
        let (mut ws, first) = ws_subscribe(port, &ada, &channel).await;
        assert_eq!(first["op"], "subscribed", "{first}");
        let mut points = Vec::new();
        loop {
            let m = next_json(&mut ws).await;
            assert_eq!(m["op"], "event", "{m}");
            let kind = m["data"]["type"].as_str().unwrap().to_string();
            points.push(m["data"].clone());
            if kind != "metrics" {
                assert_eq!(kind, "completed");
                break points;
            }
        }
    });
    assert!(points.len() >= 2, "{points:?}");
    assert_eq!(points.last().unwrap()["progress"], 1.0);

    let deadline = Instant::now() + Duration::from_secs(30);
    let results = loop {
        let (status, r) = call(
            port,
            "GET",
            &format!("/api/simulations/{sid}/results"),
            Some(&ada),
            None,
        );
        if status == 200 {
            break r;
        }
        assert_eq!(status, 409, "{r}");
        assert!(Instant::now() < deadline, "no results: {r}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(results["simulation"]["status"], "completed", "{results}");
    assert!(
        results["report"]["end_to_end"]["completed"]
            .as_u64()
            .unwrap()
            > 0
    );
    let (status, history) = call(
        port,
        "GET",
        &format!("/api/simulations?project_id={id}"),
        Some(&ada),
        None,
    );
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["simulations"][0]["simulation_id"], sid.as_str());

    // A sweep through the gateway: refusals name the field across the gRPC hop, the progress
    // comes through Redis, the table from the other process.
    let (status, e) = call(
        port,
        "POST",
        "/api/simulations/sweeps",
        Some(&ada),
        Some(json!({"project_id": id, "parameters": [
            {"path": "components[nope].instances", "values": [1]}]})),
    );
    assert_eq!(status, 400, "{e}");
    assert_eq!(
        e["error"]["message"],
        "$.parameters[0].path: `components` has no `nope`"
    );
    let (status, started) = call(
        port,
        "POST",
        "/api/simulations/sweeps",
        Some(&ada),
        Some(json!({"project_id": id, "duration_s": 20, "parameters": [
            {"path": "components[app].instances", "range": [2, 3]}]})),
    );
    assert_eq!(status, 202, "{started}");
    let sweep_id = started["id"].as_str().unwrap().to_string();
    let channel = started["channel"].as_str().unwrap().to_string();
    let events = rt.block_on(async {
        let (_, refused) = ws_subscribe(port, &eve, &channel).await;
        assert_eq!(refused["code"], "forbidden", "{refused}");
        let (mut ws, first) = ws_subscribe(port, &ada, &channel).await;
        assert_eq!(first["op"], "subscribed", "{first}");
        let mut events = Vec::new();
        loop {
            let m = next_json(&mut ws).await;
            let kind = m["data"]["type"].as_str().unwrap().to_string();
            events.push(m["data"].clone());
            if kind != "point" {
                break events;
            }
        }
    });
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[2]["type"], "completed", "{events:?}");
    let (status, sweep) = call(
        port,
        "GET",
        &format!("/api/simulations/sweeps/{sweep_id}"),
        Some(&ada),
        None,
    );
    assert_eq!(status, 200, "{sweep}");
    assert_eq!(sweep["status"], "completed", "{sweep}");
    let values: Vec<&Value> = sweep["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["values"])
        .collect();
    assert_eq!(values, [&json!(["2"]), &json!(["3"])], "{sweep}");
    let (status, _) = call(
        port,
        "GET",
        &format!("/api/simulations/sweeps/{sweep_id}"),
        Some(&eve),
        None,
    );
    assert_eq!(status, 404);
}
