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

/// An address nothing listens on, and nothing can: a TCP socket bound to it that never
/// listens (a connect is refused) and stays open for the rest of the test process. A port
/// bound and released instead can be handed to a server another test of the same binary binds
/// to port 0 meanwhile, and the "refused" connect then succeeds.
#[allow(dead_code)] // Not every test file needs one.
pub(crate) fn gone() -> SocketAddr {
    // SAFETY: plain socket calls on a descriptor this function owns; `addr` and `len` are
    // valid for the sizes passed.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let bound = libc::bind(fd, (&raw const addr).cast(), len);
        assert_eq!(bound, 0, "bind: {}", std::io::Error::last_os_error());
        let mut len = len;
        let named = libc::getsockname(fd, (&raw mut addr).cast(), &mut len);
        assert_eq!(named, 0, "getsockname: {}", std::io::Error::last_os_error());
        // The descriptor is left open on purpose: it holds the port until the process ends.
        SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, u16::from_be(addr.sin_port)))
    }
}
