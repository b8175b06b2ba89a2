//! The service registry as a server uses it, on a real redis-server (and PostgreSQL for runs):
//! a process registers each of its roles with the addresses it really listens on,
//! `/health/services` asks every registered instance, shutdown publishes `draining` and then
//! deletes the keys, and when a simulation instance stops answering (SIGKILL: no drain) a
//! surviving one fails the runs it left.
//!
//! Needs `redis-server` and PostgreSQL on PATH (test.sh installs Debian's packages). Waits
//! poll what the code decided against a generous deadline, never a sleep.

#[allow(dead_code, unused_imports)]
mod subprocess;
mod support;

use sdsim_mesh::{registry_key, Instance, InstanceStatus, Service};
use sdsim_simulations::pb as ps;
use sdsim_testing::postgres::fresh_database_url;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use subprocess::{Ports, Redis, Sdsim};
use support::{call, login, register, start, STRONG};
use tonic::codegen::http::uri::PathAndQuery;
use tonic_prost::ProstCodec;

/// A bound on a hang on a busy machine, not a measure of speed.
const PATIENCE: Duration = Duration::from_secs(120);

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn redis_get(conn: &mut redis::Connection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query(conn).unwrap()
}

fn health_services(addr: SocketAddr) -> Value {
    let (status, body, _) = call(addr, "GET", "/health/services", None, None);
    assert_eq!(status, 200, "{body}");
    body
}

