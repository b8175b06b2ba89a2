//! A running sdsim server: configuration → listeners → shards → per-shard app.

use crate::redis_bridge::Bridge;
use crate::{health, observe, realtime};
use sdsim_auth::authn::Authenticator;
use sdsim_auth::AuthContract;
use sdsim_contract::{Authenticate, Remote};
use sdsim_core::config::Config;
use sdsim_core::metrics::Metrics;
use sdsim_core::runtime::{Runtime, RuntimeSpec, Shard};
use sdsim_core::shutdown::Phase;
use sdsim_core::shutdown::Shutdown;
use sdsim_core::stall::StallStats;
use sdsim_net::conn::ConnSettings;
use sdsim_net::grpc::health::Health;
use sdsim_net::grpc::server as grpc_server;
use sdsim_net::grpc::{Services, Settings as GrpcSettings};
use sdsim_net::http::codec::Limits;
use sdsim_net::http::router::Router;
use sdsim_net::middleware::service_callers::IsServiceToken;
use sdsim_net::middleware::{App, Stack};
use sdsim_net::server::{
    accept_loop, bind_reuseport, drain_shard, ConnStats, ListenerContext, ListenerSet,
};
use sdsim_projects::projects::{ProjectContract, ProjectService, RemoteProjects};
use sdsim_simulations::{RemoteSimulations, SimulationContract, SimulationService};
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
    /// The one authentication layer: bearer token → caller, for HTTP, WebSocket and gRPC.
    pub authenticator: Arc<dyn Authenticate>,
    /// Open WebSocket connections, instance-wide.
    pub ws_open: Arc<AtomicUsize>,
    /// Random per process: makes bus channel epochs and the Redis instance id unique.
    pub process_epoch: u64,
    /// The Redis bridge, when `redis.url` is set.
    pub redis: Option<Arc<Bridge>>,
    /// Storage, when a role of this process uses it.
    pub store: Option<sdsim_store::Store>,
    /// The auth service: its verifier serves every role but the bare gateway; its routes and
    /// listeners are served when this process runs the `auth` role.
    pub auth: Option<Arc<sdsim_auth::Auth>>,
    /// Whether this process runs the `auth` role.
    pub runs_auth: bool,
    /// The project service, when this process runs the `project` role.
    pub projects: Option<Arc<sdsim_projects::projects::Projects>>,
    /// The simulation service, when this process runs the `simulation` role.
    pub simulations: Option<Arc<sdsim_simulations::Simulations>>,
    gateway: ListenerSet,
    auth_http: Option<ListenerSet>,
    auth_grpc: Option<ListenerSet>,
    project_http: Option<ListenerSet>,
    project_grpc: Option<ListenerSet>,
    simulation_http: Option<ListenerSet>,
    simulation_grpc: Option<ListenerSet>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    grpc_tls: Option<tokio_rustls::TlsAcceptor>,
}

/// A started server.
pub struct Server {
    runtime: Runtime,
    globals: Arc<Globals>,
    local_addr: SocketAddr,
}

/// Binds `addr` (named by config key `key`) once per shard.
fn bind(key: &str, addr: &str, shards: usize) -> Result<ListenerSet, StartError> {
    let parsed: SocketAddr = addr
        .parse()
        .map_err(|_| StartError::Address(format!("{key} = {addr}")))?;
    bind_reuseport(parsed, shards, 4096)
        .map_err(|e| StartError::Listen(io::Error::new(e.kind(), format!("{key} = {addr}: {e}"))))
}

