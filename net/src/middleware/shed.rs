//! Load shedding: while the shard is overloaded ([`sdsim_core::load`]: its queueing delay stayed
//! above `shedding.target` for a whole `shedding.interval`), it admits new requests and calls
//! only at the rate it can serve and refuses the excess at once — HTTP 503 `overloaded`, gRPC
//! RESOURCE_EXHAUSTED, both with `retry-after` — so that the work it admits finishes fast
//! instead of everyone waiting in one long queue.
//!
//! A refusal must cost far less than the request it spares, or refusing fills the shard by
//! itself. So HTTP requests are decided in the connection loop as soon as they are decoded
//! ([`Shedder::refuses_http`]), before the router and every layer, and a refusal is written
//! from bytes encoded once ([`Shedder::encode_refusal`]): no allocation, only the date, the
//! client's own `x-request-id` (if it sent a sane one; a refusal gets no generated id) and the
//! framing are added. A refused request that carries `Origin` while CORS is on goes through
//! the layers instead ([`Refused`]), which add the CORS headers a browser needs to read it.
//! gRPC calls are decided by this layer, first in the stack after request id, trace context
//! and CORS.
//!
//! Never refused: paths under `shedding.never` (health, metrics, the JWKS, token validation by
//! default). Low priority (`shedding.low`): admitted only from spare capacity while limiting.
//! WebSocket frames never pass through here, so established sessions and their keep-alives are
//! untouched; new upgrades are new work and can be refused.

use super::layer::{retry_after_secs, Answer, Check, Exchange, Layer, Protocol};
use super::request_id::{is_sane, X_REQUEST_ID};
use crate::http::types::Request;
use bytes::{BufMut, BytesMut};
use http::header::{HeaderValue, RETRY_AFTER};
use http::{HeaderMap, Method, Version};
use sdsim_core::config::SheddingConfig;
use sdsim_core::load::{run_probe, Overload, Priority};
use sdsim_core::metrics::{Key, LabelValue, Metrics};
use sdsim_core::runtime::Shard;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Metric: requests and calls refused because the shard was overloaded, by protocol.
pub const SHED_TOTAL: &str = "sdsim_shed_total";

/// Marks an exchange this layer refused (its `respond` adds `retry-after`); on an HTTP
/// request, that the connection loop refused it and the layers must answer it.
#[derive(Debug, Clone, Copy)]
pub struct Refused;

/// The decision for every HTTP request and gRPC call of one shard; see the module
/// documentation.
pub struct Shedder {
    overload: Rc<Overload>,
    never: Vec<String>,
    low: Vec<String>,
    retry_after: Duration,
    metrics: Rc<Metrics>,
    /// The refusal up to the date's value: status line, content type, `retry-after`,
    /// `x-content-type-options`, `date: `.
    head: Box<[u8]>,
    /// `content-length: N\r\n` of the body.
    length: Box<[u8]>,
    /// `{"error":{"code":"overloaded",…}}`.
    body: Box<[u8]>,
}

impl Shedder {
    /// The shedder of the calling shard, starting the shard's queueing-delay probe if no
    /// earlier stack did (every listener of a shard shares it). `None` when shedding is off or
    /// the caller is not a shard.
    pub fn install(cfg: &SheddingConfig, metrics: Rc<Metrics>) -> Option<Shedder> {
        if !cfg.enabled {
            return None;
        }
        let shard = Shard::try_current()?;
        let overload = match shard.get::<Overload>() {
            Some(overload) => overload,
            None => {
                let overload = shard.insert(Overload::new(cfg.target, cfg.interval));
                shard.spawn("shed-probe", run_probe(Rc::clone(&overload), cfg.probe));
                overload
            }
        };
        Some(Shedder::new(cfg, overload, metrics))
    }

