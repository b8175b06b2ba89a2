//! The auth service's HTTP API (the paths in the README), mounted on the gateway and on
//! `auth.http_listen`.

use crate::service::{now, Auth, Failure};
use crate::token::Problem;
use crate::verifier::Verified;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CACHE_CONTROL, RETRY_AFTER};
use http::{HeaderValue, Method, StatusCode};
use sdsim_core::metrics::{Key, LabelValue, Metrics};
use sdsim_core::runtime::Shard;
use sdsim_net::http::router::Router;
use sdsim_net::http::types::{
    error, json, json_body as body, with_body, ClientAddr, PathParams, Request, Response,
};
use serde::Deserialize;
use std::sync::Arc;

/// HTTP status of a failure.
pub fn status_of(f: &Failure) -> (StatusCode, &'static str) {
    match f {
        Failure::Invalid { .. } => (StatusCode::BAD_REQUEST, "invalid_argument"),
        Failure::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
        Failure::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
        Failure::Locked { .. } => (StatusCode::LOCKED, "account_locked"),
        Failure::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
        Failure::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        Failure::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    }
}

/// The response for a failure.
pub fn failure(f: &Failure) -> Response {
    let (status, code) = status_of(f);
    let mut resp = error(status, code, &f.to_string());
    let retry = match f {
        Failure::Locked { retry_after_s } => Some(*retry_after_s),
        Failure::Unavailable(_) => Some(1),
        _ => None,
    };
    if let Some(s) = retry {
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(s.max(1)));
    }
    resp
}

/// Metric: register, login and refresh calls by outcome (`ok` or the error code).
pub const REQUESTS: &str = "sdsim_auth_requests_total";

/// Counts one call of `operation` on this shard's metrics.
fn count<T>(operation: &'static str, r: &Result<T, Failure>) {
    let outcome = match r {
        Ok(_) => "ok",
        Err(f) => status_of(f).1,
    };
    if let Some(metrics) = Shard::try_current().and_then(|s| s.get::<Metrics>()) {
        metrics.inc(
            Key::with2(
                REQUESTS,
                ("operation", LabelValue::Str(operation)),
                ("outcome", LabelValue::Str(outcome)),
            ),
            1,
        );
    }
}

fn respond<T: serde::Serialize>(status: StatusCode, r: Result<T, Failure>) -> Response {
    match r {
        Ok(v) => json(status, &v),
        Err(f) => failure(&f),
    }
}

/// The request's bearer token.
pub fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Verifies the request's bearer token (the shard-local fast path).
pub fn authenticate(auth: &Auth, req: &Request) -> Result<Verified, Box<Response>> {
    authenticate_with(auth.verifier(), req)
}

/// [`authenticate`] with a verifier (what other services in the process use).
pub fn authenticate_with(
    verifier: &crate::verifier::Verifier,
    req: &Request,
) -> Result<Verified, Box<Response>> {
    let token = bearer(req).ok_or_else(|| {
        Box::new(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a bearer token is required (Authorization: Bearer ...)",
        ))
    })?;
    verifier.verify(token, now()).map_err(|p: Problem| {
        Box::new(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            &p.to_string(),
        ))
    })
}

// The request bodies are public so that the fuzz targets decode them exactly as the handlers do.

/// The body of `POST /api/auth/register` and `POST /api/auth/login`.
#[derive(Debug, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials<'a> {
    /// The account's email.
    #[serde(borrow)]
    pub email: std::borrow::Cow<'a, str>,
    /// The password, in clear (hashed by the service).
    #[serde(borrow)]
    pub password: std::borrow::Cow<'a, str>,
}

/// The body of `POST /api/auth/refresh`.
#[derive(Debug, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshBody {
    /// The refresh token of the session.
    pub refresh_token: String,
}

/// The body of `POST /api/auth/verify-email`.
#[derive(Debug, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    /// The token mailed to the account.
    pub token: String,
}

/// The body of `POST /api/auth/password-reset`.
#[derive(Debug, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct EmailBody {
    /// The account's email.
    pub email: String,
}

/// The body of `POST /api/auth/password-reset/confirm`.
#[derive(Debug, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ResetBody {
    /// The token mailed to the account.
    pub token: String,
    /// The new password.
    pub password: String,
}

/// The body of `PUT /api/auth/users/{id}/roles`.
#[derive(Debug, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RolesBody {
    /// The roles the account gets (replacing its current ones).
    pub roles: Vec<String>,
}

#[derive(serde::Serialize)]
struct UserOut<T> {
    user: T,
}

#[derive(serde::Serialize)]
struct Me {
    user: crate::service::User,
    session_id: String,
    expires_at: i64,
}

macro_rules! try_or {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(resp) => return *resp,
        }
    };
}

fn client(req: &Request) -> String {
    req.extensions()
        .get::<ClientAddr>()
        .map(|a| a.0.ip().to_string())
        .unwrap_or_default()
}

