//! The test harness every sdsim test binary shares (a dev-dependency only; nothing here ships).
//!
//! Layout:
//! - [`backend`]: the backends a test runs on ([`Backend`]: the runtime driver, io_uring or
//!   epoll, and the storage, SQLite or PostgreSQL) and [`backends`], the attribute that turns
//!   one test function into one `#[test]` per backend.
//! - [`postgres`]: PostgreSQL for tests: one server shared by a test binary (a fresh database
//!   per call, [`postgres::fresh_database_url`]) and private servers a test may stop
//!   ([`postgres::Postgres`]).
//! - [`redis`]: a private `redis-server` ([`redis::Redis`]).
//! - `server` (feature `server`): an sdsim server in the test process on the current backend
//!   (`server::start`, `server::start_with` for extra routes, `server::stop`).
//! - [`http`]: a blocking HTTP/1.1 client that reads responses exactly ([`http::Client`],
//!   [`http::Resp`], [`http::call`] for JSON APIs).
//! - [`alloc`]: an allocator that counts the bytes each thread allocates, for tests that bound
//!   what a decoder allocates while refusing input ([`alloc::Counting`]).
//! - [`free_port`], [`temp_dir`]: loopback ports and scratch directories.

pub mod alloc;
pub mod backend;
pub mod http;
pub mod postgres;
pub mod redis;
#[cfg(feature = "server")]
pub mod server;

pub use backend::{Backend, Driver, Storage};
pub use sdsim_testing_macros::backends;

use std::path::PathBuf;

/// A loopback port free at the time of the call.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A loopback address where a connect is refused, and stays refused: a TCP socket bound to it
/// that never listens, left open for the rest of the test process. (A port bound and released
/// instead can be handed to a server that a concurrent test, or the process under test, binds
/// to port 0 meanwhile, and the "refused" connect then succeeds.)
pub fn refused_addr() -> std::net::SocketAddr {
    use std::net::{Ipv4Addr, SocketAddr};
    // SAFETY: plain socket calls on a descriptor this function owns; `addr` and `len` are
    // valid for the sizes passed.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from(Ipv4Addr::LOCALHOST).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let bound = libc::bind(fd, (&raw const addr).cast(), len);
        assert_eq!(bound, 0, "bind: {}", std::io::Error::last_os_error());
        let mut len = len;
        let named = libc::getsockname(fd, (&raw mut addr).cast(), &mut len);
        assert_eq!(named, 0, "getsockname: {}", std::io::Error::last_os_error());
        // The descriptor is left open on purpose: it holds the port until the process ends.
        SocketAddr::from((Ipv4Addr::LOCALHOST, u16::from_be(addr.sin_port)))
    }
}

/// A fresh, empty directory under the system temp dir, named after `tag`, this process and a
/// counter (so parallel tests never share one).
pub fn temp_dir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sdsim-{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}
