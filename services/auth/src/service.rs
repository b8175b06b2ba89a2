//! The auth service's logic, shared by its HTTP routes, its gRPC methods and the CLI: accounts,
//! sessions and refresh-token families, lockout, RBAC, one-time tokens, signing keys.

mod accounts;
mod keys;

use crate::config::AuthConfig;
use crate::events::AuthEvent;
use crate::mail::Mail;
use crate::password::{self, Hasher};
use crate::token::{Claims, KeyRing, Keys};
use crate::verifier::Verifier;
use sdsim_contract::Caller;
use sdsim_store::{Statement, Store, StoreError, Value};
use std::sync::Arc;

/// Why [`Auth::session`] calls a session inactive when it is another user's.
pub const OTHER_USERS_SESSION: &str = "the session belongs to another user";

/// Bus channel carrying revoked sessions to every shard and, through Redis, every instance.
pub const REVOCATIONS: &str = "auth:internal:revocations";

pub use self::accounts::normalise_email;
pub use crate::error::Failure;

/// A user as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct User {
    /// Id.
    pub id: String,
    /// Email (lower case).
    pub email: String,
    /// Whether the email was verified.
    pub email_verified: bool,
    /// Role names.
    pub roles: Vec<String>,
    /// Permissions the roles grant.
    pub permissions: Vec<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Whether login is locked now.
    pub locked: bool,
}

/// What login and refresh return.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Tokens {
    /// The access token (JWT).
    pub access_token: String,
    /// The refresh token (opaque, single use).
    pub refresh_token: String,
    /// Seconds the access token lives.
    pub expires_in: i64,
    /// Always "Bearer".
    pub token_type: &'static str,
    /// The session.
    pub session_id: String,
    /// Who.
    pub user: User,
}

/// A session's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionState {
    /// Whether tokens of it are accepted.
    pub active: bool,
    /// Unix seconds.
    pub expires_at: i64,
    /// Why not, when inactive.
    pub reason: String,
}

/// The service.
pub struct Auth {
    store: Store,
    config: AuthConfig,
    keys: Arc<Keys>,
    verifier: Arc<Verifier>,
    hasher: Arc<Hasher>,
    mail: Arc<Mail>,
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn random_bytes<const N: usize>() -> [u8; N] {
    use ring::rand::SecureRandom;
    let mut out = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .expect("the system random source works");
    out
}

pub use sdsim_core::new_id;

/// A random opaque secret (256 bits, base64url).
fn new_secret() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

/// What storage keeps of a secret: its SHA-256, hex.
pub fn secret_hash(secret: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, secret.as_bytes())
        .as_ref()
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

impl Auth {
    /// The service over `store` (migrated), with its hashing pool and mail sender.
    pub fn new(
        store: Store,
        config: AuthConfig,
        hasher: Arc<Hasher>,
        mail: Arc<Mail>,
    ) -> Arc<Auth> {
        let keys = Arc::new(Keys::default());
        let verifier = Arc::new(Verifier::new(
            Arc::clone(&keys),
            config.issuer.clone(),
            config.verify_cache_entries,
        ));
        Arc::new(Auth {
            store,
            config,
            keys,
            verifier,
            hasher,
            mail,
        })
    }

    /// The shard-local token verifier.
    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.verifier
    }

    /// The storage.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// The mail sender.
    pub fn mail(&self) -> &Arc<Mail> {
        &self.mail
    }

    /// The key ring, as this shard last saw it (no lock unless the keys changed).
    pub fn key_ring(&self) -> Arc<KeyRing> {
        self.verifier.ring()
    }

    /// Sessions revoked recently enough that their access tokens may still be live, with the
    /// time until which they matter (every shard loads these at start).
    pub async fn recent_revocations(&self, now: i64) -> Result<Vec<(String, i64)>, Failure> {
        let ttl = self.config.access_ttl.as_secs() as i64;
        Ok(self
            .revocations_since(now - ttl + 1)
            .await?
            .into_iter()
            .map(|(sid, revoked_at)| (sid, revoked_at + ttl))
            .collect())
    }

