//! Configuration: documented serde structs with defaults, loading with overrides, validation.
//!
//! Sources, later ones winning: built-in defaults → the TOML file (`--config`) →
//! `SDSIM__SECTION__KEY` environment variables → `--set section.key=value` flags. Unknown keys
//! are errors, and [`Config::validate`] names the key and the bad value of every problem.
//! `config/default.toml` in the repository lists every key with a comment.

mod duration;
mod load;

pub use duration::{format as format_duration, parse as parse_duration, DurationError};
pub use load::{ConfigError, Overrides};

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

/// The roles one process can run; all of them by default.
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
    pub project: ServiceListen,
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
            project: ServiceListen::new(10000, 10001),
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
        }
    }
}

/// `[instance]`: who this process is among the instances that share a database.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InstanceConfig {
    /// A name that stays the same across restarts of this instance and differs from every other
    /// instance on the same database; runs are recorded under it, and at start an instance marks
    /// the runs it left queued or running as failed. Empty: the host name (set it when several
    /// instances on one host share a database).
    pub id: String,
}

impl InstanceConfig {
    /// `id`, or the host name when it is empty.
    pub fn resolved_id(&self) -> String {
        if !self.id.is_empty() {
            return self.id.clone();
        }
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its whole length; gethostname NUL-terminates within it
        // or truncates, and we stop at the first NUL or the end.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        match (rc, std::str::from_utf8(&buf[..len])) {
            (0, Ok(name)) if !name.is_empty() => name.to_string(),
            _ => "localhost".to_string(),
        }
    }
}

/// Which I/O driver the shards use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DriverKind {
    /// io_uring when the kernel allows it, epoll otherwise.
    #[default]
    Auto,
    /// io_uring only; start-up fails when it is unavailable.
    IoUring,
    /// epoll only.
    Epoll,
}

/// `[runtime]`: shards, CPUs, driver and stall detection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Number of shards; 0 = one per CPU in `cpus` (or in the process affinity mask).
    pub shards: usize,
    /// CPUs to pin shards to, in order; empty = the CPUs of the process affinity mask.
    pub cpus: Vec<usize>,
    /// I/O driver.
    pub driver: DriverKind,
    /// A task that holds its shard longer than this is logged and counted as a stall.
    #[serde(with = "duration")]
    pub stall_threshold: Duration,
    /// Capacity of each cross-shard ring (messages); a full ring makes the sender wait.
    pub mesh_ring_capacity: usize,
    /// Give every shard its own file-descriptor table (`unshare(CLONE_FILES)`), so
    /// RLIMIT_NOFILE applies per shard instead of per process: N shards hold up to N times the
    /// limit in sockets. For hosts where the limit cannot be raised; see the README.
    pub private_fd_tables: bool,
    /// Threads of the blocking pool, where work longer than a slice runs off the shards
    /// (compressing large responses, validating large designs); 0 = one per shard.
    pub blocking_threads: usize,
    /// Jobs the blocking pool queues; more are refused (a large response then goes
    /// uncompressed, a large design is answered 503).
    pub blocking_queue: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            shards: 0,
            cpus: Vec::new(),
            driver: DriverKind::Auto,
            stall_threshold: Duration::from_millis(10),
            mesh_ring_capacity: 1024,
            private_fd_tables: false,
            blocking_threads: 0,
            blocking_queue: 256,
        }
    }
}

/// `[server]`: connection limits and graceful shutdown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// On SIGTERM/SIGINT, in-flight requests get this long to finish; then connections are closed.
    #[serde(with = "duration")]
    pub shutdown_timeout: Duration,
    /// Most connections open at once across all shards; further accepts are closed at once.
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            shutdown_timeout: Duration::from_secs(15),
            max_connections: 200_000,
        }
    }
}

/// `[http]`: HTTP/1.1 limits and timeouts (seeds 000/001).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// A request (head and body) must arrive within this time once it has started.
    #[serde(with = "duration")]
    pub read_timeout: Duration,
    /// A response must be written within this time.
    #[serde(with = "duration")]
    pub write_timeout: Duration,
    /// A keep-alive connection with no request in progress is closed after this time.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// Largest request head (request line and headers) in bytes; larger → 431.
    pub max_head_bytes: usize,
    /// Largest request body in bytes; larger → 413.
    pub max_body_bytes: usize,
    /// Longest request target in bytes; longer → 414.
    pub max_uri_bytes: usize,
    /// Most header fields in one request; more → 431.
    pub max_headers: usize,
    /// Requests slower than this are logged as slow.
    #[serde(with = "duration")]
    pub slow_request: Duration,
    /// A handler that has not produced its response after this long is abandoned: the client
    /// gets 503 with code `timeout` naming the request.
    #[serde(with = "duration")]
    pub handler_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            read_timeout: Duration::from_secs(15),
            write_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(60),
            max_head_bytes: 1024 * 1024,
            max_body_bytes: 25 * 1024 * 1024,
            max_uri_bytes: 8 * 1024,
            max_headers: 100,
            slow_request: Duration::from_secs(1),
            handler_timeout: Duration::from_secs(30),
        }
    }
}

