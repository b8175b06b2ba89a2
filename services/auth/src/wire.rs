//! How the auth service's requests and responses travel in `sdsim.auth.v1` messages (both
//! directions: the gRPC server decodes what the remote client encodes).

use crate::contract::{
    PermissionCheck, PermissionVerdict, SessionCheck, TokenCheck, TokenValidity, UserContext,
    UserPermissions, UserRef,
};
use crate::service::{SessionState, User};
use crate::token::Problem;
use crate::{pb, Failure};
use pb::get_user_context_request::Who;
use sdsim_contract::{required, Caller, RequestWire, ResponseWire, ServiceHealth, Session};

const PROBLEMS: [(Problem, pb::TokenProblem); 7] = [
    (Problem::Malformed, pb::TokenProblem::Malformed),
    (Problem::BadSignature, pb::TokenProblem::BadSignature),
    (Problem::Expired, pb::TokenProblem::Expired),
    (Problem::NotYetValid, pb::TokenProblem::NotYetValid),
    (Problem::Revoked, pb::TokenProblem::Revoked),
    (Problem::UnknownKey, pb::TokenProblem::UnknownKey),
    (
        Problem::UnsupportedAlgorithm,
        pb::TokenProblem::UnsupportedAlgorithm,
    ),
];

fn problem_pb(p: Problem) -> pb::TokenProblem {
    PROBLEMS[p.index()].1
}

/// The problem of a contract value; an unknown one reads as malformed.
fn problem_of(value: i32) -> Problem {
    PROBLEMS
        .iter()
        .find(|(_, code)| *code as i32 == value)
        .map_or(Problem::Malformed, |(p, _)| *p)
}

impl RequestWire<pb::ValidateTokenRequest> for TokenCheck {
    type Error = Failure;
    fn into_message(self, _user_id: &str) -> pb::ValidateTokenRequest {
        pb::ValidateTokenRequest {
            token: self.token,
            calling_service: self.calling_service,
        }
    }
    fn from_message(m: pb::ValidateTokenRequest) -> Result<TokenCheck, Failure> {
        Ok(TokenCheck {
            token: m.token,
            calling_service: m.calling_service,
        })
    }
}

impl ResponseWire<pb::ValidateTokenResponse> for TokenValidity {
    type Error = Failure;
    fn into_message(self) -> pb::ValidateTokenResponse {
        match self {
            TokenValidity::Valid(c) => {
                let (session_id, email, expires_at) = match &c.session {
                    Some(s) => (s.id.to_string(), s.email.to_string(), s.expires_at),
                    None => Default::default(),
                };
                pb::ValidateTokenResponse {
                    valid: true,
                    is_admin: c.is_admin(),
                    user_id: c.user_id.to_string(),
                    email,
                    session_id,
                    permissions: c.perms.to_vec(),
                    roles: c.roles.to_vec(),
                    expires_at,
                    problem: pb::TokenProblem::Unspecified as i32,
                }
            }
            TokenValidity::Invalid(p) => pb::ValidateTokenResponse {
                valid: false,
                problem: problem_pb(p) as i32,
                ..Default::default()
            },
        }
    }
    fn from_message(m: pb::ValidateTokenResponse) -> Result<TokenValidity, Failure> {
        if !m.valid {
            return Ok(TokenValidity::Invalid(problem_of(m.problem)));
        }
        Ok(TokenValidity::Valid(Caller {
            user_id: m.user_id.into(),
            roles: m.roles.into(),
            perms: m.permissions.into(),
            session: Some(Session {
                id: m.session_id.into(),
                email: m.email.into(),
                expires_at: m.expires_at,
            }),
        }))
    }
}

impl RequestWire<pb::GetUserContextRequest> for UserRef {
    type Error = Failure;
    fn into_message(self, _user_id: &str) -> pb::GetUserContextRequest {
        pb::GetUserContextRequest {
            who: Some(match self {
                UserRef::Token(t) => Who::Token(t),
                UserRef::Id(id) => Who::UserId(id),
            }),
        }
    }
    fn from_message(m: pb::GetUserContextRequest) -> Result<UserRef, Failure> {
        match m.who {
            Some(Who::Token(t)) => Ok(UserRef::Token(t)),
            Some(Who::UserId(id)) => Ok(UserRef::Id(required(id, "user_id")?)),
            None => Err(Failure::Invalid {
                field: "who".into(),
                message: "set token or user_id".into(),
            }),
        }
    }
}