    /// Sessions revoked at or after `since` (Unix seconds), with when: what a shard that has
    /// seen every revocation before `since` reads to catch up.
    pub async fn revocations_since(&self, since: i64) -> Result<Vec<(String, i64)>, Failure> {
        revocations_since(&self.store, since).await
    }

    /// The first column of every row, as text.
    async fn strings(&self, sql: &str, params: Vec<Value>) -> Result<Vec<String>, Failure> {
        let rows = self.store.query(sql, params).await?;
        rows.iter()
            .map(|r| r.text(0).map(str::to_string))
            .collect::<Result<_, _>>()
            .map_err(Failure::from)
    }

    /// A user by id, with roles and permissions.
    pub async fn user(&self, id: &str) -> Result<User, Failure> {
        let row = self
            .store
            .query_opt(
                "SELECT id, email, email_verified, created_at, locked_until FROM auth_schema.users WHERE id = $1",
                vec![Value::Text(id.to_string())],
            )
            .await?
            .ok_or_else(|| Failure::NotFound(format!("no user {id}")))?;
        let (roles, permissions) = self.grants(id).await?;
        Ok(User {
            id: row.text(0)?.to_string(),
            email: row.text(1)?.to_string(),
            email_verified: row.bool(2)?,
            roles,
            permissions,
            created_at: row.int(3)?,
            locked: row.opt_int(4)?.is_some_and(|t| t > now()),
        })
    }

    /// A user's roles and the union of their permissions, both sorted.
    pub async fn grants(&self, user: &str) -> Result<(Vec<String>, Vec<String>), Failure> {
        let roles = self.roles_with_permissions(user).await?;
        let permissions = union_of(&roles);
        Ok((roles.into_iter().map(|(r, _)| r).collect(), permissions))
    }

    /// A user's roles, each with its permissions.
    pub async fn roles_with_permissions(
        &self,
        user: &str,
    ) -> Result<Vec<(String, Vec<String>)>, Failure> {
        let rows = self
            .store
            .query(
                "SELECT ur.role, rp.permission FROM auth_schema.user_roles ur LEFT JOIN auth_schema.role_permissions rp ON rp.role = ur.role WHERE ur.user_id = $1 ORDER BY ur.role, rp.permission",
                vec![Value::Text(user.to_string())],
            )
            .await?;
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for r in &rows {
            let role = r.text(0)?;
            if out.last().map(|(n, _)| n.as_str()) != Some(role) {
                out.push((role.to_string(), Vec::new()));
            }
            if let Ok(p) = r.text(1) {
                out.last_mut().expect("pushed").1.push(p.to_string());
            }
        }
        Ok(out)
    }

