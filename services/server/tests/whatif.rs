//! Live what-if through the gateway and the simulation service's gRPC listener with real
//! clients: a running run changed with `PATCH /api/simulations/{id}` shows the change on the
//! timeline of its live points (WebSocket, GetLiveMetrics) and in its report, and the engine
//! replaying the stored report's changes gives that report again; bad changes are refused
//! with the field named and the run goes on; queued, finished and other users' runs refuse.
//! With two instances sharing storage and a registry, a change sent to the one that does not
//! run the run is forwarded to the one that does.

#[allow(dead_code, unused_imports)]
mod subprocess;
mod support;

use futures_util::{SinkExt, StreamExt};
use sdsim_engine::engine::stats::Report;
use sdsim_engine::engine::Simulation;
use sdsim_simulations::pb as ps;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::{call, login, register, runtime, start, stop, STRONG};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// One overloaded instance (120/s against 100/s): more instances show at once.
const DESIGN: &str = r#"{"duration_s": 60, "seed": 9, "components": [
    {"id": "web", "kind": "source", "rate_per_s": 120, "to": "api"},
    {"id": "api", "kind": "service",
     "service_time": {"dist": "exponential", "mean_ms": 10}, "calls": [{"to": "db", "p": 0.5}]},
    {"id": "db", "kind": "database", "read_time": {"dist": "exponential", "mean_ms": 2},
     "write_time": {"dist": "exponential", "mean_ms": 5}, "write_ratio": 0.2}
]}"#;

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

/// A project holding [`DESIGN`] and a run of it (`speed` simulated seconds per second).
fn start_run(addr: SocketAddr, u: &User, speed: f64) -> (String, String) {
    let design: Value = serde_json::from_str(DESIGN).unwrap();
    let (status, p) = as_user(
        addr,
        u,
        "POST",
        "/api/projects",
        Some(json!({"name": "What if", "design": design})),
    );
    assert_eq!(status, 201, "{p}");
    let project = p["id"].as_str().unwrap();
    let (status, run) = as_user(
        addr,
        u,
        "POST",
        "/api/simulations",
        Some(json!({"project_id": project, "speed": speed})),
    );
    assert_eq!(status, 202, "{run}");
    (
        run["simulation_id"].as_str().unwrap().to_string(),
        run["websocket_channel"].as_str().unwrap().to_string(),
    )
}

fn wait_status(addr: SocketAddr, u: &User, id: &str, wanted: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, run) = as_user(addr, u, "GET", &format!("/api/simulations/{id}"), None);
        assert_eq!(status, 200, "{run}");
        if wanted.contains(&run["status"].as_str().unwrap()) {
            return run;
        }
        assert!(Instant::now() < deadline, "still {run}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn patch(addr: SocketAddr, u: &User, id: &str, body: Value) -> (u16, Value) {
    as_user(
        addr,
        u,
        "PATCH",
        &format!("/api/simulations/{id}"),
        Some(body),
    )
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn subscribe(addr: SocketAddr, token: &str, channel: &str) -> Ws {
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(Message::text(
        json!({"op": "subscribe", "channel": channel, "since": 0}).to_string(),
    ))
    .await
    .unwrap();
    let first = next_point(&mut ws).await;
    assert_eq!(first["op"], "subscribed", "{first}");
    ws
}

async fn next_point(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(60), ws.next())
            .await
            .expect("a message within 60 s")
            .unwrap()
            .unwrap();
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("{other:?}"),
        }
    }
}

/// The refusal of `body`: its status, code and message.
fn refused(addr: SocketAddr, u: &User, id: &str, body: Value) -> (u16, String, String) {
    let (status, v) = patch(addr, u, id, body);
    let e = &v["error"];
    (
        status,
        e["code"].as_str().unwrap_or_default().to_string(),
        e["message"].as_str().unwrap_or_default().to_string(),
    )
}

