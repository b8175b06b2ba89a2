//! What every shard of the gateway role shares: the configuration, the process-wide counters,
//! and what the health and metrics endpoints report about the other roles.

use crate::alerts::{Alerts, AlertsConfig};
use crate::config::{RedisConfig, WebSocketConfig};
use crate::redis_bridge::Bridge;
use sdsim_auth::verifier::Verifier;
use sdsim_contract::Authenticate;
use sdsim_core::config::{BusConfig, HttpConfig};
use sdsim_core::shutdown::Shutdown;
use sdsim_core::stall::StallStats;
use sdsim_net::server::ConnStats;
use sdsim_store::StorageConfig;
use serde::Serialize;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Instant;

/// One role's line in `/health/services`.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceHealth {
    /// The role's name in `server.roles`.
    pub name: &'static str,
    /// Whether `server.roles` names it.
    pub configured: bool,
    /// `up`, `remote`, `not_configured`, `unavailable`.
    pub status: &'static str,
    /// A sentence for a person.
    pub detail: String,
}

/// The sections of the validated configuration the gateway role reads.
#[derive(Debug, Clone, Default)]
pub struct GatewaySections {
    /// `[websocket]`: `/ws` and its limits.
    pub websocket: WebSocketConfig,
    /// `[bus]`: channel history and queues.
    pub bus: BusConfig,
    /// `[http]`: WebSocket writes share its write timeout.
    pub http: HttpConfig,
    /// `[storage]`: what `/health/database` names and how long it waits.
    pub storage: StorageConfig,
    /// `[redis]`: what `/health/redis` names.
    pub redis: RedisConfig,
    /// `[alerts]`: the in-process alerts' thresholds.
    pub alerts: AlertsConfig,
}

/// The gateway role's process-wide state, shared by every shard.
pub struct GatewayState {
    /// The sections of the configuration the gateway reads.
    pub config: GatewaySections,
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
    /// Storage, when a role of this process uses it (`/health/database`).
    pub store: Option<sdsim_store::Store>,
    /// The token verifier whose counters `/metrics` shows, when a role of this process verifies
    /// tokens with the auth service's keys.
    pub verifier: Option<Arc<Verifier>>,
    /// One line per role for `/health/services`, in the order of the role list.
    pub services: Vec<ServiceHealth>,
    /// The instances of every service this process knows (static addresses or the registry):
    /// `/health/services` asks each of them.
    pub directory: Arc<sdsim_mesh::Directory>,
    /// The registry's counters, when `redis.url` is set.
    pub registry: Option<Arc<sdsim_mesh::RegistryStats>>,
    /// This process's `instance.id`, resolved.
    pub instance: String,
    /// The in-process alerts (`/api/monitoring/alerts`).
    pub alerts: Alerts,
}

/// A random number per process (bus channel epochs, the Redis instance id).
pub fn process_epoch() -> u64 {
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
