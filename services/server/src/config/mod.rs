//! The configuration of one sdsim process: the sections every crate owns, composed.
//!
//! Each section's type, defaults, docs and `validate` live in the crate that reads it
//! (`sdsim_core::config` for the runtime and transport, `sdsim_auth::config`,
//! `sdsim_projects::config`, `sdsim_store::config`, `sdsim_gateway::config`). Here they are
//! put together under their keys, loaded (defaults → file → `SDSIM__SECTION__KEY` → `--set`)
//! and validated: every section, then what depends on more than one (roles, services
//! reached elsewhere, mutual TLS).

use sdsim_auth::AuthConfig;
use sdsim_core::config::{
    BusConfig, CompressionConfig, ConfigError, CorsConfig, GrpcConfig, HttpConfig, InstanceConfig,
    LogConfig, Overrides, Problems, RateLimitConfig, RuntimeConfig, ServerConfig, SheddingConfig,
    TlsConfig,
};
use sdsim_gateway::alerts::AlertsConfig;
use sdsim_gateway::config::{GatewayConfig, RedisConfig, WebSocketConfig};
use sdsim_mesh::{MeshConfig, RegistryConfig};
use sdsim_net::otel::config::OtelConfig;
use sdsim_projects::config::{ProjectConfig, SimulationConfig};
use sdsim_store::StorageConfig;
use serde::{Deserialize, Serialize};

#[cfg(test)]
mod tests;

/// The roles one process can run (`server.roles`); all of them by default. The role list
/// (`crate::roles::ROLES`) starts them in this order.
pub const ROLES: [&str; 4] = ["gateway", "auth", "project", "simulation"];

/// The whole configuration of one sdsim process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Which roles this process runs (`gateway`, `auth`, `project`, `simulation`).
    pub roles: Vec<String>,
    /// Shards, CPUs, driver and stall detection.
    pub runtime: RuntimeConfig,
    /// Connection limits and graceful shutdown.
    pub server: ServerConfig,
    /// HTTP/1.1 limits and timeouts.
    pub http: HttpConfig,
    /// The gateway role's listener.
    pub gateway: GatewayConfig,
    /// The auth role's listeners and the token verifier.
    pub auth: AuthConfig,
    /// The project role's listeners.
    pub project: ProjectConfig,
    /// The simulation role's listeners, run queue and limits.
    pub simulation: SimulationConfig,
    /// Per-client rate limiting.
    pub ratelimit: RateLimitConfig,
    /// Adaptive load shedding when a shard's queueing delay stays high.
    pub shedding: SheddingConfig,
    /// Response compression.
    pub compression: CompressionConfig,
    /// Cross-origin resource sharing.
    pub cors: CorsConfig,
    /// Logging.
    pub log: LogConfig,
    /// TLS for every listener when both `cert` and `key` are set.
    pub tls: TlsConfig,
    /// Where data is stored.
    pub storage: StorageConfig,
    /// Redis, for cross-instance events and the service registry.
    pub redis: RedisConfig,
    /// The WebSocket endpoint.
    pub websocket: WebSocketConfig,
    /// The pub/sub bus: channel history.
    pub bus: BusConfig,
    /// gRPC listeners: message and stream limits, keepalive, connection age, mutual TLS.
    pub grpc: GrpcConfig,
    /// This process's identity among the instances sharing a database.
    pub instance: InstanceConfig,
    /// The service mesh client: pools, balancing, breakers, retries.
    pub mesh: MeshConfig,
    /// The service registry in Redis: TTL, heartbeat, advertised address.
    pub registry: RegistryConfig,
    /// OpenTelemetry tracing: spans exported over OTLP.
    pub otel: OtelConfig,
    /// The in-process alerts: thresholds, evaluation interval, cooldown.
    pub alerts: AlertsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            roles: ROLES.iter().map(|r| r.to_string()).collect(),
            runtime: RuntimeConfig::default(),
            server: ServerConfig::default(),
            http: HttpConfig::default(),
            gateway: GatewayConfig::default(),
            auth: AuthConfig::default(),
            project: ProjectConfig::default(),
            simulation: SimulationConfig::default(),
            ratelimit: RateLimitConfig::default(),
            shedding: SheddingConfig::default(),
            compression: CompressionConfig::default(),
            cors: CorsConfig::default(),
            log: LogConfig::default(),
            tls: TlsConfig::default(),
            storage: StorageConfig::default(),
            redis: RedisConfig::default(),
            websocket: WebSocketConfig::default(),
            bus: BusConfig::default(),
            grpc: GrpcConfig::default(),
            instance: InstanceConfig::default(),
            mesh: MeshConfig::default(),
            registry: RegistryConfig::default(),
            otel: OtelConfig::default(),
            alerts: AlertsConfig::default(),
        }
    }
}

impl Config {
    /// Loads the configuration: defaults, then `file` (if any), then `overrides` in order.
    /// Unknown keys and wrong types are errors naming the key. Does not call
    /// [`Config::validate`].
    pub fn load(file: Option<&str>, overrides: &Overrides) -> Result<Config, ConfigError> {
        sdsim_core::config::load(file, overrides)
    }

