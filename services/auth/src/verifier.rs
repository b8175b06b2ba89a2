//! The token validation fast path: every shard verifies signatures itself with the key ring it
//! last saw, remembers tokens it already verified (keyed by a SHA-256 prefix of the token,
//! dropped when they expire or their session is revoked; when full, the oldest eighth makes
//! room), and checks its own revocation set.
//! No cross-shard hop, no database, no lock on the hot path: the only shared state read is one
//! atomic version number of the key ring.

use crate::token::{Claims, KeyRing, Keys, Problem};
use sdsim_contract::{Caller, Session};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

/// The caller an access token's claims name, with its session.
fn caller_of(c: Claims) -> Caller {
    Caller {
        user_id: c.sub.into(),
        roles: c.roles.into(),
        perms: c.perms.into(),
        session: Some(Session {
            id: c.sid.into(),
            email: c.email.into(),
            expires_at: c.exp,
        }),
    }
}

/// When a cached caller's token expires.
fn expiry(c: &Caller) -> i64 {
    c.session.as_ref().map_or(0, |s| s.expires_at)
}

/// Whether a cached caller's token belongs to session `sid`.
fn in_session(c: &Caller, sid: &str) -> bool {
    c.session.as_ref().is_some_and(|s| *s.id == *sid)
}

/// Shared configuration of every shard's verifier.
pub struct Verifier {
    keys: Arc<Keys>,
    issuer: String,
    capacity: usize,
    /// Told when a token names a key the ring lacks (whoever fetches keys fetches sooner).
    unknown_key: Option<Arc<tokio::sync::Notify>>,
}

/// A verified token's caller and when it was cached.
struct Cached {
    caller: Caller,
    /// Insertion number (the shard's `inserted` count when it went in): eviction drops the
    /// oldest.
    seq: u64,
}

/// One shard's state.
struct Local {
    owner: usize,
    version: u64,
    ring: Arc<KeyRing>,
    cache: HashMap<u128, Cached>,
    /// Tokens cached so far (the next entry's `seq`).
    inserted: u64,
    /// Revoked session id → until when it matters (its last token's expiry).
    revoked: HashMap<Arc<str>, i64>,
    hits: u64,
    misses: u64,
    refused: [u64; Problem::ALL.len()],
}

thread_local! {
    static LOCAL: RefCell<Option<Local>> = const { RefCell::new(None) };
}

/// Counters of this shard's verifier.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Verifications answered from the cache.
    pub hits: u64,
    /// Verifications that checked a signature.
    pub misses: u64,
    /// Tokens refused, by [`Problem::index`].
    pub refused: [u64; Problem::ALL.len()],
    /// Tokens cached.
    pub entries: usize,
    /// Sessions in the revocation set.
    pub revoked: usize,
}

impl Verifier {
    /// A verifier over `keys` accepting tokens of `issuer`; each shard caches up to `capacity`
    /// (0: no cache, every check verifies the signature).
    pub fn new(keys: Arc<Keys>, issuer: String, capacity: usize) -> Verifier {
        Verifier {
            keys,
            issuer,
            capacity,
            unknown_key: None,
        }
    }

    /// The same verifier, telling `signal` whenever a token names a key it does not know (the
    /// key may be newer than the ring: a process that fetches its keys fetches them again).
    pub fn signalling_unknown_keys(mut self, signal: Arc<tokio::sync::Notify>) -> Verifier {
        self.unknown_key = Some(signal);
        self
    }

    /// The key ring.
    pub fn keys(&self) -> &Arc<Keys> {
        &self.keys
    }

    fn with_local<R>(&self, f: impl FnOnce(&mut Local) -> R) -> R {
        let owner = Arc::as_ptr(&self.keys) as usize;
        LOCAL.with(|cell| {
            let mut slot = cell.borrow_mut();
            let version = self.keys.version();
            let stale = match slot.as_ref() {
                Some(local) => local.owner != owner,
                None => true,
            };
            if stale {
                let (version, ring) = self.keys.current();
                *slot = Some(Local {
                    owner,
                    version,
                    ring,
                    cache: HashMap::new(),
                    inserted: 0,
                    revoked: HashMap::new(),
                    hits: 0,
                    misses: 0,
                    refused: [0; Problem::ALL.len()],
                });
            }
            let local = slot.as_mut().expect("set above");
            if local.version != version {
                let (version, ring) = self.keys.current();
                local.version = version;
                local.ring = ring;
                // Tokens of removed keys must not survive in the cache.
                local.cache.clear();
            }
            f(local)
        })
    }

