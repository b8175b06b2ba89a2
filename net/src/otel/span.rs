//! A finished span as a shard hands it to the exporter, and its OTLP form.

use super::proto::{common, trace};
use crate::middleware::trace_context::{SpanId, TraceContext, TraceId};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A span's role (OpenTelemetry's span kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// Work inside this process (a WebSocket session's operation).
    Internal,
    /// The handling of a request or call that came in.
    Server,
    /// A call this process made to another.
    Client,
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Text.
    Str(String),
    /// A whole number.
    Int(i64),
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Str(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(s)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Value {
        Value::Int(n)
    }
}

/// One finished span.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    /// The trace it belongs to.
    pub trace_id: TraceId,
    /// Its own id.
    pub span_id: SpanId,
    /// The span it is a child of; `None` for a trace's root.
    pub parent_id: Option<SpanId>,
    /// The W3C trace flags it was recorded with.
    pub flags: u8,
    /// `GET /api/projects/{id}`, `sdsim.project.v1.ProjectService/GetProject`, `ws subscribe`.
    pub name: String,
    /// Its role.
    pub kind: SpanKind,
    /// When it began.
    pub start: SystemTime,
    /// When it ended.
    pub end: SystemTime,
    /// Semantic-convention attributes (`http.route`, `rpc.method`, …).
    pub attributes: Vec<(&'static str, Value)>,
    /// `Some(message)` when the operation failed (status ERROR); `None` leaves it unset.
    pub error: Option<String>,
}

impl SpanRecord {
    /// A span with `context`'s ids and flags that ended now, `elapsed` after it began.
    pub fn ended_now(
        context: &TraceContext,
        name: String,
        kind: SpanKind,
        elapsed: Duration,
    ) -> SpanRecord {
        let end = SystemTime::now();
        SpanRecord {
            trace_id: context.trace_id,
            span_id: context.span_id,
            parent_id: context.parent_id,
            flags: context.flags,
            name,
            kind,
            start: end.checked_sub(elapsed).unwrap_or(end),
            end,
            attributes: Vec::new(),
            error: None,
        }
    }

    /// Adds an attribute.
    pub fn attribute(&mut self, key: &'static str, value: impl Into<Value>) -> &mut SpanRecord {
        self.attributes.push((key, value.into()));
        self
    }

    /// The OTLP span.
    pub fn to_otlp(&self) -> trace::Span {
        let nanos = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        };
        let kind = match self.kind {
            SpanKind::Internal => trace::span::SpanKind::Internal,
            SpanKind::Server => trace::span::SpanKind::Server,
            SpanKind::Client => trace::span::SpanKind::Client,
        };
        let status = self.error.as_ref().map(|message| trace::Status {
            message: message.clone(),
            code: trace::status::StatusCode::Error as i32,
        });
        trace::Span {
            trace_id: self.trace_id.0.to_vec(),
            span_id: self.span_id.0.to_vec(),
            trace_state: String::new(),
            parent_span_id: self.parent_id.map_or_else(Vec::new, |p| p.0.to_vec()),
            flags: u32::from(self.flags),
            name: self.name.clone(),
            kind: kind as i32,
            start_time_unix_nano: nanos(self.start),
            end_time_unix_nano: nanos(self.end),
            attributes: self
                .attributes
                .iter()
                .map(|(key, value)| key_value(key, value.clone()))
                .collect(),
            dropped_attributes_count: 0,
            status,
        }
    }
}

/// An OTLP attribute.
pub(crate) fn key_value(key: &str, value: Value) -> common::KeyValue {
    let value = match value {
        Value::Str(s) => common::any_value::Value::StringValue(s),
        Value::Int(n) => common::any_value::Value::IntValue(n),
    };
    common::KeyValue {
        key: key.to_owned(),
        value: Some(common::AnyValue { value: Some(value) }),
    }
}

/// `/pkg.Service/Method` as (`pkg.Service`, `Method`).
pub fn rpc_parts(path: &str) -> (&str, &str) {
    let path = path.strip_prefix('/').unwrap_or(path);
    path.split_once('/').unwrap_or((path, ""))
}
