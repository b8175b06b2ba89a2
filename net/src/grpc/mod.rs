//! gRPC over h2 (HTTP/2) on monoio, through `into_poll_io` (docs/architecture.md).
//!
//! - [`status`]: codes, `grpc-status` / `grpc-message`, `grpc-timeout`.
//! - [`frame`]: length-prefixed message framing with gzip (sans-IO).
//! - [`server`]: methods by path, the connection and stream tasks, limits, keepalive, drain;
//!   every call runs through the middleware layers (request id, rate limit, metrics, log).
//! - [`method`]: a method's path, service and name as `'static` labels.
//! - [`client`]: the client (a connection per target per shard, deadlines propagated).
//! - [`bidi`]: bidirectional streaming (the client's messages as they arrive).
//! - [`health`]: the standard `grpc.health.v1.Health` service (Check and Watch).
//! - [`reflection`]: server reflection (v1 and v1alpha), so grpcurl and Postman need no `.proto`.

pub mod bidi;
pub mod client;
pub mod frame;
pub mod health;
pub mod method;
pub mod reflection;
pub mod server;
pub mod status;

pub use server::{Call, Services, Settings, Stream};
pub use status::{Code, Status};

/// Types generated from `proto/grpc/health/v1/health.proto` and
/// `proto/grpc/reflection/v1/reflection.proto` (v1alpha has the same messages on the wire).
pub mod pb {
    /// `grpc.health.v1`.
    #[allow(missing_docs, clippy::all)]
    pub mod health {
        include!(concat!(env!("OUT_DIR"), "/grpc.health.v1.rs"));
    }
    /// `grpc.reflection.v1`.
    #[allow(missing_docs, clippy::all)]
    pub mod reflection_v1 {
        include!(concat!(env!("OUT_DIR"), "/grpc.reflection.v1.rs"));
    }
}

/// The encoded `google.protobuf.FileDescriptorSet` of the health and reflection protocols.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/file_descriptor_set.bin"));
