//! The project and simulation services' error, and how it appears on each wire: one table
//! ([`ServiceError::codes`]) gives the HTTP status and error code and the gRPC code and
//! `ErrorInfo` reason of each kind; [`Failure::from_received`] reads it back on the client side.

use http::StatusCode;
use sdsim_contract::{ErrorCodes, InvalidField, MissingPermission, Received, ServiceError};
use sdsim_net::grpc::Code;
use sdsim_store::StoreError;

/// One problem of a design, at a JSON path.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DesignProblem {
    /// Where, e.g. `$.components[1].routes[0].p`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Why an operation failed; each maps to one HTTP status and one gRPC code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Failure {
    /// A field is missing or wrong (400 / INVALID_ARGUMENT).
    #[error("{field}: {message}")]
    Invalid {
        /// The field.
        field: std::borrow::Cow<'static, str>,
        /// What is wrong with it.
        message: String,
    },
    /// The design does not validate (422 / INVALID_ARGUMENT), with every problem.
    #[error("the design has {} problem(s)", .0.len())]
    Design(Vec<DesignProblem>),
    /// Not allowed (403 / PERMISSION_DENIED).
    #[error("{0}")]
    Forbidden(String),
    /// Unknown, or not visible to the caller (404 / NOT_FOUND).
    #[error("{0}")]
    NotFound(String),
    /// The state does not allow it (409 / FAILED_PRECONDITION).
    #[error("{0}")]
    Conflict(String),
    /// The instance's run queue is full (503 / RESOURCE_EXHAUSTED).
    #[error("{0}")]
    QueueFull(String),
    /// The user has too many runs (429 / RESOURCE_EXHAUSTED).
    #[error("{0}")]
    TooMany(String),
    /// Storage, or the service in another process, is unavailable (503 / UNAVAILABLE).
    #[error("{0}")]
    Unavailable(String),
    /// An input is over its size limit (413 / RESOURCE_EXHAUSTED); the message names the
    /// field and the limit's config key.
    #[error("{0}")]
    TooLarge(String),
    /// A wait ran past its configured bound (503 / DEADLINE_EXCEEDED); the message names what
    /// was awaited and the bound.
    #[error("{0}")]
    Timeout(String),
    /// A what-if change to a running simulation is wrong (400 `invalid_change` /
    /// INVALID_ARGUMENT); `field` is its JSON path, e.g. `$.changes[0].value`.
    #[error("{field}: {message}")]
    InvalidChange {
        /// The JSON path of the wrong field.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A what-if change to a run that is not running (409 `run_finished` /
    /// FAILED_PRECONDITION).
    #[error("{0}")]
    RunFinished(String),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        match e {
            StoreError::Conflict(m) => Failure::Conflict(m),
            other => Failure::Unavailable(format!("storage: {other}")),
        }
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

impl From<MissingPermission> for Failure {
    fn from(e: MissingPermission) -> Failure {
        Failure::Forbidden(e.to_string())
    }
}

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
            Failure::Design(_) => ErrorCodes::new(
                H::UNPROCESSABLE_ENTITY,
                "invalid_design",
                G::InvalidArgument,
                "INVALID_DESIGN",
            )
            .problems_in_body(),
            Failure::Forbidden(_) => {
                ErrorCodes::new(H::FORBIDDEN, "forbidden", G::PermissionDenied, "FORBIDDEN")
            }
            Failure::NotFound(_) => {
                ErrorCodes::new(H::NOT_FOUND, "not_found", G::NotFound, "NOT_FOUND")
            }
            Failure::Conflict(_) => {
                ErrorCodes::new(H::CONFLICT, "conflict", G::FailedPrecondition, "CONFLICT")
            }
            Failure::QueueFull(_) => ErrorCodes::new(
                H::SERVICE_UNAVAILABLE,
                "queue_full",
                G::ResourceExhausted,
                "QUEUE_FULL",
            )
            .retry_after(1),
            Failure::TooMany(_) => ErrorCodes::new(
                H::TOO_MANY_REQUESTS,
                "too_many_runs",
                G::ResourceExhausted,
                "TOO_MANY_RUNS",
            )
            .retry_after(1),
            Failure::Unavailable(_) => ErrorCodes::new(
                H::SERVICE_UNAVAILABLE,
                "unavailable",
                G::Unavailable,
                "UNAVAILABLE",
            )
            .retry_after(1),
            Failure::TooLarge(_) => ErrorCodes::new(
                H::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                G::ResourceExhausted,
                "TOO_LARGE",
            ),
            Failure::Timeout(_) => ErrorCodes::new(
                H::SERVICE_UNAVAILABLE,
                "timeout",
                G::DeadlineExceeded,
                "TIMEOUT",
            )
            .retry_after(1),
            Failure::InvalidChange { .. } => ErrorCodes::new(
                H::BAD_REQUEST,
                "invalid_change",
                G::InvalidArgument,
                "INVALID_CHANGE",
            ),
            Failure::RunFinished(_) => ErrorCodes::new(
                H::CONFLICT,
                "run_finished",
                G::FailedPrecondition,
                "RUN_FINISHED",
            ),
        }
    }

    fn violations(&self) -> Vec<(&str, &str)> {
        match self {
            Failure::Invalid { field, message } => vec![(field.as_ref(), message.as_str())],
            Failure::InvalidChange { field, message } => vec![(field.as_str(), message.as_str())],
            Failure::Design(problems) => problems
                .iter()
                .map(|p| (p.path.as_str(), p.message.as_str()))
                .collect(),
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
            Some("INVALID_DESIGN") => Failure::Design(
                r.violations
                    .into_iter()
                    .map(|(path, message)| DesignProblem { path, message })
                    .collect(),
            ),
            Some("INVALID_ARGUMENT") => match r.violations.into_iter().next() {
                Some((field, message)) => Failure::Invalid {
                    field: field.into(),
                    message,
                },
                None => invalid(message),
            },
            Some("FORBIDDEN") => Failure::Forbidden(message),
            Some("NOT_FOUND") => Failure::NotFound(message),
            Some("CONFLICT") => Failure::Conflict(message),
            Some("QUEUE_FULL") => Failure::QueueFull(message),
            Some("TOO_MANY_RUNS") => Failure::TooMany(message),
            Some("UNAVAILABLE") => Failure::Unavailable(message),
            Some("TOO_LARGE") => Failure::TooLarge(message),
            Some("TIMEOUT") => Failure::Timeout(message),
            Some("INVALID_CHANGE") => match r.violations.into_iter().next() {
                Some((field, message)) => Failure::InvalidChange { field, message },
                None => Failure::InvalidChange {
                    field: "$".into(),
                    message,
                },
            },
            Some("RUN_FINISHED") => Failure::RunFinished(message),
            _ => match r.code {
                Code::InvalidArgument => invalid(message),
                Code::NotFound => Failure::NotFound(message),
                Code::PermissionDenied | Code::Unauthenticated => Failure::Forbidden(message),
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
                field: "name".into(),
                message: "1 to 200 characters".into(),
            },
            Failure::Design(vec![
                DesignProblem {
                    path: "$.components[0].instances".into(),
                    message: "must be at least 1".into(),
                },
                DesignProblem {
                    path: "$.entry".into(),
                    message: "unknown component \"x\"".into(),
                },
            ]),
            Failure::Forbidden("the token lacks the project:write permission".into()),
            Failure::NotFound("project p not found".into()),
            Failure::Conflict("version 3 is not the latest (4)".into()),
            Failure::QueueFull("the simulation queue is full".into()),
            Failure::TooMany("you have 3 runs".into()),
            Failure::Unavailable("storage: down".into()),
            Failure::TooLarge("design: 2000000 bytes of JSON is over the limit".into()),
            Failure::Timeout("stop: the run did not end within 5s".into()),
            Failure::InvalidChange {
                field: "$.changes[0].value".into(),
                message: "instances must be an integer in 1..=1000".into(),
            },
            Failure::RunFinished("simulation s is completed".into()),
        ];
        for f in failures {
            let status = sdsim_contract::status(&f);
            let mut trailers = http::HeaderMap::new();
            status.write(&mut trailers);
            let mut received = Status::new(status.code, status.message.clone());
            received.details = Status::details_from(trailers.get("grpc-status-details-bin"));
            assert_eq!(Failure::from_status(&received), f);
        }
    }

    #[test]
    fn statuses_from_elsewhere_become_failures_with_their_message() {
        let cases = [
            (Code::DeadlineExceeded, "slow", "DeadlineExceeded: slow"),
            (
                Code::Unavailable,
                "connect refused",
                "Unavailable: connect refused",
            ),
            (Code::Internal, "bug", "Internal: bug"),
        ];
        for (code, message, want) in cases {
            assert_eq!(
                Failure::from_status(&Status::new(code, message)),
                Failure::Unavailable(want.into())
            );
        }
        assert_eq!(
            Failure::from_status(&Status::new(Code::NotFound, "gone")),
            Failure::NotFound("gone".into())
        );
        assert!(matches!(
            Failure::from_status(&Status::new(Code::InvalidArgument, "bad")),
            Failure::Invalid { .. }
        ));
        assert!(matches!(
            Failure::from_status(&Status::new(Code::Unauthenticated, "who")),
            Failure::Forbidden(_)
        ));
    }

    #[test]
    fn http_answers_keep_their_status_code_body_and_retry_hint() {
        let resp = sdsim_contract::response(&Failure::Design(vec![DesignProblem {
            path: "$.entry".into(),
            message: "missing".into(),
        }]));
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            &resp.body()[..],
            br#"{"error":{"code":"invalid_design","message":"the design has 1 problem(s)","problems":[{"path":"$.entry","message":"missing"}]}}"#
        );
        let resp = sdsim_contract::response(&Failure::TooMany("you have 3 runs".into()));
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()["retry-after"], "1");
        assert_eq!(
            &resp.body()[..],
            br#"{"error":{"code":"too_many_runs","message":"you have 3 runs"}}"#
        );
        let resp = sdsim_contract::response(&Failure::NotFound("project p not found".into()));
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert!(resp.headers().get("retry-after").is_none());
        let resp = sdsim_contract::response(&Failure::TooLarge("design: too big".into()));
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(resp.headers().get("retry-after").is_none());
        assert_eq!(
            &resp.body()[..],
            br#"{"error":{"code":"payload_too_large","message":"design: too big"}}"#
        );
        let resp = sdsim_contract::response(&Failure::Timeout("stop: 5s".into()));
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()["retry-after"], "1");
        assert_eq!(
            sdsim_contract::status(&Failure::Timeout("x".into())).code,
            Code::DeadlineExceeded
        );
    }
}
