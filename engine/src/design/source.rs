//! Sources: open-loop traffic (`rate_per_s`, `arrival`, `schedule`), closed-loop users
//! (`users`, `think_time`, schema version 2), and what a client does with each request
//! (`timeout_ms`, `retries`, `backoff`, `retry_budget`, schema version 2).

use super::{parse_dist, traffic, Checker, Kind, Source, Target, NON_NEGATIVE, POSITIVE};
use crate::engine::dist::Dist;
use sonic_rs::{JsonValueTrait, Value};

/// A closed-loop population: each user sends a request, waits for its answer (or gives up at
/// the client timeout, after its retries), thinks, and sends again.
#[derive(Debug, Clone, PartialEq)]
pub struct ClosedLoop {
    /// Users in the population.
    pub users: u32,
    /// Time a user waits between an answer and its next request.
    pub think_time: Dist,
}

/// What a source's client does with each of its requests (schema version 2).
#[derive(Debug, Clone, PartialEq)]
pub struct ClientPolicy {
    /// The client gives up on an attempt after this long (seconds); the attempt itself goes
    /// on inside the system, as real abandoned work does.
    pub timeout: Option<f64>,
    /// Attempts after the first, for failures and timeouts.
    pub retries: u32,
    /// Waiting time before each retry.
    pub backoff: Backoff,
    /// A token bucket that limits retries to a share of first tries.
    pub budget: Option<RetryBudget>,
}

impl Default for ClientPolicy {
    fn default() -> Self {
        ClientPolicy {
            timeout: None,
            retries: 0,
            backoff: Backoff {
                kind: BackoffKind::Exponential,
                base: 0.1,
                max: DEFAULT_MAX_BACKOFF_S,
            },
            budget: None,
        }
    }
}

/// Longest backoff when `max_ms` is not given: a minute, so exponential growth stays finite.
const DEFAULT_MAX_BACKOFF_S: f64 = 60.0;

/// How long a client waits before retry `n` (1 = the first retry).
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    /// The growth of the wait.
    pub kind: BackoffKind,
    /// The first wait (seconds).
    pub base: f64,
    /// No wait is longer than this (seconds).
    pub max: f64,
}

/// The growth of a backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackoffKind {
    /// Always `base`.
    Fixed,
    /// `base × 2^(n-1)`, capped at `max`.
    Exponential,
    /// Exponential with full jitter: uniform in [0, `base × 2^(n-1)` capped at `max`], so
    /// clients that failed together do not retry together.
    Jitter,
}

impl Backoff {
    /// The wait before retry `n` (1-based); `uniform` is a draw in [0, 1) used by `Jitter`.
    pub fn delay(&self, n: u32, uniform: f64) -> f64 {
        let grown = (self.base * 2f64.powi(n.saturating_sub(1).min(60) as i32)).min(self.max);
        match self.kind {
            BackoffKind::Fixed => self.base.min(self.max),
            BackoffKind::Exponential => grown,
            BackoffKind::Jitter => grown * uniform,
        }
    }
}

/// A retry budget: every first try adds `ratio` tokens (up to `burst`), every retry spends
/// one, and a retry without a whole token is not sent (the request fails instead).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryBudget {
    /// Retries allowed per first try, in the long run.
    pub ratio: f64,
    /// Tokens the bucket holds (and starts with).
    pub burst: f64,
}

const OPEN_LOOP_FIELDS: [&str; 3] = ["rate_per_s", "arrival", "schedule"];
const V2_FIELDS: [&str; 6] = [
    "users",
    "think_time",
    "timeout_ms",
    "retries",
    "backoff",
    "retry_budget",
];

