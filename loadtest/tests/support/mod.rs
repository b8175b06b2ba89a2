//! A real sdsim gateway for the load generator's tests: the harness's in-process server
//! (`sdsim_testing::server`: every role's listeners on ephemeral 127.0.0.1 ports, SQLite in a
//! fresh temporary directory, 2 shards, the access log off) with rate limiting off too; `sets`
//! go on top.

#![allow(dead_code)] // each test binary uses its own part

use sdsim_server::Server;

/// The runs of one test binary measure time or start users at fixed times: one at a time.
pub(crate) fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts a gateway (see the module).
pub(crate) fn gateway(sets: &[&str]) -> Server {
    let all: Vec<&str> = ["ratelimit.enabled=false"]
        .into_iter()
        .chain(sets.iter().copied())
        .collect();
    sdsim_testing::server::start(&all)
}

/// Drains and stops the gateway.
pub(crate) fn stop(server: Server) {
    sdsim_testing::server::stop(server);
}