impl ResponseWire<pb::GetUserContextResponse> for UserContext {
    type Error = Failure;
    fn into_message(self) -> pb::GetUserContextResponse {
        let u = self.user;
        pb::GetUserContextResponse {
            permissions: u.permissions,
            user: Some(pb::User {
                is_admin: u.roles.iter().any(|r| r == "admin"),
                id: u.id,
                email: u.email,
                email_verified: u.email_verified,
                roles: u.roles,
                created_at: u.created_at,
                locked: u.locked,
            }),
            session_id: self.session_id,
        }
    }
    fn from_message(m: pb::GetUserContextResponse) -> Result<UserContext, Failure> {
        let u = m.user.ok_or_else(|| {
            Failure::Unavailable("the auth service answered without the user".into())
        })?;
        Ok(UserContext {
            user: User {
                id: u.id,
                email: u.email,
                email_verified: u.email_verified,
                roles: u.roles,
                permissions: m.permissions,
                created_at: u.created_at,
                locked: u.locked,
            },
            session_id: m.session_id,
        })
    }
}

impl RequestWire<pb::CheckPermissionRequest> for PermissionCheck {
    type Error = Failure;
    fn into_message(self, _user_id: &str) -> pb::CheckPermissionRequest {
        pb::CheckPermissionRequest {
            user_id: self.user_id,
            permission: self.permission,
            resource: self.resource,
        }
    }
    fn from_message(m: pb::CheckPermissionRequest) -> Result<PermissionCheck, Failure> {
        Ok(PermissionCheck {
            user_id: required(m.user_id, "user_id")?,
            permission: required(m.permission, "permission")?,
            resource: m.resource,
        })
    }
}

impl ResponseWire<pb::CheckPermissionResponse> for PermissionVerdict {
    type Error = Failure;
    fn into_message(self) -> pb::CheckPermissionResponse {
        pb::CheckPermissionResponse {
            allowed: self.allowed,
            reason: self.reason,
        }
    }
    fn from_message(m: pb::CheckPermissionResponse) -> Result<PermissionVerdict, Failure> {
        Ok(PermissionVerdict {
            allowed: m.allowed,
            reason: m.reason,
        })
    }
}

impl RequestWire<pb::ValidateSessionRequest> for SessionCheck {
    type Error = Failure;
    fn into_message(self, _user_id: &str) -> pb::ValidateSessionRequest {
        pb::ValidateSessionRequest {
            session_id: self.session_id,
            user_id: self.user_id.unwrap_or_default(),
        }
    }
    fn from_message(m: pb::ValidateSessionRequest) -> Result<SessionCheck, Failure> {
        Ok(SessionCheck {
            session_id: required(m.session_id, "session_id")?,
            user_id: (!m.user_id.is_empty()).then_some(m.user_id),
        })
    }
}

impl ResponseWire<pb::ValidateSessionResponse> for SessionState {
    type Error = Failure;
    fn into_message(self) -> pb::ValidateSessionResponse {
        pb::ValidateSessionResponse {
            active: self.active,
            expires_at: self.expires_at,
            reason: self.reason,
        }
    }
    fn from_message(m: pb::ValidateSessionResponse) -> Result<SessionState, Failure> {
        Ok(SessionState {
            active: m.active,
            expires_at: m.expires_at,
            reason: m.reason,
        })
    }
}

impl RequestWire<pb::GetUserPermissionsRequest> for String {
    type Error = Failure;
    fn into_message(self, _user_id: &str) -> pb::GetUserPermissionsRequest {
        pb::GetUserPermissionsRequest { user_id: self }
    }
    fn from_message(m: pb::GetUserPermissionsRequest) -> Result<String, Failure> {
        Ok(required(m.user_id, "user_id")?)
    }
}

impl ResponseWire<pb::GetUserPermissionsResponse> for UserPermissions {
    type Error = Failure;
    fn into_message(self) -> pb::GetUserPermissionsResponse {
        pb::GetUserPermissionsResponse {
            roles: self
                .roles
                .into_iter()
                .map(|(name, permissions)| pb::Role { name, permissions })
                .collect(),
            permissions: self.permissions,
        }
    }
    fn from_message(m: pb::GetUserPermissionsResponse) -> Result<UserPermissions, Failure> {
        Ok(UserPermissions {
            roles: m
                .roles
                .into_iter()
                .map(|r| (r.name, r.permissions))
                .collect(),
            permissions: m.permissions,
        })
    }
}

impl RequestWire<pb::HealthCheckRequest> for () {
    type Error = Failure;
    fn into_message(self, _user_id: &str) -> pb::HealthCheckRequest {
        pb::HealthCheckRequest {}
    }
    fn from_message(_: pb::HealthCheckRequest) -> Result<(), Failure> {
        Ok(())
    }
}

impl ResponseWire<pb::HealthCheckResponse> for ServiceHealth {
    type Error = Failure;
    fn into_message(self) -> pb::HealthCheckResponse {
        pb::HealthCheckResponse {
            status: self.status,
            dependencies: self.dependencies,
            version: self.version,
        }
    }
    fn from_message(m: pb::HealthCheckResponse) -> Result<ServiceHealth, Failure> {
        Ok(ServiceHealth {
            status: m.status,
            dependencies: m.dependencies,
            version: m.version,
        })
    }
}
