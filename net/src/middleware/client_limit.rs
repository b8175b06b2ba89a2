//! The rate-limit layer: each request or call counts against its client IP's limits
//! ([`super::ratelimit`]), checked on the IP's owner shard through the mesh so the limit holds
//! whichever shard, listener or protocol the client uses. HTTP and gRPC share a client's bucket:
//! a client cannot double its budget by switching protocol, and `ratelimit.routes` can name an
//! HTTP route pattern or a gRPC method path (`/sdsim.auth.v1.AuthService/Login`).
//!
//! Not limited: paths under `ratelimit.exempt_prefixes` (HTTP `/health` by default), the
//! standard gRPC health service (load balancers poll it as they poll `/health`), and exchanges
//! an earlier layer marked [`Unlimited`]. Over the limit: HTTP 429, gRPC RESOURCE_EXHAUSTED,
//! both with `retry-after` (whole seconds); every limited answer carries `x-ratelimit-*`.

use super::layer::{retry_after_secs, Answer, Check, Exchange, Layer};
use super::ratelimit::{self, Decision, RateLimiter};
use http::header::{HeaderValue, RETRY_AFTER};
use http::HeaderMap;
use sdsim_core::config::RateLimitConfig;
use sdsim_core::metrics::{Key, Metrics};
use sdsim_core::runtime::Shard;
use sdsim_core::shard::ShardId;
use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Instant;

/// Metric: requests rejected by the rate limiter.
pub const RATELIMIT_REJECTED: &str = "sdsim_ratelimit_rejected_total";
/// Metric: rate-limit checks that could not reach the owner shard (the request was allowed).
pub const RATELIMIT_UNAVAILABLE: &str = "sdsim_ratelimit_unavailable_total";

/// Methods of the standard health service, never limited.
const GRPC_HEALTH: &str = "/grpc.health.v1.Health/";

/// Marks an exchange that per-IP limits must not count: set by an earlier layer that knows the
/// caller is a service forwarding its own users' requests (already limited by their addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unlimited;

/// The shard-local limiter of the client IPs this shard owns.
struct OwnedLimiter(RefCell<RateLimiter>);

/// The layer; see the module documentation.
pub struct ClientRateLimit {
    cfg: RateLimitConfig,
    shard: Shard,
    metrics: Rc<Metrics>,
}

impl ClientRateLimit {
    /// The layer for the calling shard, installing the shard's limiter if no earlier stack
    /// did (every listener of a shard shares it). `None` when limiting is off or the caller
    /// is not a shard.
    pub fn install(cfg: &RateLimitConfig, metrics: Rc<Metrics>) -> Option<ClientRateLimit> {
        if !cfg.enabled {
            return None;
        }
        let shard = Shard::try_current()?;
        if shard.get::<OwnedLimiter>().is_none() {
            shard.insert(OwnedLimiter(RefCell::new(RateLimiter::new(cfg))));
        }
        Some(ClientRateLimit {
            cfg: cfg.clone(),
            shard,
            metrics,
        })
    }

    fn exempt(&self, ex: &Exchange) -> bool {
        ratelimit::is_exempt(&self.cfg, &ex.path)
            || ex.path.starts_with(GRPC_HEALTH)
            || ex.extensions.get::<Unlimited>().is_some()
    }

    /// Records the decision for `respond` and turns a denial into an answer.
    fn settle(&self, ex: &mut Exchange, decision: Option<Decision>) -> Option<Answer> {
        let decision = decision?;
        ex.extensions.insert(decision);
        if decision.allowed {
            return None;
        }
        self.metrics.inc(Key::plain(RATELIMIT_REJECTED), 1);
        Some(Answer::RateLimited {
            retry_after: decision
                .retry_after
                .unwrap_or(std::time::Duration::from_secs(1)),
        })
    }
}

/// Checks (and counts) one request on the owner shard; `None` if it has no limiter.
fn check_here(ip: IpAddr, route: &'static str) -> Option<Decision> {
    let shard = Shard::current();
    let limiter = shard.get::<OwnedLimiter>()?;
    let decision = limiter.0.borrow_mut().check(ip, route, Instant::now());
    Some(decision)
}

impl Layer for ClientRateLimit {
    fn request<'a>(&'a self, ex: &'a mut Exchange, _metadata: &'a HeaderMap) -> Check<'a> {
        if self.exempt(ex) {
            return Check::Pass;
        }
        let (ip, route) = (ex.peer.ip(), ex.route);
        let owner = ratelimit::owner_shard(ip, self.shard.count());
        if owner == self.shard.id().index() {
            return match self.settle(ex, check_here(ip, route)) {
                Some(answer) => Check::Answer(answer),
                None => Check::Pass,
            };
        }
        Check::Wait(Box::pin(async move {
            let asked = self
                .shard
                .mesh()
                .submit_to(ShardId(owner), move || check_here(ip, route))
                .await;
            let decision = match asked {
                Ok(decision) => decision,
                Err(e) => {
                    // Failing open: a stopped owner shard must not take the API down with it.
                    tracing::warn!(error = %e, "rate-limit owner shard unreachable; allowing");
                    self.metrics.inc(Key::plain(RATELIMIT_UNAVAILABLE), 1);
                    None
                }
            };
            self.settle(ex, decision)
        }))
    }

    fn respond(&self, ex: &Exchange, metadata: &mut HeaderMap) {
        let Some(decision) = ex.extensions.get::<Decision>() else {
            return;
        };
        for (name, value) in decision.headers() {
            metadata.insert(name, value);
        }
        if !decision.allowed {
            let wait = decision
                .retry_after
                .unwrap_or(std::time::Duration::from_secs(1));
            metadata.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs(wait)));
        }
    }
}
