//! What the mesh's socket tests share: a real sdsim gRPC server loop and an address nobody
//! listens on.

use sdsim_core::shutdown::Phase;
use sdsim_net::grpc::server::serve_connection;
use sdsim_net::grpc::{Services, Settings};
use std::net::SocketAddr;
use std::rc::Rc;

/// Serves `services` over HTTP/2 (sdsim's gRPC server, default settings) on every connection
/// `listener` accepts, on this thread's runtime, for as long as the runtime runs.
pub(crate) fn accept(listener: monoio::net::TcpListener, services: Services) {
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
}

/// An address where a connect is refused (see [`sdsim_testing::refused_addr`]).
#[allow(dead_code)] // Not every test file needs one.
pub(crate) fn gone() -> SocketAddr {
    sdsim_testing::refused_addr()
}
