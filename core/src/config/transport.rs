//! The transport's sections: rate limiting, load shedding, compression, CORS and gRPC, each
//! with its defaults and `validate`.

use super::{duration, Problems};
use serde::{Deserialize, Serialize};
use std::time::Duration;

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
    /// Path prefixes of low-priority work: while the shard limits admissions, these are
    /// admitted only from spare capacity, so they are refused before anything else.
    pub low: Vec<String>,
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
            low: Vec::new(),
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
    /// Server reflection (`grpc.reflection.v1` and `v1alpha`) on every gRPC listener, so
    /// grpcurl and Postman list the services and their messages without `.proto` files. It
    /// shows the API's shape, never data; turn it off to hide even that.
    pub reflection: bool,
    /// Mutual TLS: a PEM file of CA certificates; when set (and `tls.cert`/`tls.key` are), gRPC
    /// clients must present a certificate signed by one of them.
    pub client_ca: Option<String>,
    /// The internal client (a process calling another role's gRPC service) speaks TLS when set:
    /// a PEM file of the CAs that sign the other instances' certificates.
    pub client_tls_ca: Option<String>,
    /// The name the other instances' certificates must carry; unset: the IP address called
    /// (the certificates then name it as an IP subject alternative name).
    pub client_tls_name: Option<String>,
    /// Mutual TLS: the PEM certificate chain the internal client presents (with `client_key`).
    pub client_cert: Option<String>,
    /// Mutual TLS: the PEM private key of `client_cert`.
    pub client_key: Option<String>,
    /// The internal client pings each connection this often (HTTP/2 PING); "0s": never. A
    /// ping is also how a frozen instance (it accepts connections and calls but answers
    /// nothing) is found, so this bounds failover: keep it near a second.
    #[serde(with = "duration")]
    pub client_keepalive: Duration,
    /// A ping unanswered this long makes the mesh client stop sending the instance new calls
    /// (its breaker opens) while another instance of the service takes them; the connection
    /// stays until `client_keepalive_timeout`.
    #[serde(with = "duration")]
    pub client_ping_late: Duration,
    /// A ping unanswered this long drops the connection: its calls fail over and the next call
    /// reconnects.
    #[serde(with = "duration")]
    pub client_keepalive_timeout: Duration,
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
            reflection: true,
            client_ca: None,
            client_tls_ca: None,
            client_tls_name: None,
            client_cert: None,
            client_key: None,
            client_keepalive: Duration::from_secs(1),
            client_ping_late: Duration::from_millis(500),
            client_keepalive_timeout: Duration::from_secs(10),
        }
    }
}

impl RateLimitConfig {
    /// Reports the problems of `[ratelimit]` to `problems`.
    pub fn validate(&self, problems: &mut Problems) {
        if !(self.rate_per_s.is_finite() && self.rate_per_s > 0.0) {
            problems.bad(
                "ratelimit.rate_per_s",
                self.rate_per_s.to_string(),
                "must be a positive number",
            );
        }
        problems.at_least("ratelimit.burst", self.burst as usize, 1);
        for (i, tier) in self.tiers.iter().enumerate() {
            if tier.window.is_zero() || tier.limit == 0 {
                problems.bad(
                    &format!("ratelimit.tiers[{i}]"),
                    format!("{}/{}", tier.limit, super::format_duration(tier.window)),
                    "window and limit must be greater than zero",
                );
            }
        }
        for (i, route) in self.routes.iter().enumerate() {
            if !route.route.starts_with('/') {
                problems.bad(
                    &format!("ratelimit.routes[{i}].route"),
                    route.route.clone(),
                    "must start with /",
                );
            }
            if !(route.rate_per_s.is_finite() && route.rate_per_s > 0.0) || route.burst == 0 {
                problems.bad(
                    &format!("ratelimit.routes[{i}]"),
                    format!("{}/s burst {}", route.rate_per_s, route.burst),
                    "rate_per_s and burst must be positive",
                );
            }
        }
        problems.at_least("ratelimit.max_clients", self.max_clients, 1);
    }
}

impl SheddingConfig {
    /// Reports the problems of `[shedding]` to `problems`.
    pub fn validate(&self, problems: &mut Problems) {
        for (key, d) in [
            ("shedding.target", self.target),
            ("shedding.interval", self.interval),
            ("shedding.probe", self.probe),
            ("shedding.retry_after", self.retry_after),
        ] {
            problems.positive(key, d);
        }
    }
}

impl CompressionConfig {
    /// Reports the problems of `[compression]` to `problems`.
    pub fn validate(&self, problems: &mut Problems) {
        if !(1..=9).contains(&self.gzip_level) {
            problems.bad(
                "compression.gzip_level",
                self.gzip_level.to_string(),
                "must be 1 to 9",
            );
        }
        if self.brotli_quality > 11 {
            problems.bad(
                "compression.brotli_quality",
                self.brotli_quality.to_string(),
                "must be 0 to 11",
            );
        }
    }
}

impl CorsConfig {
    /// Reports the problems of `[cors]` to `problems`.
    pub fn validate(&self, problems: &mut Problems) {
        if self.allow_credentials && self.allowed_origins.iter().any(|o| o == "*") {
            problems.bad(
                "cors.allow_credentials",
                "true".into(),
                "cannot be combined with origin \"*\"",
            );
        }
    }
}

impl GrpcConfig {
    /// Reports the problems of `[grpc]` to `problems` (whether `client_ca` has the TLS it
    /// needs is the composed configuration's check).
    pub fn validate(&self, problems: &mut Problems) {
        problems.at_least("grpc.max_message_bytes", self.max_message_bytes, 1024);
        problems.at_least(
            "grpc.max_header_list_bytes",
            self.max_header_list_bytes as usize,
            1024,
        );
        if !(16_384..=16_777_215).contains(&self.max_frame_bytes) {
            problems.bad(
                "grpc.max_frame_bytes",
                self.max_frame_bytes.to_string(),
                "must be between 16384 and 16777215 (RFC 9113)",
            );
        }
        problems.at_least(
            "grpc.max_concurrent_streams",
            self.max_concurrent_streams as usize,
            1,
        );
        for (key, d) in [
            ("grpc.keepalive_interval", self.keepalive_interval),
            ("grpc.keepalive_timeout", self.keepalive_timeout),
            ("grpc.max_connection_age", self.max_connection_age),
            ("grpc.unary_timeout", self.unary_timeout),
            (
                "grpc.client_keepalive_timeout",
                self.client_keepalive_timeout,
            ),
            ("grpc.client_ping_late", self.client_ping_late),
        ] {
            problems.positive(key, d);
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            problems.bad(
                "grpc.client_cert",
                self.client_cert.clone().unwrap_or_default(),
                "set grpc.client_cert and grpc.client_key together (mutual TLS)",
            );
        }
        if self.client_cert.is_some() && self.client_tls_ca.is_none() {
            problems.bad(
                "grpc.client_cert",
                self.client_cert.clone().unwrap_or_default(),
                "mutual TLS needs grpc.client_tls_ca (the CAs of the other instances)",
            );
        }
    }
}
