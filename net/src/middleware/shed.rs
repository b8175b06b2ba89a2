//! The load-shedding layer: while the shard is overloaded ([`sdsim_core::load`]: its queueing
//! delay stayed above `shedding.target` for a whole `shedding.interval`), new requests and calls
//! are refused before any work is done for them — HTTP 503 `overloaded`, gRPC
//! RESOURCE_EXHAUSTED, both with `retry-after` — so that the work already admitted finishes
//! fast instead of everyone waiting in one long queue. A refusal costs the parse and a small
//! answer; the requests it spares would each have cost a handler.
//!
//! Never refused: paths under `shedding.never` (health, metrics, the JWKS, token validation by
//! default). WebSocket frames never pass through the stack, so established sessions and their
//! keep-alives are untouched; new upgrades are new work and can be refused.

use super::layer::{retry_after_secs, Answer, Check, Exchange, Layer, Protocol};
use http::header::{HeaderValue, RETRY_AFTER};
use http::HeaderMap;
use sdsim_core::config::SheddingConfig;
use sdsim_core::load::{run_probe, Overload};
use sdsim_core::metrics::{Key, LabelValue, Metrics};
use sdsim_core::runtime::Shard;
use std::rc::Rc;
use std::time::Duration;

/// Metric: requests and calls refused because the shard was overloaded, by protocol.
pub const SHED_TOTAL: &str = "sdsim_shed_total";

/// Marks an exchange this layer refused (its `respond` adds `retry-after`).
#[derive(Debug, Clone, Copy)]
struct Shed;

/// The layer; see the module documentation.
pub struct Shedder {
    overload: Rc<Overload>,
    never: Vec<String>,
    retry_after: Duration,
    metrics: Rc<Metrics>,
}

impl Shedder {
    /// The layer for the calling shard, starting the shard's queueing-delay probe if no earlier
    /// stack did (every listener of a shard shares it). `None` when shedding is off or the
    /// caller is not a shard.
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

    /// The layer over an existing overload decision (tests drive it directly).
    pub fn new(cfg: &SheddingConfig, overload: Rc<Overload>, metrics: Rc<Metrics>) -> Shedder {
        Shedder {
            overload,
            never: cfg.never.clone(),
            retry_after: cfg.retry_after,
            metrics,
        }
    }

    fn exempt(&self, path: &str) -> bool {
        self.never
            .iter()
            .any(|prefix| path.starts_with(prefix.as_str()))
    }
}

impl Layer for Shedder {
    fn request<'a>(&'a self, ex: &'a mut Exchange, _metadata: &'a HeaderMap) -> Check<'a> {
        if !self.overload.overloaded() || self.exempt(&ex.path) {
            return Check::Pass;
        }
        let protocol = match ex.protocol {
            Protocol::Http { .. } => "http",
            Protocol::Grpc { .. } => "grpc",
        };
        self.metrics.inc(
            Key::with1(SHED_TOTAL, ("protocol", LabelValue::Str(protocol))),
            1,
        );
        ex.extensions.insert(Shed);
        Check::Answer(Answer::Overloaded {
            retry_after: self.retry_after,
        })
    }

    fn respond(&self, ex: &Exchange, metadata: &mut HeaderMap) {
        if ex.extensions.get::<Shed>().is_some() {
            metadata.insert(
                RETRY_AFTER,
                HeaderValue::from(retry_after_secs(self.retry_after)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::status::Code;
    use http::{Method, StatusCode};
    use std::time::Instant;

    const MS: Duration = Duration::from_millis(1);

    fn shedder(overloaded: bool) -> Shedder {
        let cfg = SheddingConfig {
            enabled: true,
            ..SheddingConfig::default()
        };
        let overload = Rc::new(Overload::new(cfg.target, cfg.interval));
        if overloaded {
            let t0 = Instant::now();
            overload.sample(20 * MS, t0);
            overload.sample(20 * MS, t0 + cfg.interval);
        }
        assert_eq!(overload.overloaded(), overloaded);
        Shedder::new(&cfg, overload, Rc::new(Metrics::new()))
    }

    fn http(path: &str) -> Exchange {
        Exchange::http(
            Method::GET,
            path.to_string(),
            "/route",
            "127.0.0.1:9".parse().unwrap(),
        )
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

    fn answer(layer: &Shedder, ex: &mut Exchange) -> Option<Answer> {
        match layer.request(ex, &HeaderMap::new()) {
            Check::Pass => None,
            Check::Answer(a) => Some(a),
            Check::Wait(_) => panic!("shedding never waits"),
        }
    }

    #[test]
    fn nothing_is_refused_while_the_shard_keeps_up() {
        let layer = shedder(false);
        assert!(answer(&layer, &mut http("/api/projects/7")).is_none());
        assert!(answer(
            &layer,
            &mut grpc("/sdsim.project.v1.ProjectService/GetProject")
        )
        .is_none());
    }

    #[test]
    fn an_overloaded_shard_refuses_new_work_with_a_retry_hint_on_both_protocols() {
        let layer = shedder(true);
        let mut ex = http("/api/projects/7");
        let refused = answer(&layer, &mut ex).expect("refused");
        let mut response = refused.into_http();
        layer.respond(&ex, response.headers_mut());
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "1");
        let body = String::from_utf8_lossy(response.body()).to_string();
        assert!(body.contains("\"code\":\"overloaded\""), "{body}");

        let mut ex = grpc("/sdsim.project.v1.ProjectService/GetProject");
        let status = answer(&layer, &mut ex).expect("refused").into_status();
        assert_eq!(status.code, Code::ResourceExhausted);
        assert_eq!(status.retry_delay(), Some(Duration::from_secs(1)));
        let mut metadata = HeaderMap::new();
        layer.respond(&ex, &mut metadata);
        assert_eq!(metadata[RETRY_AFTER], "1");
    }

    #[test]
    fn health_metrics_keys_and_token_validation_are_never_refused() {
        let layer = shedder(true);
        for path in [
            "/health",
            "/health/ready",
            "/metrics",
            "/.well-known/jwks.json",
        ] {
            assert!(answer(&layer, &mut http(path)).is_none(), "{path}");
        }
        for path in [
            "/grpc.health.v1.Health/Check",
            "/sdsim.auth.v1.AuthService/ValidateToken",
        ] {
            assert!(answer(&layer, &mut grpc(path)).is_none(), "{path}");
        }
        // An answer the layer did not give gets no retry hint from it.
        let mut metadata = HeaderMap::new();
        layer.respond(&http("/health"), &mut metadata);
        assert!(metadata.get(RETRY_AFTER).is_none());
    }
}