#[test]
fn a_server_registers_its_roles_answers_health_for_each_then_drains_and_deregisters() {
    let redis = Redis::start();
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let redis_url = format!("redis.url={}", redis.url());
    let server = start(&[
        &redis_url,
        "instance.id=reg-one",
        "registry.ttl=3s",
        "registry.heartbeat=250ms",
        "simulation.metrics_interval=100ms",
        "ratelimit.enabled=false",
    ]);
    let addr = server.local_addr();
    let expected: Vec<(Service, Option<SocketAddr>, SocketAddr)> = vec![
        (Service::Gateway, None, addr),
        (
            Service::Auth,
            Some(server.auth_grpc_addr().unwrap()),
            server.auth_http_addr().unwrap(),
        ),
        (
            Service::Project,
            Some(server.project_grpc_addr().unwrap()),
            server.project_http_addr().unwrap(),
        ),
        (
            Service::Simulation,
            Some(server.simulation_grpc_addr().unwrap()),
            server.simulation_http_addr().unwrap(),
        ),
    ];
    for (service, grpc, http) in &expected {
        let key = registry_key(*service, "reg-one");
        let value = wait_for(&key, || redis_get(&mut conn, &key));
        let (parsed_service, instance) = Instance::parse_entry(&key, value.as_bytes())
            .unwrap_or_else(|e| panic!("{key} = {value}: {e}"));
        assert_eq!(parsed_service, *service);
        assert_eq!(
            (instance.grpc, instance.http),
            (*grpc, Some(*http)),
            "{value}"
        );
        assert_eq!(instance.status, InstanceStatus::Healthy);
        assert_eq!(instance.shards, 2);
        assert_eq!(instance.version, env!("CARGO_PKG_VERSION"));
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut conn).unwrap();
        assert!(ttl > 0 && ttl <= 3000, "{key}: TTL {ttl} ms");
    }

    // A call being served is advertised at the next heartbeat, and its end too: a live
    // metrics stream of a running run.
    register(addr, "ada@example.com");
    let ada = token(addr.port(), "ada@example.com");
    let run = slow_run(addr.port(), &ada);
    let key = registry_key(Service::Simulation, "reg-one");
    let rt = support::runtime();
    let sim_grpc = server.simulation_grpc_addr().unwrap();
    let (grpc, stream) = rt.block_on(async {
        let channel = tonic::transport::Channel::from_shared(format!("http://{sim_grpc}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let mut req = tonic::Request::new(ps::GetLiveMetricsRequest {
            simulation_id: run.clone(),
            ..Default::default()
        });
        req.metadata_mut()
            .insert("authorization", format!("Bearer {ada}").parse().unwrap());
        let mut stream = grpc
            .server_streaming(
                req,
                PathAndQuery::from_static("/sdsim.simulation.v1.SimulationService/GetLiveMetrics"),
                ProstCodec::<ps::GetLiveMetricsRequest, ps::GetLiveMetricsResponse>::default(),
            )
            .await
            .unwrap()
            .into_inner();
        stream.message().await.unwrap().expect("a first point");
        (grpc, stream)
    });
    wait_for("the call advertised", || {
        redis_get(&mut conn, &key).filter(|v| v.contains("\"in_flight\":1,"))
    });
    // The client goes away with its connection; the stream's next send ends the call.
    drop((stream, grpc, rt));
    wait_for("the call's end advertised", || {
        redis_get(&mut conn, &key).filter(|v| v.contains("\"in_flight\":0,"))
    });

    // Every instance the registry knows is asked, and answers.
    // The gateway is ready once the bus bridge is connected too.
    let body = wait_for(
        "/health/services to list four serving registrations",
        || {
            let body = health_services(addr);
            (body["instances"].as_array().unwrap().len() == 4 && body["status"] == "ok")
                .then_some(body)
        },
    );
    assert_eq!(body["registry"]["status"], "up", "{body}");
    assert_eq!(body["status"], "ok", "{body}");
    for instance in body["instances"].as_array().unwrap() {
        assert_eq!(instance["id"], "reg-one", "{body}");
        assert_eq!(instance["status"], "serving", "{body}");
        assert!(instance["latency_ms"].as_f64().is_some(), "{body}");
        assert!(instance["breaker"].is_null(), "{body}");
    }
    let services: Vec<&str> = body["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["service"].as_str().unwrap())
        .collect();
    assert_eq!(
        services,
        [
            "auth-service",
            "project-service",
            "simulation-service",
            "api-gateway"
        ]
    );
    // An instance registered at an address nobody listens on is listed as unreachable.
    let closed = SocketAddr::from(([127, 0, 0, 1], sdsim_testing::free_port()));
    let mut ghost = Instance::fixed(closed);
    ghost.id = "ghost".into();
    let ghost_key = registry_key(Service::Project, "ghost");
    let _: () = redis::cmd("SET")
        .arg(&ghost_key)
        .arg(ghost.to_json())
        .arg("PX")
        .arg(60_000)
        .query(&mut conn)
        .unwrap();
    let body = wait_for("/health/services to list the ghost", || {
        let body = health_services(addr);
        (body["instances"].as_array().unwrap().len() == 5).then_some(body)
    });
    assert_eq!(body["status"], "degraded", "{body}");
    let ghost_seen = body["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == "ghost")
        .unwrap()
        .clone();
    assert_eq!(ghost_seen["status"], "unreachable", "{body}");
    assert_eq!(ghost_seen["address"], closed.to_string(), "{body}");
    assert!(ghost_seen["latency_ms"].is_null(), "{body}");
    let _: i64 = redis::cmd("DEL").arg(&ghost_key).query(&mut conn).unwrap();

    let (status, ready, _) = call(addr, "GET", "/health/ready", None, None);
    assert_eq!(status, 200, "{ready}");
    assert_eq!(
        ready["service"],
        "api-gateway,auth-service,project-service,simulation-service"
    );
    assert_eq!(
        (
            &ready["instance"],
            &ready["database"],
            &ready["redis_status"]
        ),
        (&json!("reg-one"), &json!("up"), &json!("up")),
        "{ready}"
    );
    assert!(
        ready["timestamp"].as_str().unwrap().ends_with('Z'),
        "{ready}"
    );
    let metrics = support::get(addr, "/metrics").text();
    for line in [
        "sdsim_registry_up 1",
        "sdsim_registry_instances{service=\"auth-service\"} 1",
        "sdsim_registry_malformed_total 0",
    ] {
        assert!(metrics.contains(line), "{line} missing from /metrics");
    }

    // Shutdown: draining is published at its start; the keys go once the shards stopped.
    let shutdown = std::sync::Arc::clone(server.shutdown());
    shutdown.drain(Duration::from_secs(5));
    for (service, _, _) in &expected {
        let key = registry_key(*service, "reg-one");
        wait_for("draining", || {
            redis_get(&mut conn, &key)
                .filter(|v| v.contains("\"status\":\"draining\""))
                .map(|_| ())
        });
    }
    server.join().unwrap();
    let left: Vec<String> = redis::cmd("KEYS")
        .arg("services:*")
        .query(&mut conn)
        .unwrap();
    assert!(left.is_empty(), "deleted at the end: {left:?}");
}

#[test]
fn while_redis_is_down_health_says_so_and_the_last_instances_known_are_still_asked() {
    let mut redis = Redis::start();
    let redis_url = format!("redis.url={}", redis.url());
    let server = start(&[
        &redis_url,
        "instance.id=reg-outage",
        "registry.ttl=3s",
        "registry.heartbeat=250ms",
    ]);
    let addr = server.local_addr();
    let registry_of = |body: &Value| body["registry"]["status"].as_str().unwrap().to_string();
    wait_for("four serving instances, registry up", || {
        let body = health_services(addr);
        let all = body["instances"].as_array().unwrap().len() == 4 && body["status"] == "ok";
        (registry_of(&body) == "up" && all).then_some(())
    });
    redis.kill();
    // The gateway's readiness includes Redis (the bus bridge notices the outage on its own
    // connection), so it is not ready while Redis is down: HAProxy takes it out.
    let gateway_ready = |body: &Value| {
        body["instances"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["service"] == "api-gateway" && i["status"] == "serving")
    };
    let body = wait_for("registry down, gateway not ready", || {
        let body = health_services(addr);
        (registry_of(&body) == "down" && !gateway_ready(&body)).then_some(body)
    });
    let instances = body["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 4, "the last known instances stay: {body}");
    // The services still answer gRPC health.
    for i in instances.iter().filter(|i| i["service"] != "api-gateway") {
        assert_eq!(i["status"], "serving", "{body}");
    }
    let metrics = support::get(addr, "/metrics").text();
    assert!(metrics.contains("sdsim_registry_up 0"), "{metrics}");
    // Redis comes back empty: the registrations are written again by themselves.
    redis.launch();
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    wait_for("registered again", || {
        redis_get(&mut conn, &registry_key(Service::Auth, "reg-outage"))
    });
    wait_for("registry up", || {
        (registry_of(&health_services(addr)) == "up").then_some(())
    });
    support::stop(server);
}

#[test]
fn with_redis_a_listener_on_an_unspecified_address_needs_an_advertised_host() {
    let config =
        sdsim_server::config::Config::from_toml("[redis]\nurl = \"redis://127.0.0.1:6379\"\n")
            .unwrap();
    let problems: Vec<String> = config
        .validate()
        .unwrap_err()
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("registry.advertise_host")
                && p.contains("gateway.listen = 0.0.0.0:8000")),
        "{problems:?}"
    );
    let advertised = sdsim_server::config::Config::from_toml(
        "[redis]\nurl = \"redis://127.0.0.1:6379\"\n[registry]\nadvertise_host = \"10.1.2.3\"\n",
    )
    .unwrap();
    assert!(advertised.validate().is_ok());
}

