//! Bearer-token verification for the gateway's HTTP and WebSocket surfaces.
//!
//! [`TokenVerifier`] is the seam: until the auth service exists, tokens come from the
//! configuration (`auth.tokens`, compared by SHA-256 digest in constant time), and
//! `auth.dev_open = true` accepts every token for local development (never the default).

use sdsim_core::config::AuthConfig;
use std::collections::HashMap;
use std::sync::Arc;

/// Who a verified token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user id.
    pub user: Arc<str>,
    /// Roles, e.g. `admin`, `user`.
    pub roles: Arc<[String]>,
    /// Permissions the token grants (`project:read`, ...); empty for static tokens, whose
    /// roles decide (an admin may do everything).
    pub perms: Arc<[String]>,
}

impl Identity {
    /// The caller the project and simulation services act for.
    pub fn caller(&self) -> sdsim_projects::Caller {
        sdsim_projects::Caller {
            user_id: Arc::clone(&self.user),
            is_admin: self.is_admin(),
            perms: Arc::clone(&self.perms),
        }
    }

    /// Whether the identity has `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// Whether the identity is an administrator.
    pub fn is_admin(&self) -> bool {
        self.has_role("admin")
    }
}

/// The caller an access token names, for the project and simulation services.
pub fn caller_of(v: &sdsim_auth::verifier::Verified) -> sdsim_projects::Caller {
    sdsim_projects::Caller {
        user_id: Arc::clone(&v.user_id),
        is_admin: v.has_role("admin"),
        perms: Arc::clone(&v.perms),
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token was sent.
    #[error("a bearer token is required")]
    Missing,
    /// The token is not valid.
    #[error("the token is not valid")]
    Invalid,
}

/// Verifies bearer tokens. Called on the shard that serves the request: implementations must
/// answer from shard-local or immutable state, without I/O.
pub trait TokenVerifier: Send + Sync {
    /// The identity `token` authenticates.
    fn verify(&self, token: &str) -> Result<Identity, AuthError>;
}

/// Tokens listed in the configuration.
pub struct StaticTokens {
    by_digest: HashMap<[u8; 32], Identity>,
}

impl StaticTokens {
    /// From `auth.tokens`.
    pub fn new(config: &AuthConfig) -> StaticTokens {
        let by_digest = config
            .tokens
            .iter()
            .map(|t| {
                (
                    digest(&t.token),
                    Identity {
                        user: t.user.as_str().into(),
                        roles: t.roles.clone().into(),
                        perms: Arc::from([]),
                    },
                )
            })
            .collect();
        StaticTokens { by_digest }
    }
}

fn digest(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl TokenVerifier for StaticTokens {
    fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        // Looking up a digest leaks nothing useful about the token through timing.
        self.by_digest
            .get(&digest(token))
            .cloned()
            .ok_or(AuthError::Invalid)
    }
}

/// Local development: every non-empty token is user `<token>` with roles `user` and `admin`.
pub struct DevOpen;

impl TokenVerifier for DevOpen {
    fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        if token.is_empty() || token.len() > 256 {
            return Err(AuthError::Invalid);
        }
        Ok(Identity {
            user: token.into(),
            roles: vec!["user".to_string(), "admin".to_string()].into(),
            perms: Arc::from([]),
        })
    }
}

/// Access tokens of the auth service (EdDSA JWTs, the shard-local fast path), then the
/// configuration's static tokens.
pub struct Tokens {
    jwt: Option<Arc<sdsim_auth::verifier::Verifier>>,
    fixed: StaticTokens,
}

impl TokenVerifier for Tokens {
    fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if let Some(jwt) = &self.jwt {
            // A JWT has two dots; static tokens are tried only for other shapes.
            if token.bytes().filter(|b| *b == b'.').count() == 2 {
                return jwt
                    .verify(token, sdsim_auth::service::now())
                    .map(|v| Identity {
                        user: v.user_id,
                        roles: v.roles,
                        perms: v.perms,
                    })
                    .map_err(|_| AuthError::Invalid);
            }
        }
        self.fixed.verify(token)
    }
}

/// The verifier the configuration asks for: `jwt` is the auth service's verifier when the
/// process has it.
pub fn from_config(
    config: &AuthConfig,
    jwt: Option<Arc<sdsim_auth::verifier::Verifier>>,
) -> Arc<dyn TokenVerifier> {
    if config.dev_open {
        tracing::warn!("auth.dev_open = true: every bearer token is accepted as an admin; never use this outside local development");
        Arc::new(DevOpen)
    } else {
        Arc::new(Tokens {
            jwt,
            fixed: StaticTokens::new(config),
        })
    }
}

/// The bearer token of a request's `Authorization` header.
pub use sdsim_auth::http::bearer;