    /// The key ring as this shard last saw it (signing and the JWKS use it too).
    pub fn ring(&self) -> Arc<KeyRing> {
        self.with_local(|local| Arc::clone(&local.ring))
    }

    /// The caller `token` authenticates at `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<Caller, Problem> {
        if token.len() > crate::token::MAX_TOKEN_BYTES {
            // Refused before it is even hashed for the cache.
            return self.with_local(|local| {
                local.refused[Problem::Malformed.index()] += 1;
                Err(Problem::Malformed)
            });
        }
        // Without a cache there is nothing to look up: no SHA-256 of the token.
        let key = if self.capacity == 0 {
            0
        } else {
            cache_key(token)
        };
        self.with_local(|local| {
            let result = Self::check(local, key, token, &self.issuer, now, self.capacity);
            if let Err(p) = result {
                local.refused[p.index()] += 1;
                if p == Problem::UnknownKey {
                    if let Some(signal) = &self.unknown_key {
                        signal.notify_one();
                    }
                }
            }
            result
        })
    }

    fn check(
        local: &mut Local,
        key: u128,
        token: &str,
        issuer: &str,
        now: i64,
        capacity: usize,
    ) -> Result<Caller, Problem> {
        if let Some(Cached { caller: hit, .. }) = local.cache.get(&key) {
            if now < expiry(hit) {
                if hit
                    .session
                    .as_ref()
                    .is_some_and(|s| local.revoked.contains_key(&s.id))
                {
                    return Err(Problem::Revoked);
                }
                local.hits += 1;
                return Ok(hit.clone());
            }
            local.cache.remove(&key);
            return Err(Problem::Expired);
        }
        local.misses += 1;
        let claims = local.ring.verify(token, issuer, now)?;
        if local.revoked.contains_key(claims.sid.as_str()) {
            return Err(Problem::Revoked);
        }
        let verified = caller_of(claims);
        if capacity == 0 {
            return Ok(verified);
        }
        if local.cache.len() >= capacity {
            evict(&mut local.cache, local.inserted, now, capacity);
        }
        local.cache.insert(
            key,
            Cached {
                caller: verified.clone(),
                seq: local.inserted,
            },
        );
        local.inserted += 1;
        Ok(verified)
    }

    /// Adds revoked sessions to this shard's set: tokens of `sessions` fail from now until
    /// `until` (after which they would have expired anyway).
    pub fn revoke(&self, sessions: &[String], until: i64) {
        self.with_local(|local| {
            for sid in sessions {
                local.revoked.insert(sid.as_str().into(), until);
            }
            local
                .cache
                .retain(|_, v| !sessions.iter().any(|s| in_session(&v.caller, s)));
        })
    }

    /// Forgets revocations whose tokens have all expired.
    pub fn sweep(&self, now: i64) {
        self.with_local(|local| {
            local.revoked.retain(|_, until| *until > now);
            local.cache.retain(|_, v| expiry(&v.caller) > now);
        })
    }

    /// This shard's counters.
    pub fn stats(&self) -> CacheStats {
        self.with_local(|local| CacheStats {
            hits: local.hits,
            misses: local.misses,
            refused: local.refused,
            entries: local.cache.len(),
            revoked: local.revoked.len(),
        })
    }
}

/// The first 128 bits of SHA-256: collisions cannot be searched for, so a token cannot borrow
/// another token's verified entry.
fn cache_key(token: &str) -> u128 {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest.as_ref()[..16]);
    u128::from_le_bytes(bytes)
}

