//! Health endpoints. Load balancers poll them, so the rate limiter exempts `/health*`.
//!
//! - `/health`: liveness — the shard answers. Its body stays `{"status":"ok"}`: the HTTP
//!   benchmarks compare it byte for byte with peer servers, and a liveness probe must not wait
//!   on the database.
//! - `/health/ready`: readiness — 503 once the server drains, when storage is down, or while a
//!   gateway without the auth service has no key to verify tokens with; with the seed's
//!   fields: the services this process runs, its instance, the database's and Redis's state,
//!   the time.
//! - `/health/database`, `/health/redis`, `/health/services`: one component each, saying what is
//!   true of this build and configuration (a component that is not configured says so);
//!   `/health/services` also asks every known instance of every service (gRPC health, or the
//!   HTTP readiness of a gateway) concurrently, each within [`INSTANCE_CHECK_TIMEOUT`].

use crate::state::{GatewayState, ServiceHealth};
use http::StatusCode;
use sdsim_core::config::redacted_url;
use sdsim_core::metrics::{LabelValue, Snapshot};
use sdsim_core::shutdown::Phase;
use sdsim_mesh::{Instance, Service};
use sdsim_net::http::router::Router;
use sdsim_net::http::types::{json, Request, Response};
use serde::Serialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long `/health/services` waits for one instance's answer.
pub const INSTANCE_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

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
    let g = Arc::clone(state);
    router
        .route(
            http::Method::GET,
            "/health/services",
            move |_req: Request| {
                let g = Arc::clone(&g);
                async move { services(&g).await }
            },
        )
        .expect("health routes do not conflict");
}

#[derive(Serialize)]
struct Status {
    status: &'static str,
}

/// The registry names of the services this process runs, comma-separated.
fn service_names(g: &GatewayState) -> String {
    g.services
        .iter()
        .filter(|s| s.configured)
        .filter_map(|s| Service::from_role(s.name))
        .map(Service::registry_name)
        .collect::<Vec<_>>()
        .join(",")
}

fn rfc3339_now() -> String {
    rfc3339(sdsim_mesh::directory::now_ms())
}

/// `ms` after the Unix epoch as `2026-01-31T12:00:00.123Z`.
pub(crate) fn rfc3339(ms: u64) -> String {
    let civil = sdsim_core::civil::Civil::from_unix(ms / 1000);
    format!("{}.{:03}Z", civil.rfc3339_seconds(), ms % 1000)
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
    /// The registry names of the services this process runs, comma-separated.
    service: String,
    /// `instance.id`.
    instance: String,
    /// The storage's state (`up`, `down`), as `storage.status`.
    database: &'static str,
    /// Redis's state (`up`, `down`, `not_configured`), as `redis.status`.
    redis_status: &'static str,
    /// RFC 3339, UTC.
    timestamp: String,
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
        service: service_names(g),
        instance: g.instance.clone(),
        database: storage.status,
        redis_status: redis.status,
        timestamp: rfc3339_now(),
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
    /// `ok`, or `degraded` when a known instance did not answer as serving.
    status: &'static str,
    services: &'a [ServiceHealth],
    /// Where the instances below come from.
    registry: RegistryHealth,
    /// Every known instance of every service, asked now.
    instances: Vec<InstanceHealth>,
}

#[derive(Serialize)]
struct RegistryHealth {
    /// `up`, `down` (the last instances known are used), `not_configured` (static addresses).
    status: &'static str,
    /// Registry entries ignored as malformed so far.
    malformed: u64,
}

/// What one instance answered.
#[derive(Serialize)]
struct InstanceHealth {
    service: &'static str,
    id: String,
    /// The address asked (gRPC; HTTP for a gateway).
    address: Option<SocketAddr>,
    /// What the registry says of it (`healthy`, `draining`).
    registered: sdsim_mesh::InstanceStatus,
    /// `serving`, `not_serving`, `unreachable`, `timeout`, `no_address`.
    status: &'static str,
    /// Round-trip time of the check, when it got an answer.
    latency_ms: Option<f64>,
    detail: String,
    /// This process's circuit breaker for it: `closed`, or `open` when it is open on at least
    /// one shard; `null` when this process does not call it.
    breaker: Option<&'static str>,
}