/// Applies migrations when configured and starts the auth service, on a thread of its own
/// (its runtime and any connection it opened end with it).
fn start_auth(
    config: &Config,
    store: &sdsim_store::Store,
    shards: usize,
) -> Result<Arc<sdsim_auth::Auth>, StartError> {
    let config = config.clone();
    let init_store = store.clone();
    let auth = std::thread::spawn(move || {
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .map_err(|e| StartError::Storage(e.to_string()))?;
        rt.block_on(async {
            if config.storage.migrate_on_start {
                let applied = sdsim_store::migrate::run(&init_store)
                    .await
                    .map_err(|e| StartError::Storage(format!("migrations: {e}")))?;
                if !applied.is_empty() {
                    tracing::info!(?applied, "migrations applied");
                }
            }
            sdsim_auth::Auth::open(&config, init_store, shards)
                .await
                .map_err(|e| StartError::Auth(e.to_string()))
        })
    })
    .join()
    .map_err(|_| StartError::Auth("the start-up thread panicked".into()))??;
    Ok(auth)
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
    /// A listen address is not an IP:port.
    #[error("{0}: not an IP:port address")]
    Address(String),
    /// Storage could not be opened or migrated.
    #[error("storage: {0}")]
    Storage(String),
    /// The auth service could not start.
    #[error("auth: {0}")]
    Auth(String),
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
        let gateway = bind("gateway.listen", &config.gateway.listen, shards)?;
        let local_addr = gateway.local_addr();
        let runs_auth = config.has_role("auth");
        let (runs_project, runs_simulation) =
            (config.has_role("project"), config.has_role("simulation"));
        // Connections open lazily (PostgreSQL per shard); SQLite files are created here.
        let store =
            sdsim_auth::open_store(&config).map_err(|e| StartError::Storage(e.to_string()))?;
        // The project and simulation roles verify tokens with the auth service's keys (read
        // from the shared storage) even when the auth role runs elsewhere.
        let auth = if runs_auth || runs_project || runs_simulation {
            Some(start_auth(&config, &store, shards)?)
        } else {
            None
        };
        let pair = |run: bool, http: (&str, &str), grpc: (&str, &str)| {
            if run {
                Ok::<_, StartError>((
                    Some(bind(http.0, http.1, shards)?),
                    Some(bind(grpc.0, grpc.1, shards)?),
                ))
            } else {
                Ok((None, None))
            }
        };
        let (auth_http, auth_grpc) = pair(
            runs_auth,
            ("auth.http_listen", &config.auth.http_listen),
            ("auth.grpc_listen", &config.auth.grpc_listen),
        )?;
        let (project_http, project_grpc) = pair(
            runs_project,
            ("project.http_listen", &config.project.http_listen),
            ("project.grpc_listen", &config.project.grpc_listen),
        )?;
        let (simulation_http, simulation_grpc) = pair(
            runs_simulation,
            ("simulation.http_listen", &config.simulation.http_listen),
            ("simulation.grpc_listen", &config.simulation.grpc_listen),
        )?;
        // The simulation service reads projects (designs, access) through the project service's
        // storage layer, in process.
        let projects = (runs_project || runs_simulation).then(|| {
            Arc::new(
                sdsim_projects::projects::Projects::new(store.clone())
                    .with_max_design_bytes(config.simulation.max_design_bytes),
            )
        });
        let simulations = match &projects {
            Some(p) if runs_simulation => Some(Arc::new(sdsim_simulations::Simulations::new(
                store.clone(),
                Arc::clone(p),
                config.simulation.clone(),
                shards,
                config.instance.resolved_id(),
            ))),
            _ => None,
        };
        let projects = projects.filter(|_| runs_project);
        let store = Some(store);
        let tls = match (&config.tls.cert, &config.tls.key) {
            (Some(cert), Some(key)) => {
                Some(sdsim_net::tls::load_acceptor(cert, key, &[b"http/1.1"])?)
            }
            _ => None,
        };
        let grpc_tls = match (&config.tls.cert, &config.tls.key) {
            (Some(cert), Some(key)) => Some(sdsim_net::tls::load_acceptor_with_clients(
                cert,
                key,
                &[b"h2"],
                config.grpc.client_ca.as_deref(),
            )?),
            _ => None,
        };
        let process_epoch = random_u64();
        let redis = match &config.redis.url {
            Some(url) => Some(
                Bridge::start(url, shards, format!("{process_epoch:016x}"))
                    .map_err(|e| StartError::Redis(e.to_string()))?,
            ),
            None => None,
        };
        let globals = Arc::new(Globals {
            authenticator: Arc::new(Authenticator::new(
                &config.auth,
                auth.as_ref().map(|a| Arc::clone(a.verifier())),
            )),
            store,
            auth,
            runs_auth,
            auth_http,
            auth_grpc,
            project_http,
            project_grpc,
            simulation_http,
            simulation_grpc,
            grpc_tls,
            projects: projects.clone(),
            simulations: simulations.clone(),
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
            let apis = Apis::for_shard(&shared);
            let mut router = routes(&shared, &apis);
            extra_routes(&mut router);
            run_shard(shard, Arc::clone(&shared), router, apis)
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

    /// The auth role's HTTP address, when this process runs it.
    pub fn auth_http_addr(&self) -> Option<SocketAddr> {
        self.globals.auth_http.as_ref().map(|l| l.local_addr())
    }

    /// The auth role's gRPC address, when this process runs it.
    pub fn auth_grpc_addr(&self) -> Option<SocketAddr> {
        self.globals.auth_grpc.as_ref().map(|l| l.local_addr())
    }

    /// The project role's HTTP address, when this process runs it.
    pub fn project_http_addr(&self) -> Option<SocketAddr> {
        self.globals.project_http.as_ref().map(|l| l.local_addr())
    }

    /// The project role's gRPC address, when this process runs it.
    pub fn project_grpc_addr(&self) -> Option<SocketAddr> {
        self.globals.project_grpc.as_ref().map(|l| l.local_addr())
    }

    /// The simulation role's HTTP address, when this process runs it.
    pub fn simulation_http_addr(&self) -> Option<SocketAddr> {
        self.globals
            .simulation_http
            .as_ref()
            .map(|l| l.local_addr())
    }

    /// The simulation role's gRPC address, when this process runs it.
    pub fn simulation_grpc_addr(&self) -> Option<SocketAddr> {
        self.globals
            .simulation_grpc
            .as_ref()
            .map(|l| l.local_addr())
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

/// How this shard reaches the project and simulation services: in process, over gRPC, or not
/// at all.
#[derive(Clone, Default)]
pub struct Apis {
    /// The project service.
    pub projects: Option<Rc<dyn ProjectService>>,
    /// The simulation service.
    pub simulations: Option<Rc<dyn SimulationService>>,
}

impl Apis {
    /// The services as this shard reaches them: in process when the role runs here, else over
    /// gRPC when `gateway.service_token` is set.
    pub fn for_shard(globals: &Globals) -> Apis {
        let gw = &globals.config.gateway;
        let remote = |addr: &str| -> Option<Remote> {
            if gw.service_token.is_empty() || !globals.config.has_role("gateway") {
                return None;
            }
            let addr = addr.parse().ok()?;
            match Remote::new(addr, &gw.service_token, gw.service_timeout) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::error!(error = %e, "gateway.service_token");
                    None
                }
            }
        };
        let local = Apis::local(globals);
        Apis {
            projects: local.projects.or_else(|| {
                remote(&gw.project_service)
                    .map(|r| Rc::new(RemoteProjects(r)) as Rc<dyn ProjectService>)
            }),
            simulations: local.simulations.or_else(|| {
                remote(&gw.simulation_service)
                    .map(|r| Rc::new(RemoteSimulations(r)) as Rc<dyn SimulationService>)
            }),
        }
    }

    /// The services this process runs itself.
    fn local(globals: &Globals) -> Apis {
        Apis {
            projects: globals
                .projects
                .clone()
                .map(|p| Rc::new(p) as Rc<dyn ProjectService>),
            simulations: globals
                .simulations
                .clone()
                .map(|s| Rc::new(s) as Rc<dyn SimulationService>),
        }
    }
}

/// The routes of the gateway role.
pub fn routes(globals: &Arc<Globals>, apis: &Apis) -> Router {
    let mut router = Router::new();
    health::register(&mut router, globals);
    observe::register(&mut router, globals);
    realtime::register(&mut router, globals);
    if let (Some(auth), true) = (&globals.auth, globals.runs_auth) {
        sdsim_auth::http::register(&mut router, auth, &globals.authenticator);
    }
    service_api(&mut router, globals, apis);
    router
}

/// The project and simulation routes this shard reaches a service for.
fn service_api(router: &mut Router, globals: &Globals, apis: &Apis) {
    if let Some(p) = &apis.projects {
        sdsim_projects::http::register_projects(router, p, &globals.authenticator);
    }
    if let Some(s) = &apis.simulations {
        sdsim_simulations::http::register_simulations(router, s, &globals.authenticator);
    }
}

/// The routes of the auth role's own HTTP listener: its API and health.
fn auth_routes(globals: &Arc<Globals>, auth: &Arc<sdsim_auth::Auth>) -> Router {
    let mut router = Router::new();
    health::register(&mut router, globals);
    sdsim_auth::http::register(&mut router, auth, &globals.authenticator);
    router
}

/// The routes of the project or simulation role's own HTTP listener: its API and health.
fn service_routes(globals: &Arc<Globals>, apis: &Apis) -> Router {
    let mut router = Router::new();
    health::register(&mut router, globals);
    service_api(&mut router, globals, apis);
    router
}

async fn run_shard(shard: Shard, globals: Arc<Globals>, router: Router, apis: Apis) {
    let config = &globals.config;
    let metrics = shard.insert(Metrics::new());
    let service_tokens = service_tokens(config);
    let stack_of = |metrics: &Rc<Metrics>| {
        Stack::from_config(config, Rc::clone(metrics), service_tokens.clone())
    };
    let stack = stack_of(&metrics);
    let rt = realtime::install(&shard, &globals, Rc::clone(&metrics));
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
    if let Some(auth) = &globals.auth {
        sdsim_auth::install_shard(auth, &shard, Rc::clone(&rt.bus), Rc::clone(&metrics));
    }
    if let Some(simulations) = &globals.simulations {
        simulations.install_shard(&shard);
    }
    rt.set_runs(apis.simulations.clone());
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
        settings: Rc::clone(&settings),
        tls: globals.tls.clone(),
        shutdown: Arc::clone(&globals.shutdown),
        stats: Arc::clone(&globals.conn_stats),
        max_connections: config.server.max_connections,
    });
    if let (Some(auth), Some(set)) = (&globals.auth, &globals.auth_http) {
        if let Some(Ok(listener)) = set.take(shard.id().index()) {
            let stack = stack_of(&metrics);
            let ctx = Rc::new(ListenerContext {
                app: Rc::new(App::new(auth_routes(&globals, auth), stack)),
                settings: Rc::clone(&settings),
                tls: globals.tls.clone(),
                shutdown: Arc::clone(&globals.shutdown),
                stats: Arc::clone(&globals.conn_stats),
                max_connections: config.server.max_connections,
            });
            let s = shard.clone();
            shard.spawn("auth-http-accept", async move {
                accept_loop(&s, listener, ctx).await;
            });
        }
    }
    if let (Some(auth), Some(set)) = (&globals.auth, &globals.auth_grpc) {
        if let Some(Ok(listener)) = set.take(shard.id().index()) {
            let phase = sdsim_net::server::shard_phase(&shard, &globals.shutdown);
            let mut services = Services::new();
            services.set_layers(stack_of(&metrics).layers());
            AuthContract::register(
                &mut services,
                Rc::new(Arc::clone(auth)),
                Arc::clone(&globals.authenticator),
            );
            let health = Health::new(&["", AuthContract::SERVICE], phase);
            health.register(&mut services);
            let services = Rc::new(services);
            let g = Arc::clone(&globals);
            let s = shard.clone();
            shard.spawn("auth-grpc-accept", async move {
                grpc_accept_loop(&s, listener, services, g).await;
            });
        }
    }
    // The project and simulation roles' own listeners: HTTP (their routes) and gRPC.
    let local = Apis::local(&globals);
    let roles = [
        (
            ("project-http-accept", "project-grpc-accept"),
            &globals.project_http,
            &globals.project_grpc,
            Apis {
                projects: local.projects.clone(),
                simulations: None,
            },
        ),
        (
            ("simulation-http-accept", "simulation-grpc-accept"),
            &globals.simulation_http,
            &globals.simulation_grpc,
            Apis {
                projects: None,
                simulations: local.simulations.clone(),
            },
        ),
    ];
    for ((http_task, grpc_task), http_set, grpc_set, apis) in roles {
        if let Some(Ok(listener)) = http_set.as_ref().and_then(|l| l.take(shard.id().index())) {
            let stack = stack_of(&metrics);
            let ctx = Rc::new(ListenerContext {
                app: Rc::new(App::new(service_routes(&globals, &apis), stack)),
                settings: Rc::clone(&settings),
                tls: globals.tls.clone(),
                shutdown: Arc::clone(&globals.shutdown),
                stats: Arc::clone(&globals.conn_stats),
                max_connections: config.server.max_connections,
            });
            let s = shard.clone();
            shard.spawn(http_task, async move {
                accept_loop(&s, listener, ctx).await;
            });
        }
        if let Some(Ok(listener)) = grpc_set.as_ref().and_then(|l| l.take(shard.id().index())) {
            let phase = sdsim_net::server::shard_phase(&shard, &globals.shutdown);
            let mut services = Services::new();
            services.set_layers(stack_of(&metrics).layers());
            let authn = Arc::clone(&globals.authenticator);
            let name = match (&apis.projects, &apis.simulations) {
                (Some(p), _) => {
                    ProjectContract::register(&mut services, Rc::clone(p), authn);
                    ProjectContract::SERVICE
                }
                (_, Some(s)) => {
                    SimulationContract::register(&mut services, Rc::clone(s), authn);
                    SimulationContract::SERVICE
                }
                _ => continue,
            };
            Health::new(&["", name], phase).register(&mut services);
            let services = Rc::new(services);
            let g = Arc::clone(&globals);
            let s = shard.clone();
            shard.spawn(grpc_task, async move {
                grpc_accept_loop(&s, listener, services, g).await;
            });
        }
    }
    accept_loop(&shard, listener, ctx).await;
    drain_shard(&shard, &globals.shutdown).await;
}