fn token(port: u16, email: &str) -> String {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let (status, tokens) = login(addr, email, STRONG);
    assert_eq!(status, 200, "{tokens}");
    tokens["access_token"].as_str().unwrap().to_string()
}

fn active(run: &Value) -> bool {
    run["status"] == "queued" || run["status"] == "running"
}

/// Starts a run of an hour of simulated time at real speed (it stays queued or running) in a
/// new project; the answer.
fn try_run(port: u16, token: &str) -> (u16, Value) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let (status, p, _) = call(
        addr,
        "POST",
        "/api/projects",
        Some(token),
        Some(json!({"name": "Long", "template_id": "three-tier"})),
    );
    assert_eq!(status, 201, "{p}");
    let project = p["id"].as_str().unwrap();
    let (status, run, _) = call(
        addr,
        "POST",
        "/api/simulations",
        Some(token),
        Some(json!({"project_id": project, "duration_s": 3600, "speed": 1})),
    );
    (status, run)
}

fn slow_run(port: u16, token: &str) -> String {
    let (status, run) = try_run(port, token);
    assert_eq!(status, 202, "{run}");
    run["simulation_id"].as_str().unwrap().to_string()
}

fn run_status(port: u16, token: &str, id: &str) -> Value {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let (status, run, _) = call(
        addr,
        "GET",
        &format!("/api/simulations/{id}"),
        Some(token),
        None,
    );
    assert_eq!(status, 200, "{run}");
    run
}

