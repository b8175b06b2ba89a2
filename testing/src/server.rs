//! An sdsim server in the test process (feature `server`): every role's listeners on
//! 127.0.0.1 port 0, the access log off, 2 shards on CPUs 0 and 1 (both on CPU 0 where there is
//! one), the current backend's driver and storage ([`crate::backend::current`]), then the
//! test's own settings.

use sdsim_core::config::Overrides;
use sdsim_core::shutdown::Phase;
use sdsim_net::http::router::Router;
use sdsim_server::config::Config;
use sdsim_server::Server;
use std::time::Duration;

/// How long [`stop`] lets requests in flight finish before it closes them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts a server with `sets` (`section.key=value`, as `--set` takes them) over the test
/// defaults (see the module).
pub fn start(sets: &[&str]) -> Server {
    start_with(sets, |_| {})
}

/// Like [`start`], with `extra_routes` added to every shard's public router.
pub fn start_with<R>(sets: &[&str], extra_routes: R) -> Server
where
    R: Fn(&mut Router) + Send + Sync + 'static,
{
    let backend = crate::backend::current();
    let storage = match backend.database_url() {
        Some(url) => {
            // A test that names its own storage would silently not run on the backend's.
            assert!(
                !sets.iter().any(|s| s.starts_with("storage.url=")),
                "a test that sets storage.url cannot run on {}",
                backend.name()
            );
            format!("storage.url={url}")
        }
        None => format!(
            "storage.url=sqlite://{}/sdsim.db",
            crate::temp_dir("test").display()
        ),
    };
    let defaults = [
        "gateway.listen=127.0.0.1:0",
        "auth.http_listen=127.0.0.1:0",
        "auth.grpc_listen=127.0.0.1:0",
        "project.http_listen=127.0.0.1:0",
        "project.grpc_listen=127.0.0.1:0",
        "simulation.http_listen=127.0.0.1:0",
        "simulation.grpc_listen=127.0.0.1:0",
        "log.access=false",
        // Alert announcements on system:announcements would interleave with the events the
        // real-time tests count there; the alerts' own tests turn them on.
        "alerts.enabled=false",
        "runtime.shards=2",
        "runtime.cpus=[0, 1]",
        storage.as_str(),
    ];
    let mut overrides = Overrides::default();
    for set in defaults
        .into_iter()
        .chain(backend.driver_setting())
        .chain(sets.iter().copied())
    {
        overrides
            .set(set)
            .unwrap_or_else(|e| panic!("setting {set}: {e}"));
    }
    let mut config = Config::load(None, &overrides).expect("the test configuration loads");
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        config.runtime.cpus = vec![0, 0];
    }
    config.validate().expect("the test configuration is valid");
    Server::start_with(config, extra_routes).expect("server starts")
}

/// Drains the server and waits for it; returns the phases it went through.
pub fn stop(server: Server) -> Vec<Phase> {
    let shutdown = std::sync::Arc::clone(server.shutdown());
    shutdown.drain(DRAIN_TIMEOUT);
    server.join().expect("the server's threads end");
    shutdown.history()
}
