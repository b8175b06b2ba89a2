//! The access-log layer (`log.access`): one line per HTTP request or gRPC call at INFO on
//! target `sdsim::access`. Both lines carry `path`, `duration_ms`, `request_id` and `peer`;
//! HTTP adds `method`, `status` and `bytes`, gRPC `service`, `method` and `grpc_status` (the
//! code's name, e.g. `RESOURCE_EXHAUSTED`), and both the request's trace and span ids
//! (`trace{trace_id=… span_id=…}:` before the target in text, `span` and `spans` in JSON).
//!
//! Two ways out, one line format:
//!
//! - **Off the shard** (the server binary, [`install`]): the line is formatted here, straight
//!   into the shard's buffer of a [`LogWriter`], whose thread writes it; a full buffer drops
//!   the line and counts it ([`ACCESS_LOG_DROPPED`]). The format is the one `tracing`'s `fmt`
//!   writes for the event below (text without colours, or JSON), which the tests compare line
//!   for line.
//! - **As a `tracing` event** (no writer installed: a library user, the tests): written in the
//!   exchange's span ([`Exchange::span`]), so whatever fields other layers put there are on it.

use super::layer::{Ended, Exchange, Layer, Outcome, Protocol};
use super::log_writer::{LogSource, LogWriter, ShardLog};
use super::request_metrics::method_label;
use super::trace_context::TraceContext;
use sdsim_core::metrics::{Key, Metrics};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Mutex;
use std::time::SystemTime;

/// The log target of access lines.
pub const TARGET: &str = "sdsim::access";

/// Metric: access-log lines dropped because the log writer was behind (its shard's buffer
/// was full).
pub const ACCESS_LOG_DROPPED: &str = "sdsim_access_log_dropped_total";

/// How an access line is written off the shard: the two formats of `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFormat {
    /// `tracing`'s default text format, without ANSI colours.
    Text,
    /// `tracing`'s JSON format (`fields`, `target`, `span`, `spans`).
    Json,
}

static INSTALLED: Mutex<Option<(LogSource, LineFormat)>> = Mutex::new(None);

/// Makes every access-log layer built from now on (one per shard) format
/// its lines in `format` into a buffer of `writer` instead of emitting `tracing` events.
/// The server binary calls it once, before the shards start.
pub fn install(writer: &LogWriter, format: LineFormat) {
    *INSTALLED.lock().unwrap_or_else(|e| e.into_inner()) = Some((writer.source(), format));
}

