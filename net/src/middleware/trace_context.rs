//! The trace-context layer: W3C Trace Context (<https://www.w3.org/TR/trace-context/>) on
//! every HTTP request and gRPC call.
//!
//! A valid incoming `traceparent` (header or metadata) continues the caller's trace: its
//! trace-id is kept and its parent-id becomes this request's parent. Anything else — absent,
//! repeated, malformed — starts a new trace with a random trace-id, as the specification asks
//! (never an error). Either way the request gets a span-id of its own, and:
//!
//! - the [`TraceContext`] goes in [`Exchange::extensions`], for the later layers and the
//!   handler; the adapters make it `crate::otel::current` while the handler runs, so the
//!   gRPC calls it makes carry it on (`crate::otel::ClientSpan`);
//! - `trace_id` and `span_id` go on the exchange's span, so they are on the access-log line
//!   and on every event the handler logs;
//! - the answer carries `traceparent: 00-<trace-id>-<span-id>-<flags>` (HTTP header, gRPC
//!   initial metadata or Trailers-Only metadata), so a client can find its request in the
//!   logs, and the incoming `tracestate` unchanged when it is valid (it is dropped with an
//!   invalid `traceparent`, or when it breaks the list rules).
//!
//! Sampling: without tracing (`[otel]` off) a new trace has flags `00` and a continued one
//! keeps the caller's sampled (and Level 2 random-id) bits. With a sampler
//! ([`TraceContexts::with_sampler`]) the sampled bit is its decision, which the answer, the
//! calls made for the request and the span exporter then follow.

use super::access_log;
use super::layer::{Check, Exchange, Layer};
use crate::otel::sampler::Sampler;
use http::header::HeaderValue;
use http::{HeaderMap, HeaderName};
use std::cell::Cell;
use std::fmt;

/// The header (and gRPC metadata key) that carries the trace and parent ids.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The header (and gRPC metadata key) that carries vendors' trace state.
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The only version this layer writes, and the one whose length is exact.
const VERSION_00_LEN: usize = 55;
/// The flags kept from a caller: sampled (Level 1) and random trace-id (Level 2); the
/// specification reserves the others, to be sent as zero.
const KNOWN_FLAGS: u8 = 0b11;
/// Most list members a `tracestate` may have.
const MAX_TRACESTATE_MEMBERS: usize = 32;

/// A trace's id: 16 bytes, never all zero; written as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

/// A span's id: 8 bytes, never all zero; written as 16 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub [u8; 8]);

/// `bytes` as lowercase hex digits into `out` (twice as long).
fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    // One write of the whole id: a `write!` per byte made the ids the dearest part of a span.
    let mut digits = [0u8; 32];
    let digits = &mut digits[..bytes.len() * 2];
    hex_into(bytes, digits);
    f.write_str(std::str::from_utf8(digits).map_err(|_| fmt::Error)?)
}

impl TraceId {
    /// The 32 lowercase hex digits.
    pub fn hex(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        hex_into(&self.0, &mut out);
        out
    }
}

