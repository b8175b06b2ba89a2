//! `[mesh]`: how a process's shards keep connections to the instances of the services it
//! calls, balance over them, break circuits and retry. The defaults are seed 004's numbers.

use sdsim_core::config::{duration, format_duration, Problems};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `[mesh]`: pools, scaling, breakers and retries of the outbound gRPC client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MeshConfig {
    /// Connections the process keeps to each target instance at least (split over shards:
    /// each shard keeps `ceil(pool_min / shards)`, at least 1).
    pub pool_min: usize,
    /// Connections the process opens to one target instance at most (each shard at most
    /// `ceil(pool_max / shards)`).
    pub pool_max: usize,
    /// Concurrent calls one connection is meant to carry: utilisation is in-flight calls over
    /// `connections × streams_per_connection`.
    pub streams_per_connection: usize,
    /// A pool grows above this utilisation (0–1).
    pub scale_up_utilisation: f64,
    /// A pool grows when more calls than this wait for a connection.
    pub scale_up_queue: usize,
    /// A pool grows when its calls' mean latency is above this.
    #[serde(with = "duration")]
    pub scale_up_latency: Duration,
    /// A pool shrinks after its utilisation stayed below this (0–1) for `scale_down_after`.
    pub scale_down_utilisation: f64,
    /// How long utilisation must stay low before a pool gives a connection back.
    #[serde(with = "duration")]
    pub scale_down_after: Duration,
    /// Bound on opening one connection: TCP connect, TLS and the HTTP/2 handshake (seed 004:
    /// a new connection is ready in under 500 ms). A frozen instance's kernel still accepts
    /// connections, so the handshake is what times out, and the calls waiting for it are sent
    /// to another instance.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// Connections the whole process may hold to every instance of every service.
    pub max_connections: usize,
    /// Share of `max_connections` (0–1) from which services of lower priority give idle
    /// connections back to higher ones that are short.
    pub rebalance_from: f64,
    /// Consecutive failed calls that open an instance's breaker.
    pub breaker_failures: u32,
    /// Error rate (0–1) over `breaker_window` that opens an instance's breaker, once at
    /// least `breaker_min_calls` calls were made in the window.
    pub breaker_error_rate: f64,
    /// The window the error rate is measured over.
    #[serde(with = "duration")]
    pub breaker_window: Duration,
    /// Calls in a window before its error rate counts.
    pub breaker_min_calls: u32,
    /// How long an open breaker refuses calls before one probe is let through.
    #[serde(with = "duration")]
    pub breaker_cooldown: Duration,
    /// Retries allowed as a share of calls (0–1): each call earns this many retry tokens.
    pub retry_budget: f64,
    /// Retries allowed per second whatever the traffic, so a quiet process can still fail over.
    pub retry_min_per_second: f64,
    /// Attempts of one call at most, the first included.
    pub max_attempts: u32,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            pool_min: 5,
            pool_max: 20,
            streams_per_connection: 100,
            scale_up_utilisation: 0.8,
            scale_up_queue: 10,
            scale_up_latency: Duration::from_millis(50),
            scale_down_utilisation: 0.3,
            scale_down_after: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(1),
            max_connections: 1000,
            rebalance_from: 0.9,
            breaker_failures: 5,
            breaker_error_rate: 0.5,
            breaker_window: Duration::from_secs(10),
            breaker_min_calls: 20,
            breaker_cooldown: Duration::from_secs(5),
            retry_budget: 0.1,
            retry_min_per_second: 10.0,
            max_attempts: 3,
        }
    }
}

impl MeshConfig {
    /// Reports the problems of `[mesh]` to `problems`.
    pub fn validate(&self, problems: &mut Problems) {
        problems.at_least("mesh.pool_min", self.pool_min, 1);
        problems.at_least(
            "mesh.streams_per_connection",
            self.streams_per_connection,
            1,
        );
        problems.at_least("mesh.max_connections", self.max_connections, 1);
        problems.at_least("mesh.max_attempts", self.max_attempts as usize, 1);
        problems.at_least("mesh.breaker_failures", self.breaker_failures as usize, 1);
        if self.pool_max < self.pool_min {
            problems.bad(
                "mesh.pool_max",
                self.pool_max.to_string(),
                &format!("must be at least mesh.pool_min ({})", self.pool_min),
            );
        }
        for (key, value) in [
            ("mesh.scale_up_utilisation", self.scale_up_utilisation),
            ("mesh.scale_down_utilisation", self.scale_down_utilisation),
            ("mesh.rebalance_from", self.rebalance_from),
            ("mesh.breaker_error_rate", self.breaker_error_rate),
            ("mesh.retry_budget", self.retry_budget),
        ] {
            if !(0.0..=1.0).contains(&value) {
                problems.bad(key, value.to_string(), "must be between 0 and 1");
            }
        }
        if self.scale_down_utilisation >= self.scale_up_utilisation {
            problems.bad(
                "mesh.scale_down_utilisation",
                self.scale_down_utilisation.to_string(),
                "must be below mesh.scale_up_utilisation (else a pool would flap)",
            );
        }
        if !(self.retry_min_per_second >= 0.0 && self.retry_min_per_second.is_finite()) {
            problems.bad(
                "mesh.retry_min_per_second",
                self.retry_min_per_second.to_string(),
                "must be zero or more",
            );
        }
        for (key, d) in [
            ("mesh.scale_up_latency", self.scale_up_latency),
            ("mesh.scale_down_after", self.scale_down_after),
            ("mesh.connect_timeout", self.connect_timeout),
            ("mesh.breaker_window", self.breaker_window),
            ("mesh.breaker_cooldown", self.breaker_cooldown),
        ] {
            problems.positive(key, d);
        }
        if self.breaker_cooldown > Duration::from_secs(3600) {
            problems.bad(
                "mesh.breaker_cooldown",
                format_duration(self.breaker_cooldown),
                "at most 1h",
            );
        }
    }

    /// What one of `shards` shards keeps per target instance: `(min, max)` connections.
    pub fn per_shard(&self, shards: usize) -> (usize, usize) {
        let shards = shards.max(1);
        let min = self.pool_min.div_ceil(shards).max(1);
        let max = self.pool_max.div_ceil(shards).max(min);
        (min, max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_bad_values_name_their_key() {
        let mut ok = Problems::new();
        MeshConfig::default().validate(&mut ok);
        assert!(ok.into_result().is_ok());

        let bad = MeshConfig {
            pool_min: 8,
            pool_max: 4,
            retry_budget: 1.5,
            scale_down_utilisation: 0.9,
            breaker_cooldown: Duration::ZERO,
            ..MeshConfig::default()
        };
        let mut problems = Problems::new();
        bad.validate(&mut problems);
        let text: Vec<String> = problems
            .into_result()
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect();
        for key in [
            "mesh.pool_max",
            "mesh.retry_budget",
            "mesh.scale_down_utilisation",
            "mesh.breaker_cooldown",
        ] {
            assert!(text.iter().any(|t| t.contains(key)), "{key} in {text:?}");
        }
    }

    #[test]
    fn pools_are_split_over_shards_rounding_up() {
        let c = MeshConfig::default();
        assert_eq!(c.per_shard(1), (5, 20));
        assert_eq!(c.per_shard(2), (3, 10));
        assert_eq!(c.per_shard(3), (2, 7));
        assert_eq!(c.per_shard(64), (1, 1));
        assert_eq!(c.per_shard(0), (5, 20));
    }
}
