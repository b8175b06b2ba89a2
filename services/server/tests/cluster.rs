//! The cluster of issue 15 on loopback, started by `deploy/cluster.sh` from the debug binary:
//! Redis, PostgreSQL, HAProxy (`config/haproxy.cfg`), 2 gateway, 2 auth, 2 project and 2
//! simulation processes. Journeys (create a project, read it back) arrive through HAProxy at a
//! fixed rate while processes are killed, one fault at a time; every request is recorded and
//! the failures printed.
//!
//! Needs Debian's `postgresql`, `redis-server` and `haproxy` packages (test.sh installs them).

mod cluster_support;

use cluster_support::cluster::{request, Cluster, Load, Sent};
use cluster_support::HANG;
use std::collections::HashSet;
use std::time::{Duration, Instant};

const PASSWORD: &str = "correct horse battery staple 42!";

/// The settings every process of these tests gets: the load comes from one address (HAProxy
/// forwards it), shedding would turn a slow debug build on a shared machine into refusals that
/// have nothing to do with the faults, and a call to a stopped service gives up after 2 s
/// rather than 15.
const SETS: [&str; 6] = [
    "--set",
    "ratelimit.enabled=false",
    "--set",
    "shedding.enabled=false",
    "--set",
    "gateway.service_timeout=2s",
];

/// Registers and logs in `n` users through HAProxy; their access tokens.
fn users(lb: u16, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let body = format!(r#"{{"email":"journey{i}@example.com","password":"{PASSWORD}"}}"#);
            let (status, b) = request(lb, "POST", "/api/auth/register", None, Some(&body)).unwrap();
            assert_eq!(status, 201, "{b}");
            let (status, b) = request(lb, "POST", "/api/auth/login", None, Some(&body)).unwrap();
            assert_eq!(status, 200, "{b}");
            let v: serde_json::Value = serde_json::from_str(&b).unwrap();
            v["access_token"].as_str().unwrap().to_string()
        })
        .collect()
}

