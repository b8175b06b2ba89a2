//! Health endpoints. Load balancers poll them, so the rate limiter exempts `/health*`.
//!
//! - `/health`: liveness — the shard answers.
//! - `/health/ready`: readiness — 503 once the server drains, when storage is down, or while a
//!   gateway without the auth service has no key to verify tokens with.
//! - `/health/database`, `/health/redis`, `/health/services`: one component each, saying what is
//!   true of this build and configuration (a component that is not configured says so).

use crate::state::{GatewayState, ServiceHealth};
use http::StatusCode;
use sdsim_core::config::redacted_url;
use sdsim_core::shutdown::Phase;
use sdsim_net::http::router::Router;
use sdsim_net::http::types::{json, Request, Response};
use serde::Serialize;
use std::sync::Arc;

/// Registers the health routes.
pub fn register(router: &mut Router, state: &Arc<GatewayState>) {
    let add = |router: &mut Router, path: &str, f: fn(&GatewayState) -> Response| {
        let g = Arc::clone(state);
        router
            .route(http::Method::GET, path, move |_req: Request| {
                std::future::ready(f(&g))
            })
            .expect("health routes do not conflict");
    };
    add(router, "/health", |_| {
        json(StatusCode::OK, &Status { status: "ok" })
    });
    let g = Arc::clone(state);
    router
        .route(http::Method::GET, "/health/ready", move |_req: Request| {
            let g = Arc::clone(&g);
            async move { ready(&g).await }
        })
        .expect("health routes do not conflict");
    let g = Arc::clone(state);
    router
        .route(
            http::Method::GET,
            "/health/database",
            move |_req: Request| {
                let g = Arc::clone(&g);
                async move { component_response(storage_check(&g).await) }
            },
        )
        .expect("health routes do not conflict");
    add(router, "/health/redis", |g| {
        component_response(redis_check(g))
    });
    add(router, "/health/services", services);
}

#[derive(Serialize)]
struct Status {
    status: &'static str,
}

/// The state of one component.
#[derive(Debug, Clone, Serialize)]
pub struct Component {
    /// `up`, `down`, `not_configured`.
    pub status: &'static str,
    /// What it is (`sqlite`, `postgres`, `redis`).
    pub kind: &'static str,
    /// A sentence for a person.
    pub detail: String,
}

impl Component {
    fn healthy(&self) -> bool {
        self.status != "down"
    }
}

fn component_response(c: Component) -> Response {
    let status = if c.healthy() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(status, &c)
}

/// Storage: a round trip to the database (`SELECT 1`), bounded by `storage.connect_timeout`.
pub async fn storage_check(g: &GatewayState) -> Component {
    let Some(store) = &g.store else {
        return Component {
            status: "not_configured",
            kind: "none",
            detail: "no role of this process uses storage".into(),
        };
    };
    let kind = store.kind();
    let began = std::time::Instant::now();
    let outcome = monoio::time::timeout(g.config.storage.connect_timeout, store.ping()).await;
    let took = began.elapsed();
    match outcome {
        Ok(Ok(())) => Component {
            status: "up",
            kind,
            detail: format!(
                "{}: answered in {:.2} ms",
                redacted_url(&g.config.storage.url),
                took.as_secs_f64() * 1e3
            ),
        },
        Ok(Err(e)) => Component {
            status: "down",
            kind,
            detail: format!("{}: {e}", redacted_url(&g.config.storage.url)),
        },
        Err(_) => Component {
            status: "down",
            kind,
            detail: format!(
                "{}: no answer within {:?}",
                redacted_url(&g.config.storage.url),
                g.config.storage.connect_timeout
            ),
        },
    }
}

/// Redis: unset by default (one instance, in-process bus).
pub fn redis_check(g: &GatewayState) -> Component {
    match &g.config.redis.url {
        None => Component {
            status: "not_configured",
            kind: "redis",
            detail: "redis.url is unset: events stay in this process (in-process bus)".into(),
        },
        Some(url) => {
            let stats = g.redis.as_ref().map(|b| &b.stats);
            let up = stats.is_some_and(|s| s.up.load(std::sync::atomic::Ordering::Relaxed));
            let count =
                |f: fn(&crate::redis_bridge::BridgeStats) -> u64| stats.map(|s| f(s)).unwrap_or(0);
            let detail = format!(
                "{}: bridge {}; published {}, received {}, dropped {}, connection failures {}",
                redacted_url(url),
                if up {
                    "connected"
                } else {
                    "reconnecting (this instance serves its own subscribers)"
                },
                count(|s| s.published.load(std::sync::atomic::Ordering::Relaxed)),
                count(|s| s.received.load(std::sync::atomic::Ordering::Relaxed)),
                count(|s| s.publish_dropped.load(std::sync::atomic::Ordering::Relaxed)),
                count(|s| s.failures.load(std::sync::atomic::Ordering::Relaxed)),
            );
            Component {
                status: if up { "up" } else { "down" },
                kind: "redis",
                detail,
            }
        }
    }
}

#[derive(Serialize)]
struct Ready {
    status: &'static str,
    phase: &'static str,
    shards: usize,
    open_connections: usize,
    uptime_s: f64,
    storage: Component,
    redis: Component,
    /// Keys that verify access tokens, when this process verifies them: a gateway that has not
    /// fetched any from the auth service yet would refuse every user, so it is not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    verification_keys: Option<usize>,
}

async fn ready(g: &GatewayState) -> Response {
    let phase = g.shutdown.phase();
    let storage = storage_check(g).await;
    let redis = redis_check(g);
    let verification_keys = g.verifier.as_ref().map(|v| v.keys().current().1.len());
    let is_ready = phase == Phase::Accepting
        && storage.healthy()
        && redis.healthy()
        && verification_keys != Some(0);
    let body = Ready {
        status: if is_ready { "ready" } else { "not_ready" },
        phase: phase.name(),
        shards: g.shards,
        open_connections: g.shutdown.open_connections(),
        uptime_s: g.started.elapsed().as_secs_f64(),
        storage,
        redis,
        verification_keys,
    };
    let code = if is_ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(code, &body)
}

#[derive(Serialize)]
struct Services<'a> {
    status: &'static str,
    services: &'a [ServiceHealth],
}

fn services(g: &GatewayState) -> Response {
    json(
        StatusCode::OK,
        &Services {
            status: "ok",
            services: &g.services,
        },
    )
}
