//! Alerts in the product: the thresholds of `config/prometheus/sdsim-rules.yml` (config
//! `[alerts]`), evaluated in process every `alerts.interval` on shard 0 from this process's own
//! metrics over the window since the previous evaluation. `GET /api/monitoring/alerts` (admins)
//! lists the active ones; each alert that starts or stops firing is published on
//! `system:announcements` (`{"type": "alert", "state": "firing" | "resolved", "alert": …}`),
//! with the cooldown of [`board`] so a flapping value does not spam.

pub mod board;

use crate::health;
use crate::observe;
use crate::state::GatewayState;
use board::{ActiveAlert, Board, Measurements, Transition};
use bytes::Bytes;
use http::StatusCode;
use sdsim_core::config::{duration, Problems};
use sdsim_core::metrics::{Key, LabelValue, Snapshot};
use sdsim_net::http::router::Router;
use sdsim_net::http::types::{error, json, Request, Response};
use sdsim_net::middleware::{REQUESTS_TOTAL, REQUEST_DURATION};
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The channel transitions are announced on.
pub const CHANNEL: &str = "system:announcements";

/// `[alerts]`: the in-process alerts and their thresholds (the same as the Prometheus rules').
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// Evaluate the alerts (on shard 0 of every process).
    pub enabled: bool,
    /// How often; each evaluation measures the window since the previous one.
    #[serde(with = "duration")]
    pub interval: Duration,
    /// How long an alert must stay quiet before its resolution is announced.
    #[serde(with = "duration")]
    pub cooldown: Duration,
    /// Requests a window needs before its 5xx share is judged.
    pub min_requests: u64,
    /// 5xx share of HTTP requests (0 to 1) above which `SdsimHighErrorRate` fires.
    pub error_ratio_warning: f64,
    /// 5xx share above which `SdsimCriticalErrorRate` fires.
    pub error_ratio_critical: f64,
    /// A route's p99 latency above which `SdsimSlowRoute` fires.
    #[serde(with = "duration")]
    pub p99_warning: Duration,
    /// A route's p99 latency above which `SdsimVerySlowRoute` fires.
    #[serde(with = "duration")]
    pub p99_critical: Duration,
    /// Open WebSocket connections above which `SdsimWebSocketConnectionsHigh` fires.
    pub ws_connections_warning: u64,
    /// Open WebSocket connections above which `SdsimWebSocketConnectionsCritical` fires.
    pub ws_connections_critical: u64,
    /// Slow-consumer closes per second above which `SdsimWebSocketSlowConsumers` fires.
    pub slow_consumer_closes_per_s: f64,
    /// Shard stalls per second above which `SdsimShardStalls` fires.
    pub stalls_per_s: f64,
    /// A shard's queueing delay above which `SdsimShardQueueingDelay` fires.
    #[serde(with = "duration")]
    pub queue_delay: Duration,
    /// Revocation delay p99 above which `SdsimRevocationDelay` fires.
    #[serde(with = "duration")]
    pub revocation_delay_p99: Duration,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            enabled: true,
            interval: Duration::from_secs(10),
            cooldown: Duration::from_secs(300),
            min_requests: 20,
            error_ratio_warning: 0.05,
            error_ratio_critical: 0.10,
            p99_warning: Duration::from_secs(1),
            p99_critical: Duration::from_secs(5),
            ws_connections_warning: 8_000,
            ws_connections_critical: 9_500,
            slow_consumer_closes_per_s: 0.1,
            stalls_per_s: 0.1,
            queue_delay: Duration::from_millis(50),
            revocation_delay_p99: Duration::from_secs(1),
        }
    }
}

impl AlertsConfig {
    /// Adds every problem of the section to `problems`, naming its key.
    pub fn validate(&self, problems: &mut Problems) {
        problems.positive("alerts.interval", self.interval);
        for (key, value) in [
            ("alerts.error_ratio_warning", self.error_ratio_warning),
            ("alerts.error_ratio_critical", self.error_ratio_critical),
        ] {
            if !(0.0..=1.0).contains(&value) {
                problems.bad(key, value.to_string(), "a share from 0 to 1");
            }
        }
        for (key, value) in [
            (
                "alerts.slow_consumer_closes_per_s",
                self.slow_consumer_closes_per_s,
            ),
            ("alerts.stalls_per_s", self.stalls_per_s),
        ] {
            if !(value >= 0.0 && value.is_finite()) {
                problems.bad(key, value.to_string(), "a rate of at least 0");
            }
        }
    }
}

/// The alerts of one process, shared by its shards.
#[derive(Default)]
pub struct Alerts {
    board: Mutex<Board>,
}

impl Alerts {
    /// The alerts active at the latest evaluation.
    pub fn active(&self) -> Vec<ActiveAlert> {
        self.board
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .active()
    }
}

#[derive(Serialize)]
struct AlertList {
    enabled: bool,
    interval_s: f64,
    alerts: Vec<ActiveAlert>,
}

#[derive(Serialize)]
struct Announcement<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    transition: &'a Transition,
}

