//! gRPC status codes and the `grpc-status` / `grpc-message` trailers.

use http::header::HeaderValue;
use http::HeaderMap;

/// The canonical status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl Code {
    /// The canonical name (`OK`, `RESOURCE_EXHAUSTED`), as metrics labels and logs show it.
    pub fn name(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }
}

/// A call's outcome other than success: a code and a message naming what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct Status {
    /// The code.
    pub code: Code,
    /// A message for a person (sent percent-encoded in `grpc-message`).
    pub message: String,
    /// Machine-readable details (`google.rpc.Status.details`), sent base64-encoded in
    /// `grpc-status-details-bin` as the richer error model of gRPC prescribes.
    pub details: Vec<Any>,
    /// Set by the client when the call provably never reached the server's handler (no
    /// connection, the stream was never opened or was refused, GOAWAY before it): a mesh may
    /// retry it on another instance even when the method is not idempotent. Never on the wire.
    pub unsent: bool,
}

/// `google.protobuf.Any`: a message and its type URL.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Any {
    /// `type.googleapis.com/<full message name>`.
    #[prost(string, tag = "1")]
    pub type_url: String,
    /// The encoded message.
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.rpc.Status`, the value of `grpc-status-details-bin`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    /// The gRPC code.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// The message.
    #[prost(string, tag = "2")]
    pub message: String,
    /// The details.
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<Any>,
}

/// `google.rpc.ErrorInfo`: why, as a stable machine-readable reason within a domain.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ErrorInfo {
    /// e.g. `INVALID_DESIGN`.
    #[prost(string, tag = "1")]
    pub reason: String,
    /// e.g. `sdsim`.
    #[prost(string, tag = "2")]
    pub domain: String,
}

/// `google.rpc.BadRequest`: what is wrong with which field.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct BadRequest {
    /// One per wrong field.
    #[prost(message, repeated, tag = "1")]
    pub field_violations: Vec<FieldViolation>,
}

/// One wrong field of a [`BadRequest`].
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct FieldViolation {
    /// The field (or a path into it).
    #[prost(string, tag = "1")]
    pub field: String,
    /// What is wrong.
    #[prost(string, tag = "2")]
    pub description: String,
}

/// `google.rpc.RetryInfo`: when the client may retry.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct RetryInfo {
    /// How long to wait before retrying.
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct ProtoDuration {
    /// Whole seconds.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds beyond them (0..1e9).
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

const ERROR_INFO: &str = "type.googleapis.com/google.rpc.ErrorInfo";
const BAD_REQUEST: &str = "type.googleapis.com/google.rpc.BadRequest";
const RETRY_INFO: &str = "type.googleapis.com/google.rpc.RetryInfo";

impl Status {
    /// A status with `code` and `message`.
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
            details: Vec::new(),
            unsent: false,
        }
    }

    /// The same status, marked as a call that never reached the server ([`Status::unsent`]).
    pub fn not_sent(mut self) -> Status {
        self.unsent = true;
        self
    }

    /// Adds an `ErrorInfo` detail.
    pub fn with_reason(mut self, domain: &str, reason: &str) -> Status {
        let info = ErrorInfo {
            reason: reason.into(),
            domain: domain.into(),
        };
        self.details.push(Any {
            type_url: ERROR_INFO.into(),
            value: prost::Message::encode_to_vec(&info),
        });
        self
    }

    /// Adds a `BadRequest` detail with `(field, description)` violations.
    pub fn with_violations<'a>(
        mut self,
        violations: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Status {
        let bad = BadRequest {
            field_violations: violations
                .into_iter()
                .map(|(field, description)| FieldViolation {
                    field: field.into(),
                    description: description.into(),
                })
                .collect(),
        };
        self.details.push(Any {
            type_url: BAD_REQUEST.into(),
            value: prost::Message::encode_to_vec(&bad),
        });
        self
    }

    /// Adds a `RetryInfo` detail: the client may retry after `delay`.
    pub fn with_retry_delay(mut self, delay: std::time::Duration) -> Status {
        let info = RetryInfo {
            retry_delay: Some(ProtoDuration {
                seconds: i64::try_from(delay.as_secs()).unwrap_or(i64::MAX),
                nanos: delay.subsec_nanos() as i32,
            }),
        };
        self.details.push(Any {
            type_url: RETRY_INFO.into(),
            value: prost::Message::encode_to_vec(&info),
        });
        self
    }

    /// The `RetryInfo` delay, if a detail carries one.
    pub fn retry_delay(&self) -> Option<std::time::Duration> {
        self.details
            .iter()
            .filter(|a| a.type_url == RETRY_INFO)
            .find_map(|a| <RetryInfo as prost::Message>::decode(a.value.as_slice()).ok())
            .and_then(|i| i.retry_delay)
            .map(|d| {
                std::time::Duration::new(
                    u64::try_from(d.seconds).unwrap_or(0),
                    u32::try_from(d.nanos).unwrap_or(0),
                )
            })
    }

    /// The `ErrorInfo` reason, if a detail carries one.
    pub fn reason(&self) -> Option<String> {
        self.details
            .iter()
            .filter(|a| a.type_url == ERROR_INFO)
            .find_map(|a| <ErrorInfo as prost::Message>::decode(a.value.as_slice()).ok())
            .map(|i| i.reason)
    }

    /// The `BadRequest` violations, if a detail carries them.
    pub fn violations(&self) -> Vec<FieldViolation> {
        self.details
            .iter()
            .filter(|a| a.type_url == BAD_REQUEST)
            .filter_map(|a| <BadRequest as prost::Message>::decode(a.value.as_slice()).ok())
            .flat_map(|b| b.field_violations)
            .collect()
    }

    /// Writes `grpc-status`, `grpc-message` and (with details) `grpc-status-details-bin`.
    pub fn write(&self, headers: &mut HeaderMap) {
        headers.insert("grpc-status", HeaderValue::from(self.code as u8 as u16));
        if !self.message.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&percent_encode(&self.message)) {
                headers.insert("grpc-message", v);
            }
        }
        if !self.details.is_empty() {
            use base64::Engine;
            let rpc = RpcStatus {
                code: self.code as i32,
                message: self.message.clone(),
                details: self.details.clone(),
            };
            let encoded = base64::engine::general_purpose::STANDARD_NO_PAD
                .encode(prost::Message::encode_to_vec(&rpc));
            if let Ok(v) = HeaderValue::from_str(&encoded) {
                headers.insert("grpc-status-details-bin", v);
            }
        }
    }

    /// The details of a `grpc-status-details-bin` value (padded or not); empty when absent or
    /// malformed.
    pub fn details_from(value: Option<&HeaderValue>) -> Vec<Any> {
        use base64::Engine;
        let Some(text) = value.and_then(|v| v.to_str().ok()) else {
            return Vec::new();
        };
        let text = text.trim_end_matches('=');
        base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(text)
            .ok()
            .and_then(|bytes| <RpcStatus as prost::Message>::decode(bytes.as_slice()).ok())
            .map(|s| s.details)
            .unwrap_or_default()
    }
}

/// Percent-encodes a `grpc-message` (the gRPC HTTP/2 spec: bytes outside 0x20–0x7E and `%`).
pub fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Parses `grpc-timeout` (`1H`, `10S`, `100m`, `5u`, `7n`, `2M`; at most 8 digits).
pub fn parse_timeout(value: &str) -> Option<std::time::Duration> {
    use std::time::Duration;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timeouts_parse_per_spec() {
        assert_eq!(parse_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(
            parse_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in ["", "S", "123456789S", "1x", "-1S", "1.5S"] {
            assert_eq!(parse_timeout(bad), None, "{bad}");
        }
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(percent_encode("field 'x' 100%"), "field 'x' 100%25");
        assert_eq!(percent_encode("é\n"), "%C3%A9%0A");
    }

    #[test]
    fn details_round_trip_through_the_trailer() {
        let status = Status::new(Code::InvalidArgument, "the design has 2 problem(s)")
            .with_reason("sdsim", "INVALID_DESIGN")
            .with_retry_delay(Duration::from_millis(1500))
            .with_violations([
                ("$.components[0].instances", "must be at least 1"),
                ("$.entry", "é"),
            ]);
        let mut headers = HeaderMap::new();
        status.write(&mut headers);
        let details = Status::details_from(headers.get("grpc-status-details-bin"));
        let back = Status {
            details,
            ..Status::new(Code::InvalidArgument, "")
        };
        assert_eq!(back.reason().as_deref(), Some("INVALID_DESIGN"));
        assert_eq!(back.retry_delay(), Some(Duration::from_millis(1500)));
        let v = back.violations();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].field, "$.components[0].instances");
        assert_eq!(v[1].description, "é");
        // Padded base64 (as some peers send) reads the same.
        let padded = format!("{}==", headers["grpc-status-details-bin"].to_str().unwrap());
        let value = HeaderValue::from_str(&padded).unwrap();
        assert_eq!(Status::details_from(Some(&value)).len(), 3);
    }

    #[test]
    fn malformed_details_are_ignored() {
        for bad in ["", "!!!", "AAAA", "////"] {
            let value = HeaderValue::from_str(bad).unwrap();
            assert!(Status::details_from(Some(&value)).is_empty(), "{bad:?}");
        }
        assert!(Status::details_from(None).is_empty());
    }
}