/// Parses a `source` component.
pub(super) fn parse(
    c: &mut Checker,
    item: &Value,
    path: &str,
    target: &Target<'_>,
    class_names: &[String],
) -> Option<Kind> {
    let mut allowed = vec!["id", "kind", "name", "to", "classes"];
    allowed.extend_from_slice(&OPEN_LOOP_FIELDS);
    allowed.extend_from_slice(&V2_FIELDS);
    c.unknown_fields(item, path, &allowed);
    c.needs_v2(item, path, &V2_FIELDS);
    let closed = item.get("users").map(|_| closed_loop(c, item, path));
    let (rate, schedule) = if closed.is_some() {
        for key in OPEN_LOOP_FIELDS {
            if item.get(key).is_some() {
                c.problem(
                    &format!("{path}.{key}"),
                    "a closed-loop source (`users`) sends when its users have thought: drop it",
                );
            }
        }
        (0.0, None)
    } else {
        if item.get("think_time").is_some() {
            c.problem(
                &format!("{path}.think_time"),
                "applies to closed-loop sources only: give `users` too",
            );
        }
        let schedule = traffic::parse_schedule(c, item, path);
        let rate = if schedule.is_some() {
            c.number(item, path, "rate_per_s", Some(0.0), NON_NEGATIVE)
        } else {
            c.number(item, path, "rate_per_s", None, POSITIVE)
        };
        (rate, schedule)
    };
    let arrival = traffic::parse_arrival(c, item, path);
    let classes = traffic::parse_classes(c, item, path)
        .into_iter()
        .filter_map(|(name, p)| class_names.iter().position(|n| *n == name).map(|k| (k, p)))
        .collect();
    // Every version-2 source goes through a client, so goodput is measured for all of them.
    let client = (c.version >= 2).then(|| client_policy(c, item, path));
    let closed = closed.flatten();
    target(c, item, path, "to").map(|to| {
        Kind::Source(Source {
            rate,
            arrival,
            to,
            schedule,
            classes,
            closed,
            client,
        })
    })
}

fn closed_loop(c: &mut Checker, item: &Value, path: &str) -> Option<ClosedLoop> {
    let users = c.integer(item, path, "users", 1, 1);
    if users > u64::from(MAX_USERS) {
        c.problem(
            &format!("{path}.users"),
            format!("{users} is more than {MAX_USERS} users"),
        );
    }
    let think_time = match item.get("think_time") {
        Some(d) => parse_dist(c, d, &format!("{path}.think_time")),
        None => {
            c.problem(
                &format!("{path}.think_time"),
                "missing (required with `users`): a distribution, e.g. {\"dist\": \"exponential\", \"mean_ms\": 1000}",
            );
            None
        }
    };
    Some(ClosedLoop {
        users: users.min(u64::from(MAX_USERS)) as u32,
        think_time: think_time?,
    })
}

/// Most users of one closed-loop source: each holds a request in the simulated system.
pub const MAX_USERS: u32 = 1_000_000;

fn client_policy(c: &mut Checker, item: &Value, path: &str) -> ClientPolicy {
    let mut policy = ClientPolicy {
        timeout: item
            .get("timeout_ms")
            .map(|_| c.number(item, path, "timeout_ms", None, POSITIVE) / 1e3),
        retries: c.integer(item, path, "retries", 0, 0).min(100) as u32,
        ..ClientPolicy::default()
    };
    if item
        .get("retries")
        .and_then(|v| v.as_u64())
        .is_some_and(|n| n > 100)
    {
        c.problem(&format!("{path}.retries"), "at most 100 retries");
    }
    if let Some(v) = item.get("backoff") {
        let at = format!("{path}.backoff");
        c.unknown_fields(v, &at, &["kind", "base_ms", "max_ms"]);
        policy.backoff.kind = match v.get("kind").map(|k| k.as_str()) {
            None | Some(Some("exponential")) => BackoffKind::Exponential,
            Some(Some("fixed")) => BackoffKind::Fixed,
            Some(Some("jitter")) => BackoffKind::Jitter,
            _ => {
                c.problem(
                    &format!("{at}.kind"),
                    "must be \"fixed\", \"exponential\" or \"jitter\"",
                );
                BackoffKind::Exponential
            }
        };
        policy.backoff.base = c.number(v, &at, "base_ms", Some(100.0), NON_NEGATIVE) / 1e3;
        policy.backoff.max = c.number(
            v,
            &at,
            "max_ms",
            Some(DEFAULT_MAX_BACKOFF_S * 1e3),
            NON_NEGATIVE,
        ) / 1e3;
        if policy.backoff.max < policy.backoff.base {
            c.problem(&format!("{at}.max_ms"), "must be at least base_ms");
        }
    }
    if let Some(v) = item.get("retry_budget") {
        let at = format!("{path}.retry_budget");
        c.unknown_fields(v, &at, &["ratio", "burst"]);
        policy.budget = Some(RetryBudget {
            ratio: c.number(v, &at, "ratio", None, NON_NEGATIVE),
            burst: c.number(
                v,
                &at,
                "burst",
                Some(10.0),
                ("a number ≥ 1", |n| n >= 1.0 && n.is_finite()),
            ),
        });
        if policy.retries == 0 {
            c.problem(&at, "limits retries: set `retries` too");
        }
    }
    policy
}