/// Registers `GET /api/monitoring/alerts`.
pub fn register(router: &mut Router, state: &Arc<GatewayState>) {
    let g = Arc::clone(state);
    router
        .route(
            http::Method::GET,
            "/api/monitoring/alerts",
            move |req: Request| {
                let g = Arc::clone(&g);
                async move { list(&g, &req) }
            },
        )
        .expect("alerts route does not conflict");
}

fn list(g: &GatewayState, req: &Request) -> Response {
    let who = match sdsim_contract::caller::http_caller(&*g.authenticator, req) {
        Ok(who) => who,
        Err(resp) => return *resp,
    };
    if !who.is_admin() {
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the alerts need the admin role",
        );
    }
    json(
        StatusCode::OK,
        &AlertList {
            enabled: g.config.alerts.enabled,
            interval_s: g.config.alerts.interval.as_secs_f64(),
            alerts: g.alerts.active(),
        },
    )
}

/// Evaluates the alerts every `alerts.interval` for ever (spawn it on one shard; it ends with
/// the shard's runtime).
pub async fn run(g: Arc<GatewayState>) {
    let cfg = g.config.alerts.clone();
    let mut previous = (observe::gather().await, g.stalls.count(), Instant::now());
    loop {
        monoio::time::sleep(cfg.interval).await;
        let current = (observe::gather().await, g.stalls.count(), Instant::now());
        let m = measure(&g, &previous, &current).await;
        let now_ms = sdsim_mesh::directory::now_ms();
        let transitions = g
            .alerts
            .board
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .update(
                board::breaches(&cfg, &m),
                current.2,
                now_ms,
                &health::rfc3339(now_ms),
                cfg.cooldown,
            );
        for transition in &transitions {
            let data = Announcement {
                kind: "alert",
                transition,
            };
            let data = Bytes::from(sonic_rs::to_vec(&data).expect("an announcement serializes"));
            if let Err(e) = crate::realtime::publish(CHANNEL, data).await {
                tracing::warn!(error = %e, alert = transition.alert.breach.name, "alert not announced");
            }
            tracing::warn!(
                state = transition.state,
                alert = transition.alert.breach.name,
                subject = %transition.alert.breach.subject,
                value = transition.alert.breach.value,
                threshold = transition.alert.breach.threshold,
                "alert"
            );
        }
        previous = current;
    }
}

type Sample = (Snapshot, u64, Instant);

/// What the window from `before` to `after` measured, with the process-wide figures of now.
async fn measure(g: &GatewayState, before: &Sample, after: &Sample) -> Measurements {
    let (prev, now) = (&before.0, &after.0);
    let seconds = after.2.saturating_duration_since(before.2).as_secs_f64();
    let per_s = |n: u64| {
        if seconds > 0.0 {
            n as f64 / seconds
        } else {
            0.0
        }
    };
    let delta = |key: &Key| {
        let was = prev.counters.get(key).copied().unwrap_or(0);
        now.counters
            .get(key)
            .copied()
            .unwrap_or(0)
            .saturating_sub(was)
    };
    let mut m = Measurements::default();
    for key in now.counters.keys().filter(|k| k.name == REQUESTS_TOTAL) {
        let n = delta(key);
        m.requests += n;
        if matches!(key.label("status"), Some(LabelValue::Int(s)) if *s >= 500) {
            m.errors_5xx += n;
        }
    }
    let window_p99 = |key: &Key| {
        let mut h = now.histograms.get(key)?.clone();
        if let Some(was) = prev.histograms.get(key) {
            h.subtract(was).ok()?;
        }
        (!h.is_empty()).then(|| Duration::from_micros(h.value_at_quantile(0.99)))
    };
    for key in now.histograms.keys().filter(|k| k.name == REQUEST_DURATION) {
        if let Some(p99) = window_p99(key) {
            let route = key
                .label("route")
                .map(|r| r.to_string())
                .unwrap_or_default();
            m.p99_by_route.push((route, p99));
        }
    }
    m.revocation_p99 = now
        .histograms
        .keys()
        .filter(|k| k.name == sdsim_auth::REVOCATION_DELAY)
        .filter_map(window_p99)
        .max();
    m.ws_connections = g.ws_open.load(Ordering::Relaxed) as u64;
    let slow = Key::with1(
        crate::realtime::WS_CLOSED,
        ("how", LabelValue::Str("slow_consumer")),
    );
    m.slow_consumer_closes_per_s = per_s(delta(&slow));
    m.stalls_per_s = per_s(after.1.saturating_sub(before.1));
    let storage = health::storage_check(g).await;
    m.storage_up = (storage.status != "not_configured").then_some(storage.status == "up");
    m.redis_up = g.redis.as_ref().map(|b| b.stats.up.load(Ordering::Relaxed));
    m.max_queue_delay = observe::shard_loads()
        .await
        .into_iter()
        .flatten()
        .map(|(delay, _)| delay)
        .max();
    for (key, open) in &now.gauges {
        if key.name == "sdsim_upstream_breaker_open" && *open > 0 {
            let label = |name| key.label(name).map(|v| v.to_string()).unwrap_or_default();
            m.breakers_open.push((label("service"), label("instance")));
        }
    }
    m
}
