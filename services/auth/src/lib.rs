//! The sdsim auth service (seed 004's "most critical" component).
//!
//! - [`token`]: EdDSA JWTs and the key ring; [`verifier`]: the shard-local validation fast path.
//! - [`authn`]: the one authentication layer: bearer token → [`sdsim_contract::Caller`], for
//!   HTTP, WebSocket and gRPC.
//! - [`password`]: strength rules and the argon2id hashing pool.
//! - [`service`]: accounts, sessions, refresh-token families, lockout, RBAC, one-time tokens.
//! - [`mail`]: the outbox and its senders.
//! - [`error`]: [`Failure`], the service's one error type, and its HTTP and gRPC forms.
//! - [`contract`]: `sdsim.auth.v1.AuthService` — the trait other services call, its gRPC
//!   registration and remote client; [`http`]: the account API (register, login, ...).
//! - [`pb`]: the messages of `proto/sdsim/auth/v1`.
//!
//! [`Auth::open`] builds the service; [`install_shard`] starts its per-shard parts.
#![warn(missing_docs, unreachable_pub)]

pub mod authn;
pub mod contract;
pub mod error;
pub mod http;
pub mod mail;
pub mod password;
pub mod service;
pub mod token;
pub mod verifier;
mod wire;

pub use contract::{AuthContract, AuthService, RemoteAuth};
pub use service::{Auth, Failure, REVOCATIONS};

use sdsim_core::bus::{Bus, Event, Sink};
use sdsim_core::config::Config;
use sdsim_core::metrics::{Key, Metrics};
use sdsim_store::{Options, Store};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use verifier::Verifier;

/// Types generated from `proto/sdsim/auth/v1/auth.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/sdsim.auth.v1.rs"));
}

/// Opens `storage.url`.
pub fn open_store(config: &Config) -> Result<Store, sdsim_store::StoreError> {
    Store::open(
        &config.storage.url,
        &Options {
            connect_timeout: config.storage.connect_timeout,
            sqlite_readers: config.storage.sqlite_readers,
        },
    )
}

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
        config: &Config,
        store: Store,
        shards: usize,
    ) -> Result<Arc<Auth>, OpenError> {
        let threads = match config.auth.hash_threads {
            0 => shards.max(1),
            n => n,
        };
        let hasher =
            password::Hasher::start(threads, config.auth.hash_queue).map_err(OpenError::Hashing)?;
        let mail =
            mail::Mail::from_config(&config.auth.mail_sender).map_err(|error| OpenError::Mail {
                setting: config.auth.mail_sender.clone(),
                error,
            })?;
        let auth = Auth::new(store, config.auth.clone(), hasher, Arc::new(mail));
        auth.refresh_keys(service::now())
            .await
            .map_err(OpenError::Keys)?;
        Ok(auth)
    }
}

/// Metric: time from a revocation's publication to its application on a shard.
pub const REVOCATION_DELAY: &str = "sdsim_auth_revocation_delay_seconds";

/// Applies revocations announced on the bus to this shard's verifier.
struct RevocationSink(Arc<Verifier>, Rc<Metrics>);

impl Sink for RevocationSink {
    fn push(&self, event: &Arc<Event>) -> bool {
        match sonic_rs::from_slice::<service::Revocation>(&event.data) {
            Ok(r) => {
                self.0.revoke(&r.sessions, r.until);
                if r.at_us > 0 {
                    let delay = service::now_us().saturating_sub(r.at_us);
                    self.1.record_us(Key::plain(REVOCATION_DELAY), delay);
                }
            }
            Err(e) => tracing::warn!(error = %e, "malformed revocation on the bus"),
        }
        true
    }
}

/// Starts the auth service's parts on one shard: the revocation subscriber and sweeper, and on
/// shard 0 the key refresher and the mail dispatcher.
pub fn install_shard(
    auth: &Arc<Auth>,
    shard: &sdsim_core::runtime::Shard,
    bus: Rc<Bus>,
    metrics: Rc<Metrics>,
) {
    let a = Arc::clone(auth);
    shard.spawn("auth-revocations", async move {
        let verifier = Arc::clone(a.verifier());
        let sink = Rc::new(RevocationSink(Arc::clone(&verifier), metrics));
        // Subscribe first, then load what storage knows: nothing falls between the two.
        let subscription = loop {
            match bus.subscribe(REVOCATIONS, sink.clone(), None).await {
                Ok((sub, attached)) => {
                    sub.activate(attached.seq);
                    break sub;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "revocation channel: retrying");
                    monoio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let mut pause = Duration::from_millis(200);
        loop {
            match a.recent_revocations(service::now()).await {
                Ok(list) => {
                    for (sid, until) in list {
                        verifier.revoke(&[sid], until);
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "loading revoked sessions: retrying");
                    monoio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
            }
        }
        loop {
            monoio::time::sleep(Duration::from_secs(30)).await;
            verifier.sweep(service::now());
            let _ = subscription.channel();
        }
    });
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