/// Polls `done` until it holds; the load's clock when it did. Panics after [`HANG`].
fn when(load: &Load, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let deadline = Instant::now() + HANG;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {HANG:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    load.now()
}

fn describe(s: &Sent) -> String {
    format!(
        "{:>8.3}s {:<6} due, answered {:>8.3}s: {:?} {}",
        s.due.as_secs_f64(),
        s.step,
        s.done.as_secs_f64(),
        s.status,
        s.error
    )
}

/// Every project a 2xx create reported exists in PostgreSQL; the count of both.
fn accepted_writes_kept(cluster: &Cluster, sent: &[Sent]) -> (usize, usize) {
    let rows: HashSet<String> =
        sdsim_testing::postgres::column(&cluster.pg_url, "SELECT id FROM project_schema.projects")
            .into_iter()
            .collect();
    let accepted: Vec<&String> = sent.iter().filter_map(|s| s.project.as_ref()).collect();
    let lost: Vec<&&String> = accepted.iter().filter(|id| !rows.contains(**id)).collect();
    assert!(
        lost.is_empty(),
        "accepted writes missing from the database: {lost:?}"
    );
    (accepted.len(), rows.len())
}

#[test]
fn faults_one_at_a_time_haproxy_takes_a_killed_gateway_out_and_no_accepted_write_is_lost() {
    let cluster = Cluster::up(
        &[
            &SETS[..],
            &["--gateways", "3"],
            &["--set", "registry.ttl=4s", "--set", "registry.heartbeat=1s"],
        ]
        .concat(),
    );
    let load = Load::start(cluster.lb, users(cluster.lb, 4), 20, 8);
    std::thread::sleep(Duration::from_secs(3));

    // Gateway-only processes verify tokens with the keys they fetched from their auth
    // instance: killing it must not cost a journey (signed in beforehand) a single request.
    // The registry forgets it within its TTL (Redis expires the key its heartbeats renewed).
    assert!(registered(&cluster, "auth-service", "auth-1"));
    let auth_killed = load.now();
    cluster.signal("auth-1", libc::SIGKILL);
    let forgotten = when(&load, "the registry forgets auth-1", || {
        !registered(&cluster, "auth-service", "auth-1")
    });
    println!(
        "auth-1 killed at {:.3}s, its registration expired {:.0} ms later (registry.ttl 4 s)",
        auth_killed.as_secs_f64(),
        (forgotten - auth_killed).as_secs_f64() * 1000.0
    );
    // Polled every 20 ms, so up to one poll (and a busy machine's scheduling) late.
    assert!(
        forgotten - auth_killed <= Duration::from_secs(5),
        "auth-1 stayed registered {:?} after the kill (registry.ttl = 4s)",
        forgotten - auth_killed
    );
    assert!(registered(&cluster, "auth-service", "auth-2"));

    // A stopped simulation instance accepts connections and never answers: run listings sent
    // to it fail after gateway.service_timeout until its breaker opens; measured and
    // printed, and confined to that step.
    let stopped = load.now();
    cluster.signal("simulation-1", libc::SIGSTOP);
    std::thread::sleep(Duration::from_secs(3));
    let continued = load.now();
    cluster.signal("simulation-1", libc::SIGCONT);
    std::thread::sleep(Duration::from_secs(3));

    // A draining gateway (SIGTERM) stops accepting and finishes what it has: HAProxy moves
    // to the others without a single failed request.
    let drained = load.now();
    cluster.signal("gateway-3", libc::SIGTERM);
    let drained_down = when(&load, "HAProxy marks the draining gateway-3 DOWN", || {
        cluster
            .lb_status("gateway-3")
            .is_some_and(|s| s.starts_with("DOWN"))
    });
    std::thread::sleep(Duration::from_secs(2));

    let killed = load.now();
    cluster.signal("gateway-1", libc::SIGKILL);
    // What HAProxy decided, from its own stats: the moment it marked the gateway down.
    let down = when(&load, "HAProxy marks gateway-1 DOWN", || {
        cluster
            .lb_status("gateway-1")
            .is_some_and(|s| s.starts_with("DOWN"))
    });
    std::thread::sleep(Duration::from_secs(3));
    let sent = load.finish();

    let failed: Vec<&Sent> = sent.iter().filter(|s| !s.ok()).collect();
    println!("{} requests, {} failed:", sent.len(), failed.len());
    for s in &failed {
        println!("  {}", describe(s));
    }
    // A failure belongs to the fault during which its answer came.
    let failures_in = |from: Duration, to: Duration| -> Vec<&Sent> {
        failed
            .iter()
            .copied()
            .filter(|s| s.done >= from && s.done < to)
            .collect()
    };
    let described = |sent: &[&Sent]| -> Vec<String> { sent.iter().map(|s| describe(s)).collect() };
    assert_eq!(
        described(&failures_in(Duration::ZERO, stopped)),
        Vec::<String>::new(),
        "failures before the SIGSTOP (auth-1 was killed at {auth_killed:?})"
    );
    let during_stop = failures_in(stopped, drained);
    assert!(
        during_stop.iter().all(|s| s.step == "runs"),
        "the stopped simulation instance failed more than run listings: {:#?}",
        described(&during_stop)
    );
    assert_eq!(
        described(&failures_in(drained, killed)),
        Vec::<String>::new(),
        "failures while gateway-3 drained"
    );
    println!(
        "gateway-3 drained (SIGTERM) at {:.3}s, HAProxy marked it DOWN {:.0} ms later, no request failed",
        drained.as_secs_f64(),
        (drained_down - drained).as_secs_f64() * 1000.0
    );
    let first_served_after_cont = sent
        .iter()
        .filter(|s| s.step == "runs" && s.due >= continued && s.ok())
        .map(|s| s.due)
        .min()
        .expect("a run listing served after SIGCONT");
    println!(
        "simulation-1 stopped {:.1}s: {} failed requests; the first run listing after SIGCONT was due {:.0} ms after it",
        (continued - stopped).as_secs_f64(),
        during_stop.len(),
        (first_served_after_cont - continued).as_secs_f64() * 1000.0
    );
    println!(
        "gateway-1 killed at {:.3}s, HAProxy marked it DOWN {:.0} ms later",
        killed.as_secs_f64(),
        (down - killed).as_secs_f64() * 1000.0
    );
    // Errors only for requests in flight at the kill or sent before HAProxy took the gateway
    // out; everything due after that is served.
    let late: Vec<String> = failed
        .iter()
        .filter(|s| s.due > down)
        .map(|s| describe(s))
        .collect();
    assert!(
        late.is_empty(),
        "failures after HAProxy took gateway-1 out: {late:#?}\n{}",
        cluster.log("gateway-2")
    );
    let served_after = sent.iter().filter(|s| s.due > down && s.ok()).count();
    assert!(served_after > 0, "no request was served after the fault");
    let (accepted, rows) = accepted_writes_kept(&cluster, &sent);
    println!("{accepted} creates answered 201, {rows} projects in PostgreSQL");
}

#[test]
fn a_mutual_tls_cluster_serves_every_journey() {
    let cluster = Cluster::up(
        &[
            &SETS[..],
            &[
                "--tls",
                "--gateways",
                "1",
                "--auth",
                "1",
                "--projects",
                "1",
                "--simulations",
                "1",
            ],
        ]
        .concat(),
    );
    let load = Load::start(cluster.lb, users(cluster.lb, 2), 20, 4);
    std::thread::sleep(Duration::from_secs(2));
    let sent = load.finish();
    let failed: Vec<String> = sent.iter().filter(|s| !s.ok()).map(describe).collect();
    assert_eq!(failed, Vec::<String>::new(), "{}", cluster.log("gateway-1"));
    // Every step crossed to the service processes over mutual TLS.
    for step in ["create", "read", "runs"] {
        assert!(sent.iter().any(|s| s.step == step), "no {step} was sent");
    }
    accepted_writes_kept(&cluster, &sent);
}

/// Time from `fault` until the due time of the last failure of a request due after it and
/// answered before the `next` fault (zero without one): how long the cluster took to serve everything again.
fn recovery(sent: &[Sent], fault: Duration, next: Duration) -> Duration {
    sent.iter()
        .filter(|s| s.due >= fault && s.done < next && !s.ok())
        .map(|s| s.due - fault)
        .max()
        .unwrap_or_default()
}

/// The success ratio of requests due in `[from, to)` and answered before the `next` fault (one
/// in flight at that moment is the next fault's); 1 when none was (the next fault came within
/// 2 s of the last).
fn success(sent: &[Sent], from: Duration, to: Duration, next: Duration) -> f64 {
    let window: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.due >= from && s.due < to && s.done < next)
        .collect();
    if window.is_empty() {
        return 1.0;
    }
    window.iter().filter(|s| s.ok()).count() as f64 / window.len() as f64
}