/// The writer and format [`install`]ed, if any: what [`Stack::from_config`] builds a
/// [`BufferedAccessLog`] from on each shard, else an [`AccessLog`].
///
/// [`Stack::from_config`]: super::Stack::from_config
pub fn installed() -> Option<(LogSource, LineFormat)> {
    INSTALLED.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The layer writing access lines as `tracing` events; see the module documentation.
pub struct AccessLog;

impl Layer for AccessLog {
    fn done(&self, ex: &Exchange, outcome: &Outcome) {
        emit_event(ex, outcome);
    }
}

/// The layer of one shard writing access lines into its buffer of a [`LogWriter`]; see the
/// module documentation.
pub struct BufferedAccessLog {
    log: ShardLog,
    format: LineFormat,
    metrics: Rc<Metrics>,
    clock: RefCell<SecondStamp>,
}

impl BufferedAccessLog {
    /// The layer writing to `log` in `format`, counting drops in `metrics`.
    pub fn new(log: ShardLog, format: LineFormat, metrics: Rc<Metrics>) -> BufferedAccessLog {
        BufferedAccessLog {
            log,
            format,
            metrics,
            clock: RefCell::new(SecondStamp::default()),
        }
    }
}

impl Layer for BufferedAccessLog {
    fn done(&self, ex: &Exchange, outcome: &Outcome) {
        let now = SystemTime::now();
        let mut clock = self.clock.borrow_mut();
        let written = self.log.line(|buf| match self.format {
            LineFormat::Text => text_line(buf, clock.stamp(now), ex, outcome),
            LineFormat::Json => json_line(buf, clock.stamp(now), ex, outcome),
        });
        if !written {
            self.metrics.inc(Key::plain(ACCESS_LOG_DROPPED), 1);
        }
    }
}

/// The line as a `tracing` event in the exchange's span.
fn emit_event(ex: &Exchange, outcome: &Outcome) {
    let _in_exchange = ex.span.enter();
    let duration_ms = sdsim_core::millis(outcome.elapsed);
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

/// `2026-12-02T04:18:23.` for the current second, formatted once a second: the timestamp's
/// calendar part costs more than the rest of the line.
#[derive(Default)]
struct SecondStamp {
    second: u64,
    prefix: String,
}

/// A timestamp as `tracing`'s `fmt` writes it: RFC 3339, microseconds, UTC.
struct Stamp<'a> {
    prefix: &'a str,
    micros: u32,
}

impl SecondStamp {
    fn stamp(&mut self, now: SystemTime) -> Stamp<'_> {
        let since = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let second = since.as_secs();
        if second != self.second || self.prefix.is_empty() {
            self.second = second;
            self.prefix = civil_prefix(second);
        }
        Stamp {
            prefix: &self.prefix,
            micros: since.subsec_micros(),
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS.` of a Unix time.
fn civil_prefix(unix_secs: u64) -> String {
    format!(
        "{}.",
        sdsim_core::civil::Civil::from_unix(unix_secs).rfc3339_seconds()
    )
}

fn push_stamp(buf: &mut Vec<u8>, stamp: &Stamp<'_>) {
    buf.extend_from_slice(stamp.prefix.as_bytes());
    let mut digits = [b'0'; 6];
    let mut micros = stamp.micros;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    buf.extend_from_slice(&digits);
    buf.push(b'Z');
}

fn push_int(buf: &mut Vec<u8>, value: impl itoa::Integer) {
    buf.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// Whether `s` is written the same quoted by `Debug` and by JSON: printable ASCII without
/// quotes or backslashes (paths, ids and labels nearly always are).
fn plain(s: &str) -> bool {
    s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

/// A string as `Debug` quotes it (the text format's `field="value"`).
fn push_debug_str(buf: &mut Vec<u8>, s: &str) {
    if plain(s) {
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
    } else {
        use std::io::Write;
        let _ = write!(buf, "{s:?}");
    }
}

/// A string as a JSON string (serde_json's escapes).
fn push_json_str(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    if plain(s) {
        buf.extend_from_slice(s.as_bytes());
    } else {
        for c in s.chars() {
            match c {
                '"' => buf.extend_from_slice(b"\\\""),
                '\\' => buf.extend_from_slice(b"\\\\"),
                '\n' => buf.extend_from_slice(b"\\n"),
                '\r' => buf.extend_from_slice(b"\\r"),
                '\t' => buf.extend_from_slice(b"\\t"),
                '\u{8}' => buf.extend_from_slice(b"\\b"),
                '\u{c}' => buf.extend_from_slice(b"\\f"),
                c if (c as u32) < 0x20 => {
                    use std::io::Write;
                    let _ = write!(buf, "\\u{:04x}", c as u32);
                }
                c => {
                    let mut utf8 = [0u8; 4];
                    buf.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                }
            }
        }
    }
    buf.push(b'"');
}

fn push_peer(buf: &mut Vec<u8>, peer: &SocketAddr) {
    use std::io::Write;
    let _ = write!(buf, "{peer}");
}

/// The fields of a line, in the order both formats write them.
enum Fields {
    Http {
        method: &'static str,
        status: u16,
        bytes: usize,
    },
    Grpc {
        service: &'static str,
        method: &'static str,
        grpc_status: &'static str,
    },
    /// An adapter reports the ending of its own protocol: nothing else happens.
    Mismatched,
}

fn fields(ex: &Exchange, outcome: &Outcome) -> Fields {
    match (&ex.protocol, outcome.ended) {
        (Protocol::Http { method }, Ended::Http { status, body_bytes }) => Fields::Http {
            method: method_label(method),
            status: status.as_u16(),
            bytes: body_bytes,
        },
        (Protocol::Grpc { service, method }, Ended::Grpc { code }) => Fields::Grpc {
            service,
            method,
            grpc_status: code.name(),
        },
        _ => Fields::Mismatched,
    }
}

/// `2026-12-02T04:18:23.123456Z  INFO trace{trace_id=… span_id=…}: sdsim::access: request
/// method="GET" path="/health" status=200 bytes=15 duration_ms=0.05 request_id="…"
/// peer=127.0.0.1:40000`
fn text_line(buf: &mut Vec<u8>, stamp: Stamp<'_>, ex: &Exchange, outcome: &Outcome) {
    let fields = fields(ex, outcome);
    let message: &[u8] = match fields {
        Fields::Http { .. } => b"request",
        Fields::Grpc { .. } => b"grpc call",
        Fields::Mismatched => return,
    };
    push_stamp(buf, &stamp);
    buf.extend_from_slice(b"  INFO ");
    if let Some(trace) = ex.extensions.get::<TraceContext>() {
        buf.extend_from_slice(b"trace{trace_id=");
        buf.extend_from_slice(&trace.trace_id.hex());
        buf.extend_from_slice(b" span_id=");
        buf.extend_from_slice(&trace.span_id.hex());
        buf.extend_from_slice(b"}: ");
    }
    buf.extend_from_slice(TARGET.as_bytes());
    buf.extend_from_slice(b": ");
    buf.extend_from_slice(message);
    match fields {
        Fields::Http {
            method,
            status,
            bytes,
        } => {
            buf.extend_from_slice(b" method=");
            push_debug_str(buf, method);
            buf.extend_from_slice(b" path=");
            push_debug_str(buf, &ex.path);
            buf.extend_from_slice(b" status=");
            push_int(buf, status);
            buf.extend_from_slice(b" bytes=");
            push_int(buf, bytes);
        }
        Fields::Grpc {
            service,
            method,
            grpc_status,
        } => {
            buf.extend_from_slice(b" service=");
            push_debug_str(buf, service);
            buf.extend_from_slice(b" method=");
            push_debug_str(buf, method);
            buf.extend_from_slice(b" path=");
            push_debug_str(buf, &ex.path);
            buf.extend_from_slice(b" grpc_status=");
            push_debug_str(buf, grpc_status);
        }
        Fields::Mismatched => {}
    }
    buf.extend_from_slice(b" duration_ms=");
    {
        use std::io::Write;
        let _ = write!(buf, "{:?}", sdsim_core::millis(outcome.elapsed));
    }
    buf.extend_from_slice(b" request_id=");
    push_debug_str(buf, &ex.request_id);
    buf.extend_from_slice(b" peer=");
    push_peer(buf, &ex.peer);
    buf.push(b'\n');
}

/// `{"timestamp":"…","level":"INFO","fields":{"message":"request",…},"target":"sdsim::access",
/// "span":{"span_id":"…","trace_id":"…","name":"trace"},"spans":[{…}]}`
fn json_line(buf: &mut Vec<u8>, stamp: Stamp<'_>, ex: &Exchange, outcome: &Outcome) {
    let fields = fields(ex, outcome);
    let message: &[u8] = match fields {
        Fields::Http { .. } => b"request",
        Fields::Grpc { .. } => b"grpc call",
        Fields::Mismatched => return,
    };
    buf.extend_from_slice(b"{\"timestamp\":\"");
    push_stamp(buf, &stamp);
    buf.extend_from_slice(b"\",\"level\":\"INFO\",\"fields\":{\"message\":\"");
    buf.extend_from_slice(message);
    buf.push(b'"');
    match fields {
        Fields::Http {
            method,
            status,
            bytes,
        } => {
            buf.extend_from_slice(b",\"method\":");
            push_json_str(buf, method);
            buf.extend_from_slice(b",\"path\":");
            push_json_str(buf, &ex.path);
            buf.extend_from_slice(b",\"status\":");
            push_int(buf, status);
            buf.extend_from_slice(b",\"bytes\":");
            push_int(buf, bytes);
        }
        Fields::Grpc {
            service,
            method,
            grpc_status,
        } => {
            buf.extend_from_slice(b",\"service\":");
            push_json_str(buf, service);
            buf.extend_from_slice(b",\"method\":");
            push_json_str(buf, method);
            buf.extend_from_slice(b",\"path\":");
            push_json_str(buf, &ex.path);
            buf.extend_from_slice(b",\"grpc_status\":");
            push_json_str(buf, grpc_status);
        }
        Fields::Mismatched => {}
    }
    buf.extend_from_slice(b",\"duration_ms\":");
    let duration_ms = sdsim_core::millis(outcome.elapsed);
    buf.extend_from_slice(ryu::Buffer::new().format_finite(duration_ms).as_bytes());
    buf.extend_from_slice(b",\"request_id\":");
    push_json_str(buf, &ex.request_id);
    buf.extend_from_slice(b",\"peer\":\"");
    push_peer(buf, &ex.peer);
    buf.extend_from_slice(b"\"},\"target\":\"");
    buf.extend_from_slice(TARGET.as_bytes());
    buf.push(b'"');
    if let Some(trace) = ex.extensions.get::<TraceContext>() {
        let mut span = Vec::with_capacity(96);
        // tracing's JSON writes a span's fields in name order, then its name.
        span.extend_from_slice(b"{\"span_id\":\"");
        span.extend_from_slice(&trace.span_id.hex());
        span.extend_from_slice(b"\",\"trace_id\":\"");
        span.extend_from_slice(&trace.trace_id.hex());
        span.extend_from_slice(b"\",\"name\":\"trace\"}");
        buf.extend_from_slice(b",\"span\":");
        buf.extend_from_slice(&span);
        buf.extend_from_slice(b",\"spans\":[");
        buf.extend_from_slice(&span);
        buf.push(b']');
    }
    buf.extend_from_slice(b"}\n");
}

#[cfg(test)]
#[path = "access_log_tests.rs"]
mod tests;
