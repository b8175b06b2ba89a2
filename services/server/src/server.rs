//! A running sdsim server: configuration → the roles of [`ROLES`] → listeners → shards.

use crate::composition::Composition;
use crate::config::Config;
use crate::error::StartError;
use crate::role::{bind, Parts};
use crate::roles::ROLES;
use crate::shard;
use sdsim_auth::authn::Authenticator;
use sdsim_auth::Auth;
use sdsim_core::runtime::{Runtime, RuntimeSpec};
use sdsim_core::shutdown::Shutdown;
use sdsim_gateway::redis_bridge::Bridge;
use sdsim_gateway::state::GatewaySections;
use sdsim_gateway::GatewayState;
use sdsim_mesh::registry::ExpiredFn;
use sdsim_mesh::Registry;
use sdsim_net::http::router::Router;
use sdsim_net::server::ConnStats;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::Instant;

/// A started server.
pub struct Server {
    runtime: Runtime,
    composition: Arc<Composition>,
    local_addr: SocketAddr,
    registry: Option<Registry>,
}

impl Server {
    /// Binds the listeners and starts the shards. `config` must already be validated.
    pub fn start(config: Config) -> Result<Server, StartError> {
        Self::start_with(config, |_| {})
    }

    /// Like [`Server::start`], with extra routes added to every shard's public router
    /// (embedders and tests mount their own handlers this way).
    pub fn start_with<R>(config: Config, extra_routes: R) -> Result<Server, StartError>
    where
        R: Fn(&mut Router) + Send + Sync + 'static,
    {
        let spec = RuntimeSpec::from_config(&config.runtime);
        let shards = spec.shards();
        let public = bind("gateway.listen", &config.gateway.listen, shards)?;
        let local_addr = public.local_addr();
        // Connections open lazily (PostgreSQL per shard); SQLite files are created here.
        let store = (config.storage.open()).map_err(|e| StartError::Storage(e.to_string()))?;
        let mut parts = Parts::new(&config, store.clone(), shards);
        let roles = ROLES
            .iter()
            .map(|start| start(&mut parts))
            .collect::<Result<Vec<_>, _>>()?;
        let auth = parts.started_auth().cloned();
        let directory = Arc::clone(&parts.directory);
        let (tls, grpc_tls) = tls_acceptors(&config)?;
        // The shards build their clients from the same files; a bad one stops the start here.
        crate::role::client_connect(&config)?;
        let process_epoch = sdsim_gateway::state::process_epoch();
        let redis = match &config.redis.url {
            Some(url) => Some(
                Bridge::start(url, shards, format!("{process_epoch:016x}"))
                    .map_err(|e| StartError::Redis(e.to_string()))?,
            ),
            None => None,
        };
        // A gateway without the auth service verifies with the keys it fetches from it.
        let verifier = match (&auth, &parts.auth_keys) {
            (Some(a), _) => Some(Arc::clone(a.verifier())),
            (None, Some(keys)) => Some(Arc::clone(keys.verifier())),
            (None, None) => None,
        };
        let shutdown = Shutdown::new(shards);
        let grpc_in_flight = Arc::new(AtomicU64::new(0));
        // Registered before the shards serve: the listeners are bound, so a peer that connects
        // at once waits in the backlog instead of being refused.
        let registry = crate::registration::start(
            crate::registration::Process {
                config: &config,
                roles: &roles,
                public: &public,
                shards,
                shutdown: &shutdown,
                directory: &directory,
                grpc_in_flight: &grpc_in_flight,
            },
            expired_handler(&roles),
        )?;
        let gateway = Arc::new(GatewayState {
            authenticator: Arc::new(Authenticator::new(&config.auth, verifier.clone())),
            store: Some(store),
            verifier,
            services: roles.iter().map(|r| r.health()).collect(),
            ws_open: Arc::new(AtomicUsize::new(0)),
            process_epoch,
            redis,
            config: GatewaySections {
                websocket: config.websocket.clone(),
                bus: config.bus.clone(),
                http: config.http.clone(),
                storage: config.storage.clone(),
                redis: config.redis.clone(),
                alerts: config.alerts.clone(),
            },
            shutdown,
            conn_stats: Arc::new(ConnStats::default()),
            stalls: Arc::clone(&spec.stalls),
            started: Instant::now(),
            shards,
            directory: Arc::clone(&directory),
            registry: registry.as_ref().map(|r| Arc::clone(&r.stats)),
            instance: config.instance.resolved_id(),
            alerts: Default::default(),
        });
        let composition = Arc::new(Composition {
            config: Arc::new(config),
            gateway,
            roles,
            auth,
            directory,
            public,
            tls,
            grpc_tls,
            grpc_in_flight,
        });
        let shared = Arc::clone(&composition);
        let extra_routes: Arc<shard::ExtraRoutes> = Arc::new(extra_routes);
        let runtime = Runtime::start(spec, move |on| {
            shard::run(on, Arc::clone(&shared), Arc::clone(&extra_routes))
        })
        .map_err(StartError::Runtime)?;
        tracing::info!(
            %local_addr,
            shards,
            tls = composition.tls.is_some(),
            "gateway listening"
        );
        Ok(Server {
            runtime,
            composition,
            local_addr,
            registry,
        })
    }

