//! This process in the service registry (when `redis.url` is set): one registration per role
//! it runs, with the addresses peers reach it by, its load at each heartbeat, `draining` from
//! the moment shutdown starts, and deletion once the shards have stopped.

use crate::config::Config;
use crate::error::StartError;
use crate::role::Role;
use sdsim_core::shutdown::{Phase, Shutdown};
use sdsim_mesh::registry::{own_instance, started_now_ms, DrainSignal, ExpiredFn, Load, LoadFn};
use sdsim_mesh::Directory;
use sdsim_mesh::{Instance, Registry, RegistryOptions, Service};
use sdsim_net::server::ListenerSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long deleting the registrations at the end of shutdown may take before the process
/// exits anyway (the keys then expire by their TTL).
const DEREGISTER_TIMEOUT: Duration = Duration::from_secs(3);

/// What of a starting process its registrations describe.
pub(crate) struct Process<'a> {
    pub(crate) config: &'a Config,
    pub(crate) roles: &'a [Box<dyn Role>],
    /// The public (gateway) listener.
    pub(crate) public: &'a ListenerSet,
    pub(crate) shards: usize,
    pub(crate) shutdown: &'a Arc<Shutdown>,
    pub(crate) directory: &'a Arc<Directory>,
    /// gRPC calls being served, counted by every gRPC listener.
    pub(crate) grpc_in_flight: &'a Arc<AtomicU64>,
}

/// Starts the registry for `process`, when Redis is configured. `on_expired` hears of
/// instances whose registration expired.
pub(crate) fn start(
    process: Process<'_>,
    on_expired: Option<ExpiredFn>,
) -> Result<Option<Registry>, StartError> {
    let config = process.config;
    let Some(url) = &config.redis.url else {
        return Ok(None);
    };
    let entries = entries(&process)?;
    let (counted, calls) = (
        Arc::clone(process.shutdown),
        Arc::clone(process.grpc_in_flight),
    );
    let load: LoadFn = Arc::new(move || Load {
        // What peers send through the mesh arrives over gRPC; the gateway's own HTTP requests
        // are not calls of a service.
        in_flight: calls.load(Ordering::Relaxed),
        connections: counted.open_connections() as u64,
    });
    let shutdown = Arc::clone(process.shutdown);
    let draining: DrainSignal = Box::pin(async move { shutdown.reached(Phase::Draining).await });
    let options = RegistryOptions {
        ttl: config.registry.ttl,
        heartbeat: config.registry.heartbeat,
        entries,
        load,
        on_expired,
        draining: Some(draining),
    };
    let registry = Registry::start(url, options, Arc::clone(process.directory))
        .map_err(|e| StartError::Redis(e.to_string()))?;
    Ok(Some(registry))
}

/// Deletes the registrations (the end of shutdown).
pub(crate) fn stop(registry: &Registry) {
    registry.stop(DEREGISTER_TIMEOUT);
}

/// One entry per role this process runs, with its advertised addresses.
fn entries(process: &Process<'_>) -> Result<Vec<(Service, Instance)>, StartError> {
    let config = process.config;
    let id = config.instance.resolved_id();
    let advertise = config.registry.advertise_ip();
    let advertised = |addr: SocketAddr| -> Result<SocketAddr, StartError> {
        if !addr.ip().is_unspecified() {
            return Ok(addr);
        }
        match advertise {
            Some(ip) => Ok(SocketAddr::new(ip, addr.port())),
            // Configuration validation refuses this; a caller that skipped it learns here.
            None => Err(StartError::Address(format!(
                "registry.advertise_host is unset and a listener binds {addr}"
            ))),
        }
    };
    let started_at = started_now_ms();
    let shards = process.shards as u32;
    let version = env!("CARGO_PKG_VERSION");
    let mut out = Vec::new();
    for role in process.roles {
        if !config.has_role(role.name()) {
            continue;
        }
        let Some(service) = Service::from_role(role.name()) else {
            continue;
        };
        let (grpc, http) = match role.listeners() {
            Some(l) => (
                Some(advertised(l.grpc.local_addr())?),
                Some(advertised(l.http.local_addr())?),
            ),
            // The gateway serves on the public listener and has no gRPC.
            None => (None, Some(advertised(process.public.local_addr())?)),
        };
        out.push((
            service,
            own_instance(&id, grpc, http, shards, version, started_at),
        ));
    }
    Ok(out)
}
