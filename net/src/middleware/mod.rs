//! The middleware stack, assembled in one place ([`Stack::from_config`]) and run top-down for
//! every request ([`App::handle`]):
//!
//! 1. request id: a sane incoming `X-Request-Id` is kept, otherwise one is generated;
//! 2. CORS preflight (`OPTIONS` with `Origin`) is answered here;
//! 3. rate limit per client IP, checked on the IP's owner shard through the mesh (health paths
//!    exempt) → 429 with `Retry-After`;
//! 4. router → handler; a handler panic becomes a 500 and the connection and shard survive; a
//!    handler still working after `http.handler_timeout` is dropped and answered 503 `timeout`;
//! 5. on the way out: CORS headers, `X-RateLimit-*`, compression (large bodies on the blocking
//!    pool), `X-Content-Type-Options: nosniff` (and `Strict-Transport-Security` on TLS),
//!    `X-Request-Id`, `X-Response-Time`, metrics (requests by route and status, latency HDR per
//!    route), the access-log line (never the body), and a slow-request warning.
//!
//! Each layer takes only its own slice of the configuration.

pub mod compress;
pub mod cors;
pub mod ratelimit;

use crate::conn::ConnInfo;
use crate::http::router::{Lookup, Router};
use crate::http::types::{error, ClientAddr, MatchedRoute, Request, RequestId, Response};
use cors::Cors;
use futures_util::FutureExt;
use http::header::{
    HeaderValue, ACCEPT_ENCODING, ALLOW, ORIGIN, RETRY_AFTER, STRICT_TRANSPORT_SECURITY,
    X_CONTENT_TYPE_OPTIONS,
};
use http::{HeaderName, Method, StatusCode};
use ratelimit::{Decision, RateLimiter};
use sdsim_core::config::{CompressionConfig, Config, RateLimitConfig};
use sdsim_core::metrics::{Key, LabelValue, Metrics};
use sdsim_core::runtime::Shard;
use sdsim_core::shard::ShardId;
use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Metric: requests by route, method and status.
pub const REQUESTS_TOTAL: &str = "sdsim_http_requests_total";
/// Metric: request latency by route (histogram, seconds).
pub const REQUEST_DURATION: &str = "sdsim_http_request_duration_seconds";
/// Metric: response body bytes by route.
pub const RESPONSE_BYTES: &str = "sdsim_http_response_bytes_total";
/// Metric: requests rejected by the rate limiter.
pub const RATELIMIT_REJECTED: &str = "sdsim_ratelimit_rejected_total";
/// Metric: rate-limit checks that could not reach the owner shard (the request was allowed).
pub const RATELIMIT_UNAVAILABLE: &str = "sdsim_ratelimit_unavailable_total";
/// Metric: handler panics turned into 500 responses.
pub const HANDLER_PANICS: &str = "sdsim_http_handler_panics_total";
/// Metric: handlers abandoned at `http.handler_timeout` (answered 503).
pub const HANDLER_TIMEOUTS: &str = "sdsim_http_handler_timeouts_total";

/// HSTS on TLS connections: browsers then refuse plain HTTP to this host for a year.
const HSTS: HeaderValue = HeaderValue::from_static("max-age=31536000");

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_RESPONSE_TIME: HeaderName = HeaderName::from_static("x-response-time");

/// Router plus middleware: what a connection hands each request to.
pub struct App {
    router: Router,
    stack: Stack,
}

impl App {
    /// Combines a router with the middleware stack.
    pub fn new(router: Router, stack: Stack) -> App {
        App { router, stack }
    }

