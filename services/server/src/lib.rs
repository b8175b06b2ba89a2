//! sdsim-server: the `sdsim` binary's library — the composition of roles into a running
//! server. Every other crate is a part; this one decides which parts run and wires them.
//!
//! Layout:
//! - [`role`]: the [`role::Role`] trait, what a role serves on each shard, and
//!   [`role::ROLES`], the role list.
//! - [`roles`]: one module per role (gateway, auth, project, simulation).
//! - [`server`]: [`Server::start`] turns a validated configuration into running shards.
//! - `shard`: one shard, top-down — install the roles, build the routers, serve the listeners.
//! - `listen`: HTTP connection settings and the gRPC accept loop.
#![warn(missing_docs, unreachable_pub)]

mod listen;
pub mod role;
pub mod roles;
pub mod server;
mod shard;

pub use server::{Server, StartError};
