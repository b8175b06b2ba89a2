//! sdsim-server: the `sdsim` binary's library — the composition of roles into a running
//! server. Every other crate is a part; this one decides which parts run and wires them.
//!
//! Layout:
//! - [`role`]: the [`role::Role`] trait, what a role serves on each shard, the parts roles
//!   share.
//! - [`roles`]: [`roles::ROLES`], the role list, and one module per role (gateway, auth,
//!   project, simulation).
//! - [`config`]: [`config::Config`], the sections every crate owns composed under their keys,
//!   loaded and validated.
//! - [`server`]: [`Server::start`] turns a validated configuration into running shards.
//! - [`error`]: [`StartError`], why a server could not start.
//! - `composition`: what every shard of a server shares.
//! - `shard`: one shard, top-down — install the roles, build the routers, serve the listeners.
//! - `listen`: HTTP connection settings and the gRPC accept loop.
//! - `registration`: this process in the Redis service registry (when `redis.url` is set).
#![warn(missing_docs, unreachable_pub)]

mod composition;
pub mod config;
pub mod error;
mod listen;
mod registration;
pub mod role;
pub mod roles;
pub mod server;
mod shard;

pub use error::StartError;
pub use server::Server;
