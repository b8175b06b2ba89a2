//! A running sdsim server: configuration → listeners → shards → per-shard app.

use crate::auth::{self, TokenVerifier};
use crate::redis_bridge::Bridge;
use crate::{health, observe, realtime};
use sdsim_core::config::Config;
use sdsim_core::metrics::Metrics;
use sdsim_core::runtime::{Runtime, RuntimeSpec, Shard};
use sdsim_core::shutdown::Shutdown;
use sdsim_core::stall::StallStats;
use sdsim_net::conn::ConnSettings;
use sdsim_net::http::codec::Limits;
use sdsim_net::http::router::Router;
use sdsim_net::middleware::{App, Stack};
use sdsim_net::server::{
    accept_loop, bind_reuseport, drain_shard, ConnStats, ListenerContext, ListenerSet,
};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Instant;

/// What every shard shares: immutable configuration and process-wide counters.
pub struct Globals {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// The shutdown state machine.
    pub shutdown: Arc<Shutdown>,
    /// Connection counters.
    pub conn_stats: Arc<ConnStats>,
    /// Stall totals.
    pub stalls: Arc<StallStats>,
    /// When the server started.
    pub started: Instant,
    /// Number of shards.
    pub shards: usize,
    /// Verifies bearer tokens (HTTP and WebSocket).
    pub verifier: Arc<dyn TokenVerifier>,
    /// Open WebSocket connections, instance-wide.
    pub ws_open: Arc<AtomicUsize>,
    /// Random per process: makes bus channel epochs and the Redis instance id unique.
    pub process_epoch: u64,
    /// The Redis bridge, when `redis.url` is set.
    pub redis: Option<Arc<Bridge>>,
    gateway: ListenerSet,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// A started server.
pub struct Server {
    runtime: Runtime,
    globals: Arc<Globals>,
    local_addr: SocketAddr,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound (address in use, permission).
    #[error("{0}")]
    Listen(io::Error),
    /// TLS files could not be loaded.
    #[error(transparent)]
    Tls(#[from] sdsim_net::tls::TlsError),
    /// Shard threads could not be started.
    #[error("cannot start shards: {0}")]
    Runtime(io::Error),
    /// The Redis bridge could not start.
    #[error("{0}")]
    Redis(String),
    /// The gateway listen address is not an IP:port.
    #[error("gateway.listen = {0}: not an IP:port address")]
    Address(String),
}

impl Server {
    /// Binds the listeners and starts the shards. `config` must already be validated.
    pub fn start(config: Config) -> Result<Server, StartError> {
        Self::start_with(config, |_| {})
    }

    /// Like [`Server::start`], with extra routes added to every shard's router (embedders and
    /// tests mount their own handlers this way).
    pub fn start_with<R>(config: Config, extra_routes: R) -> Result<Server, StartError>
    where
        R: Fn(&mut Router) + Send + Sync + 'static,
    {
        let spec = RuntimeSpec::from_config(&config.runtime);
        let shards = spec.shards();
        let addr: SocketAddr = config
            .gateway
            .listen
            .parse()
            .map_err(|_| StartError::Address(config.gateway.listen.clone()))?;
        let gateway = bind_reuseport(addr, shards, 4096).map_err(StartError::Listen)?;
        let local_addr = gateway.local_addr();
        let tls = match (&config.tls.cert, &config.tls.key) {
            (Some(cert), Some(key)) => {
                Some(sdsim_net::tls::load_acceptor(cert, key, &[b"http/1.1"])?)
            }
            _ => None,
        };
        let process_epoch = random_u64();
        let redis = match &config.redis.url {
            Some(url) => Some(
                Bridge::start(url, shards, format!("{process_epoch:016x}"))
                    .map_err(StartError::Redis)?,
            ),
            None => None,
        };
        let globals = Arc::new(Globals {
            verifier: auth::from_config(&config.auth),
            ws_open: Arc::new(AtomicUsize::new(0)),
            process_epoch,
            redis,
            config: Arc::new(config),
            shutdown: Shutdown::new(shards),
            conn_stats: Arc::new(ConnStats::default()),
            stalls: Arc::clone(&spec.stalls),
            started: Instant::now(),
            shards,
            gateway,
            tls,
        });
        let shared = Arc::clone(&globals);
        let extra_routes = Arc::new(extra_routes);
        let runtime = Runtime::start(spec, move |shard| {
            let mut router = routes(&shared);
            extra_routes(&mut router);
            run_shard(shard, Arc::clone(&shared), router)
        })
        .map_err(StartError::Runtime)?;
        tracing::info!(
            %local_addr,
            shards,
            tls = globals.tls.is_some(),
            "gateway listening"
        );
        Ok(Server {
            runtime,
            globals,
            local_addr,
        })
    }

