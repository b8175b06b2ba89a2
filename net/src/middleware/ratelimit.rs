//! Per-client rate limiting, sans-IO (time is passed in).
//!
//! Each client IP (IPv6: its /64, which one host usually owns) has a token bucket
//! (`rate_per_s`, `burst`), optional multi-window tiers (e.g. 100/min, 500/10 min, 2000/h), and
//! optional per-route buckets. A request must pass every rule that applies; a denied request
//! consumes nothing. Tiers use the two-window sliding estimate (the count of the previous window
//! weighted by how much of it still overlaps the sliding window, plus the current count), which
//! needs two counters per tier instead of a log of timestamps.
//!
//! One [`RateLimiter`] lives on each shard and holds the clients that shard *owns*
//! ([`owner_shard`]); the middleware asks the owner through the mesh, so a client's limit holds
//! across all its connections whichever shards they landed on. Memory is bounded by
//! `max_clients`: when full, idle clients (whose state equals a fresh one) go first, then the
//! least recently seen that are not currently limited.

use http::{HeaderName, HeaderValue};
use sdsim_core::config::RateLimitConfig;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Which rule decided a [`Decision`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limiter {
    /// The client's token bucket.
    Bucket,
    /// Multi-window tier `n` of `ratelimit.tiers`.
    Tier(usize),
    /// The per-route bucket.
    Route,
}

/// The outcome of one check, with what the `X-RateLimit-*` headers report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// The limit of the rule closest to denying.
    pub limit: u32,
    /// Requests that rule still allows now.
    pub remaining: u32,
    /// Until that rule is fully reset.
    pub reset: Duration,
    /// When denied: until the denying rule allows one request.
    pub retry_after: Option<Duration>,
    /// The rule reported.
    pub limited_by: Limiter,
}

impl Decision {
    /// `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (whole seconds).
    pub fn headers(&self) -> [(HeaderName, HeaderValue); 3] {
        let reset = ceil_secs(self.reset);
        [
            (
                HeaderName::from_static("x-ratelimit-limit"),
                HeaderValue::from(self.limit),
            ),
            (
                HeaderName::from_static("x-ratelimit-remaining"),
                HeaderValue::from(self.remaining),
            ),
            (
                HeaderName::from_static("x-ratelimit-reset"),
                HeaderValue::from(reset),
            ),
        ]
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Whether `path` is exempt from limiting (`ratelimit.exempt_prefixes`).
pub fn is_exempt(cfg: &RateLimitConfig, path: &str) -> bool {
    cfg.exempt_prefixes
        .iter()
        .any(|p| path.starts_with(p.as_str()))
}

/// The key of a client: IPv4 addresses as themselves, IPv6 by /64.
fn client_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(u32::from(v4)),
            // Bit 32 set: never equal to an IPv4 key (those are below 2^32).
            None => (u128::from(v6) & !((1u128 << 64) - 1)) | (1u128 << 32),
        },
    }
}

/// The shard that owns `client`'s limits: a stable hash of its key.
pub fn owner_shard(client: IpAddr, shards: usize) -> usize {
    let key = client_key(client);
    // splitmix64 of the folded key: consecutive addresses spread evenly.
    let mut x = (key as u64) ^ ((key >> 64) as u64);
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x % shards.max(1) as u64) as usize
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn full(burst: u32, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(burst),
            updated: now,
        }
    }

    fn refill(&mut self, rate: f64, burst: u32, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(burst));
        self.updated = now;
    }

    fn report(&self, rate: f64, burst: u32, limiter: Limiter) -> Decision {
        let remaining = self.tokens.floor().max(0.0) as u32;
        let missing = f64::from(burst) - self.tokens;
        let retry = if self.tokens >= 1.0 {
            None
        } else {
            Some(secs((1.0 - self.tokens) / rate))
        };
        Decision {
            allowed: self.tokens >= 1.0,
            limit: burst,
            remaining,
            reset: secs(missing.max(0.0) / rate),
            retry_after: retry,
            limited_by: limiter,
        }
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.clamp(0.0, 1e9))
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    current: u32,
    previous: u32,
}

impl Window {
    fn advance(&mut self, length: Duration, now: Instant) {
        let elapsed = now.saturating_duration_since(self.start);
        if elapsed < length {
            return;
        }
        let windows = (elapsed.as_nanos() / length.as_nanos().max(1)) as u32;
        self.previous = if windows == 1 { self.current } else { 0 };
        self.current = 0;
        self.start += length * windows;
    }

    /// Requests counted in the sliding window ending now.
    fn estimate(&self, length: Duration, now: Instant) -> f64 {
        let into = now.saturating_duration_since(self.start).as_secs_f64() / length.as_secs_f64();
        f64::from(self.previous) * (1.0 - into).max(0.0) + f64::from(self.current)
    }

