//! Token verification in a process without the auth service (a gateway-only process): the
//! public keys are fetched from the auth service (`GetSigningKeys`) at start, every
//! `auth.key_reload`, and soon after a token names a key this process does not know (a
//! rotation); every shard verifies tokens itself with them. Revoked sessions arrive as in the
//! auth service's own processes: the bus (through Redis from every instance) and `storage.url`
//! (the shared database), read every `auth.revocation_sync`.

use crate::config::AuthConfig;
use crate::contract::AuthService;
use crate::revocations;
use crate::token::{KeyRing, Keys};
use crate::verifier::Verifier;
use crate::Failure;
use sdsim_core::bus::Bus;
use sdsim_core::metrics::Metrics;
use sdsim_store::Store;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Fetches prompted by unknown keys are at least this far apart: tokens naming made-up key
/// ids must not turn into a stream of calls to the auth service.
pub const UNKNOWN_KEY_REFETCH: Duration = Duration::from_secs(1);

/// Keys fetched from the auth service and the verifier over them, shared by every shard.
pub struct KeyFollower {
    verifier: Arc<Verifier>,
    unknown_key: Arc<Notify>,
    config: AuthConfig,
    store: Store,
}

impl KeyFollower {
    /// A follower with no key yet (every token is refused until the first fetch); `store`
    /// holds the sessions revoked by the auth service.
    pub fn new(config: &AuthConfig, store: Store) -> Arc<KeyFollower> {
        let unknown_key = Arc::new(Notify::new());
        let verifier = Verifier::new(
            Arc::new(Keys::default()),
            config.issuer.clone(),
            config.verify_cache_entries,
        )
        .signalling_unknown_keys(Arc::clone(&unknown_key));
        Arc::new(KeyFollower {
            verifier: Arc::new(verifier),
            unknown_key,
            config: config.clone(),
            store,
        })
    }

    /// The verifier every shard checks tokens with.
    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.verifier
    }

    /// Fetches the keys from `auth` and installs them when they changed; returns how many
    /// keys verify now.
    pub async fn fetch(&self, auth: &dyn AuthService) -> Result<usize, Failure> {
        let fetched = auth.get_signing_keys(()).await?;
        let keys = self.verifier.keys();
        let (_, current) = keys.current();
        let same = current.len() == fetched.keys.len()
            && fetched.keys.iter().all(|(kid, _)| current.knows(kid));
        if !same {
            let kids: Vec<&str> = fetched.keys.iter().map(|(k, _)| k.as_str()).collect();
            tracing::info!(?kids, "verification keys fetched from the auth service");
            keys.replace(KeyRing::new(None, fetched.keys.clone()));
        }
        Ok(fetched.keys.len())
    }

    /// Starts this process's parts on one shard: the revocation subscriber, and on shard 0
    /// the key fetcher, which calls `auth`.
    pub fn install_shard(
        self: &Arc<Self>,
        shard: &sdsim_core::runtime::Shard,
        bus: Rc<Bus>,
        metrics: Rc<Metrics>,
        auth: Rc<dyn AuthService>,
    ) {
        let source = revocations::Source {
            store: self.store.clone(),
            access_ttl: self.config.access_ttl,
            sync: self.config.revocation_sync,
        };
        revocations::spawn(shard, Arc::clone(&self.verifier), source, bus, metrics);
        if shard.id().index() != 0 {
            return;
        }
        let follower = Arc::clone(self);
        shard.spawn("auth-key-fetch", async move {
            follower.follow(|| follower.fetch(&*auth)).await;
        });
    }

    /// Fetches the keys with `fetch` now, then every `auth.key_reload`, and again after a
    /// token names an unknown key — never sooner than [`UNKNOWN_KEY_REFETCH`] after the last
    /// fetch. A failed fetch is retried sooner (a starting auth service), backing off.
    async fn follow<F, Fut>(&self, mut fetch: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<usize, Failure>>,
    {
        let mut failures = 0u32;
        loop {
            let fetched_at = Instant::now();
            let next = match fetch().await {
                Ok(_) => {
                    failures = 0;
                    self.config.key_reload
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, failures, "verification keys not fetched");
                    (UNKNOWN_KEY_REFETCH * failures.min(10)).min(self.config.key_reload)
                }
            };
            monoio::select! {
                _ = monoio::time::sleep(next) => {}
                _ = self.unknown_key.notified() => {
                    let since = fetched_at.elapsed();
                    if since < UNKNOWN_KEY_REFETCH {
                        monoio::time::sleep(UNKNOWN_KEY_REFETCH - since).await;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A token whose header names a key nobody has (refused before its signature is looked at).
    fn token_of_unknown_key() -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(br#"{"alg":"EdDSA","typ":"JWT","kid":"made-up"}"#);
        format!("{header}.{}.{}", b64.encode(b"{}"), b64.encode([7u8; 64]))
    }

    #[test]
    fn tokens_of_unknown_keys_prompt_fetches_at_most_once_a_second() {
        let dir = std::env::temp_dir().join(format!("sdsim-follower-{}", std::process::id()));
        let store = Store::open(
            &format!("sqlite://{}/sdsim.db", dir.display()),
            &Default::default(),
        )
        .unwrap();
        let config = AuthConfig {
            // Only unknown keys can prompt a fetch within the test.
            key_reload: Duration::from_secs(3600),
            ..AuthConfig::default()
        };
        let follower = KeyFollower::new(&config, store);
        let fetches = Cell::new(0u32);
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        let (count, elapsed) = rt.block_on(async {
            let began = Instant::now();
            let following = follower.follow(|| {
                fetches.set(fetches.get() + 1);
                std::future::ready(Ok(0))
            });
            let flood = async {
                // Forged tokens every 5 ms until the third fetch (or 10 s).
                while fetches.get() < 3 && began.elapsed() < Duration::from_secs(10) {
                    let refused = follower.verifier().verify(&token_of_unknown_key(), 0);
                    assert_eq!(refused, Err(crate::token::Problem::UnknownKey));
                    monoio::time::sleep(Duration::from_millis(5)).await;
                }
                (fetches.get(), began.elapsed())
            };
            monoio::select! {
                _ = following => unreachable!("the follower never returns"),
                done = flood => done,
            }
        });
        let _ = std::fs::remove_dir_all(dir);
        // Fetch k (the first at start) comes at least k - 1 seconds after the start.
        assert_eq!(count, 3, "unknown keys prompted fetches within {elapsed:?}");
        assert!(
            elapsed >= UNKNOWN_KEY_REFETCH * 2,
            "3 fetches within {elapsed:?}: the refetch bound is one a second"
        );
    }
}
