//! The auth service's error, and how it appears on each wire: one table
//! ([`ServiceError::codes`]) gives the HTTP status and error code and the gRPC code and
//! `ErrorInfo` reason of each kind; [`Failure::from_received`] reads it back on the client side.

use crate::password;
use http::StatusCode;
use sdsim_contract::{ErrorCodes, InvalidField, Received, ServiceError};
use sdsim_net::grpc::Code;
use sdsim_store::StoreError;
use std::borrow::Cow;

/// Why an operation failed; each maps to one HTTP status and one gRPC code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// A field is missing or wrong (400 / INVALID_ARGUMENT).
    #[error("{field}: {message}")]
    Invalid {
        /// The field.
        field: Cow<'static, str>,
        /// What is wrong with it.
        message: String,
    },
    /// Credentials or token refused (401 / UNAUTHENTICATED).
    #[error("{0}")]
    Unauthenticated(String),
    /// Not allowed (403 / PERMISSION_DENIED).
    #[error("{0}")]
    Forbidden(String),
    /// Too many failed logins (423 / RESOURCE_EXHAUSTED).
    #[error("the account is locked after repeated failed logins; retry in {retry_after_s} s")]
    Locked {
        /// Seconds until it unlocks.
        retry_after_s: i64,
    },
    /// Already exists (409 / ALREADY_EXISTS).
    #[error("{0}")]
    Conflict(String),
    /// Unknown (404 / NOT_FOUND).
    #[error("{0}")]
    NotFound(String),
    /// The database or the hashing pool is unavailable (503 / UNAVAILABLE).
    #[error("{0}")]
    Unavailable(String),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        match e {
            StoreError::Conflict(m) => Failure::Conflict(m),
            other => Failure::Unavailable(format!("storage: {other}")),
        }
    }
}

impl From<password::Busy> for Failure {
    fn from(e: password::Busy) -> Failure {
        Failure::Unavailable(e.to_string())
    }
}

impl From<InvalidField> for Failure {
    fn from(e: InvalidField) -> Failure {
        Failure::Invalid {
            field: e.field,
            message: e.message,
        }
    }
}

/// `ErrorInfo` metadata: seconds until a locked account unlocks.
const RETRY_AFTER: &str = "retry_after_s";

impl ServiceError for Failure {
    fn codes(&self) -> ErrorCodes {
        use Code as G;
        use StatusCode as H;
        match self {
            Failure::Invalid { .. } => ErrorCodes::new(
                H::BAD_REQUEST,
                "invalid_argument",
                G::InvalidArgument,
                "INVALID_ARGUMENT",
            ),
            Failure::Unauthenticated(_) => ErrorCodes::new(
                H::UNAUTHORIZED,
                "unauthorized",
                G::Unauthenticated,
                "UNAUTHENTICATED",
            ),
            Failure::Forbidden(_) => {
                ErrorCodes::new(H::FORBIDDEN, "forbidden", G::PermissionDenied, "FORBIDDEN")
            }
            Failure::Locked { retry_after_s } => ErrorCodes::new(
                H::LOCKED,
                "account_locked",
                G::ResourceExhausted,
                "ACCOUNT_LOCKED",
            )
            .retry_after(*retry_after_s),
            Failure::Conflict(_) => {
                ErrorCodes::new(H::CONFLICT, "conflict", G::AlreadyExists, "ALREADY_EXISTS")
            }
            Failure::NotFound(_) => {
                ErrorCodes::new(H::NOT_FOUND, "not_found", G::NotFound, "NOT_FOUND")
            }
            Failure::Unavailable(_) => ErrorCodes::new(
                H::SERVICE_UNAVAILABLE,
                "unavailable",
                G::Unavailable,
                "UNAVAILABLE",
            )
            .retry_after(1),
        }
    }

    fn violations(&self) -> Vec<(&str, &str)> {
        match self {
            Failure::Invalid { field, message } => vec![(field.as_ref(), message.as_str())],
            _ => Vec::new(),
        }
    }

    fn metadata(&self) -> Vec<(&'static str, String)> {
        match self {
            Failure::Locked { retry_after_s } => vec![(RETRY_AFTER, retry_after_s.to_string())],
            _ => Vec::new(),
        }
    }

    fn from_received(r: Received) -> Failure {
        let message = r.message;
        let invalid = |message| Failure::Invalid {
            field: "request".into(),
            message,
        };
        match r.reason.as_deref() {
            Some("INVALID_ARGUMENT") => match r.violations.into_iter().next() {
                Some((field, message)) => Failure::Invalid {
                    field: field.into(),
                    message,
                },
                None => invalid(message),
            },
            Some("UNAUTHENTICATED") => Failure::Unauthenticated(message),
            Some("FORBIDDEN") => Failure::Forbidden(message),
            Some("ACCOUNT_LOCKED") => Failure::Locked {
                retry_after_s: r
                    .metadata
                    .get(RETRY_AFTER)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(1),
            },
            Some("ALREADY_EXISTS") => Failure::Conflict(message),
            Some("NOT_FOUND") => Failure::NotFound(message),
            Some("UNAVAILABLE") => Failure::Unavailable(message),
            _ => match r.code {
                Code::InvalidArgument => invalid(message),
                Code::Unauthenticated => Failure::Unauthenticated(message),
                Code::PermissionDenied => Failure::Forbidden(message),
                Code::NotFound => Failure::NotFound(message),
                code => Failure::Unavailable(format!("{code:?}: {message}")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sdsim_net::grpc::Status;

    #[test]
    fn every_failure_survives_the_wire() {
        let failures = [
            Failure::Invalid {
                field: "user_id".into(),
                message: "is required".into(),
            },
            Failure::Unauthenticated("token: the token has expired".into()),
            Failure::Forbidden("changing roles needs the admin:users permission".into()),
            Failure::Locked { retry_after_s: 42 },
            Failure::Conflict("an account with email a@example.com already exists".into()),
            Failure::NotFound("no user u".into()),
            Failure::Unavailable("storage: down".into()),
        ];
        for f in failures {
            let status = sdsim_contract::status(&f);
            assert_eq!(status.message, f.to_string());
            let mut trailers = http::HeaderMap::new();
            status.write(&mut trailers);
            let mut received = Status::new(status.code, status.message.clone());
            received.details = Status::details_from(trailers.get("grpc-status-details-bin"));
            assert_eq!(Failure::from_status(&received), f);
        }
    }

    #[test]
    fn http_answers_keep_their_status_code_and_retry_hint() {
        let resp = sdsim_contract::response(&Failure::Locked { retry_after_s: 42 });
        assert_eq!(resp.status(), StatusCode::LOCKED);
        assert_eq!(resp.headers()["retry-after"], "42");
        assert_eq!(
            &resp.body()[..],
            br#"{"error":{"code":"account_locked","message":"the account is locked after repeated failed logins; retry in 42 s"}}"#
        );
        let resp = sdsim_contract::response(&Failure::Conflict("taken".into()));
        assert_eq!(resp.status(), StatusCode::CONFLICT);
        assert!(resp.headers().get("retry-after").is_none());
    }
}
