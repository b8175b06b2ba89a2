//! The service mesh of a multi-process deployment: which instances of each service exist, and
//! how a shard reaches them.
//!
//! - [`directory`]: [`Directory`], the process-wide list of the instances of every
//!   [`Service`], fed by static addresses or by the Redis registry and read by every shard
//!   without a lock on the call path; [`Instance`], one registry entry.
//! - [`config`]: [`MeshConfig`], the `[mesh]` section (pool sizes, thresholds, breakers,
//!   retries).
//! - [`sizing`]: the pure decision whether a pool grows or shrinks ([`sizing::decide`]).
//! - [`breaker`]: [`Breaker`], one instance's circuit breaker over an injected clock.
//! - [`budget`]: [`RetryBudget`], the token bucket that bounds retries.
//! - [`balance`]: power of two choices ([`balance::pick`]) and the latency average.
//! - [`cap`]: [`cap::OpenConnections`], the process-wide count `mesh.max_connections` caps.
//! - `pool`: one shard's connections to one instance, resized in the background.
//! - [`target`]: [`Target`], one service as one shard calls it: pools, balancing, breakers,
//!   retries. `sdsim_contract::Remote` is a thin wrapper over it.
//! - [`registry`]: [`Registry`], this process's registrations in Redis (heartbeats,
//!   `draining`, deletion) and the watch that fills the directory from the registry;
//!   [`RegistryConfig`], its `[registry]` section.
#![warn(missing_docs, unreachable_pub)]

pub mod balance;
pub mod breaker;
pub mod budget;
pub mod cap;
pub mod config;
pub mod directory;
mod pool;
pub mod registry;
pub mod registry_config;
pub mod sizing;
pub mod target;

pub use breaker::{Admission, Breaker, BreakerPolicy, BreakerState};
pub use budget::RetryBudget;
pub use config::MeshConfig;
pub use directory::{
    registry_key, Directory, EntryError, Instance, InstanceStatus, Service, Source,
};
pub use registry::{Load, Registry, RegistryError, RegistryOptions, RegistryStats};
pub use registry_config::RegistryConfig;
pub use target::{is_idempotent_read, Target};
