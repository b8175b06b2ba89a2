//! The access-log layer (`log.access`): one line per HTTP request or gRPC call at INFO on
//! target `sdsim::access`. Both lines carry `path`, `duration_ms`, `request_id` and `peer`;
//! HTTP adds `method`, `status` and `bytes`, gRPC `service`, `method` and `grpc_status` (the
//! code's name, e.g. `RESOURCE_EXHAUSTED`). The line is written in the exchange's span
//! ([`Exchange::span`]), so the fields other layers put there are on it too, without this file
//! knowing them: in the text format as `name{field=value …}:` before the target, in JSON under
//! `span` and `spans`.

use super::layer::{Ended, Exchange, Layer, Outcome, Protocol};
use super::request_metrics::method_label;

/// The log target of access lines.
pub const TARGET: &str = "sdsim::access";

/// The layer; see the module documentation.
pub struct AccessLog;

impl Layer for AccessLog {
    fn done(&self, ex: &Exchange, outcome: &Outcome) {
        let _in_exchange = ex.span.enter();
        let duration_ms = outcome.elapsed.as_secs_f64() * 1e3;
        let path: &str = &ex.path;
        let request_id = ex.request_id.as_str();
        match (&ex.protocol, outcome.ended) {
            (Protocol::Http { method }, Ended::Http { status, body_bytes }) => {
                tracing::info!(
                    target: TARGET,
                    method = method_label(method),
                    path,
                    status = status.as_u16(),
                    bytes = body_bytes,
                    duration_ms,
                    request_id,
                    peer = %ex.peer,
                    "request"
                );
            }
            (Protocol::Grpc { service, method }, Ended::Grpc { code }) => {
                tracing::info!(
                    target: TARGET,
                    service = *service,
                    method = *method,
                    path,
                    grpc_status = code.name(),
                    duration_ms,
                    request_id,
                    peer = %ex.peer,
                    "grpc call"
                );
            }
            // An adapter reports the ending of its own protocol.
            _ => {}
        }
    }
}
