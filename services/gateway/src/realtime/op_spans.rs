//! Spans of a WebSocket session's operations (`[otel]` on): each `auth`, `subscribe` and
//! `unsubscribe` a client sends is a span of kind SERVER in the trace of the upgrade request
//! (its parent is the upgrade's span), named `ws subscribe` and so on, with `websocket.op`,
//! `websocket.channel` and status ERROR (the `error` code sent back) when it was refused. The
//! calls an operation makes (the read check of a run's channel with the simulation service)
//! are its children.

use sdsim_net::middleware::trace_context::{new_span_id, TraceContext};
use sdsim_net::otel::{SpanKind, SpanRecord, Spans};
use std::time::Instant;

/// The session's side of tracing: the upgrade's trace and where spans go.
pub(super) struct OpSpans {
    upgrade: Option<TraceContext>,
    spans: Option<Spans>,
}

/// One operation's span, begun.
pub(super) struct OpSpan {
    pub(super) context: TraceContext,
    started: Instant,
}

impl OpSpans {
    /// Spans in the trace of the upgrade request (none without one).
    pub(super) fn new(upgrade: Option<TraceContext>) -> OpSpans {
        OpSpans {
            upgrade,
            spans: sdsim_net::otel::here(),
        }
    }

    /// Whether spans are exported at all (an exporter is installed).
    pub(super) fn recording(&self) -> bool {
        self.spans.is_some()
    }

    /// The span of an operation starting now: a child of the upgrade's span. Begun with
    /// tracing off too: the calls the operation makes still carry its trace on.
    pub(super) fn begin(&self) -> Option<OpSpan> {
        let upgrade = self.upgrade.as_ref()?;
        Some(OpSpan {
            context: TraceContext {
                trace_id: upgrade.trace_id,
                span_id: new_span_id(),
                parent_id: Some(upgrade.span_id),
                flags: upgrade.flags,
                state: upgrade.state.clone(),
            },
            started: Instant::now(),
        })
    }

    /// Records the span of operation `op` on `channel`, refused with `error` if it was.
    pub(super) fn end(&self, span: OpSpan, op: &str, channel: Option<&str>, error: Option<String>) {
        let Some(spans) = &self.spans else { return };
        if span.context.flags & 1 == 0 {
            return;
        }
        let mut record = SpanRecord::ended_now(
            &span.context,
            format!("ws {op}"),
            SpanKind::Server,
            span.started.elapsed(),
        );
        record.attribute("websocket.op", op);
        if let Some(channel) = channel {
            record.attribute("websocket.channel", channel);
        }
        record.error = error;
        spans.record(record);
    }
}
