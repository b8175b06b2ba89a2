//! gRPC over h2 (HTTP/2) on monoio, through `into_poll_io` (docs/architecture.md).
//!
//! - [`status`]: codes, `grpc-status` / `grpc-message`, `grpc-timeout`.
//! - [`frame`]: length-prefixed message framing with gzip (sans-IO).
//! - [`server`]: methods by path, the connection and stream tasks, limits, keepalive, drain;
//!   every call runs through the middleware layers (request id, rate limit, metrics, log).
//! - [`method`]: a method's path, service and name as `'static` labels.
//! - [`client`]: the client (a connection per target per shard, deadlines propagated).
//! - [`health`]: the standard `grpc.health.v1.Health` service (Check and Watch).

pub mod client;
pub mod frame;
pub mod health;
pub mod method;
pub mod server;
pub mod status;

pub use server::{Call, Services, Settings, Stream};
pub use status::{Code, Status};

/// Types generated from `proto/grpc/health/v1/health.proto`.
pub mod pb {
    /// `grpc.health.v1`.
    #[allow(missing_docs, clippy::all)]
    pub mod health {
        include!(concat!(env!("OUT_DIR"), "/grpc.health.v1.rs"));
    }
}
