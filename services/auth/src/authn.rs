//! The one authentication layer: bearer token → [`Caller`], for HTTP, WebSocket and gRPC
//! alike.
//!
//! [`Authenticator`] implements the per-call hook [`Authenticate`]. A token shaped like a JWT
//! (two dots) is an access token of this auth service when the process has its verifier (the
//! shard-local fast path: no I/O, no cross-shard hop); any other token is looked up among the
//! configured static tokens (`auth.tokens`, compared by SHA-256 digest so that the lookup's
//! timing says nothing useful about the token), or — with `auth.dev_open = true`, for local
//! development only — accepted as an administrator named by the token.

use crate::config::AuthConfig;
use crate::service::now;
use crate::verifier::Verifier;
use sdsim_contract::{Authenticate, Caller, Refusal};
use std::collections::HashMap;
use std::sync::Arc;

/// Longest token `auth.dev_open` accepts.
const DEV_TOKEN_MAX: usize = 256;

/// Authenticates bearer tokens: access tokens, then static tokens (or development mode).
pub struct Authenticator {
    jwt: Option<Arc<Verifier>>,
    by_digest: HashMap<[u8; 32], Caller>,
    dev_open: bool,
}

impl Authenticator {
    /// The authenticator `config` asks for; `jwt` is the auth service's verifier when this
    /// process has it (every role but a bare gateway).
    pub fn new(config: &AuthConfig, jwt: Option<Arc<Verifier>>) -> Authenticator {
        if config.dev_open {
            tracing::warn!("auth.dev_open = true: every bearer token is accepted as an admin; never use this outside local development");
        }
        let by_digest = config
            .tokens
            .iter()
            .map(|t| {
                (
                    digest(&t.token),
                    Caller::configured(&t.user, t.roles.clone()),
                )
            })
            .collect();
        Authenticator {
            jwt,
            by_digest,
            dev_open: config.dev_open,
        }
    }
}

fn digest(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl Authenticate for Authenticator {
    fn authenticate(&self, token: Option<&str>) -> Result<Caller, Refusal> {
        let token = token.filter(|t| !t.is_empty()).ok_or(Refusal::Missing)?;
        if let Some(jwt) = &self.jwt {
            if token.bytes().filter(|b| *b == b'.').count() == 2 {
                return jwt
                    .verify(token, now())
                    .map_err(|p| Refusal::Invalid(p.to_string().into()));
            }
        }
        if self.dev_open {
            if token.len() > DEV_TOKEN_MAX {
                return Err(Refusal::Invalid("the token is not valid".into()));
            }
            return Ok(Caller::configured(
                token,
                vec!["user".to_string(), "admin".to_string()],
            ));
        }
        self.by_digest
            .get(&digest(token))
            .cloned()
            .ok_or(Refusal::Invalid("the token is not valid".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StaticToken;
    use crate::token::{Claims, KeyRing, Keys, Problem, SigningKey};

    fn config(dev_open: bool) -> AuthConfig {
        AuthConfig {
            dev_open,
            tokens: vec![StaticToken {
                token: "svc-token-0123456789".into(),
                user: "gateway-1".into(),
                roles: vec!["service".into()],
            }],
            ..AuthConfig::default()
        }
    }

    /// A verifier, and an access token of user `u` signed with its key.
    fn verifier_and_token() -> (Arc<Verifier>, String) {
        let keys = Arc::new(Keys::default());
        let key = Arc::new(SigningKey::generate().unwrap());
        keys.replace(KeyRing::new(
            Some(Arc::clone(&key)),
            vec![(key.kid.clone(), key.public())],
        ));
        let now = now();
        let token = keys
            .current()
            .1
            .sign(&Claims {
                iss: "sdsim".into(),
                aud: "sdsim".into(),
                sub: "u".into(),
                sid: "s1".into(),
                email: "u@example.com".into(),
                roles: vec!["user".into()],
                perms: vec!["project:read".into()],
                iat: now,
                nbf: now,
                exp: now + 60,
                jti: "j".into(),
            })
            .unwrap();
        (Arc::new(Verifier::new(keys, "sdsim".into(), 4)), token)
    }

    #[test]
    fn access_tokens_static_tokens_and_refusals_give_one_caller_type() {
        let (verifier, token) = verifier_and_token();
        let auth = Authenticator::new(&config(false), Some(verifier));
        let user = auth.authenticate(Some(&token)).unwrap();
        assert_eq!(&*user.user_id, "u");
        assert_eq!(user.session.as_ref().map(|s| &*s.id), Some("s1"));
        assert!(user.may("project:read") && !user.is_service());
        let service = auth.authenticate(Some("svc-token-0123456789")).unwrap();
        assert!(service.is_service() && service.session.is_none());
        assert_eq!(auth.authenticate(None), Err(Refusal::Missing));
        assert_eq!(auth.authenticate(Some("")), Err(Refusal::Missing));
        assert_eq!(
            auth.authenticate(Some("wrong")),
            Err(Refusal::Invalid("the token is not valid".into()))
        );
        // One character of the signature changed.
        let at = token.rfind('.').unwrap() + 5;
        let flip = if &token[at..at + 1] == "A" { "B" } else { "A" };
        let tampered = format!("{}{flip}{}", &token[..at], &token[at + 1..]);
        assert_eq!(
            auth.authenticate(Some(&tampered)),
            Err(Refusal::Invalid(Problem::BadSignature.to_string().into()))
        );
    }

    #[test]
    fn development_mode_accepts_any_short_token_as_an_admin_but_still_checks_access_tokens() {
        let (verifier, token) = verifier_and_token();
        let auth = Authenticator::new(&config(true), Some(verifier));
        let dev = auth.authenticate(Some("alice")).unwrap();
        assert!(dev.is_admin() && &*dev.user_id == "alice");
        assert!(auth.authenticate(Some(&"x".repeat(300))).is_err());
        assert_eq!(&*auth.authenticate(Some(&token)).unwrap().user_id, "u");
    }
}
