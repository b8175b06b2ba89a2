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
//! - `wire`: how the contract's requests and responses travel in `sdsim.auth.v1` messages.
//! - [`pb`]: the messages of `proto/sdsim/auth/v1`.
//!
//! [`Auth::open`] builds the service; [`install_shard`] starts its per-shard parts.
#![warn(missing_docs, unreachable_pub)]

pub mod authn;
pub mod config;
pub mod contract;
pub mod error;
pub mod http;
pub mod mail;
pub mod password;
pub mod service;
pub mod token;
pub mod verifier;
mod wire;

pub use config::{AuthConfig, StaticToken};
pub use contract::{AuthContract, AuthService, RemoteAuth};
pub use service::{Auth, Failure, REVOCATIONS};

use sdsim_core::bus::{Bus, Event, Sink};
use sdsim_core::metrics::{Key, Metrics};
use sdsim_store::Store;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use verifier::Verifier;

/// Types generated from `proto/sdsim/auth/v1/auth.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/sdsim.auth.v1.rs"));
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

/// Where a shard's reads of revoked sessions resume: every revocation stamped before the newest
/// one seen, less a margin for clocks that differ between the instances that stamp them, has
/// been applied.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Reconcile {
    newest: Option<i64>,
}

impl Reconcile {
    /// Instances' clocks may differ by this much: a revocation stamped by a slower clock after
    /// the newest one seen is still read.
    const CLOCK_SKEW_S: i64 = 30;

    fn saw(&mut self, revoked_at: i64) {
        self.newest = Some(self.newest.map_or(revoked_at, |n| n.max(revoked_at)));
    }

    /// The `since` of the next read: from the newest seen less the skew margin, never older
    /// than a token's lifetime (older revocations no longer matter).
    fn since(&self, now: i64, ttl: i64) -> i64 {
        let horizon = now - ttl + 1;
        match self.newest {
            Some(n) => (n - Self::CLOCK_SKEW_S).max(horizon),
            None => horizon,
        }
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
        let mut reconcile = loop {
            match a.recent_revocations(service::now()).await {
                Ok(list) => {
                    let mut reconcile = Reconcile::default();
                    for (sid, until) in list {
                        reconcile.saw(until - a.config().access_ttl.as_secs() as i64);
                        verifier.revoke(&[sid], until);
                    }
                    break reconcile;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "loading revoked sessions: retrying");
                    monoio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
            }
        };
        let sync = a.config().revocation_sync;
        let mut swept = std::time::Instant::now();
        loop {
            // Storage is the record of every revocation; broadcasts are only the fast path.
            // Read it every `revocation_sync`, and at once when the link to other instances
            // comes back (what they published while it was down was lost).
            let links = sdsim_core::bus::remote_links();
            monoio::select! {
                _ = monoio::time::sleep(sync) => {}
                _ = sdsim_core::bus::remote_link_changed(links) => {}
            }
            let ttl = a.config().access_ttl.as_secs() as i64;
            match a
                .revocations_since(reconcile.since(service::now(), ttl))
                .await
            {
                Ok(list) => {
                    for (sid, revoked_at) in list {
                        reconcile.saw(revoked_at);
                        verifier.revoke(&[sid], revoked_at + ttl);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "reading revoked sessions: next time"),
            }
            if swept.elapsed() >= Duration::from_secs(30) {
                verifier.sweep(service::now());
                swept = std::time::Instant::now();
            }
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

#[cfg(test)]
mod tests {
    use super::Reconcile;

    #[test]
    fn reconciliation_resumes_from_the_newest_revocation_less_the_clock_margin() {
        let mut r = Reconcile::default();
        // Nothing seen: everything within a token's lifetime.
        assert_eq!(r.since(10_000, 900), 9_101);
        r.saw(9_500);
        r.saw(9_400);
        assert_eq!(r.since(10_000, 900), 9_500 - Reconcile::CLOCK_SKEW_S);
        // Never older than a token's lifetime, however long ago the last one was.
        assert_eq!(r.since(20_000, 900), 19_101);
    }
}
