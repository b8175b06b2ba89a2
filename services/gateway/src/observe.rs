//! `/metrics` and `/api/monitoring/performance`.
//!
//! Every shard keeps its own [`Metrics`]; a scrape asks each shard for a snapshot through the
//! mesh (one message per shard), merges them (HDR histograms add exactly), and adds the
//! process-wide figures: open connections per shard, mesh queue depths, stalls, forced closes.

use crate::health;
use crate::state::GatewayState;
use bytes::Bytes;
use http::StatusCode;
use sdsim_auth::verifier::Verifier;
use sdsim_core::load::Overload;
use sdsim_core::metrics::{Key, LabelValue, Metrics, Snapshot};
use sdsim_core::runtime::Shard;
use sdsim_net::http::router::Router;
use sdsim_net::http::types::{json, with_body, Request, Response};
use sdsim_net::middleware::{REQUESTS_TOTAL, REQUEST_DURATION};
use serde::Serialize;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Registers `/metrics` and `/api/monitoring/performance`.
pub fn register(router: &mut Router, state: &Arc<GatewayState>) {
    let g = Arc::clone(state);
    router
        .route(http::Method::GET, "/metrics", move |_req: Request| {
            let g = Arc::clone(&g);
            async move { prometheus(&g).await }
        })
        .expect("metrics route does not conflict");
    let g = Arc::clone(state);
    router
        .route(
            http::Method::GET,
            "/api/monitoring/performance",
            move |_req: Request| {
                let g = Arc::clone(&g);
                async move { performance(&g).await }
            },
        )
        .expect("monitoring route does not conflict");
}

/// Merges the metrics of every shard.
pub async fn gather() -> Snapshot {
    let shard = Shard::current();
    let parts = shard
        .mesh()
        .broadcast(|| Shard::current().get::<Metrics>().map(|m| m.snapshot()))
        .await;
    let mut merged = Snapshot::default();
    for part in parts.into_iter().flatten().flatten() {
        merged.merge(part);
    }
    merged
}

