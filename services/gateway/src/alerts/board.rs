//! The decisions of the in-process alerts, free of I/O and clocks (the caller passes the time):
//! which thresholds the latest measurements break, and which alerts start or stop firing.
//!
//! Cooldown: an alert that stops breaking its threshold leaves the active list at once, but its
//! `resolved` announcement waits until it has stayed quiet for `cooldown`; breaking it again
//! meanwhile neither announces it again nor resets its `since`. A value flapping around its
//! threshold is thus announced once when it starts and once when it has settled.

use super::AlertsConfig;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How bad an alert is (the `severity` label of the Prometheus rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth a look.
    Warning,
    /// Users are affected.
    Critical,
}

/// What one evaluation measured, over the window since the previous one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measurements {
    /// HTTP requests answered in the window.
    pub requests: u64,
    /// Of those, answered 5xx.
    pub errors_5xx: u64,
    /// p99 latency of each route pattern that answered requests in the window.
    pub p99_by_route: Vec<(String, Duration)>,
    /// WebSocket connections open now.
    pub ws_connections: u64,
    /// WebSocket connections closed as slow consumers, per second.
    pub slow_consumer_closes_per_s: f64,
    /// Shard stalls per second.
    pub stalls_per_s: f64,
    /// Whether storage answered; `None` when no role uses storage.
    pub storage_up: Option<bool>,
    /// Whether the Redis bridge is connected; `None` without `redis.url`.
    pub redis_up: Option<bool>,
    /// The largest last queueing delay of any shard; `None` while shedding is off.
    pub max_queue_delay: Option<Duration>,
    /// (service, instance) of every instance a shard's breaker is open to.
    pub breakers_open: Vec<(String, String)>,
    /// p99 of the revocation delay over the window; `None` when nothing was revoked.
    pub revocation_p99: Option<Duration>,
}

/// A threshold broken now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Breach {
    /// The alert's name (as in `config/prometheus/sdsim-rules.yml`).
    pub name: &'static str,
    /// What it is about (a route, a called instance), empty when the whole process.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub subject: String,
    /// Its severity.
    pub severity: Severity,
    /// The measured value (seconds for durations, a share from 0 to 1 for ratios).
    pub value: f64,
    /// The threshold it is above (below, for the `up` alerts: 1).
    pub threshold: f64,
}

/// Every threshold of `cfg` that `m` breaks.
pub fn breaches(cfg: &AlertsConfig, m: &Measurements) -> Vec<Breach> {
    let mut out = Vec::new();
    if m.requests >= cfg.min_requests && m.requests > 0 {
        let ratio = m.errors_5xx as f64 / m.requests as f64;
        above(
            &mut out,
            "SdsimHighErrorRate",
            "",
            Severity::Warning,
            ratio,
            cfg.error_ratio_warning,
        );
        above(
            &mut out,
            "SdsimCriticalErrorRate",
            "",
            Severity::Critical,
            ratio,
            cfg.error_ratio_critical,
        );
    }
    for (route, p99) in &m.p99_by_route {
        let s = p99.as_secs_f64();
        above(
            &mut out,
            "SdsimSlowRoute",
            route,
            Severity::Warning,
            s,
            cfg.p99_warning.as_secs_f64(),
        );
        above(
            &mut out,
            "SdsimVerySlowRoute",
            route,
            Severity::Critical,
            s,
            cfg.p99_critical.as_secs_f64(),
        );
    }
    let ws = m.ws_connections as f64;
    above(
        &mut out,
        "SdsimWebSocketConnectionsHigh",
        "",
        Severity::Warning,
        ws,
        cfg.ws_connections_warning as f64,
    );
    above(
        &mut out,
        "SdsimWebSocketConnectionsCritical",
        "",
        Severity::Critical,
        ws,
        cfg.ws_connections_critical as f64,
    );
    above(
        &mut out,
        "SdsimWebSocketSlowConsumers",
        "",
        Severity::Warning,
        m.slow_consumer_closes_per_s,
        cfg.slow_consumer_closes_per_s,
    );
    above(
        &mut out,
        "SdsimShardStalls",
        "",
        Severity::Warning,
        m.stalls_per_s,
        cfg.stalls_per_s,
    );
    for (name, up) in [
        ("SdsimStorageDown", m.storage_up),
        ("SdsimRedisDown", m.redis_up),
    ] {
        if up == Some(false) {
            // Down is 0 against an expected 1: below its threshold, unlike the others.
            out.push(Breach {
                name,
                subject: String::new(),
                severity: Severity::Critical,
                value: 0.0,
                threshold: 1.0,
            });
        }
    }
    if let Some(delay) = m.max_queue_delay {
        above(
            &mut out,
            "SdsimShardQueueingDelay",
            "",
            Severity::Warning,
            delay.as_secs_f64(),
            cfg.queue_delay.as_secs_f64(),
        );
    }
    for (service, instance) in &m.breakers_open {
        above(
            &mut out,
            "SdsimCircuitBreakerOpen",
            &format!("{service} {instance}"),
            Severity::Warning,
            1.0,
            0.0,
        );
    }
    if let Some(p99) = m.revocation_p99 {
        above(
            &mut out,
            "SdsimRevocationDelay",
            "",
            Severity::Warning,
            p99.as_secs_f64(),
            cfg.revocation_delay_p99.as_secs_f64(),
        );
    }
    out
}