/// `[gateway]`: the public HTTP/WebSocket listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address the gateway listens on (one SO_REUSEPORT socket per shard).
    pub listen: String,
    /// Where the project service's gRPC listener is, when this process does not run the
    /// `project` role.
    pub project_service: String,
    /// Where the simulation service's gRPC listener is, when this process does not run the
    /// `simulation` role.
    pub simulation_service: String,
    /// The token this gateway presents to services in other processes (they list it in
    /// `auth.tokens` with the `service` role). Set, the gateway serves the project and
    /// simulation routes of roles it does not run through those services; empty, it does not.
    pub service_token: String,
    /// How long a call to a service in another process may take.
    #[serde(with = "duration")]
    pub service_timeout: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: "0.0.0.0:8000".into(),
            project_service: "127.0.0.1:10000".into(),
            simulation_service: "127.0.0.1:11000".into(),
            service_token: String::new(),
            service_timeout: Duration::from_secs(15),
        }
    }
}

/// `[auth]`, `[project]`, `[simulation]`: a service's gRPC and HTTP listeners.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceListen {
    /// gRPC listener address.
    pub grpc_listen: String,
    /// HTTP listener address.
    pub http_listen: String,
}

impl ServiceListen {
    fn new(grpc_port: u16, http_port: u16) -> Self {
        ServiceListen {
            grpc_listen: format!("0.0.0.0:{grpc_port}"),
            http_listen: format!("0.0.0.0:{http_port}"),
        }
    }
}

/// `[simulation]`: listeners, the run queue and per-user limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimulationConfig {
    /// gRPC listener address.
    pub grpc_listen: String,
    /// HTTP listener address.
    pub http_listen: String,
    /// Runs waiting to start, per instance (over → 503 / RESOURCE_EXHAUSTED).
    pub max_queued: usize,
    /// Runs executing at once on one shard (each in slices that yield).
    pub runs_per_shard: usize,
    /// Runs one user may have queued or running at once (over → 429).
    pub max_runs_per_user: usize,
    /// Simulated seconds per wall-clock second when a run does not say (0 = as fast as the shard
    /// allows).
    pub default_speed: f64,
    /// How often a running simulation publishes a metrics point (wall clock).
    #[serde(with = "duration")]
    pub metrics_interval: Duration,
    /// Longest simulated duration a run may ask for, in seconds.
    pub max_duration_s: f64,
    /// Wall-clock time a run may hold its shard before it yields to other work.
    #[serde(with = "duration")]
    pub slice: Duration,
    /// Largest design document (bytes of JSON) a project, template or validation accepts;
    /// larger → 413. Designs over 64 KiB are validated off the shards.
    pub max_design_bytes: usize,
    /// How long `stop` waits for the run to record that it stopped; longer → 503 `timeout`
    /// (the run still stops at its next slice).
    #[serde(with = "duration")]
    pub stop_timeout: Duration,
}

impl Default for SimulationConfig {
    fn default() -> Self {
        SimulationConfig {
            grpc_listen: "0.0.0.0:11000".into(),
            http_listen: "0.0.0.0:11001".into(),
            max_queued: 64,
            runs_per_shard: 2,
            max_runs_per_user: 3,
            default_speed: 60.0,
            metrics_interval: Duration::from_millis(500),
            max_duration_s: 86_400.0,
            slice: Duration::from_millis(1),
            max_design_bytes: 1 << 20,
            stop_timeout: Duration::from_secs(5),
        }
    }
}

/// A bearer token accepted by the static verifier (operator and service tokens).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticToken {
    /// The token as clients send it.
    pub token: String,
    /// The user id it authenticates.
    pub user: String,
    /// Roles (`admin` may publish and read every channel).
    #[serde(default)]
    pub roles: Vec<String>,
}

