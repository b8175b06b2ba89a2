//! Sweeps through the gateway with real clients: `POST /api/simulations/sweeps` runs a grid of
//! a project's design as runs of the caller's, its table comes back in grid order with the
//! knee the SLO says, its progress arrives on `simulation:sweep:{id}` (one event per point,
//! then the end), bad requests are refused naming the field, other users' projects do not
//! exist for them, and a stopped sweep starts no more points. gRPC `StartSweep` refuses with
//! the same messages.

mod support;

use futures_util::{SinkExt, StreamExt};
use sdsim_simulations::pb as ps;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::{call, login, register, runtime, start, stop, STRONG};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// One service of 10 ms (exponential) behind an open source: M/M/c, whose p99 response is
/// 10 ms · ln 100 / (1 − ρ) for one instance (58 ms at ρ = 0.2, 230 ms at ρ = 0.8).
const DESIGN: &str = r#"{"duration_s": 200, "warmup_s": 20, "seed": 5, "components": [
    {"id": "users", "kind": "source", "rate_per_s": 10, "to": "api"},
    {"id": "api", "kind": "service", "instances": 1,
     "service_time": {"dist": "exponential", "mean_ms": 10}}
]}"#;

/// The p99 the knee must hold: between M/M/1 at ρ = 0.2 and at ρ = 0.8.
const SLO_MS: f64 = 120.0;

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

fn project(addr: SocketAddr, u: &User, design: &str) -> String {
    let design: Value = serde_json::from_str(design).unwrap();
    let (status, p) = as_user(
        addr,
        u,
        "POST",
        "/api/projects",
        Some(json!({"name": "Sweep", "design": design})),
    );
    assert_eq!(status, 201, "{p}");
    p["id"].as_str().unwrap().to_string()
}

fn wait_sweep(addr: SocketAddr, u: &User, id: &str, wanted: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (status, sweep) = as_user(
            addr,
            u,
            "GET",
            &format!("/api/simulations/sweeps/{id}"),
            None,
        );
        assert_eq!(status, 200, "{sweep}");
        if wanted.contains(&sweep["status"].as_str().unwrap()) {
            return sweep;
        }
        assert!(Instant::now() < deadline, "still {sweep}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Subscribes to `channel` from its first event (the bus keeps them for late subscribers).
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
    let first = next_message(&mut ws).await;
    assert_eq!(first["op"], "subscribed", "{first}");
    ws
}

async fn next_message(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(120), ws.next())
            .await
            .expect("a message within 120 s")
            .unwrap()
            .unwrap();
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("{other:?}"),
        }
    }
}

/// The events of a sweep's channel up to its end event.
async fn events_until_end(ws: &mut Ws) -> Vec<Value> {
    let mut events = Vec::new();
    loop {
        let m = next_message(ws).await;
        assert_eq!(m["op"], "event", "{m}");
        let data = m["data"].clone();
        let end = data["type"] != "point";
        events.push(data);
        if end {
            return events;
        }
    }
}

