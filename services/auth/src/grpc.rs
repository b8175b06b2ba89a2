//! `sdsim.auth.v1.AuthService` over the sdsim gRPC server.

use crate::pb;
use crate::service::{now, Auth, Failure};
use crate::token::Problem;
use sdsim_net::grpc::{Call, Code, Services, Status};
use std::sync::Arc;

const SERVICE: &str = "sdsim.auth.v1.AuthService";

/// The gRPC status of a failure.
pub fn status_of(f: &Failure) -> Status {
    let code = match f {
        Failure::Invalid { .. } => Code::InvalidArgument,
        Failure::Unauthenticated(_) => Code::Unauthenticated,
        Failure::Forbidden(_) => Code::PermissionDenied,
        Failure::Locked { .. } => Code::ResourceExhausted,
        Failure::Conflict(_) => Code::AlreadyExists,
        Failure::NotFound(_) => Code::NotFound,
        Failure::Unavailable(_) => Code::Unavailable,
    };
    Status::new(code, f.to_string())
}

fn problem_code(p: Problem) -> pb::TokenProblem {
    match p {
        Problem::Malformed => pb::TokenProblem::Malformed,
        Problem::BadSignature => pb::TokenProblem::BadSignature,
        Problem::Expired => pb::TokenProblem::Expired,
        Problem::NotYetValid => pb::TokenProblem::NotYetValid,
        Problem::Revoked => pb::TokenProblem::Revoked,
        Problem::UnknownKey => pb::TokenProblem::UnknownKey,
        Problem::UnsupportedAlgorithm => pb::TokenProblem::UnsupportedAlgorithm,
    }
}

fn required<'a>(value: &'a str, field: &str) -> Result<&'a str, Status> {
    if value.is_empty() {
        Err(Status::new(
            Code::InvalidArgument,
            format!("{field}: is required"),
        ))
    } else {
        Ok(value)
    }
}

fn user_pb(u: crate::service::User) -> pb::User {
    pb::User {
        is_admin: u.roles.iter().any(|r| r == "admin"),
        id: u.id,
        email: u.email,
        email_verified: u.email_verified,
        roles: u.roles,
        created_at: u.created_at,
        locked: u.locked,
    }
}

/// Registers every AuthService method on `services`.
pub fn register(services: &mut Services, auth: &Arc<Auth>) {
    let path = |m: &str| format!("/{SERVICE}/{m}");

    let a = Arc::clone(auth);
    services.unary(
        &path("ValidateToken"),
        move |_call: Call, req: pb::ValidateTokenRequest| {
            let result = a.verifier().verify(&req.token, now());
            async move {
                Ok::<_, Status>(match result {
                    Ok(v) => pb::ValidateTokenResponse {
                        valid: true,
                        user_id: v.user_id.to_string(),
                        email: v.email.to_string(),
                        is_admin: v.has_role("admin"),
                        session_id: v.session_id.to_string(),
                        permissions: v.perms.to_vec(),
                        roles: v.roles.to_vec(),
                        expires_at: v.expires_at,
                        problem: pb::TokenProblem::Unspecified as i32,
                    },
                    Err(p) => pb::ValidateTokenResponse {
                        valid: false,
                        problem: problem_code(p) as i32,
                        ..Default::default()
                    },
                })
            }
        },
    );

    let a = Arc::clone(auth);
    services.unary(
        &path("GetUserContext"),
        move |_call: Call, req: pb::GetUserContextRequest| {
            let a = Arc::clone(&a);
            async move {
                use pb::get_user_context_request::Who;
                let (user, session) = match req.who {
                    Some(Who::Token(t)) => match a.verifier().verify(&t, now()) {
                        Ok(v) => (v.user_id.to_string(), v.session_id.to_string()),
                        Err(p) => {
                            return Err(Status::new(Code::Unauthenticated, format!("token: {p}")))
                        }
                    },
                    Some(Who::UserId(id)) => (required(&id, "user_id")?.to_string(), String::new()),
                    None => {
                        return Err(Status::new(
                            Code::InvalidArgument,
                            "who: set token or user_id",
                        ))
                    }
                };
                let u = a.user(&user).await.map_err(|f| status_of(&f))?;
                Ok(pb::GetUserContextResponse {
                    permissions: u.permissions.clone(),
                    user: Some(user_pb(u)),
                    session_id: session,
                })
            }
        },
    );

    let a = Arc::clone(auth);
    services.unary(
        &path("CheckPermission"),
        move |_call: Call, req: pb::CheckPermissionRequest| {
            let a = Arc::clone(&a);
            async move {
                let user = required(&req.user_id, "user_id")?;
                let perm = required(&req.permission, "permission")?;
                let allowed = match a.check_permission(user, perm).await {
                    Ok(allowed) => allowed,
                    Err(f) => return Err(status_of(&f)),
                };
                Ok(pb::CheckPermissionResponse {
                    allowed,
                    reason: if allowed {
                        String::new()
                    } else {
                        format!("no role of user {user} grants {perm}")
                    },
                })
            }
        },
    );

    let a = Arc::clone(auth);
    services.unary(
        &path("ValidateSession"),
        move |_call: Call, req: pb::ValidateSessionRequest| {
            let a = Arc::clone(&a);
            async move {
                let sid = required(&req.session_id, "session_id")?;
                let user = (!req.user_id.is_empty()).then_some(req.user_id.as_str());
                let s = a.session(sid, user).await.map_err(|f| status_of(&f))?;
                Ok(pb::ValidateSessionResponse {
                    active: s.active,
                    expires_at: s.expires_at,
                    reason: s.reason,
                })
            }
        },
    );

    let a = Arc::clone(auth);
    services.unary(
        &path("GetUserPermissions"),
        move |_call: Call, req: pb::GetUserPermissionsRequest| {
            let a = Arc::clone(&a);
            async move {
                let user = required(&req.user_id, "user_id")?;
                a.user(user).await.map_err(|f| status_of(&f))?;
                let roles = a
                    .roles_with_permissions(user)
                    .await
                    .map_err(|f| status_of(&f))?;
                let all = crate::service::union_of(&roles);
                Ok(pb::GetUserPermissionsResponse {
                    roles: roles
                        .into_iter()
                        .map(|(name, permissions)| pb::Role { name, permissions })
                        .collect(),
                    permissions: all,
                })
            }
        },
    );

    let a = Arc::clone(auth);
    services.unary(
        &path("HealthCheck"),
        move |_call: Call, _req: pb::HealthCheckRequest| {
            let a = Arc::clone(&a);
            async move {
                let up = a.store().ping().await.is_ok();
                let mut dependencies = std::collections::HashMap::new();
                dependencies.insert(
                    "storage".to_string(),
                    if up { "up" } else { "down" }.to_string(),
                );
                Ok::<_, Status>(pb::HealthCheckResponse {
                    status: if up { "SERVING" } else { "NOT_SERVING" }.into(),
                    dependencies,
                    version: env!("CARGO_PKG_VERSION").into(),
                })
            }
        },
    );
}
