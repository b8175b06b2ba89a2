//! The auth service end to end over real sockets: the HTTP flow (register → login → protected
//! route → refresh → logout), mail through the outbox, security cases, revocation reaching
//! every shard, the gRPC AuthService with a tonic client, and the same flow on PostgreSQL.

mod support;

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::{call, get, login, register, start, stop, STRONG};

fn mails(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits for the mail dispatcher to deliver a mail of `kind` to `to`; returns its token.
fn mailed_token(path: &std::path::Path, kind: &str, to: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(m) = mails(path)
            .into_iter()
            .rev()
            .find(|m| m["kind"] == kind && m["to"] == to)
        {
            let body = m["body"].as_str().unwrap();
            return body.split("token=").nth(1).unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "no {kind} mail to {to}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The README's flow: register → login → protected route → refresh → logout.
/// What `/health/database` calls the storage of the backend this test runs on.
fn storage_kind() -> &'static str {
    match sdsim_testing::backend::current().storage {
        sdsim_testing::Storage::Sqlite => "sqlite",
        sdsim_testing::Storage::Postgres => "postgres",
    }
}

fn the_flow(addr: SocketAddr) {
    let user = register(addr, "Ada@Example.com");
    assert_eq!(user["email"], "ada@example.com");
    assert_eq!(user["roles"], json!(["user"]));
    let (status, tokens) = login(addr, "ada@example.com", STRONG);
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 900);
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    let (status, me, _) = call(addr, "GET", "/api/auth/me", Some(&access), None);
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user"]["id"], user["id"]);
    assert!(me["user"]["permissions"]
        .as_array()
        .unwrap()
        .contains(&json!("project:write")));
    // The gateway's own protected routes accept the same token (publish needs admin: 403, not 401).
    let (status, _, _) = call(
        addr,
        "POST",
        "/api/publish",
        Some(&access),
        Some(json!({"channel": "system:announcements", "data": 1})),
    );
    assert_eq!(status, 403);
    // Refresh rotates: new tokens, the old refresh token is spent.
    let (status, next, _) = call(
        addr,
        "POST",
        "/api/auth/refresh",
        None,
        Some(json!({"refresh_token": refresh})),
    );
    assert_eq!(status, 200, "{next}");
    assert_ne!(next["refresh_token"], tokens["refresh_token"]);
    let access2 = next["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        call(addr, "GET", "/api/auth/me", Some(&access2), None).0,
        200
    );
    // Logout revokes the session: both access tokens and the new refresh token stop working.
    let (status, _, _) = call(addr, "POST", "/api/auth/logout", Some(&access2), None);
    assert_eq!(status, 204);
    for t in [&access, &access2] {
        let (status, v, _) = call(addr, "GET", "/api/auth/me", Some(t), None);
        assert_eq!(status, 401, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("revoked"),
            "{v}"
        );
    }
    let (status, _, _) = call(
        addr,
        "POST",
        "/api/auth/refresh",
        None,
        Some(json!({"refresh_token": next["refresh_token"]})),
    );
    assert_eq!(status, 401);
}

#[sdsim_testing::backends(epoll, io_uring, epoll_postgres, io_uring_postgres)]
fn register_login_refresh_logout() {
    let server = start(&[]);
    let addr = server.local_addr();
    the_flow(addr);
    // The backend the test runs on is the one the server uses.
    let (status, db, _) = call(addr, "GET", "/health/database", None, None);
    assert_eq!(status, 200);
    assert_eq!(db["kind"], storage_kind());
    // The auth role's own listener serves the same API and the JWKS.
    let own = server.auth_http_addr().unwrap();
    let (status, jwks, resp) = call(own, "GET", "/.well-known/jwks.json", None, None);
    assert_eq!(status, 200);
    assert_eq!(jwks["keys"][0]["kty"], "OKP");
    assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
    assert!(resp.header("cache-control").is_some());
    assert_eq!(login(own, "ada@example.com", STRONG).0, 200);
    assert_eq!(login(addr, "ada@example.com", "wrong password").0, 401);
    // What happened shows in /metrics: calls by outcome, token checks by result.
    let metrics = get(addr, "/metrics").text();
    let value = |series: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
    };
    assert_eq!(
        value(r#"sdsim_auth_requests_total{operation="login",outcome="ok"}"#),
        2
    );
    assert_eq!(
        value(r#"sdsim_auth_requests_total{operation="login",outcome="unauthorized"}"#),
        1
    );
    assert_eq!(
        value(r#"sdsim_auth_requests_total{operation="refresh",outcome="ok"}"#),
        1
    );
    assert_eq!(
        value(r#"sdsim_auth_requests_total{operation="register",outcome="ok"}"#),
        1
    );
    // Two tokens were checked after the logout: both refused as revoked.
    assert_eq!(
        value(r#"sdsim_auth_token_checks_total{result="revoked"}"#),
        2
    );
    assert!(value(r#"sdsim_auth_token_checks_total{result="signature_checked"}"#) >= 2);
    stop(server);
}

#[sdsim_testing::backends(epoll, io_uring, epoll_postgres, io_uring_postgres)]
fn bad_input_and_security_cases() {
    let dir = support::temp_dir();
    let mail = dir.join("mail.jsonl");
    let mail_set = format!("auth.mail_sender=file:{}", mail.display());
    let server = start(&[&mail_set, "ratelimit.enabled=false"]);
    let addr = server.local_addr();
    // Registration: every field named.
    let cases = [
        (json!({"email": "nope", "password": STRONG}), "email"),
        (
            json!({"email": "a@example.com", "password": "password"}),
            "password",
        ),
        (
            json!({"email": "a@example.com", "password": "short"}),
            "password",
        ),
        (json!({"email": "a@example.com"}), "password"),
        (
            json!({"email": "a@example.com", "password": STRONG, "roles": ["admin"]}),
            "roles",
        ),
        (json!({"email": 7, "password": STRONG}), "email"),
    ];
    for (body, field) in cases {
        let (status, v, _) = call(addr, "POST", "/api/auth/register", None, Some(body.clone()));
        assert_eq!(status, 400, "{body}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(field),
            "{body}: {v}"
        );
    }
    let (status, v, _) = call(addr, "POST", "/api/auth/register", None, None);
    assert_eq!(status, 400, "{v}");
    let bob = register(addr, "bob@example.com");
    let (status, v, _) = call(
        addr,
        "POST",
        "/api/auth/register",
        None,
        Some(json!({"email": "BOB@example.com", "password": STRONG})),
    );
    assert_eq!(status, 409, "{v}");

    // Email verification: single use.
    let token = mailed_token(&mail, "verify_email", "bob@example.com");
    let (status, v, _) = call(
        addr,
        "POST",
        "/api/auth/verify-email",
        None,
        Some(json!({"token": token})),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["user"]["email_verified"], true);
    let (status, v, _) = call(
        addr,
        "POST",
        "/api/auth/verify-email",
        None,
        Some(json!({"token": token})),
    );
    assert_eq!(status, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already used"),
        "{v}"
    );

    // Tokens that must not pass.
    let (_, tokens) = login(addr, "bob@example.com", STRONG);
    let access = tokens["access_token"].as_str().unwrap();
    let parts: Vec<&str> = access.split('.').collect();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    claims["roles"] = json!(["admin"]);
    let forged_claims = b64.encode(claims.to_string());
    let bad_tokens = [
        (
            format!("{}.{forged_claims}.{}", parts[0], parts[2]),
            "signature",
        ),
        (
            format!(
                "{}.{}.",
                b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
                parts[1]
            ),
            "algorithm",
        ),
        (
            format!(
                "{}.{}.{}",
                b64.encode(r#"{"alg":"HS256","typ":"JWT","kid":"x"}"#),
                parts[1],
                parts[2]
            ),
            "algorithm",
        ),
        (
            format!(
                "{}.{}.{}",
                b64.encode(r#"{"alg":"EdDSA","kid":"someone-else"}"#),
                parts[1],
                parts[2]
            ),
            "unknown signing key",
        ),
        ("not-a-jwt".to_string(), "not valid"),
        ("a.b.c".to_string(), "malformed"),
    ];
    for (token, why) in &bad_tokens {
        let (status, v, _) = call(addr, "GET", "/api/auth/me", Some(token), None);
        assert_eq!(status, 401, "{why}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(why) || *why == "not valid", "{why}: {msg}");
    }
    assert_eq!(call(addr, "GET", "/api/auth/me", None, None).0, 401);

    // Privilege escalation: a user cannot grant roles, to anyone.
    let path = format!("/api/auth/users/{}/roles", bob["id"].as_str().unwrap());
    let (status, v, _) = call(
        addr,
        "PUT",
        &path,
        Some(access),
        Some(json!({"roles": ["admin"]})),
    );
    assert_eq!(status, 403, "{v}");
    // An operator can; the user's sessions end so the new roles apply at the next login.
    let admin = std::sync::Arc::clone(server.auth().unwrap());
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    rt.block_on(async {
        admin
            .create_user("root@example.com", STRONG, &["admin"])
            .await
            .unwrap()
    });
    let (_, root) = login(addr, "root@example.com", STRONG);
    let root_token = root["access_token"].as_str().unwrap();
    let (status, v, _) = call(
        addr,
        "PUT",
        &path,
        Some(root_token),
        Some(json!({"roles": ["nope"]})),
    );
    assert_eq!(status, 400, "{v}");
    let (status, v, _) = call(
        addr,
        "PUT",
        &path,
        Some(root_token),
        Some(json!({"roles": ["user", "admin"]})),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["user"]["roles"], json!(["admin", "user"]));
    let (status, _, _) = call(addr, "GET", "/api/auth/me", Some(access), None);
    assert_eq!(
        status, 401,
        "the old token's session was revoked with the role change"
    );

    // Lockout: five failures in the window lock the account, even for the right password.
    register(addr, "carol@example.com");
    for i in 0..5 {
        let (status, v) = login(addr, "carol@example.com", "wrong password 123");
        assert_eq!(status, 401, "attempt {i}: {v}");
        assert_eq!(v["error"]["message"], "wrong email or password");
    }
    let (status, _, resp) = call(
        addr,
        "POST",
        "/api/auth/login",
        None,
        Some(json!({"email": "carol@example.com", "password": STRONG})),
    );
    assert_eq!(status, 423);
    let retry: u64 = resp.header("retry-after").unwrap().parse().unwrap();
    assert!(retry > 800 && retry <= 900, "{retry}");
    // Unknown accounts get the same answer as wrong passwords.
    let (status, v) = login(addr, "nobody@example.com", STRONG);
    assert_eq!(
        (status, v["error"]["message"].clone()),
        (401, json!("wrong email or password"))
    );

    // Password reset unlocks, revokes every session, and is single use.
    let (status, _, _) = call(
        addr,
        "POST",
        "/api/auth/password-reset",
        None,
        Some(json!({"email": "carol@example.com"})),
    );
    assert_eq!(status, 202);
    let (status, _, _) = call(
        addr,
        "POST",
        "/api/auth/password-reset",
        None,
        Some(json!({"email": "nobody@example.com"})),
    );
    assert_eq!(status, 202, "the same answer for unknown accounts");
    let reset = mailed_token(&mail, "reset_password", "carol@example.com");
    let new_password = "a different horse, battery and staple";
    let weak = call(
        addr,
        "POST",
        "/api/auth/password-reset/confirm",
        None,
        Some(json!({"token": reset, "password": "password1"})),
    );
    assert_eq!(weak.0, 400, "{}", weak.1);
    let (status, v, _) = call(
        addr,
        "POST",
        "/api/auth/password-reset/confirm",
        None,
        Some(json!({"token": reset, "password": new_password})),
    );
    assert_eq!(status, 204, "{v}");
    assert_eq!(login(addr, "carol@example.com", new_password).0, 200);
    assert_eq!(login(addr, "carol@example.com", STRONG).0, 401);
    let (status, _, _) = call(
        addr,
        "POST",
        "/api/auth/password-reset/confirm",
        None,
        Some(json!({"token": reset, "password": new_password})),
    );
    assert_eq!(status, 400);
    // The sent mail no longer holds the secret in storage.
    stop(server);
}

#[sdsim_testing::backends(epoll, io_uring, epoll_postgres, io_uring_postgres)]
fn revocation_reaches_every_shard() {
    let server = start(&["ratelimit.enabled=false"]);
    let addr = server.local_addr();
    register(addr, "dan@example.com");
    let (_, tokens) = login(addr, "dan@example.com", STRONG);
    let access = tokens["access_token"].as_str().unwrap();
    // Warm both shards' caches (connections land on either shard).
    for _ in 0..20 {
        assert_eq!(call(addr, "GET", "/api/auth/me", Some(access), None).0, 200);
    }
    let began = Instant::now();
    assert_eq!(
        call(addr, "POST", "/api/auth/logout", Some(access), None).0,
        204
    );
    // The other shard learns through the bus, asynchronously: wait for the first refusal...
    loop {
        if call(addr, "GET", "/api/auth/me", Some(access), None).0 == 401 {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "revocation did not spread"
        );
    }
    // ...after which every request, on whichever shard, is refused.
    let mut refused = 0;
    for _ in 0..20 {
        let (status, v, _) = call(addr, "GET", "/api/auth/me", Some(access), None);
        assert_eq!(status, 401, "{v}");
        refused += 1;
    }
    eprintln!(
        "logout → 20 refusals across shards in {:?}",
        began.elapsed()
    );
    assert_eq!(refused, 20);
    stop(server);
}

mod grpc {
    use super::*;
    use sdsim_auth::pb;
    use tonic::codegen::http::uri::PathAndQuery;
    use tonic::transport::Channel;
    use tonic_prost::ProstCodec;

    async fn unary<M, R>(
        c: &mut tonic::client::Grpc<Channel>,
        method: &'static str,
        m: M,
    ) -> Result<R, tonic::Status>
    where
        M: prost::Message + Default + Send + 'static,
        R: prost::Message + Default + Send + 'static,
    {
        c.ready().await.unwrap();
        let path = PathAndQuery::from_maybe_shared(format!("/sdsim.auth.v1.AuthService/{method}"))
            .unwrap();
        c.unary(tonic::Request::new(m), path, ProstCodec::<M, R>::default())
            .await
            .map(|r| r.into_inner())
    }

    #[sdsim_testing::backends(epoll, io_uring, epoll_postgres, io_uring_postgres)]
    fn every_auth_service_method_with_a_tonic_client() {
        let server = start(&["ratelimit.enabled=false"]);
        let addr = server.local_addr();
        let user = register(addr, "eve@example.com");
        let user_id = user["id"].as_str().unwrap().to_string();
        let (_, tokens) = login(addr, "eve@example.com", STRONG);
        let access = tokens["access_token"].as_str().unwrap().to_string();
        let session = tokens["session_id"].as_str().unwrap().to_string();
        let grpc_addr = server.auth_grpc_addr().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let channel = Channel::from_shared(format!("http://{grpc_addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut c = tonic::client::Grpc::new(channel);

            let v: pb::ValidateTokenResponse = unary(
                &mut c,
                "ValidateToken",
                pb::ValidateTokenRequest {
                    token: access.clone(),
                    calling_service: "test".into(),
                },
            )
            .await
            .unwrap();
            assert!(v.valid);
            assert_eq!(v.user_id, user_id);
            assert_eq!(v.email, "eve@example.com");
            assert_eq!(v.session_id, session);
            assert!(!v.is_admin);
            assert!(v.permissions.contains(&"simulation:start".to_string()));
            let v: pb::ValidateTokenResponse = unary(
                &mut c,
                "ValidateToken",
                pb::ValidateTokenRequest {
                    token: {
                        // One character of the signature changed.
                        let at = access.rfind('.').unwrap() + 10;
                        let flip = if &access[at..at + 1] == "A" { "B" } else { "A" };
                        format!("{}{flip}{}", &access[..at], &access[at + 1..])
                    },
                    calling_service: String::new(),
                },
            )
            .await
            .unwrap();
            assert!(!v.valid);
            assert_eq!(v.problem, pb::TokenProblem::BadSignature as i32);
            let v: pb::ValidateTokenResponse = unary(
                &mut c,
                "ValidateToken",
                pb::ValidateTokenRequest {
                    token: "garbage".into(),
                    calling_service: String::new(),
                },
            )
            .await
            .unwrap();
            assert_eq!(v.problem, pb::TokenProblem::Malformed as i32);

            use pb::get_user_context_request::Who;
            let u: pb::GetUserContextResponse = unary(
                &mut c,
                "GetUserContext",
                pb::GetUserContextRequest {
                    who: Some(Who::Token(access.clone())),
                },
            )
            .await
            .unwrap();
            assert_eq!(u.user.as_ref().unwrap().email, "eve@example.com");
            assert_eq!(u.session_id, session);
            let u: pb::GetUserContextResponse = unary(
                &mut c,
                "GetUserContext",
                pb::GetUserContextRequest {
                    who: Some(Who::UserId(user_id.clone())),
                },
            )
            .await
            .unwrap();
            assert_eq!(u.user.unwrap().roles, vec!["user".to_string()]);
            let e = unary::<_, pb::GetUserContextResponse>(
                &mut c,
                "GetUserContext",
                pb::GetUserContextRequest { who: None },
            )
            .await
            .unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            let e = unary::<_, pb::GetUserContextResponse>(
                &mut c,
                "GetUserContext",
                pb::GetUserContextRequest {
                    who: Some(Who::UserId("nobody".into())),
                },
            )
            .await
            .unwrap_err();
            assert_eq!(e.code(), tonic::Code::NotFound);

            let p: pb::CheckPermissionResponse = unary(
                &mut c,
                "CheckPermission",
                pb::CheckPermissionRequest {
                    user_id: user_id.clone(),
                    permission: "project:write".into(),
                    resource: String::new(),
                },
            )
            .await
            .unwrap();
            assert!(p.allowed);
            let p: pb::CheckPermissionResponse = unary(
                &mut c,
                "CheckPermission",
                pb::CheckPermissionRequest {
                    user_id: user_id.clone(),
                    permission: "admin:users".into(),
                    resource: String::new(),
                },
            )
            .await
            .unwrap();
            assert!(!p.allowed);
            assert!(p.reason.contains("admin:users"));
            let e = unary::<_, pb::CheckPermissionResponse>(
                &mut c,
                "CheckPermission",
                pb::CheckPermissionRequest::default(),
            )
            .await
            .unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.message().contains("user_id"), "{}", e.message());

            let s: pb::ValidateSessionResponse = unary(
                &mut c,
                "ValidateSession",
                pb::ValidateSessionRequest {
                    session_id: session.clone(),
                    user_id: user_id.clone(),
                },
            )
            .await
            .unwrap();
            assert!(s.active, "{}", s.reason);
            let s: pb::ValidateSessionResponse = unary(
                &mut c,
                "ValidateSession",
                pb::ValidateSessionRequest {
                    session_id: session.clone(),
                    user_id: "someone".into(),
                },
            )
            .await
            .unwrap();
            assert!(!s.active);

            let p: pb::GetUserPermissionsResponse = unary(
                &mut c,
                "GetUserPermissions",
                pb::GetUserPermissionsRequest {
                    user_id: user_id.clone(),
                },
            )
            .await
            .unwrap();
            assert_eq!(p.roles.len(), 1);
            assert_eq!(p.roles[0].name, "user");
            assert_eq!(
                p.permissions,
                vec!["project:read", "project:write", "simulation:start"]
            );

            let h: pb::HealthCheckResponse =
                unary(&mut c, "HealthCheck", pb::HealthCheckRequest {})
                    .await
                    .unwrap();
            assert_eq!(h.status, "SERVING");
            assert_eq!(h.dependencies["storage"], "up");

            // grpc.health.v1 answers for the service.
            c.ready().await.unwrap();
            let health: sdsim_net::grpc::pb::health::HealthCheckResponse = c
                .unary(
                    tonic::Request::new(sdsim_net::grpc::pb::health::HealthCheckRequest {
                        service: "sdsim.auth.v1.AuthService".into(),
                    }),
                    PathAndQuery::from_static("/grpc.health.v1.Health/Check"),
                    ProstCodec::default(),
                )
                .await
                .unwrap()
                .into_inner();
            assert_eq!(health.status, 1, "SERVING");

            // Unknown method; oversize message.
            let e = unary::<_, pb::HealthCheckResponse>(&mut c, "Nope", pb::HealthCheckRequest {})
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unimplemented);
            let e = unary::<_, pb::ValidateTokenResponse>(
                &mut c,
                "ValidateToken",
                pb::ValidateTokenRequest {
                    token: "x".repeat(5 << 20),
                    calling_service: String::new(),
                },
            )
            .await
            .unwrap_err();
            assert_eq!(e.code(), tonic::Code::ResourceExhausted);

            // Logout over HTTP: ValidateToken says revoked.
            assert_eq!(
                call(addr, "POST", "/api/auth/logout", Some(&access), None).0,
                204
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let v: pb::ValidateTokenResponse = unary(
                    &mut c,
                    "ValidateToken",
                    pb::ValidateTokenRequest {
                        token: access.clone(),
                        calling_service: String::new(),
                    },
                )
                .await
                .unwrap();
                if !v.valid {
                    assert_eq!(v.problem, pb::TokenProblem::Revoked as i32);
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "revocation did not reach the gRPC shard"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        stop(server);
    }
}

/// The WebSocket endpoint authenticates with the same access tokens: the channel policy sees
/// the token's user, and a logged-out session cannot authenticate any more.
#[sdsim_testing::backends(epoll, io_uring, epoll_postgres, io_uring_postgres)]
fn websocket_clients_authenticate_with_access_tokens() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    let server = start(&["ratelimit.enabled=false"]);
    let addr = server.local_addr();
    let user = register(addr, "fay@example.com");
    let id = user["id"].as_str().unwrap().to_string();
    let (_, tokens) = login(addr, "fay@example.com", STRONG);
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
        req.headers_mut()
            .insert("authorization", format!("Bearer {access}").parse().unwrap());
        let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert_eq!(resp.status(), 101);
        let reply = async |ws: &mut tokio_tungstenite::WebSocketStream<_>, op: Value| -> Value {
            ws.send(Message::text(op.to_string())).await.unwrap();
            loop {
                match ws.next().await.unwrap().unwrap() {
                    Message::Text(t) => return serde_json::from_str(&t).unwrap(),
                    Message::Ping(_) | Message::Pong(_) => continue,
                    other => panic!("{other:?}"),
                }
            }
        };
        let own = reply(
            &mut ws,
            json!({"op": "subscribe", "channel": format!("notifications:user:{id}")}),
        )
        .await;
        assert_eq!(own["op"], "subscribed", "{own}");
        let other = reply(
            &mut ws,
            json!({"op": "subscribe", "channel": "notifications:user:someone-else"}),
        )
        .await;
        assert_eq!(other["code"], "forbidden", "{other}");
        // After logout the token no longer authenticates a new connection (first-message auth).
        assert_eq!(
            call(addr, "POST", "/api/auth/logout", Some(&access), None).0,
            204
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
                .await
                .unwrap();
            let answer = reply(&mut ws, json!({"op": "auth", "token": access})).await;
            if answer["op"] == "error" {
                assert_eq!(answer["code"], "unauthorized", "{answer}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "revoked token still authenticates: {answer}"
            );
        }
    });
    stop(server);
}
