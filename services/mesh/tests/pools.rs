//! Pools against a real server whose calls stay in flight until the test lets them finish
//! (so load is exact, not timed): a pool grows while its calls are in flight, the
//! process-wide cap holds, and a lower-priority service gives an idle connection back to a
//! higher-priority one that is short.

mod support;

use sdsim_mesh::{Directory, Instance, MeshConfig, Service, Source, Target};
use sdsim_net::grpc::client::CallOptions;
use sdsim_net::grpc::{Services, Status};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

const HOLD: &str = "/test.v1.Things/GetThing";

/// A server whose calls answer once `open` is true.
fn serve(open: tokio::sync::watch::Receiver<bool>) -> SocketAddr {
    let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut services = Services::new();
    services.unary(HOLD, move |_call, _req: String| {
        let mut open = open.clone();
        async move {
            let _ = open.wait_for(|o| *o).await;
            Ok::<_, Status>(String::new())
        }
    });
    support::accept(listener, services);
    addr
}

fn size(t: &Target) -> usize {
    t.pool_sizes().iter().map(|(_, n)| n).sum()
}

/// Waits (bounded) until `done` holds, checking `invariant` at every step.
async fn until(what: &str, mut done: impl FnMut() -> bool, invariant: impl Fn()) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        invariant();
        assert!(Instant::now() < deadline, "never: {what}");
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    invariant();
}

#[test]
fn a_pool_grows_under_load_within_the_cap_and_a_lower_priority_service_gives_way() {
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    rt.block_on(async {
        let (gate, open) = tokio::sync::watch::channel(false);
        let addr = serve(open);
        let directory = Arc::new(Directory::new());
        for service in [Service::Project, Service::Simulation] {
            directory.set(service, vec![Instance::fixed(addr)], Source::Static);
        }
        let config = MeshConfig {
            pool_min: 1,
            pool_max: 4,
            streams_per_connection: 1,
            max_connections: 4,
            rebalance_from: 0.9,
            // Only giving way shrinks a pool in this test.
            scale_down_after: Duration::from_secs(3600),
            ..MeshConfig::default()
        };
        let new = |s| Target::new(s, Arc::clone(&directory), config.clone(), 0, 1, None);
        let (simulation, project) = (new(Service::Simulation), new(Service::Project));
        let cap_holds = || assert!(directory.connections().total() <= 4);

        // Six calls held in flight: the simulation pool grows to the whole cap.
        let held: Vec<_> = (0..6)
            .map(|_| {
                let t = Rc::clone(&simulation);
                sdsim_core::runtime::spawn("held-call", async move {
                    let opts = CallOptions::timeout(Duration::from_secs(30));
                    t.unary::<_, String>(HOLD, &String::new(), opts).await
                })
            })
            .collect();
        until(
            "the simulation pool takes the cap",
            || size(&simulation) == 4,
            cap_holds,
        )
        .await;
        gate.send(true).unwrap();
        for call in held {
            call.await.unwrap();
        }

        // The project service, higher priority, finds no slot: its call fails without being
        // sent, and its pool is short.
        let opts = || CallOptions::timeout(Duration::from_secs(5));
        let refused = project
            .unary::<_, String>(HOLD, &String::new(), opts())
            .await
            .unwrap_err();
        assert!(
            refused.message.contains("mesh.max_connections (4) reached"),
            "{refused:?}"
        );
        assert!(refused.unsent);

        // The idle simulation pool gives a connection back; the project pool takes it.
        until(
            "the project pool gets a connection",
            || size(&project) == 1,
            cap_holds,
        )
        .await;
        assert_eq!(size(&simulation), 3);
        project
            .unary::<_, String>(HOLD, &String::new(), opts())
            .await
            .unwrap();
        assert_eq!(directory.connections().of(Service::Project), 1);
        assert_eq!(directory.connections().of(Service::Simulation), 3);
    });
}