/// `[auth]`: listeners of the auth role, tokens, passwords, lockout, mail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// gRPC listener address.
    pub grpc_listen: String,
    /// HTTP listener address.
    pub http_listen: String,
    /// Local development only: every non-empty token is accepted, the token is the user id and
    /// the user is an admin. Never on by default; a warning is logged at start.
    pub dev_open: bool,
    /// Tokens accepted without the auth service (operators, services, tests).
    pub tokens: Vec<StaticToken>,
    /// `iss` and `aud` of access tokens.
    pub issuer: String,
    /// Lifetime of an access token (JWT).
    #[serde(with = "duration")]
    pub access_ttl: Duration,
    /// Lifetime of a session and its refresh tokens.
    #[serde(with = "duration")]
    pub refresh_ttl: Duration,
    /// A new signing key is made when the newest is this old.
    #[serde(with = "duration")]
    pub key_rotation: Duration,
    /// A new key is published (JWKS, other instances) this long before it signs.
    #[serde(with = "duration")]
    pub key_publish_delay: Duration,
    /// How often keys are re-read from storage (keys made by other instances).
    #[serde(with = "duration")]
    pub key_reload: Duration,
    /// How often each shard reads the sessions revoked since the last one it saw from storage:
    /// the bound on how long a revoked token can still work on an instance that missed the
    /// revocation's broadcast (Redis down or a full queue). Also read when Redis reconnects.
    #[serde(with = "duration")]
    pub revocation_sync: Duration,
    /// Failed logins within `lockout_window` that lock an account.
    pub lockout_threshold: u32,
    /// Window in which failed logins are counted.
    #[serde(with = "duration")]
    pub lockout_window: Duration,
    /// How long a locked account stays locked.
    #[serde(with = "duration")]
    pub lockout_duration: Duration,
    /// Least zxcvbn score (0-4) a new password needs.
    pub min_password_score: u8,
    /// Threads hashing passwords (argon2id); 0 = one per shard.
    pub hash_threads: usize,
    /// Hashing jobs waiting at most; more → 503.
    pub hash_queue: usize,
    /// Verified tokens each shard remembers (0: none, every check verifies the signature).
    pub verify_cache_entries: usize,
    /// Lifetime of an email verification token.
    #[serde(with = "duration")]
    pub verify_email_ttl: Duration,
    /// Lifetime of a password reset token.
    #[serde(with = "duration")]
    pub reset_ttl: Duration,
    /// Where mail goes: "log" (the log, info level) or "file:PATH" (JSON lines appended).
    pub mail_sender: String,
    /// Base URL used in links sent by mail.
    pub public_url: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        let listen = ServiceListen::new(9000, 9001);
        AuthConfig {
            grpc_listen: listen.grpc_listen,
            http_listen: listen.http_listen,
            dev_open: false,
            tokens: Vec::new(),
            issuer: "sdsim".into(),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            key_rotation: Duration::from_secs(7 * 24 * 3600),
            key_publish_delay: Duration::from_secs(120),
            key_reload: Duration::from_secs(60),
            revocation_sync: Duration::from_secs(2),
            lockout_threshold: 5,
            lockout_window: Duration::from_secs(15 * 60),
            lockout_duration: Duration::from_secs(15 * 60),
            min_password_score: 3,
            hash_threads: 0,
            hash_queue: 256,
            verify_cache_entries: 100_000,
            verify_email_ttl: Duration::from_secs(24 * 3600),
            reset_ttl: Duration::from_secs(3600),
            mail_sender: "log".into(),
            public_url: "http://localhost:8000".into(),
        }
    }
}

/// `[websocket]`: the real-time endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Whether `/ws` is served.
    pub enabled: bool,
    /// Origins allowed to open a connection; requests without `Origin` (non-browser clients)
    /// are always allowed; `["*"]` allows every origin.
    pub allowed_origins: Vec<String>,
    /// Largest frame accepted from a client (larger → close 1009).
    pub max_frame_bytes: usize,
    /// Largest message (all fragments, after decompression) accepted (larger → close 1009).
    pub max_message_bytes: usize,
    /// Bytes queued for one client before it is closed as a slow consumer (1008).
    pub max_outbound_bytes: usize,
    /// How often the server pings each client.
    #[serde(with = "duration")]
    pub ping_interval: Duration,
    /// A client that sends nothing (pongs included) for this long is closed.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// Time a client has to authenticate with an `auth` message.
    #[serde(with = "duration")]
    pub auth_timeout: Duration,
    /// Time to wait for the client's close frame after ours.
    #[serde(with = "duration")]
    pub close_timeout: Duration,
    /// WebSocket connections per instance (over → 503 at upgrade).
    pub max_connections: usize,
    /// WebSocket connections per client IP (0 = unlimited; over → 503 at upgrade).
    pub max_connections_per_ip: usize,
    /// WebSocket connections per user (0 = unlimited; over → 503 or close 1013).
    pub max_connections_per_user: usize,
    /// Channels one connection may subscribe to.
    pub max_subscriptions: usize,
    /// Negotiate permessage-deflate (RFC 7692) when the client offers it.
    pub compression: bool,
    /// Messages at least this large are sent compressed on deflate connections.
    pub compression_min_bytes: usize,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig {
            enabled: true,
            allowed_origins: Vec::new(),
            max_frame_bytes: 1 << 20,
            max_message_bytes: 1 << 20,
            max_outbound_bytes: 1 << 20,
            ping_interval: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(60),
            auth_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(2),
            max_connections: 200_000,
            max_connections_per_ip: 1_000,
            max_connections_per_user: 100,
            max_subscriptions: 128,
            compression: true,
            compression_min_bytes: 1024,
        }
    }
}

