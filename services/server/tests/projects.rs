//! Projects and simulations end to end through the gateway with real clients: the README tour
//! (register, log in, project from a template, start a run, live metrics over WebSocket,
//! results) on SQLite and PostgreSQL; the authorization matrix (owner / editor / viewer /
//! stranger × every route); versions and rollback; bad input; a run stopped mid-way; the
//! per-user limit and the full queue.

mod support;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::{call, login, register, runtime, start, stop, STRONG};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

struct User {
    id: String,
    token: String,
}

fn user(addr: SocketAddr, email: &str) -> User {
    let u = register(addr, email);
    let (status, tokens) = login(addr, email, STRONG);
    assert_eq!(status, 200, "{tokens}");
    User {
        id: u["id"].as_str().unwrap().to_string(),
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
    let first = next_json(&mut ws).await;
    assert_eq!(first["op"], "subscribed", "{first}");
    ws
}

/// The error a subscription to `channel` gets.
async fn refused(addr: SocketAddr, token: &str, channel: &str) -> Value {
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(Message::text(
        json!({"op": "subscribe", "channel": channel}).to_string(),
    ))
    .await
    .unwrap();
    let m = next_json(&mut ws).await;
    assert_eq!(m["op"], "error", "{m}");
    m
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

/// Waits until the run's status is one of `wanted`.
fn wait_status(addr: SocketAddr, u: &User, id: &str, wanted: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
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

/// The README tour.
fn the_tour(addr: SocketAddr) {
    let ada = user(addr, "ada@example.com");
    let (status, t) = as_user(addr, &ada, "GET", "/api/templates", None);
    assert_eq!(status, 200, "{t}");
    let ids: Vec<&str> = t["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    for wanted in [
        "three-tier",
        "url-shortener",
        "chat-notifications",
        "read-heavy-cache",
        "event-pipeline",
        "retry-storm",
        "retry-storm-budget",
        "cache-stampede",
        "cache-stampede-fixed",
        "slow-dependency",
        "slow-dependency-codel",
    ] {
        assert!(ids.contains(&wanted), "{ids:?}");
    }
    let (status, p) = as_user(
        addr,
        &ada,
        "POST",
        "/api/projects",
        Some(json!({"name": "Shop", "description": "checkout path", "template_id": "three-tier"})),
    );
    assert_eq!(status, 201, "{p}");
    assert_eq!(p["version"], 1);
    assert_eq!(p["role"], "owner");
    assert_eq!(p["template_id"], "three-tier");
    assert!(p["design"]["components"].as_array().unwrap().len() >= 3);
    let project = p["id"].as_str().unwrap().to_string();

    let (status, run) = as_user(
        addr,
        &ada,
        "POST",
        "/api/simulations",
        Some(json!({"project_id": project, "duration_s": 40, "seed": 7, "speed": 40})),
    );
    assert_eq!(status, 202, "{run}");
    let id = run["simulation_id"].as_str().unwrap().to_string();
    let channel = run["websocket_channel"].as_str().unwrap().to_string();
    assert_eq!(channel, format!("simulation:data:{id}"));
    assert!(["queued", "running"].contains(&run["status"].as_str().unwrap()));

    // Only those who may see the run watch it; instance-wide feeds are for admins.
    let eve = user(addr, "eve@example.com");
    runtime().block_on(async {
        let m = refused(addr, &eve.token, &channel).await;
        assert_eq!(m["code"], "forbidden", "{m}");
        let m = refused(addr, &ada.token, "simulation:data:no-such-run").await;
        assert_eq!(m["code"], "forbidden", "{m}");
        let m = refused(addr, &ada.token, "project:events:created").await;
        assert_eq!(m["code"], "forbidden", "{m}");
    });

    // Live metrics over WebSocket until the run completes.
    let points = runtime().block_on(async {
        let mut ws = subscribe(addr, &ada.token, &channel).await;
        let mut points = Vec::new();
        loop {
            let m = next_json(&mut ws).await;
            assert_eq!(m["op"], "event", "{m}");
            let data = m["data"].clone();
            let kind = data["type"].as_str().unwrap().to_string();
            points.push(data);
            if kind != "metrics" {
                assert_eq!(kind, "completed");
                break points;
            }
        }
    });
    assert!(
        points.len() >= 2,
        "expected metrics points before the end: {points:?}"
    );
    let progress: Vec<f64> = points
        .iter()
        .map(|p| p["progress"].as_f64().unwrap())
        .collect();
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    assert_eq!(*progress.last().unwrap(), 1.0);
    assert!(
        points.last().unwrap()["metrics"]["completed"]
            .as_u64()
            .unwrap()
            > 0
    );

    let run = wait_status(addr, &ada, &id, &["completed"]);
    assert!(run["finished_at"].as_i64().unwrap() >= run["started_at"].as_i64().unwrap());
    let (status, results) = as_user(
        addr,
        &ada,
        "GET",
        &format!("/api/simulations/{id}/results"),
        None,
    );
    assert_eq!(status, 200, "{results}");
    assert!(
        results["report"]["end_to_end"]["completed"]
            .as_u64()
            .unwrap()
            > 0,
        "{results}"
    );
    assert!(
        results["analysis"]
            .as_array()
            .is_some_and(|a| !a.is_empty()),
        "{results}"
    );
    let (status, history) = as_user(
        addr,
        &ada,
        "GET",
        &format!("/api/simulations?project_id={project}"),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(history["simulations"][0]["simulation_id"], id.as_str());
}

#[sdsim_testing::backends(epoll, io_uring, epoll_postgres, io_uring_postgres)]
fn the_tour_on_every_backend() {
    let server = start(&[
        "ratelimit.enabled=false",
        "simulation.metrics_interval=100ms",
    ]);
    the_tour(server.local_addr());
    stop(server);
}

#[sdsim_testing::backends(epoll, io_uring, epoll_postgres, io_uring_postgres)]
fn every_route_checks_the_callers_role() {
    let server = start(&["ratelimit.enabled=false"]);
    let addr = server.local_addr();
    let owner = user(addr, "owner@example.com");
    let editor = user(addr, "editor@example.com");
    let viewer = user(addr, "viewer@example.com");
    let stranger = user(addr, "stranger@example.com");
    let (_, p) = as_user(
        addr,
        &owner,
        "POST",
        "/api/projects",
        Some(json!({"name": "Matrix", "template_id": "url-shortener"})),
    );
    let id = p["id"].as_str().unwrap().to_string();

    // The editor hears about the share on their notification channel.
    let rt = runtime();
    let mut inbox = rt.block_on(subscribe(
        addr,
        &editor.token,
        &format!("notifications:user:{}", editor.id),
    ));
    for (who, role) in [(&editor, "editor"), (&viewer, "viewer")] {
        let (status, m) = as_user(
            addr,
            &owner,
            "POST",
            &format!("/api/projects/{id}/share"),
            Some(json!({"user": format!("{role}@example.com"), "role": role})),
        );
        assert_eq!(status, 200, "{m}");
        assert!(m["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["user_id"] == who.id.as_str()));
    }
    let note = rt.block_on(next_json(&mut inbox));
    assert_eq!(note["data"]["event"], "shared", "{note}");
    assert_eq!(note["data"]["role"], "editor");
    assert_eq!(note["data"]["project_name"], "Matrix");

    let short = json!({"project_id": id, "duration_s": 5, "speed": 0});
    let rename = json!({"name": "Matrix 2"});
    let share = json!({"user": "stranger@example.com", "role": "viewer"});
    // (method, path, body, [owner, editor, viewer, stranger])
    let cases: Vec<(&str, String, Option<Value>, [u16; 4])> = vec![
        (
            "GET",
            format!("/api/projects/{id}"),
            None,
            [200, 200, 200, 404],
        ),
        (
            "GET",
            format!("/api/projects/{id}/members"),
            None,
            [200, 200, 200, 404],
        ),
        (
            "GET",
            format!("/api/projects/{id}/versions"),
            None,
            [200, 200, 200, 404],
        ),
        (
            "GET",
            format!("/api/projects/{id}/export"),
            None,
            [200, 200, 200, 404],
        ),
        (
            "PUT",
            format!("/api/projects/{id}"),
            Some(rename),
            [200, 200, 403, 404],
        ),
        (
            "POST",
            format!("/api/projects/{id}/rollback"),
            Some(json!({"version": 1})),
            [200, 200, 403, 404],
        ),
        (
            "POST",
            "/api/simulations".into(),
            Some(short),
            [202, 202, 403, 404],
        ),
        (
            "GET",
            format!("/api/simulations?project_id={id}"),
            None,
            [200, 200, 200, 404],
        ),
        // The owner goes first and shares the stranger in as a viewer: then 403, not 404.
        (
            "POST",
            format!("/api/projects/{id}/share"),
            Some(share),
            [200, 403, 403, 403],
        ),
    ];
    let people = [&owner, &editor, &viewer, &stranger];
    for (method, path, body, expected) in &cases {
        for (who, want) in people.iter().zip(expected) {
            let (status, v) = as_user(addr, who, method, path, body.clone());
            assert_eq!(status, *want, "{method} {path} as {}: {v}", who.id);
        }
    }
    // Runs are visible to project members; the stranger (now a viewer) may not stop them.
    let (_, runs) = as_user(
        addr,
        &owner,
        "GET",
        &format!("/api/simulations?project_id={id}"),
        None,
    );
    let run_id = runs["simulations"][0]["simulation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = as_user(
        addr,
        &viewer,
        "GET",
        &format!("/api/simulations/{run_id}"),
        None,
    );
    assert_eq!(status, 200);
    // Deleting: owner only.
    for who in [&editor, &viewer] {
        let (status, _) = as_user(addr, who, "DELETE", &format!("/api/projects/{id}"), None);
        assert_eq!(status, 403);
    }
    let (status, _) = as_user(addr, &owner, "DELETE", &format!("/api/projects/{id}"), None);
    assert_eq!(status, 204);
    for who in people {
        let (status, _) = as_user(addr, who, "GET", &format!("/api/projects/{id}"), None);
        assert_eq!(status, 404);
    }
    // No token at all.
    let (status, _, _) = call(addr, "GET", "/api/projects", None, None);
    assert_eq!(status, 401);
    stop(server);
}

#[sdsim_testing::backends(epoll, io_uring, epoll_postgres, io_uring_postgres)]
fn versions_rollback_import_export_and_bad_input() {
    let server = start(&["ratelimit.enabled=false"]);
    let addr = server.local_addr();
    let ada = user(addr, "ada@example.com");
    let create = |body: Value| as_user(addr, &ada, "POST", "/api/projects", Some(body));

    // Bad input: each names its field; nothing is stored.
    let (status, v) = create(json!({"name": "x"}));
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("invalid_argument")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("design"),
        "{v}"
    );
    let (status, v) = create(json!({"name": "", "template_id": "three-tier"}));
    assert_eq!(status, 400);
    assert!(
        v["error"]["message"].as_str().unwrap().starts_with("name"),
        "{v}"
    );
    let (status, v) = create(json!({"name": "x", "template_id": "no-such"}));
    assert_eq!(status, 404, "{v}");
    let (status, v) = create(json!({"name": "x", "template_id": "three-tier", "owner_id": "me"}));
    assert_eq!(status, 400);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("owner_id"),
        "{v}"
    );
    let (status, v) =
        create(json!({"name": "x", "design": {"components": [{"id": "a", "kind": "service"}]}}));
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["error"]["code"], "invalid_design");
    let problems = v["error"]["problems"].as_array().unwrap();
    assert!(problems.len() >= 2, "every problem, not the first: {v}");
    assert!(
        problems
            .iter()
            .all(|p| p["path"].as_str().unwrap().starts_with('$')),
        "{v}"
    );
    let (status, v) = create(json!({"name": "x", "template_id": "three-tier", "settings": [1]}));
    assert_eq!(status, 400, "{v}");
    let (status, v, _) = call(addr, "POST", "/api/projects", Some(&ada.token), None);
    assert_eq!(status, 400, "{v}");
    let (_, list) = as_user(addr, &ada, "GET", "/api/projects", None);
    assert_eq!(list["total"], 0, "{list}");

    // Versions: every change is one, with what changed; rollback is a new version.
    let (_, p) = create(json!({"name": "Pipeline", "template_id": "event-pipeline"}));
    let id = p["id"].as_str().unwrap().to_string();
    let mut design = p["design"].clone();
    let first = design["components"][1]["id"].as_str().unwrap().to_string();
    design["components"][1]["instances"] = json!(9);
    let (status, v) = as_user(
        addr,
        &ada,
        "PUT",
        &format!("/api/projects/{id}"),
        Some(json!({"design": design, "expected_version": 1})),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["version"], 2);
    let (status, v) = as_user(
        addr,
        &ada,
        "PUT",
        &format!("/api/projects/{id}"),
        Some(json!({"name": "Stale", "expected_version": 1})),
    );
    assert_eq!(status, 409, "{v}");
    let (_, versions) = as_user(
        addr,
        &ada,
        "GET",
        &format!("/api/projects/{id}/versions"),
        None,
    );
    let v2 = &versions["versions"][0];
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["summary"]["changed"], json!(["design"]));
    assert_eq!(v2["summary"]["components"]["changed"], json!([first]));
    let (status, v) = as_user(
        addr,
        &ada,
        "POST",
        &format!("/api/projects/{id}/rollback"),
        Some(json!({"version": 1})),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["version"], 3);
    assert_eq!(v["design"], p["design"]);
    let (status, _) = as_user(
        addr,
        &ada,
        "POST",
        &format!("/api/projects/{id}/rollback"),
        Some(json!({"version": 99})),
    );
    assert_eq!(status, 404);

    // Export → import makes an equal project.
    let (status, doc) = as_user(
        addr,
        &ada,
        "GET",
        &format!("/api/projects/{id}/export"),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(doc["format"], "sdsim.project.v1");
    let (status, copy) = as_user(
        addr,
        &ada,
        "POST",
        "/api/projects/import",
        Some(doc.clone()),
    );
    assert_eq!(status, 201, "{copy}");
    assert_eq!(copy["design"], p["design"]);
    assert_ne!(copy["id"], p["id"]);
    let (status, v) = as_user(
        addr,
        &ada,
        "POST",
        "/api/projects/import",
        Some(json!({"format": "other"})),
    );
    assert_eq!(status, 400, "{v}");

    // Listing: filters and pagination.
    let (_, list) = as_user(
        addr,
        &ada,
        "GET",
        "/api/projects?q=pipe&per_page=1&page=2",
        None,
    );
    assert_eq!(list["total"], 2, "{list}");
    assert_eq!(list["projects"].as_array().unwrap().len(), 1);
    let (status, _) = as_user(addr, &ada, "GET", "/api/projects?page=x", None);
    assert_eq!(status, 400);

    // Validation without running: every problem with its path.
    let (status, v) = as_user(
        addr,
        &ada,
        "POST",
        "/api/simulations/validate",
        Some(json!({"design": {"duration_s": -1}})),
    );
    assert_eq!(status, 200);
    assert_eq!(v["valid"], false);
    assert!(!v["problems"].as_array().unwrap().is_empty());
    let (status, v) = as_user(
        addr,
        &ada,
        "POST",
        "/api/simulations",
        Some(json!({"project_id": id, "duration_s": -5})),
    );
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("duration_s"),
        "{v}"
    );
    stop(server);
}

#[sdsim_testing::backends(epoll, io_uring, epoll_postgres, io_uring_postgres)]
fn runs_stop_midway_and_limits_hold() {
    let server = start(&[
        "ratelimit.enabled=false",
        "simulation.max_runs_per_user=2",
        "simulation.max_queued=1",
        "simulation.runs_per_shard=1",
    ]);
    let addr = server.local_addr();
    let ada = user(addr, "ada@example.com");
    let bob = user(addr, "bob@example.com");
    let cy = user(addr, "cy@example.com");
    let project = |u: &User| {
        let (_, p) = as_user(
            addr,
            u,
            "POST",
            "/api/projects",
            Some(json!({"name": "Long", "template_id": "three-tier"})),
        );
        p["id"].as_str().unwrap().to_string()
    };
    let slow = |p: &str| json!({"project_id": p, "duration_s": 3600, "speed": 1});
    let (pa, pb, pc) = (project(&ada), project(&bob), project(&cy));

    // Stopped mid-way: the run records `stopped` and keeps its partial report.
    let (status, run) = as_user(addr, &ada, "POST", "/api/simulations", Some(slow(&pa)));
    assert_eq!(status, 202, "{run}");
    let first = run["simulation_id"].as_str().unwrap().to_string();
    wait_status(addr, &ada, &first, &["running"]);
    // Mid-way: once it has published a metrics point with some progress.
    let channel = run["websocket_channel"].as_str().unwrap().to_string();
    runtime().block_on(async {
        let mut ws = subscribe(addr, &ada.token, &channel).await;
        loop {
            let m = next_json(&mut ws).await;
            assert_eq!(m["op"], "event", "{m}");
            if m["data"]["type"] == "metrics" && m["data"]["progress"].as_f64().unwrap() > 0.0 {
                break;
            }
        }
    });
    let (status, stopped) = as_user(
        addr,
        &ada,
        "POST",
        &format!("/api/simulations/{first}/stop"),
        None,
    );
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(stopped["status"], "stopped", "{stopped}");
    let (status, results) = as_user(
        addr,
        &ada,
        "GET",
        &format!("/api/simulations/{first}/results"),
        None,
    );
    assert_eq!(status, 200, "{results}");
    let (status, _) = as_user(
        addr,
        &ada,
        "POST",
        &format!("/api/simulations/{first}/stop"),
        None,
    );
    assert_eq!(status, 409, "stopping an ended run");

    // Per-user limit: two at once, the third is 429. Each run is running before the next is
    // asked for: until a shard takes it, a run holds the queue's one place (max_queued = 1).
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (status, run) = as_user(addr, &ada, "POST", "/api/simulations", Some(slow(&pa)));
        assert_eq!(status, 202, "{run}");
        let id = run["simulation_id"].as_str().unwrap().to_string();
        wait_status(addr, &ada, &id, &["running"]);
        ids.push(id);
    }
    let (status, v) = as_user(addr, &ada, "POST", "/api/simulations", Some(slow(&pa)));
    assert_eq!(status, 429, "{v}");
    assert_eq!(v["error"]["code"], "too_many_runs");
    // Two shards × one run each are busy with ada's runs; one more waits in the queue; the
    // queue is then full.
    let (status, queued) = as_user(addr, &bob, "POST", "/api/simulations", Some(slow(&pb)));
    assert_eq!(status, 202, "{queued}");
    assert_eq!(queued["status"], "queued");
    let (status, resp, r) = call(
        addr,
        "POST",
        "/api/simulations",
        Some(&cy.token),
        Some(slow(&pc)),
    );
    assert_eq!(status, 503, "{resp}");
    assert_eq!(resp["error"]["code"], "queue_full");
    assert_eq!(r.header("retry-after"), Some("1"));
    // Stopping a run frees a place: bob's run starts, cy can queue.
    let (status, _) = as_user(
        addr,
        &ada,
        "POST",
        &format!("/api/simulations/{}/stop", ids[0]),
        None,
    );
    assert_eq!(status, 200);
    wait_status(
        addr,
        &bob,
        queued["simulation_id"].as_str().unwrap(),
        &["running"],
    );
    let (status, v) = as_user(addr, &cy, "POST", "/api/simulations", Some(slow(&pc)));
    assert_eq!(status, 202, "{v}");
    // A queued run stops without ever running.
    let cy_run = v["simulation_id"].as_str().unwrap().to_string();
    let (status, v) = as_user(
        addr,
        &cy,
        "POST",
        &format!("/api/simulations/{cy_run}/stop"),
        None,
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "stopped");
    stop(server);
}