/// Whether Redis holds the registry key of `instance` in `service`.
fn registered(cluster: &Cluster, service: &str, instance: &str) -> bool {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &cluster.redis.to_string(), "EXISTS"])
        .arg(format!("services:{service}:{instance}"))
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).trim() == "1"
}

/// Starts a run of an hour of simulated time at real speed (it stays running) in a new project,
/// through HAProxy; its id.
fn long_run(lb: u16, token: &str) -> String {
    let (status, body) = request(
        lb,
        "POST",
        "/api/projects",
        Some(token),
        Some(r#"{"name":"Long","template_id":"three-tier"}"#),
    )
    .unwrap();
    assert_eq!(status, 201, "{body}");
    let project: serde_json::Value = serde_json::from_str(&body).unwrap();
    let run = format!(
        r#"{{"project_id":"{}","duration_s":3600,"speed":1}}"#,
        project["id"].as_str().unwrap()
    );
    let (status, body) = request(lb, "POST", "/api/simulations", Some(token), Some(&run)).unwrap();
    assert_eq!(status, 202, "{body}");
    let run: serde_json::Value = serde_json::from_str(&body).unwrap();
    run["simulation_id"].as_str().unwrap().to_string()
}

/// Each run's owning instance, status and error, from PostgreSQL.
fn runs(cluster: &Cluster) -> Vec<(String, String, String, String)> {
    sdsim_testing::postgres::column(
        &cluster.pg_url,
        "SELECT id || '|' || instance || '|' || status || '|' || COALESCE(error, '') FROM simulation_schema.simulations",
    )
    .into_iter()
    .map(|row| {
        let f: Vec<&str> = row.splitn(4, '|').collect();
        (f[0].into(), f[1].into(), f[2].into(), f[3].into())
    })
    .collect()
}

/// The gRPC calls process `name` served of `service` (e.g. `ProjectService`).
fn served(cluster: &Cluster, name: &str, service: &str) -> f64 {
    cluster.counter(name, "sdsim_grpc_server_requests_total", service)
}

#[test]
fn the_cluster_survives_each_fault_within_two_seconds() {
    // The default registry.ttl (10 s): the stopped simulation instance must stay registered
    // while its breaker opens.
    let mut cluster = Cluster::up(&SETS);
    let tokens = users(cluster.lb, 4);
    let load = Load::start(cluster.lb, tokens.clone(), 20, 8);
    std::thread::sleep(Duration::from_secs(3));
    let mut faults = Vec::new();
    for (name, service) in [
        ("auth-1", "auth-service"),
        ("project-1", "project-service"),
        ("gateway-1", "api-gateway"),
    ] {
        let at = load.now();
        cluster.signal(name, libc::SIGKILL);
        faults.push((name.to_string(), at));
        // The registry forgets the killed instance within its TTL (10 s), polled every 20 ms.
        let gone = when(&load, &format!("the registry forgets {name}"), || {
            !registered(&cluster, service, name)
        });
        assert!(
            gone - at <= Duration::from_secs(10),
            "{name} stayed registered"
        );
        std::thread::sleep(Duration::from_secs(2));
        // Back with the same config (a new process: its counters start at zero), it registers
        // again and gets traffic: the gateways find it in the registry, HAProxy in its checks.
        let restarted = load.now();
        cluster.restart(name);
        faults.push((format!("{name} (restart)"), restarted));
        when(&load, &format!("{name} registers again"), || {
            registered(&cluster, service, name)
        });
        let back = match name {
            "project-1" => when(&load, "project-1 serves calls again", || {
                served(&cluster, name, "ProjectService") > 0.0
            }),
            "auth-1" => when(&load, "auth-1 serves calls again", || {
                // The journeys need no auth call (tokens are verified at the gateways): a
                // login through HAProxy reaches one of the two auth instances, so log in
                // until one reaches this one.
                let body = format!(r#"{{"email":"journey0@example.com","password":"{PASSWORD}"}}"#);
                let _ = request(cluster.lb, "POST", "/api/auth/login", None, Some(&body));
                served(&cluster, name, "AuthService") > 0.0
            }),
            _ => when(&load, "HAProxy sends gateway-1 traffic again", || {
                cluster.lb_status(name).is_some_and(|s| s.starts_with("UP"))
                    && cluster.counter(name, "sdsim_http_requests_total", "/api/projects") > 0.0
            }),
        };
        println!(
            "{name} restarted at {:.3}s, serving again {:.0} ms later",
            restarted.as_secs_f64(),
            (back - restarted).as_secs_f64() * 1000.0
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    // A stopped simulation instance accepts connections but never answers: its breaker opens
    // at the gateway, and closes again once it answers.
    let breaker = |state: &str| {
        let (_, body) = request(
            cluster.http["gateway-2"],
            "GET",
            "/health/services",
            None,
            None,
        )
        .unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|i| i["id"] == "simulation-1" && i["breaker"].as_str() == Some(state))
    };
    let stopped = load.now();
    cluster.signal("simulation-1", libc::SIGSTOP);
    faults.push(("simulation-1 (SIGSTOP)".into(), stopped));
    when(&load, "the breaker of simulation-1 opens", || {
        breaker("open")
    });
    std::thread::sleep(Duration::from_secs(2));
    cluster.signal("simulation-1", libc::SIGCONT);
    when(&load, "the breaker of simulation-1 closes", || {
        breaker("closed")
    });
    std::thread::sleep(Duration::from_secs(2));

    // Runs balanced over both simulation instances (3 per user at most); the instance that
    // owns some is killed, and a survivor marks them failed once its registration expires.
    let started: Vec<String> = tokens.iter().map(|t| long_run(cluster.lb, t)).collect();
    let owned = runs(&cluster);
    let doomed = owned
        .iter()
        .find(|r| started.contains(&r.0))
        .map(|r| r.1.clone())
        .expect("a run was recorded");
    let theirs: Vec<String> = owned
        .iter()
        .filter(|r| r.1 == doomed && started.contains(&r.0))
        .map(|r| r.0.clone())
        .collect();
    let killed = load.now();
    cluster.signal(&doomed, libc::SIGKILL);
    faults.push((format!("{doomed} (runs)"), killed));
    let ended = when(&load, &format!("the runs of {doomed} end"), || {
        runs(&cluster)
            .iter()
            .filter(|r| theirs.contains(&r.0))
            .all(|r| r.2 != "queued" && r.2 != "running")
    });
    for (id, instance, status, error) in runs(&cluster) {
        if started.contains(&id) {
            if instance == doomed {
                assert_eq!(status, "failed", "run {id} of {doomed}");
                assert_eq!(
                    error,
                    format!("instance {doomed} stopped answering: registration expired")
                );
            } else {
                assert_eq!(status, "running", "run {id} of the surviving {instance}");
            }
        }
    }
    println!(
        "{doomed} killed with {} of {} runs: failed by a survivor {:.0} ms later (registry.ttl 10 s)",
        theirs.len(),
        started.len(),
        (ended - killed).as_secs_f64() * 1000.0
    );
    std::thread::sleep(Duration::from_secs(2));
    let sent = load.finish();
    for s in sent.iter().filter(|s| !s.ok()) {
        println!("  {}", describe(s));
    }

    for (i, (name, at)) in faults.iter().enumerate() {
        let next = faults.get(i + 1).map_or(Duration::MAX, |(_, t)| *t);
        let took = recovery(&sent, *at, next);
        println!(
            "{name}: back to 100% success {:.0} ms after the fault",
            took.as_secs_f64() * 1000.0
        );
        let after = success(
            &sent,
            *at + Duration::from_secs(2),
            *at + Duration::from_secs(4),
            next,
        );
        assert!(
            after >= 0.99,
            "{name}: {:.1}% success 2 s after the fault",
            after * 100.0
        );
    }
    accepted_writes_kept(&cluster, &sent);
}

/// Per fault — its start `at`, the end `until` of the due times it owns and the start `next` of
/// the next fault — the requests it hit: due from `at` to `until` (and those in flight at `at`
/// that failed), answered before `next` (one in flight at the next fault is that one's), that
/// failed or took longer than `slow`. Its failover time runs from the fault to the
/// due time of the last of them (0 when none): every request due after it was answered within
/// `slow`. Prints a line per fault and the distribution.
fn failovers(sent: &[Sent], what: &str, faults: &[(Duration, Duration, Duration)], slow: Duration) {
    let mut times = Vec::new();
    for (i, (at, until, next)) in faults.iter().enumerate() {
        let hit: Vec<&Sent> = sent
            .iter()
            .filter(|s| s.due < *until && s.done < *next)
            .filter(|s| s.due >= *at || (s.done >= *at && !s.ok()))
            .filter(|s| !s.ok() || s.done - s.due > slow)
            .collect();
        let took = hit
            .iter()
            .map(|s| s.due.saturating_sub(*at))
            .max()
            .unwrap_or_default();
        let failed = hit.iter().filter(|s| !s.ok()).count();
        let worst = hit.iter().map(|s| s.done - s.due).max().unwrap_or_default();
        // How the first second after the fault went for those that succeeded.
        let first: Vec<Duration> = sent
            .iter()
            .filter(|s| s.due >= *at && s.due < *at + Duration::from_secs(1) && s.ok())
            .map(|s| s.done - s.due)
            .collect();
        println!(
            "{what} {}: {} slower than {slow:?} ({failed} failed, slowest {:.0} ms), failover {:.0} ms; {} served in the next 1 s, slowest {:.0} ms",
            i + 1,
            hit.len(),
            worst.as_secs_f64() * 1000.0,
            took.as_secs_f64() * 1000.0,
            first.len(),
            first.iter().max().copied().unwrap_or_default().as_secs_f64() * 1000.0
        );
        if took > Duration::from_secs(1) {
            for s in &hit {
                println!("  {}", describe(s));
            }
        }
        times.push(took);
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "failover over {} {what}s: min {:.0} ms, median {:.0} ms, max {:.0} ms; {} requests, {} failed",
        times.len(),
        ms(times[0]),
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1]),
        sent.len(),
        sent.iter().filter(|s| !s.ok()).count()
    );
}

/// A benchmark, not a check (`bench/run.sh` runs it in release; ignored in the suite): the
/// failover time of a frozen instance, over repeated freezes. A project instance is
/// SIGSTOPped for 3 s, then continued, `FREEZES` times, 8 s apart, under journeys at 20 a
/// second through HAProxy with every setting at its default but rate limiting and shedding
/// off. A call held by the frozen instance does not fail (it waits, and the instance answers
/// after SIGCONT, well within `gateway.service_timeout`), so a freeze shows as latency: per
/// freeze, the requests due while it was frozen that failed or took longer than `SLOW`, and
/// the failover time ([`failovers`]).
#[test]
#[ignore = "a benchmark: bench/run.sh runs it (release)"]
fn failover_times_over_repeated_freezes() {
    const FREEZES: usize = 10;
    const SLOW: Duration = Duration::from_millis(500);
    const FROZEN: Duration = Duration::from_secs(3);
    let cluster = Cluster::up(&SETS[..4]);
    // 32 workers: requests held by the frozen instance must not leave the generator short of
    // workers (the schedule would then queue in the generator, not in the cluster).
    let load = Load::start(cluster.lb, users(cluster.lb, 4), 20, 32);
    std::thread::sleep(Duration::from_secs(3));
    let mut freezes = Vec::new();
    for _ in 0..FREEZES {
        let at = load.now();
        cluster.signal("project-1", libc::SIGSTOP);
        // Requests due while it was frozen: one due later is not this freeze's to fail over.
        freezes.push((at, at + FROZEN, Duration::MAX));
        std::thread::sleep(FROZEN);
        cluster.signal("project-1", libc::SIGCONT);
        std::thread::sleep(Duration::from_secs(5));
    }
    std::thread::sleep(Duration::from_secs(2));
    let sent = load.finish();
    // Each freeze's requests end before the next (5 s after the thaw).
    failovers(&sent, "freeze", &freezes, SLOW);
    accepted_writes_kept(&cluster, &sent);
}

/// A benchmark, not a check (`bench/run.sh` runs it in release; ignored in the suite): the
/// failover time of a killed instance, over repeated kills. A project instance is killed
/// (SIGKILL) `KILLS` times under the same journeys as [`failover_times_over_repeated_freezes`];
/// after each it is restarted (`cluster.sh restart`), and the next kill waits until it
/// serves calls again. Per kill, the requests due from the kill until the restart that
/// failed or took longer than `SLOW`, and the failover time ([`failovers`]); then the same
/// for the restarts (a new instance joining the pools).
#[test]
#[ignore = "a benchmark: bench/run.sh runs it (release)"]
fn failover_times_over_repeated_kills() {
    const KILLS: usize = 10;
    const SLOW: Duration = Duration::from_millis(500);
    let mut cluster = Cluster::up(&SETS[..4]);
    let load = Load::start(cluster.lb, users(cluster.lb, 4), 20, 32);
    std::thread::sleep(Duration::from_secs(3));
    let mut times = Vec::new();
    for _ in 0..KILLS {
        let at = load.now();
        cluster.signal("project-1", libc::SIGKILL);
        std::thread::sleep(Duration::from_secs(3));
        let restarted = load.now();
        cluster.restart("project-1");
        when(&load, "project-1 serves calls again", || {
            served(&cluster, "project-1", "ProjectService") > 0.0
        });
        std::thread::sleep(Duration::from_secs(3));
        times.push((at, restarted));
    }
    std::thread::sleep(Duration::from_secs(2));
    let end = load.now();
    let sent = load.finish();
    let next_kill = |i: usize| times.get(i + 1).map_or(end, |(at, _)| *at);
    let kills: Vec<_> = (0..KILLS)
        .map(|i| (times[i].0, times[i].1, next_kill(i)))
        .collect();
    let restarts: Vec<_> = (0..KILLS)
        .map(|i| (times[i].1, next_kill(i), next_kill(i)))
        .collect();
    failovers(&sent, "kill", &kills, SLOW);
    failovers(&sent, "restart", &restarts, SLOW);
    accepted_writes_kept(&cluster, &sent);
}

/// The `sdsim_upstream_pool_connections` of each project instance in the `/metrics` of the
/// gateway whose HTTP port is `gateway`.
fn pool_sizes(gateway: u16) -> Vec<(String, f64)> {
    let (_, text) = request(gateway, "GET", "/metrics", None, None).unwrap_or_default();
    let mut sizes: Vec<(String, f64)> = text
        .lines()
        .filter(|l| l.starts_with("sdsim_upstream_pool_connections{"))
        .filter(|l| l.contains("service=\"project-service\""))
        .filter_map(|l| {
            let instance = l
                .split("instance=\"")
                .nth(1)?
                .split('"')
                .next()?
                .to_string();
            Some((instance, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    sizes.sort_by(|a, b| a.0.cmp(&b.0));
    sizes
}

/// A benchmark, not a check (`bench/run.sh` runs it; ignored in the suite): the pools of one
/// gateway to the two project instances over a load ramp. Journeys through HAProxy to the
/// only gateway step up from 20 to 1,280 a second (5 s per step), then stop; the gateway's
/// `sdsim_upstream_pool_connections` per instance (summed over its 2 shards) is sampled every
/// 250 ms and printed as a table and a bar chart. The pools are sized to show movement at
/// loopback latencies: `mesh.streams_per_connection=1` (a connection is "full" with one call in
/// flight), `mesh.pool_min=2`, `mesh.scale_down_after=3s`.
#[test]
#[ignore = "a benchmark: bench/run.sh runs it"]
fn pool_sizes_over_a_load_ramp() {
    let cluster = Cluster::up(
        &[
            &SETS[..4],
            &["--gateways", "1"],
            &[
                "--set",
                "mesh.streams_per_connection=1",
                "--set",
                "mesh.pool_min=2",
                "--set",
                "mesh.scale_down_after=3s",
            ],
        ]
        .concat(),
    );
    let tokens = users(cluster.lb, 8);
    let start = Instant::now();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = std::sync::Arc::clone(&stop);
        let gateway = cluster.http["gateway-1"];
        std::thread::spawn(move || {
            let mut rows = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                rows.push((start.elapsed(), pool_sizes(gateway)));
                std::thread::sleep(Duration::from_millis(250));
            }
            rows
        })
    };
    let mut steps = Vec::new();
    for rate in [20, 80, 320, 640, 1280] {
        steps.push((start.elapsed(), rate));
        let load = Load::start(cluster.lb, tokens.clone(), rate, 64);
        std::thread::sleep(Duration::from_secs(5));
        let sent = load.finish();
        let failed = sent.iter().filter(|s| !s.ok()).count();
        println!(
            "{rate:>4} journeys/s: {} requests, {failed} failed",
            sent.len()
        );
    }
    steps.push((start.elapsed(), 0));
    std::thread::sleep(Duration::from_secs(12));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let rows = sampler.join().unwrap();
    println!("steps (s, journeys/s): {steps:?}");
    for (t, sizes) in rows.iter().step_by(2) {
        let bars: Vec<String> = sizes
            .iter()
            .map(|(i, n)| format!("{i:<10} {n:>3} {:<12}", "#".repeat(*n as usize)))
            .collect();
        println!("{:>6.2}s  {}", t.as_secs_f64(), bars.join("  "));
    }
}
