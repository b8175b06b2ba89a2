//! The registry on a real redis-server: registrations, heartbeats, draining, deletion, the
//! watch that fills a peer's directory, malformed entries, expiry, and a Redis outage.
//!
//! Needs `redis-server` on PATH (test.sh installs Debian's package). Every wait polls what the
//! code decided (a key, a directory, a counter) against a generous deadline, never a sleep.

use sdsim_mesh::registry::{own_instance, ExpiredFn, Load, LoadFn, CHANNEL};
use sdsim_mesh::{registry_key, Directory, Instance, InstanceStatus, Service, Source};
use sdsim_mesh::{Registry, RegistryOptions};
use sdsim_testing::redis::Redis;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A bound on a hang on a busy machine, not a measure of speed.
const PATIENCE: Duration = Duration::from_secs(30);

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn redis_conn(redis: &Redis) -> redis::Connection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap()
}

fn get(conn: &mut redis::Connection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query(conn).unwrap()
}

fn addr(port: u16) -> Option<SocketAddr> {
    Some(SocketAddr::from(([127, 0, 0, 1], port)))
}

fn instance(id: &str, port: u16) -> Instance {
    own_instance(
        id,
        addr(port),
        addr(port + 1),
        2,
        "0.1.0",
        1_700_000_000_000,
    )
}

fn options(
    ttl: Duration,
    heartbeat: Duration,
    entries: Vec<(Service, Instance)>,
    load: LoadFn,
    on_expired: Option<ExpiredFn>,
) -> RegistryOptions {
    RegistryOptions {
        ttl,
        heartbeat,
        entries,
        load,
        on_expired,
        draining: None,
    }
}

fn no_load() -> LoadFn {
    Arc::new(Load::default)
}

#[test]
fn a_registration_carries_its_json_is_refreshed_by_heartbeats_then_drains_and_is_deleted() {
    let redis = Redis::start();
    let mut conn = redis_conn(&redis);
    let calls = Arc::new(AtomicU64::new(7));
    let load: LoadFn = {
        let calls = Arc::clone(&calls);
        Arc::new(move || Load {
            in_flight: calls.load(Ordering::Relaxed),
            connections: 3,
        })
    };
    let me = instance("node-a", 9100);
    let registry = Registry::start(
        &redis.url(),
        options(
            Duration::from_secs(5),
            Duration::from_millis(200),
            vec![(Service::Project, me.clone())],
            load,
            None,
        ),
        Arc::new(Directory::new()),
    )
    .unwrap();
    let key = registry_key(Service::Project, "node-a");
    assert_eq!(key, "services:project-service:node-a");
    wait_for("the registration", || get(&mut conn, &key).is_some());
    let value = get(&mut conn, &key).unwrap();
    let (service, seen) = Instance::parse_entry(&key, value.as_bytes()).unwrap();
    assert_eq!(service, Service::Project);
    let mut expected = me.clone();
    expected.in_flight = 7;
    expected.connections = 3;
    assert_eq!(seen, expected, "the documented JSON: {value}");
    let pttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut conn).unwrap();
    assert!(pttl > 0 && pttl <= 5000, "a TTL of registry.ttl: {pttl} ms");

    // A heartbeat rewrites the load and puts the TTL back to registry.ttl.
    let _: () = redis::cmd("PEXPIRE")
        .arg(&key)
        .arg(600_000)
        .query(&mut conn)
        .unwrap();
    calls.store(42, Ordering::Relaxed);
    wait_for("a heartbeat with the new load", || {
        get(&mut conn, &key).is_some_and(|v| v.contains("\"in_flight\":42"))
    });
    let pttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut conn).unwrap();
    assert!(pttl <= 5000, "the heartbeat reset the TTL: {pttl} ms");
    assert!(registry.stats.heartbeats.load(Ordering::Relaxed) >= 2);

    // Shutdown: draining first, for peers to stop sending; then the key goes.
    registry.drain();
    wait_for("draining", || {
        get(&mut conn, &key).is_some_and(|v| v.contains("\"status\":\"draining\""))
    });
    registry.stop(PATIENCE);
    assert_eq!(get(&mut conn, &key), None, "deleted at the end of shutdown");
}

