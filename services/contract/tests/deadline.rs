//! Deadline propagation: a call a handler makes through [`Remote`] carries the deadline of the
//! request being served when that is sooner than the remote timeout, and the remote timeout
//! otherwise.

use sdsim_contract::Remote;
use sdsim_core::shutdown::Phase;
use sdsim_net::grpc::server::serve_connection;
use sdsim_net::grpc::{Services, Settings};
use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A server whose one method records the deadline it was given.
fn serve(seen: Rc<Cell<Option<Instant>>>) -> SocketAddr {
    let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut services = Services::new();
    services.unary("/test.v1.Clock/GetDeadline", move |call, _req: String| {
        seen.set(call.deadline);
        async { Ok(String::new()) }
    });
    let services = Rc::new(services);
    let (_keep, phase) = tokio::sync::watch::channel(Phase::Accepting);
    sdsim_core::runtime::spawn("test-accept", async move {
        let _keep = _keep;
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            use monoio::io::IntoPollIo;
            sdsim_core::runtime::spawn(
                "test-connection",
                serve_connection(
                    stream.into_poll_io().unwrap(),
                    peer,
                    Rc::clone(&services),
                    Rc::new(Settings::default()),
                    phase.clone(),
                ),
            );
        }
    });
    addr
}

#[test]
fn an_outbound_call_inherits_the_sooner_inbound_deadline() {
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    rt.block_on(async {
        let seen = Rc::new(Cell::new(None));
        let addr = serve(Rc::clone(&seen));
        let remote = Remote::new(addr, "token", Duration::from_secs(60)).unwrap();
        let path = "/test.v1.Clock/GetDeadline";

        let start = Instant::now();
        let _: String = remote.unary(path, None, &String::new()).await.unwrap();
        let own = seen.get().expect("a deadline was sent");
        assert!(own > start + Duration::from_secs(50), "the remote timeout");

        let inbound = Instant::now() + Duration::from_secs(2);
        let empty = String::new();
        let call = remote.unary(path, None, &empty);
        let _: String = sdsim_net::deadline::within(Some(inbound), call)
            .await
            .unwrap();
        let inherited = seen.get().expect("a deadline was sent");
        // grpc-timeout is whole milliseconds rounded up.
        assert!(
            inherited <= inbound + Duration::from_millis(2),
            "{:?} after the inbound deadline",
            inherited.saturating_duration_since(inbound)
        );
    });
}
