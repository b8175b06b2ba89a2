//! sdsim-gateway: the gateway role — the public HTTP listener on every shard, its routes for
//! health, metrics and monitoring, and the assembly of a running server.
//!
//! Layout:
//! - [`server`]: [`server::Server::start`] turns a [`sdsim_core::config::Config`] into running
//!   shards, each with its own listener, router and middleware stack.
//! - [`health`]: `/health`, `/health/ready`, `/health/database`, `/health/redis`,
//!   `/health/services`.
//! - [`observe`]: `/metrics` (Prometheus text, per-shard metrics merged at scrape time) and
//!   `/api/monitoring/performance` (p50/p95/p99 per route).
//! - [`realtime`]: WebSocket `/ws`, `POST /api/publish`, the bus glue, connection limits.
//! - [`redis_bridge`]: bus events between instances over Redis pub/sub.
#![warn(missing_docs, unreachable_pub)]

pub mod health;
pub mod observe;
pub mod realtime;
pub mod redis_bridge;
pub mod server;

pub use server::{Globals, Server};