    /// The shedder over an existing overload policy (tests drive it directly).
    pub fn new(cfg: &SheddingConfig, overload: Rc<Overload>, metrics: Rc<Metrics>) -> Shedder {
        let refusal = Answer::Overloaded {
            retry_after: cfg.retry_after,
        }
        .into_http();
        let mut head = BytesMut::new();
        head.put_slice(b"HTTP/1.1 503 Service Unavailable\r\n");
        for (name, value) in refusal.headers() {
            put_header(&mut head, name.as_str(), value.as_bytes());
        }
        head.put_slice(b"x-content-type-options: nosniff\r\ndate: ");
        let body: Box<[u8]> = refusal.body()[..].into();
        Shedder {
            overload,
            never: cfg.never.clone(),
            low: cfg.low.clone(),
            retry_after: cfg.retry_after,
            metrics,
            head: head[..].into(),
            length: format!("content-length: {}\r\n", body.len())
                .into_bytes()
                .into(),
            body,
        }
    }

    /// Admits or refuses new work at `path` (counted by the policy); exempt paths are always
    /// admitted.
    fn admits(&self, path: &str) -> bool {
        let under = |prefixes: &[String]| prefixes.iter().any(|p| path.starts_with(p.as_str()));
        if !self.overload.overloaded() {
            // The common case: a flag test, a counter (the policy's own estimate of what the
            // shard manages needs it), no clock.
            return under(&self.never) || self.overload.admit(Priority::Normal, Instant::now());
        }
        if under(&self.never) {
            return true;
        }
        let priority = if under(&self.low) {
            Priority::Low
        } else {
            Priority::Normal
        };
        self.overload.admit(priority, Instant::now())
    }

    fn count(&self, protocol: &'static str) {
        self.metrics.inc(
            Key::with1(SHED_TOTAL, ("protocol", LabelValue::Str(protocol))),
            1,
        );
    }

    /// The decision for a decoded HTTP request, taken before any other work is done for it;
    /// a refusal is counted.
    pub fn refuses_http(&self, req: &Request) -> bool {
        if self.admits(req.uri().path()) {
            return false;
        }
        self.count("http");
        true
    }

    /// Appends the refusal of `req` to `out`: the bytes encoded at start, plus the date, the
    /// client's request id and the framing (`keep_alive`: the connection stays open).
    pub fn encode_refusal(&self, req: &Request, keep_alive: bool, date: &[u8], out: &mut BytesMut) {
        let head = req.method() == Method::HEAD;
        let id = req
            .headers()
            .get(X_REQUEST_ID)
            .map(HeaderValue::as_bytes)
            .filter(|id| is_sane(id));
        out.reserve(self.head.len() + self.length.len() + self.body.len() + 200);
        out.put_slice(&self.head);
        out.put_slice(date);
        out.put_slice(b"\r\n");
        if let Some(id) = id {
            put_header(out, X_REQUEST_ID.as_str(), id);
        }
        out.put_slice(&self.length);
        if !keep_alive {
            out.put_slice(b"connection: close\r\n");
        } else if req.version() == Version::HTTP_10 {
            out.put_slice(b"connection: keep-alive\r\n");
        }
        out.put_slice(b"\r\n");
        if !head {
            out.put_slice(&self.body);
        }
    }
}