    fn report(&self, length: Duration, limit: u32, now: Instant, tier: usize) -> Decision {
        let used = self.estimate(length, now);
        let allowed = used + 1.0 <= f64::from(limit);
        let left_in_window = length.saturating_sub(now.saturating_duration_since(self.start));
        let retry_after = (!allowed).then(|| {
            // The previous window's weight decays linearly; find when one request fits.
            let excess = used + 1.0 - f64::from(limit);
            if self.previous > 0 {
                let t = excess / f64::from(self.previous) * length.as_secs_f64();
                secs(t).min(left_in_window)
            } else {
                left_in_window
            }
            .max(Duration::from_millis(1))
        });
        Decision {
            allowed,
            limit,
            remaining: (f64::from(limit) - used).floor().max(0.0) as u32,
            reset: left_in_window,
            retry_after,
            limited_by: Limiter::Tier(tier),
        }
    }
}

struct Client {
    bucket: Bucket,
    windows: Vec<Window>,
    routes: Vec<Option<Bucket>>,
    seen: Instant,
}

/// One shard's limiter; see the module documentation.
pub struct RateLimiter {
    cfg: RateLimitConfig,
    route_index: HashMap<String, usize>,
    clients: HashMap<u128, Client>,
}

impl RateLimiter {
    /// A limiter for `cfg`.
    pub fn new(cfg: &RateLimitConfig) -> RateLimiter {
        RateLimiter {
            cfg: cfg.clone(),
            route_index: cfg
                .routes
                .iter()
                .enumerate()
                .map(|(i, r)| (r.route.clone(), i))
                .collect(),
            clients: HashMap::new(),
        }
    }

    /// Clients currently tracked.
    pub fn tracked_clients(&self) -> usize {
        self.clients.len()
    }

    /// Checks (and, when allowed, counts) one request of `client` on `route` at `now`.
    pub fn check(&mut self, client: IpAddr, route: &str, now: Instant) -> Decision {
        let key = client_key(client);
        if !self.clients.contains_key(&key) && self.clients.len() >= self.cfg.max_clients {
            self.evict(now);
        }
        let cfg = &self.cfg;
        let state = self.clients.entry(key).or_insert_with(|| Client {
            bucket: Bucket::full(cfg.burst, now),
            windows: cfg
                .tiers
                .iter()
                .map(|_| Window {
                    start: now,
                    current: 0,
                    previous: 0,
                })
                .collect(),
            routes: vec![None; cfg.routes.len()],
            seen: now,
        });
        state.seen = now;
        state.bucket.refill(cfg.rate_per_s, cfg.burst, now);
        let mut decisions = Vec::with_capacity(2 + cfg.tiers.len());
        decisions.push(
            state
                .bucket
                .report(cfg.rate_per_s, cfg.burst, Limiter::Bucket),
        );
        for (i, (window, tier)) in state.windows.iter_mut().zip(&cfg.tiers).enumerate() {
            window.advance(tier.window, now);
            decisions.push(window.report(tier.window, tier.limit, now, i));
        }
        let route_slot = self.route_index.get(route).copied();
        if let Some(i) = route_slot {
            let limit = &cfg.routes[i];
            let bucket = state.routes[i].get_or_insert_with(|| Bucket::full(limit.burst, now));
            bucket.refill(limit.rate_per_s, limit.burst, now);
            decisions.push(bucket.report(limit.rate_per_s, limit.burst, Limiter::Route));
        }
        let denied = decisions
            .iter()
            .filter(|d| !d.allowed)
            .max_by_key(|d| d.retry_after.unwrap_or_default())
            .copied();
        if let Some(denied) = denied {
            return denied;
        }
        state.bucket.tokens -= 1.0;
        for window in &mut state.windows {
            window.current += 1;
        }
        if let Some(i) = route_slot {
            if let Some(bucket) = state.routes[i].as_mut() {
                bucket.tokens -= 1.0;
            }
        }
        // Report the rule with the fewest requests left now that this one is counted.
        let mut report = state
            .bucket
            .report(cfg.rate_per_s, cfg.burst, Limiter::Bucket);
        for (i, (window, tier)) in state.windows.iter().zip(&cfg.tiers).enumerate() {
            let d = window.report(tier.window, tier.limit, now, i);
            if d.remaining < report.remaining {
                report = d;
            }
        }
        if let Some(i) = route_slot {
            let limit = &cfg.routes[i];
            if let Some(d) =
                state.routes[i].map(|b| b.report(limit.rate_per_s, limit.burst, Limiter::Route))
            {
                if d.remaining < report.remaining {
                    report = d;
                }
            }
        }
        report.allowed = true;
        report.retry_after = None;
        report
    }

