//! The middleware: one ordered list of layers ([`layer::Layers`]) that runs on HTTP/1.1 and on
//! gRPC, assembled in one place ([`Stack::from_config`]), each layer taking only its own slice
//! of the configuration. In order:
//!
//! 1. [`request_id`]: a sane incoming `x-request-id` is kept, otherwise one is generated;
//!    echoed in the response (header / gRPC metadata); then [`trace_context`] (W3C; with
//!    `[otel]` on it samples, and [`server_spans`] records a span per request or call);
//! 2. [`cors`] (HTTP only): preflights (`OPTIONS` with `Origin`) are answered here; CORS
//!    response headers;
//! 3. [`shed`]: while the shard is overloaded (queueing delay above `shedding.target` for a
//!    whole `shedding.interval`), new work is admitted only at the rate the shard can serve
//!    and the excess refused → HTTP 503 / gRPC RESOURCE_EXHAUSTED with `retry-after` (health,
//!    metrics, token validation exempt). HTTP requests are decided before the stack, by the
//!    connection loop ([`App::shed`]); this layer decides gRPC calls;
//! 4. [`service_callers`]: calls with a service token are not limited per IP (step 5);
//! 5. [`client_limit`]: rate limit per client IP, checked on the IP's owner shard through the
//!    mesh (health exempt) → HTTP 429 / gRPC RESOURCE_EXHAUSTED, with `retry-after`;
//!    `x-ratelimit-*` on every limited answer;
//! 6. [`request_metrics`]: requests by route and status, latency HDR per route (HTTP); calls by
//!    service, method and code, duration HDR per method (gRPC);
//! 7. [`access_log`]: one line per request or call (`log.access`).
//!
//! An authentication layer belongs between 2 and 3, so that the rate limit can trust its
//! caller. The HTTP adapter ([`App::handle`]) adds what only HTTP has: router → handler (a
//! handler panic becomes a 500 and the connection and shard survive; a handler still working
//! after `http.handler_timeout` is dropped and answered 503 `timeout`), compression (bodies over
//! `compression.offload_bytes` on the blocking pool, off the shard),
//! `X-Content-Type-Options: nosniff` (and `Strict-Transport-Security` on TLS),
//! `X-Response-Time` and the slow-request warning. The gRPC adapter is the stream task of
//! `grpc::server`.
//!
//! Adding a layer: a file here implementing [`layer::Layer`], and one line in
//! [`Stack::from_config`] (plus its `mod` line). What it learns reaches the handler through
//! [`layer::Exchange::extensions`], and the log lines through [`layer::Exchange::span`].

pub mod access_log;
pub mod client_limit;
pub mod compress;
pub mod cors;
pub mod layer;
pub mod log_writer;
pub mod ratelimit;
pub mod request_id;
pub mod request_metrics;
pub mod server_spans;
pub mod service_callers;
pub mod shed;
pub mod trace_context;

use crate::conn::ConnInfo;
use crate::http::encode::HttpDate;
use crate::http::router::{Lookup, Router};
use crate::http::types::{error, ClientAddr, MatchedRoute, Request, RequestId, Response};
use access_log::{AccessLog, BufferedAccessLog};
use bytes::BytesMut;
use client_limit::ClientRateLimit;
use cors::Cors;
use futures_util::FutureExt;
use http::header::{
    HeaderValue, ACCEPT_ENCODING, ALLOW, ORIGIN, STRICT_TRANSPORT_SECURITY, X_CONTENT_TYPE_OPTIONS,
};
use http::{HeaderName, Method, StatusCode};
use layer::{Ended, Exchange, Layers, Outcome, UNMATCHED};
use request_id::RequestIds;
use request_metrics::{method_label, RequestMetrics};
use sdsim_core::blocking::BlockingPool;
use sdsim_core::config::{
    CompressionConfig, CorsConfig, HttpConfig, LogConfig, RateLimitConfig, SheddingConfig,
};
use sdsim_core::metrics::{Key, Metrics};
use sdsim_core::runtime::Shard;
use service_callers::{IsServiceToken, ServiceCallers};
use std::cell::RefCell;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

pub use client_limit::{RATELIMIT_REJECTED, RATELIMIT_UNAVAILABLE};
pub use request_metrics::{
    GRPC_REQUESTS_TOTAL, GRPC_REQUEST_DURATION, REQUESTS_TOTAL, REQUEST_DURATION, RESPONSE_BYTES,
};
pub use shed::SHED_TOTAL;

