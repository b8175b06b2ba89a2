//! CORS: preflight answers and response headers, from `[cors]` (off while no origin is set).
//! An HTTP-only layer: browsers do not speak gRPC over HTTP/2.

use super::layer::{Answer, Check, Exchange, Layer, Protocol};
use crate::http::types::error;
use bytes::Bytes;
use http::header::{
    HeaderValue, ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS,
    ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS,
    ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN,
    VARY,
};
use http::{HeaderMap, Method, StatusCode};
use sdsim_core::config::CorsConfig;

/// The CORS layer.
pub struct Cors {
    any_origin: bool,
    origins: Vec<String>,
    methods: Vec<String>,
    headers: Vec<String>,
    allow_methods: HeaderValue,
    allow_headers: HeaderValue,
    expose: Option<HeaderValue>,
    credentials: bool,
    max_age: HeaderValue,
}

impl Cors {
    /// The layer for `cfg`, or `None` when no origin is allowed (CORS off).
    pub fn new(cfg: &CorsConfig) -> Option<Cors> {
        if cfg.allowed_origins.is_empty() {
            return None;
        }
        let join = |items: &[String]| HeaderValue::from_str(&items.join(", ")).ok();
        Some(Cors {
            any_origin: cfg.allowed_origins.iter().any(|o| o == "*"),
            origins: cfg
                .allowed_origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_string())
                .collect(),
            methods: cfg
                .allowed_methods
                .iter()
                .map(|m| m.to_ascii_uppercase())
                .collect(),
            headers: cfg
                .allowed_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            allow_methods: join(&cfg.allowed_methods)?,
            allow_headers: join(&cfg.allowed_headers)?,
            expose: (!cfg.exposed_headers.is_empty())
                .then(|| join(&cfg.exposed_headers))
                .flatten(),
            credentials: cfg.allow_credentials,
            max_age: HeaderValue::from(cfg.max_age.as_secs()),
        })
    }

    fn allows(&self, origin: &str) -> bool {
        self.any_origin || self.origins.iter().any(|o| o == origin)
    }

    /// Answers a preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`).
    pub fn preflight(&self, req: &http::Request<Bytes>) -> Option<http::Response<Bytes>> {
        self.preflight_of(req.method(), req.headers())
    }

    fn preflight_of(&self, method: &Method, headers: &HeaderMap) -> Option<http::Response<Bytes>> {
        if method != Method::OPTIONS {
            return None;
        }
        let origin = headers.get(ORIGIN)?.to_str().ok()?.to_string();
        let method = headers.get(ACCESS_CONTROL_REQUEST_METHOD)?;
        let forbidden = |why: &str| Some(error(StatusCode::FORBIDDEN, "cors_forbidden", why));
        if !self.allows(&origin) {
            return forbidden(&format!("origin {origin} is not allowed"));
        }
        let method = method.to_str().unwrap_or("").to_ascii_uppercase();
        if !self.methods.contains(&method) {
            return forbidden(&format!("method {method} is not allowed"));
        }
        if let Some(asked) = headers.get(ACCESS_CONTROL_REQUEST_HEADERS) {
            for header in asked
                .to_str()
                .unwrap_or("")
                .split(',')
                .map(|h| h.trim().to_ascii_lowercase())
            {
                if !header.is_empty() && !self.headers.contains(&header) {
                    return forbidden(&format!("request header {header} is not allowed"));
                }
            }
        }
        let mut resp = http::Response::new(Bytes::new());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let h = resp.headers_mut();
        h.insert(ACCESS_CONTROL_ALLOW_METHODS, self.allow_methods.clone());
        h.insert(ACCESS_CONTROL_ALLOW_HEADERS, self.allow_headers.clone());
        h.insert(ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        Some(resp)
    }

    /// Adds the CORS response headers for a request from `origin`.
    pub fn apply(&self, origin: Option<&HeaderValue>, resp: &mut http::Response<Bytes>) {
        self.apply_to(origin, resp.headers_mut());
    }

    fn apply_to(&self, origin: Option<&HeaderValue>, h: &mut HeaderMap) {
        h.append(VARY, HeaderValue::from_static("origin"));
        let Some(origin) = origin else { return };
        let Ok(text) = origin.to_str() else { return };
        if !self.allows(text) {
            return;
        }
        if self.any_origin && !self.credentials {
            h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        } else {
            h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        }
        if self.credentials {
            h.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(expose) = &self.expose {
            h.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }
}

/// The request's `Origin`, kept for the response headers.
#[derive(Clone)]
struct RequestOrigin(HeaderValue);

impl Layer for Cors {
    fn request<'a>(&'a self, ex: &'a mut Exchange, metadata: &'a HeaderMap) -> Check<'a> {
        let Protocol::Http { method } = &ex.protocol else {
            return Check::Pass;
        };
        let preflight = self.preflight_of(method, metadata);
        if let Some(origin) = metadata.get(ORIGIN) {
            ex.extensions.insert(RequestOrigin(origin.clone()));
        }
        match preflight {
            Some(answer) => Check::Answer(Answer::Http(answer)),
            None => Check::Pass,
        }
    }

    fn respond(&self, ex: &Exchange, metadata: &mut HeaderMap) {
        if let Protocol::Http { .. } = ex.protocol {
            let origin = ex.extensions.get::<RequestOrigin>().map(|o| &o.0);
            self.apply_to(origin, metadata);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &[&str], credentials: bool) -> Cors {
        Cors::new(&CorsConfig {
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            allow_credentials: credentials,
            ..CorsConfig::default()
        })
        .unwrap()
    }

    fn preflight(origin: &str, method: &str, headers: Option<&str>) -> http::Request<Bytes> {
        let mut b = http::Request::builder()
            .method(Method::OPTIONS)
            .uri("/api/x")
            .header(ORIGIN, origin)
            .header(ACCESS_CONTROL_REQUEST_METHOD, method);
        if let Some(h) = headers {
            b = b.header(ACCESS_CONTROL_REQUEST_HEADERS, h);
        }
        b.body(Bytes::new()).unwrap()
    }

    #[test]
    fn off_without_origins() {
        assert!(Cors::new(&CorsConfig::default()).is_none());
    }

    #[test]
    fn preflight_table() {
        let c = cors(&["https://app.example.com"], false);
        let ok = c
            .preflight(&preflight(
                "https://app.example.com",
                "PUT",
                Some("Content-Type, Authorization"),
            ))
            .unwrap();
        assert_eq!(ok.status(), 204);
        assert!(ok.headers()[ACCESS_CONTROL_ALLOW_METHODS]
            .to_str()
            .unwrap()
            .contains("PUT"));
        assert_eq!(ok.headers()[ACCESS_CONTROL_MAX_AGE], "600");
        let rows = [
            ("https://evil.example.com", "GET", None),
            ("https://app.example.com", "TRACE", None),
            ("https://app.example.com", "GET", Some("x-secret")),
        ];
        for (origin, method, headers) in rows {
            let resp = c.preflight(&preflight(origin, method, headers)).unwrap();
            assert_eq!(resp.status(), 403, "{origin} {method} {headers:?}");
        }
        let plain_options = http::Request::builder()
            .method(Method::OPTIONS)
            .uri("/")
            .body(Bytes::new())
            .unwrap();
        assert!(c.preflight(&plain_options).is_none());
    }

    #[test]
    fn apply_echoes_allowed_origins_only() {
        let c = cors(&["https://app.example.com"], true);
        let mut r = http::Response::new(Bytes::new());
        c.apply(
            Some(&HeaderValue::from_static("https://app.example.com")),
            &mut r,
        );
        assert_eq!(
            r.headers()[ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com"
        );
        assert_eq!(r.headers()[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        let mut r = http::Response::new(Bytes::new());
        c.apply(
            Some(&HeaderValue::from_static("https://evil.example.com")),
            &mut r,
        );
        assert!(!r.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
        assert_eq!(r.headers()[VARY], "origin");
        let any = cors(&["*"], false);
        let mut r = http::Response::new(Bytes::new());
        any.apply(Some(&HeaderValue::from_static("https://x.example")), &mut r);
        assert_eq!(r.headers()[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    }
}