fn above(
    out: &mut Vec<Breach>,
    name: &'static str,
    subject: &str,
    severity: Severity,
    value: f64,
    threshold: f64,
) {
    if value > threshold {
        out.push(Breach {
            name,
            subject: subject.to_string(),
            severity,
            value,
            threshold,
        });
    }
}

/// An alert that starts or stops firing, as announced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    /// `firing` or `resolved`.
    pub state: &'static str,
    /// The alert, with its last value.
    pub alert: ActiveAlert,
}

/// An alert in the list `GET /api/monitoring/alerts` answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActiveAlert {
    /// The threshold broken, and the latest value.
    #[serde(flatten)]
    pub breach: Breach,
    /// When it started breaking it (milliseconds after the Unix epoch).
    #[serde(skip)]
    pub since_ms: u64,
    /// `since_ms` as RFC 3339.
    pub since: String,
}

struct Entry {
    alert: ActiveAlert,
    /// Breaking its threshold at the latest evaluation.
    active: bool,
    /// When it last stopped breaking it.
    quiet_since: Option<Instant>,
}

/// The alerts known: active ones, and resolved ones still in their cooldown.
#[derive(Default)]
pub struct Board {
    entries: BTreeMap<(&'static str, String), Entry>,
}

impl Board {
    /// Applies one evaluation's breaches at `now` (`now_ms`, `since` of new alerts, with its
    /// RFC 3339 text); the transitions to announce.
    pub fn update(
        &mut self,
        breaches: Vec<Breach>,
        now: Instant,
        now_ms: u64,
        now_text: &str,
        cooldown: Duration,
    ) -> Vec<Transition> {
        let mut transitions = Vec::new();
        let mut seen = Vec::new();
        for breach in breaches {
            let key = (breach.name, breach.subject.clone());
            seen.push(key.clone());
            match self.entries.get_mut(&key) {
                Some(entry) => {
                    entry.alert.breach = breach;
                    entry.active = true;
                    entry.quiet_since = None;
                }
                None => {
                    let alert = ActiveAlert {
                        breach,
                        since_ms: now_ms,
                        since: now_text.to_string(),
                    };
                    transitions.push(Transition {
                        state: "firing",
                        alert: alert.clone(),
                    });
                    let entry = Entry {
                        alert,
                        active: true,
                        quiet_since: None,
                    };
                    self.entries.insert(key, entry);
                }
            }
        }
        self.entries.retain(|key, entry| {
            if seen.contains(key) {
                return true;
            }
            let quiet_since = *entry.quiet_since.get_or_insert(now);
            entry.active = false;
            if now.saturating_duration_since(quiet_since) < cooldown {
                return true;
            }
            transitions.push(Transition {
                state: "resolved",
                alert: entry.alert.clone(),
            });
            false
        });
        transitions
    }

