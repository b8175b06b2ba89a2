//! The mesh client in a gateway-only process with a static list of project instances (each an
//! in-process server with `roles = ["project"]` on its own port, one shared storage): calls
//! spread over every instance; a stopped instance costs no call (refused connects are retried
//! elsewhere), its breaker opens, and closes after the cool-down once it is back on the same
//! address; a pool grows under concurrent load and shrinks when idle; the process-wide
//! connection cap holds.

mod support;

use sdsim_server::Server;
use sdsim_testing::http::{call, get};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::{login, register, STRONG};

const SERVICE_TOKEN: &str = "mesh-test-service-token-0123";

/// The storage every server of a test shares (the backend's database, or one SQLite file).
fn storage() -> Option<String> {
    match sdsim_testing::backend::current().database_url() {
        Some(_) => None,
        None => Some(format!(
            "storage.url=sqlite://{}/mesh.db",
            sdsim_testing::temp_dir("mesh").display()
        )),
    }
}

/// A project-only server; on `grpc` when given.
fn project(storage: &Option<String>, grpc: Option<SocketAddr>) -> Server {
    let tokens =
        format!(r#"auth.tokens=[{{token="{SERVICE_TOKEN}",user="gateway",roles=["service"]}}]"#);
    let listen = grpc.map(|a| format!("project.grpc_listen={a}"));
    let mut sets = vec![r#"roles=["project"]"#, "runtime.shards=1", tokens.as_str()];
    sets.extend(storage.as_deref());
    sets.extend(listen.as_deref());
    sdsim_testing::server::start(&sets)
}

/// A gateway and auth server reaching the project service at `projects`, with `mesh` settings.
fn gateway(storage: &Option<String>, projects: &[SocketAddr], mesh: &[&str]) -> Server {
    let list: Vec<String> = projects.iter().map(|a| a.to_string()).collect();
    let list = format!("gateway.project_service={}", list.join(","));
    let token = format!("gateway.service_token={SERVICE_TOKEN}");
    let mut sets = vec![
        r#"roles=["gateway", "auth"]"#,
        "runtime.shards=1",
        "ratelimit.enabled=false",
        list.as_str(),
        token.as_str(),
    ];
    sets.extend(storage.as_deref());
    sets.extend_from_slice(mesh);
    sdsim_testing::server::start(&sets)
}

/// A user's token and one project of theirs, created through `gw`.
fn user_with_project(gw: SocketAddr, email: &str) -> (String, String) {
    register(gw, email);
    let (status, t) = login(gw, email, STRONG);
    assert_eq!(status, 200, "{t}");
    let token = t["access_token"].as_str().unwrap().to_string();
    let (status, p, _) = call(
        gw,
        "POST",
        "/api/projects",
        Some(&token),
        Some(json!({"name": "Shop", "template_id": "three-tier"})),
    );
    assert_eq!(status, 201, "{p}");
    (token, p["id"].as_str().unwrap().to_string())
}

/// The value of metric `name` whose labels include every one of `labels` (summed when several
/// lines match); `None` when no line does.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !rest.starts_with('{') && !rest.starts_with(' ') {
            continue;
        }
        if labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        {
            let value: f64 = rest.rsplit(' ').next().unwrap().parse().unwrap();
            found = Some(found.unwrap_or(0.0) + value);
        }
    }
    found
}

fn metrics(gw: SocketAddr) -> String {
    get(gw, "/metrics").text()
}

/// What the gateway's mesh says about instance `addr` of the project service.
fn of(text: &str, name: &str, addr: SocketAddr) -> f64 {
    let addr = addr.to_string();
    metric(
        text,
        name,
        &[("service", "project-service"), ("instance", &addr)],
    )
    .unwrap_or(0.0)
}

fn get_project(gw: SocketAddr, token: &str, id: &str) -> (u16, Value) {
    let (status, body, _) = call(gw, "GET", &format!("/api/projects/{id}"), Some(token), None);
    (status, body)
}

