//! Why a server could not start.

use std::io;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound (address in use, permission).
    #[error("{0}")]
    Listen(io::Error),
    /// TLS files could not be loaded.
    #[error(transparent)]
    Tls(#[from] sdsim_net::tls::TlsError),
    /// Shard threads could not be started.
    #[error("cannot start shards: {0}")]
    Runtime(io::Error),
    /// The Redis bridge could not start.
    #[error("{0}")]
    Redis(String),
    /// A listen address is not an IP:port.
    #[error("{0}: not an IP:port address")]
    Address(String),
    /// Storage could not be opened or migrated.
    #[error("storage: {0}")]
    Storage(String),
    /// The auth service could not start.
    #[error("auth: {0}")]
    Auth(String),
}