/// Metric: handler panics turned into 500 responses.
pub const HANDLER_PANICS: &str = "sdsim_http_handler_panics_total";
/// Metric: handlers abandoned at `http.handler_timeout` (answered 503).
pub const HANDLER_TIMEOUTS: &str = "sdsim_http_handler_timeouts_total";

/// HSTS on TLS connections: browsers then refuse plain HTTP to this host for a year.
const HSTS: HeaderValue = HeaderValue::from_static("max-age=31536000");

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

    /// The load-shedding decision for a decoded HTTP request, taken by the connection loop
    /// before any other work is done for it. `true`: refused, and the refusal is already in
    /// `out` (framed by `keep_alive`, stamped with `date`'s now). A refused request with `Origin` while
    /// CORS is on is marked instead and answered by the layers, which add the CORS headers a
    /// browser needs to read the refusal.
    pub fn shed(
        &self,
        req: &mut Request,
        keep_alive: bool,
        date: &RefCell<HttpDate>,
        out: &mut BytesMut,
    ) -> bool {
        let Some(shedder) = &self.stack.shedder else {
            return false;
        };
        if !shedder.refuses_http(req) {
            return false;
        }
        if self.stack.cors && req.headers().contains_key(ORIGIN) {
            req.extensions_mut().insert(shed::Refused);
            return false;
        }
        shedder.encode_refusal(req, keep_alive, date.borrow_mut().now(), out);
        true
    }

    /// Runs one request through the layers and the router.
    pub async fn handle(&self, mut req: Request, conn: &ConnInfo) -> Response {
        let stack = &self.stack;
        let started = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let accept_encoding = req.headers().get(ACCEPT_ENCODING).cloned();
        let lookup = self.router.lookup(&method, &path);
        let pattern = match &lookup {
            Lookup::Found { pattern, .. } | Lookup::MethodNotAllowed { pattern, .. } => *pattern,
            Lookup::NotFound => UNMATCHED,
        };
        let mut ex = Exchange::http(method.clone(), path, pattern, conn.peer);
        if req.extensions_mut().remove::<shed::Refused>().is_some() {
            ex.extensions.insert(shed::Refused);
        }
        let answer = stack.layers.request(&mut ex, req.headers()).await;
        let mut response = match answer {
            Some(answer) => answer.into_http(),
            None => {
                let ext = req.extensions_mut();
                ext.extend(ex.extensions.clone());
                ext.insert(ClientAddr(conn.peer));
                ext.insert(RequestId(ex.request_id.clone()));
                ext.insert(MatchedRoute(pattern));
                let handled = dispatch(lookup, req, &stack.metrics, &ex.request_id)
                    .instrument(ex.span.clone());
                // The calls the handler makes are children of this request's span.
                let trace = ex.extensions.get::<trace_context::TraceContext>().cloned();
                let handled = crate::otel::current::traced(trace, handled);
                // What the handler calls in other services must answer before it is
                // abandoned.
                let until = Instant::now() + stack.handler_timeout;
                let handled = crate::deadline::within(Some(until), handled);
                match monoio::time::timeout(stack.handler_timeout, handled).await {
                    Ok(response) => response,
                    Err(_) => ex
                        .span
                        .in_scope(|| stack.timed_out(&method, pattern, &ex.request_id)),
                }
            }
        };
        stack.layers.respond(&ex, response.headers_mut());
        let compressed = compress::compress_response_off_shard(
            &mut response,
            accept_encoding.as_ref(),
            &stack.compression,
            stack.blocking.as_deref(),
        )
        .await;
        if compressed == compress::Compressed::Refused {
            tracing::debug!("blocking pool full: a large response goes uncompressed");
        }
        let headers = response.headers_mut();
        headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        if conn.tls {
            headers.insert(STRICT_TRANSPORT_SECURITY, HSTS);
        }
        let elapsed = started.elapsed();
        if let Ok(v) = HeaderValue::from_str(&format!("{:.3}ms", elapsed.as_secs_f64() * 1e3)) {
            response.headers_mut().insert(X_RESPONSE_TIME, v);
        }
        let status = response.status();
        let outcome = Outcome {
            ended: Ended::Http {
                status,
                body_bytes: response.body().len(),
            },
            elapsed,
        };
        stack.layers.done(&ex, &outcome);
        if elapsed > stack.slow_request {
            let _in_exchange = ex.span.enter();
            if let layer::Protocol::Http { method } = &ex.protocol {
                tracing::warn!(
                    method = method_label(method),
                    path = &*ex.path,
                    status = status.as_u16(),
                    duration_ms = sdsim_core::millis(elapsed),
                    request_id = ex.request_id,
                    "slow request"
                );
            }
        }
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

/// The middleware of one listener on one shard: the layers both protocols run, and the
/// HTTP-only settings.
pub struct Stack {
    layers: Rc<Layers>,
    compression: CompressionConfig,
    /// Where large bodies are compressed (the shard's blocking pool; none off a shard).
    blocking: Option<Arc<BlockingPool>>,
    slow_request: Duration,
    handler_timeout: Duration,
    metrics: Rc<Metrics>,
    /// The shard's load shedding (also in `layers`, for gRPC); `None` when off.
    shedder: Option<Rc<shed::Shedder>>,
    /// Whether the CORS layer runs.
    cors: bool,
}

/// The sections of the configuration the stack reads; each layer takes only its own.
#[derive(Debug, Clone, Default)]
pub struct StackConfig {
    /// `[http]`: slow-request logging and the handler timeout.
    pub http: HttpConfig,
    /// `[ratelimit]`: the rate-limit layer.
    pub ratelimit: RateLimitConfig,
    /// `[cors]`: the CORS layer.
    pub cors: CorsConfig,
    /// `[shedding]`: the load-shedding layer.
    pub shedding: SheddingConfig,
    /// `[compression]`: response compression.
    pub compression: CompressionConfig,
    /// `[log]`: whether the access-log layer runs.
    pub log: LogConfig,
}

impl Stack {
    /// Assembles the stack for the calling shard from the configuration: the one place where
    /// layers are chosen and ordered (see the module documentation). `service_tokens` tells
    /// which bearer tokens are services' (exempt from per-IP limits); `None` when no service
    /// token is configured.
    pub fn from_config(
        cfg: &StackConfig,
        metrics: Rc<Metrics>,
        service_tokens: Option<IsServiceToken>,
    ) -> Stack {
        let shard = Shard::try_current();
        let shard_index = shard.as_ref().map_or(0, |s| s.id().index());
        let rate_limit = ClientRateLimit::install(&cfg.ratelimit, Rc::clone(&metrics));
        let mut layers = Layers::new();
        layers.push(RequestIds::new(shard_index));
        let tracing = crate::otel::installed();
        layers.push(match &tracing {
            Some(spans) => trace_context::TraceContexts::with_sampler(spans.sampler()),
            None => trace_context::TraceContexts::new(),
        });
        if let Some(spans) = tracing {
            layers.push(server_spans::ServerSpans::new(spans));
        }
        let cors = Cors::new(&cfg.cors);
        let cors_on = cors.is_some();
        if let Some(cors) = cors {
            layers.push(cors);
        }
        let shedder = shed::Shedder::install(&cfg.shedding, Rc::clone(&metrics)).map(Rc::new);
        if let Some(shedder) = &shedder {
            layers.push(shed::ShedLayer(Rc::clone(shedder)));
        }
        if let (Some(rate_limit), service_tokens) = (rate_limit, service_tokens) {
            if let Some(is_service) = service_tokens {
                layers.push(ServiceCallers::new(is_service));
            }
            layers.push(rate_limit);
        }
        layers.push(RequestMetrics::new(Rc::clone(&metrics)));
        if cfg.log.access {
            match access_log::installed() {
                Some((source, format)) => layers.push(BufferedAccessLog::new(
                    source.shard_log(),
                    format,
                    Rc::clone(&metrics),
                )),
                None => layers.push(AccessLog),
            };
        }
        Stack {
            layers: Rc::new(layers),
            compression: cfg.compression.clone(),
            blocking: shard.map(|s| Arc::clone(s.blocking())),
            slow_request: cfg.http.slow_request,
            handler_timeout: cfg.http.handler_timeout,
            metrics,
            shedder,
            cors: cors_on,
        }
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

    /// The layers, for a gRPC server on the same shard (`grpc::Services::set_layers`).
    pub fn layers(&self) -> Rc<Layers> {
        Rc::clone(&self.layers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::header::{ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY};
    use http::Method;

    const APP: &str = "https://app.example.com";

    fn app(cfg: &StackConfig) -> App {
        let mut router = Router::new();
        router
            .route(Method::GET, "/x", |_req: Request| async move {
                crate::http::types::with_body(StatusCode::OK, "text/plain", Bytes::new())
            })
            .unwrap();
        App::new(
            router,
            Stack::from_config(cfg, Rc::new(Metrics::new()), None),
        )
    }

    fn send(app: &App, req: Request) -> Response {
        let conn = ConnInfo {
            peer: "127.0.0.1:5000".parse().unwrap(),
            tls: false,
        };
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(app.handle(req, &conn))
    }

    fn request(method: Method, headers: &[(http::HeaderName, &'static str)]) -> Request {
        let mut b = http::Request::builder().method(method).uri("/x");
        for (name, value) in headers {
            b = b.header(name, *value);
        }
        b.body(Bytes::new()).unwrap()
    }

    /// CORS runs in the shared layer list: a preflight is answered by it (with the CORS and
    /// request-id headers every answer gets), other requests go on to the handler.
    #[test]
    fn cors_preflight_and_headers_through_the_layers() {
        let mut cfg = StackConfig::default();
        cfg.cors.allowed_origins = vec![APP.into()];
        let app = app(&cfg);
        let preflight = send(
            &app,
            request(
                Method::OPTIONS,
                &[(ORIGIN, APP), (ACCESS_CONTROL_REQUEST_METHOD, "GET")],
            ),
        );
        assert_eq!(preflight.status(), StatusCode::NO_CONTENT);
        assert_eq!(preflight.headers()[ACCESS_CONTROL_ALLOW_ORIGIN], APP);
        assert!(preflight.headers().contains_key(request_id::X_REQUEST_ID));
        assert!(preflight.headers().contains_key(X_RESPONSE_TIME));

        let plain = send(&app, request(Method::GET, &[(ORIGIN, APP)]));
        assert_eq!(plain.status(), StatusCode::OK);
        assert_eq!(plain.headers()[ACCESS_CONTROL_ALLOW_ORIGIN], APP);
        assert_eq!(plain.headers()[VARY], "origin");

        let stranger = send(
            &app,
            request(Method::GET, &[(ORIGIN, "https://evil.example.com")]),
        );
        assert!(!stranger.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
        assert_eq!(
            send(&app, request(Method::DELETE, &[])).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    /// What [`Tagger`] learned about a request.
    #[derive(Clone)]
    struct Tag(&'static str);

    /// A layer that learns something about every request.
    struct Tagger;

    impl layer::Layer for Tagger {
        fn request<'a>(
            &'a self,
            ex: &'a mut Exchange,
            _metadata: &'a http::HeaderMap,
        ) -> layer::Check<'a> {
            ex.span = tracing::info_span!(target: access_log::TARGET, parent: &ex.span, "tagged", tag = "t-42");
            ex.extensions.insert(Tag("t-42"));
            layer::Check::Pass
        }
    }

    /// Text log output.
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A layer adds to the handler's request and to every log line of the exchange without
    /// the adapter, the handler or the access log knowing it.
    #[test]
    fn a_layers_extension_reaches_the_handler_and_its_span_fields_the_log_lines() {
        let mut router = Router::new();
        router
            .route(Method::GET, "/x", |req: Request| async move {
                let tag = req.extensions().get::<Tag>().map_or("none", |t| t.0);
                tracing::info!(target: "test_handler", "handling");
                crate::http::types::with_body(StatusCode::OK, "text/plain", Bytes::from(tag))
            })
            .unwrap();
        let mut stack = Stack::from_config(&StackConfig::default(), Rc::new(Metrics::new()), None);
        let mut layers = Layers::new();
        layers.push(Tagger).push(AccessLog);
        stack.layers = Rc::new(layers);
        let app = App::new(router, stack);
        let log = Captured::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .with_writer(move || writer.clone())
            .finish();
        let response =
            tracing::subscriber::with_default(subscriber, || send(&app, request(Method::GET, &[])));
        assert_eq!(&response.body()[..], b"t-42");
        let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        let line = |target: &str| {
            text.lines()
                .find(|l| l.contains(target))
                .unwrap_or_else(|| panic!("no {target} line in\n{text}"))
                .to_owned()
        };
        assert!(
            line("test_handler").contains(r#"tagged{tag="t-42"}: test_handler: handling"#),
            "{text}"
        );
        let access = line(access_log::TARGET);
        assert!(
            access.contains(r#"tagged{tag="t-42"}: sdsim::access: request"#),
            "{access}"
        );
        assert!(access.contains("status=200"), "{access}");
    }
}