/// `[bus]`: channel history kept for resuming subscribers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    /// Events kept per channel.
    pub history_size: usize,
    /// How long events are kept.
    #[serde(with = "duration")]
    pub history_ttl: Duration,
    /// Channels one shard sequences (over → publish fails with 503).
    pub max_channels_per_shard: usize,
    /// Events waiting to cross to one other shard (over → the oldest are dropped and counted;
    /// subscribers see the gap in `seq` and resubscribe with `since`).
    pub max_forward_queue: usize,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            history_size: 100,
            history_ttl: Duration::from_secs(300),
            max_channels_per_shard: 100_000,
            max_forward_queue: 65_536,
        }
    }
}

/// One multi-window tier: at most `limit` requests per `window` (seed 002).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowTier {
    /// The window length, e.g. `"1m"`.
    #[serde(with = "duration")]
    pub window: Duration,
    /// Requests allowed per window.
    pub limit: u32,
}

/// A token bucket for one route, applied in addition to the per-client bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteLimit {
    /// The router pattern, e.g. `"/api/auth/login"`.
    pub route: String,
    /// Token refill rate per client for this route.
    pub rate_per_s: f64,
    /// Bucket size for this route.
    pub burst: u32,
}

/// `[shedding]`: refuse new work early when a shard is overloaded (its queueing delay stayed
/// above `target` for a whole `interval`, as CoDel decides), so the work it admits still finishes
/// fast.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SheddingConfig {
    /// Off by default: turn it on where the server may be offered more than it can serve.
    pub enabled: bool,
    /// A queueing delay above this is a standing queue once it lasts `interval`.
    #[serde(with = "duration")]
    pub target: Duration,
    /// How long the delay must stay above `target` before new work is refused.
    #[serde(with = "duration")]
    pub interval: Duration,
    /// How often each shard measures its queueing delay.
    #[serde(with = "duration")]
    pub probe: Duration,
    /// `Retry-After` of a refused request (whole seconds, at least 1).
    #[serde(with = "duration")]
    pub retry_after: Duration,
    /// Path prefixes never refused (HTTP paths and gRPC method paths): health, metrics, token
    /// validation. WebSocket frames (keep-alives included) never pass through the stack and
    /// are never refused; new WebSocket upgrades are.
    pub never: Vec<String>,
}

impl Default for SheddingConfig {
    fn default() -> Self {
        SheddingConfig {
            enabled: false,
            target: Duration::from_millis(5),
            interval: Duration::from_millis(100),
            probe: Duration::from_millis(2),
            retry_after: Duration::from_secs(1),
            never: [
                "/health",
                "/metrics",
                "/.well-known/",
                "/grpc.health.v1.Health/",
                "/sdsim.auth.v1.AuthService/ValidateToken",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// `[ratelimit]`: per-client-IP limits; the limit holds across shards (one owner shard per IP).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// `false` turns rate limiting off.
    pub enabled: bool,
    /// Token refill rate per client IP, requests per second.
    pub rate_per_s: f64,
    /// Token bucket size per client IP.
    pub burst: u32,
    /// Optional multi-window tiers, e.g. `[{window = "1m", limit = 100}]`.
    pub tiers: Vec<WindowTier>,
    /// Optional per-route buckets.
    pub routes: Vec<RouteLimit>,
    /// Paths starting with one of these are never limited (load balancers poll health).
    pub exempt_prefixes: Vec<String>,
    /// Clients tracked per shard; idle entries are evicted beyond it.
    pub max_clients: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            enabled: true,
            rate_per_s: 100.0,
            burst: 200,
            tiers: Vec::new(),
            routes: Vec::new(),
            exempt_prefixes: vec!["/health".into()],
            max_clients: 100_000,
        }
    }
}

/// `[compression]`: gzip / brotli responses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompressionConfig {
    /// `false` sends every body as is.
    pub enabled: bool,
    /// Bodies of this many bytes or fewer are sent as is.
    pub min_bytes: usize,
    /// gzip level, 1 (fast) to 9 (small).
    pub gzip_level: u32,
    /// Offer brotli to clients that accept it.
    pub brotli: bool,
    /// brotli quality, 0 to 11.
    pub brotli_quality: u32,
    /// Bodies larger than this are compressed on the blocking pool, off the shard (a 25 MiB
    /// body takes far longer than a slice); smaller ones on the shard.
    pub offload_bytes: usize,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig {
            enabled: true,
            min_bytes: 1024,
            gzip_level: 6,
            brotli: true,
            brotli_quality: 4,
            offload_bytes: 32 * 1024,
        }
    }
}