impl SpanId {
    /// The 16 lowercase hex digits.
    pub fn hex(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        hex_into(&self.0, &mut out);
        out
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

/// Why an incoming `traceparent` was ignored (and a new trace started).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// More than one `traceparent` came with the request.
    #[error("more than one traceparent")]
    Repeated,
    /// Not the 55 characters of version 00 (extra fields included), or, for a later version,
    /// shorter than that.
    #[error("traceparent is {0} characters; version 00 has 55")]
    Length(usize),
    /// A field is not lowercase hex digits (upper case is not allowed either).
    #[error("traceparent `{0}` is not lowercase hex")]
    NotHex(&'static str),
    /// The fields are not separated by single dashes, or a later version's fields are
    /// followed by something other than a dash.
    #[error("traceparent fields must be separated by `-`")]
    Separator,
    /// Version `ff`, which the specification forbids.
    #[error("traceparent version ff is invalid")]
    VersionFf,
    /// The trace-id is all zeros.
    #[error("traceparent trace-id is all zeros")]
    ZeroTraceId,
    /// The parent-id is all zeros.
    #[error("traceparent parent-id is all zeros")]
    ZeroParentId,
}

/// A valid `traceparent` as a caller sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traceparent {
    /// The trace the caller is part of.
    pub trace_id: TraceId,
    /// The caller's span: this request's parent.
    pub parent_id: SpanId,
    /// The caller's trace flags (bit 0: sampled).
    pub flags: u8,
}

/// `N` bytes from `2 * N` lowercase hex digits; `field` names the field in the error.
fn hex<const N: usize>(digits: &[u8], field: &'static str) -> Result<[u8; N], Malformed> {
    let nibble = |d: u8| match d {
        b'0'..=b'9' => Ok(d - b'0'),
        b'a'..=b'f' => Ok(d - b'a' + 10),
        _ => Err(Malformed::NotHex(field)),
    };
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Ok(out)
}

impl Traceparent {
    /// Parses one `traceparent` value (optional whitespace around it is allowed). Version 00
    /// must be exactly 55 characters; a later version may be longer, with a dash after the
    /// four fields it shares with 00 (the specification's forward compatibility).
    pub fn parse(value: &[u8]) -> Result<Traceparent, Malformed> {
        let value = value.trim_ascii();
        if value.len() < VERSION_00_LEN {
            return Err(Malformed::Length(value.len()));
        }
        let version: [u8; 1] = hex(&value[0..2], "version")?;
        if version[0] == 0xff {
            return Err(Malformed::VersionFf);
        }
        if version[0] == 0 && value.len() != VERSION_00_LEN {
            return Err(Malformed::Length(value.len()));
        }
        let dashes_in_place = [2, 35, 52].iter().all(|&i| value[i] == b'-');
        let version_tail_ok = value.len() == VERSION_00_LEN || value[VERSION_00_LEN] == b'-';
        if !dashes_in_place || !version_tail_ok {
            return Err(Malformed::Separator);
        }
        let trace_id = TraceId(hex(&value[3..35], "trace-id")?);
        let parent_id = SpanId(hex(&value[36..52], "parent-id")?);
        let [flags] = hex(&value[53..55], "trace-flags")?;
        if trace_id.0 == [0; 16] {
            return Err(Malformed::ZeroTraceId);
        }
        if parent_id.0 == [0; 8] {
            return Err(Malformed::ZeroParentId);
        }
        Ok(Traceparent {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// The `traceparent` of a request's metadata; a repeated one is invalid.
    pub fn from_metadata(metadata: &HeaderMap) -> Option<Result<Traceparent, Malformed>> {
        let mut all = metadata.get_all(TRACEPARENT).iter();
        let first = all.next()?;
        if all.next().is_some() {
            return Some(Err(Malformed::Repeated));
        }
        Some(Traceparent::parse(first.as_bytes()))
    }
}

/// Whether `key` is a `tracestate` key: `lcalpha 0*255(lcalpha / DIGIT / _ - * /)`, or
/// `tenant@system` with a tenant of 1–241 and a system of 1–14 such characters, the tenant
/// starting with a letter or digit and the system with a letter.
fn is_tracestate_key(key: &[u8]) -> bool {
    let rest_ok = |s: &[u8]| {
        s.iter()
            .all(|&c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/'))
    };
    match key.iter().position(|&c| c == b'@') {
        None => (1..=256).contains(&key.len()) && key[0].is_ascii_lowercase() && rest_ok(&key[1..]),
        Some(at) => {
            let (tenant, system) = (&key[..at], &key[at + 1..]);
            (1..=241).contains(&tenant.len())
                && (tenant[0].is_ascii_lowercase() || tenant[0].is_ascii_digit())
                && rest_ok(&tenant[1..])
                && (1..=14).contains(&system.len())
                && system[0].is_ascii_lowercase()
                && rest_ok(&system[1..])
        }
    }
}

/// Whether `value` is a `tracestate` value: 1–256 printable ASCII characters other than
/// `,` and `=`, the last not a space.
fn is_tracestate_value(value: &[u8]) -> bool {
    (1..=256).contains(&value.len())
        && value
            .iter()
            .all(|&c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
        && value[value.len() - 1] != b' '
}

/// The `tracestate` of a request's metadata (several headers are one comma-separated list),
/// when it follows the list rules: at most 32 members, each `key=value`, no key twice; empty
/// members are allowed. `None` when absent or invalid.
pub fn tracestate(metadata: &HeaderMap) -> Option<HeaderValue> {
    let mut values = metadata.get_all(TRACESTATE).iter();
    let first = values.next()?.clone();
    let combined = match values.next() {
        None => first,
        Some(second) => {
            let mut joined = first.as_bytes().to_vec();
            for value in std::iter::once(second).chain(values) {
                joined.push(b',');
                joined.extend_from_slice(value.as_bytes());
            }
            HeaderValue::from_bytes(&joined).ok()?
        }
    };
    let mut keys: Vec<&[u8]> = Vec::new();
    for member in combined.as_bytes().split(|&c| c == b',') {
        let member = member.trim_ascii();
        if member.is_empty() {
            continue;
        }
        let eq = member.iter().position(|&c| c == b'=')?;
        let (key, value) = (&member[..eq], &member[eq + 1..]);
        if !is_tracestate_key(key) || !is_tracestate_value(value) || keys.contains(&key) {
            return None;
        }
        keys.push(key);
    }
    if keys.len() > MAX_TRACESTATE_MEMBERS {
        return None;
    }
    Some(combined)
}

/// The trace context of one request, in [`Exchange::extensions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace: the caller's, or a new one.
    pub trace_id: TraceId,
    /// This request's own span.
    pub span_id: SpanId,
    /// The caller's span, when the request continued a trace.
    pub parent_id: Option<SpanId>,
    /// Trace flags for what this request sends on (bit 0: sampled).
    pub flags: u8,
    /// The caller's `tracestate`, when valid: sent on unchanged.
    pub state: Option<HeaderValue>,
}

impl TraceContext {
    /// The `traceparent` naming this request's span: what the answer carries, and what a
    /// call made on behalf of this request sends.
    pub fn traceparent(&self) -> HeaderValue {
        let mut value = [b'-'; VERSION_00_LEN];
        value[..2].copy_from_slice(b"00");
        value[3..35].copy_from_slice(&self.trace_id.hex());
        value[36..52].copy_from_slice(&self.span_id.hex());
        hex_into(&[self.flags], &mut value[53..55]);
        HeaderValue::from_bytes(&value).expect("hex digits and dashes are a valid header value")
    }
}

/// The trace-context layer of one shard; see the module documentation.
pub struct TraceContexts {
    /// SplitMix64 state: ids need to be unique and unguessable enough for tracing, not secret,
    /// and a system call per request would cost more than the rest of the layer.
    state: Cell<u64>,
    /// Decides the sampled bit when tracing is on.
    sampler: Option<Sampler>,
}

thread_local! {
    static IDS: TraceContexts = TraceContexts::new();
}

/// A new span-id from this thread's generator (for spans other than a request's own: the
/// calls it makes, the operations of a WebSocket session).
pub fn new_span_id() -> SpanId {
    IDS.with(TraceContexts::new_span_id)
}

impl TraceContexts {
    /// A layer whose ids start from operating-system randomness.
    pub fn new() -> TraceContexts {
        let mut seed = [0u8; 8];
        let random = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed);
        let seed = match random {
            Ok(()) => u64::from_le_bytes(seed),
            // Without the system's randomness, the clock still differs between shards and
            // restarts.
            Err(_) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
        };
        TraceContexts {
            state: Cell::new(seed),
            sampler: None,
        }
    }

    /// A layer that sets the sampled bit as `sampler` decides.
    pub fn with_sampler(sampler: Sampler) -> TraceContexts {
        TraceContexts {
            sampler: Some(sampler),
            ..TraceContexts::new()
        }
    }

    fn next_u64(&self) -> u64 {
        let mut z = self.state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        self.state.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn new_span_id(&self) -> SpanId {
        loop {
            let id = self.next_u64();
            if id != 0 {
                return SpanId(id.to_be_bytes());
            }
        }
    }

    fn new_trace_id(&self) -> TraceId {
        loop {
            let (high, low) = (self.next_u64(), self.next_u64());
            if high | low != 0 {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&high.to_be_bytes());
                id[8..].copy_from_slice(&low.to_be_bytes());
                return TraceId(id);
            }
        }
    }

    /// The context of a request with `metadata`: the caller's trace continued, or a new one.
    pub fn context_for(&self, metadata: &HeaderMap) -> TraceContext {
        let span_id = self.new_span_id();
        let mut context = match Traceparent::from_metadata(metadata) {
            Some(Ok(parent)) => TraceContext {
                trace_id: parent.trace_id,
                span_id,
                parent_id: Some(parent.parent_id),
                flags: parent.flags & KNOWN_FLAGS,
                state: tracestate(metadata),
            },
            // The specification: a traceparent that does not parse is ignored, and so is
            // the tracestate that came with it.
            Some(Err(_)) | None => TraceContext {
                trace_id: self.new_trace_id(),
                span_id,
                parent_id: None,
                flags: 0,
                state: None,
            },
        };
        if let Some(sampler) = &self.sampler {
            let parent_flags = context.parent_id.map(|_| context.flags);
            let sampled = sampler.sampled(&context.trace_id, parent_flags);
            context.flags = (context.flags & !1) | u8::from(sampled);
        }
        context
    }
}

impl Default for TraceContexts {
    fn default() -> Self {
        TraceContexts::new()
    }
}

impl Layer for TraceContexts {
    fn request<'a>(&'a self, ex: &'a mut Exchange, metadata: &'a HeaderMap) -> Check<'a> {
        let context = self.context_for(metadata);
        ex.span = tracing::info_span!(
            target: access_log::TARGET,
            parent: &ex.span,
            "trace",
            trace_id = %context.trace_id,
            span_id = %context.span_id,
        );
        ex.extensions.insert(context);
        Check::Pass
    }

    fn respond(&self, ex: &Exchange, metadata: &mut HeaderMap) {
        if let Some(context) = ex.extensions.get::<TraceContext>() {
            metadata.insert(TRACEPARENT, context.traceparent());
            if let Some(state) = &context.state {
                metadata.insert(TRACESTATE, state.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_parses() {
        let parsed = Traceparent::parse(VALID.as_bytes()).unwrap();
        assert_eq!(
            parsed.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(parsed.parent_id.to_string(), "00f067aa0ba902b7");
        assert_eq!(parsed.flags, 1);
        // Whitespace around the value is not part of it.
        assert_eq!(
            Traceparent::parse(format!(" \t{VALID} ").as_bytes()),
            Ok(parsed)
        );
        // A later version may add fields after a dash; its four known fields are read.
        let later = format!("cc{}-what-the-future-holds", &VALID[2..]);
        assert_eq!(Traceparent::parse(later.as_bytes()), Ok(parsed));
        assert_eq!(
            Traceparent::parse(format!("cc{}", &VALID[2..]).as_bytes()),
            Ok(parsed)
        );
    }

    /// The specification's invalid forms, each with the reason it is refused.
    #[test]
    fn malformed_traceparents_are_refused_with_their_reason() {
        let table: &[(&str, Malformed)] = &[
            ("", Malformed::Length(0)),
            (&VALID[..54], Malformed::Length(54)),
            // Extra fields are for later versions only.
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
                Malformed::Length(61),
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-010",
                Malformed::Length(56),
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                Malformed::NotHex("trace-id"),
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
                Malformed::NotHex("parent-id"),
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
                Malformed::NotHex("trace-flags"),
            ),
            (
                "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Malformed::NotHex("version"),
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
                Malformed::NotHex("trace-id"),
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Malformed::VersionFf,
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                Malformed::ZeroTraceId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                Malformed::ZeroParentId,
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Malformed::Separator,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736.00f067aa0ba902b7-01",
                Malformed::Separator,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
                Malformed::Separator,
            ),
            // A dash moved: the lengths add up, the fields do not.
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
                Malformed::Separator,
            ),
            // A later version's fields must end at a dash.
            (
                "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.what",
                Malformed::Separator,
            ),
            (
                "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
                Malformed::Length(54),
            ),
        ];
        for (input, reason) in table {
            assert_eq!(
                Traceparent::parse(input.as_bytes()),
                Err(*reason),
                "{input:?}"
            );
        }
        let mut twice = HeaderMap::new();
        twice.append(TRACEPARENT, HeaderValue::from_static(VALID));
        twice.append(TRACEPARENT, HeaderValue::from_static(VALID));
        assert_eq!(
            Traceparent::from_metadata(&twice),
            Some(Err(Malformed::Repeated))
        );
        assert_eq!(Traceparent::from_metadata(&HeaderMap::new()), None);
    }

    fn with_state(values: &[&str]) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(TRACEPARENT, HeaderValue::from_static(VALID));
        for v in values {
            m.append(TRACESTATE, HeaderValue::from_str(v).unwrap());
        }
        m
    }

    #[test]
    fn tracestate_passes_unchanged_only_when_it_follows_the_list_rules() {
        for valid in [
            "congo=t61rcWkgMzE",
            "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
            "rojo=00f067aa0ba902b7 , ,\tcongo=t61rcWkgMzE",
            "tenant1@vendor=x,a-b_c*d/e=v a l u e",
            "k=~!\"#$%&'()*+-./:;<>?@[]^_`{|}",
        ] {
            assert_eq!(
                tracestate(&with_state(&[valid]))
                    .as_ref()
                    .map(|v| v.to_str().unwrap()),
                Some(valid)
            );
        }
        assert_eq!(
            tracestate(&with_state(&["rojo=1", "congo=2"])).unwrap(),
            "rojo=1,congo=2",
            "several headers are one list"
        );
        let members = |n: usize| {
            (0..n)
                .map(|i| format!("k{i}=v"))
                .collect::<Vec<_>>()
                .join(",")
        };
        assert!(tracestate(&with_state(&[&members(32)])).is_some());
        let long_key = format!("a{}", "b".repeat(255));
        assert!(tracestate(&with_state(&[&format!("{long_key}=v")])).is_some());
        for invalid in [
            members(33),
            "Rojo=1".into(),
            "1rojo=1".into(),
            "rojo".into(),
            "rojo=".into(),
            "rojo=a=b".into(),
            "rojo=1,rojo=2".into(),
            "rojo=a\tb".into(),
            "@vendor=1".into(),
            "tenant@=1".into(),
            "tenant@1vendor=1".into(),
            "tenant@vendorvendorvend=1".into(),
            format!("{long_key}b=v"),
            format!("k={}", "v".repeat(257)),
        ] {
            assert_eq!(tracestate(&with_state(&[&invalid])), None, "{invalid:?}");
        }
        assert_eq!(tracestate(&HeaderMap::new()), None);
    }

    fn through_the_layer(
        layer: &TraceContexts,
        metadata: &HeaderMap,
    ) -> (Option<TraceContext>, HeaderMap) {
        let mut ex = Exchange::http(
            Method::GET,
            "/x".into(),
            "/x",
            "127.0.0.1:1".parse().unwrap(),
        );
        let passed = match layer.request(&mut ex, metadata) {
            Check::Pass => true,
            Check::Answer(_) | Check::Wait(_) => false,
        };
        assert!(passed, "the layer never answers");
        let mut response = HeaderMap::new();
        layer.respond(&ex, &mut response);
        (ex.extensions.get::<TraceContext>().cloned(), response)
    }

    #[test]
    fn a_valid_parent_is_continued_and_anything_else_starts_a_new_trace() {
        let layer = TraceContexts::new();
        let mut sent = with_state(&["congo=t61rcWkgMzE"]);
        sent.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff"),
        );
        let (context, response) = through_the_layer(&layer, &sent);
        let context = context.unwrap();
        assert_eq!(
            context.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(
            context.parent_id.map(|p| p.to_string()).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert_ne!(context.span_id.to_string(), "00f067aa0ba902b7");
        let back = Traceparent::parse(response[TRACEPARENT].as_bytes()).unwrap();
        assert_eq!(back.trace_id, context.trace_id);
        assert_eq!(
            back.parent_id, context.span_id,
            "the answer names this span"
        );
        assert_eq!(back.flags, 0x03, "reserved flags are sent as zero");
        assert_eq!(response[TRACESTATE], "congo=t61rcWkgMzE");

        let mut bad = with_state(&["congo=t61rcWkgMzE"]);
        bad.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        );
        let mut seen = std::collections::HashSet::new();
        for metadata in [&bad, &HeaderMap::new(), &HeaderMap::new()] {
            let (context, response) = through_the_layer(&layer, metadata);
            let context = context.unwrap();
            assert_eq!(context.parent_id, None);
            assert_eq!(context.flags, 0);
            assert!(
                !response.contains_key(TRACESTATE),
                "no tracestate without a valid traceparent"
            );
            let back = Traceparent::parse(response[TRACEPARENT].as_bytes()).unwrap();
            assert_eq!(
                (back.trace_id, back.parent_id),
                (context.trace_id, context.span_id)
            );
            assert!(seen.insert(context.trace_id), "each new trace is new");
        }
    }
}