#[test]
fn a_peer_learns_of_a_new_instance_from_the_channel_before_its_next_heartbeat() {
    let redis = Redis::start();
    // The watcher's own heartbeat is far away: only the announcement can tell it in time.
    let slow = Duration::from_secs(60);
    let watched = Arc::new(Directory::new());
    let watcher = Registry::start(
        &redis.url(),
        options(slow * 3, slow, vec![], no_load(), None),
        Arc::clone(&watched),
    )
    .unwrap();
    wait_for("the watcher connected", || {
        watcher.stats.up.load(Ordering::Relaxed)
    });
    let before = watched.generation();
    let newcomer = Registry::start(
        &redis.url(),
        options(
            slow * 3,
            slow,
            vec![(Service::Auth, instance("auth-2", 9200))],
            no_load(),
            None,
        ),
        Arc::new(Directory::new()),
    )
    .unwrap();
    let began = Instant::now();
    wait_for("the watcher's directory to list auth-2", || {
        watched.generation() != before && watched.instances(Service::Auth).len() == 1
    });
    assert!(
        began.elapsed() < slow,
        "learnt through the channel, not the periodic read"
    );
    assert_eq!(watched.instances(Service::Auth)[0].id, "auth-2");
    assert_eq!(watched.source(Service::Auth), Source::Registry);
    assert!(watched.instances(Service::Project).is_empty());

    // Draining is announced too: the watcher sees it without waiting for a heartbeat.
    newcomer.drain();
    wait_for("the watcher to see auth-2 draining", || {
        watched
            .instances(Service::Auth)
            .first()
            .is_some_and(|i| i.status == InstanceStatus::Draining)
    });
    newcomer.stop(PATIENCE);
    wait_for("the watcher to forget auth-2", || {
        watched.instances(Service::Auth).is_empty()
    });
    assert_eq!(
        watcher.stats.expired.load(Ordering::Relaxed),
        0,
        "a clean stop"
    );
}

#[test]
fn malformed_entries_are_ignored_counted_once_and_good_ones_beside_them_used() {
    let redis = Redis::start();
    let mut conn = redis_conn(&redis);
    let good = instance("good", 9300);
    let json = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value = serde_json::from_str(&good.to_json()).unwrap();
        f(&mut v);
        v.to_string()
    };
    let entries = [
        ("services:project-service:good", good.to_json()),
        ("services:project-service:badjson", "{not json".to_string()),
        (
            "services:project-service:extra",
            json(&|v| {
                v["id"] = "extra".into();
                v["weight"] = 3.into();
            }),
        ),
        ("services:project-service:wrong-id", good.to_json()),
        (
            "services:project-service:anywhere",
            json(&|v| {
                v["id"] = "anywhere".into();
                v["grpc"] = "0.0.0.0:9000".into();
            }),
        ),
        ("services:cache-service:good", good.to_json()),
    ];
    for (key, value) in &entries {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .query(&mut conn)
            .unwrap();
    }
    let directory = Arc::new(Directory::new());
    let watcher = Registry::start(
        &redis.url(),
        options(
            Duration::from_secs(5),
            Duration::from_millis(100),
            vec![],
            no_load(),
            None,
        ),
        Arc::clone(&directory),
    )
    .unwrap();
    wait_for("the good entry", || {
        directory.instances(Service::Project).len() == 1
    });
    assert_eq!(directory.instances(Service::Project)[0], good);
    assert_eq!(directory.malformed(), 5, "every bad entry counted");
    // Later reads see the same bad entries: counted (and logged) once each, not per read.
    let reads = watcher.stats.refreshes.load(Ordering::Relaxed);
    wait_for("two more reads", || {
        watcher.stats.refreshes.load(Ordering::Relaxed) >= reads + 2
    });
    assert_eq!(directory.malformed(), 5);
    // A bad entry that changes is a new problem.
    let _: () = redis::cmd("SET")
        .arg("services:project-service:badjson")
        .arg("[]")
        .query(&mut conn)
        .unwrap();
    wait_for("the changed bad entry counted", || {
        directory.malformed() == 6
    });
    assert_eq!(directory.instances(Service::Project).len(), 1);
}