    /// The gateway's bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The shutdown state machine (call `drain` on it to stop the server).
    pub fn shutdown(&self) -> &Arc<Shutdown> {
        &self.globals.shutdown
    }

    /// Process-wide state.
    pub fn globals(&self) -> &Arc<Globals> {
        &self.globals
    }

    /// Waits until every shard has stopped.
    pub fn join(self) -> io::Result<()> {
        self.runtime.join()
    }
}

/// The routes of the gateway role.
pub fn routes(globals: &Arc<Globals>) -> Router {
    let mut router = Router::new();
    health::register(&mut router, globals);
    observe::register(&mut router, globals);
    realtime::register(&mut router, globals);
    router
}

async fn run_shard(shard: Shard, globals: Arc<Globals>, router: Router) {
    let config = &globals.config;
    let metrics = shard.insert(Metrics::new());
    let stack = Stack::from_config(config, Rc::clone(&metrics));
    let rt = realtime::install(&shard, &globals, metrics);
    if let Some(mut inbound) = globals
        .redis
        .as_ref()
        .and_then(|b| b.take_inbound(shard.id().index()))
    {
        let bus = Rc::clone(&rt.bus);
        shard.spawn("redis-inbound", async move {
            while let Some((channel, data)) = inbound.recv().await {
                if let Err(e) = bus.publish_remote(&channel, data).await {
                    tracing::debug!(%channel, error = %e, "event from another instance dropped");
                }
            }
        });
    }
    let app = Rc::new(App::new(router, stack));
    let settings = Rc::new(ConnSettings {
        limits: Limits {
            max_head_bytes: config.http.max_head_bytes,
            max_body_bytes: config.http.max_body_bytes,
            max_uri_bytes: config.http.max_uri_bytes,
            max_headers: config.http.max_headers,
        },
        read_timeout: config.http.read_timeout,
        write_timeout: config.http.write_timeout,
        idle_timeout: config.http.idle_timeout,
    });
    let listener = match globals.gateway.take(shard.id().index()) {
        Some(Ok(listener)) => listener,
        Some(Err(e)) => {
            tracing::error!(shard = shard.id().index(), error = %e, "cannot use the gateway listener");
            globals.shutdown.close();
            return;
        }
        None => return,
    };
    tracing::info!(
        shard = shard.id().index(),
        cpu = shard.cpu(),
        driver = shard.driver(),
        "shard serving"
    );
    let ctx = Rc::new(ListenerContext {
        app,
        settings,
        tls: globals.tls.clone(),
        shutdown: Arc::clone(&globals.shutdown),
        stats: Arc::clone(&globals.conn_stats),
        max_connections: config.server.max_connections,
    });
    accept_loop(&shard, listener, ctx).await;
    drain_shard(&shard, &globals.shutdown).await;
}

fn random_u64() -> u64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        // No system randomness: time and pid still make instances distinct.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        return t ^ ((std::process::id() as u64) << 32);
    }
    u64::from_le_bytes(bytes)
}
