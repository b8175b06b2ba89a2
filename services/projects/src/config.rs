//! `[project]` and `[simulation]`: the project and simulation roles' sections, their
//! defaults and validation.

use sdsim_core::config::{duration, Problems};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `[project]`: the project role's gRPC and HTTP listeners.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    /// gRPC listener address.
    pub grpc_listen: String,
    /// HTTP listener address.
    pub http_listen: String,
}

impl Default for ProjectConfig {
    fn default() -> Self {
        ProjectConfig {
            grpc_listen: "0.0.0.0:10000".into(),
            http_listen: "0.0.0.0:10001".into(),
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
    /// Runs one user may have queued or running at once, a running sweep counting as one and
    /// its points not at all (over → 429).
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
    /// How often a running simulation re-reads its own row: a stop or a failure recorded by
    /// another instance (a stop that reached a different simulation instance, or survivors
    /// failing the runs of an instance whose registration expired) ends it within this time.
    #[serde(with = "duration")]
    pub status_check: Duration,
    /// Points a sweep may have at most (a request may ask for fewer, never more).
    pub sweep_max_points: usize,
    /// Points of one sweep running at once; 0 = one per shard of the instance driving it.
    pub sweep_concurrency: usize,
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
            status_check: Duration::from_secs(1),
            sweep_max_points: 256,
            sweep_concurrency: 0,
        }
    }
}

impl ProjectConfig {
    /// Reports the problems of `[project]` to `problems`.
    pub fn validate(&self, problems: &mut Problems) {
        problems.address("project.grpc_listen", &self.grpc_listen);
        problems.address("project.http_listen", &self.http_listen);
    }
}

impl SimulationConfig {
    /// Reports the problems of `[simulation]` to `problems`.
    pub fn validate(&self, problems: &mut Problems) {
        problems.address("simulation.grpc_listen", &self.grpc_listen);
        problems.address("simulation.http_listen", &self.http_listen);
        problems.at_least("simulation.max_queued", self.max_queued, 1);
        problems.at_least("simulation.runs_per_shard", self.runs_per_shard, 1);
        problems.at_least("simulation.max_runs_per_user", self.max_runs_per_user, 1);
        if !(self.default_speed >= 0.0 && self.default_speed.is_finite()) {
            problems.bad(
                "simulation.default_speed",
                self.default_speed.to_string(),
                "simulated seconds per second, 0 or more",
            );
        }
        if !(self.max_duration_s > 0.0 && self.max_duration_s.is_finite()) {
            problems.bad(
                "simulation.max_duration_s",
                self.max_duration_s.to_string(),
                "must be greater than zero",
            );
        }
        problems.at_least("simulation.max_design_bytes", self.max_design_bytes, 1024);
        problems.at_least("simulation.sweep_max_points", self.sweep_max_points, 1);
        for (key, d) in [
            ("simulation.metrics_interval", self.metrics_interval),
            ("simulation.slice", self.slice),
            ("simulation.stop_timeout", self.stop_timeout),
            ("simulation.status_check", self.status_check),
        ] {
            problems.positive(key, d);
        }
    }
}
