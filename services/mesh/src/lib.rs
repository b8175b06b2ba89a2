//! The service mesh of a multi-process deployment: which instances of each service exist, and
//! how a shard reaches them.
//!
//! - [`directory`]: [`Directory`], the process-wide list of the instances of every
//!   [`Service`], fed by static addresses or by the Redis registry and read by every shard
//!   without a lock on the call path; [`Instance`], one registry entry.
//! - [`registry`]: [`Registry`], this process's registrations in Redis (heartbeats,
//!   `draining`, deletion) and the watch that fills the directory from the registry;
//!   [`RegistryConfig`], its `[registry]` section.
#![warn(missing_docs, unreachable_pub)]

pub mod directory;
pub mod registry;
pub mod registry_config;

pub use directory::{
    registry_key, Directory, EntryError, Instance, InstanceStatus, Service, Source,
};
pub use registry::{Load, Registry, RegistryError, RegistryOptions, RegistryStats};
pub use registry_config::RegistryConfig;
