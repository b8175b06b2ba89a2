//! `sdsim.auth.v1.AuthService`: the auth service's contract for other services, and its
//! implementation in this process by [`Auth`].
//!
//! [`AuthContract::register`] serves any implementation over gRPC and [`RemoteAuth`]
//! implements the trait over gRPC. None of these methods authenticates its caller (they are
//! the checks other services make); how each request and response travels is in `wire.rs`.

use crate::service::{now, union_of, Auth, SessionState, User};
use crate::token::Problem;
use crate::{pb, Failure};
use sdsim_contract::{Caller, Pending, ServiceHealth};

sdsim_contract::contract! {
    /// The auth service as other services use it: token validation, user context, permission
    /// and session checks.
    pub trait AuthService {
        service AuthContract = "sdsim.auth.v1.AuthService";
        error Failure;
        remote RemoteAuth;
        /// Validates an access token; an invalid token is an answer, not an error.
        open fn validate_token(TokenCheck) -> TokenValidity
            = ValidateToken(pb::ValidateTokenRequest) -> pb::ValidateTokenResponse;
        /// The user behind a token or an id, with roles and permissions.
        open fn get_user_context(UserRef) -> UserContext
            = GetUserContext(pb::GetUserContextRequest) -> pb::GetUserContextResponse;
        /// Whether a user holds a permission.
        open fn check_permission(PermissionCheck) -> PermissionVerdict
            = CheckPermission(pb::CheckPermissionRequest) -> pb::CheckPermissionResponse;
        /// Whether a session is still active.
        open fn validate_session(SessionCheck) -> SessionState
            = ValidateSession(pb::ValidateSessionRequest) -> pb::ValidateSessionResponse;
        /// A user's roles (by user id) and the permissions they grant.
        open fn get_user_permissions(String) -> UserPermissions
            = GetUserPermissions(pb::GetUserPermissionsRequest) -> pb::GetUserPermissionsResponse;
        /// Serving while storage answers.
        open fn health_check(()) -> ServiceHealth
            = HealthCheck(pb::HealthCheckRequest) -> pb::HealthCheckResponse;
    }
}

/// A token to validate.
#[derive(Debug, Clone, Default)]
pub struct TokenCheck {
    /// The access token.
    pub token: String,
    /// Who asks (for logs), e.g. `project-service`.
    pub calling_service: String,
}

/// Whether a token is valid: its caller, or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenValidity {
    /// Valid: who it authenticates, with the session.
    Valid(Caller),
    /// Not valid, and why.
    Invalid(Problem),
}

/// A user named by an access token or by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRef {
    /// The user of this access token (and its session).
    Token(String),
    /// The user with this id.
    Id(String),
}

/// A user with the session a token named (empty when asked by id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserContext {
    /// The user, with roles and permissions.
    pub user: User,
    /// The token's session.
    pub session_id: String,
}

/// A permission to check.
#[derive(Debug, Clone, Default)]
pub struct PermissionCheck {
    /// The user.
    pub user_id: String,
    /// e.g. `project:write`.
    pub permission: String,
    /// The resource, for the owning service's own checks (not used here).
    pub resource: String,
}

/// The answer to a permission check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionVerdict {
    /// Whether the user holds the permission.
    pub allowed: bool,
    /// Why not, when denied.
    pub reason: String,
}

/// A session to check.
#[derive(Debug, Clone, Default)]
pub struct SessionCheck {
    /// The session.
    pub session_id: String,
    /// When set, the session must belong to this user.
    pub user_id: Option<String>,
}

/// A user's roles and their permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPermissions {
    /// Each role with the permissions it grants.
    pub roles: Vec<(String, Vec<String>)>,
    /// The union of the roles' permissions, sorted.
    pub permissions: Vec<String>,
}

impl AuthService for Auth {
    fn validate_token<'a>(&'a self, check: TokenCheck) -> Pending<'a, TokenValidity, Failure> {
        let validity = match self.verifier().verify(&check.token, now()) {
            Ok(caller) => TokenValidity::Valid(caller),
            Err(problem) => TokenValidity::Invalid(problem),
        };
        Box::pin(async move { Ok(validity) })
    }

    fn get_user_context<'a>(&'a self, who: UserRef) -> Pending<'a, UserContext, Failure> {
        Box::pin(async move {
            let (user, session_id) = match who {
                UserRef::Token(t) => match self.verifier().verify(&t, now()) {
                    Ok(c) => (
                        c.user_id.to_string(),
                        c.session.map(|s| s.id.to_string()).unwrap_or_default(),
                    ),
                    Err(p) => return Err(Failure::Unauthenticated(format!("token: {p}"))),
                },
                UserRef::Id(id) => (id, String::new()),
            };
            Ok(UserContext {
                user: self.user(&user).await?,
                session_id,
            })
        })
    }

    fn check_permission<'a>(
        &'a self,
        c: PermissionCheck,
    ) -> Pending<'a, PermissionVerdict, Failure> {
        Box::pin(async move {
            let allowed = self.holds_permission(&c.user_id, &c.permission).await?;
            Ok(PermissionVerdict {
                allowed,
                reason: if allowed {
                    String::new()
                } else {
                    format!("no role of user {} grants {}", c.user_id, c.permission)
                },
            })
        })
    }

    fn validate_session<'a>(&'a self, c: SessionCheck) -> Pending<'a, SessionState, Failure> {
        Box::pin(async move { self.session(&c.session_id, c.user_id.as_deref()).await })
    }

    fn get_user_permissions<'a>(&'a self, user: String) -> Pending<'a, UserPermissions, Failure> {
        Box::pin(async move {
            self.user(&user).await?;
            let roles = self.roles_with_permissions(&user).await?;
            let permissions = union_of(&roles);
            Ok(UserPermissions { roles, permissions })
        })
    }

    fn health_check<'a>(&'a self, (): ()) -> Pending<'a, ServiceHealth, Failure> {
        Box::pin(async move {
            let up = self.store().ping().await.is_ok();
            Ok(ServiceHealth::of_storage(up, env!("CARGO_PKG_VERSION")))
        })
    }
}
