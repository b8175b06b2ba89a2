//! The server-span layer (`[otel]` on): when an HTTP request or gRPC call of a sampled trace
//! ends, one span of kind SERVER goes to the exporter's queue, with the ids the trace-context
//! layer chose (so the span is the child of the caller's span and the parent of the calls
//! the handler made) and OpenTelemetry's semantic-convention attributes:
//!
//! - HTTP: named `METHOD /route/{pattern}` (only `METHOD` when no route matched);
//!   `http.request.method`, `http.route`, `url.path`, `http.response.status_code`,
//!   `client.address`, `client.port`; status ERROR on a 5xx.
//! - gRPC: named `pkg.Service/Method`; `rpc.system` = `grpc`, `rpc.service`, `rpc.method`,
//!   `rpc.grpc.status_code`, `client.address`, `client.port`; status ERROR when not OK.

use super::layer::{Ended, Exchange, Layer, Outcome, Protocol, UNMATCHED};
use super::request_metrics::method_label;
use super::trace_context::TraceContext;
use crate::grpc::status::Code;
use crate::otel::{SpanKind, SpanRecord, Spans};

/// The layer; see the module documentation.
pub struct ServerSpans {
    spans: Spans,
}

impl ServerSpans {
    /// The layer recording into `spans`.
    pub fn new(spans: Spans) -> ServerSpans {
        ServerSpans { spans }
    }
}

impl Layer for ServerSpans {
    fn done(&self, ex: &Exchange, outcome: &Outcome) {
        if let Some(span) = server_span(ex, outcome) {
            self.spans.record(span);
        }
    }
}

/// The span of a finished exchange, when its trace is sampled.
pub fn server_span(ex: &Exchange, outcome: &Outcome) -> Option<SpanRecord> {
    let context = ex.extensions.get::<TraceContext>()?;
    if context.flags & 1 == 0 {
        return None;
    }
    let mut span = match (&ex.protocol, outcome.ended) {
        (Protocol::Http { method }, Ended::Http { status, .. }) => {
            let method = method_label(method);
            let name = if ex.route == UNMATCHED {
                method.to_owned()
            } else {
                format!("{method} {}", ex.route)
            };
            let mut span = SpanRecord::ended_now(context, name, SpanKind::Server, outcome.elapsed);
            span.attribute("http.request.method", method)
                .attribute("url.path", &*ex.path)
                .attribute("http.response.status_code", i64::from(status.as_u16()));
            if ex.route != UNMATCHED {
                span.attribute("http.route", ex.route);
            }
            if status.is_server_error() {
                span.error = Some(format!("HTTP {}", status.as_u16()));
            }
            span
        }
        (Protocol::Grpc { service, method }, Ended::Grpc { code }) => {
            let mut span = SpanRecord::ended_now(
                context,
                format!("{service}/{method}"),
                SpanKind::Server,
                outcome.elapsed,
            );
            span.attribute("rpc.system", "grpc")
                .attribute("rpc.service", *service)
                .attribute("rpc.method", *method)
                .attribute("rpc.grpc.status_code", code as i64);
            if code != Code::Ok {
                span.error = Some(code.name().to_owned());
            }
            span
        }
        // An adapter reports the ending of its own protocol.
        _ => return None,
    };
    span.attribute("client.address", ex.peer.ip().to_string())
        .attribute("client.port", i64::from(ex.peer.port()));
    Some(span)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middleware::layer::Layers;
    use crate::middleware::trace_context::{TraceContexts, TRACEPARENT};
    use crate::otel::sampler::Sampler;
    use http::{HeaderMap, HeaderValue, Method, StatusCode};
    use std::borrow::Cow;
    use std::time::Duration;

    fn through(sampler: &str, incoming: Option<&'static str>, ex: &mut Exchange) -> TraceContext {
        let mut layers = Layers::new();
        layers.push(TraceContexts::with_sampler(
            Sampler::new(sampler, 1.0).unwrap(),
        ));
        let mut metadata = HeaderMap::new();
        if let Some(value) = incoming {
            metadata.insert(TRACEPARENT, HeaderValue::from_static(value));
        }
        let answer = futures_util::FutureExt::now_or_never(layers.request(ex, &metadata));
        assert!(matches!(answer, Some(None)));
        ex.extensions.get::<TraceContext>().cloned().unwrap()
    }

    const SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const NOT_SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";

    #[test]
    fn an_http_span_has_the_route_status_and_parent() {
        let peer = "10.1.2.3:4567".parse().unwrap();
        let mut ex = Exchange::http(
            Method::GET,
            "/api/projects/7".into(),
            "/api/projects/{id}",
            peer,
        );
        let context = through("parentbased_always_off", Some(SAMPLED), &mut ex);
        assert_eq!(context.flags & 1, 1, "the caller's yes is kept");
        let outcome = Outcome {
            ended: Ended::Http {
                status: StatusCode::BAD_GATEWAY,
                body_bytes: 10,
            },
            elapsed: Duration::from_millis(3),
        };
        let span = server_span(&ex, &outcome).unwrap();
        assert_eq!(span.name, "GET /api/projects/{id}");
        assert_eq!(span.kind, SpanKind::Server);
        assert_eq!(
            span.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(
            span.parent_id.map(|p| p.to_string()).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert_eq!(span.span_id, context.span_id);
        let attribute = |key: &str| {
            span.attributes
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(attribute("http.route"), Some("/api/projects/{id}".into()));
        assert_eq!(attribute("http.request.method"), Some("GET".into()));
        assert_eq!(attribute("http.response.status_code"), Some(502.into()));
        assert_eq!(attribute("client.address"), Some("10.1.2.3".into()));
        assert_eq!(span.error.as_deref(), Some("HTTP 502"));
        assert_eq!(
            span.end.duration_since(span.start).unwrap(),
            Duration::from_millis(3)
        );
    }

    #[test]
    fn unsampled_traces_record_nothing_and_grpc_errors_are_errors() {
        let peer = "127.0.0.1:1".parse().unwrap();
        let grpc = || {
            Exchange::grpc(
                "sdsim.project.v1.ProjectService",
                "GetProject",
                Cow::Borrowed("/sdsim.project.v1.ProjectService/GetProject"),
                "/sdsim.project.v1.ProjectService/GetProject",
                peer,
            )
        };
        let ended = |code| Outcome {
            ended: Ended::Grpc { code },
            elapsed: Duration::ZERO,
        };
        let mut ex = grpc();
        let context = through("always_off", None, &mut ex);
        assert_eq!(context.flags, 0);
        assert_eq!(server_span(&ex, &ended(Code::Ok)), None);
        let mut ex = grpc();
        through("parentbased_always_on", Some(NOT_SAMPLED), &mut ex);
        assert_eq!(server_span(&ex, &ended(Code::Ok)), None, "the caller's no");
        let mut ex = grpc();
        let context = through("parentbased_always_on", None, &mut ex);
        assert_eq!(context.flags, 1, "a new trace is sampled");
        let span = server_span(&ex, &ended(Code::NotFound)).unwrap();
        assert_eq!(span.name, "sdsim.project.v1.ProjectService/GetProject");
        assert_eq!(span.parent_id, None);
        assert_eq!(span.error.as_deref(), Some("NOT_FOUND"));
        assert!(span
            .attributes
            .contains(&("rpc.grpc.status_code", (Code::NotFound as i64).into())));
        assert!(span.attributes.contains(&("rpc.system", "grpc".into())));
    }
}
