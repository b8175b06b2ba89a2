//! What every sdsim service contract shares.
//!
//! A service (auth, projects, simulations) is declared once, as a method table given to
//! [`contract!`]: the trait its HTTP handlers and other services call, the gRPC registration
//! that serves any implementation of it, and the remote client that implements it over gRPC
//! all come from that table, so a caller never knows whether the service runs in this process.
//!
//! - [`caller`]: [`Caller`], the one identity of HTTP, WebSocket and gRPC calls, and
//!   [`Authenticate`], the per-call hook that produces it.
//! - [`error`]: [`ServiceError`], the one table that maps a service's error to an HTTP status
//!   and body and to a gRPC status with `google.rpc.Status` details, and back.
//! - [`wire`]: how request and response types travel in their `proto/` messages.
//! - [`remote`]: [`Remote`], a service in another process (service token, forwarded user).
//! - [`serve`]: who a gRPC call acts for; the stream of a streaming method.
//! - [`contract!`]: the method table (its expansion is in `macros`; `__private` holds what the
//!   expansion names, not an API).
//! - `proto` (feature `proto`): the RPCs a `.proto` file declares, to compare with a table.
#![warn(missing_docs, unreachable_pub)]

pub mod caller;
pub mod error;
mod macros;
#[cfg(feature = "proto")]
pub mod proto;
pub mod remote;
pub mod serve;
pub mod wire;

pub use caller::{
    bearer, http_caller, unauthorized, Authenticate, Caller, MissingPermission, Refusal, Session,
};
pub use error::{
    empty, required, response, status, ErrorCodes, InvalidField, Received, ServiceError,
};
pub use remote::Remote;
pub use wire::{ActsFor, Emit, Gone, Kind, Method, Pending, RequestWire, ResponseWire};

/// What the generated code names; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use sdsim_net::grpc::{Call, Services, Status, Stream};
}

/// A service's health as its `HealthCheck` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceHealth {
    /// `SERVING` or `NOT_SERVING`.
    pub status: String,
    /// Per dependency: `storage` → `up` / `down`.
    pub dependencies: std::collections::HashMap<String, String>,
    /// The service's version.
    pub version: String,
}

impl ServiceHealth {
    /// Serving while storage answers.
    pub fn of_storage(up: bool, version: &str) -> ServiceHealth {
        ServiceHealth {
            status: if up { "SERVING" } else { "NOT_SERVING" }.into(),
            dependencies: [(
                "storage".to_string(),
                if up { "up" } else { "down" }.to_string(),
            )]
            .into(),
            version: version.into(),
        }
    }
}
