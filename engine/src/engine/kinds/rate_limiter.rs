//! `rate_limiter`: a token bucket in front of what it protects. It holds up to `burst`
//! tokens, refilled at `rate_per_s`; a request that finds a token takes it and goes on along
//! the limiter's routes (after `decision_time`), one that finds none is refused at once, an
//! error of the limiter (HTTP 429 to a client, a failed call to a caller).

use super::{Arrival, Ctx, Entry, StationKind};
use crate::design::{edges, Behavior, Checker, Kind, Station, POSITIVE};
use crate::engine::dist::Dist;

/// What a rate limiter station does.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimiter {
    /// Tokens added per simulated second.
    pub rate: f64,
    /// Tokens the bucket holds at most (and starts with): the burst admitted at once.
    pub burst: f64,
}

/// A rate limiter's bucket during a run.
#[derive(Debug, Default)]
pub(crate) struct Bucket {
    /// Tokens missing from a full bucket (0 at the start: it starts full).
    spent: f64,
    /// When `spent` was last brought up to date.
    updated: f64,
}

impl StationKind for RateLimiter {
    const REPORT_NAME: &'static str = "rate_limiter";
    type State = Bucket;

    #[inline]
    fn arrive(&self, ctx: &mut Ctx<'_>, bucket: &mut Bucket) -> Arrival {
        let refilled = (ctx.now - bucket.updated) * self.rate;
        bucket.spent = (bucket.spent - refilled).max(0.0);
        bucket.updated = ctx.now;
        if bucket.spent + 1.0 <= self.burst {
            bucket.spent += 1.0;
            Arrival::Serve
        } else {
            Arrival::Reject
        }
    }
}

/// Parses a `rate_limiter`.
pub(super) fn parse(c: &mut Checker, entry: &Entry<'_>) -> Option<Kind> {
    let Entry { item, path, .. } = *entry;
    c.unknown_fields(
        item,
        path,
        &super::fields(&["rate_per_s", "burst", "decision_time", "routes"]),
    );
    let rate = c.number(item, path, "rate_per_s", None, POSITIVE);
    // One second of the rate by default: what most limiters (nginx, Envoy) are configured with.
    let default_burst = if rate.is_finite() { rate.ceil().max(1.0) } else { 1.0 };
    let burst = c.integer(item, path, "burst", default_burst as u64, 1) as f64;
    let decision = super::dist_field(c, item, path, "decision_time", Some(Dist::Constant(0.0)));
    let (routes, total) = edges(c, item, path, "routes", entry.target, entry.classes);
    if total > 1.0 + 1e-9 {
        c.problem(
            &format!("{path}.routes"),
            format!("probabilities add up to {total}, more than 1"),
        );
    }
    if !rate.is_finite() {
        return None;
    }
    // As many workers as an external API: the check is never what requests wait for.
    let mut s = Station::plain(1, 10_000, decision?, None);
    s.routes = routes;
    s.behavior = Behavior::RateLimiter(RateLimiter { rate, burst });
    Some(Kind::Station(s))
}