#[test]
fn an_expired_registration_is_reported_and_a_deleted_one_is_not() {
    let redis = Redis::start();
    let mut conn = redis_conn(&redis);
    let expired: Arc<Mutex<Vec<(Service, String)>>> = Arc::default();
    let on_expired: ExpiredFn = {
        let expired = Arc::clone(&expired);
        Arc::new(move |s, i| expired.lock().unwrap().push((s, i.id.clone())))
    };
    let directory = Arc::new(Directory::new());
    let watcher = Registry::start(
        &redis.url(),
        options(
            Duration::from_secs(5),
            Duration::from_millis(100),
            vec![],
            no_load(),
            Some(on_expired),
        ),
        Arc::clone(&directory),
    )
    .unwrap();
    // An instance that stops heartbeating: its key is written once, with a short TTL.
    let frozen = instance("frozen", 9400);
    let key = registry_key(Service::Simulation, "frozen");
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(frozen.to_json())
        .arg("PX")
        .arg(1500)
        .query(&mut conn)
        .unwrap();
    let _: i64 = redis::cmd("PUBLISH")
        .arg(CHANNEL)
        .arg(&key)
        .query(&mut conn)
        .unwrap();
    wait_for("the frozen instance listed", || {
        directory.instances(Service::Simulation).len() == 1
    });
    // One that stops cleanly beside it.
    let clean = Registry::start(
        &redis.url(),
        options(
            Duration::from_secs(5),
            Duration::from_millis(100),
            vec![(Service::Simulation, instance("clean", 9500))],
            no_load(),
            None,
        ),
        Arc::new(Directory::new()),
    )
    .unwrap();
    wait_for("both listed", || {
        directory.instances(Service::Simulation).len() == 2
    });
    clean.stop(PATIENCE);
    wait_for("both gone", || {
        directory.instances(Service::Simulation).is_empty()
    });
    assert_eq!(
        *expired.lock().unwrap(),
        vec![(Service::Simulation, "frozen".to_string())],
        "only the instance that stopped answering"
    );
    assert_eq!(watcher.stats.expired.load(Ordering::Relaxed), 1);
}

#[test]
fn while_redis_is_down_the_last_instances_are_kept_and_the_registry_comes_back() {
    let mut redis = Redis::start();
    let directory = Arc::new(Directory::new());
    let me = Registry::start(
        &redis.url(),
        options(
            Duration::from_secs(5),
            Duration::from_millis(100),
            vec![(Service::Project, instance("steady", 9600))],
            no_load(),
            None,
        ),
        Arc::clone(&directory),
    )
    .unwrap();
    wait_for("registered and listed", || {
        me.stats.up.load(Ordering::Relaxed) && directory.instances(Service::Project).len() == 1
    });
    redis.kill();
    wait_for("the registry to say Redis is down", || {
        !me.stats.up.load(Ordering::Relaxed)
    });
    assert!(
        me.stats.heartbeats_failed.load(Ordering::Relaxed)
            + me.stats.failures.load(Ordering::Relaxed)
            >= 1
    );
    assert_eq!(
        directory.instances(Service::Project).len(),
        1,
        "the last known instances stay"
    );
    // Redis restarts empty: the heartbeat registers the instance again by itself.
    redis.launch();
    let mut conn = redis_conn(&redis);
    wait_for("registered again", || {
        get(&mut conn, &registry_key(Service::Project, "steady")).is_some()
    });
    wait_for("up again", || me.stats.up.load(Ordering::Relaxed));
    assert_eq!(directory.instances(Service::Project)[0].id, "steady");
}

