//! The auth service's error: why an operation failed.

use crate::password;
use sdsim_store::StoreError;

/// Why an operation failed; each maps to one HTTP status and one gRPC code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// A field is missing or wrong (400 / INVALID_ARGUMENT).
    #[error("{field}: {message}")]
    Invalid {
        /// The field.
        field: &'static str,
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
