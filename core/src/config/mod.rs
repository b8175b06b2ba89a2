//! Configuration: documented serde structs with defaults, loading with overrides, validation.
//!
//! Sources, later ones winning: built-in defaults → the TOML file (`--config`) →
//! `SDSIM__SECTION__KEY` environment variables → `--set section.key=value` flags. Unknown keys
//! are errors, and validation names the key and the bad value of every problem.
//! `config/default.toml` in the repository lists every key with a comment.
//!
//! Each crate owns the sections it reads (their types, defaults, docs and `validate`); this
//! module has the sections of the runtime and the transport (`runtime`, `server`, `http`,
//! `log`, `tls`, `bus`, `instance`, and in [`transport`] `ratelimit`, `shedding`,
//! `compression`, `cors`, `grpc`), the loader ([`load`], [`Overrides`]) and [`Problems`],
//! which every `validate` reports to. The `sdsim` binary composes the sections into the
//! configuration of a process.

pub mod duration;
mod load;
mod problems;
pub mod transport;

pub use duration::{format as format_duration, parse as parse_duration, DurationError};
pub use load::{from_toml, load, load_text, ConfigError, Overrides};
pub use problems::{redacted_url, Problems};
pub use transport::{
    CompressionConfig, CorsConfig, GrpcConfig, RateLimitConfig, RouteLimit, SheddingConfig,
    WindowTier,
};

use serde::{Deserialize, Serialize};
use std::time::Duration;

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
    /// Bytes of access-log lines each shard holds for the log writer thread; while the writer
    /// is behind and a shard's buffer is full, new lines are dropped and counted
    /// (`sdsim_access_log_dropped_total`).
    pub access_buffer_bytes: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            access: true,
            format: "text".into(),
            access_buffer_bytes: 4 << 20,
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

impl RuntimeConfig {
    /// Reports the problems of `[runtime]` to `problems`.
    pub fn validate(&self, problems: &mut Problems) {
        if self.shards > 1024 {
            problems.bad(
                "runtime.shards",
                self.shards.to_string(),
                "at most 1024 shards",
            );
        }
        if !self.cpus.is_empty() && self.shards > self.cpus.len() {
            problems.bad(
                "runtime.shards",
                self.shards.to_string(),
                "more shards than CPUs listed in runtime.cpus",
            );
        }
        problems.at_least("runtime.blocking_queue", self.blocking_queue, 1);
        if self.blocking_threads > 1024 {
            problems.bad(
                "runtime.blocking_threads",
                self.blocking_threads.to_string(),
                "at most 1024 threads",
            );
        }
        if self.mesh_ring_capacity < 2 || self.mesh_ring_capacity > 1 << 20 {
            problems.bad(
                "runtime.mesh_ring_capacity",
                self.mesh_ring_capacity.to_string(),
                "must be between 2 and 1048576",
            );
        }
        problems.positive("runtime.stall_threshold", self.stall_threshold);
    }
}

impl ServerConfig {
    /// Reports the problems of `[server]` to `problems`.
    pub fn validate(&self, problems: &mut Problems) {
        problems.positive("server.shutdown_timeout", self.shutdown_timeout);
        problems.at_least("server.max_connections", self.max_connections, 1);
    }
}

impl HttpConfig {
    /// Reports the problems of `[http]` to `problems`.
    pub fn validate(&self, problems: &mut Problems) {
        for (key, d) in [
            ("http.read_timeout", self.read_timeout),
            ("http.write_timeout", self.write_timeout),
            ("http.idle_timeout", self.idle_timeout),
            ("http.handler_timeout", self.handler_timeout),
        ] {
            problems.positive(key, d);
        }
        problems.at_least("http.max_head_bytes", self.max_head_bytes, 1024);
        problems.at_least("http.max_uri_bytes", self.max_uri_bytes, 64);
        problems.at_least("http.max_headers", self.max_headers, 8);
    }
}

impl BusConfig {
    /// Reports the problems of `[bus]` to `problems`.
    pub fn validate(&self, problems: &mut Problems) {
        problems.at_least("bus.max_channels_per_shard", self.max_channels_per_shard, 1);
        problems.at_least("bus.max_forward_queue", self.max_forward_queue, 16);
    }
}

impl LogConfig {
    /// Reports the problems of `[log]` to `problems`.
    pub fn validate(&self, problems: &mut Problems) {
        if !["text", "json"].contains(&self.format.as_str()) {
            problems.bad(
                "log.format",
                self.format.clone(),
                "must be \"text\" or \"json\"",
            );
        }
        problems.at_least("log.access_buffer_bytes", self.access_buffer_bytes, 4096);
    }
}

impl TlsConfig {
    /// Reports the problems of `[tls]` to `problems`.
    pub fn validate(&self, problems: &mut Problems) {
        match (&self.cert, &self.key) {
            (Some(_), None) => problems.bad(
                "tls.key",
                "(unset)".into(),
                "tls.cert is set, so tls.key is needed",
            ),
            (None, Some(_)) => problems.bad(
                "tls.cert",
                "(unset)".into(),
                "tls.key is set, so tls.cert is needed",
            ),
            _ => {}
        }
    }

    /// Whether TLS is on (both `cert` and `key` are set).
    pub fn enabled(&self) -> bool {
        self.cert.is_some() && self.key.is_some()
    }
}
