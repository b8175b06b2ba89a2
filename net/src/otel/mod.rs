//! OpenTelemetry tracing: spans of the requests, calls and WebSocket operations a process
//! serves and of the gRPC calls it makes, exported over OTLP/HTTP protobuf from a thread off
//! the shards. Off unless `[otel]` (or `OTEL_EXPORTER_OTLP_ENDPOINT`) turns it on.
//!
//! - [`config`]: `[otel]` and the standard `OTEL_*` variables.
//! - [`sampler`]: the head-sampling decision, made by the trace-context layer
//!   (`middleware::trace_context`) and carried in the sampled bit of `traceparent`.
//! - [`span`]: [`SpanRecord`], a finished span, and its OTLP form.
//! - [`export`]: the bounded queue the shards record into ([`Spans`]) and the exporter
//!   thread ([`Exporter`]).
//! - [`current`]: the trace context of the request being served, which outbound calls take
//!   as their parent.
//! - [`ClientSpan`]: the span of one outbound gRPC call, whose id goes out in `traceparent`.
//! - [`proto`]: the OTLP messages (`proto/opentelemetry/`).
//!
//! Server spans are written by the `middleware::server_spans` layer, one per HTTP request
//! and gRPC call.

pub mod config;
pub mod current;
pub mod export;
pub mod proto;
pub mod sampler;
pub mod span;

pub use export::{ExportSettings, ExportStats, ExportTotals, Exporter, Spans};
pub use span::{SpanKind, SpanRecord};

use crate::grpc::status::Code;
use crate::middleware::trace_context::{self, TraceContext};
use http::HeaderMap;
use std::sync::Mutex;
use std::time::Instant;

static INSTALLED: Mutex<Option<Spans>> = Mutex::new(None);

thread_local! {
    /// [`installed`] as this thread first saw it: a shard asks on every sampled call, and the
    /// exporter is installed before the shards start.
    static HERE: Option<Spans> = installed();
}

/// Makes every middleware stack built from now on (one per shard and listener) record spans
/// into `exporter` and sample with its sampler. The server binary calls it once, before the
/// shards start.
pub fn install(exporter: &Exporter) {
    *INSTALLED.lock().unwrap_or_else(|e| e.into_inner()) = Some(exporter.spans());
}

/// Where spans go, when an exporter is [`install`]ed. Takes a process-wide lock: for setting
/// up; per request use [`here`].
pub fn installed() -> Option<Spans> {
    INSTALLED.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// [`installed`] as this thread first saw it, without the lock: what a shard asks per request
/// or per WebSocket session (the exporter is installed before the shards start).
pub fn here() -> Option<Spans> {
    HERE.with(Option::clone)
}

/// The client span of one outbound gRPC call, made on behalf of the request being served
/// ([`current::current`]): a new span-id in the request's trace, whose parent is the
/// request's own span. Its `traceparent` goes out with the call, so the callee's server span
/// is its child; it is recorded when the call ends, if the trace is sampled and an exporter is
/// installed.
pub struct ClientSpan {
    context: TraceContext,
    path: String,
    started: Instant,
}

impl ClientSpan {
    /// The span of a call of `path` (`/pkg.Service/Method`); `None` outside a request.
    pub fn start(path: &str) -> Option<ClientSpan> {
        let parent = current::current()?;
        let context = TraceContext {
            trace_id: parent.trace_id,
            span_id: trace_context::new_span_id(),
            parent_id: Some(parent.span_id),
            flags: parent.flags,
            state: parent.state.clone(),
        };
        Some(ClientSpan {
            context,
            path: path.to_owned(),
            started: Instant::now(),
        })
    }

    /// Adds `traceparent` (naming this span) and `tracestate` to the call's metadata.
    pub fn propagate(&self, metadata: &mut HeaderMap) {
        metadata.insert(trace_context::TRACEPARENT, self.context.traceparent());
        if let Some(state) = &self.context.state {
            metadata.insert(trace_context::TRACESTATE, state.clone());
        }
    }

    /// The call ended with `code` (`message` when not OK): records the span.
    pub fn end(self, code: Code, message: &str) {
        if self.context.flags & 1 == 0 {
            return;
        }
        if !HERE.with(Option::is_some) {
            return;
        }
        let (service, method) = span::rpc_parts(&self.path);
        let mut record = SpanRecord::ended_now(
            &self.context,
            format!("{service}/{method}"),
            SpanKind::Client,
            self.started.elapsed(),
        );
        record
            .attribute("rpc.system", "grpc")
            .attribute("rpc.service", service)
            .attribute("rpc.method", method)
            .attribute("rpc.grpc.status_code", code as i64);
        if code != Code::Ok {
            record.error = Some(format!("{}: {message}", code.name()));
        }
        HERE.with(|here| {
            if let Some(spans) = here {
                spans.record(record);
            }
        });
    }
}