/// Makes room: drops expired entries and the oldest eighth, keeping the newest seven eighths
/// of the `inserted` so far. Oldest first, so a stream of distinct tokens (more than fit)
/// turns the cache over instead of leaving some entries in it for good: the previous rule, an
/// arbitrary eighth in hash-table order, kept evicting from the same end of the table, so
/// entries at the other end stayed until they expired.
fn evict(cache: &mut HashMap<u128, Cached>, inserted: u64, now: i64, capacity: usize) {
    let keep = (capacity - (capacity / 8).max(1)) as u64;
    let oldest_kept = inserted.saturating_sub(keep);
    cache.retain(|_, v| v.seq >= oldest_kept && expiry(&v.caller) > now);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::SigningKey;

    fn setup() -> (Verifier, Arc<Keys>) {
        let keys = Arc::new(Keys::default());
        let key = Arc::new(SigningKey::generate().unwrap());
        keys.replace(KeyRing::new(
            Some(Arc::clone(&key)),
            vec![(key.kid.clone(), key.public())],
        ));
        (Verifier::new(Arc::clone(&keys), "sdsim".into(), 4), keys)
    }

    fn token(keys: &Keys, sid: &str, now: i64) -> String {
        keys.current()
            .1
            .sign(&Claims {
                iss: "sdsim".into(),
                aud: "sdsim".into(),
                sub: "u".into(),
                sid: sid.into(),
                email: "e@example.com".into(),
                roles: vec![],
                perms: vec![],
                iat: now,
                nbf: now,
                exp: now + 60,
                jti: sid.into(),
            })
            .unwrap()
    }

    #[test]
    fn capacity_zero_checks_every_signature() {
        let keys = Arc::new(Keys::default());
        let key = Arc::new(SigningKey::generate().unwrap());
        keys.replace(KeyRing::new(
            Some(Arc::clone(&key)),
            vec![(key.kid.clone(), key.public())],
        ));
        let v = Verifier::new(Arc::clone(&keys), "sdsim".into(), 0);
        let now = 1_800_000_000;
        let t = token(&keys, "s1", now);
        for _ in 0..3 {
            assert!(v.verify(&t, now).is_ok());
        }
        let s = v.stats();
        assert_eq!((s.hits, s.misses, s.entries), (0, 3, 0));
        v.revoke(&["s1".to_string()], now + 60);
        assert_eq!(v.verify(&t, now), Err(Problem::Revoked));
    }

    #[test]
    fn more_distinct_tokens_than_fit_turn_the_cache_over_oldest_first() {
        let keys = Arc::new(Keys::default());
        let key = Arc::new(SigningKey::generate().unwrap());
        keys.replace(KeyRing::new(
            Some(Arc::clone(&key)),
            vec![(key.kid.clone(), key.public())],
        ));
        let capacity = 64;
        let v = Verifier::new(Arc::clone(&keys), "sdsim".into(), capacity);
        let now = 1_800_000_000;
        // Round robin over more tokens than fit: each comes back after 79 others, by when it
        // is among the oldest and gone, so every check verifies its signature.
        let tokens: Vec<String> = (0..capacity + capacity / 4)
            .map(|i| token(&keys, &format!("s{i}"), now))
            .collect();
        for _ in 0..4 {
            for t in &tokens {
                v.verify(t, now).unwrap();
            }
        }
        let s = v.stats();
        assert_eq!((s.hits, s.misses), (0, 4 * tokens.len() as u64));
        assert!(s.entries <= capacity);
        // The newest tokens are still cached: sent again at once, they hit.
        for t in &tokens[tokens.len() - capacity / 2..] {
            v.verify(t, now).unwrap();
        }
        assert_eq!(v.stats().hits, capacity as u64 / 2);
    }

    #[test]
    fn caches_expires_revokes_and_follows_key_changes() {
        let (v, keys) = setup();
        let now = 1_800_000_000;
        let t = token(&keys, "s1", now);
        assert!(v.verify(&t, now).is_ok());
        assert!(v.verify(&t, now).is_ok());
        let s = v.stats();
        assert_eq!((s.hits, s.misses, s.entries), (1, 1, 1));
        // Expiry applies to cached tokens too.
        assert_eq!(v.verify(&t, now + 60), Err(Problem::Expired));
        assert_eq!(v.stats().refused[Problem::Expired.index()], 1);
        // Revocation drops the cached entry and refuses the session's tokens.
        assert!(v.verify(&t, now).is_ok());
        v.revoke(&["s1".to_string()], now + 60);
        assert_eq!(v.verify(&t, now), Err(Problem::Revoked));
        assert!(v.verify(&token(&keys, "s2", now), now).is_ok());
        v.sweep(now + 61);
        assert_eq!(v.stats().revoked, 0);
        // Bounded.
        for i in 0..20 {
            v.verify(&token(&keys, &format!("x{i}"), now), now).unwrap();
        }
        assert!(v.stats().entries <= 4);
        // A new ring without the old key: the cached token no longer verifies.
        let t3 = token(&keys, "s3", now);
        v.verify(&t3, now).unwrap();
        let key = Arc::new(SigningKey::generate().unwrap());
        keys.replace(KeyRing::new(
            Some(Arc::clone(&key)),
            vec![(key.kid.clone(), key.public())],
        ));
        assert_eq!(v.verify(&t3, now), Err(Problem::UnknownKey));
    }
}
