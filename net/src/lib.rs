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
//! - [`middleware`]: the middleware stack, assembled in one place, and its layers (rate limit,
//!   compression, CORS, request id, access log, timing, panic recovery).
//! - [`tls`]: loading certificates into a rustls acceptor.
#![warn(missing_docs, unreachable_pub)]

pub mod conn;
pub mod grpc;
pub mod http;
pub mod json;
pub mod middleware;
pub mod server;
pub mod tls;
pub mod transport;
pub mod ws;
