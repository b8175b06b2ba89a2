//! `async:reports:queue` on a real Redis: a completed run's bottleneck analysis is queued and
//! produced by a simulation instance that takes the job, equal to the analysis an instance
//! without Redis computes itself; a job an instance left on its processing list when it died is
//! put back and done at its next start, and a value that is not a job is dropped, not retried.

mod support;

use sdsim_testing::redis::Redis;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{call, get, login, register, start, stop, temp_dir, STRONG};

fn token_of(addr: SocketAddr, email: &str) -> String {
    register(addr, email);
    let (status, tokens) = login(addr, email, STRONG);
    assert_eq!(status, 200, "{tokens}");
    tokens["access_token"].as_str().unwrap().to_string()
}

/// Runs the `three-tier` template flat out with a fixed seed; returns the project, the run and
/// its results once the analysis is there.
fn run_to_results(addr: SocketAddr, token: &str) -> (String, String, Value) {
    let (status, p, _) = call(
        addr,
        "POST",
        "/api/projects",
        Some(token),
        Some(json!({"name": "Shop", "template_id": "three-tier"})),
    );
    assert_eq!(status, 201, "{p}");
    let project = p["id"].as_str().unwrap().to_string();
    let (status, run, _) = call(
        addr,
        "POST",
        "/api/simulations",
        Some(token),
        Some(json!({"project_id": project, "duration_s": 120, "seed": 42, "speed": 0})),
    );
    assert_eq!(status, 202, "{run}");
    let id = run["simulation_id"].as_str().unwrap().to_string();
    let results = analysed(addr, token, &id);
    (project, id, results)
}

/// The run's results once its analysis is stored (a generous bound on a hang).
fn analysed(addr: SocketAddr, token: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, results, _) = call(
            addr,
            "GET",
            &format!("/api/simulations/{id}/results"),
            Some(token),
            None,
        );
        if status == 200 && !results["analysis"].is_null() {
            assert!(results["analysis"].is_array(), "{results}");
            return results;
        }
        assert!(
            status == 200 || status == 409,
            "{status}: {results} (409 until the run has completed)"
        );
        assert!(Instant::now() < deadline, "no analysis: {results}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn counter(addr: SocketAddr, name: &str) -> u64 {
    let text = get(addr, "/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

fn redis_cli(redis: &Redis, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli comes with Debian's redis-server");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[sdsim_testing::backends(epoll, io_uring)]
fn analyses_go_through_the_queue_and_survive_the_death_of_their_taker() {
    // The analysis an instance without Redis computes itself.
    let alone = start(&["ratelimit.enabled=false"]);
    let token = token_of(alone.local_addr(), "solo@example.com");
    let (_, _, local) = run_to_results(alone.local_addr(), &token);
    stop(alone);
    let expected = local["analysis"].clone();

    let redis = Redis::start();
    let dir = temp_dir();
    let storage = format!("storage.url=sqlite://{}/sdsim.db", dir.display());
    let with = |id: &str| {
        vec![
            storage.clone(),
            redis.url_setting(),
            "ratelimit.enabled=false".to_string(),
            format!("instance.id={id}"),
        ]
    };
    let sets = with("node-a");
    let a = start(&sets.iter().map(String::as_str).collect::<Vec<_>>());
    let addr = a.local_addr();
    let ada = token_of(addr, "ada@example.com");
    let (_, run, results) = run_to_results(addr, &ada);
    assert_eq!(
        results["analysis"], expected,
        "same analysis through the queue"
    );
    assert_eq!(counter(addr, "sdsim_reports_queued_total"), 1);
    assert_eq!(counter(addr, "sdsim_reports_analysed_total"), 1);
    stop(a);

    // node-b died while analysing that run: its job is on node-b's list, the analysis not
    // stored. Next to it, a value that is not a job.
    let store_url = format!("sqlite://{}/sdsim.db", dir.display());
    let store = sdsim_store::Store::open(&store_url, &sdsim_store::Options::default()).unwrap();
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    let design = rt.block_on(async {
        let changed = store
            .execute(
                "UPDATE simulation_schema.simulations SET analysis = NULL WHERE id = $1",
                vec![run.as_str().into()],
            )
            .await
            .unwrap();
        assert_eq!(changed, 1);
        let rows = store
            .query(
                "SELECT v.design FROM project_schema.project_versions v JOIN simulation_schema.simulations s ON s.project_id = v.project_id AND s.project_version = v.version WHERE s.id = $1",
                vec![run.as_str().into()],
            )
            .await
            .unwrap();
        rows[0].text(0).unwrap().to_string()
    });
    drop((store, rt));
    let job = json!({
        "simulation_id": run,
        "design": design,
        "duration_s": 120.0,
        "seed": 42,
        "report": results["report"].to_string(),
    })
    .to_string();
    let list = "async:reports:processing:node-b";
    redis_cli(&redis, &["RPUSH", list, "not a job"]);
    redis_cli(&redis, &["RPUSH", list, &job]);

    let sets = with("node-b");
    let b = start(&sets.iter().map(String::as_str).collect::<Vec<_>>());
    let addr = b.local_addr();
    let results = analysed(addr, &ada, &run);
    assert_eq!(
        results["analysis"], expected,
        "the job node-b left was done"
    );
    assert_eq!(counter(addr, "sdsim_reports_analysed_total"), 1);
    // Both values left both lists: the job acknowledged, the stranger dropped.
    let deadline = Instant::now() + Duration::from_secs(30);
    while redis_cli(&redis, &["LLEN", list]) != "0" {
        assert!(
            Instant::now() < deadline,
            "node-b's list still holds a value"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(redis_cli(&redis, &["LLEN", "async:reports:queue"]), "0");
    stop(b);
    let _ = std::fs::remove_dir_all(dir);
}