    /// Logs in: checks the password (with lockout), opens a session, issues tokens.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        client: &str,
    ) -> Result<Tokens, Failure> {
        let refused = || Failure::Unauthenticated("wrong email or password".into());
        let Ok(email) = normalise_email(email) else {
            // Same work and answer as an unknown account.
            self.hasher.verify(password, None).await?;
            return Err(refused());
        };
        if password.len() > password::MAX_PASSWORD_BYTES {
            return Err(refused());
        }
        let row = self
            .store
            .query_opt(
                "SELECT id, password_hash, failed_logins, first_failed_at, locked_until FROM auth_schema.users WHERE email = $1",
                vec![Value::Text(email)],
            )
            .await?;
        let Some(row) = row else {
            self.hasher.verify(password, None).await?;
            return Err(refused());
        };
        let id = row.text(0)?.to_string();
        let now = now();
        if let Some(until) = row.opt_int(4)?.filter(|t| *t > now) {
            return Err(Failure::Locked {
                retry_after_s: until - now,
            });
        }
        if !self.hasher.verify(password, Some(row.text(1)?)).await? {
            let window = self.config.lockout_window.as_secs() as i64;
            let (failed, first) = match row.opt_int(3)? {
                Some(first) if first + window > now => (row.int(2)? + 1, first),
                _ => (1, now),
            };
            let lock = (failed >= self.config.lockout_threshold as i64)
                .then(|| now + self.config.lockout_duration.as_secs() as i64);
            self.store
                .execute(
                    "UPDATE auth_schema.users SET failed_logins = $2, first_failed_at = $3, locked_until = $4 WHERE id = $1",
                    vec![
                        Value::Text(id.clone()),
                        Value::Int(failed),
                        Value::Int(first),
                        lock.map(Value::Int).unwrap_or(Value::Null),
                    ],
                )
                .await?;
            if lock.is_some() {
                tracing::warn!(user = %id, failed, "account locked after failed logins");
            }
            return Err(refused());
        }
        let session = new_id();
        let refresh = new_secret();
        let expires = now + self.config.refresh_ttl.as_secs() as i64;
        self.store
            .batch(vec![
                Statement::new(
                    "UPDATE auth_schema.users SET failed_logins = 0, first_failed_at = NULL, locked_until = NULL WHERE id = $1",
                    vec![Value::Text(id.clone())],
                ),
                Statement::new(
                    "INSERT INTO auth_schema.sessions (id, user_id, created_at, expires_at, ip) VALUES ($1, $2, $3, $4, $5)",
                    vec![
                        Value::Text(session.clone()),
                        Value::Text(id.clone()),
                        Value::Int(now),
                        Value::Int(expires),
                        Value::Text(client.to_string()),
                    ],
                ),
                self.refresh_row(&refresh, &session, now, expires),
            ])
            .await?;
        let tokens = self.issue(&id, &session, refresh, now).await?;
        crate::events::publish(crate::events::LOGIN, &AuthEvent::session(&id, &session)).await;
        Ok(tokens)
    }

    fn refresh_row(&self, secret: &str, session: &str, now: i64, expires: i64) -> Statement {
        Statement::new(
            "INSERT INTO auth_schema.refresh_tokens (token_hash, session_id, family, created_at, expires_at) VALUES ($1, $2, $2, $3, $4)",
            vec![
                Value::Text(secret_hash(secret)),
                Value::Text(session.to_string()),
                Value::Int(now),
                Value::Int(expires),
            ],
        )
    }

    async fn issue(
        &self,
        user: &str,
        session: &str,
        refresh: String,
        now: i64,
    ) -> Result<Tokens, Failure> {
        let user = self.user(user).await?;
        let ttl = self.config.access_ttl.as_secs() as i64;
        let claims = Claims {
            iss: self.config.issuer.clone(),
            aud: self.config.issuer.clone(),
            sub: user.id.clone(),
            sid: session.to_string(),
            email: user.email.clone(),
            roles: user.roles.clone(),
            perms: user.permissions.clone(),
            iat: now,
            nbf: now,
            exp: now + ttl,
            jti: new_id(),
        };
        let access_token = self
            .key_ring()
            .sign(&claims)
            .ok_or_else(|| Failure::Unavailable("no signing key is loaded yet".into()))?;
        Ok(Tokens {
            access_token,
            refresh_token: refresh,
            expires_in: ttl,
            token_type: "Bearer",
            session_id: session.to_string(),
            user,
        })
    }

    /// Exchanges a refresh token for new tokens; the old one is spent. Presenting a spent or
    /// revoked token again revokes its whole family (the session): it was stolen, or leaked.
    pub async fn refresh(&self, token: &str) -> Result<Tokens, Failure> {
        let refused = |why: &str| Failure::Unauthenticated(why.to_string());
        let hash = secret_hash(token);
        let row = self
            .store
            .query_opt(
                "SELECT r.session_id, r.expires_at, r.used_at, r.revoked_at, s.user_id, s.revoked_at FROM auth_schema.refresh_tokens r JOIN auth_schema.sessions s ON s.id = r.session_id WHERE r.token_hash = $1",
                vec![Value::Text(hash.clone())],
            )
            .await?
            .ok_or_else(|| refused("unknown refresh token"))?;
        let session = row.text(0)?.to_string();
        let user = row.text(4)?.to_string();
        let now = now();
        if row.opt_int(5)?.is_some() {
            return Err(refused("the session has been revoked"));
        }
        if row.opt_int(2)?.is_some() || row.opt_int(3)?.is_some() {
            tracing::warn!(%user, %session, "refresh token reuse: revoking the session");
            self.revoke_sessions(std::slice::from_ref(&session), "refresh token reuse")
                .await?;
            return Err(refused(
                "refresh token already used: the session has been revoked",
            ));
        }
        if row.int(1)? <= now {
            return Err(refused("the refresh token has expired"));
        }
        // Spend it; only one concurrent refresh can win.
        let spent = self
            .store
            .execute(
                "UPDATE auth_schema.refresh_tokens SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL AND revoked_at IS NULL",
                vec![Value::Text(hash), Value::Int(now)],
            )
            .await?;
        if spent != 1 {
            self.revoke_sessions(std::slice::from_ref(&session), "refresh token reuse")
                .await?;
            return Err(refused(
                "refresh token already used: the session has been revoked",
            ));
        }
        let next = new_secret();
        let expires = row.int(1)?;
        self.store
            .execute(
                "INSERT INTO auth_schema.refresh_tokens (token_hash, session_id, family, created_at, expires_at) VALUES ($1, $2, $2, $3, $4)",
                vec![
                    Value::Text(secret_hash(&next)),
                    Value::Text(session.clone()),
                    Value::Int(now),
                    Value::Int(expires),
                ],
            )
            .await?;
        self.issue(&user, &session, next, now).await
    }

    /// Revokes sessions: storage first (the record every instance reconciles from), then every
    /// shard of this instance through the mesh (backpressured, never dropped), then other
    /// instances through the bus (best effort: their periodic and on-reconnect reads of storage
    /// are the guarantee, bounded by `auth.revocation_sync`).
    pub async fn revoke_sessions(&self, sessions: &[String], why: &str) -> Result<(), Failure> {
        if sessions.is_empty() {
            return Ok(());
        }
        let now = now();
        let mut statements = Vec::new();
        for sid in sessions {
            statements.push(Statement::new(
                "UPDATE auth_schema.sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                vec![Value::Text(sid.clone()), Value::Int(now)],
            ));
            statements.push(Statement::new(
                "UPDATE auth_schema.refresh_tokens SET revoked_at = $2 WHERE session_id = $1 AND revoked_at IS NULL",
                vec![Value::Text(sid.clone()), Value::Int(now)],
            ));
        }
        self.store.batch(statements).await?;
        let until = now + self.config.access_ttl.as_secs() as i64;
        self.verifier.revoke(sessions, until);
        if let Some(shard) = sdsim_core::runtime::Shard::try_current() {
            let verifier = Arc::clone(&self.verifier);
            let revoked: Arc<[String]> = sessions.into();
            let applied = shard
                .mesh()
                .broadcast(move || verifier.revoke(&revoked, until))
                .await;
            if applied.iter().any(Result::is_err) {
                // Only while the mesh closes at shutdown; the other shards' next read of
                // storage applies it.
                tracing::warn!("revocation not applied on every shard through the mesh");
            }
        }
        announce_revocation(sessions.to_vec(), until).await;
        tracing::info!(count = sessions.len(), why, "sessions revoked");
        Ok(())
    }

    /// Every open session of `user`.
    async fn open_sessions(&self, user: &str) -> Result<Vec<String>, Failure> {
        self.strings(
            "SELECT id FROM auth_schema.sessions WHERE user_id = $1 AND revoked_at IS NULL",
            vec![Value::Text(user.to_string())],
        )
        .await
    }

    /// Logs out the token's session.
    pub async fn logout(&self, who: &Caller) -> Result<(), Failure> {
        let Some(session) = &who.session else {
            return Err(Failure::Unauthenticated(
                "only a user's access token has a session to end".into(),
            ));
        };
        self.end_session(&who.user_id, &session.id).await
    }

    /// Ends `user`'s session `session` (revoked everywhere) and announces it.
    pub async fn end_session(&self, user: &str, session: &str) -> Result<(), Failure> {
        self.revoke_sessions(&[session.to_string()], "logout")
            .await?;
        crate::events::publish(crate::events::LOGOUT, &AuthEvent::session(user, session)).await;
        Ok(())
    }

    /// Whether a session is active.
    pub async fn session(&self, id: &str, user: Option<&str>) -> Result<SessionState, Failure> {
        let row = self
            .store
            .query_opt(
                "SELECT user_id, expires_at, revoked_at FROM auth_schema.sessions WHERE id = $1",
                vec![Value::Text(id.to_string())],
            )
            .await?;
        let Some(row) = row else {
            return Ok(SessionState {
                active: false,
                expires_at: 0,
                reason: "unknown session".into(),
            });
        };
        let expires_at = row.int(1)?;
        let reason = if user.is_some_and(|u| u != row.text(0).unwrap_or_default()) {
            OTHER_USERS_SESSION
        } else if row.opt_int(2)?.is_some() {
            "revoked"
        } else if expires_at <= now() {
            "expired"
        } else {
            ""
        };
        Ok(SessionState {
            active: reason.is_empty(),
            expires_at,
            reason: reason.into(),
        })
    }

    /// Whether `user` holds `permission` (from storage, for other services).
    pub async fn holds_permission(&self, user: &str, permission: &str) -> Result<bool, Failure> {
        Ok(self.grants(user).await?.1.iter().any(|p| p == permission))
    }
}

