//! What every shard of a server shares, built by [`crate::Server::start`].

use crate::config::Config;
use crate::role::Role;
use sdsim_auth::Auth;
use sdsim_gateway::GatewayState;
use sdsim_mesh::Directory;
use sdsim_net::server::ListenerSet;
use std::sync::Arc;

/// What every shard of a server shares: the started roles, the gateway's state, the public
/// listener and the TLS acceptors.
pub(crate) struct Composition {
    /// The validated configuration.
    pub(crate) config: Arc<Config>,
    /// The gateway role's state (configuration, counters, authentication).
    pub(crate) gateway: Arc<GatewayState>,
    /// Every role of the list, started.
    pub(crate) roles: Vec<Box<dyn Role>>,
    /// The auth service, when a role of this process started it.
    pub(crate) auth: Option<Arc<Auth>>,
    /// The instances of every service this process may call.
    pub(crate) directory: Arc<Directory>,
    /// The public (gateway) listener, one socket per shard.
    pub(crate) public: ListenerSet,
    /// TLS for HTTP listeners, when `tls.cert` and `tls.key` are set.
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    /// gRPC calls being served by this process, every listener and shard together.
    pub(crate) grpc_in_flight: Arc<std::sync::atomic::AtomicU64>,
    /// TLS for gRPC listeners (ALPN h2, client certificates when `grpc.client_ca` is set).
    pub(crate) grpc_tls: Option<tokio_rustls::TlsAcceptor>,
}
