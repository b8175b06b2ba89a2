//! Roles: what one process can run, each with its listeners, routes, gRPC service, per-shard
//! setup and line in `/health/services`, and the helpers roles share. The list of them is
//! [`crate::roles::ROLES`].
//!
//! A role starts in two steps: [`crate::roles::Start`] once per process (it may start the
//! services it needs through [`Parts`] and bind its own listeners), then [`Role::on_shard`]
//! on every shard, whose [`ShardRole`] says what the shard serves for it.

use crate::config::Config;
use crate::error::StartError;
use sdsim_auth::Auth;
use sdsim_contract::Remote;
use sdsim_core::metrics::Metrics;
use sdsim_core::runtime::Shard;
use sdsim_gateway::config::AddressList;
use sdsim_gateway::realtime::Realtime;
use sdsim_gateway::state::ServiceHealth;
use sdsim_gateway::GatewayState;
use sdsim_mesh::{Directory, Instance, Service, Source, Target};
use sdsim_net::grpc::client::{Connect, Keepalive};
use sdsim_net::grpc::Services;
use sdsim_net::http::router::Router;
use sdsim_net::server::{bind_reuseport, ListenerSet};
use sdsim_net::tls::ClientTls;
use sdsim_projects::projects::Projects;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

/// A started role, shared by every shard.
pub trait Role: Send + Sync {
    /// Its name in `server.roles`.
    fn name(&self) -> &'static str;
    /// Its own HTTP and gRPC listeners, when this process runs it.
    fn listeners(&self) -> Option<&RoleListeners> {
        None
    }
    /// Its line in `/health/services`.
    fn health(&self) -> ServiceHealth;
    /// Sets the role up on one shard (its tasks, its clients) and says what the shard serves.
    fn on_shard(&self, on: &ShardContext<'_>) -> Box<dyn ShardRole>;
    /// What it does when another instance's registration expires (that instance stopped
    /// answering without draining); `None`: nothing.
    fn registration_expired(&self) -> Option<sdsim_mesh::registry::ExpiredFn> {
        None
    }
}

/// What one shard serves for a role.
pub trait ShardRole {
    /// Adds its routes to the public (gateway) listener's router.
    fn public_routes(&self, _router: &mut Router) {}
    /// Adds its routes to its own HTTP listener's router (the health routes are there already).
    fn own_routes(&self, _router: &mut Router) {}
    /// Registers its gRPC service on its own gRPC listener; the name is what gRPC health
    /// reports on. `None`: it serves no gRPC here.
    fn grpc(&self, _services: &mut Services) -> Option<&'static str> {
        None
    }
}

/// What a role sees of its shard while it is set up.
pub struct ShardContext<'a> {
    /// The shard.
    pub shard: &'a Shard,
    /// The gateway role's shared state (authentication, configuration).
    pub gateway: &'a Arc<GatewayState>,
    /// This shard's real-time state (the bus).
    pub realtime: &'a Rc<Realtime>,
    /// This shard's metrics.
    pub metrics: &'a Rc<Metrics>,
    /// The auth service, when a role of this process started it.
    pub auth: Option<&'a Arc<Auth>>,
    /// The instances of every service this process may call.
    pub directory: &'a Arc<Directory>,
}

/// The parts of a process that roles share, started by the first role that needs them.
pub struct Parts<'a> {
    /// The validated configuration.
    pub config: &'a Config,
    /// Number of shards.
    pub shards: usize,
    /// Storage (PostgreSQL connections open lazily; SQLite files exist already).
    pub store: sdsim_store::Store,
    /// The instances of every service this process may call (static addresses, or the
    /// registry when Redis is set).
    pub directory: Arc<Directory>,
    /// Keys fetched from the auth service elsewhere, when the gateway reaches it remotely
    /// (used when no role of this process starts the auth service).
    pub auth_keys: Option<Arc<sdsim_auth::follower::KeyFollower>>,
    auth: Option<Arc<Auth>>,
    projects: Option<Arc<Projects>>,
}