#[test]
fn the_runs_of_a_killed_simulation_instance_are_failed_by_a_survivor() {
    let database = fresh_database_url();
    let redis = Redis::start();
    let env = |id: &str| {
        [
            ("SDSIM__STORAGE__URL", database.clone()),
            ("SDSIM__REDIS__URL", redis.url()),
            ("SDSIM__INSTANCE__ID", id.to_string()),
            ("SDSIM__REGISTRY__TTL", "2s".into()),
            ("SDSIM__REGISTRY__HEARTBEAT", "300ms".into()),
            ("SDSIM__RUNTIME__SHARDS", "1".into()),
            ("SDSIM__RUNTIME__CPUS", "[0]".into()),
            ("SDSIM__RATELIMIT__ENABLED", "false".into()),
            ("SDSIM__SIMULATION__MAX_RUNS_PER_USER", "1".into()),
        ]
        .map(|(k, v)| (k.to_string(), v))
        .to_vec()
    };
    // One after the other: both would apply the migrations to the empty database at once.
    let doomed = Sdsim::start("orphan-a", Ports::free(), env("orphan-a"));
    let survivor = Sdsim::start("orphan-b", Ports::free(), env("orphan-b"));
    let (a, b) = (doomed.ports.http, survivor.ports.http);
    register(SocketAddr::from(([127, 0, 0, 1], a)), "ada@example.com");
    register(SocketAddr::from(([127, 0, 0, 1], b)), "bob@example.com");
    let ada_run = slow_run(a, &token(a, "ada@example.com"));
    let bob_run = slow_run(b, &token(b, "bob@example.com"));
    // Ada reads her run through the survivor, which shares the database.
    let ada_at_b = token(b, "ada@example.com");
    let bob_at_b = token(b, "bob@example.com");
    assert!(active(&run_status(b, &ada_at_b, &ada_run)));
    // Her one run counts against her limit everywhere.
    let (status, refused) = try_run(b, &ada_at_b);
    assert_eq!(status, 429, "{refused}");

    // The survivor knows the doomed instance before it dies.
    let survivor_addr = SocketAddr::from(([127, 0, 0, 1], b));
    wait_for("the survivor to list orphan-a", || {
        let body = health_services(survivor_addr);
        body["instances"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["id"] == "orphan-a" && i["service"] == "simulation-service")
            .then_some(())
    });
    drop(doomed); // SIGKILL: no drain, no deletion; its registration expires.

    let failed = wait_for("ada's run to be failed by the survivor", || {
        let run = run_status(b, &ada_at_b, &ada_run);
        (!active(&run)).then_some(run)
    });
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(
        failed["error"], "instance orphan-a stopped answering: registration expired",
        "{failed}"
    );
    // The survivor's own run is untouched, and it forgot the dead instance.
    assert!(active(&run_status(b, &bob_at_b, &bob_run)));
    let body = health_services(survivor_addr);
    assert!(
        !body["instances"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["id"] == "orphan-a"),
        "{body}"
    );
    // Ada's limit is free again: her next run is accepted by the survivor.
    let (status, again) = try_run(b, &ada_at_b);
    assert_eq!(status, 202, "{again}");
    drop(survivor);
}