fn put_header(out: &mut BytesMut, name: &str, value: &[u8]) {
    out.put_slice(name.as_bytes());
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// The shedder as a layer: it decides gRPC calls, and answers the HTTP requests the connection
/// loop refused but left to the layers ([`Refused`]).
pub struct ShedLayer(pub Rc<Shedder>);

impl Layer for ShedLayer {
    fn request<'a>(&'a self, ex: &'a mut Exchange, _metadata: &'a HeaderMap) -> Check<'a> {
        let refused = match ex.protocol {
            // Decided (and counted) by the connection loop.
            Protocol::Http { .. } => ex.extensions.get::<Refused>().is_some(),
            Protocol::Grpc { .. } => {
                let refused = !self.0.admits(&ex.path);
                if refused {
                    self.0.count("grpc");
                    ex.extensions.insert(Refused);
                }
                refused
            }
        };
        if !refused {
            return Check::Pass;
        }
        Check::Answer(Answer::Overloaded {
            retry_after: self.0.retry_after,
        })
    }

    fn respond(&self, ex: &Exchange, metadata: &mut HeaderMap) {
        if ex.extensions.get::<Refused>().is_some() {
            metadata.insert(
                RETRY_AFTER,
                HeaderValue::from(retry_after_secs(self.0.retry_after)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::status::Code;
    use bytes::Bytes;
    use http::StatusCode;

    const MS: Duration = Duration::from_millis(1);

    fn shedder(overloaded: bool) -> Shedder {
        let cfg = SheddingConfig {
            enabled: true,
            ..SheddingConfig::default()
        };
        let overload = Rc::new(Overload::new(cfg.target, cfg.interval));
        if overloaded {
            // Samples stamped an hour ahead: the policy's bucket refills from then on, so it
            // stays empty for the whole test however slowly the test runs.
            let t0 = Instant::now() + Duration::from_secs(3600);
            overload.sample(20 * MS, t0);
            overload.sample(20 * MS, t0 + cfg.interval);
        }
        assert_eq!(overload.overloaded(), overloaded);
        Shedder::new(&cfg, overload, Rc::new(Metrics::new()))
    }

    fn request(method: Method, path: &str, headers: &[(&str, &str)]) -> Request {
        let mut b = http::Request::builder().method(method).uri(path);
        for (name, value) in headers {
            b = b.header(*name, *value);
        }
        b.body(Bytes::new()).unwrap()
    }

    fn grpc(path: &'static str) -> Exchange {
        Exchange::grpc(
            "svc",
            "method",
            path.into(),
            path,
            "127.0.0.1:9".parse().unwrap(),
        )
    }

    fn answer(layer: &ShedLayer, ex: &mut Exchange) -> Option<Answer> {
        match layer.request(ex, &HeaderMap::new()) {
            Check::Pass => None,
            Check::Answer(a) => Some(a),
            Check::Wait(_) => panic!("shedding never waits"),
        }
    }

    /// A parsed refusal: status, headers (lower-case names), body.
    fn parse(bytes: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut response = httparse::Response::new(&mut headers);
        let head = match response.parse(bytes).unwrap() {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => panic!("incomplete: {}", String::from_utf8_lossy(bytes)),
        };
        let headers = response
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        (response.code.unwrap(), headers, bytes[head..].to_vec())
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn nothing_is_refused_while_the_shard_keeps_up() {
        let s = Rc::new(shedder(false));
        assert!(!s.refuses_http(&request(Method::GET, "/api/projects/7", &[])));
        let layer = ShedLayer(Rc::clone(&s));
        assert!(answer(
            &layer,
            &mut grpc("/sdsim.project.v1.ProjectService/GetProject")
        )
        .is_none());
        assert_eq!(s.overload.decisions(), (2, 0));
    }

    #[test]
    fn an_overloaded_shard_answers_http_from_preencoded_bytes_with_everything_a_client_needs() {
        let s = shedder(true);
        let req = request(
            Method::GET,
            "/api/projects/7",
            &[("x-request-id", "req-42")],
        );
        assert!(s.refuses_http(&req));
        let mut out = BytesMut::new();
        s.encode_refusal(&req, true, b"Tue, 02 Dec 2026 02:33:35 GMT", &mut out);
        let (status, headers, body) = parse(&out);
        assert_eq!(status, 503);
        assert_eq!(header(&headers, "retry-after"), Some("1"));
        assert_eq!(header(&headers, "content-type"), Some("application/json"));
        assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"));
        assert_eq!(header(&headers, "x-request-id"), Some("req-42"));
        assert_eq!(
            header(&headers, "date"),
            Some("Tue, 02 Dec 2026 02:33:35 GMT")
        );
        assert_eq!(header(&headers, "connection"), None);
        let length: usize = header(&headers, "content-length").unwrap().parse().unwrap();
        assert_eq!(length, body.len());
        let text = String::from_utf8(body.clone()).unwrap();
        assert!(
            text.starts_with(r#"{"error":{"code":"overloaded","message":"#),
            "{text}"
        );
        // The same body the layers would give.
        let layered = Answer::Overloaded {
            retry_after: Duration::from_secs(1),
        }
        .into_http();
        assert_eq!(&layered.body()[..], &body[..]);
    }

    #[test]
    fn a_refusal_keeps_the_requests_framing_and_drops_an_insane_request_id() {
        let s = shedder(true);
        let mut out = BytesMut::new();
        // HEAD: the headers GET would get, no body; closing: said so.
        let head = request(Method::HEAD, "/api/projects/7", &[("x-request-id", "a b")]);
        s.encode_refusal(&head, false, b"D", &mut out);
        let (status, headers, body) = parse(&out);
        assert_eq!(status, 503);
        assert!(body.is_empty());
        assert_ne!(header(&headers, "content-length"), Some("0"));
        assert_eq!(header(&headers, "connection"), Some("close"));
        assert_eq!(header(&headers, "x-request-id"), None);
        // HTTP/1.0 keep-alive must be said.
        let mut old = request(Method::GET, "/x", &[]);
        *old.version_mut() = Version::HTTP_10;
        out.clear();
        s.encode_refusal(&old, true, b"D", &mut out);
        let (_, headers, _) = parse(&out);
        assert_eq!(header(&headers, "connection"), Some("keep-alive"));
    }

    #[test]
    fn an_overloaded_shard_refuses_grpc_calls_with_resource_exhausted_and_a_retry_hint() {
        let s = Rc::new(shedder(true));
        let layer = ShedLayer(Rc::clone(&s));
        let mut ex = grpc("/sdsim.project.v1.ProjectService/GetProject");
        let status = answer(&layer, &mut ex).expect("refused").into_status();
        assert_eq!(status.code, Code::ResourceExhausted);
        assert_eq!(status.retry_delay(), Some(Duration::from_secs(1)));
        let mut metadata = HeaderMap::new();
        layer.respond(&ex, &mut metadata);
        assert_eq!(metadata[RETRY_AFTER], "1");
        assert_eq!(s.overload.decisions(), (0, 1));
    }

    #[test]
    fn an_http_refusal_left_to_the_layers_is_answered_there_and_not_decided_twice() {
        let s = Rc::new(shedder(true));
        let layer = ShedLayer(Rc::clone(&s));
        let mut ex = Exchange::http(
            Method::GET,
            "/api/x".into(),
            "/api/x",
            "127.0.0.1:9".parse().unwrap(),
        );
        // Not refused by the connection loop: the layer lets it through without deciding.
        assert!(answer(&layer, &mut ex).is_none());
        ex.extensions.insert(Refused);
        let mut response = answer(&layer, &mut ex).expect("refused").into_http();
        layer.respond(&ex, response.headers_mut());
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "1");
        assert_eq!(s.overload.decisions(), (0, 0));
    }

    #[test]
    fn health_metrics_keys_and_token_validation_are_never_refused() {
        let s = Rc::new(shedder(true));
        for path in [
            "/health",
            "/health/ready",
            "/metrics",
            "/.well-known/jwks.json",
        ] {
            assert!(!s.refuses_http(&request(Method::GET, path, &[])), "{path}");
        }
        let layer = ShedLayer(Rc::clone(&s));
        for path in [
            "/grpc.health.v1.Health/Check",
            "/sdsim.auth.v1.AuthService/ValidateToken",
        ] {
            assert!(answer(&layer, &mut grpc(path)).is_none(), "{path}");
        }
        // An answer the layer did not give gets no retry hint from it.
        let mut metadata = HeaderMap::new();
        layer.respond(&grpc("/grpc.health.v1.Health/Check"), &mut metadata);
        assert!(metadata.get(RETRY_AFTER).is_none());
        assert_eq!(s.overload.decisions(), (0, 0));
    }
}
