//! The project and simulation services of seed 004.
//!
//! - [`projects`]: projects (a design document and settings) with versions, members (owner,
//!   editor, viewer), templates, import/export; events on `project:events:*`.
//! - [`simulations`]: runs of a project's design: a bounded instance-wide queue, per-user limits,
//!   execution on a shard in slices that yield, live metrics on `simulation:data:{id}`, lifecycle
//!   on `simulation:events:*`, results and bottleneck analysis in storage.
//! - [`design_limits`]: the design size limit and off-shard validation of large designs.
//! - [`http`]: the HTTP API (`/api/templates`, `/api/projects/*`, `/api/simulations/*`).
//!
//! Callers are authenticated by the embedding server (a [`Caller`] per request); authorization
//! (global permissions from the token, and the caller's role in the project) happens here, on
//! every operation.

pub mod api;
pub mod design_limits;
pub mod grpc;
pub mod http;
pub mod projects;
pub mod simulations;
pub mod templates;

use bytes::Bytes;
pub use sdsim_core::new_id;
use sdsim_store::StoreError;
use std::sync::Arc;

/// Who is calling: what the access token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user id.
    pub user_id: Arc<str>,
    /// Whether the token carries the `admin` role.
    pub is_admin: bool,
    /// The token's permissions (`project:read`, `project:write`, `simulation:start`, ...).
    pub perms: Arc<[String]>,
}

impl Caller {
    /// Whether the token grants `perm` (admins have every permission).
    pub fn may(&self, perm: &str) -> bool {
        self.is_admin || self.perms.iter().any(|p| p == perm)
    }

    /// `Forbidden` unless the token grants `perm`.
    pub fn require(&self, perm: &str) -> Result<(), Failure> {
        if self.may(perm) {
            Ok(())
        } else {
            Err(Failure::Forbidden(format!(
                "the token lacks the {perm} permission"
            )))
        }
    }
}

/// Who a bearer token on a gRPC call authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A user, acting for themselves.
    User(Caller),
    /// A service (a static token with the `service` role, e.g. a gateway in another process),
    /// acting for the request's `user_id` with the permissions it forwards.
    Service,
}

/// Verifies a bearer token on a gRPC call (the embedding server's verifier); the error says
/// why it is refused.
pub type VerifyToken = Arc<dyn Fn(&str) -> Result<Principal, String> + Send + Sync>;

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
    /// The state does not allow it (409 / FAILED_PRECONDITION or ABORTED).
    #[error("{0}")]
    Conflict(String),
    /// The instance's run queue is full (503 / RESOURCE_EXHAUSTED).
    #[error("{0}")]
    QueueFull(String),
    /// The user has too many runs (429 / RESOURCE_EXHAUSTED).
    #[error("{0}")]
    TooMany(String),
    /// Storage is unavailable (503 / UNAVAILABLE).
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
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        match e {
            StoreError::Conflict(m) => Failure::Conflict(m),
            other => Failure::Unavailable(format!("storage: {other}")),
        }
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Publishes `value` as JSON on `channel` through this shard's bus (dropped, with a debug
/// line, when there is no bus or it refuses: events are notifications, storage is the record).
pub async fn publish<T: serde::Serialize>(channel: &str, value: &T) {
    let Some(bus) = sdsim_core::bus::Bus::local() else {
        return;
    };
    match sonic_rs::to_vec(value) {
        Ok(data) => {
            if let Err(e) = bus.publish(channel, Bytes::from(data)).await {
                tracing::debug!(%channel, error = %e, "event not published");
            }
        }
        Err(e) => tracing::warn!(%channel, error = %e, "event not serialisable"),
    }
}