/// Mounts the routes on `router`.
pub fn register(router: &mut Router, auth: &Arc<Auth>) {
    let a = Arc::clone(auth);
    add(router, Method::POST, "/api/auth/register", move |req| {
        let a = Arc::clone(&a);
        async move {
            let c: Credentials = try_or!(body(&req, r#"{"email": string, "password": string}"#));
            let r = a.register(&c.email, &c.password).await;
            count("register", &r);
            respond(StatusCode::CREATED, r.map(|user| UserOut { user }))
        }
    });
    let a = Arc::clone(auth);
    add(router, Method::POST, "/api/auth/login", move |req| {
        let a = Arc::clone(&a);
        async move {
            let c: Credentials = try_or!(body(&req, r#"{"email": string, "password": string}"#));
            let r = a.login(&c.email, &c.password, &client(&req)).await;
            count("login", &r);
            respond(StatusCode::OK, r)
        }
    });
    let a = Arc::clone(auth);
    add(router, Method::POST, "/api/auth/refresh", move |req| {
        let a = Arc::clone(&a);
        async move {
            let b: RefreshBody = try_or!(body(&req, r#"{"refresh_token": string}"#));
            let r = a.refresh(&b.refresh_token).await;
            count("refresh", &r);
            respond(StatusCode::OK, r)
        }
    });
    let a = Arc::clone(auth);
    add(router, Method::POST, "/api/auth/logout", move |req| {
        let a = Arc::clone(&a);
        async move {
            let who = try_or!(authenticate(&a, &req));
            match a.logout(&who).await {
                Ok(()) => with_body(StatusCode::NO_CONTENT, "application/json", Bytes::new()),
                Err(f) => failure(&f),
            }
        }
    });
    let a = Arc::clone(auth);
    add(router, Method::GET, "/api/auth/me", move |req| {
        let a = Arc::clone(&a);
        async move {
            let who = try_or!(authenticate(&a, &req));
            let r = a.user(&who.user_id).await.map(|user| Me {
                user,
                session_id: who.session_id.to_string(),
                expires_at: who.expires_at,
            });
            respond(StatusCode::OK, r)
        }
    });
    let a = Arc::clone(auth);
    add(router, Method::POST, "/api/auth/verify-email", move |req| {
        let a = Arc::clone(&a);
        async move {
            let b: TokenBody = try_or!(body(&req, r#"{"token": string}"#));
            let r = a.verify_email(&b.token).await.map(|user| UserOut { user });
            respond(StatusCode::OK, r)
        }
    });
    let a = Arc::clone(auth);
    add(
        router,
        Method::POST,
        "/api/auth/password-reset",
        move |req| {
            let a = Arc::clone(&a);
            async move {
                let b: EmailBody = try_or!(body(&req, r#"{"email": string}"#));
                match a.request_reset(&b.email).await {
                    // The same answer whether or not the account exists.
                    Ok(()) => with_body(StatusCode::ACCEPTED, "application/json", Bytes::new()),
                    Err(f) => failure(&f),
                }
            }
        },
    );
    let a = Arc::clone(auth);
    add(
        router,
        Method::POST,
        "/api/auth/password-reset/confirm",
        move |req| {
            let a = Arc::clone(&a);
            async move {
                let b: ResetBody = try_or!(body(&req, r#"{"token": string, "password": string}"#));
                match a.reset_password(&b.token, &b.password).await {
                    Ok(()) => with_body(StatusCode::NO_CONTENT, "application/json", Bytes::new()),
                    Err(f) => failure(&f),
                }
            }
        },
    );
    let a = Arc::clone(auth);
    add(
        router,
        Method::PUT,
        "/api/auth/users/{id}/roles",
        move |req| {
            let a = Arc::clone(&a);
            async move {
                let who = try_or!(authenticate(&a, &req));
                let b: RolesBody = try_or!(body(&req, r#"{"roles": [string]}"#));
                let id = req
                    .extensions()
                    .get::<PathParams>()
                    .and_then(|p| p.get("id"))
                    .unwrap_or_default()
                    .to_string();
                let r = a.set_roles(&who, &id, &b.roles).await;
                respond(StatusCode::OK, r.map(|user| UserOut { user }))
            }
        },
    );
    let a = Arc::clone(auth);
    add(router, Method::GET, "/.well-known/jwks.json", move |_req| {
        let a = Arc::clone(&a);
        async move {
            let mut resp = json(StatusCode::OK, &a.key_ring().jwks());
            resp.headers_mut().insert(
                CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=60"),
            );
            resp
        }
    });
}

fn add<F, Fut>(router: &mut Router, method: Method, path: &str, handler: F)
where
    F: Fn(Request) -> Fut + 'static,
    Fut: std::future::Future<Output = Response> + 'static,
{
    router
        .route(method, path, handler)
        .expect("auth routes are valid and distinct");
}
