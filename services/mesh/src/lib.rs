//! The service mesh of a multi-process deployment: which instances of each service exist, and
//! how a shard reaches them.
//!
//! - [`directory`]: [`Directory`], the process-wide list of the instances of every
//!   [`Service`], fed by static addresses or by the Redis registry and read by every shard
//!   without a lock on the call path; [`Instance`], one registry entry.
#![warn(missing_docs, unreachable_pub)]

pub mod directory;

pub use directory::{
    registry_key, Directory, EntryError, Instance, InstanceStatus, Service, Source,
};
