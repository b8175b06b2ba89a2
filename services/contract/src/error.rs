//! A service's error on both wires, from one table.
//!
//! A service has one error type. It implements [`ServiceError`]: [`ServiceError::codes`] is the
//! table (HTTP status and error code, gRPC code and `ErrorInfo` reason, retry hint), and
//! [`ServiceError::from_received`] rebuilds the error from what a remote call received. From
//! that, [`response`] writes `{"error":{"code","message"}}` and [`status`] writes the gRPC
//! status with its `google.rpc.Status` details (an `ErrorInfo` in domain [`DOMAIN`], and a
//! `BadRequest` naming each field when there are violations), so a remote client rebuilds the
//! error the service produced and an HTTP client sees the same answer wherever the service ran.

use bytes::Bytes;
use http::header::RETRY_AFTER;
use http::{HeaderValue, StatusCode};
use sdsim_net::grpc::status::{Any, FieldViolation};
use sdsim_net::grpc::{Code, Status};
use sdsim_net::http::types::{error, json, Response};
use std::borrow::Cow;
use std::collections::HashMap;

/// `ErrorInfo.domain` of every sdsim error.
pub const DOMAIN: &str = "sdsim";

/// How one error appears on each wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCodes {
    /// The HTTP status.
    pub http: StatusCode,
    /// The `code` of the HTTP error body, e.g. `not_found`.
    pub code: &'static str,
    /// The gRPC status code.
    pub grpc: Code,
    /// The `ErrorInfo` reason, e.g. `NOT_FOUND`.
    pub reason: &'static str,
    /// Seconds after which a retry may succeed (HTTP `Retry-After`, at least 1).
    pub retry_after_s: Option<i64>,
    /// Whether the HTTP body lists the violations as `problems: [{path, message}]`.
    pub problems_in_body: bool,
}

impl ErrorCodes {
    /// An error with these codes, no retry hint and no problem list.
    pub const fn new(
        http: StatusCode,
        code: &'static str,
        grpc: Code,
        reason: &'static str,
    ) -> ErrorCodes {
        ErrorCodes {
            http,
            code,
            grpc,
            reason,
            retry_after_s: None,
            problems_in_body: false,
        }
    }

    /// With a retry hint.
    pub const fn retry_after(mut self, seconds: i64) -> ErrorCodes {
        self.retry_after_s = Some(seconds);
        self
    }

    /// With the violations listed in the HTTP body.
    pub const fn problems_in_body(mut self) -> ErrorCodes {
        self.problems_in_body = true;
        self
    }
}

/// A field of a request that is missing or wrong (every service error has a variant for it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidField {
    /// The field, e.g. `user_id`.
    pub field: Cow<'static, str>,
    /// What is wrong with it.
    pub message: String,
}

impl InvalidField {
    /// `field` is empty: "is required".
    pub fn required(field: &'static str) -> InvalidField {
        InvalidField {
            field: field.into(),
            message: "is required".into(),
        }
    }
}

/// `value`, unless it is empty: then `field` "is required".
pub fn required(value: String, field: &'static str) -> Result<String, InvalidField> {
    if value.is_empty() {
        Err(InvalidField::required(field))
    } else {
        Ok(value)
    }
}

/// What a remote call received instead of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The gRPC code.
    pub code: Code,
    /// The message.
    pub message: String,
    /// The `ErrorInfo` reason, when the status came from an sdsim service.
    pub reason: Option<String>,
    /// The `ErrorInfo` metadata.
    pub metadata: HashMap<String, String>,
    /// The `BadRequest` violations: (field or path, description).
    pub violations: Vec<(String, String)>,
}

/// A service's one error type.
pub trait ServiceError: std::error::Error + From<InvalidField> + Sized {
    /// The table: how this error appears on each wire.
    fn codes(&self) -> ErrorCodes;

    /// Field violations: (field or path, what is wrong).
    fn violations(&self) -> Vec<(&str, &str)> {
        Vec::new()
    }

    /// `ErrorInfo` metadata the remote side needs to rebuild the error.
    fn metadata(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    /// The error a remote call's status stands for (the inverse of [`status`]; statuses that
    /// no sdsim service produced — a deadline, a refused connection — too).
    fn from_received(received: Received) -> Self;

    /// [`ServiceError::from_received`] of a status.
    fn from_status(status: &Status) -> Self {
        Self::from_received(received(status))
    }
}

/// `google.rpc.ErrorInfo` with its metadata.
#[derive(Clone, PartialEq, prost::Message)]
struct ErrorInfo {
    #[prost(string, tag = "1")]
    reason: String,
    #[prost(string, tag = "2")]
    domain: String,
    #[prost(map = "string, string", tag = "3")]
    metadata: HashMap<String, String>,
}

const ERROR_INFO: &str = "type.googleapis.com/google.rpc.ErrorInfo";

/// The gRPC status of an error, with its details.
pub fn status<E: ServiceError>(e: &E) -> Status {
    let codes = e.codes();
    let info = ErrorInfo {
        reason: codes.reason.into(),
        domain: DOMAIN.into(),
        metadata: e
            .metadata()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    };
    let mut status = Status::new(codes.grpc, e.to_string());
    status.details.push(Any {
        type_url: ERROR_INFO.into(),
        value: prost::Message::encode_to_vec(&info),
    });
    let violations = e.violations();
    if violations.is_empty() {
        status
    } else {
        status.with_violations(violations)
    }
}

/// What a status carries, read back.
pub fn received(s: &Status) -> Received {
    let info = s
        .details
        .iter()
        .filter(|a| a.type_url == ERROR_INFO)
        .find_map(|a| <ErrorInfo as prost::Message>::decode(a.value.as_slice()).ok());
    let (reason, metadata) = match info {
        Some(i) => (Some(i.reason), i.metadata),
        None => (None, HashMap::new()),
    };
    Received {
        code: s.code,
        message: s.message.clone(),
        reason,
        metadata,
        violations: s
            .violations()
            .into_iter()
            .map(|FieldViolation { field, description }| (field, description))
            .collect(),
    }
}

/// The HTTP response of an error: `{"error":{"code","message"}}` (with `problems` when the
/// table says so) and `Retry-After` when there is a retry hint.
pub fn response<E: ServiceError>(e: &E) -> Response {
    let codes = e.codes();
    let mut resp = if codes.problems_in_body {
        #[derive(serde::Serialize)]
        struct Problem<'a> {
            path: &'a str,
            message: &'a str,
        }
        #[derive(serde::Serialize)]
        struct Inner<'a> {
            code: &'a str,
            message: String,
            problems: Vec<Problem<'a>>,
        }
        #[derive(serde::Serialize)]
        struct Outer<'a> {
            error: Inner<'a>,
        }
        let problems = e
            .violations()
            .into_iter()
            .map(|(path, message)| Problem { path, message })
            .collect();
        json(
            codes.http,
            &Outer {
                error: Inner {
                    code: codes.code,
                    message: e.to_string(),
                    problems,
                },
            },
        )
    } else {
        error(codes.http, codes.code, &e.to_string())
    };
    if let Some(s) = codes.retry_after_s {
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(s.max(1)));
    }
    resp
}

/// An empty response (`204 No Content`, `202 Accepted`) typed as JSON, like every API answer.
pub fn empty(status: StatusCode) -> Response {
    sdsim_net::http::types::with_body(status, "application/json", Bytes::new())
}
