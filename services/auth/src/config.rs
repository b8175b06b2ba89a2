//! `[auth]`: the auth role's section — listeners, static tokens, token lifetimes, passwords,
//! lockout, mail — with its defaults and validation.

use sdsim_core::config::{duration, Problems};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A bearer token accepted by the static verifier (operator and service tokens).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticToken {
    /// The token as clients send it.
    pub token: String,
    /// The user id it authenticates.
    pub user: String,
    /// Roles (`admin` may publish and read every channel).
    #[serde(default)]
    pub roles: Vec<String>,
}

/// `[auth]`: listeners of the auth role, tokens, passwords, lockout, mail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// gRPC listener address.
    pub grpc_listen: String,
    /// HTTP listener address.
    pub http_listen: String,
    /// Local development only: every non-empty token is accepted, the token is the user id and
    /// the user is an admin. Never on by default; a warning is logged at start.
    pub dev_open: bool,
    /// Tokens accepted without the auth service (operators, services, tests).
    pub tokens: Vec<StaticToken>,
    /// `iss` and `aud` of access tokens.
    pub issuer: String,
    /// Lifetime of an access token (JWT).
    #[serde(with = "duration")]
    pub access_ttl: Duration,
    /// Lifetime of a session and its refresh tokens.
    #[serde(with = "duration")]
    pub refresh_ttl: Duration,
    /// A new signing key is made when the newest is this old.
    #[serde(with = "duration")]
    pub key_rotation: Duration,
    /// A new key is published (JWKS, other instances) this long before it signs.
    #[serde(with = "duration")]
    pub key_publish_delay: Duration,
    /// How often keys are re-read from storage (keys made by other instances), or fetched from
    /// the auth service by a gateway that does not run it.
    #[serde(with = "duration")]
    pub key_reload: Duration,
    /// How often each shard reads the sessions revoked since the last one it saw from storage:
    /// the bound on how long a revoked token can still work on an instance that missed the
    /// revocation's broadcast (Redis down or a full queue). Also read when Redis reconnects.
    #[serde(with = "duration")]
    pub revocation_sync: Duration,
    /// Failed logins within `lockout_window` that lock an account.
    pub lockout_threshold: u32,
    /// Window in which failed logins are counted.
    #[serde(with = "duration")]
    pub lockout_window: Duration,
    /// How long a locked account stays locked.
    #[serde(with = "duration")]
    pub lockout_duration: Duration,
    /// Least zxcvbn score (0-4) a new password needs.
    pub min_password_score: u8,
    /// Threads hashing passwords (argon2id); 0 = one per shard.
    pub hash_threads: usize,
    /// Hashing jobs waiting at most; more → 503.
    pub hash_queue: usize,
    /// Verified tokens each shard remembers (0: none, every check verifies the signature).
    pub verify_cache_entries: usize,
    /// Lifetime of an email verification token.
    #[serde(with = "duration")]
    pub verify_email_ttl: Duration,
    /// Lifetime of a password reset token.
    #[serde(with = "duration")]
    pub reset_ttl: Duration,
    /// Where mail goes: "log" (the log, info level) or "file:PATH" (JSON lines appended).
    pub mail_sender: String,
    /// Base URL used in links sent by mail.
    pub public_url: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            grpc_listen: "0.0.0.0:9000".into(),
            http_listen: "0.0.0.0:9001".into(),
            dev_open: false,
            tokens: Vec::new(),
            issuer: "sdsim".into(),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            key_rotation: Duration::from_secs(7 * 24 * 3600),
            key_publish_delay: Duration::from_secs(120),
            key_reload: Duration::from_secs(60),
            revocation_sync: Duration::from_secs(2),
            lockout_threshold: 5,
            lockout_window: Duration::from_secs(15 * 60),
            lockout_duration: Duration::from_secs(15 * 60),
            min_password_score: 3,
            hash_threads: 0,
            hash_queue: 256,
            verify_cache_entries: 100_000,
            verify_email_ttl: Duration::from_secs(24 * 3600),
            reset_ttl: Duration::from_secs(3600),
            mail_sender: "log".into(),
            public_url: "http://localhost:8000".into(),
        }
    }
}

impl AuthConfig {
    /// Reports the problems of `[auth]` to `problems`.
    pub fn validate(&self, problems: &mut Problems) {
        problems.address("auth.grpc_listen", &self.grpc_listen);
        problems.address("auth.http_listen", &self.http_listen);
        for (key, d) in [
            ("auth.access_ttl", self.access_ttl),
            ("auth.refresh_ttl", self.refresh_ttl),
            ("auth.key_rotation", self.key_rotation),
            ("auth.key_reload", self.key_reload),
            ("auth.revocation_sync", self.revocation_sync),
            ("auth.lockout_window", self.lockout_window),
            ("auth.lockout_duration", self.lockout_duration),
            ("auth.verify_email_ttl", self.verify_email_ttl),
            ("auth.reset_ttl", self.reset_ttl),
        ] {
            problems.positive(key, d);
        }
        if self.min_password_score > 4 {
            problems.bad(
                "auth.min_password_score",
                self.min_password_score.to_string(),
                "zxcvbn scores run from 0 to 4",
            );
        }
        problems.at_least("auth.lockout_threshold", self.lockout_threshold as usize, 1);
        problems.at_least("auth.hash_queue", self.hash_queue, 1);
        if self.mail_sender != "log" && !self.mail_sender.starts_with("file:") {
            problems.bad(
                "auth.mail_sender",
                self.mail_sender.clone(),
                "\"log\" or \"file:PATH\"",
            );
        }
        if self.issuer.is_empty() {
            problems.bad("auth.issuer", String::new(), "must not be empty");
        }
        for (i, t) in self.tokens.iter().enumerate() {
            if t.token.len() < 16 {
                problems.bad(
                    &format!("auth.tokens[{i}].token"),
                    "<hidden>".into(),
                    "must be at least 16 characters",
                );
            }
            if t.user.is_empty() {
                problems.bad(
                    &format!("auth.tokens[{i}].user"),
                    String::new(),
                    "must not be empty",
                );
            }
        }
    }
}
