//! A real sdsim gateway for the load generator's tests: started in this process, every role's
//! listeners on ephemeral 127.0.0.1 ports, SQLite in a fresh temporary directory, 2 shards,
//! rate limiting and the access log off; `sets` go on top.

#![allow(dead_code)] // each test binary uses its own part

use sdsim_core::config::Overrides;
use sdsim_server::config::Config;
use sdsim_server::Server;
use std::time::Duration;

/// The runs of one test binary measure time or start users at fixed times: one at a time.
pub(crate) fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts a gateway (see the module); `tag` names its data directory.
pub(crate) fn gateway(tag: &str, sets: &[&str]) -> Server {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sdsim-loadtest-{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("storage.url=sqlite://{}/sdsim.db", dir.display());
    let mut o = Overrides::default();
    for s in [
        "gateway.listen=127.0.0.1:0",
        "auth.http_listen=127.0.0.1:0",
        "auth.grpc_listen=127.0.0.1:0",
        "project.http_listen=127.0.0.1:0",
        "project.grpc_listen=127.0.0.1:0",
        "simulation.http_listen=127.0.0.1:0",
        "simulation.grpc_listen=127.0.0.1:0",
        "log.access=false",
        "runtime.shards=2",
        "runtime.cpus=[0, 1]",
        "ratelimit.enabled=false",
        db.as_str(),
    ]
    .iter()
    .chain(sets)
    {
        o.set(s).unwrap();
    }
    let mut config = Config::load(None, &o).unwrap();
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        config.runtime.cpus = vec![0, 0];
    }
    config.validate().unwrap();
    Server::start(config).expect("gateway starts")
}

/// Drains and stops the gateway.
pub(crate) fn stop(server: Server) {
    server.shutdown().drain(Duration::from_secs(5));
    server.join().unwrap();
}