#[test]
fn calls_spread_over_instances_survive_a_stopped_one_and_its_breaker_opens_and_closes() {
    let storage = storage();
    let p1 = project(&storage, None);
    let p2 = project(&storage, None);
    let p3 = project(&storage, None);
    let addrs: Vec<SocketAddr> = [&p1, &p2, &p3]
        .iter()
        .map(|p| p.project_grpc_addr().unwrap())
        .collect();
    let g = gateway(
        &storage,
        &addrs,
        &[
            "mesh.breaker_failures=2",
            "mesh.breaker_cooldown=300ms",
            "mesh.pool_min=1",
        ],
    );
    let gw = g.local_addr();
    let (token, id) = user_with_project(gw, "ada@example.com");

    // Concurrent readers, so that in-flight counts (not only latency) steer the choices.
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..30 {
                    let (status, body) = get_project(gw, &token, &id);
                    assert_eq!(status, 200, "{body}");
                }
            });
        }
    });
    let text = metrics(gw);
    let spread: Vec<f64> = addrs
        .iter()
        .map(|a| of(&text, "sdsim_upstream_calls_total", *a))
        .collect();
    println!("calls per instance: {spread:?}");
    assert!(
        spread.iter().all(|&n| n >= 1.0),
        "every instance: {spread:?}"
    );
    assert!(spread.iter().sum::<f64>() >= 121.0, "{spread:?}");
    for a in &addrs {
        assert!(
            of(&text, "sdsim_upstream_pool_connections", *a) >= 1.0,
            "{text}"
        );
    }
    assert_eq!(
        metric(
            &text,
            "sdsim_upstream_instances",
            &[("service", "project-service")]
        ),
        Some(3.0)
    );

    // Stop the second instance: no call is in flight, so none may fail; the breaker of the
    // stopped one opens once calls were sent its way and refused.
    let stopped = addrs[1];
    support_stop(p2);
    let mut failures = Vec::new();
    let mut calls = 0;
    // The stopped instance is drawn again once its latency average has faded below the others'.
    let deadline = Instant::now() + Duration::from_secs(20);
    let open = loop {
        let (status, body) = get_project(gw, &token, &id);
        calls += 1;
        if status != 200 {
            failures.push((status, body));
        }
        let text = metrics(gw);
        if of(&text, "sdsim_upstream_breaker_open", stopped) == 1.0 {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the breaker of {stopped} never opened after {calls} calls: {text}"
        );
    };
    println!("{calls} calls until the breaker opened; failed: {failures:?}");
    assert!(failures.is_empty(), "{failures:?}");
    let transitions = |text: &str, to: &str| {
        let addr = stopped.to_string();
        metric(
            text,
            "sdsim_upstream_breaker_transitions_total",
            &[("instance", &addr), ("to", to)],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(transitions(&open, "open"), 1.0, "{open}");
    // `/health/services` shows what the gateway's mesh client decided, next to what the
    // instance answered when asked.
    let health: Value = serde_json::from_str(&get(gw, "/health/services").text()).unwrap();
    let projects = health["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["service"] == "project-service");
    for instance in projects {
        let (status, breaker) = if instance["address"] == stopped.to_string() {
            ("unreachable", "open")
        } else {
            ("serving", "closed")
        };
        assert_eq!(instance["status"], status, "{health}");
        assert_eq!(instance["breaker"], breaker, "{health}");
    }
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(
        metric(
            &open,
            "sdsim_upstream_retries_total",
            &[("service", "project-service")]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "the refused calls were retried: {open}"
    );

    // Open: calls go elsewhere and succeed.
    let before = of(&open, "sdsim_upstream_calls_total", stopped);
    for _ in 0..10 {
        assert_eq!(get_project(gw, &token, &id).0, 200);
    }
    let text = metrics(gw);
    assert_eq!(of(&text, "sdsim_upstream_calls_total", stopped), before);

    // Back on the same address: after the cool-down a probe closes the breaker and the
    // instance gets calls again.
    let back = project(&storage, Some(stopped));
    let deadline = Instant::now() + Duration::from_secs(20);
    let closed = loop {
        assert_eq!(get_project(gw, &token, &id).0, 200);
        let text = metrics(gw);
        if transitions(&text, "closed") >= 1.0 {
            break text;
        }
        assert!(Instant::now() < deadline, "never closed: {text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(of(&closed, "sdsim_upstream_breaker_open", stopped), 0.0);
    assert!(of(&closed, "sdsim_upstream_calls_total", stopped) > before);

    for s in [g, p1, p3, back] {
        support_stop(s);
    }
}

#[test]
fn a_pool_grows_under_load_shrinks_when_idle_and_the_cap_holds() {
    let storage = storage();
    let p1 = project(&storage, None);
    let p2 = project(&storage, None);
    let addrs = [
        p1.project_grpc_addr().unwrap(),
        p2.project_grpc_addr().unwrap(),
    ];
    // One call per connection is "full": concurrent calls make a pool grow. The cap (3) is
    // below what two pools of up to 4 would take.
    let g = gateway(
        &storage,
        &addrs,
        &[
            "mesh.pool_min=1",
            "mesh.pool_max=4",
            "mesh.streams_per_connection=1",
            "mesh.scale_down_after=300ms",
            "mesh.max_connections=3",
            "mesh.rebalance_from=1.0",
        ],
    );
    let gw = g.local_addr();
    let (token, id) = user_with_project(gw, "bob@example.com");

    let done = std::sync::atomic::AtomicBool::new(false);
    let (most, most_total) = std::thread::scope(|s| {
        let load: Vec<_> = (0..6)
            .map(|_| {
                s.spawn(|| {
                    for _ in 0..40 {
                        assert_eq!(get_project(gw, &token, &id).0, 200);
                    }
                })
            })
            .collect();
        let watcher = s.spawn(|| {
            let (mut most, mut most_total) = (0.0f64, 0.0f64);
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let text = metrics(gw);
                let sizes: Vec<f64> = addrs
                    .iter()
                    .map(|a| of(&text, "sdsim_upstream_pool_connections", *a))
                    .collect();
                most = sizes.iter().copied().fold(most, f64::max);
                most_total = most_total.max(sizes.iter().sum());
                std::thread::sleep(Duration::from_millis(10));
            }
            (most, most_total)
        });
        for l in load {
            l.join().unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        watcher.join().unwrap()
    });
    println!("largest pool {most}, most connections at once {most_total}");
    assert!(most >= 2.0, "a pool grew under load");
    assert!(
        most_total <= 3.0,
        "mesh.max_connections holds: {most_total}"
    );

    // Idle: every pool goes back to its minimum.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = metrics(gw);
        let sizes: Vec<f64> = addrs
            .iter()
            .map(|a| of(&text, "sdsim_upstream_pool_connections", *a))
            .collect();
        if sizes.iter().all(|&n| n <= 1.0) {
            break;
        }
        assert!(Instant::now() < deadline, "pools stayed at {sizes:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    for s in [g, p1, p2] {
        support_stop(s);
    }
}

fn support_stop(server: Server) {
    sdsim_testing::server::stop(server);
}