/// `[cors]`: cross-origin resource sharing; off while `allowed_origins` is empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Allowed origins (`"https://app.example.com"`), or `["*"]` for any.
    pub allowed_origins: Vec<String>,
    /// Methods a preflight may ask for.
    pub allowed_methods: Vec<String>,
    /// Request headers a preflight may ask for.
    pub allowed_headers: Vec<String>,
    /// Response headers scripts may read.
    pub exposed_headers: Vec<String>,
    /// Allow cookies / credentials (never with `*`).
    pub allow_credentials: bool,
    /// How long browsers may cache a preflight answer.
    #[serde(with = "duration")]
    pub max_age: Duration,
}

impl Default for CorsConfig {
    fn default() -> Self {
        let strings = |items: &[&str]| items.iter().map(|s| s.to_string()).collect();
        CorsConfig {
            allowed_origins: Vec::new(),
            allowed_methods: strings(&["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
            allowed_headers: strings(&["authorization", "content-type", "x-request-id"]),
            exposed_headers: strings(&[
                "x-request-id",
                "x-response-time",
                "x-ratelimit-limit",
                "x-ratelimit-remaining",
                "x-ratelimit-reset",
                "retry-after",
            ]),
            allow_credentials: false,
            max_age: Duration::from_secs(600),
        }
    }
}

/// `[log]`: logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Filter in `tracing` syntax: `info`, `debug`, `sdsim_net=debug,info`.
    pub level: String,
    /// One access-log line per request (method, path, status, bytes, duration, request id).
    pub access: bool,
    /// `text` or `json`.
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            access: true,
            format: "text".into(),
        }
    }
}

/// `[tls]`: PEM files; TLS is on when both are set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain (PEM).
    pub cert: Option<String>,
    /// Private key (PEM).
    pub key: Option<String>,
}

/// `[grpc]`: the gRPC listeners (`auth.grpc_listen`, and the project and simulation services').
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcConfig {
    /// Largest message in either direction (larger → RESOURCE_EXHAUSTED).
    pub max_message_bytes: usize,
    /// Largest request header list (HPACK-decoded names and values, RFC 9113
    /// SETTINGS_MAX_HEADER_LIST_SIZE); larger → the stream is refused.
    pub max_header_list_bytes: u32,
    /// Largest HTTP/2 frame payload a client may send (SETTINGS_MAX_FRAME_SIZE, 16384 to
    /// 16777215); larger → the connection is closed with FRAME_SIZE_ERROR.
    pub max_frame_bytes: u32,
    /// Streams one connection may have open at once (advertised in SETTINGS).
    pub max_concurrent_streams: u32,
    /// How often the server pings a connection (HTTP/2 PING).
    #[serde(with = "duration")]
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed.
    #[serde(with = "duration")]
    pub keepalive_timeout: Duration,
    /// After this long a connection is asked to go away (GOAWAY; calls in flight finish), so
    /// long-lived clients rebalance over instances.
    #[serde(with = "duration")]
    pub max_connection_age: Duration,
    /// Calls still open this long after the max-age GOAWAY are cut off and the connection
    /// closed ("0s": wait for them however long they take).
    #[serde(with = "duration")]
    pub max_connection_age_grace: Duration,
    /// The deadline of a unary call whose client sent no `grpc-timeout` (and the bound on
    /// reading any call's request); past it the call ends DEADLINE_EXCEEDED.
    #[serde(with = "duration")]
    pub unary_timeout: Duration,
    /// Mutual TLS: a PEM file of CA certificates; when set (and `tls.cert`/`tls.key` are), gRPC
    /// clients must present a certificate signed by one of them.
    pub client_ca: Option<String>,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            max_message_bytes: 4 << 20,
            max_header_list_bytes: 16 << 10,
            max_frame_bytes: 16 << 10,
            max_concurrent_streams: 1000,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            max_connection_age: Duration::from_secs(30 * 60),
            max_connection_age_grace: Duration::from_secs(5 * 60),
            unary_timeout: Duration::from_secs(30),
            client_ca: None,
        }
    }
}

