//! A gateway-only process serves the account API and verifies access tokens itself: an
//! auth-only process and a gateway-only process (and a project-only one) on one real
//! PostgreSQL database. `/api/auth/*` goes through the AuthService RPCs, with the same
//! statuses and bodies as an all-roles process; the gateway verifies tokens with the keys it
//! fetches (also after a rotation) and refuses a revoked token. The auth events reach an
//! admin's WebSocket.

use sdsim_server::Server;
use sdsim_testing::server::{start, stop};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const SERVICE_TOKEN: &str = "gateway-auth-test-service-token";
const STRONG: &str = "correct horse battery staple 42!";

fn service_tokens() -> String {
    format!(r#"auth.tokens=[{{token="{SERVICE_TOKEN}",user="gateway",roles=["service"]}}]"#)
}

fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let (status, value, _) = sdsim_testing::http::call(addr, method, path, token, body);
    (status, value)
}

/// A request made the same way to two processes.
type Case = dyn Fn(SocketAddr) -> (u16, Value);

/// One raw request body (for malformed JSON): status and JSON answer.
fn raw(addr: SocketAddr, path: &str, body: &str) -> (u16, Value) {
    let mut c = sdsim_testing::http::Client::connect(addr);
    c.send(
        format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    let resp = c.read_response(false);
    (
        resp.status,
        serde_json::from_slice(&resp.body).unwrap_or(Value::Null),
    )
}

/// An auth-only process on `db`.
fn auth_process(db: &str, extra: &[&str]) -> Server {
    let storage = format!("storage.url={db}");
    let tokens = service_tokens();
    let mut sets = vec![
        r#"roles=["auth"]"#,
        &storage,
        &tokens,
        "ratelimit.enabled=false",
    ];
    sets.extend_from_slice(extra);
    start(&sets)
}

/// A gateway-only process on `db`, reaching the auth service at `auth` and the project
/// service at `project`.
fn gateway_process(
    db: &str,
    auth: SocketAddr,
    project: Option<SocketAddr>,
    extra: &[&str],
) -> Server {
    let storage = format!("storage.url={db}");
    let auth_at = format!("gateway.auth_service={auth}");
    let project_at = format!(
        "gateway.project_service={}",
        project.map_or("127.0.0.1:9".to_string(), |p| p.to_string())
    );
    let token = format!("gateway.service_token={SERVICE_TOKEN}");
    let mut sets = vec![
        r#"roles=["gateway"]"#,
        &storage,
        &auth_at,
        &project_at,
        &token,
        "ratelimit.enabled=false",
    ];
    sets.extend_from_slice(extra);
    start(&sets)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket to `addr`'s gateway, authenticated with `token`.
async fn ws_connect(addr: SocketAddr, token: &str) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

/// The next message; an event that never comes fails the test rather than hanging it.
async fn ws_next(ws: &mut Ws) -> Value {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let message = async {
        loop {
            match ws.next().await.unwrap().unwrap() {
                Message::Text(t) => return serde_json::from_str(&t).unwrap(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("{other:?}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), message)
        .await
        .expect("a WebSocket message within 10 s")
}

/// Subscribes to `channel`; the answer.
async fn ws_subscribe(ws: &mut Ws, channel: &str) -> Value {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let op = json!({"op": "subscribe", "channel": channel});
    ws.send(Message::text(op.to_string())).await.unwrap();
    ws_next(ws).await
}

/// Makes an admin account on the auth service of `server`.
fn create_admin(server: &Server, email: &str) {
    let auth = std::sync::Arc::clone(server.auth().unwrap());
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    rt.block_on(async { auth.create_user(email, STRONG, &["admin"]).await.unwrap() });
}

/// The `kid` in an access token's header.
fn kid(token: &str) -> String {
    use base64::Engine;
    let header = token.split('.').next().unwrap();
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    serde_json::from_slice::<Value>(&header).unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Polls `GET /api/auth/me` until it answers `want` (the gateway's keys or revocations are
/// applied by its own tasks); panics with the last answer after `within`.
fn me_until(addr: SocketAddr, token: &str, want: u16, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, v) = call(addr, "GET", "/api/auth/me", Some(token), None);
        if status == want {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "GET /api/auth/me: {status} {v}, wanted {want}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `/health/ready` until 200 (as a load balancer would); the last answer.
fn ready_within(addr: SocketAddr, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, v) = call(addr, "GET", "/health/ready", None, None);
        if status == 200 {
            return v;
        }
        assert!(Instant::now() < deadline, "/health/ready: {status} {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn register(addr: SocketAddr, email: &str) -> (u16, Value) {
    call(
        addr,
        "POST",
        "/api/auth/register",
        None,
        Some(json!({"email": email, "password": STRONG})),
    )
}

fn login(addr: SocketAddr, email: &str, password: &str) -> (u16, Value) {
    call(
        addr,
        "POST",
        "/api/auth/login",
        None,
        Some(json!({"email": email, "password": password})),
    )
}

#[test]
fn a_gateway_only_process_serves_the_account_api_through_a_remote_auth_service() {
    let db = sdsim_testing::postgres::fresh_database_url();
    let auth = auth_process(&db, &[]);
    let auth_grpc = auth.auth_grpc_addr().unwrap();
    let storage = format!("storage.url={db}");
    let tokens = service_tokens();
    let project = start(&[
        r#"roles=["project"]"#,
        &storage,
        &tokens,
        "ratelimit.enabled=false",
    ]);
    // Without Redis, revocations reach the gateway through the shared database.
    let gw = gateway_process(
        &db,
        auth_grpc,
        Some(project.project_grpc_addr().unwrap()),
        &["auth.revocation_sync=200ms"],
    );
    let addr = gw.local_addr();
    // The all-roles reference, on a database of its own.
    let reference_db = sdsim_testing::postgres::fresh_database_url();
    let reference_storage = format!("storage.url={reference_db}");
    let reference = start(&[&reference_storage, "ratelimit.enabled=false"]);
    let local = reference.local_addr();

    // Register, login, me, refresh (rotation), logout: all through the gateway.
    let (status, user) = register(addr, "Ada@Example.com");
    assert_eq!(status, 201, "{user}");
    assert_eq!(user["user"]["email"], "ada@example.com");
    assert_eq!(user["user"]["roles"], json!(["user"]));
    let id = user["user"]["id"].as_str().unwrap().to_string();
    let (status, t) = login(addr, "ada@example.com", STRONG);
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["user"]["id"], id.as_str());
    let access = t["access_token"].as_str().unwrap().to_string();
    // Ready once it has fetched the auth service's keys: it verifies the token itself.
    let ready = ready_within(addr, Duration::from_secs(10));
    assert!(ready["verification_keys"].as_u64().unwrap() >= 1, "{ready}");
    let (status, me) = call(addr, "GET", "/api/auth/me", Some(&access), None);
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user"]["id"], id.as_str());
    assert_eq!(me["session_id"], t["session_id"]);
    assert!(me["expires_at"].as_i64().unwrap() > 0);
    // The session was recorded with the client's address, not lost on the way.
    let ip = sdsim_testing::postgres::column(
        &db,
        &format!(
            "SELECT ip FROM auth_schema.sessions WHERE id = '{}'",
            t["session_id"].as_str().unwrap()
        ),
    );
    assert_eq!(ip, vec!["127.0.0.1".to_string()]);

    let refresh = t["refresh_token"].as_str().unwrap().to_string();
    let (status, r) = call(
        addr,
        "POST",
        "/api/auth/refresh",
        None,
        Some(json!({"refresh_token": refresh})),
    );
    assert_eq!(status, 200, "{r}");
    assert_ne!(r["refresh_token"], t["refresh_token"]);
    assert_eq!(r["session_id"], t["session_id"]);
    // A spent refresh token revokes its session, through the gateway as in process.
    let (status, e) = call(
        addr,
        "POST",
        "/api/auth/refresh",
        None,
        Some(json!({"refresh_token": refresh})),
    );
    assert_eq!(status, 401, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already used"),
        "{e}"
    );
    me_until(
        addr,
        r["access_token"].as_str().unwrap(),
        401,
        Duration::from_secs(10),
    );

    // A protected project route, in the project process, with the gateway-verified token.
    let (status, t2) = login(addr, "ada@example.com", STRONG);
    assert_eq!(status, 200, "{t2}");
    let access = t2["access_token"].as_str().unwrap().to_string();
    let (status, p) = call(
        addr,
        "POST",
        "/api/projects",
        Some(&access),
        Some(json!({"name": "Shop", "template_id": "three-tier"})),
    );
    assert_eq!(status, 201, "{p}");
    assert_eq!(p["owner_id"], id.as_str());

    // Logout through the gateway; then every shard of the gateway refuses the token (each
    // reads the revoked sessions from storage every 200 ms here; no Redis in this test).
    assert_eq!(
        call(addr, "POST", "/api/auth/logout", Some(&access), None).0,
        204
    );
    let refused = me_until(addr, &access, 401, Duration::from_secs(10));
    assert_eq!(refused["error"]["code"], "unauthorized", "{refused}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut refusals = 0;
    // Each call is a fresh connection, which may land on either shard: ten refusals in a row.
    while refusals < 10 {
        let body = json!({"name": "X", "template_id": "three-tier"});
        let (status, v) = call(addr, "POST", "/api/projects", Some(&access), Some(body));
        refusals = if status == 401 { refusals + 1 } else { 0 };
        assert!(
            status == 401 || Instant::now() < deadline,
            "POST /api/projects with a revoked token: {status} {v}"
        );
    }

    // The error cases answer exactly as an all-roles process does.
    assert_eq!(register(local, "ada@example.com").0, 201);
    let cases: Vec<(&str, Box<Case>)> = vec![
        (
            "bad password",
            Box::new(|a| login(a, "ada@example.com", "wrong password entirely")),
        ),
        (
            "unknown account",
            Box::new(|a| login(a, "nobody@example.com", STRONG)),
        ),
        (
            "duplicate email",
            Box::new(|a| register(a, "ADA@example.com")),
        ),
        (
            "weak password",
            Box::new(|a| {
                call(
                    a,
                    "POST",
                    "/api/auth/register",
                    None,
                    Some(json!({"email": "b@example.com", "password": "password"})),
                )
            }),
        ),
        ("bad email", Box::new(|a| register(a, "not-an-email"))),
        (
            "malformed JSON",
            Box::new(|a| raw(a, "/api/auth/login", r#"{"email": "a@example.com", "#)),
        ),
        (
            "missing field",
            Box::new(|a| {
                call(
                    a,
                    "POST",
                    "/api/auth/login",
                    None,
                    Some(json!({"email": "ada@example.com"})),
                )
            }),
        ),
        (
            "unknown field",
            Box::new(|a| {
                call(
                    a,
                    "POST",
                    "/api/auth/register",
                    None,
                    Some(json!({"email": "c@example.com", "password": STRONG, "roles": ["admin"]})),
                )
            }),
        ),
        (
            "unknown refresh token",
            Box::new(|a| {
                call(
                    a,
                    "POST",
                    "/api/auth/refresh",
                    None,
                    Some(json!({"refresh_token": "nope"})),
                )
            }),
        ),
        (
            "me without a token",
            Box::new(|a| call(a, "GET", "/api/auth/me", None, None)),
        ),
        (
            "unknown verification token",
            Box::new(|a| {
                call(
                    a,
                    "POST",
                    "/api/auth/verify-email",
                    None,
                    Some(json!({"token": "nope"})),
                )
            }),
        ),
        (
            "reset of an unknown account",
            Box::new(|a| {
                call(
                    a,
                    "POST",
                    "/api/auth/password-reset",
                    None,
                    Some(json!({"email": "nobody@example.com"})),
                )
            }),
        ),
        (
            "unknown reset token",
            Box::new(|a| {
                call(
                    a,
                    "POST",
                    "/api/auth/password-reset/confirm",
                    None,
                    Some(json!({"token": "nope", "password": STRONG})),
                )
            }),
        ),
    ];
    for (name, case) in &cases {
        let (remote_status, remote_body) = case(addr);
        let (local_status, local_body) = case(local);
        assert_eq!(
            (remote_status, &remote_body),
            (local_status, &local_body),
            "{name}: through the gateway (left) and in process (right)"
        );
        assert!(
            remote_status >= 400 || *name == "reset of an unknown account",
            "{name}: {remote_status}"
        );
    }
    // Changing roles needs admin:users, decided by the auth service for the forwarded user.
    let (_, t3) = login(addr, "ada@example.com", STRONG);
    let access = t3["access_token"].as_str().unwrap().to_string();
    me_until(addr, &access, 200, Duration::from_secs(10));
    let (status, e) = call(
        addr,
        "PUT",
        &format!("/api/auth/users/{id}/roles"),
        Some(&access),
        Some(json!({"roles": ["admin"]})),
    );
    assert_eq!(status, 403, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("admin:users"),
        "{e}"
    );

    // The gateway serves the auth service's public keys too.
    let (status, jwks) = call(addr, "GET", "/.well-known/jwks.json", None, None);
    assert_eq!(status, 200);
    let (_, direct) = call(
        auth.auth_http_addr().unwrap(),
        "GET",
        "/.well-known/jwks.json",
        None,
        None,
    );
    assert_eq!(jwks, direct);
    assert!(jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k["kid"] == kid(&access).as_str()));

    stop(gw);
    stop(project);
    stop(auth);
    stop(reference);
}

/// Calls `GET /api/auth/me` on fresh connections (either shard) until ten in a row answer
/// `want`; panics with the last answer after `within`.
fn every_shard_answers(addr: SocketAddr, token: &str, want: u16, within: Duration) {
    let deadline = Instant::now() + within;
    let mut in_a_row = 0;
    while in_a_row < 10 {
        let (status, v) = call(addr, "GET", "/api/auth/me", Some(token), None);
        in_a_row = if status == want { in_a_row + 1 } else { 0 };
        assert!(
            status == want || Instant::now() < deadline,
            "GET /api/auth/me: {status} {v}, wanted {want}"
        );
    }
}

#[test]
fn a_logout_through_the_gateway_is_applied_on_its_shards_at_once_without_redis() {
    let db = sdsim_testing::postgres::fresh_database_url();
    // Storage reads an hour apart and no Redis: only the gateway's own announcement of the
    // logout can make its shards refuse the token.
    let hourly = "auth.revocation_sync=1h";
    let auth = auth_process(&db, &[hourly]);
    let gw = gateway_process(&db, auth.auth_grpc_addr().unwrap(), None, &[hourly]);
    let addr = gw.local_addr();
    ready_within(addr, Duration::from_secs(10));
    assert_eq!(register(addr, "lea@example.com").0, 201);
    let (status, t) = login(addr, "lea@example.com", STRONG);
    assert_eq!(status, 200, "{t}");
    let token = t["access_token"].as_str().unwrap();
    every_shard_answers(addr, token, 200, Duration::from_secs(5));
    assert_eq!(
        call(addr, "POST", "/api/auth/logout", Some(token), None).0,
        204
    );
    every_shard_answers(addr, token, 401, Duration::from_secs(5));
    stop(gw);
    stop(auth);
}

#[test]
fn a_gateway_that_cannot_reach_the_auth_service_is_not_ready_and_says_so() {
    let db = sdsim_testing::postgres::fresh_database_url();
    // Nothing listens there, and nothing can while the test runs.
    let nowhere = sdsim_testing::refused_addr();
    let gw = gateway_process(&db, nowhere, None, &[]);
    let addr = gw.local_addr();
    let (status, ready) = call(addr, "GET", "/health/ready", None, None);
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["verification_keys"], 0, "{ready}");
    let (status, e) = login(addr, "ada@example.com", STRONG);
    assert_eq!(status, 503, "{e}");
    assert_eq!(e["error"]["code"], "unavailable", "{e}");
    stop(gw);
}

#[test]
fn after_a_key_rotation_the_gateway_accepts_tokens_of_the_new_key() {
    let db = sdsim_testing::postgres::fresh_database_url();
    // The auth service makes a new key every 2 s, signing with it at once.
    let auth = auth_process(
        &db,
        &[
            "auth.key_rotation=2s",
            "auth.key_publish_delay=0s",
            "auth.key_reload=500ms",
        ],
    );
    // The gateway's periodic fetch is an hour away: only a token naming a key it does not
    // know can make it fetch again.
    let gw = gateway_process(
        &db,
        auth.auth_grpc_addr().unwrap(),
        None,
        &["auth.key_reload=1h"],
    );
    let addr = gw.local_addr();
    assert_eq!(register(addr, "rot@example.com").0, 201);
    let (status, t) = login(addr, "rot@example.com", STRONG);
    assert_eq!(status, 200, "{t}");
    let first = t["access_token"].as_str().unwrap().to_string();
    me_until(addr, &first, 200, Duration::from_secs(10));
    // Refresh until the auth service signs with a key made after the gateway's last fetch.
    let mut refresh = t["refresh_token"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let rotated = loop {
        let (status, r) = call(
            addr,
            "POST",
            "/api/auth/refresh",
            None,
            Some(json!({"refresh_token": refresh})),
        );
        assert_eq!(status, 200, "{r}");
        refresh = r["refresh_token"].as_str().unwrap().to_string();
        let access = r["access_token"].as_str().unwrap().to_string();
        if kid(&access) != kid(&first) {
            break access;
        }
        assert!(Instant::now() < deadline, "no rotation within 30 s");
        std::thread::sleep(Duration::from_millis(200));
    };
    let me = me_until(addr, &rotated, 200, Duration::from_secs(10));
    assert_eq!(me["user"]["email"], "rot@example.com");
    // The previous key still verifies the tokens it signed.
    me_until(addr, &first, 200, Duration::from_secs(1));
    // A made-up key id is refused, and does not make the gateway accept anything else.
    let forged = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut parts: Vec<String> = rotated.split('.').map(str::to_string).collect();
        parts[0] = b64.encode(br#"{"alg":"EdDSA","typ":"JWT","kid":"no-such-key"}"#);
        parts.join(".")
    };
    let (status, e) = call(addr, "GET", "/api/auth/me", Some(&forged), None);
    assert_eq!(status, 401, "{e}");
    stop(gw);
    stop(auth);
}

#[test]
fn an_admin_websocket_sees_logins_logouts_and_role_changes() {
    let server = start(&["ratelimit.enabled=false"]);
    let addr = server.local_addr();
    create_admin(&server, "root@example.com");
    let (_, root) = login(addr, "root@example.com", STRONG);
    let root_token = root["access_token"].as_str().unwrap().to_string();
    let (status, user) = register(addr, "eve@example.com");
    assert_eq!(status, 201);
    let eve_id = user["user"]["id"].as_str().unwrap().to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut ws = ws_connect(addr, &root_token).await;
        for channel in [
            "auth:events:login",
            "auth:events:logout",
            "auth:events:permission_changed",
        ] {
            let ok = ws_subscribe(&mut ws, channel).await;
            assert_eq!(ok["op"], "subscribed", "{ok}");
        }
        let (_, eve) = tokio::task::spawn_blocking(move || login(addr, "eve@example.com", STRONG))
            .await
            .unwrap();
        let eve_token = eve["access_token"].as_str().unwrap().to_string();
        let login_event = ws_next(&mut ws).await;
        assert_eq!(login_event["op"], "event", "{login_event}");
        assert_eq!(login_event["channel"], "auth:events:login");
        assert_eq!(login_event["data"]["user_id"], eve_id.as_str());
        assert_eq!(login_event["data"]["session_id"], eve["session_id"]);
        assert!(login_event["data"]["at_ms"].as_i64().unwrap() > 0);
        let refresh = eve["refresh_token"].as_str().unwrap();
        let text = login_event.to_string();
        assert!(
            !text.contains(&eve_token) && !text.contains(refresh),
            "an event never carries a token: {text}"
        );
        // A user may not read the instance-wide feed.
        let mut eve_ws = ws_connect(addr, &eve_token).await;
        let denied = ws_subscribe(&mut eve_ws, "auth:events:login").await;
        assert_eq!(denied["code"], "forbidden", "{denied}");
        drop(eve_ws);
        let t = eve_token.clone();
        let status = tokio::task::spawn_blocking(move || {
            call(addr, "POST", "/api/auth/logout", Some(&t), None).0
        })
        .await
        .unwrap();
        assert_eq!(status, 204);
        let logout_event = ws_next(&mut ws).await;
        assert_eq!(
            logout_event["channel"], "auth:events:logout",
            "{logout_event}"
        );
        assert_eq!(logout_event["data"]["user_id"], eve_id.as_str());
        assert_eq!(logout_event["data"]["session_id"], eve["session_id"]);
        // Roles changed by an admin: the user's new roles and permissions.
        let (root_token, path) = (
            root_token.clone(),
            format!("/api/auth/users/{eve_id}/roles"),
        );
        let (status, v) = tokio::task::spawn_blocking(move || {
            let roles = json!({"roles": ["admin", "user"]});
            call(addr, "PUT", &path, Some(&root_token), Some(roles))
        })
        .await
        .unwrap();
        assert_eq!(status, 200, "{v}");
        let changed = ws_next(&mut ws).await;
        assert_eq!(
            changed["channel"], "auth:events:permission_changed",
            "{changed}"
        );
        assert_eq!(changed["data"]["user_id"], eve_id.as_str());
        assert_eq!(changed["data"]["roles"], json!(["admin", "user"]));
        let permissions = changed["data"]["permissions"].as_array().unwrap();
        assert!(permissions.iter().any(|p| p == "admin:users"), "{changed}");
        assert!(changed["data"].get("session_id").is_none(), "{changed}");
    });
    stop(server);
}

/// Waits until `addr`'s Redis bridge is connected.
fn redis_up(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, v) = call(addr, "GET", "/health/redis", None, None);
        if v["status"] == "up" {
            return;
        }
        assert!(Instant::now() < deadline, "/health/redis: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn through_redis_a_gateway_only_process_gets_revocations_and_auth_events_at_once() {
    let redis = sdsim_testing::redis::Redis::start();
    let url = redis.url_setting();
    let db = sdsim_testing::postgres::fresh_database_url();
    // Storage reads of revoked sessions an hour apart: only Redis can bring a revocation fast.
    let hourly = "auth.revocation_sync=1h";
    let auth = auth_process(&db, &[&url, hourly]);
    let gw = gateway_process(&db, auth.auth_grpc_addr().unwrap(), None, &[&url, hourly]);
    let addr = gw.local_addr();
    redis_up(auth.local_addr());
    redis_up(addr);
    create_admin(&auth, "root@example.com");
    let (status, root) = login(addr, "root@example.com", STRONG);
    assert_eq!(status, 200, "{root}");
    let root_token = root["access_token"].as_str().unwrap().to_string();
    me_until(addr, &root_token, 200, Duration::from_secs(10));
    assert_eq!(register(addr, "ivy@example.com").0, 201);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // An admin on the gateway sees the events the auth process publishes.
        let mut ws = ws_connect(addr, &root_token).await;
        for channel in ["auth:events:login", "auth:events:logout"] {
            let ok = ws_subscribe(&mut ws, channel).await;
            assert_eq!(ok["op"], "subscribed", "{ok}");
        }
        let (status, ivy) =
            tokio::task::spawn_blocking(move || login(addr, "ivy@example.com", STRONG))
                .await
                .unwrap();
        assert_eq!(status, 200, "{ivy}");
        let event = ws_next(&mut ws).await;
        assert_eq!(event["channel"], "auth:events:login", "{event}");
        assert_eq!(event["data"]["session_id"], ivy["session_id"]);
        let token = ivy["access_token"].as_str().unwrap().to_string();
        let t = token.clone();
        tokio::task::spawn_blocking(move || {
            me_until(addr, &t, 200, Duration::from_secs(10));
            assert_eq!(
                call(addr, "POST", "/api/auth/logout", Some(&t), None).0,
                204
            );
            // Revoked by the auth process; the gateway learns it through Redis.
            me_until(addr, &t, 401, Duration::from_secs(5));
        })
        .await
        .unwrap();
        let event = ws_next(&mut ws).await;
        assert_eq!(event["channel"], "auth:events:logout", "{event}");
        assert_eq!(event["data"]["session_id"], ivy["session_id"]);
    });
    stop(gw);
    stop(auth);
}
