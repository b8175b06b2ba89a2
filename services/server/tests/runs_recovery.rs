//! Runs and their limits under races and crashes: concurrent starts by one user on PostgreSQL
//! never pass the per-user limit, and runs a crashed instance left queued or running are marked
//! failed when it comes back, so they stop counting against their users' limits.

mod support;

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::{call, login, register, start, stop, temp_dir, STRONG};

fn token_of(addr: SocketAddr, email: &str) -> String {
    register(addr, email);
    let (status, tokens) = login(addr, email, STRONG);
    assert_eq!(status, 200, "{tokens}");
    tokens["access_token"].as_str().unwrap().to_string()
}

fn new_project(addr: SocketAddr, token: &str) -> String {
    let (status, p, _) = call(
        addr,
        "POST",
        "/api/projects",
        Some(token),
        Some(json!({"name": "Long", "template_id": "three-tier"})),
    );
    assert_eq!(status, 201, "{p}");
    p["id"].as_str().unwrap().to_string()
}

/// A run that lasts an hour of real time: it stays `running` for the whole test.
fn slow(project: &str) -> Value {
    json!({"project_id": project, "duration_s": 3600, "speed": 1})
}

fn status_of(addr: SocketAddr, token: &str, id: &str) -> Value {
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

/// Mostly on PostgreSQL, where the starts are concurrent transactions (on SQLite one writer
/// serialises them).
#[sdsim_testing::backends(epoll_postgres, io_uring_postgres, io_uring)]
fn concurrent_starts_by_one_user_never_pass_the_per_user_limit() {
    // Four shards, so starts land on four PostgreSQL connections at once.
    let server = start(&[
        "ratelimit.enabled=false",
        "runtime.shards=4",
        "runtime.cpus=[0, 1, 0, 1]",
        "simulation.max_runs_per_user=2",
        "simulation.max_queued=64",
        "simulation.runs_per_shard=8",
    ]);
    let addr = server.local_addr();
    let token = token_of(addr, "racer@example.com");
    let project = new_project(addr, &token);
    for round in 0..3 {
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(16));
        let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|_| {
                    let (barrier, token, project) = (barrier.clone(), &token, &project);
                    s.spawn(move || {
                        barrier.wait();
                        let (status, v, _) = call(
                            addr,
                            "POST",
                            "/api/simulations",
                            Some(token),
                            Some(slow(project)),
                        );
                        (status, v)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let started: Vec<&Value> = answers
            .iter()
            .filter(|(status, _)| *status == 202)
            .map(|(_, v)| v)
            .collect();
        let refused = answers.iter().filter(|(status, _)| *status == 429).count();
        assert_eq!(
            (started.len(), refused),
            (
                if round == 0 { 2 } else { 0 },
                if round == 0 { 14 } else { 16 }
            ),
            "round {round}: {answers:?}"
        );
    }
    let (status, history, _) = call(
        addr,
        "GET",
        &format!("/api/simulations?project_id={project}&limit=100"),
        Some(&token),
        None,
    );
    assert_eq!(status, 200, "{history}");
    let active = history["simulations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "queued" || r["status"] == "running")
        .count();
    assert_eq!(active, 2, "{history}");
    stop(server);
}

/// On SQLite only: the test plays the crash by writing to the store's file while no server runs.
#[sdsim_testing::backends(epoll, io_uring)]
fn runs_left_running_by_a_crash_are_failed_at_restart_and_free_the_limit() {
    let dir = temp_dir();
    let url = format!("sqlite://{}/sdsim.db", dir.display());
    let storage = format!("storage.url={url}");
    let sets = [
        storage.as_str(),
        "ratelimit.enabled=false",
        "instance.id=node-a",
        "simulation.max_runs_per_user=1",
    ];
    let server = start(&sets);
    let addr = server.local_addr();
    let ada = token_of(addr, "ada@example.com");
    let bob = token_of(addr, "bob@example.com");
    let (pa, pb) = (new_project(addr, &ada), new_project(addr, &bob));
    let (status, run, _) = call(
        addr,
        "POST",
        "/api/simulations",
        Some(&ada),
        Some(slow(&pa)),
    );
    assert_eq!(status, 202, "{run}");
    let ada_run = run["simulation_id"].as_str().unwrap().to_string();
    let (status, run, _) = call(
        addr,
        "POST",
        "/api/simulations",
        Some(&bob),
        Some(slow(&pb)),
    );
    assert_eq!(status, 202, "{run}");
    let bob_run = run["simulation_id"].as_str().unwrap().to_string();
    stop(server);

    // What a crash leaves behind: both runs still `running` in storage. Bob's belongs to
    // another instance sharing the database, which is alive.
    let store = sdsim_store::Store::open(&url, &sdsim_store::Options::default()).unwrap();
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    rt.block_on(async {
        for (id, instance) in [(&ada_run, "node-a"), (&bob_run, "node-b")] {
            let changed = store
                .execute(
                    "UPDATE simulation_schema.simulations SET status = 'running', finished_at = NULL, error = NULL, instance = $2 WHERE id = $1",
                    vec![id.as_str().into(), instance.into()],
                )
                .await
                .unwrap();
            assert_eq!(changed, 1);
        }
    });
    drop(rt);

    let server = start(&sets);
    let addr = server.local_addr();
    let deadline = Instant::now() + Duration::from_secs(60);
    let failed = loop {
        let run = status_of(addr, &ada, &ada_run);
        if run["status"] == "failed" {
            break run;
        }
        assert_eq!(run["status"], "running", "{run}");
        assert!(
            Instant::now() < deadline,
            "the orphaned run was never failed"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("node-a") && error.contains("stopped"),
        "{failed}"
    );
    // The limit (one run) is free again for ada...
    let (status, run, _) = call(
        addr,
        "POST",
        "/api/simulations",
        Some(&ada),
        Some(slow(&pa)),
    );
    assert_eq!(status, 202, "{run}");
    // ...and the other instance's run was left alone.
    assert_eq!(status_of(addr, &bob, &bob_run)["status"], "running");
    stop(server);
    let _ = std::fs::remove_dir_all(dir);
}

/// Two instances share one database. A stop that reaches the instance not running the run is
/// recorded there; the instance running it sees that at its next status check and lets the
/// run go, so its slot frees for the next run (before, it simulated on to the end while the
/// run already read `stopped`).
#[sdsim_testing::backends(epoll, io_uring)]
fn a_run_stopped_through_another_instance_ends_where_it_runs() {
    let dir = temp_dir();
    let storage = format!("storage.url=sqlite://{}/sdsim.db", dir.display());
    let with = |id: &'static str| {
        vec![
            storage.clone(),
            "ratelimit.enabled=false".into(),
            format!("instance.id={id}"),
            // One slot in all: a run that does not let go keeps the next one queued.
            "runtime.shards=1".into(),
            "runtime.cpus=[0]".into(),
            "simulation.runs_per_shard=1".into(),
            "simulation.status_check=100ms".into(),
        ]
    };
    let sets_a = with("node-a");
    let runner = start(&sets_a.iter().map(String::as_str).collect::<Vec<_>>());
    let a = runner.local_addr();
    let ada = token_of(a, "ada@example.com");
    let bob = token_of(a, "bob@example.com");
    let (pa, pb) = (new_project(a, &ada), new_project(a, &bob));
    let (status, run, _) = call(a, "POST", "/api/simulations", Some(&ada), Some(slow(&pa)));
    assert_eq!(status, 202, "{run}");
    let ada_run = run["simulation_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    while status_of(a, &ada, &ada_run)["status"] != "running" {
        assert!(Instant::now() < deadline, "the run never started");
        std::thread::sleep(Duration::from_millis(20));
    }

    let sets_b = with("node-b");
    let other = start(&sets_b.iter().map(String::as_str).collect::<Vec<_>>());
    let b = other.local_addr();
    let (status, stopped, _) = call(
        b,
        "POST",
        &format!("/api/simulations/{ada_run}/stop"),
        Some(&ada),
        None,
    );
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(stopped["status"], "stopped", "{stopped}");

    // Bob's run can only start on node-a once ada's run has let go of the only slot.
    let (status, run, _) = call(a, "POST", "/api/simulations", Some(&bob), Some(slow(&pb)));
    assert_eq!(status, 202, "{run}");
    let bob_run = run["simulation_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let run = status_of(a, &bob, &bob_run);
        if run["status"] == "running" {
            break;
        }
        assert_eq!(run["status"], "queued", "{run}");
        assert!(
            Instant::now() < deadline,
            "node-a kept simulating the run stopped through node-b"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The end node-b recorded stands.
    let ended = status_of(a, &ada, &ada_run);
    assert_eq!(ended["status"], "stopped", "{ended}");
    stop(other);
    stop(runner);
    let _ = std::fs::remove_dir_all(dir);
}