    /// The gateway's bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound addresses (HTTP, gRPC) of role `name`'s own listeners, when this process
    /// runs it.
    pub fn role_addrs(&self, name: &str) -> Option<(SocketAddr, SocketAddr)> {
        let role = self.composition.roles.iter().find(|r| r.name() == name)?;
        let l = role.listeners()?;
        Some((l.http.local_addr(), l.grpc.local_addr()))
    }

    /// The auth role's HTTP address, when this process runs it.
    pub fn auth_http_addr(&self) -> Option<SocketAddr> {
        self.role_addrs("auth").map(|a| a.0)
    }

    /// The auth role's gRPC address, when this process runs it.
    pub fn auth_grpc_addr(&self) -> Option<SocketAddr> {
        self.role_addrs("auth").map(|a| a.1)
    }

    /// The project role's HTTP address, when this process runs it.
    pub fn project_http_addr(&self) -> Option<SocketAddr> {
        self.role_addrs("project").map(|a| a.0)
    }

    /// The project role's gRPC address, when this process runs it.
    pub fn project_grpc_addr(&self) -> Option<SocketAddr> {
        self.role_addrs("project").map(|a| a.1)
    }

    /// The simulation role's HTTP address, when this process runs it.
    pub fn simulation_http_addr(&self) -> Option<SocketAddr> {
        self.role_addrs("simulation").map(|a| a.0)
    }

    /// The simulation role's gRPC address, when this process runs it.
    pub fn simulation_grpc_addr(&self) -> Option<SocketAddr> {
        self.role_addrs("simulation").map(|a| a.1)
    }

    /// The shutdown state machine (call `drain` on it to stop the server).
    pub fn shutdown(&self) -> &Arc<Shutdown> {
        &self.composition.gateway.shutdown
    }

    /// The gateway role's state (configuration, counters).
    pub fn gateway(&self) -> &Arc<GatewayState> {
        &self.composition.gateway
    }

    /// The auth service, when a role of this process started it.
    pub fn auth(&self) -> Option<&Arc<Auth>> {
        self.composition.auth.as_ref()
    }

    /// The registry of this process, when `redis.url` is set.
    pub fn registry(&self) -> Option<&Registry> {
        self.registry.as_ref()
    }

    /// Waits until every shard has stopped, then deletes this process's registrations.
    pub fn join(self) -> io::Result<()> {
        let joined = self.runtime.join();
        if let Some(registry) = &self.registry {
            crate::registration::stop(registry);
        }
        joined
    }
}

/// What the roles do when another instance's registration expires, as one handler.
fn expired_handler(roles: &[Box<dyn crate::role::Role>]) -> Option<ExpiredFn> {
    let handlers: Vec<ExpiredFn> = roles
        .iter()
        .filter_map(|r| r.registration_expired())
        .collect();
    if handlers.is_empty() {
        return None;
    }
    Some(Arc::new(move |service, instance| {
        for handler in &handlers {
            handler(service, instance);
        }
    }))
}

type Acceptor = Option<tokio_rustls::TlsAcceptor>;

/// The TLS acceptors of the HTTP and gRPC listeners, when `tls.cert` and `tls.key` are set.
fn tls_acceptors(config: &Config) -> Result<(Acceptor, Acceptor), StartError> {
    let (Some(cert), Some(key)) = (&config.tls.cert, &config.tls.key) else {
        return Ok((None, None));
    };
    let http = sdsim_net::tls::load_acceptor(cert, key, &[b"http/1.1"])?;
    let grpc = sdsim_net::tls::load_acceptor_with_clients(
        cert,
        key,
        &[b"h2"],
        config.grpc.client_ca.as_deref(),
    )?;
    Ok((Some(http), Some(grpc)))
}