    /// Runs one request through the stack and the router.
    pub async fn handle(&self, mut req: Request, conn: &ConnInfo) -> Response {
        let stack = &self.stack;
        let started = Instant::now();
        let request_id = stack.request_id(&req);
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let accept_encoding = req.headers().get(ACCEPT_ENCODING).cloned();
        let origin = req.headers().get(ORIGIN).cloned();
        let lookup = self.router.lookup(&method, &path);
        let pattern = match &lookup {
            Lookup::Found { pattern, .. } | Lookup::MethodNotAllowed { pattern, .. } => *pattern,
            Lookup::NotFound => "unmatched",
        };

        let preflight = stack.cors.as_ref().and_then(|c| c.preflight(&req));
        let mut decision = None;
        let mut response = if let Some(preflight) = preflight {
            preflight
        } else {
            decision = stack.rate_limit(conn.peer.ip(), &path, pattern).await;
            match decision {
                Some(d) if !d.allowed => stack.too_many_requests(&d),
                _ => {
                    let ext = req.extensions_mut();
                    ext.insert(ClientAddr(conn.peer));
                    ext.insert(RequestId(request_id.clone()));
                    ext.insert(MatchedRoute(pattern));
                    let deadline = stack.handler_timeout;
                    let handled = dispatch(lookup, req, &stack.metrics, &request_id);
                    match monoio::time::timeout(deadline, handled).await {
                        Ok(response) => response,
                        Err(_) => stack.timed_out(&method, pattern, &request_id),
                    }
                }
            }
        };

        stack
            .finish(
                &mut response,
                origin.as_ref(),
                accept_encoding.as_ref(),
                decision.as_ref(),
            )
            .await;
        let elapsed = started.elapsed();
        let headers = response.headers_mut();
        headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        if conn.tls {
            headers.insert(STRICT_TRANSPORT_SECURITY, HSTS);
        }
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            headers.insert(X_REQUEST_ID, v);
        }
        if let Ok(v) = HeaderValue::from_str(&format!("{:.3}ms", elapsed.as_secs_f64() * 1e3)) {
            headers.insert(X_RESPONSE_TIME, v);
        }
        stack.observe(
            &method,
            &path,
            pattern,
            &response,
            elapsed,
            &request_id,
            conn,
        );
        response
    }
}

async fn dispatch(
    lookup: Lookup,
    mut req: Request,
    metrics: &Metrics,
    request_id: &str,
) -> Response {
    match lookup {
        Lookup::Found {
            handler, params, ..
        } => {
            req.extensions_mut().insert(params);
            match AssertUnwindSafe(handler(req)).catch_unwind().await {
                Ok(response) => response,
                Err(panic) => {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "non-string panic".into());
                    tracing::error!(request_id, panic = %what, "handler panicked");
                    metrics.inc(Key::plain(HANDLER_PANICS), 1);
                    error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal_error",
                        "the server failed to handle this request",
                    )
                }
            }
        }
        Lookup::MethodNotAllowed { allow, .. } => {
            let mut resp = error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                &format!(
                    "method {} is not allowed here; allowed: {allow}",
                    req.method()
                ),
            );
            if let Ok(v) = HeaderValue::from_str(&allow) {
                resp.headers_mut().insert(ALLOW, v);
            }
            resp
        }
        Lookup::NotFound => error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no route for {}", req.uri().path()),
        ),
    }
}

/// The shard-local limiter of the client IPs this shard owns.
struct OwnedLimiter(RefCell<RateLimiter>);

/// The middleware layers of one shard, each holding only its own configuration.
pub struct Stack {
    ratelimit: Option<RateLimitConfig>,
    cors: Option<Cors>,
    compression: CompressionConfig,
    access_log: bool,
    slow_request: Duration,
    handler_timeout: Duration,
    metrics: Rc<Metrics>,
    shard: Option<Shard>,
    id_seed: u64,
    id_counter: Cell<u64>,
}

impl Stack {
    /// Assembles the stack for the calling shard from the configuration: the one place where
    /// layers are chosen and ordered. Installs this shard's rate limiter.
    pub fn from_config(cfg: &Config, metrics: Rc<Metrics>) -> Stack {
        let shard = Shard::try_current();
        let ratelimit = cfg.ratelimit.enabled.then(|| cfg.ratelimit.clone());
        if let (Some(rl), Some(shard)) = (&ratelimit, &shard) {
            shard.insert(OwnedLimiter(RefCell::new(RateLimiter::new(rl))));
        }
        let shard_index = shard.as_ref().map_or(0, |s| s.id().index() as u64);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Stack {
            ratelimit,
            cors: Cors::new(&cfg.cors),
            compression: cfg.compression.clone(),
            access_log: cfg.log.access,
            slow_request: cfg.http.slow_request,
            handler_timeout: cfg.http.handler_timeout,
            metrics,
            shard,
            id_seed: nanos.rotate_left(17) ^ (shard_index << 56),
            id_counter: Cell::new(0),
        }
    }