    /// [`Config::load`] with the file already read: `file` is its name (for errors) and text.
    /// The fuzz targets call it, so what they check is what `sdsim` does with a file.
    pub fn load_text(
        file: Option<(&str, &str)>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        sdsim_core::config::load_text(file, overrides)
    }

    /// Parses a whole configuration from TOML text (defaults fill what is missing).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        sdsim_core::config::from_toml(text)
    }

    /// Every problem of this configuration, each naming its key and the bad value: the roles,
    /// each section in the order of the file, then the checks across sections.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut problems = Problems::new();
        self.validate_roles(&mut problems);
        self.runtime.validate(&mut problems);
        self.server.validate(&mut problems);
        self.http.validate(&mut problems);
        self.gateway.validate(&mut problems);
        self.auth.validate(&mut problems);
        self.project.validate(&mut problems);
        self.simulation.validate(&mut problems);
        self.ratelimit.validate(&mut problems);
        self.shedding.validate(&mut problems);
        self.compression.validate(&mut problems);
        self.cors.validate(&mut problems);
        self.log.validate(&mut problems);
        self.tls.validate(&mut problems);
        self.storage.validate(&mut problems);
        self.redis.validate(&mut problems);
        self.websocket.validate(&mut problems);
        self.bus.validate(&mut problems);
        self.grpc.validate(&mut problems);
        self.mesh.validate(&mut problems);
        self.registry.validate(&mut problems);
        self.otel.validate(&mut problems);
        self.alerts.validate(&mut problems);
        self.validate_across(&mut problems);
        problems.into_result()
    }

    fn validate_roles(&self, problems: &mut Problems) {
        if self.roles.is_empty() {
            problems.bad("roles", "[]".into(), "at least one role is needed");
        }
        for role in &self.roles {
            if !ROLES.contains(&role.as_str()) {
                problems.bad(
                    "roles",
                    role.clone(),
                    &format!("unknown role ({})", ROLES.join(", ")),
                );
            }
        }
    }

    /// What depends on more than one section.
    fn validate_across(&self, problems: &mut Problems) {
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            problems.bad(
                "log.level",
                self.log.level.clone(),
                &format!(
                    "is not a tracing filter ({e}); e.g. \"info\" or \"sdsim_mesh=debug,info\""
                ),
            );
        }
        if !self.gateway.service_token.is_empty() {
            // A gateway with a service token serves the roles it does not run through their
            // services elsewhere.
            let remote = [
                (
                    "project",
                    "gateway.project_service",
                    &self.gateway.project_service,
                ),
                (
                    "simulation",
                    "gateway.simulation_service",
                    &self.gateway.simulation_service,
                ),
            ];
            for (role, key, list) in remote {
                if !self.has_role(role) && list.is_empty() && self.redis.url.is_none() {
                    problems.bad(
                        key,
                        String::new(),
                        &format!("a gateway without the {role} role needs its address"),
                    );
                }
            }
            // gateway.auth_service: every entry is checked with [gateway] (empty is allowed).
        }
        self.validate_advertised(problems);
        if let Some(ca) = &self.grpc.client_ca {
            if !self.tls.enabled() {
                problems.bad(
                    "grpc.client_ca",
                    ca.clone(),
                    "mutual TLS needs tls.cert and tls.key",
                );
            }
        }
    }

    /// With Redis, every listener this process registers must be reachable by peers: one that
    /// binds an unspecified address needs `registry.advertise_host`.
    fn validate_advertised(&self, problems: &mut Problems) {
        if self.redis.url.is_none() || self.registry.advertise_host.is_some() {
            return;
        }
        // A bad redis.url is reported once, by its own section.
        let mut redis = Problems::new();
        self.redis.validate(&mut redis);
        if redis.into_result().is_err() {
            return;
        }
        let unspecified = self.listeners().into_iter().find(|(_, addr)| {
            addr.parse::<std::net::SocketAddr>()
                .is_ok_and(|a| a.ip().is_unspecified())
        });
        if let Some((key, addr)) = unspecified {
            problems.bad(
                "registry.advertise_host",
                "(unset)".into(),
                &format!(
                    "required with redis.url: {key} = {addr} binds an unspecified address, which peers cannot connect to"
                ),
            );
        }
    }

    /// The listeners of the roles this process runs: (config key, address).
    pub fn listeners(&self) -> Vec<(&'static str, &str)> {
        let mut out = Vec::new();
        if self.has_role("gateway") {
            out.push(("gateway.listen", self.gateway.listen.as_str()));
        }
        if self.has_role("auth") {
            out.push(("auth.grpc_listen", self.auth.grpc_listen.as_str()));
            out.push(("auth.http_listen", self.auth.http_listen.as_str()));
        }
        if self.has_role("project") {
            out.push(("project.grpc_listen", self.project.grpc_listen.as_str()));
            out.push(("project.http_listen", self.project.http_listen.as_str()));
        }
        if self.has_role("simulation") {
            out.push((
                "simulation.grpc_listen",
                self.simulation.grpc_listen.as_str(),
            ));
            out.push((
                "simulation.http_listen",
                self.simulation.http_listen.as_str(),
            ));
        }
        out
    }

    /// Whether this process runs `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}
