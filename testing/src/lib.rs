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
