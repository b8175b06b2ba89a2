//! The metrics layer: per-shard counters and latency histograms of every exchange, merged at
//! scrape time (`/metrics`). HTTP by route pattern, method and status; gRPC by service, method
//! and code (`sdsim_grpc_server_*`, the names other gRPC servers' exporters use).

use super::layer::{Ended, Exchange, Layer, Outcome, Protocol};
use http::Method;
use sdsim_core::metrics::{Key, LabelValue, Metrics};
use std::rc::Rc;

/// Metric: HTTP requests by route, method and status.
pub const REQUESTS_TOTAL: &str = "sdsim_http_requests_total";
/// Metric: HTTP request latency by route (histogram, seconds).
pub const REQUEST_DURATION: &str = "sdsim_http_request_duration_seconds";
/// Metric: HTTP response body bytes by route.
pub const RESPONSE_BYTES: &str = "sdsim_http_response_bytes_total";
/// Metric: gRPC calls by service, method and code.
pub const GRPC_REQUESTS_TOTAL: &str = "sdsim_grpc_server_requests_total";
/// Metric: gRPC call duration by service and method (histogram, seconds).
pub const GRPC_REQUEST_DURATION: &str = "sdsim_grpc_server_request_duration_seconds";

/// The layer; see the module documentation.
pub struct RequestMetrics {
    metrics: Rc<Metrics>,
}

impl RequestMetrics {
    /// Records into `metrics` (the shard's).
    pub fn new(metrics: Rc<Metrics>) -> RequestMetrics {
        RequestMetrics { metrics }
    }
}

/// The metrics and log label of an HTTP method (a closed set: clients choose methods).
pub fn method_label(method: &Method) -> &'static str {
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

impl Layer for RequestMetrics {
    fn done(&self, ex: &Exchange, outcome: &Outcome) {
        let micros = outcome.elapsed.as_micros() as u64;
        match (&ex.protocol, outcome.ended) {
            (Protocol::Http { method }, Ended::Http { status, body_bytes }) => {
                let route = ("route", LabelValue::Str(ex.route));
                self.metrics.inc(
                    Key::with3(
                        REQUESTS_TOTAL,
                        route.clone(),
                        ("method", LabelValue::Str(method_label(method))),
                        ("status", LabelValue::Int(u64::from(status.as_u16()))),
                    ),
                    1,
                );
                self.metrics
                    .record_us(Key::with1(REQUEST_DURATION, route.clone()), micros);
                self.metrics
                    .inc(Key::with1(RESPONSE_BYTES, route), body_bytes as u64);
            }
            (Protocol::Grpc { service, method }, Ended::Grpc { code }) => {
                let service = ("service", LabelValue::Str(service));
                let method = ("method", LabelValue::Str(method));
                self.metrics.inc(
                    Key::with3(
                        GRPC_REQUESTS_TOTAL,
                        service.clone(),
                        method.clone(),
                        ("code", LabelValue::Str(code.name())),
                    ),
                    1,
                );
                self.metrics
                    .record_us(Key::with2(GRPC_REQUEST_DURATION, service, method), micros);
            }
            // An adapter reports the ending of its own protocol.
            _ => {}
        }
    }
}