fn help(name: &str) -> &'static str {
    match name {
        "sdsim_http_requests_total" => "HTTP requests by route pattern, method and status.",
        "sdsim_http_request_duration_seconds" => {
            "HTTP request latency by route pattern (from per-shard HDR histograms)."
        }
        "sdsim_http_response_bytes_total" => "Response body bytes by route pattern.",
        "sdsim_ratelimit_rejected_total" => {
            "Requests and gRPC calls rejected by the rate limiter (429 / RESOURCE_EXHAUSTED)."
        }
        "sdsim_ratelimit_unavailable_total" => {
            "Rate-limit checks whose owner shard was unreachable (allowed)."
        }
        "sdsim_http_handler_panics_total" => "Handler panics answered with 500.",
        "sdsim_otel_spans_exported_total" => "Spans the OTLP receiver accepted.",
        "sdsim_otel_spans_dropped_total" => {
            "Spans dropped: the export queue (otel.queue_spans) was full, or their batch was given up."
        }
        "sdsim_otel_export_failures_total" => "Span export requests that failed (each retry counts).",
        "sdsim_access_log_dropped_total" => {
            "Access-log lines dropped because the log writer was behind."
        }
        "sdsim_shed_total" => {
            "Requests and gRPC calls refused because their shard was overloaded (503 / RESOURCE_EXHAUSTED)."
        }
        "sdsim_grpc_server_requests_total" => "gRPC calls by service, method and code.",
        "sdsim_grpc_server_request_duration_seconds" => {
            "gRPC call duration by service and method (from per-shard HDR histograms)."
        }
        "sdsim_connections_open" => "Open client connections per shard.",
        "sdsim_connections_accepted_total" => "Connections accepted.",
        "sdsim_connections_refused_total" => {
            "Connections closed at accept because server.max_connections were open."
        }
        "sdsim_shutdown_forced_closes_total" => "Connections closed by the shutdown deadline.",
        "sdsim_mesh_queue_depth" => "Messages waiting in each cross-shard ring.",
        "sdsim_mesh_messages_total" => "Messages sent through the cross-shard mesh.",
        "sdsim_mesh_full_waits_total" => "Times a sender waited on a full cross-shard ring.",
        "sdsim_stalls_total" => "Task polls that held a shard longer than runtime.stall_threshold.",
        "sdsim_stall_seconds_total" => {
            "Time spent in such polls (milliseconds resolution in seconds)."
        }
        "sdsim_blocking_queued" => "Jobs queued or running on the blocking pool (off the shards).",
        "sdsim_blocking_completed_total" => "Jobs the blocking pool has run.",
        "sdsim_blocking_refused_total" => {
            "Jobs the blocking pool refused because runtime.blocking_queue was full."
        }
        "sdsim_http_handler_timeouts_total" => {
            "Handlers abandoned at http.handler_timeout (answered 503 timeout)."
        }
        "sdsim_uptime_seconds" => "Seconds since the server started.",
        "sdsim_storage_up" => {
            "1 when storage answered SELECT 1 within storage.connect_timeout at this scrape."
        }
        "sdsim_shard_queue_delay_seconds" => {
            "Each shard's last measured queueing delay (measured while shedding.enabled)."
        }
        "sdsim_shard_overloaded" => "1 while the shard limits admissions (load shedding).",
        "sdsim_ws_connections" => "Open WebSocket connections.",
        "sdsim_ws_connections_total" => "WebSocket connections accepted.",
        "sdsim_ws_refused_total" => "WebSocket upgrades refused, by reason.",
        "sdsim_ws_closed_total" => {
            "WebSocket connections ended, by how (slow_consumer = closed 1008 over websocket.max_outbound_bytes)."
        }
        "sdsim_ws_messages_in_total" => "WebSocket messages received from clients.",
        "sdsim_bus_published_total" => "Events sequenced by their owner shard.",
        "sdsim_bus_delivered_total" => "Events handed to subscribers.",
        "sdsim_bus_forward_batches_total" => "Batches of events sent to other shards.",
        "sdsim_bus_forward_dropped_total" => "Events dropped because a forward queue was full.",
        "sdsim_bus_channels" => "Channels owned (sequenced) per shard, summed.",
        "sdsim_bus_subscriptions" => "Channel subscriptions.",
        "sdsim_redis_up" => "1 when the Redis bridge is connected.",
        "sdsim_redis_published_total" => "Events published to other instances through Redis.",
        "sdsim_redis_batches_total" => {
            "Pipelined writes of PUBLISH commands (published / batches = mean batch size)."
        }
        "sdsim_redis_publish_dropped_total" => {
            "Local events not sent to Redis (bridge down or its queue full)."
        }
        "sdsim_redis_received_total" => "Events received from other instances.",
        "sdsim_redis_receive_dropped_total" => "Received events dropped (a shard queue full).",
        "sdsim_redis_failures_total" => "Redis connection failures.",
        "sdsim_registry_up" => "1 when the service registry is connected to Redis.",
        "sdsim_registry_instances" => "Instances of each service in this process's directory.",
        "sdsim_registry_malformed_total" => "Registry entries ignored as malformed.",
        "sdsim_registry_discovery_age_seconds" => {
            "Seconds since each service's instances were last refreshed (static or registry)."
        }
        "sdsim_registry_heartbeats_total" => "Registrations written by heartbeats.",
        "sdsim_registry_heartbeats_failed_total" => "Heartbeats that could not be written.",
        "sdsim_registry_expired_total" => "Registrations of other instances seen to expire.",
        "sdsim_registry_conflicts_total" => {
            "Own registry keys found written by another process (the same instance.id twice)."
        }
        "sdsim_auth_token_checks_total" => {
            "Access-token checks (HTTP, WebSocket, gRPC ValidateToken): cache_hit = accepted from the shard cache, signature_checked = signatures verified (accepted or not); a refused token also counts under its reason."
        }
        "sdsim_auth_token_cache_entries" => "Verified tokens cached, summed over shards.",
        "sdsim_auth_revoked_sessions" => "Revoked sessions known, summed over shards.",
        "sdsim_auth_requests_total" => "Register, login and refresh calls by outcome.",
        "sdsim_auth_revocation_delay_seconds" => {
            "Time from a session revocation's publication to its application on a shard."
        }
        "sdsim_reports_queued_total" => {
            "Completed runs whose analysis was queued on async:reports:queue (Redis set)."
        }
        "sdsim_reports_analysed_total" => {
            "Analyses this instance took from async:reports:queue and stored."
        }
        "sdsim_upstream_pool_connections" => {
            "Mesh connections open to a target instance, summed over shards."
        }
        "sdsim_upstream_connect_seconds" => {
            "Time to open a mesh connection to a target instance (TCP, TLS and HTTP/2 handshakes), successful connects only."
        }
        "sdsim_upstream_connect_failures_total" => {
            "Mesh connections to a target instance that could not be opened (refused, timed out, TLS or HTTP/2 handshake failed)."
        }
        "sdsim_upstream_keepalive_drops_total" => {
            "Mesh connections to a target instance dropped because a keepalive ping went unanswered (the calls on them failed)."
        }
        "sdsim_upstream_in_flight" => "Mesh calls in flight to a target instance.",
        "sdsim_upstream_waiting" => "Mesh calls waiting for a connection to an instance.",
        "sdsim_upstream_calls_total" => "Mesh call attempts sent to a target instance.",
        "sdsim_upstream_call_failures_total" => {
            "Mesh call attempts an instance did not answer (they count for its breaker)."
        }
        "sdsim_upstream_breaker_open" => "Shards whose circuit breaker of the instance is open.",
        "sdsim_upstream_breaker_transitions_total" => "Circuit breaker state changes, by new state.",
        "sdsim_upstream_retries_total" => "Mesh calls sent again to another instance.",
        "sdsim_upstream_retry_budget_exhausted_total" => {
            "Mesh retries refused because the retry budget was spent."
        }
        "sdsim_upstream_instances" => "Instances of a service in the directory.",
        "sdsim_upstream_discovery_age_ms" => "Time since a service's instances were last refreshed.",
        _ => "sdsim metric.",
    }
}