#[sdsim_testing::backends(epoll, io_uring_postgres)]
fn a_sweep_runs_its_grid_as_runs_and_finds_the_knee() {
    // One run at a time per user: the sweep's two concurrent points must not count.
    let server = start(&["ratelimit.enabled=false", "simulation.max_runs_per_user=1"]);
    let addr = server.local_addr();
    let ada = user(addr, "ada@example.com");
    let p = project(addr, &ada, DESIGN);
    let (status, started) = as_user(
        addr,
        &ada,
        "POST",
        "/api/simulations/sweeps",
        Some(
            json!({"project_id": p, "slo_p99_ms": SLO_MS, "parameters": [
            {"path": "components[users].rate_per_s", "values": [20, 80]},
            {"path": "components[api].instances", "range": [1, 2]}]}),
        ),
    );
    assert_eq!(status, 202, "{started}");
    let id = started["id"].as_str().unwrap().to_string();
    assert_eq!(started["points"], 4);
    assert_eq!(started["channel"], format!("simulation:sweep:{id}"));

    let events = runtime().block_on(async {
        let mut ws = subscribe(addr, &ada.token, &format!("simulation:sweep:{id}")).await;
        events_until_end(&mut ws).await
    });
    // One event per point, then the end with the knee.
    assert_eq!(events.len(), 5, "{events:?}");
    let mut indexes: Vec<u64> = events[..4]
        .iter()
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    indexes.sort();
    assert_eq!(indexes, [0, 1, 2, 3]);
    assert_eq!(events[4]["type"], "completed", "{:?}", events[4]);

    let sweep = wait_sweep(addr, &ada, &id, &["completed"]);
    assert_eq!(
        sweep["parameters"],
        json!(["components[users].rate_per_s", "components[api].instances"])
    );
    let rows = sweep["rows"].as_array().unwrap();
    // Grid order: the first parameter varies slowest.
    let values: Vec<Value> = rows.iter().map(|r| r["values"].clone()).collect();
    assert_eq!(
        values,
        [
            json!(["20", "1"]),
            json!(["20", "2"]),
            json!(["80", "1"]),
            json!(["80", "2"])
        ]
    );
    assert!(rows.iter().all(|r| r["status"] == "completed"), "{sweep}");
    let figure = |i: usize, key: &str| rows[i]["row"][key].as_f64().unwrap();
    // Throughput follows the offered rate (nothing is dropped: every queue is unbounded).
    for i in 0..2 {
        assert!(
            figure(i + 2, "throughput_per_s") > 3.0 * figure(i, "throughput_per_s"),
            "{sweep}"
        );
        assert!(
            (figure(i, "throughput_per_s") - 20.0).abs() < 2.0,
            "{sweep}"
        );
        assert!(
            (figure(i + 2, "throughput_per_s") - 80.0).abs() < 4.0,
            "{sweep}"
        );
    }
    assert_eq!(rows[2]["row"]["busiest"]["component"], "api");
    assert!(
        figure(2, "p99_ms") > SLO_MS && figure(3, "p99_ms") <= SLO_MS,
        "{sweep}"
    );
    // The knee: the largest load within the SLO is 80/s, which only two instances hold.
    assert_eq!(sweep["knee"], 3, "{sweep}");
    assert_eq!(events[4]["knee"], 3);
    // The point events carry the rows of the table.
    for e in &events[..4] {
        let i = e["index"].as_u64().unwrap() as usize;
        assert_eq!(e["row"], rows[i]["row"], "{e}");
        assert_eq!(e["values"], rows[i]["values"]);
    }
    // Each point is a run of ada's, in the project's history, naming the sweep.
    let (status, history) = as_user(
        addr,
        &ada,
        "GET",
        &format!("/api/simulations?project_id={p}"),
        None,
    );
    assert_eq!(status, 200, "{history}");
    let runs = history["simulations"].as_array().unwrap();
    assert_eq!(runs.len(), 4, "{history}");
    for run in runs {
        assert_eq!(run["sweep_id"], id.as_str(), "{run}");
        assert_eq!(run["status"], "completed", "{run}");
        assert_eq!(run["user_id"], runs[0]["user_id"]);
    }
    let mut ids: Vec<&str> = runs
        .iter()
        .map(|r| r["simulation_id"].as_str().unwrap())
        .collect();
    let mut listed: Vec<&str> = rows
        .iter()
        .map(|r| r["simulation_id"].as_str().unwrap())
        .collect();
    ids.sort();
    listed.sort();
    assert_eq!(ids, listed);
    // A finished sweep cannot be stopped.
    let (status, v) = as_user(
        addr,
        &ada,
        "DELETE",
        &format!("/api/simulations/sweeps/{id}"),
        None,
    );
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{v}"
    );
    stop(server);
}

