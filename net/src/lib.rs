//! sdsim-net: the network layers of sdsim, on the shard-per-core runtime of `sdsim-core`.
//!
//! Layout (a request flows top-down):
//! - [`server`]: one SO_REUSEPORT listener per shard, the accept loop, connection limits and
//!   graceful drain.
//! - [`conn`]: the thin connection loop that drives the sans-IO codec over a transport.
//! - [`transport`]: plain TCP (monoio's owned-buffer I/O) and TLS (tokio-rustls over
//!   `into_poll_io`) behind one trait.
//! - [`http`]: codec, router, request/response types.
//! - [`json`]: JSON from the network: bounded nesting, errors naming the field.
//! - [`middleware`]: one list of layers for HTTP and gRPC, assembled in one place (request id,
//!   CORS, load shedding, rate limit, metrics, access log), and the HTTP-only steps
//!   (compression, timing, panic recovery).
//! - [`deadline`]: the deadline of the request being served, which outbound calls inherit.
//! - [`otel`]: OpenTelemetry tracing: sampling, spans, the OTLP exporter thread.
//! - [`grpc`]: gRPC over h2, server (every call through the same layers) and client.
//! - [`tls`]: loading certificates into a rustls acceptor.
//! - [`ws`]: WebSocket: the sans-IO frame codec, the upgrade handshake, permessage-deflate and
//!   the connection driver.
#![warn(missing_docs, unreachable_pub)]

pub mod conn;
pub mod deadline;
pub mod grpc;
pub mod http;
pub mod json;
pub mod middleware;
pub mod otel;
pub mod server;
pub mod tls;
pub mod transport;
pub mod ws;