async fn prometheus(g: &GatewayState) -> Response {
    let mut snapshot = gather().await;
    let shard = Shard::current();
    for i in 0..g.shards {
        snapshot.gauges.insert(
            Key::with1(
                "sdsim_connections_open",
                ("shard", LabelValue::Int(i as u64)),
            ),
            g.shutdown.open_on(i) as i64,
        );
    }
    let mesh = shard.mesh_all();
    for (from, to, depth) in mesh.queue_depths() {
        snapshot.gauges.insert(
            Key::with2(
                "sdsim_mesh_queue_depth",
                ("from", LabelValue::Int(from.index() as u64)),
                ("to", LabelValue::Int(to.index() as u64)),
            ),
            depth as i64,
        );
    }
    let stats = mesh.stats();
    let counters = [
        ("sdsim_mesh_messages_total", stats.sent),
        ("sdsim_mesh_full_waits_total", stats.full_waits),
        (
            "sdsim_connections_accepted_total",
            g.conn_stats.accepted.load(Ordering::Relaxed),
        ),
        (
            "sdsim_connections_refused_total",
            g.conn_stats.refused_over_limit.load(Ordering::Relaxed),
        ),
        (
            "sdsim_shutdown_forced_closes_total",
            g.shutdown.forced_closes(),
        ),
        ("sdsim_stalls_total", g.stalls.count()),
        ("sdsim_blocking_refused_total", shard.blocking().refused()),
        (
            "sdsim_blocking_completed_total",
            shard.blocking().completed(),
        ),
    ];
    for (name, value) in counters {
        snapshot.counters.insert(Key::plain(name), value);
    }
    if let Some(spans) = sdsim_net::otel::here() {
        let stats = spans.stats();
        let otel = [
            (sdsim_net::otel::export::SPANS_EXPORTED, &stats.exported),
            (sdsim_net::otel::export::SPANS_DROPPED, &stats.dropped),
            (sdsim_net::otel::export::EXPORT_FAILURES, &stats.failures),
        ];
        for (name, value) in otel {
            snapshot
                .counters
                .insert(Key::plain(name), value.load(Ordering::Relaxed));
        }
    }
    snapshot.gauges.insert(
        Key::plain("sdsim_blocking_queued"),
        shard.blocking().waiting() as i64,
    );
    if let Some(bridge) = &g.redis {
        let b = &bridge.stats;
        let redis = [
            ("sdsim_redis_published_total", &b.published),
            ("sdsim_redis_batches_total", &b.batches),
            ("sdsim_redis_publish_dropped_total", &b.publish_dropped),
            ("sdsim_redis_received_total", &b.received),
            ("sdsim_redis_receive_dropped_total", &b.receive_dropped),
            ("sdsim_redis_failures_total", &b.failures),
        ];
        for (name, value) in redis {
            snapshot
                .counters
                .insert(Key::plain(name), value.load(Ordering::Relaxed));
        }
        snapshot.gauges.insert(
            Key::plain("sdsim_redis_up"),
            b.up.load(Ordering::Relaxed) as i64,
        );
    }
    add_registry(&mut snapshot, g);
    if let Some(verifier) = &g.verifier {
        add_token_checks(&mut snapshot, verifier).await;
    }
    snapshot.gauges.insert(
        Key::plain("sdsim_uptime_seconds"),
        g.started.elapsed().as_secs() as i64,
    );
    // Alerting on a dead database needs a series that says so; absent when no role uses storage.
    let storage = health::storage_check(g).await;
    if storage.status != "not_configured" {
        snapshot.gauges.insert(
            Key::plain("sdsim_storage_up"),
            i64::from(storage.status == "up"),
        );
    }
    let mut delays = String::new();
    for (index, part) in shard_loads().await.into_iter().enumerate() {
        let Some((delay, overloaded)) = part else {
            continue;
        };
        snapshot.gauges.insert(
            Key::with1(
                "sdsim_shard_overloaded",
                ("shard", LabelValue::Int(index as u64)),
            ),
            i64::from(overloaded),
        );
        delays.push_str(&format!(
            "sdsim_shard_queue_delay_seconds{{shard=\"{index}\"}} {}\n",
            delay.as_secs_f64()
        ));
    }
    let mut text = snapshot.render_prometheus(help);
    if !delays.is_empty() {
        text.push_str(&format!(
            "# HELP sdsim_shard_queue_delay_seconds {}\n# TYPE sdsim_shard_queue_delay_seconds gauge\n{delays}",
            help("sdsim_shard_queue_delay_seconds")
        ));
    }
    text.push_str(&format!(
        "# HELP sdsim_stall_seconds_total {}\n# TYPE sdsim_stall_seconds_total counter\nsdsim_stall_seconds_total {}\n",
        help("sdsim_stall_seconds_total"),
        g.stalls.total().as_secs_f64()
    ));
    with_body(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        Bytes::from(text),
    )
}