async fn services(g: &GatewayState) -> Response {
    let known: Vec<(Service, Instance)> = Service::ALL
        .into_iter()
        .flat_map(|s| {
            g.directory
                .instances(s)
                .iter()
                .map(move |i| (s, i.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let mut instances =
        futures_util::future::join_all(known.into_iter().map(|(s, i)| check_instance(s, i))).await;
    let breakers = breakers(&crate::observe::gather().await);
    for i in &mut instances {
        i.breaker = breakers.get(&(i.service, i.id.as_str())).map(|open| {
            if *open > 0 {
                "open"
            } else {
                "closed"
            }
        });
    }
    let registry = RegistryHealth {
        status: match &g.registry {
            None => "not_configured",
            Some(r) if r.up.load(std::sync::atomic::Ordering::Relaxed) => "up",
            Some(_) => "down",
        },
        malformed: g.directory.malformed(),
    };
    let all_serving = instances.iter().all(|i| i.status == "serving");
    json(
        StatusCode::OK,
        &Services {
            status: if all_serving { "ok" } else { "degraded" },
            services: &g.services,
            registry,
            instances,
        },
    )
}

/// Per (service, instance id) this process calls: on how many shards its breaker is open (the
/// mesh client's `sdsim_upstream_breaker_open` gauges, summed over shards).
fn breakers(snapshot: &Snapshot) -> HashMap<(&'static str, &'static str), i64> {
    let mut open = HashMap::new();
    for (key, value) in &snapshot.gauges {
        if key.name != "sdsim_upstream_breaker_open" {
            continue;
        }
        if let (Some(LabelValue::Str(service)), Some(LabelValue::Str(instance))) =
            (key.label("service"), key.label("instance"))
        {
            *open.entry((*service, *instance)).or_insert(0) += value;
        }
    }
    open
}

/// Asks one instance: gRPC health `Check` for a service with gRPC, `GET /health/ready` for
/// a gateway.
async fn check_instance(service: Service, instance: Instance) -> InstanceHealth {
    let address = instance.grpc.or(instance.http);
    let began = Instant::now();
    let outcome = match (instance.grpc, instance.http) {
        (Some(addr), _) => monoio::time::timeout(INSTANCE_CHECK_TIMEOUT, grpc_check(addr)).await,
        (None, Some(addr)) => monoio::time::timeout(INSTANCE_CHECK_TIMEOUT, http_check(addr)).await,
        (None, None) => Ok(Err(("no_address", "the instance gives no address".into()))),
    };
    let took = began.elapsed();
    let (status, detail, latency_ms) = match outcome {
        Ok(Ok(())) => ("serving", String::new(), Some(took.as_secs_f64() * 1e3)),
        Ok(Err(("not_serving", why))) => ("not_serving", why, Some(took.as_secs_f64() * 1e3)),
        Ok(Err((status, why))) => (status, why, None),
        Err(_) => (
            "timeout",
            format!("no answer within {INSTANCE_CHECK_TIMEOUT:?}"),
            None,
        ),
    };
    InstanceHealth {
        service: service.registry_name(),
        id: instance.id,
        address,
        registered: instance.status,
        status,
        latency_ms,
        detail,
        breaker: None,
    }
}

type Check = Result<(), (&'static str, String)>;

async fn grpc_check(addr: SocketAddr) -> Check {
    use sdsim_net::grpc::pb::health::health_check_response::ServingStatus;
    use sdsim_net::grpc::pb::health::{HealthCheckRequest, HealthCheckResponse};
    let client = sdsim_net::grpc::client::Client::new(addr);
    let answer: Result<HealthCheckResponse, _> = client
        .unary(
            "/grpc.health.v1.Health/Check",
            &HealthCheckRequest {
                service: String::new(),
            },
            sdsim_net::grpc::client::CallOptions::timeout(INSTANCE_CHECK_TIMEOUT),
        )
        .await;
    match answer {
        Ok(r) if r.status == ServingStatus::Serving as i32 => Ok(()),
        Ok(r) => Err((
            "not_serving",
            format!(
                "grpc.health.v1 status {:?}",
                ServingStatus::try_from(r.status).unwrap_or(ServingStatus::Unknown)
            ),
        )),
        Err(e) => Err(("unreachable", e.to_string())),
    }
}

async fn http_check(addr: SocketAddr) -> Check {
    use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
    let unreachable = |e: std::io::Error| ("unreachable", format!("{addr}: {e}"));
    let mut tcp = monoio::net::TcpStream::connect(addr)
        .await
        .map_err(unreachable)?;
    let request =
        format!("GET /health/ready HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let (written, _) = tcp.write_all(request.into_bytes()).await;
    written.map_err(unreachable)?;
    // The status line is in the first bytes of the answer.
    let (read, buf) = tcp.read(Vec::with_capacity(64)).await;
    read.map_err(unreachable)?;
    let head = String::from_utf8_lossy(&buf);
    match head.split(' ').nth(1) {
        Some("200") => Ok(()),
        Some(code) => Err(("not_serving", format!("GET /health/ready answered {code}"))),
        None => Err(("unreachable", format!("{addr}: no HTTP answer"))),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_rfc3339_in_utc() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::rfc3339(1_700_000_000_123),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(super::rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