/// Announces revoked sessions on the bus channel [`REVOCATIONS`]: every shard of this instance
/// and, through Redis, every instance refuses their tokens until `until` (best effort: storage
/// is the record, which every shard reads every `auth.revocation_sync`).
pub async fn announce_revocation(sessions: Vec<String>, until: i64) {
    let message = Revocation {
        sessions,
        until,
        at_us: now_us(),
    };
    if let Some(bus) = sdsim_core::bus::Bus::local() {
        let data = sonic_rs::to_vec(&message).unwrap_or_default();
        if let Err(e) = bus.publish(REVOCATIONS, data.into()).await {
            tracing::warn!(error = %e, "revocation not published on the bus");
        }
    }
}

/// Sessions revoked at or after `since` (Unix seconds) in `store`, with when.
pub async fn revocations_since(store: &Store, since: i64) -> Result<Vec<(String, i64)>, Failure> {
    // `revoked_at IS NOT NULL` repeats the condition of the partial index (migration 6).
    let rows = store
        .query(
            "SELECT id, revoked_at FROM auth_schema.sessions WHERE revoked_at IS NOT NULL AND revoked_at >= $1",
            vec![Value::Int(since)],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.text(0)?.to_string(), r.int(1)?)))
        .collect::<Result<_, StoreError>>()
        .map_err(Failure::from)
}

/// The permissions of `roles` together, sorted, each once.
pub fn union_of(roles: &[(String, Vec<String>)]) -> Vec<String> {
    let mut all: Vec<String> = roles.iter().flat_map(|(_, p)| p.clone()).collect();
    all.sort();
    all.dedup();
    all
}

/// The bus message announcing revoked sessions.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Revocation {
    /// Session ids.
    pub sessions: Vec<String>,
    /// Until when their tokens could live.
    pub until: i64,
    /// When it was published (Unix microseconds): receivers measure how long it took.
    #[serde(default)]
    pub at_us: u64,
}

/// Unix microseconds now.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_uuid_v4() {
        let id = new_id();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_ne!(new_id(), id);
    }
}