    fn request_id(&self, req: &Request) -> String {
        if let Some(incoming) = req.headers().get(X_REQUEST_ID) {
            let bytes = incoming.as_bytes();
            let sane = !bytes.is_empty()
                && bytes.len() <= 128
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b));
            if sane {
                return String::from_utf8_lossy(bytes).into_owned();
            }
        }
        let n = self.id_counter.get().wrapping_add(1);
        self.id_counter.set(n);
        format!("{:016x}", self.id_seed.wrapping_add(n))
    }

    /// Checks the client's limits on its owner shard. `None` when limiting does not apply.
    async fn rate_limit(&self, ip: IpAddr, path: &str, pattern: &'static str) -> Option<Decision> {
        let cfg = self.ratelimit.as_ref()?;
        if ratelimit::is_exempt(cfg, path) {
            return None;
        }
        let shard = self.shard.as_ref()?;
        let owner = ratelimit::owner_shard(ip, shard.count());
        let check = move || {
            let shard = Shard::current();
            let limiter = shard.get::<OwnedLimiter>()?;
            let decision = limiter.0.borrow_mut().check(ip, pattern, Instant::now());
            Some(decision)
        };
        let decision = if owner == shard.id().index() {
            check()
        } else {
            match shard.mesh().submit_to(ShardId(owner), check).await {
                Ok(decision) => decision,
                Err(e) => {
                    // Failing open: a stopped owner shard must not take the API down with it.
                    tracing::warn!(error = %e, "rate-limit owner shard unreachable; allowing");
                    self.metrics.inc(Key::plain(RATELIMIT_UNAVAILABLE), 1);
                    None
                }
            }
        };
        if let Some(d) = &decision {
            if !d.allowed {
                self.metrics.inc(Key::plain(RATELIMIT_REJECTED), 1);
            }
        }
        decision
    }

    fn too_many_requests(&self, decision: &Decision) -> Response {
        let wait = decision.retry_after.unwrap_or(Duration::from_secs(1));
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut resp = error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            &format!("too many requests from this client; retry in {secs} s"),
        );
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
        resp
    }

    /// The answer to a request whose handler did not finish in time (it has been dropped).
    fn timed_out(&self, method: &Method, pattern: &str, request_id: &str) -> Response {
        let limit = sdsim_core::config::format_duration(self.handler_timeout);
        tracing::warn!(request_id, method = %method, route = pattern, %limit, "handler timed out");
        self.metrics.inc(Key::plain(HANDLER_TIMEOUTS), 1);
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            &format!("{method} {pattern} timed out after {limit} (http.handler_timeout)"),
        )
    }

    async fn finish(
        &self,
        response: &mut Response,
        origin: Option<&HeaderValue>,
        accept_encoding: Option<&HeaderValue>,
        decision: Option<&Decision>,
    ) {
        if let Some(cors) = &self.cors {
            cors.apply(origin, response);
        }
        if let Some(d) = decision {
            for (name, value) in d.headers() {
                response.headers_mut().insert(name, value);
            }
        }
        let pool = self.shard.as_ref().map(|s| s.blocking().as_ref());
        let compressed = compress::compress_response_off_shard(
            response,
            accept_encoding,
            &self.compression,
            pool,
        )
        .await;
        if compressed == compress::Compressed::Refused {
            tracing::debug!("blocking pool full: a large response goes uncompressed");
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn observe(
        &self,
        method: &Method,
        path: &str,
        pattern: &'static str,
        response: &Response,
        elapsed: Duration,
        request_id: &str,
        conn: &ConnInfo,
    ) {
        let status = response.status().as_u16();
        let bytes = response.body().len();
        let method_label = method_label(method);
        let route = ("route", LabelValue::Str(pattern));
        self.metrics.inc(
            Key::with3(
                REQUESTS_TOTAL,
                route.clone(),
                ("method", LabelValue::Str(method_label)),
                ("status", LabelValue::Int(u64::from(status))),
            ),
            1,
        );
        self.metrics.record_us(
            Key::with1(REQUEST_DURATION, route.clone()),
            elapsed.as_micros() as u64,
        );
        self.metrics
            .inc(Key::with1(RESPONSE_BYTES, route), bytes as u64);
        let duration_ms = elapsed.as_secs_f64() * 1e3;
        if self.access_log {
            tracing::info!(
                target: "sdsim::access",
                method = method_label,
                path,
                status,
                bytes,
                duration_ms,
                request_id,
                peer = %conn.peer,
                "request"
            );
        }
        if elapsed > self.slow_request {
            tracing::warn!(
                method = method_label,
                path,
                status,
                duration_ms,
                request_id,
                "slow request"
            );
        }
    }
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}
