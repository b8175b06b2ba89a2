//! Who is calling: the one identity that HTTP, WebSocket and gRPC authenticate to, and the hook
//! that produces it.
//!
//! [`Authenticate`] is a per-call hook: it reads the credentials of a request (a bearer token,
//! from HTTP headers or gRPC metadata alike — both are an [`http::HeaderMap`]) and answers a
//! [`Caller`] or a [`Refusal`]. It must answer from shard-local or immutable state, without I/O:
//! it runs on every request.

use http::header::AUTHORIZATION;
use http::{HeaderMap, StatusCode};
use sdsim_net::http::types::{error, Request, Response};
use std::borrow::Cow;
use std::sync::Arc;

/// The session an access token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The session id.
    pub id: Arc<str>,
    /// The account's email.
    pub email: Arc<str>,
    /// When the token expires (Unix seconds).
    pub expires_at: i64,
}

/// Who is calling: a user (an access token, with its session), or a configured identity (a
/// static token: an operator, or a service such as a gateway in another process).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user id (for a static token, the name it is configured with).
    pub user_id: Arc<str>,
    /// Roles, e.g. `user`, `admin`, `service`.
    pub roles: Arc<[String]>,
    /// Permissions the token grants (`project:read`, ...); empty for static tokens, whose
    /// roles decide.
    pub perms: Arc<[String]>,
    /// The session, for a user's access token.
    pub session: Option<Session>,
}

/// A permission the caller lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the token lacks the {0} permission")]
pub struct MissingPermission(pub &'static str);

impl Caller {
    /// A configured identity (no session) with `roles` and no permissions of its own.
    pub fn configured(user_id: &str, roles: Vec<String>) -> Caller {
        Caller {
            user_id: user_id.into(),
            roles: roles.into(),
            perms: Arc::from([]),
            session: None,
        }
    }

    /// The user a service acts for: the id its request names, with the permissions (and the
    /// administrator flag) it forwards.
    pub fn acting_for(user_id: &str, is_admin: bool, perms: Vec<String>) -> Caller {
        let roles = if is_admin {
            vec!["admin".to_string()]
        } else {
            Vec::new()
        };
        Caller {
            user_id: user_id.into(),
            roles: roles.into(),
            perms: perms.into(),
            session: None,
        }
    }

    /// Whether the caller has `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// Whether the caller is an administrator.
    pub fn is_admin(&self) -> bool {
        self.has_role("admin")
    }

    /// Whether the caller is a service (a static token with the `service` role), which acts
    /// for the user a request names rather than for itself.
    pub fn is_service(&self) -> bool {
        self.session.is_none() && self.has_role("service")
    }

    /// Whether the token itself lists `perm` (no administrator shortcut).
    pub fn has_perm(&self, perm: &str) -> bool {
        self.perms.iter().any(|p| p == perm)
    }

    /// Whether the caller may use `perm`: administrators may use every permission.
    pub fn may(&self, perm: &str) -> bool {
        self.is_admin() || self.has_perm(perm)
    }

    /// An error unless the caller [may](Caller::may) use `perm`.
    pub fn require(&self, perm: &'static str) -> Result<(), MissingPermission> {
        if self.may(perm) {
            Ok(())
        } else {
            Err(MissingPermission(perm))
        }
    }
}

/// Why credentials were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No bearer token was sent.
    #[error("a bearer token is required")]
    Missing,
    /// The token is not accepted; the text says why (expired, bad signature, unknown, ...).
    #[error("{0}")]
    Invalid(Cow<'static, str>),
}

/// Authenticates calls: the one hook of every protocol. Implementations answer from
/// shard-local or immutable state, without I/O.
pub trait Authenticate: Send + Sync {
    /// The caller `token` authenticates; `None` or an empty token is [`Refusal::Missing`].
    fn authenticate(&self, token: Option<&str>) -> Result<Caller, Refusal>;

    /// The caller of a request or call, from its `authorization: Bearer` header.
    fn authenticate_headers(&self, headers: &HeaderMap) -> Result<Caller, Refusal> {
        self.authenticate(bearer(headers))
    }
}

/// The HTTP answer to refused credentials: 401 `unauthorized`, saying why.
pub fn unauthorized(refusal: &Refusal) -> Response {
    let why = match refusal {
        Refusal::Missing => "a bearer token is required (Authorization: Bearer ...)",
        Refusal::Invalid(why) => why,
    };
    error(StatusCode::UNAUTHORIZED, "unauthorized", why)
}

/// The caller of an HTTP request, or the 401 answer.
pub fn http_caller(auth: &dyn Authenticate, req: &Request) -> Result<Caller, Box<Response>> {
    auth.authenticate_headers(req.headers())
        .map_err(|r| Box::new(unauthorized(&r)))
}

/// The bearer token of an `authorization` header (HTTP headers and gRPC metadata alike).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        for (value, token) in [
            ("Bearer abc", Some("abc")),
            ("bearer  abc ", Some("abc")),
            ("Basic abc", None),
            ("Bearer ", None),
            ("Bearer", None),
        ] {
            headers.insert(AUTHORIZATION, HeaderValue::from_static(value));
            assert_eq!(bearer(&headers), token, "{value:?}");
        }
    }

    #[test]
    fn administrators_may_everything_services_act_for_users() {
        let admin = Caller::configured("ops", vec!["admin".into()]);
        assert!(admin.may("project:write") && !admin.has_perm("project:write"));
        let service = Caller::configured("gateway-1", vec!["service".into()]);
        assert!(service.is_service());
        assert_eq!(
            service.require("project:read"),
            Err(MissingPermission("project:read"))
        );
        let user = Caller::acting_for("u1", false, vec!["project:read".into()]);
        assert!(user.may("project:read") && !user.may("project:write") && !user.is_service());
        assert!(Caller::acting_for("u1", true, Vec::new()).is_admin());
    }
}