impl<'a> Parts<'a> {
    /// Parts over `store`, nothing started yet.
    pub fn new(config: &'a Config, store: sdsim_store::Store, shards: usize) -> Parts<'a> {
        let directory = Arc::new(Directory::new());
        fill_static(&directory, config);
        Parts {
            config,
            shards,
            store,
            directory,
            auth_keys: None,
            auth: None,
            projects: None,
        }
    }

    /// The auth service, started (with migrations, when configured) on first use.
    pub fn auth(&mut self) -> Result<Arc<Auth>, StartError> {
        if let Some(auth) = &self.auth {
            return Ok(Arc::clone(auth));
        }
        let auth = start_auth(self.config, &self.store, self.shards)?;
        self.auth = Some(Arc::clone(&auth));
        Ok(auth)
    }

    /// The project service's storage layer, which the simulation service also reads designs
    /// and access through.
    pub fn projects(&mut self) -> Arc<Projects> {
        let (store, max) = (&self.store, self.config.simulation.max_design_bytes);
        Arc::clone(self.projects.get_or_insert_with(|| {
            Arc::new(Projects::new(store.clone()).with_max_design_bytes(max))
        }))
    }

    /// The auth service, when a role started it.
    pub fn started_auth(&self) -> Option<&Arc<Auth>> {
        self.auth.as_ref()
    }
}

/// Applies migrations when configured and starts the auth service, on a thread of its own
/// (its runtime and any connection it opened end with it).
fn start_auth(
    config: &Config,
    store: &sdsim_store::Store,
    shards: usize,
) -> Result<Arc<Auth>, StartError> {
    let (config, migrate_on_start) = (config.auth.clone(), config.storage.migrate_on_start);
    let init_store = store.clone();
    std::thread::spawn(move || {
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .map_err(|e| StartError::Storage(e.to_string()))?;
        rt.block_on(async {
            if migrate_on_start {
                let applied = sdsim_store::migrate::run(&init_store)
                    .await
                    .map_err(|e| StartError::Storage(format!("migrations: {e}")))?;
                if !applied.is_empty() {
                    tracing::info!(?applied, "migrations applied");
                }
            }
            Auth::open(&config, init_store, shards)
                .await
                .map_err(|e| StartError::Auth(e.to_string()))
        })
    })
    .join()
    .map_err(|_| StartError::Auth("the start-up thread panicked".into()))?
}

/// A role's own listeners: one SO_REUSEPORT socket per shard for HTTP and for gRPC.
pub struct RoleListeners {
    /// Its HTTP API and health.
    pub http: ListenerSet,
    /// Its gRPC service and gRPC health.
    pub grpc: ListenerSet,
    /// The names of the accept tasks (stall reports name them).
    pub tasks: (&'static str, &'static str),
}

impl RoleListeners {
    /// Binds `http` and `grpc` (config key, address) once per shard.
    pub fn bind(
        http: (&str, &str),
        grpc: (&str, &str),
        tasks: (&'static str, &'static str),
        shards: usize,
    ) -> Result<RoleListeners, StartError> {
        Ok(RoleListeners {
            http: bind(http.0, http.1, shards)?,
            grpc: bind(grpc.0, grpc.1, shards)?,
            tasks,
        })
    }
}

/// Binds `addr` (named by config key `key`) once per shard.
pub fn bind(key: &str, addr: &str, shards: usize) -> Result<ListenerSet, StartError> {
    let parsed: SocketAddr = addr
        .parse()
        .map_err(|_| StartError::Address(format!("{key} = {addr}")))?;
    bind_reuseport(parsed, shards, 4096)
        .map_err(|e| StartError::Listen(io::Error::new(e.kind(), format!("{key} = {addr}: {e}"))))
}

/// Where the gateway reaches a role that runs elsewhere: its gRPC addresses, when this process
/// runs the gateway role with `gateway.service_token` set.
pub fn remote_address(config: &Config, list: &AddressList) -> Option<String> {
    let gw = &config.gateway;
    (!gw.service_token.is_empty() && config.has_role("gateway")).then(|| list.to_string())
}

/// How the internal gRPC client connects: TLS from `grpc.client_tls_*` (mutual TLS with
/// `grpc.client_cert`/`grpc.client_key`) and keepalive from `grpc.client_keepalive*`. The start
/// of the server calls it once so bad files stop the start, naming the key.
pub fn client_connect(config: &Config) -> Result<Connect, sdsim_net::tls::TlsError> {
    let grpc = &config.grpc;
    let tls = ClientTls::from_settings(
        grpc.client_tls_ca.as_deref(),
        grpc.client_cert.as_deref(),
        grpc.client_key.as_deref(),
        grpc.client_tls_name.as_deref(),
    )?;
    let keepalive = (!grpc.client_keepalive.is_zero()).then_some(Keepalive {
        interval: grpc.client_keepalive,
        timeout: grpc.client_keepalive_timeout,
        late: grpc.client_ping_late,
    });
    Ok(Connect {
        tls,
        keepalive,
        connect_timeout: config.mesh.connect_timeout,
    })
}

/// Puts the static addresses of the services this process does not run into `directory`
/// (`gateway.auth_service`, `gateway.project_service`, `gateway.simulation_service`). The
/// Redis registry, when it runs, replaces them with what it finds.
pub fn fill_static(directory: &Directory, config: &Config) {
    let gw = &config.gateway;
    for (service, list) in [
        (Service::Auth, &gw.auth_service),
        (Service::Project, &gw.project_service),
        (Service::Simulation, &gw.simulation_service),
    ] {
        if config.has_role(service.role()) {
            continue;
        }
        // Validation refused any address that does not parse.
        let instances = list
            .socket_addrs()
            .unwrap_or_default()
            .into_iter()
            .map(Instance::fixed)
            .collect::<Vec<_>>();
        if !instances.is_empty() {
            directory.set(service, instances, Source::Static);
        }
    }
}

/// The mesh client of `service` (see [`remote_address`]) for the shard `on` sets up: its
/// instances come from the process's directory, its numbers go to the shard's metrics.
pub fn remote(config: &Config, service: Service, on: &ShardContext<'_>) -> Option<Remote> {
    let gw = &config.gateway;
    let target = Target::new(
        service,
        Arc::clone(on.directory),
        config.mesh.clone(),
        on.shard.id().0,
        on.shard.count(),
        Some(Rc::clone(on.metrics)),
    );
    match client_connect(config) {
        Ok(connect) => target.set_connect(connect),
        Err(e) => {
            tracing::error!(error = %e, "internal gRPC client TLS");
            return None;
        }
    }
    match Remote::over(target, &gw.service_token, gw.service_timeout) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::error!(error = %e, "gateway.service_token");
            None
        }
    }
}

/// The `/health/services` line of role `name`: served here when `local`, else remote when
/// the gateway reaches it at `remote`, else not configured.
pub fn health_line(
    config: &Config,
    name: &'static str,
    local: bool,
    remote: Option<&str>,
) -> ServiceHealth {
    let configured = config.has_role(name);
    let (status, detail) = match (configured, remote) {
        (false, Some(addr)) => (
            "remote",
            format!("served by the {name} service at {addr} over gRPC"),
        ),
        (false, None) => (
            "not_configured",
            "this process does not run the role".into(),
        ),
        (true, _) if local => ("up", "served in this process".into()),
        (true, _) => ("unavailable", "configured, but not served here".into()),
    };
    ServiceHealth {
        name,
        configured,
        status,
        detail,
    }
}
