//! How long a new mesh connection takes, as the metrics show it: each connection a pool opens
//! (for a call on an empty pool, or grown in the background) is one observation of
//! `sdsim_upstream_connect_seconds` for its instance, a connection reused is none, and a
//! refused connect is one `sdsim_upstream_connect_failures_total` and no observation.

mod support;

use sdsim_core::metrics::{LabelValue, Metrics, Snapshot};
use sdsim_mesh::{Directory, Instance, MeshConfig, Service, Source, Target};
use sdsim_net::grpc::client::CallOptions;
use sdsim_net::grpc::{Services, Status};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

const GET: &str = "/test.v1.Things/GetThing";
const CONNECT: &str = "sdsim_upstream_connect_seconds";
const FAILURES: &str = "sdsim_upstream_connect_failures_total";

/// A server whose calls answer at once.
fn serve() -> SocketAddr {
    let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut services = Services::new();
    services.unary(GET, |_call, _req: String| async {
        Ok::<_, Status>(String::new())
    });
    support::accept(listener, services);
    addr
}

/// A project-service target of the one instance at `addr`, recording into `metrics`.
fn target(addr: SocketAddr, config: MeshConfig, metrics: &Rc<Metrics>) -> Rc<Target> {
    let directory = Arc::new(Directory::new());
    directory.set(
        Service::Project,
        vec![Instance::fixed(addr)],
        Source::Static,
    );
    Target::new(
        Service::Project,
        directory,
        config,
        0,
        1,
        Some(Rc::clone(metrics)),
    )
}

fn of_instance(labels: &sdsim_core::metrics::Key, addr: SocketAddr) -> bool {
    labels.label("service") == Some(&LabelValue::Str("project-service"))
        && matches!(labels.label("instance"), Some(LabelValue::Str(id)) if *id == addr.to_string())
}

/// Connects observed for the instance at `addr`.
fn connects(snapshot: &Snapshot, addr: SocketAddr) -> u64 {
    snapshot
        .histograms
        .iter()
        .filter(|(k, _)| k.name == CONNECT && of_instance(k, addr))
        .map(|(_, h)| h.len())
        .sum()
}

/// Failed connects counted for the instance at `addr`.
fn failures(snapshot: &Snapshot, addr: SocketAddr) -> u64 {
    snapshot
        .counters
        .iter()
        .filter(|(k, _)| k.name == FAILURES && of_instance(k, addr))
        .map(|(_, v)| *v)
        .sum()
}

fn run(test: impl std::future::Future<Output = ()>) {
    monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .unwrap()
        .block_on(test);
}

fn call() -> CallOptions {
    CallOptions::timeout(Duration::from_secs(10))
}

#[test]
fn the_first_call_records_one_connect_and_a_reused_connection_none() {
    run(async {
        let addr = serve();
        let metrics = Rc::new(Metrics::new());
        let config = MeshConfig {
            pool_min: 1,
            pool_max: 1,
            ..MeshConfig::default()
        };
        let t = target(addr, config, &metrics);
        assert_eq!(connects(&metrics.snapshot(), addr), 0);

        t.unary::<_, String>(GET, &String::new(), call())
            .await
            .unwrap();
        let after_first = metrics.snapshot();
        assert_eq!(connects(&after_first, addr), 1);
        assert_eq!(failures(&after_first, addr), 0);

        t.unary::<_, String>(GET, &String::new(), call())
            .await
            .unwrap();
        assert_eq!(connects(&metrics.snapshot(), addr), 1);
        assert_eq!(t.pool_sizes(), vec![(addr.to_string(), 1)]);
    });
}

#[test]
fn each_connection_a_pool_grows_by_is_one_connect() {
    run(async {
        let addr = serve();
        let metrics = Rc::new(Metrics::new());
        let config = MeshConfig {
            pool_min: 3,
            pool_max: 3,
            ..MeshConfig::default()
        };
        let t = target(addr, config, &metrics);
        t.unary::<_, String>(GET, &String::new(), call())
            .await
            .unwrap();
        // The pool opens its minimum in the background, one connect after another.
        let deadline = Instant::now() + Duration::from_secs(20);
        while t.pool_sizes() != vec![(addr.to_string(), 3)] {
            assert!(Instant::now() < deadline, "the pool never reached 3");
            monoio::time::sleep(Duration::from_millis(5)).await;
        }
        let snapshot = metrics.snapshot();
        assert_eq!(connects(&snapshot, addr), 3);
        assert_eq!(failures(&snapshot, addr), 0);
    });
}

#[test]
fn a_refused_connect_counts_one_failure_and_no_connect_time() {
    run(async {
        let addr = support::gone();
        let metrics = Rc::new(Metrics::new());
        let config = MeshConfig {
            pool_min: 1,
            pool_max: 1,
            // The failed call opens the breaker, so no background connect tries again.
            breaker_failures: 1,
            breaker_cooldown: Duration::from_secs(3600),
            ..MeshConfig::default()
        };
        let t = target(addr, config, &metrics);
        let refused = t
            .unary::<_, String>(GET, &String::new(), call())
            .await
            .unwrap_err();
        assert!(refused.message.contains("connect failed"), "{refused:?}");
        let snapshot = metrics.snapshot();
        assert_eq!(failures(&snapshot, addr), 1);
        assert_eq!(connects(&snapshot, addr), 0);
    });
}