#[sdsim_testing::backends(epoll)]
fn bad_sweeps_are_refused_naming_the_field() {
    let server = start(&["ratelimit.enabled=false", "simulation.sweep_max_points=4"]);
    let addr = server.local_addr();
    let ada = user(addr, "ada@example.com");
    let bob = user(addr, "bob@example.com");
    let p = project(addr, &ada, DESIGN);
    let rate = |values: Value| json!([{"path": "components[users].rate_per_s", "values": values}]);
    let cases = [
        (json!({"parameters": rate(json!([1]))}), 400, "$.project_id: missing (required): a project id"),
        (json!({"project_id": p}), 400, "$.parameters: missing (required): an array of {\"path\", \"values\"} or {\"path\", \"range\"}"),
        (json!({"project_id": p, "parameters": []}), 400, "$.parameters: must hold at least one parameter"),
        (json!({"project_id": p, "parameters": rate(json!([1])), "speed": 2}), 400, "$.speed: unknown field (allowed: project_id, parameters, slo_p99_ms, duration_s, seed, max_points)"),
        (json!({"project_id": p, "parameters": [{"path": "components[users].rate_per_s", "values": [1]}, {"path": "components[db].instances", "values": [1]}]}), 400, "$.parameters[1].path: `components` has no `db`"),
        (json!({"project_id": p, "parameters": [{"path": "components[api].instances", "range": [2, 1]}]}), 400, "$.parameters[0].range: a range goes up: FROM..TO with FROM ≤ TO"),
        (json!({"project_id": p, "parameters": [{"path": "components[api].instances", "values": "1"}]}), 400, "$.parameters[0].values: must be an array of values"),
        (json!({"project_id": p, "parameters": [{"path": "components[api].instances", "values": [1, 0]}]}), 400, "$.parameters: at components[api].instances=0: not a valid design: $.components[1].instances: must be a whole number ≥ 1"),
        (json!({"project_id": p, "parameters": rate(json!([1])), "slo_p99_ms": -5}), 400, "$.slo_p99_ms: -5: a positive number of milliseconds"),
        (json!({"project_id": p, "parameters": rate(json!([1])), "duration_s": 0}), 400, "$.duration_s: 0 is not between 0 (exclusive) and simulation.max_duration_s = 86400"),
        // Over the cap: the configured one, and one the request sets.
        (json!({"project_id": p, "parameters": rate(json!([1, 2, 3, 4, 5]))}), 400, "$.parameters: the sweep has 5 points, more than the limit of 4"),
        (json!({"project_id": p, "parameters": rate(json!([1, 2, 3])), "max_points": 2}), 400, "$.parameters: the sweep has 3 points, more than the limit of 2"),
        (json!({"project_id": p, "parameters": rate(json!([1])), "max_points": 5}), 400, "$.max_points: 5 is not between 1 and simulation.sweep_max_points = 4"),
    ];
    for (body, want_status, want) in cases {
        let (status, v) = as_user(
            addr,
            &ada,
            "POST",
            "/api/simulations/sweeps",
            Some(body.clone()),
        );
        assert_eq!(status, want_status, "{body}: {v}");
        assert_eq!(v["error"]["code"], "invalid_argument", "{body}: {v}");
        assert_eq!(v["error"]["message"], want, "{body}");
    }
    // Someone else's project does not exist for bob, nor does ada's sweep.
    let good = json!({"project_id": p, "parameters": rate(json!([5])), "duration_s": 10});
    let (status, v) = as_user(
        addr,
        &bob,
        "POST",
        "/api/simulations/sweeps",
        Some(good.clone()),
    );
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );
    let (status, started) = as_user(addr, &ada, "POST", "/api/simulations/sweeps", Some(good));
    assert_eq!(status, 202, "{started}");
    let id = started["id"].as_str().unwrap();
    for method in ["GET", "DELETE"] {
        let (status, v) = as_user(
            addr,
            &bob,
            method,
            &format!("/api/simulations/sweeps/{id}"),
            None,
        );
        assert_eq!(status, 404, "{method}: {v}");
    }
    wait_sweep(addr, &ada, id, &["completed"]);

    // gRPC StartSweep refuses with the same message, the field in the details.
    let grpc = server.simulation_grpc_addr().unwrap();
    runtime().block_on(async {
        let channel = tonic::transport::Channel::from_shared(format!("http://{grpc}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = tonic::client::Grpc::new(channel);
        let mut req = tonic::Request::new(ps::StartSweepRequest {
            project_id: p.clone(),
            parameters_json: r#"[{"path": "components[api].instances", "range": [1, 2]}, {"path": "components[db].instances", "values": [1]}]"#.into(),
            ..Default::default()
        });
        req.metadata_mut()
            .insert("authorization", format!("Bearer {}", ada.token).parse().unwrap());
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/sdsim.simulation.v1.SimulationService/StartSweep",
        );
        client.ready().await.unwrap();
        let e = client
            .unary(
                req,
                path,
                tonic_prost::ProstCodec::<ps::StartSweepRequest, ps::StartSweepResponse>::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert_eq!(e.message(), "$.parameters[1].path: `components` has no `db`");
    });
    stop(server);
}

#[sdsim_testing::backends(epoll)]
fn a_stopped_sweep_starts_no_more_points() {
    // Two runs per user: the sweep counts as one, whatever its points.
    let server = start(&["ratelimit.enabled=false", "simulation.max_runs_per_user=2"]);
    let addr = server.local_addr();
    let ada = user(addr, "ada@example.com");
    let p = project(addr, &ada, DESIGN);
    let other = project(addr, &ada, DESIGN);
    // Eight long points: two run at a time (one per shard), far from done when stopped.
    let (status, started) = as_user(
        addr,
        &ada,
        "POST",
        "/api/simulations/sweeps",
        Some(json!({"project_id": p, "duration_s": 80000, "parameters": [
            {"path": "components[users].rate_per_s", "range": [50, 57]}]})),
    );
    assert_eq!(status, 202, "{started}");
    let id = started["id"].as_str().unwrap().to_string();
    // Stop it once a point runs.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, history) = as_user(
            addr,
            &ada,
            "GET",
            &format!("/api/simulations?project_id={p}"),
            None,
        );
        let runs = history["simulations"].as_array().unwrap();
        if runs.iter().any(|r| r["status"] == "running") {
            break;
        }
        assert!(Instant::now() < deadline, "no point runs: {history}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A long run of another project: the sweep and it are ada's two.
    let start_run = || {
        as_user(
            addr,
            &ada,
            "POST",
            "/api/simulations",
            Some(json!({"project_id": other, "duration_s": 80000, "speed": 0})),
        )
    };
    let (status, run) = start_run();
    assert_eq!(status, 202, "{run}");
    let (status, refused) = start_run();
    assert_eq!(status, 429, "{refused}");
    let (status, refused) = as_user(
        addr,
        &ada,
        "POST",
        "/api/simulations/sweeps",
        Some(json!({"project_id": other, "parameters": [
            {"path": "components[api].instances", "values": [1]}]})),
    );
    assert_eq!(status, 429, "{refused}");
    let (status, stopped) = as_user(
        addr,
        &ada,
        "DELETE",
        &format!("/api/simulations/sweeps/{id}"),
        None,
    );
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(stopped["status"], "stopped");
    let end = runtime().block_on(async {
        let mut ws = subscribe(addr, &ada.token, &format!("simulation:sweep:{id}")).await;
        events_until_end(&mut ws).await
    });
    let last = end.last().unwrap();
    assert_eq!(last["type"], "stopped", "{end:?}");
    assert_eq!(last["knee"], Value::Null);
    // At most the two that were running have runs, and they were stopped; none completed.
    let (_, history) = as_user(
        addr,
        &ada,
        "GET",
        &format!("/api/simulations?project_id={p}"),
        None,
    );
    let runs = history["simulations"].as_array().unwrap();
    assert!(!runs.is_empty() && runs.len() <= 2, "{history}");
    assert!(runs.iter().all(|r| r["status"] == "stopped"), "{history}");
    let sweep = wait_sweep(addr, &ada, &id, &["stopped"]);
    assert!(
        sweep["rows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["row"].is_null()),
        "{sweep}"
    );
    assert_eq!(sweep["knee"], Value::Null);
    // Ended, the sweep no longer counts.
    let (status, run) = start_run();
    assert_eq!(status, 202, "{run}");
    stop(server);
}

/// A sweep whose points find the instance's queue full waits for a place instead of failing
/// them: every point runs once the queue has room.
#[sdsim_testing::backends(epoll)]
fn points_wait_for_a_place_in_a_full_queue() {
    let server = start(&[
        "ratelimit.enabled=false",
        "simulation.runs_per_shard=1",
        "simulation.max_queued=1",
        "simulation.max_runs_per_user=5",
    ]);
    let addr = server.local_addr();
    let ada = user(addr, "ada@example.com");
    let p = project(addr, &ada, DESIGN);
    let run = |duration: f64| {
        let (status, run) = as_user(
            addr,
            &ada,
            "POST",
            "/api/simulations",
            Some(json!({"project_id": p, "duration_s": duration, "speed": 0})),
        );
        assert_eq!(status, 202, "{run}");
        run["simulation_id"].as_str().unwrap().to_string()
    };
    let status_of = |id: &str| {
        let (_, run) = as_user(addr, &ada, "GET", &format!("/api/simulations/{id}"), None);
        run["status"].as_str().unwrap().to_string()
    };
    let wait_for = |id: &str, wanted: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while status_of(id) != wanted {
            assert!(Instant::now() < deadline, "{id} is not {wanted}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // Both shards' one slot taken by long runs, and the queue's one place by a third.
    let (a, b) = (run(80000.0), run(80000.0));
    wait_for(&a, "running");
    wait_for(&b, "running");
    let c = run(80000.0);
    assert_eq!(status_of(&c), "queued");
    let (status, started) = as_user(
        addr,
        &ada,
        "POST",
        "/api/simulations/sweeps",
        Some(json!({"project_id": p, "duration_s": 20, "parameters": [
            {"path": "components[users].rate_per_s", "values": [10, 20]}]})),
    );
    assert_eq!(status, 202, "{started}");
    let id = started["id"].as_str().unwrap().to_string();
    for run in [&c, &a] {
        let (status, v) = as_user(
            addr,
            &ada,
            "POST",
            &format!("/api/simulations/{run}/stop"),
            None,
        );
        assert_eq!(status, 200, "{v}");
    }
    let sweep = wait_sweep(addr, &ada, &id, &["completed", "stopped", "failed"]);
    assert_eq!(sweep["status"], "completed", "{sweep}");
    let statuses: Vec<&Value> = sweep["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["status"])
        .collect();
    assert_eq!(
        statuses,
        [&json!("completed"), &json!("completed")],
        "{sweep}"
    );
    stop(server);
}