#[sdsim_testing::backends(epoll, io_uring_postgres)]
fn a_running_run_changes_live_and_its_report_replays() {
    let server = start(&[
        "ratelimit.enabled=false",
        "simulation.metrics_interval=100ms",
    ]);
    let addr = server.local_addr();
    let ada = user(addr, "ada@example.com");
    let bob = user(addr, "bob@example.com");
    // 60 simulated seconds at 6 per second: ten seconds of wall time to change it in.
    let (id, channel) = start_run(addr, &ada, 6.0);
    wait_status(addr, &ada, &id, &["running"]);

    // Bad changes: 400 naming the field; the run goes on.
    let bad = [
        (
            json!({"changes": [{"op": "set", "component": "nope", "field": "instances", "value": 2}]}),
            "$.changes[0].component: no component `nope` in the design",
        ),
        (
            json!({"changes": [{"op": "set", "component": "api", "field": "instances", "value": 0}]}),
            "$.changes[0].value: instances must be an integer in 1..=1000",
        ),
        (
            json!({"changes": [
                {"op": "clear", "component": "api"},
                {"op": "set", "component": "web", "field": "service_time",
                 "value": {"dist": "constant", "ms": 1}}]}),
            "$.changes[1].field: `service_time` cannot be set on `web` (settable there: rate_per_s)",
        ),
        (json!({"changes": []}), "$.changes: must hold at least one change"),
        (json!({"change": []}), "$.change: unknown field (allowed: changes)"),
    ];
    for (body, want) in bad {
        let (status, code, message) = refused(addr, &ada, &id, body);
        assert_eq!(
            (status, code.as_str()),
            (400, "invalid_change"),
            "{message}"
        );
        assert_eq!(message, want);
    }
    // Malformed JSON.
    let mut c = sdsim_testing::http::Client::connect(addr);
    let body = r#"{"changes": ["#;
    c.send(
        format!(
            "PATCH /api/simulations/{id} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            ada.token,
            body.len()
        )
        .as_bytes(),
    );
    let resp = c.read_response(false);
    let v: Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(resp.status, 400, "{v}");
    assert_eq!(v["error"]["code"], "invalid_change", "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("$: the body must be"), "{message}");
    // Someone else's run does not exist for them.
    let (status, code, _) = refused(
        addr,
        &bob,
        &id,
        json!({"changes": [{"op": "clear", "component": "api"}]}),
    );
    assert_eq!((status, code.as_str()), (404, "not_found"));
    let run = wait_status(addr, &ada, &id, &["running"]);
    assert_eq!(run["status"], "running");

    // A good change: accepted, normalised, with the simulated time it takes effect; the
    // next live points carry it on their timeline, at that time.
    let (at, seen) = runtime().block_on(async {
        let mut ws = subscribe(addr, &ada.token, &channel).await;
        let (status, accepted) = patch(
            addr,
            &ada,
            &id,
            json!({"changes": [
                {"op": "set", "component": "api", "field": "instances", "value": 3},
                {"op": "fault", "action": "add_latency", "component": "db", "ms": 20}]}),
        );
        assert_eq!(status, 202, "{accepted}");
        assert_eq!(accepted["id"], id.as_str());
        assert_eq!(
            accepted["accepted"],
            json!([
                {"op": "set", "component": "api", "field": "instances", "value": 3},
                {"op": "fault", "action": "add_latency", "component": "db", "ms": 20.0}])
        );
        let at = accepted["simulated_s"].as_f64().unwrap();
        assert!(at > 0.0 && at < 60.0, "{accepted}");
        loop {
            let m = next_point(&mut ws).await;
            let data = &m["data"];
            let entries = data["timeline"].as_array().cloned().unwrap_or_default();
            if let Some(e) = entries
                .iter()
                .find(|e| e["event"] == "what-if: instances 1 → 3")
            {
                assert_eq!(data["changes"][0]["t_s"].as_f64(), Some(at), "{data}");
                break (at, e.clone());
            }
            assert_ne!(
                data["type"], "completed",
                "the run ended without the change: {m}"
            );
        }
    });
    assert_eq!(seen["t_s"].as_f64(), Some(at), "{seen}");
    assert_eq!(seen["component"], "api");

    // The report lists the changes; the engine replays them to the same report.
    wait_status(addr, &ada, &id, &["completed"]);
    let (status, results) = as_user(
        addr,
        &ada,
        "GET",
        &format!("/api/simulations/{id}/results"),
        None,
    );
    assert_eq!(status, 200, "{results}");
    let stored = &results["report"];
    assert_eq!(
        stored["changes"],
        json!([
            {"t_s": at, "op": "set", "component": "api", "field": "instances", "value": 3},
            {"t_s": at, "op": "fault", "action": "add_latency", "component": "db", "ms": 20.0}])
    );
    let logged: Vec<&str> = stored["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        logged,
        ["what-if: instances 1 → 3", "what-if: add 20 ms of latency"]
    );
    let report: Report = serde_json::from_value(stored.clone()).expect("a report");
    let design = sdsim_engine::design::parse(DESIGN).unwrap();
    let mut replay = Simulation::with_changes(design, report.changes.clone()).expect("replayable");
    replay.run();
    let replayed: Value = serde_json::to_value(replay.report()).unwrap();
    assert_eq!(&replayed, stored);

    // A finished run takes no change.
    let (status, code, message) = refused(
        addr,
        &ada,
        &id,
        json!({"changes": [{"op": "clear", "component": "api"}]}),
    );
    assert_eq!((status, code.as_str()), (409, "run_finished"), "{message}");
    assert!(message.contains("completed"), "{message}");
    stop(server);
}

#[sdsim_testing::backends(epoll)]
fn a_queued_run_refuses_changes_and_grpc_changes_a_running_one() {
    let server = start(&[
        "ratelimit.enabled=false",
        "runtime.shards=1",
        "simulation.runs_per_shard=1",
        "simulation.metrics_interval=100ms",
    ]);
    let addr = server.local_addr();
    let ada = user(addr, "ada@example.com");
    // A slow run holds the shard's one slot: the next one waits in the queue.
    let (first, _) = start_run(addr, &ada, 1.0);
    wait_status(addr, &ada, &first, &["running"]);
    let (second, _) = start_run(addr, &ada, 1.0);
    assert_eq!(
        wait_status(addr, &ada, &second, &["queued"])["status"],
        "queued"
    );
    let (status, code, message) = refused(
        addr,
        &ada,
        &second,
        json!({"changes": [{"op": "clear", "component": "api"}]}),
    );
    assert_eq!((status, code.as_str()), (409, "run_finished"), "{message}");
    assert!(message.contains("queued"), "{message}");

    // Through the generated gRPC client, on the simulation service's own listener.
    let grpc = server.simulation_grpc_addr().unwrap();
    runtime().block_on(async {
        let channel = tonic::transport::Channel::from_shared(format!("http://{grpc}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = tonic::client::Grpc::new(channel);
        let change = |changes: &str| {
            let mut req = tonic::Request::new(ps::ChangeSimulationRequest {
                simulation_id: first.clone(),
                changes_json: changes.to_string(),
                ..Default::default()
            });
            req.metadata_mut()
                .insert("authorization", format!("Bearer {}", ada.token).parse().unwrap());
            req
        };
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/sdsim.simulation.v1.SimulationService/ChangeSimulation",
        );
        let codec = || {
            tonic_prost::ProstCodec::<ps::ChangeSimulationRequest, ps::ChangeSimulationResponse>::default()
        };
        client.ready().await.unwrap();
        let e = client
            .unary(
                change(r#"[{"op": "set", "component": "api", "field": "concurrency", "value": 0}]"#),
                path.clone(),
                codec(),
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert_eq!(
            e.message(),
            "$.changes[0].value: concurrency must be an integer in 1..=100000"
        );
        // GetLiveMetrics, attached before the change.
        let mut live_req = tonic::Request::new(ps::GetLiveMetricsRequest {
            simulation_id: first.clone(),
            ..Default::default()
        });
        live_req
            .metadata_mut()
            .insert("authorization", format!("Bearer {}", ada.token).parse().unwrap());
        client.ready().await.unwrap();
        let mut live = client
            .server_streaming(
                live_req,
                tonic::codegen::http::uri::PathAndQuery::from_static(
                    "/sdsim.simulation.v1.SimulationService/GetLiveMetrics",
                ),
                tonic_prost::ProstCodec::<ps::GetLiveMetricsRequest, ps::GetLiveMetricsResponse>::default(),
            )
            .await
            .unwrap()
            .into_inner();
        client.ready().await.unwrap();
        let ok = client
            .unary(
                change(r#"[{"op": "set", "component": "web", "field": "rate_per_s", "value": 50}]"#),
                path.clone(),
                codec(),
            )
            .await
            .unwrap()
            .into_inner();
        assert_eq!(ok.simulation_id, first);
        assert_eq!(
            ok.accepted_json,
            r#"[{"op":"set","component":"web","field":"rate_per_s","value":50.0}]"#
        );
        assert!(ok.simulated_s > 0.0, "{ok:?}");
        let entry = loop {
            let m = live.message().await.unwrap().expect("points until the change shows");
            let point = m.point.unwrap_or_default();
            if let Some(e) = point.timeline.into_iter().find(|e| e.component == "web") {
                break e;
            }
        };
        assert_eq!(entry.event, "what-if: rate_per_s 120 → 50");
        assert_eq!(entry.t_s, ok.simulated_s);
    });
    for id in [&first, &second] {
        let (status, v) = as_user(
            addr,
            &ada,
            "POST",
            &format!("/api/simulations/{id}/stop"),
            None,
        );
        assert_eq!(status, 200, "{v}");
    }
    // The stopped run's report keeps the change.
    let (status, results) = as_user(
        addr,
        &ada,
        "GET",
        &format!("/api/simulations/{first}/results"),
        None,
    );
    assert_eq!(status, 200, "{results}");
    assert_eq!(
        results["report"]["changes"][0]["field"], "rate_per_s",
        "{results}"
    );
    stop(server);
}

/// The token each instance presents to the other (and accepts from it).
const SERVICE_TOKEN: &str = "whatif-forwarding-token-0123456789";

/// Two instances share PostgreSQL and a Redis registry; a run started on A is changed
/// through B, which does not run it: B forwards the change to A, whose next live points
/// carry it. Without the service token, B says why it cannot forward.
#[test]
fn a_change_sent_to_another_instance_is_forwarded_to_the_one_running_the_run() {
    let database = sdsim_testing::postgres::fresh_database_url();
    let redis = subprocess::Redis::start();
    let env = |id: &str, token: &str| {
        [
            ("SDSIM__STORAGE__URL", database.clone()),
            ("SDSIM__REDIS__URL", redis.url()),
            ("SDSIM__INSTANCE__ID", id.to_string()),
            ("SDSIM__REGISTRY__HEARTBEAT", "200ms".into()),
            ("SDSIM__RUNTIME__SHARDS", "1".into()),
            ("SDSIM__RATELIMIT__ENABLED", "false".into()),
            ("SDSIM__SIMULATION__METRICS_INTERVAL", "100ms".into()),
            ("SDSIM__GATEWAY__SERVICE_TOKEN", token.to_string()),
            (
                "SDSIM__AUTH__TOKENS",
                format!(
                    r#"[{{token="{SERVICE_TOKEN}",user="simulation-peer",roles=["service"]}}]"#
                ),
            ),
        ]
        .map(|(k, v)| (k.to_string(), v))
        .to_vec()
    };
    // One after the other: both would apply the migrations to the empty database at once.
    let a = subprocess::Sdsim::start(
        "whatif-a",
        subprocess::Ports::free(),
        env("whatif-a", SERVICE_TOKEN),
    );
    let b = subprocess::Sdsim::start(
        "whatif-b",
        subprocess::Ports::free(),
        env("whatif-b", SERVICE_TOKEN),
    );
    let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let (a_addr, b_addr) = (at(a.ports.http), at(b.ports.http));
    let ada_at_a = user(a_addr, "ada@example.com");
    let (status, tokens) = login(b_addr, "ada@example.com", STRONG);
    assert_eq!(status, 200, "{tokens}");
    let ada_at_b = User {
        token: tokens["access_token"].as_str().unwrap().to_string(),
    };
    // 60 simulated seconds at 0.5 per second: two minutes to change it in.
    let (id, channel) = start_run(a_addr, &ada_at_a, 0.5);
    wait_status(a_addr, &ada_at_a, &id, &["running"]);
    // B knows A's simulation instance from the registry before the change is sent.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, body, _) = call(b_addr, "GET", "/health/services", None, None);
        assert_eq!(status, 200, "{body}");
        let listed = body["instances"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["id"] == "whatif-a" && i["service"] == "simulation-service");
        if listed {
            break;
        }
        assert!(Instant::now() < deadline, "B never listed A: {body}");
        std::thread::sleep(Duration::from_millis(20));
    }

    runtime().block_on(async {
        let mut ws = subscribe(a_addr, &ada_at_a.token, &channel).await;
        let (status, accepted) = patch(
            b_addr,
            &ada_at_b,
            &id,
            json!({"changes": [{"op": "set", "component": "api", "field": "instances", "value": 2}]}),
        );
        assert_eq!(status, 202, "{accepted}");
        assert_eq!(accepted["id"], id.as_str());
        let t = accepted["simulated_s"].as_f64().unwrap();
        loop {
            let m = next_point(&mut ws).await;
            let data = &m["data"];
            let entries = data["timeline"].as_array().cloned().unwrap_or_default();
            if let Some(e) = entries
                .iter()
                .find(|e| e["event"] == "what-if: instances 1 → 2")
            {
                assert_eq!(e["t_s"].as_f64(), Some(t), "{data}");
                break;
            }
            assert_ne!(data["type"], "completed", "the run ended without the change: {m}");
        }
    });
    // The owner's checks hold when forwarded: a bad change is refused naming the field.
    let (status, code, message) = refused(
        b_addr,
        &ada_at_b,
        &id,
        json!({"changes": [{"op": "set", "component": "nope", "field": "instances", "value": 2}]}),
    );
    assert_eq!(
        (status, code.as_str()),
        (400, "invalid_change"),
        "{message}"
    );
    assert_eq!(
        message,
        "$.changes[0].component: no component `nope` in the design"
    );
    drop(b);

    // An instance without a service token cannot forward, and says what to set.
    let c = subprocess::Sdsim::start("whatif-c", subprocess::Ports::free(), env("whatif-c", ""));
    let c_addr = at(c.ports.http);
    let (status, tokens) = login(c_addr, "ada@example.com", STRONG);
    assert_eq!(status, 200, "{tokens}");
    let ada_at_c = User {
        token: tokens["access_token"].as_str().unwrap().to_string(),
    };
    let (status, code, message) = refused(
        c_addr,
        &ada_at_c,
        &id,
        json!({"changes": [{"op": "clear", "component": "api"}]}),
    );
    assert_eq!(status, 503, "{code}: {message}");
    assert!(
        message.contains("runs on instance whatif-a") && message.contains("gateway.service_token"),
        "{message}"
    );
    let (status, run) = as_user(
        a_addr,
        &ada_at_a,
        "POST",
        &format!("/api/simulations/{id}/stop"),
        None,
    );
    assert_eq!(status, 200, "{run}");
    drop((a, c));
}
