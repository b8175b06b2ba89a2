//! sdsim-gateway: the gateway role — health, metrics and monitoring routes, real time over
//! WebSocket and the bus, and the Redis bridge between instances. The `sdsim` binary composes
//! it with the other roles and owns the listeners.
//!
//! Layout:
//! - [`config`]: the role's sections, `[gateway]`, `[websocket]`, `[redis]`.
//! - [`state`]: [`GatewayState`], what every shard of the role shares.
//! - [`health`]: `/health`, `/health/ready`, `/health/database`, `/health/redis`,
//!   `/health/services`.
//! - [`observe`]: `/metrics` (Prometheus text, per-shard metrics merged at scrape time) and
//!   `/api/monitoring/performance` (p50/p95/p99 per route).
//! - [`realtime`]: WebSocket `/ws`, `POST /api/publish`, the bus glue, connection limits.
//! - [`redis_bridge`]: bus events between instances over Redis pub/sub.
//! - [`openapi`]: `/openapi.json`, the OpenAPI description of the whole HTTP API.
//! - [`console`]: the browser console at `/` and its embedded assets.
#![warn(missing_docs, unreachable_pub)]

pub mod alerts;
pub mod config;
pub mod console;
pub mod health;
pub mod observe;
pub mod openapi;
pub mod realtime;
pub mod redis_bridge;
pub mod state;

pub use state::GatewayState;

use sdsim_core::metrics::Metrics;
use sdsim_core::runtime::Shard;
use sdsim_net::http::router::Router;
use std::rc::Rc;
use std::sync::Arc;

/// The gateway's routes on the public listener: health, metrics, monitoring, real time, the
/// API's description, the console.
pub fn register(router: &mut Router, state: &Arc<GatewayState>) {
    console::register(router);
    health::register(router, state);
    observe::register(router, state);
    alerts::register(router, state);
    realtime::register(router, state);
    openapi::register(router);
}

/// Installs the gateway on one shard: the bus and real-time state, and the task that hands
/// events from other instances (Redis) to this shard's bus.
pub fn install_shard(
    shard: &Shard,
    state: &Arc<GatewayState>,
    metrics: Rc<Metrics>,
) -> Rc<realtime::Realtime> {
    let rt = realtime::install(shard, state, metrics);
    if shard.id().index() == 0 && state.config.alerts.enabled {
        shard.spawn("alerts", alerts::run(Arc::clone(state)));
    }
    let inbound = state
        .redis
        .as_ref()
        .and_then(|b| b.take_inbound(shard.id().index()));
    if let Some(mut inbound) = inbound {
        let bus = Rc::clone(&rt.bus);
        shard.spawn("redis-inbound", async move {
            while let Some((channel, data)) = inbound.recv().await {
                if let Err(e) = bus.publish_remote(&channel, data).await {
                    tracing::debug!(%channel, error = %e, "event from another instance dropped");
                }
            }
        });
    }
    rt
}