    /// Frees room: clients whose state is as good as new go first, then the least recently
    /// seen eighth of those not currently limited (a limited client must not escape its limit
    /// by being forgotten); only if every client is limited does the oldest go regardless.
    fn evict(&mut self, now: Instant) {
        let cfg = &self.cfg;
        let is_idle = |c: &Client| {
            let mut bucket = c.bucket;
            bucket.refill(cfg.rate_per_s, cfg.burst, now);
            let windows_clear = c.windows.iter().zip(&cfg.tiers).all(|(w, t)| {
                let mut w = *w;
                w.advance(t.window, now);
                w.estimate(t.window, now) == 0.0
            });
            let routes_full = c.routes.iter().zip(&cfg.routes).all(|(b, r)| {
                b.is_none_or(|mut b| {
                    b.refill(r.rate_per_s, r.burst, now);
                    b.tokens >= f64::from(r.burst)
                })
            });
            bucket.tokens >= f64::from(cfg.burst) && windows_clear && routes_full
        };
        self.clients.retain(|_, c| !is_idle(c));
        if self.clients.len() < cfg.max_clients {
            return;
        }
        // Limited by any rule: the bucket, a tier, or one of its route buckets.
        let is_limited = |c: &Client| {
            let mut bucket = c.bucket;
            bucket.refill(cfg.rate_per_s, cfg.burst, now);
            let tier_full = c.windows.iter().zip(&cfg.tiers).any(|(w, t)| {
                let mut w = *w;
                w.advance(t.window, now);
                w.estimate(t.window, now) + 1.0 > f64::from(t.limit)
            });
            let route_empty = c.routes.iter().zip(&cfg.routes).any(|(b, r)| {
                b.is_some_and(|mut b| {
                    b.refill(r.rate_per_s, r.burst, now);
                    b.tokens < 1.0
                })
            });
            bucket.tokens < 1.0 || tier_full || route_empty
        };
        let mut candidates: Vec<(Instant, u128)> = self
            .clients
            .iter()
            .filter(|(_, c)| !is_limited(c))
            .map(|(k, c)| (c.seen, *k))
            .collect();
        if candidates.is_empty() {
            candidates = self.clients.iter().map(|(k, c)| (c.seen, *k)).collect();
        }
        let batch = (cfg.max_clients / 8).clamp(1, candidates.len());
        candidates.select_nth_unstable(batch - 1);
        for (_, key) in &candidates[..batch] {
            self.clients.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sdsim_core::config::{RouteLimit, WindowTier};
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn cfg(rate: f64, burst: u32) -> RateLimitConfig {
        RateLimitConfig {
            rate_per_s: rate,
            burst,
            ..RateLimitConfig::default()
        }
    }

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn burst_then_refill() {
        let mut rl = RateLimiter::new(&cfg(10.0, 5));
        let t0 = Instant::now();
        for i in 0..5 {
            let d = rl.check(A, "/x", t0);
            assert!(d.allowed);
            assert_eq!(d.remaining, 4 - i);
            assert_eq!(d.limit, 5);
        }
        let denied = rl.check(A, "/x", t0);
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after, Some(Duration::from_millis(100)));
        assert!(
            rl.check(B, "/x", t0).allowed,
            "other clients are independent"
        );
        assert!(!rl.check(A, "/x", t0 + Duration::from_millis(99)).allowed);
        assert!(rl.check(A, "/x", t0 + Duration::from_millis(200)).allowed);
        let h = rl.check(B, "/x", t0 + Duration::from_secs(10)).headers();
        assert_eq!(h[0].1, "5");
        assert_eq!(h[1].1, "4");
        assert_eq!(h[2].1, "1");
    }

    #[test]
    fn denied_requests_consume_nothing() {
        let mut rl = RateLimiter::new(&cfg(1.0, 1));
        let t0 = Instant::now();
        assert!(rl.check(A, "/", t0).allowed);
        for _ in 0..100 {
            assert!(!rl.check(A, "/", t0 + Duration::from_millis(500)).allowed);
        }
        assert!(rl.check(A, "/", t0 + Duration::from_millis(1001)).allowed);
    }

    #[test]
    fn tiers_deny_after_the_window_limit_and_recover() {
        let mut c = cfg(1000.0, 1000);
        c.tiers = vec![WindowTier {
            window: Duration::from_secs(60),
            limit: 3,
        }];
        let mut rl = RateLimiter::new(&c);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(rl.check(A, "/", t0).allowed);
        }
        let d = rl.check(A, "/", t0 + Duration::from_secs(1));
        assert!(!d.allowed);
        assert_eq!(d.limited_by, Limiter::Tier(0));
        assert_eq!(d.retry_after, Some(Duration::from_secs(59)));
        // Half-way through the next window the previous count weighs half: 1.5 + 1 ≤ 3.
        assert!(rl.check(A, "/", t0 + Duration::from_secs(90)).allowed);
        assert!(rl.check(A, "/", t0 + Duration::from_secs(200)).allowed);
    }

