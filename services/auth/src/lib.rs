//! The sdsim auth service (seed 004's "most critical" component).
//!
//! - [`token`]: EdDSA JWTs and the key ring; [`verifier`]: the shard-local validation fast path.
//! - [`follower`]: verification in a process without the auth service, with fetched keys.
//! - [`authn`]: the one authentication layer: bearer token → [`sdsim_contract::Caller`], for
//!   HTTP, WebSocket and gRPC.
//! - [`password`]: strength rules and the argon2id hashing pool.
//! - [`service`]: accounts, sessions, refresh-token families, lockout, RBAC, one-time tokens.
//! - [`mail`]: the outbox and its senders; [`events`]: `auth:events:*` on the bus.
//! - [`error`]: [`Failure`], the service's one error type, and its HTTP and gRPC forms.
//! - [`contract`]: `sdsim.auth.v1.AuthService` — the trait other services call, its gRPC
//!   registration and remote client; [`http`]: the account API (register, login, ...).
//! - `wire`, `wire_account`: how the contract's requests and responses travel in
//!   `sdsim.auth.v1` messages.
//! - [`pb`]: the messages of `proto/sdsim/auth/v1`.
//!
//! [`Auth::open`] builds the service; [`install_shard`] starts its per-shard parts.
#![warn(missing_docs, unreachable_pub)]

pub mod authn;
pub mod config;
pub mod contract;
pub mod error;
pub mod events;
pub mod follower;
pub mod http;
pub mod mail;
pub mod password;
mod revocations;
pub mod service;
pub mod token;
pub mod verifier;
mod wire;
mod wire_account;

pub use config::{AuthConfig, StaticToken};
pub use contract::{AuthContract, AuthService, RemoteAuth};
pub use service::{Auth, Failure, REVOCATIONS};

use sdsim_core::bus::Bus;
use sdsim_core::metrics::Metrics;
use sdsim_store::Store;
use std::rc::Rc;
use std::sync::Arc;

/// Types generated from `proto/sdsim/auth/v1/auth.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/sdsim.auth.v1.rs"));
}

/// The encoded `google.protobuf.FileDescriptorSet` of `proto/sdsim/auth/v1/auth.proto`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/file_descriptor_set.bin"));

/// Why the auth service could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The password hashing threads could not be started.
    #[error("starting the hashing threads: {0}")]
    Hashing(std::io::Error),
    /// `auth.mail_sender` names a sender that cannot be opened.
    #[error("auth.mail_sender = {setting}: {error}")]
    Mail {
        /// The setting.
        setting: String,
        /// Why it cannot be opened.
        error: std::io::Error,
    },
    /// The signing keys could not be loaded or made.
    #[error("loading the signing keys: {0}")]
    Keys(Failure),
}

impl Auth {
    /// The service on `store`: starts the hashing pool and mail sender, loads (or makes) the
    /// signing keys. `shards` sizes the hashing pool when `auth.hash_threads` is 0.
    pub async fn open(
        config: &AuthConfig,
        store: Store,
        shards: usize,
    ) -> Result<Arc<Auth>, OpenError> {
        let threads = match config.hash_threads {
            0 => shards.max(1),
            n => n,
        };
        let hasher =
            password::Hasher::start(threads, config.hash_queue).map_err(OpenError::Hashing)?;
        let mail =
            mail::Mail::from_config(&config.mail_sender).map_err(|error| OpenError::Mail {
                setting: config.mail_sender.clone(),
                error,
            })?;
        let auth = Auth::new(store, config.clone(), hasher, Arc::new(mail));
        auth.refresh_keys(service::now())
            .await
            .map_err(OpenError::Keys)?;
        Ok(auth)
    }
}

/// Metric: time from a revocation's publication to its application on a shard.
pub const REVOCATION_DELAY: &str = "sdsim_auth_revocation_delay_seconds";

/// Starts the auth service's parts on one shard: the revocation subscriber and sweeper, and on
/// shard 0 the key refresher and the mail dispatcher.
pub fn install_shard(
    auth: &Arc<Auth>,
    shard: &sdsim_core::runtime::Shard,
    bus: Rc<Bus>,
    metrics: Rc<Metrics>,
) {
    let source = revocations::Source {
        store: auth.store().clone(),
        access_ttl: auth.config().access_ttl,
        sync: auth.config().revocation_sync,
    };
    revocations::spawn(shard, Arc::clone(auth.verifier()), source, bus, metrics);
    if shard.id().index() == 0 {
        let a = Arc::clone(auth);
        shard.spawn("auth-keys", async move {
            loop {
                monoio::time::sleep(a.config().key_reload).await;
                if let Err(e) = a.refresh_keys(service::now()).await {
                    tracing::warn!(error = %e, "signing keys not refreshed");
                }
            }
        });
        let a = Arc::clone(auth);
        shard.spawn("auth-mail", async move {
            a.mail().run(a.store()).await;
        });
    }
}
