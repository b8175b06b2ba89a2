//! `sdsim.auth.v1.AuthService`: the auth service's contract for other services, and its
//! implementation in this process by [`Auth`].
//!
//! [`AuthContract::register`] serves any implementation over gRPC and [`RemoteAuth`]
//! implements the trait over gRPC. Two groups of methods: the checks other services make and
//! the public account routes (register, login, refresh, ...), which authenticate no caller;
//! and the routes that act on the caller's own account (logout, me, roles), which take the
//! [`Caller`] — a user's token, or a gateway's service token acting for `user_id`. How each
//! request and response travels is in `wire.rs` and `wire_account.rs`.

use crate::service::{now, union_of, Auth, SessionState, Tokens, User};
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
        /// Creates an account with the `user` role and queues its verification mail.
        open fn create_account(NewAccount) -> User
            = Register(pb::RegisterRequest) -> pb::RegisterResponse;
        /// Checks the password (with lockout), opens a session and issues its tokens.
        open fn sign_in(SignIn) -> Tokens
            = Login(pb::LoginRequest) -> pb::LoginResponse;
        /// Exchanges a refresh token (spent) for new tokens of its session.
        open fn refresh_session(String) -> Tokens
            = Refresh(pb::RefreshRequest) -> pb::RefreshResponse;
        /// Ends a session of the caller (empty: the session of the caller's own token).
        caller fn sign_out(String) -> ()
            = Logout(pb::LogoutRequest) -> pb::LogoutResponse;
        /// The caller's account.
        caller fn get_me(()) -> User
            = GetMe(pb::GetMeRequest) -> pb::GetMeResponse;
        /// Marks an email verified with the token mailed to it.
        open fn confirm_email(String) -> User
            = VerifyEmail(pb::VerifyEmailRequest) -> pb::VerifyEmailResponse;
        /// Mails a reset token to an email when it has an account (the answer never says).
        open fn request_password_reset(String) -> ()
            = RequestPasswordReset(pb::RequestPasswordResetRequest)
                -> pb::RequestPasswordResetResponse;
        /// Sets a new password with a mailed reset token.
        open fn confirm_password_reset(PasswordReset) -> ()
            = ConfirmPasswordReset(pb::ConfirmPasswordResetRequest)
                -> pb::ConfirmPasswordResetResponse;
        /// Replaces a user's roles (the caller needs `admin:users`).
        caller fn set_user_roles(RoleChange) -> User
            = SetUserRoles(pb::SetUserRolesRequest) -> pb::SetUserRolesResponse;
        /// The public keys that verify access tokens.
        open fn get_signing_keys(()) -> VerificationKeys
            = GetSigningKeys(pb::GetSigningKeysRequest) -> pb::GetSigningKeysResponse;
    }
}

/// A new account's credentials.
#[derive(Debug, Clone, Default)]
pub struct NewAccount {
    /// The email (normalised by the service).
    pub email: String,
    /// The password, in clear (hashed by the service).
    pub password: String,
}

/// A login attempt.
#[derive(Debug, Clone, Default)]
pub struct SignIn {
    /// The account's email.
    pub email: String,
    /// The password, in clear.
    pub password: String,
    /// The address the user connected from, recorded with the session.
    pub client_ip: String,
}

/// A new password with the reset token mailed for it.
#[derive(Debug, Clone, Default)]
pub struct PasswordReset {
    /// The mailed token.
    pub token: String,
    /// The new password.
    pub password: String,
}

/// New roles for a user.
#[derive(Debug, Clone, Default)]
pub struct RoleChange {
    /// The user whose roles are replaced.
    pub user_id: String,
    /// Its roles from now on.
    pub roles: Vec<String>,
}

/// The public keys that verify access tokens, and when to ask again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationKeys {
    /// (`kid`, raw Ed25519 public key), oldest first.
    pub keys: Vec<(String, Vec<u8>)>,
    /// Unix seconds by which a holder should fetch them again.
    pub refresh_by: i64,
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

    fn create_account<'a>(&'a self, a: NewAccount) -> Pending<'a, User, Failure> {
        Box::pin(async move { self.register(&a.email, &a.password).await })
    }

    fn sign_in<'a>(&'a self, s: SignIn) -> Pending<'a, Tokens, Failure> {
        Box::pin(async move { self.login(&s.email, &s.password, &s.client_ip).await })
    }

    fn refresh_session<'a>(&'a self, token: String) -> Pending<'a, Tokens, Failure> {
        Box::pin(async move { self.refresh(&token).await })
    }

    fn sign_out<'a>(&'a self, who: &'a Caller, session: String) -> Pending<'a, (), Failure> {
        Box::pin(async move {
            let own = who.session.as_ref().map(|s| s.id.to_string());
            let session = match (session.is_empty(), own) {
                (true, Some(own)) => own,
                (true, None) => {
                    return Err(Failure::Invalid {
                        field: "session_id".into(),
                        message: "is required when acting for a user".into(),
                    })
                }
                (false, Some(own)) if own == session => own,
                // A service acting for the user, or a token naming another session: the
                // session must be the user's.
                (false, _) => {
                    let state = self.session(&session, Some(&who.user_id)).await?;
                    if state.reason == crate::service::OTHER_USERS_SESSION {
                        return Err(Failure::Forbidden(format!(
                            "session {session} is not a session of user {}",
                            who.user_id
                        )));
                    }
                    session
                }
            };
            self.end_session(&who.user_id, &session).await
        })
    }

    fn get_me<'a>(&'a self, who: &'a Caller, (): ()) -> Pending<'a, User, Failure> {
        Box::pin(async move { self.user(&who.user_id).await })
    }

    fn confirm_email<'a>(&'a self, token: String) -> Pending<'a, User, Failure> {
        Box::pin(async move { self.verify_email(&token).await })
    }

    fn request_password_reset<'a>(&'a self, email: String) -> Pending<'a, (), Failure> {
        Box::pin(async move { self.request_reset(&email).await })
    }

    fn confirm_password_reset<'a>(&'a self, r: PasswordReset) -> Pending<'a, (), Failure> {
        Box::pin(async move { self.reset_password(&r.token, &r.password).await })
    }

    fn set_user_roles<'a>(&'a self, who: &'a Caller, c: RoleChange) -> Pending<'a, User, Failure> {
        Box::pin(async move { self.set_roles(who, &c.user_id, &c.roles).await })
    }

    fn get_signing_keys<'a>(&'a self, (): ()) -> Pending<'a, VerificationKeys, Failure> {
        let keys = self.key_ring().public_keys();
        let refresh_by = now() + self.config().key_reload.as_secs() as i64;
        Box::pin(async move { Ok(VerificationKeys { keys, refresh_by }) })
    }
}