    /// The alerts breaking their threshold at the latest evaluation, oldest first.
    pub fn active(&self) -> Vec<ActiveAlert> {
        let mut active: Vec<ActiveAlert> = self
            .entries
            .values()
            .filter(|e| e.active)
            .map(|e| e.alert.clone())
            .collect();
        active.sort_by(|a, b| (a.since_ms, a.breach.name).cmp(&(b.since_ms, b.breach.name)));
        active
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn errors(requests: u64, errors_5xx: u64) -> Measurements {
        Measurements {
            requests,
            errors_5xx,
            ..Measurements::default()
        }
    }

    fn names(b: &[Breach]) -> Vec<&'static str> {
        b.iter().map(|b| b.name).collect()
    }

    #[test]
    fn each_threshold_breaks_above_its_value_and_not_below() {
        let cfg = AlertsConfig::default();
        assert_eq!(breaches(&cfg, &errors(100, 5)), vec![]);
        assert_eq!(
            names(&breaches(&cfg, &errors(100, 8))),
            ["SdsimHighErrorRate"]
        );
        assert_eq!(
            names(&breaches(&cfg, &errors(100, 20))),
            ["SdsimHighErrorRate", "SdsimCriticalErrorRate"]
        );
        // Too few requests in the window to call a share.
        assert_eq!(breaches(&cfg, &errors(cfg.min_requests - 1, 9)), vec![]);
        let m = Measurements {
            p99_by_route: vec![
                ("/fast".into(), S / 2),
                ("/slow".into(), 2 * S),
                ("/stuck".into(), 6 * S),
            ],
            ws_connections: 9_000,
            storage_up: Some(false),
            redis_up: Some(true),
            max_queue_delay: Some(Duration::from_millis(80)),
            breakers_open: vec![("project".into(), "project-1".into())],
            revocation_p99: Some(S / 10),
            slow_consumer_closes_per_s: 0.05,
            stalls_per_s: 0.5,
            ..Measurements::default()
        };
        let b = breaches(&cfg, &m);
        assert_eq!(
            names(&b),
            [
                "SdsimSlowRoute",
                "SdsimSlowRoute",
                "SdsimVerySlowRoute",
                "SdsimWebSocketConnectionsHigh",
                "SdsimShardStalls",
                "SdsimStorageDown",
                "SdsimShardQueueingDelay",
                "SdsimCircuitBreakerOpen",
            ]
        );
        assert_eq!(b[0].subject, "/slow");
        assert_eq!((b[0].value, b[0].threshold), (2.0, 1.0));
        assert_eq!(b[2].severity, Severity::Critical);
        assert_eq!(b[7].subject, "project project-1");
    }

    #[test]
    fn a_flapping_alert_is_announced_once_and_resolved_after_the_cooldown() {
        let cfg = AlertsConfig::default();
        let cooldown = 60 * S;
        let t0 = Instant::now();
        let mut board = Board::default();
        let mut eval = |m: &Measurements, at: Duration| {
            let ms = at.as_millis() as u64;
            let states: Vec<(&str, &str)> = board
                .update(breaches(&cfg, m), t0 + at, ms, &format!("t{ms}"), cooldown)
                .into_iter()
                .map(|t| (t.state, t.alert.breach.name))
                .collect();
            (states, board.active())
        };
        let (t, active) = eval(&errors(100, 8), Duration::ZERO);
        assert_eq!(t, [("firing", "SdsimHighErrorRate")]);
        assert_eq!(active[0].since, "t0");
        // Below, above, below again within the cooldown: no announcement, `since` kept.
        let (t, active) = eval(&errors(100, 1), 10 * S);
        assert!(t.is_empty() && active.is_empty(), "{t:?}");
        let (t, active) = eval(&errors(100, 9), 20 * S);
        assert!(t.is_empty());
        assert_eq!(
            (active[0].since.as_str(), active[0].breach.value),
            ("t0", 0.09)
        );
        let (t, _) = eval(&errors(100, 1), 30 * S);
        assert!(t.is_empty());
        let (t, _) = eval(&errors(100, 1), 89 * S);
        assert!(t.is_empty(), "quiet for 59 s only: {t:?}");
        let (t, active) = eval(&errors(100, 1), 90 * S);
        assert_eq!(t, [("resolved", "SdsimHighErrorRate")]);
        assert!(active.is_empty());
        // Breaking it after the resolution is a new alert, announced again.
        let (t, active) = eval(&errors(100, 9), 100 * S);
        assert_eq!(t, [("firing", "SdsimHighErrorRate")]);
        assert_eq!(active[0].since, "t100000");
    }
}