/// Recognises service tokens (`auth.tokens` with role `service`) for the rate limit, which
/// does not count them per IP: a gateway forwards all its users' calls from one address, each
/// already limited by the user's own. `None` when no such token is configured.
fn service_tokens(config: &sdsim_core::config::Config) -> Option<IsServiceToken> {
    let lengths: Vec<usize> = config
        .auth
        .tokens
        .iter()
        .filter(|t| t.roles.iter().any(|r| r == "service"))
        .map(|t| t.token.len())
        .collect();
    // Under auth.dev_open no token names a service.
    if lengths.is_empty() || !config.ratelimit.enabled || config.auth.dev_open {
        return None;
    }
    // Static tokens only: an access token never names a service.
    let tokens = Authenticator::new(&config.auth, None);
    // Hashing every bearer token would tax user calls for nothing: few lengths match.
    Some(Rc::new(move |token: &str| {
        lengths.contains(&token.len())
            && tokens
                .authenticate(Some(token))
                .is_ok_and(|caller| caller.is_service())
    }))
}

/// Accepts gRPC (HTTP/2) connections until the server drains; each is served on its own task.
async fn grpc_accept_loop(
    shard: &Shard,
    listener: monoio::net::TcpListener,
    services: Rc<Services>,
    globals: Arc<Globals>,
) {
    let mut phase = sdsim_net::server::shard_phase(shard, &globals.shutdown);
    let grpc = &globals.config.grpc;
    let settings = Rc::new(GrpcSettings {
        max_message_bytes: grpc.max_message_bytes,
        max_header_list_bytes: grpc.max_header_list_bytes,
        max_frame_bytes: grpc.max_frame_bytes,
        max_concurrent_streams: grpc.max_concurrent_streams,
        keepalive_interval: grpc.keepalive_interval,
        keepalive_timeout: grpc.keepalive_timeout,
        unary_timeout: grpc.unary_timeout,
        max_connection_age: grpc.max_connection_age,
        max_connection_age_grace: Some(grpc.max_connection_age_grace).filter(|g| !g.is_zero()),
    });
    while let Some((stream, peer, guard)) = sdsim_net::server::next_connection(
        shard,
        &listener,
        &mut phase,
        &globals.shutdown,
        &globals.conn_stats,
        globals.config.server.max_connections,
    )
    .await
    {
        let (services, settings, g) = (
            Rc::clone(&services),
            Rc::clone(&settings),
            Arc::clone(&globals),
        );
        let conn_phase = phase.clone();
        shard.spawn("grpc-connection", async move {
            let _open = guard;
            let mut closed = conn_phase.clone();
            let serve = async {
                use monoio::io::IntoPollIo;
                let Ok(io) = stream.into_poll_io() else {
                    return;
                };
                match &g.grpc_tls {
                    None => {
                        grpc_server::serve_connection(io, peer, services, settings, conn_phase)
                            .await
                    }
                    Some(acceptor) => {
                        let handshake =
                            monoio::time::timeout(g.config.http.read_timeout, acceptor.accept(io))
                                .await;
                        if let Ok(Ok(tls)) = handshake {
                            grpc_server::serve_connection(tls, peer, services, settings, conn_phase)
                                .await
                        }
                    }
                }
            };
            monoio::select! {
                _ = serve => {}
                _ = closed.wait_for(|p| *p == Phase::Closed) => g.shutdown.record_forced(1),
            }
        });
    }
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
