//! `[gateway]`, `[websocket]`, `[redis]`: the gateway role's sections, their defaults and
//! validation.

use sdsim_core::config::{duration, Problems};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `[gateway]`: the public HTTP/WebSocket listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address the gateway listens on (one SO_REUSEPORT socket per shard).
    pub listen: String,
    /// Where the project service's gRPC listeners are, when this process does not run the
    /// `project` role: one address, a comma-separated list or an array; calls are balanced
    /// over them (the Redis registry, when on, replaces the list).
    pub project_service: AddressList,
    /// Where the simulation service's gRPC listeners are, when this process does not run the
    /// `simulation` role (one, a comma-separated list or an array).
    pub simulation_service: AddressList,
    /// Where the auth service's gRPC listeners are, when this process does not run the `auth`
    /// role (one, a comma-separated list or an array): with `service_token` set,
    /// `/api/auth/*` is served through it and access tokens are verified here with the keys
    /// fetched from it. Empty: neither.
    pub auth_service: AddressList,
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
            project_service: AddressList::one("127.0.0.1:10000"),
            simulation_service: AddressList::one("127.0.0.1:11000"),
            auth_service: AddressList::default(),
            service_token: String::new(),
            service_timeout: Duration::from_secs(15),
        }
    }
}

/// Addresses of a service's instances: written as one `IP:port`, a comma-separated list of
/// them, or a TOML array; kept in order, blanks dropped.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AddressList(pub Vec<String>);

impl AddressList {
    /// A list of one address.
    pub fn one(addr: &str) -> AddressList {
        AddressList(vec![addr.to_string()])
    }

    /// The list in `text` (comma-separated).
    pub fn parse(text: &str) -> AddressList {
        AddressList(
            text.split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(String::from)
                .collect(),
        )
    }

    /// Whether it names no address.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Its addresses, parsed; the error names the first that is not `IP:port`.
    pub fn socket_addrs(&self) -> Result<Vec<std::net::SocketAddr>, String> {
        self.0
            .iter()
            .map(|a| a.parse().map_err(|_| a.clone()))
            .collect()
    }
}

impl std::fmt::Display for AddressList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

impl Serialize for AddressList {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AddressList {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Text(String),
            List(Vec<String>),
        }
        Ok(match Form::deserialize(deserializer)? {
            Form::Text(text) => AddressList::parse(&text),
            Form::List(list) => AddressList::parse(&list.join(",")),
        })
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

/// `[redis]`: unset by default (single instance, in-process bus).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db`.
    pub url: Option<String>,
}

impl GatewayConfig {
    /// Reports the problems of `[gateway]` to `problems` (whether the services it reaches
    /// elsewhere have addresses depends on the roles, and is the composed configuration's
    /// check).
    pub fn validate(&self, problems: &mut Problems) {
        problems.address("gateway.listen", &self.listen);
        if !self.service_token.is_empty() && self.service_token.len() < 16 {
            problems.bad(
                "gateway.service_token",
                format!("({} characters)", self.service_token.len()),
                "at least 16 characters",
            );
        }
        problems.positive("gateway.service_timeout", self.service_timeout);
        for (key, list) in [
            ("gateway.project_service", &self.project_service),
            ("gateway.simulation_service", &self.simulation_service),
            ("gateway.auth_service", &self.auth_service),
        ] {
            if let Err(bad) = list.socket_addrs() {
                problems.bad(
                    key,
                    bad,
                    "not an IP:port address (a list is comma-separated)",
                );
            }
        }
    }
}

impl WebSocketConfig {
    /// Reports the problems of `[websocket]` to `problems`.
    pub fn validate(&self, problems: &mut Problems) {
        for (key, value, min) in [
            ("websocket.max_frame_bytes", self.max_frame_bytes, 125),
            ("websocket.max_message_bytes", self.max_message_bytes, 125),
            (
                "websocket.max_outbound_bytes",
                self.max_outbound_bytes,
                4096,
            ),
            ("websocket.max_connections", self.max_connections, 1),
            ("websocket.max_subscriptions", self.max_subscriptions, 1),
        ] {
            problems.at_least(key, value, min);
        }
        for (key, d) in [
            ("websocket.ping_interval", self.ping_interval),
            ("websocket.idle_timeout", self.idle_timeout),
            ("websocket.auth_timeout", self.auth_timeout),
            ("websocket.close_timeout", self.close_timeout),
        ] {
            problems.positive(key, d);
        }
        if self.idle_timeout <= self.ping_interval {
            problems.bad(
                "websocket.idle_timeout",
                sdsim_core::config::format_duration(self.idle_timeout),
                "must be longer than websocket.ping_interval (pongs keep a client alive)",
            );
        }
    }
}

impl RedisConfig {
    /// Reports the problems of `[redis]` to `problems`.
    pub fn validate(&self, problems: &mut Problems) {
        let Some(url) = &self.url else {
            return;
        };
        // The client is built without TLS: a `rediss://` URL would pass here and then fail at
        // every connection attempt, so it is refused with the reason.
        if url.starts_with("rediss://") {
            problems.bad_url(
                "redis.url",
                url,
                "TLS (rediss://) is not supported by this build; use redis:// on a trusted network",
            );
        } else if !url.starts_with("redis://") {
            problems.bad_url("redis.url", url, "must start with redis://");
        } else if redis::Client::open(url.as_str()).is_err() {
            problems.bad_url(
                "redis.url",
                url,
                "not a Redis URL: redis://[[user]:password@]host[:port][/db]",
            );
        }
    }
}