    #[test]
    fn route_limits_apply_per_route() {
        let mut c = cfg(1000.0, 1000);
        c.routes = vec![RouteLimit {
            route: "/login".into(),
            rate_per_s: 1.0,
            burst: 2,
        }];
        let mut rl = RateLimiter::new(&c);
        let t0 = Instant::now();
        assert!(rl.check(A, "/login", t0).allowed);
        assert!(rl.check(A, "/login", t0).allowed);
        let d = rl.check(A, "/login", t0);
        assert!(!d.allowed);
        assert_eq!(d.limited_by, Limiter::Route);
        assert!(rl.check(A, "/other", t0).allowed);
        assert!(rl.check(B, "/login", t0).allowed);
    }

    #[test]
    fn memory_is_bounded_and_limited_clients_are_kept() {
        let mut c = cfg(1.0, 2);
        c.max_clients = 100;
        let mut rl = RateLimiter::new(&c);
        let t0 = Instant::now();
        // Client A exhausts its bucket.
        rl.check(A, "/", t0);
        rl.check(A, "/", t0);
        assert!(!rl.check(A, "/", t0).allowed);
        for i in 0..10_000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + i));
            rl.check(ip, "/", t0 + Duration::from_millis(1));
            assert!(rl.tracked_clients() <= 100);
        }
        assert!(
            !rl.check(A, "/", t0 + Duration::from_millis(2)).allowed,
            "A is still limited"
        );
    }

    #[test]
    fn eviction_keeps_clients_limited_by_a_route_or_a_tier() {
        let mut c = cfg(1000.0, 1000);
        c.max_clients = 50;
        c.routes = vec![RouteLimit {
            route: "/login".into(),
            rate_per_s: 0.01,
            burst: 1,
        }];
        c.tiers = vec![WindowTier {
            window: Duration::from_secs(3600),
            limit: 2,
        }];
        let mut rl = RateLimiter::new(&c);
        let t0 = Instant::now();
        // A is limited by the tier (2 requests), B only by its /login route bucket.
        assert!(rl.check(A, "/", t0).allowed);
        assert!(rl.check(A, "/", t0).allowed);
        assert!(rl.check(B, "/login", t0).allowed);
        // Thousands of newer clients, one request each: tracked but never limited.
        for i in 0..5_000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0c00_0000 + i));
            assert!(
                rl.check(ip, "/", t0 + Duration::from_millis(u64::from(i)))
                    .allowed
            );
            assert!(rl.tracked_clients() <= 50);
        }
        let later = t0 + Duration::from_secs(10);
        let a = rl.check(A, "/", later);
        assert!(!a.allowed, "A was evicted and escaped its tier");
        assert_eq!(a.limited_by, Limiter::Tier(0));
        let b = rl.check(B, "/login", later);
        assert!(!b.allowed, "B was evicted and escaped its route limit");
        assert_eq!(b.limited_by, Limiter::Route);
    }

    #[test]
    fn ipv6_groups_by_64_and_owner_is_stable_and_spread() {
        let mut rl = RateLimiter::new(&cfg(1.0, 1));
        let t0 = Instant::now();
        let a1 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, 1));
        let a2 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 9, 9, 9, 9));
        let other = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 1));
        assert!(rl.check(a1, "/", t0).allowed);
        assert!(!rl.check(a2, "/", t0).allowed, "same /64");
        assert!(rl.check(other, "/", t0).allowed);
        assert_eq!(owner_shard(a1, 4), owner_shard(a2, 4));
        let mut counts = [0usize; 4];
        for i in 0..4000u32 {
            counts[owner_shard(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), 4)] += 1;
        }
        assert!(
            counts.iter().all(|&n| (800..1200).contains(&n)),
            "{counts:?}"
        );
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert_eq!(owner_shard(mapped, 7), owner_shard(A, 7));
    }

    #[test]
    fn exempt_prefixes() {
        let c = RateLimitConfig::default();
        assert!(is_exempt(&c, "/health"));
        assert!(is_exempt(&c, "/health/ready"));
        assert!(!is_exempt(&c, "/api/x"));
    }
}