/// Each shard's last queueing delay and whether it limits admissions, in shard order; `None`
/// for a shard that does not measure it (shedding off) or did not answer.
pub(crate) async fn shard_loads() -> Vec<Option<(std::time::Duration, bool)>> {
    Shard::current()
        .mesh()
        .broadcast(|| {
            Shard::current()
                .get::<Overload>()
                .map(|o| (o.last_delay(), o.overloaded()))
        })
        .await
        .into_iter()
        .map(|part| part.ok().flatten())
        .collect()
}

/// The directory of instances and, with Redis, the registry's counters.
fn add_registry(snapshot: &mut Snapshot, g: &GatewayState) {
    for service in sdsim_mesh::Service::ALL {
        let label = ("service", LabelValue::Str(service.registry_name()));
        snapshot.gauges.insert(
            Key::with1("sdsim_registry_instances", label.clone()),
            g.directory.instances(service).len() as i64,
        );
        if let Some(age) = g.directory.age(service) {
            snapshot.gauges.insert(
                Key::with1("sdsim_registry_discovery_age_seconds", label),
                age.as_secs() as i64,
            );
        }
    }
    snapshot.counters.insert(
        Key::plain("sdsim_registry_malformed_total"),
        g.directory.malformed(),
    );
    if let Some(r) = &g.registry {
        let counters = [
            ("sdsim_registry_heartbeats_total", &r.heartbeats),
            (
                "sdsim_registry_heartbeats_failed_total",
                &r.heartbeats_failed,
            ),
            ("sdsim_registry_expired_total", &r.expired),
            ("sdsim_registry_conflicts_total", &r.conflicts),
        ];
        for (name, value) in counters {
            snapshot
                .counters
                .insert(Key::plain(name), value.load(Ordering::Relaxed));
        }
        snapshot.gauges.insert(
            Key::plain("sdsim_registry_up"),
            r.up.load(Ordering::Relaxed) as i64,
        );
    }
}