#[test]
fn static_addresses_stand_until_the_registry_knows_an_instance_of_their_service() {
    let redis = Redis::start();
    let directory = Arc::new(Directory::new());
    let fixed = Instance::fixed("127.0.0.1:7000".parse().unwrap());
    directory.set(Service::Auth, vec![fixed.clone()], Source::Static);
    let watcher = Registry::start(
        &redis.url(),
        options(
            Duration::from_secs(5),
            Duration::from_millis(100),
            vec![(Service::Project, instance("p", 9700))],
            no_load(),
            None,
        ),
        Arc::clone(&directory),
    )
    .unwrap();
    wait_for("a read", || {
        watcher.stats.refreshes.load(Ordering::Relaxed) >= 1
    });
    assert_eq!(*directory.instances(Service::Auth), [fixed]);
    assert_eq!(directory.source(Service::Auth), Source::Static);
    let auth = Registry::start(
        &redis.url(),
        options(
            Duration::from_secs(5),
            Duration::from_millis(100),
            vec![(Service::Auth, instance("a", 9800))],
            no_load(),
            None,
        ),
        Arc::new(Directory::new()),
    )
    .unwrap();
    wait_for("the registry's auth instance", || {
        directory.source(Service::Auth) == Source::Registry
    });
    assert_eq!(directory.instances(Service::Auth)[0].id, "a");
    drop(auth);
}

#[test]
fn another_process_writing_this_instances_key_is_reported_once() {
    let redis = Redis::start();
    let mut conn = redis_conn(&redis);
    // Heartbeats far apart: the key the test writes stays until the registry reads it.
    let slow = Duration::from_secs(60);
    let me = instance("twin", 9900);
    let registry = Registry::start(
        &redis.url(),
        options(
            slow * 3,
            slow,
            vec![(Service::Project, me.clone())],
            no_load(),
            None,
        ),
        Arc::new(Directory::new()),
    )
    .unwrap();
    wait_for("connected", || registry.stats.up.load(Ordering::Relaxed));
    assert_eq!(
        registry.stats.conflicts.load(Ordering::Relaxed),
        0,
        "its own entry"
    );
    let key = registry_key(Service::Project, "twin");
    let mut other = me.clone();
    other.started_at_ms += 1;
    other.grpc = addr(9950);
    for _ in 0..2 {
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(other.to_json())
            .query(&mut conn)
            .unwrap();
        let reads = registry.stats.refreshes.load(Ordering::Relaxed);
        let _: i64 = redis::cmd("PUBLISH")
            .arg(CHANNEL)
            .arg(&key)
            .query(&mut conn)
            .unwrap();
        wait_for("a read", || {
            registry.stats.refreshes.load(Ordering::Relaxed) > reads
        });
    }
    assert_eq!(registry.stats.conflicts.load(Ordering::Relaxed), 1);
}

/// A Redis restart loses every key: instances missing afterwards did not expire (the live ones
/// register again), so nothing is reported and no survivor fails their runs.
#[test]
fn keys_lost_with_a_redis_restart_are_not_taken_for_expired_registrations() {
    let mut redis = Redis::start();
    let expired: Arc<Mutex<Vec<String>>> = Arc::default();
    let on_expired: ExpiredFn = {
        let expired = Arc::clone(&expired);
        Arc::new(move |_, i| expired.lock().unwrap().push(i.id.clone()))
    };
    let directory = Arc::new(Directory::new());
    let watcher = Registry::start(
        &redis.url(),
        options(
            Duration::from_secs(5),
            Duration::from_millis(100),
            vec![],
            no_load(),
            Some(on_expired),
        ),
        Arc::clone(&directory),
    )
    .unwrap();
    let mut conn = redis_conn(&redis);
    let key = registry_key(Service::Simulation, "elsewhere");
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(instance("elsewhere", 9990).to_json())
        .arg("PX")
        .arg(60_000)
        .query(&mut conn)
        .unwrap();
    wait_for("the instance listed", || {
        directory.instances(Service::Simulation).len() == 1
    });
    redis.kill();
    wait_for("down", || !watcher.stats.up.load(Ordering::Relaxed));
    redis.launch();
    wait_for("up again", || watcher.stats.up.load(Ordering::Relaxed));
    let reads = watcher.stats.refreshes.load(Ordering::Relaxed);
    wait_for("two more reads", || {
        watcher.stats.refreshes.load(Ordering::Relaxed) >= reads + 2
    });
    assert!(directory.instances(Service::Simulation).is_empty());
    assert!(
        expired.lock().unwrap().is_empty(),
        "{:?}",
        expired.lock().unwrap()
    );
    assert_eq!(watcher.stats.expired.load(Ordering::Relaxed), 0);
}
