//! The auth service's HTTP API (the paths in the README), mounted on the gateway and on
//! `auth.http_listen`.
//!
//! Errors are `{"error": {"code", "message"}}` with the status of the service's error table
//! ([`crate::error`]). Routes that act on the caller's account (`/me`, `logout`, roles) take
//! the caller from the one authentication layer ([`crate::authn`]) and need a user's access
//! token: a static token has no account or session.

use crate::contract::{AuthService, NewAccount, PasswordReset, RoleChange, SignIn};
use crate::service::Failure;
use crate::token::KeyRing;
use http::header::CACHE_CONTROL;
use http::{HeaderValue, Method, StatusCode};
use sdsim_contract::{empty, http_caller, response as failure, Authenticate, Caller, ServiceError};
use sdsim_core::metrics::{Key, LabelValue, Metrics};
use sdsim_core::runtime::Shard;
use sdsim_net::http::router::Router;
use sdsim_net::http::types::{
    error, json, json_body as body, ClientAddr, PathParams, Request, Response,
};
use serde::Deserialize;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

/// Metric: register, login and refresh calls by outcome (`ok` or the error code).
pub const REQUESTS: &str = "sdsim_auth_requests_total";

/// Counts one call of `operation` on this shard's metrics.
fn count<T>(operation: &'static str, r: &Result<T, Failure>) {
    let outcome = match r {
        Ok(_) => "ok",
        Err(f) => f.codes().code,
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

/// The caller of a route that acts on the caller's own account: a user's access token.
fn account_holder(auth: &dyn Authenticate, req: &Request) -> Result<Caller, Box<Response>> {
    let who = http_caller(auth, req)?;
    if who.session.is_none() {
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this route needs a user's access token",
        )));
    }
    Ok(who)
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

/// Called with the session id after the auth service in another process ended a session: the
/// gateway applies the revocation on its own shards at once, rather than at its next read of
/// storage (the auth service's own announcement arrives only through Redis).
pub type AfterLogout = Rc<dyn Fn(String) -> Pin<Box<dyn Future<Output = ()>>>>;