/// Every shard's token verifier counters: checks by result, cache size, revoked sessions.
async fn add_token_checks(snapshot: &mut Snapshot, verifier: &Arc<Verifier>) {
    use sdsim_auth::token::Problem;
    let verifier = Arc::clone(verifier);
    let parts = Shard::current()
        .mesh()
        .broadcast(move || verifier.stats())
        .await;
    let result = |r: &'static str| Key::with1(TOKEN_CHECKS, ("result", LabelValue::Str(r)));
    for stats in parts.into_iter().flatten() {
        *snapshot.counters.entry(result("cache_hit")).or_default() += stats.hits;
        *snapshot
            .counters
            .entry(result("signature_checked"))
            .or_default() += stats.misses;
        for p in Problem::ALL {
            *snapshot.counters.entry(result(p.label())).or_default() += stats.refused[p.index()];
        }
        *snapshot
            .gauges
            .entry(Key::plain("sdsim_auth_token_cache_entries"))
            .or_default() += stats.entries as i64;
        *snapshot
            .gauges
            .entry(Key::plain("sdsim_auth_revoked_sessions"))
            .or_default() += stats.revoked as i64;
    }
}

const TOKEN_CHECKS: &str = "sdsim_auth_token_checks_total";

#[derive(Serialize)]
struct RouteFigures {
    route: String,
    requests: u64,
    errors_5xx: u64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    mean_ms: f64,
}

#[derive(Serialize)]
struct Performance {
    uptime_s: f64,
    shards: usize,
    open_connections: usize,
    requests: u64,
    routes: Vec<RouteFigures>,
}

async fn performance(g: &GatewayState) -> Response {
    let snapshot = gather().await;
    let mut routes = Vec::new();
    let mut total = 0;
    for (key, hist) in &snapshot.histograms {
        if key.name != REQUEST_DURATION {
            continue;
        }
        let route = key
            .label("route")
            .map(|v| v.to_string())
            .unwrap_or_default();
        let errors_5xx = snapshot
            .counters
            .iter()
            .filter(|(k, _)| {
                k.name == REQUESTS_TOTAL
                    && k.label("route") == key.label("route")
                    && matches!(k.label("status"), Some(LabelValue::Int(s)) if *s >= 500)
            })
            .map(|(_, v)| *v)
            .sum();
        let ms = |us: u64| us as f64 / 1e3;
        total += hist.len();
        routes.push(RouteFigures {
            route,
            requests: hist.len(),
            errors_5xx,
            p50_ms: ms(hist.value_at_quantile(0.50)),
            p95_ms: ms(hist.value_at_quantile(0.95)),
            p99_ms: ms(hist.value_at_quantile(0.99)),
            max_ms: ms(hist.max()),
            mean_ms: hist.mean() / 1e3,
        });
    }
    json(
        StatusCode::OK,
        &Performance {
            uptime_s: g.started.elapsed().as_secs_f64(),
            shards: g.shards,
            open_connections: g.shutdown.open_connections(),
            requests: total,
            routes,
        },
    )
}