/// `[storage]`: where data lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `sqlite://data/sdsim.db` (relative to the working directory), `sqlite:///abs.db` or `postgres://...`.
    pub url: String,
    /// Apply pending migrations when the server starts (otherwise `sdsim migrate` does).
    pub migrate_on_start: bool,
    /// Time to establish a database connection.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// SQLite reader threads.
    pub sqlite_readers: usize,
    /// PostgreSQL: longest a statement may run before the server cancels it (the request then
    /// fails with 503 naming this key). `"0s"` turns the bound off.
    #[serde(with = "duration")]
    pub statement_timeout: Duration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            url: "sqlite://data/sdsim.db".into(),
            migrate_on_start: true,
            connect_timeout: Duration::from_secs(5),
            sqlite_readers: 2,
            statement_timeout: Duration::from_secs(10),
        }
    }
}

/// `[redis]`: unset by default (single instance, in-process bus).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db`.
    pub url: Option<String>,
}

impl Config {
    /// Every problem of this configuration, each naming its key and the bad value.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut problems = Vec::new();
        let mut bad = |key: &str, value: String, why: &str| {
            problems.push(ConfigError::Invalid {
                key: key.to_string(),
                value,
                reason: why.to_string(),
            })
        };
        if self.roles.is_empty() {
            bad("roles", "[]".into(), "at least one role is needed");
        }
        for role in &self.roles {
            if !ROLES.contains(&role.as_str()) {
                bad(
                    "roles",
                    role.clone(),
                    "unknown role (gateway, auth, project, simulation)",
                );
            }
        }
        let listeners = [
            ("gateway.listen", &self.gateway.listen),
            ("auth.grpc_listen", &self.auth.grpc_listen),
            ("auth.http_listen", &self.auth.http_listen),
            ("project.grpc_listen", &self.project.grpc_listen),
            ("project.http_listen", &self.project.http_listen),
            ("simulation.grpc_listen", &self.simulation.grpc_listen),
            ("simulation.http_listen", &self.simulation.http_listen),
        ];
        for (key, addr) in listeners {
            if addr.parse::<SocketAddr>().is_err() {
                bad(key, addr.clone(), "not an IP:port address");
            }
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
            for (role, key, addr) in remote {
                if !self.has_role(role) && addr.parse::<SocketAddr>().is_err() {
                    bad(key, addr.clone(), "not an IP:port address");
                }
            }
            if self.gateway.service_token.len() < 16 {
                bad(
                    "gateway.service_token",
                    format!("({} characters)", self.gateway.service_token.len()),
                    "at least 16 characters",
                );
            }
        }
        if self.gateway.service_timeout.is_zero() {
            bad(
                "gateway.service_timeout",
                "0s".into(),
                "must be greater than zero",
            );
        }
        if self.runtime.shards > 1024 {
            bad(
                "runtime.shards",
                self.runtime.shards.to_string(),
                "at most 1024 shards",
            );
        }
        if !self.runtime.cpus.is_empty() && self.runtime.shards > self.runtime.cpus.len() {
            bad(
                "runtime.shards",
                self.runtime.shards.to_string(),
                "more shards than CPUs listed in runtime.cpus",
            );
        }
        if self.runtime.blocking_queue == 0 {
            bad("runtime.blocking_queue", "0".into(), "must be at least 1");
        }
        if self.runtime.blocking_threads > 1024 {
            bad(
                "runtime.blocking_threads",
                self.runtime.blocking_threads.to_string(),
                "at most 1024 threads",
            );
        }
        if self.runtime.mesh_ring_capacity < 2 || self.runtime.mesh_ring_capacity > 1 << 20 {
            bad(
                "runtime.mesh_ring_capacity",
                self.runtime.mesh_ring_capacity.to_string(),
                "must be between 2 and 1048576",
            );
        }
        let positive = [
            ("runtime.stall_threshold", self.runtime.stall_threshold),
            ("server.shutdown_timeout", self.server.shutdown_timeout),
            ("http.read_timeout", self.http.read_timeout),
            ("http.write_timeout", self.http.write_timeout),
            ("http.idle_timeout", self.http.idle_timeout),
            ("http.handler_timeout", self.http.handler_timeout),
        ];
        for (key, d) in positive {
            if d.is_zero() {
                bad(key, format_duration(d), "must be greater than zero");
            }
        }
        let auth = &self.auth;
        let auth_times = [
            ("auth.access_ttl", auth.access_ttl),
            ("auth.refresh_ttl", auth.refresh_ttl),
            ("auth.key_rotation", auth.key_rotation),
            ("auth.key_reload", auth.key_reload),
            ("auth.revocation_sync", auth.revocation_sync),
            ("shedding.target", self.shedding.target),
            ("shedding.interval", self.shedding.interval),
            ("shedding.probe", self.shedding.probe),
            ("shedding.retry_after", self.shedding.retry_after),
            ("auth.lockout_window", auth.lockout_window),
            ("auth.lockout_duration", auth.lockout_duration),
            ("auth.verify_email_ttl", auth.verify_email_ttl),
            ("auth.reset_ttl", auth.reset_ttl),
            ("storage.connect_timeout", self.storage.connect_timeout),
        ];
        for (key, d) in auth_times {
            if d.is_zero() {
                bad(key, format_duration(d), "must be greater than zero");
            }
        }
        if auth.min_password_score > 4 {
            bad(
                "auth.min_password_score",
                auth.min_password_score.to_string(),
                "zxcvbn scores run from 0 to 4",
            );
        }
        if auth.lockout_threshold == 0 {
            bad("auth.lockout_threshold", "0".into(), "must be at least 1");
        }
        if auth.hash_queue == 0 {
            bad("auth.hash_queue", "0".into(), "must be at least 1");
        }
        if auth.mail_sender != "log" && !auth.mail_sender.starts_with("file:") {
            bad(
                "auth.mail_sender",
                auth.mail_sender.clone(),
                "\"log\" or \"file:PATH\"",
            );
        }
        if auth.issuer.is_empty() {
            bad("auth.issuer", String::new(), "must not be empty");
        }
        let ws = &self.websocket;
        let ws_sizes = [
            ("websocket.max_frame_bytes", ws.max_frame_bytes, 125),
            ("websocket.max_message_bytes", ws.max_message_bytes, 125),
            ("websocket.max_outbound_bytes", ws.max_outbound_bytes, 4096),
            ("websocket.max_connections", ws.max_connections, 1),
            ("websocket.max_subscriptions", ws.max_subscriptions, 1),
            ("bus.history_size", self.bus.history_size, 0),
            (
                "bus.max_channels_per_shard",
                self.bus.max_channels_per_shard,
                1,
            ),
            ("bus.max_forward_queue", self.bus.max_forward_queue, 16),
        ];
        for (key, value, min) in ws_sizes {
            if value < min {
                bad(key, value.to_string(), &format!("must be at least {min}"));
            }
        }
        let sim = &self.simulation;
        for (key, value) in [
            ("simulation.max_queued", sim.max_queued),
            ("simulation.runs_per_shard", sim.runs_per_shard),
            ("simulation.max_runs_per_user", sim.max_runs_per_user),
        ] {
            if value == 0 {
                bad(key, "0".into(), "must be at least 1");
            }
        }
        if !(sim.default_speed >= 0.0 && sim.default_speed.is_finite()) {
            bad(
                "simulation.default_speed",
                sim.default_speed.to_string(),
                "simulated seconds per second, 0 or more",
            );
        }
        if !(sim.max_duration_s > 0.0 && sim.max_duration_s.is_finite()) {
            bad(
                "simulation.max_duration_s",
                sim.max_duration_s.to_string(),
                "must be greater than zero",
            );
        }
        if sim.max_design_bytes < 1024 {
            bad(
                "simulation.max_design_bytes",
                sim.max_design_bytes.to_string(),
                "must be at least 1024",
            );
        }
        for (key, d) in [
            ("simulation.metrics_interval", sim.metrics_interval),
            ("simulation.slice", sim.slice),
            ("simulation.stop_timeout", sim.stop_timeout),
        ] {
            if d.is_zero() {
                bad(key, format_duration(d), "must be greater than zero");
            }
        }
        let grpc = &self.grpc;
        if grpc.max_message_bytes < 1024 {
            bad(
                "grpc.max_message_bytes",
                grpc.max_message_bytes.to_string(),
                "must be at least 1024",
            );
        }
        if grpc.max_header_list_bytes < 1024 {
            bad(
                "grpc.max_header_list_bytes",
                grpc.max_header_list_bytes.to_string(),
                "must be at least 1024",
            );
        }
        if !(16_384..=16_777_215).contains(&grpc.max_frame_bytes) {
            bad(
                "grpc.max_frame_bytes",
                grpc.max_frame_bytes.to_string(),
                "must be between 16384 and 16777215 (RFC 9113)",
            );
        }
        if grpc.max_concurrent_streams == 0 {
            bad(
                "grpc.max_concurrent_streams",
                "0".into(),
                "must be at least 1",
            );
        }
        for (key, d) in [
            ("grpc.keepalive_interval", grpc.keepalive_interval),
            ("grpc.keepalive_timeout", grpc.keepalive_timeout),
            ("grpc.max_connection_age", grpc.max_connection_age),
            ("grpc.unary_timeout", grpc.unary_timeout),
        ] {
            if d.is_zero() {
                bad(key, format_duration(d), "must be greater than zero");
            }
        }
        if grpc.client_ca.is_some() && (self.tls.cert.is_none() || self.tls.key.is_none()) {
            bad(
                "grpc.client_ca",
                grpc.client_ca.clone().unwrap_or_default(),
                "mutual TLS needs tls.cert and tls.key",
            );
        }
        let ws_times = [
            ("websocket.ping_interval", ws.ping_interval),
            ("websocket.idle_timeout", ws.idle_timeout),
            ("websocket.auth_timeout", ws.auth_timeout),
            ("websocket.close_timeout", ws.close_timeout),
        ];
        for (key, d) in ws_times {
            if d.is_zero() {
                bad(key, format_duration(d), "must be greater than zero");
            }
        }
        if ws.idle_timeout <= ws.ping_interval {
            bad(
                "websocket.idle_timeout",
                format_duration(ws.idle_timeout),
                "must be longer than websocket.ping_interval (pongs keep a client alive)",
            );
        }
        for (i, t) in self.auth.tokens.iter().enumerate() {
            if t.token.len() < 16 {
                bad(
                    &format!("auth.tokens[{i}].token"),
                    "<hidden>".into(),
                    "must be at least 16 characters",
                );
            }
            if t.user.is_empty() {
                bad(
                    &format!("auth.tokens[{i}].user"),
                    String::new(),
                    "must not be empty",
                );
            }
        }
        if let Some(url) = &self.redis.url {
            if !url.starts_with("redis://") {
                bad("redis.url", url.clone(), "must start with redis://");
            }
        }
        if self.server.max_connections == 0 {
            bad("server.max_connections", "0".into(), "must be at least 1");
        }
        let sizes = [
            ("http.max_head_bytes", self.http.max_head_bytes, 1024),
            ("http.max_uri_bytes", self.http.max_uri_bytes, 64),
            ("http.max_headers", self.http.max_headers, 8),
        ];
        for (key, value, min) in sizes {
            if value < min {
                bad(key, value.to_string(), &format!("must be at least {min}"));
            }
        }
        let rl = &self.ratelimit;
        if !(rl.rate_per_s.is_finite() && rl.rate_per_s > 0.0) {
            bad(
                "ratelimit.rate_per_s",
                rl.rate_per_s.to_string(),
                "must be a positive number",
            );
        }
        if rl.burst == 0 {
            bad("ratelimit.burst", "0".into(), "must be at least 1");
        }
        for (i, tier) in rl.tiers.iter().enumerate() {
            if tier.window.is_zero() || tier.limit == 0 {
                bad(
                    &format!("ratelimit.tiers[{i}]"),
                    format!("{}/{}", tier.limit, format_duration(tier.window)),
                    "window and limit must be greater than zero",
                );
            }
        }
        for (i, route) in rl.routes.iter().enumerate() {
            if !route.route.starts_with('/') {
                bad(
                    &format!("ratelimit.routes[{i}].route"),
                    route.route.clone(),
                    "must start with /",
                );
            }
            if !(route.rate_per_s.is_finite() && route.rate_per_s > 0.0) || route.burst == 0 {
                bad(
                    &format!("ratelimit.routes[{i}]"),
                    format!("{}/s burst {}", route.rate_per_s, route.burst),
                    "rate_per_s and burst must be positive",
                );
            }
        }
        if rl.max_clients == 0 {
            bad("ratelimit.max_clients", "0".into(), "must be at least 1");
        }
        if !(1..=9).contains(&self.compression.gzip_level) {
            bad(
                "compression.gzip_level",
                self.compression.gzip_level.to_string(),
                "must be 1 to 9",
            );
        }
        if self.compression.brotli_quality > 11 {
            bad(
                "compression.brotli_quality",
                self.compression.brotli_quality.to_string(),
                "must be 0 to 11",
            );
        }
        if self.cors.allow_credentials && self.cors.allowed_origins.iter().any(|o| o == "*") {
            bad(
                "cors.allow_credentials",
                "true".into(),
                "cannot be combined with origin \"*\"",
            );
        }
        if !["text", "json"].contains(&self.log.format.as_str()) {
            bad(
                "log.format",
                self.log.format.clone(),
                "must be \"text\" or \"json\"",
            );
        }
        match (&self.tls.cert, &self.tls.key) {
            (Some(_), None) => bad(
                "tls.key",
                "(unset)".into(),
                "tls.cert is set, so tls.key is needed",
            ),
            (None, Some(_)) => bad(
                "tls.cert",
                "(unset)".into(),
                "tls.key is set, so tls.cert is needed",
            ),
            _ => {}
        }
        let url = &self.storage.url;
        if !(url.starts_with("sqlite://")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            bad(
                "storage.url",
                url.clone(),
                "must start with sqlite:// or postgres://",
            );
        }
        if let Some(redis) = &self.redis.url {
            if !(redis.starts_with("redis://") || redis.starts_with("rediss://")) {
                bad(
                    "redis.url",
                    redis.clone(),
                    "must start with redis:// or rediss://",
                );
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// Whether this process runs `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}