/// Mounts the routes on `router`: `auth` is the service in this process or in another one
/// (the answers are the same); `authn` authenticates the routes that need a caller;
/// `after_logout` runs after each successful logout (a remote `auth` needs it).
pub fn register(
    router: &mut Router,
    auth: &Rc<dyn AuthService>,
    authn: &Arc<dyn Authenticate>,
    after_logout: Option<AfterLogout>,
) {
    let a = Rc::clone(auth);
    add(router, Method::POST, "/api/auth/register", move |req| {
        let a = Rc::clone(&a);
        async move {
            let c: Credentials = try_or!(body(&req, r#"{"email": string, "password": string}"#));
            let account = NewAccount {
                email: c.email.into_owned(),
                password: c.password.into_owned(),
            };
            let r = a.create_account(account).await;
            count("register", &r);
            respond(StatusCode::CREATED, r.map(|user| UserOut { user }))
        }
    });
    let a = Rc::clone(auth);
    add(router, Method::POST, "/api/auth/login", move |req| {
        let a = Rc::clone(&a);
        async move {
            let c: Credentials = try_or!(body(&req, r#"{"email": string, "password": string}"#));
            let attempt = SignIn {
                email: c.email.into_owned(),
                password: c.password.into_owned(),
                client_ip: client(&req),
            };
            let r = a.sign_in(attempt).await;
            count("login", &r);
            respond(StatusCode::OK, r)
        }
    });
    let a = Rc::clone(auth);
    add(router, Method::POST, "/api/auth/refresh", move |req| {
        let a = Rc::clone(&a);
        async move {
            let b: RefreshBody = try_or!(body(&req, r#"{"refresh_token": string}"#));
            let r = a.refresh_session(b.refresh_token).await;
            count("refresh", &r);
            respond(StatusCode::OK, r)
        }
    });
    let (a, n) = (Rc::clone(auth), Arc::clone(authn));
    add(router, Method::POST, "/api/auth/logout", move |req| {
        let (a, n, after) = (Rc::clone(&a), Arc::clone(&n), after_logout.clone());
        async move {
            let who = try_or!(account_holder(&*n, &req));
            let session = who
                .session
                .as_ref()
                .map(|s| s.id.to_string())
                .unwrap_or_default();
            match a.sign_out(&who, session.clone()).await {
                Ok(()) => {
                    if let Some(after) = after {
                        after(session).await;
                    }
                    empty(StatusCode::NO_CONTENT)
                }
                Err(f) => failure(&f),
            }
        }
    });
    let (a, n) = (Rc::clone(auth), Arc::clone(authn));
    add(router, Method::GET, "/api/auth/me", move |req| {
        let (a, n) = (Rc::clone(&a), Arc::clone(&n));
        async move {
            let who = try_or!(account_holder(&*n, &req));
            let (session_id, expires_at) = who
                .session
                .as_ref()
                .map(|s| (s.id.to_string(), s.expires_at))
                .unwrap_or_default();
            let r = a.get_me(&who, ()).await.map(|user| Me {
                user,
                session_id,
                expires_at,
            });
            respond(StatusCode::OK, r)
        }
    });
    let a = Rc::clone(auth);
    add(router, Method::POST, "/api/auth/verify-email", move |req| {
        let a = Rc::clone(&a);
        async move {
            let b: TokenBody = try_or!(body(&req, r#"{"token": string}"#));
            let r = a.confirm_email(b.token).await.map(|user| UserOut { user });
            respond(StatusCode::OK, r)
        }
    });
    let a = Rc::clone(auth);
    add(
        router,
        Method::POST,
        "/api/auth/password-reset",
        move |req| {
            let a = Rc::clone(&a);
            async move {
                let b: EmailBody = try_or!(body(&req, r#"{"email": string}"#));
                match a.request_password_reset(b.email).await {
                    // The same answer whether or not the account exists.
                    Ok(()) => empty(StatusCode::ACCEPTED),
                    Err(f) => failure(&f),
                }
            }
        },
    );
    let a = Rc::clone(auth);
    add(
        router,
        Method::POST,
        "/api/auth/password-reset/confirm",
        move |req| {
            let a = Rc::clone(&a);
            async move {
                let b: ResetBody = try_or!(body(&req, r#"{"token": string, "password": string}"#));
                let reset = PasswordReset {
                    token: b.token,
                    password: b.password,
                };
                match a.confirm_password_reset(reset).await {
                    Ok(()) => empty(StatusCode::NO_CONTENT),
                    Err(f) => failure(&f),
                }
            }
        },
    );
    let (a, n) = (Rc::clone(auth), Arc::clone(authn));
    add(
        router,
        Method::PUT,
        "/api/auth/users/{id}/roles",
        move |req| {
            let (a, n) = (Rc::clone(&a), Arc::clone(&n));
            async move {
                let who = try_or!(account_holder(&*n, &req));
                let b: RolesBody = try_or!(body(&req, r#"{"roles": [string]}"#));
                let id = req
                    .extensions()
                    .get::<PathParams>()
                    .and_then(|p| p.get("id"))
                    .unwrap_or_default()
                    .to_string();
                let change = RoleChange {
                    user_id: id,
                    roles: b.roles,
                };
                let r = a.set_user_roles(&who, change).await;
                respond(StatusCode::OK, r.map(|user| UserOut { user }))
            }
        },
    );
    let a = Rc::clone(auth);
    add(router, Method::GET, "/.well-known/jwks.json", move |_req| {
        let a = Rc::clone(&a);
        async move {
            let keys = match a.get_signing_keys(()).await {
                Ok(k) => k,
                Err(f) => return failure(&f),
            };
            let jwks = KeyRing::new(None, keys.keys).jwks();
            let mut resp = json(StatusCode::OK, &jwks);
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
