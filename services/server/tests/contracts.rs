//! The contracts end to end: the one authentication layer gives a token the same caller on
//! HTTP, WebSocket and gRPC, and the remote client of a contract answers what the service in
//! process answers, failures included.

mod support;

use futures_util::{SinkExt, StreamExt};
use sdsim_auth::contract::{PermissionCheck, SessionCheck, TokenCheck, UserRef};
use sdsim_auth::{AuthService, Failure, RemoteAuth};
use sdsim_contract::{Caller, Remote};
use sdsim_projects::projects::{ProjectService, RemoteProjects};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use support::{call, login, register, runtime, start, stop, STRONG};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const ADMIN: &str = "admin-token-0123456789";
const TOKENS: &str = r#"auth.tokens=[{token="admin-token-0123456789",user="ops",roles=["admin"]}]"#;

/// Runs `f` on a monoio runtime of its own (the contracts' remote clients run on monoio).
fn on_monoio<F: std::future::Future>(f: F) -> F::Output {
    monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .unwrap()
        .block_on(f)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("an answer within 5 s")
            .expect("the connection is open")
            .unwrap();
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

/// What the WebSocket endpoint answers `{"op":"auth"}` with `token`, and then — when it
/// authenticated — a subscription to `channel`.
async fn over_websocket(addr: SocketAddr, token: &str, channel: &str) -> (Value, Value) {
    let req = format!("ws://{addr}/ws").into_client_request().unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let send = |v: Value| Message::text(v.to_string());
    ws.send(send(json!({"op": "auth", "token": token})))
        .await
        .unwrap();
    let authenticated = next_json(&mut ws).await;
    if authenticated["op"] != "authenticated" {
        return (authenticated, Value::Null);
    }
    ws.send(send(json!({"op": "subscribe", "channel": channel})))
        .await
        .unwrap();
    (authenticated, next_json(&mut ws).await)
}

#[sdsim_testing::backends(epoll, io_uring, epoll_postgres, io_uring_postgres)]
fn one_token_is_one_caller_on_http_websocket_and_grpc() {
    let server = start(&["ratelimit.enabled=false", TOKENS]);
    let addr = server.local_addr();
    let grpc = server.project_grpc_addr().unwrap();
    let ada_id = register(addr, "ada@example.com")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, tokens) = login(addr, "ada@example.com", STRONG);
    let ada = tokens["access_token"].as_str().unwrap().to_string();
    // An access token (a user with a session) and a static operator token (configured, an
    // admin) authenticate the same way on every surface.
    for (token, user, roles) in [
        (ada.as_str(), ada_id.as_str(), "user"),
        (ADMIN, "ops", "admin"),
    ] {
        let (status, project, _) = call(
            addr,
            "POST",
            "/api/projects",
            Some(token),
            Some(json!({"name": "one caller", "template_id": "three-tier"})),
        );
        assert_eq!(status, 201, "HTTP as {user}: {project}");
        assert_eq!(project["owner_id"], user);
        let id = project["id"].as_str().unwrap().to_string();

        let (authenticated, subscribed) = runtime().block_on(over_websocket(
            addr,
            token,
            &format!("notifications:user:{user}"),
        ));
        assert_eq!(authenticated, json!({"op": "authenticated", "user": user}));
        assert_eq!(subscribed["op"], "subscribed", "{subscribed}");

        // gRPC, with the token as the call's bearer token: the project service sees the same
        // user, who owns the project made over HTTP.
        let remote = Remote::new(grpc, token, Duration::from_secs(5)).unwrap();
        let who = Caller::configured(user, vec![roles.to_string()]);
        let seen = on_monoio(async { RemoteProjects(remote).get_project(&who, id.clone()).await })
            .unwrap_or_else(|f| panic!("gRPC as {user}: {f}"));
        assert_eq!(
            (seen.id.as_str(), seen.owner_id.as_str()),
            (id.as_str(), user)
        );
    }
    // A refused token is refused on every surface, for the same reason.
    let (status, v, _) = call(
        addr,
        "GET",
        "/api/projects",
        Some("nobody-0123456789"),
        None,
    );
    assert_eq!(
        (status, v["error"]["message"].as_str()),
        (401, Some("the token is not valid"))
    );
    let (refused, _) = runtime().block_on(over_websocket(addr, "nobody-0123456789", "x"));
    assert_eq!(refused["message"], "the token is not valid");
    let remote = Remote::new(grpc, "nobody-0123456789", Duration::from_secs(5)).unwrap();
    let who = Caller::configured("nobody", Vec::new());
    let refused = on_monoio(async { RemoteProjects(remote).get_project(&who, "p".into()).await })
        .unwrap_err();
    assert_eq!(
        refused,
        sdsim_projects::Failure::Forbidden("authorization: the token is not valid".into())
    );
    stop(server);
}

#[sdsim_testing::backends(epoll, io_uring, epoll_postgres, io_uring_postgres)]
fn the_remote_auth_client_answers_what_the_service_in_process_answers() {
    let server = start(&["ratelimit.enabled=false"]);
    let addr = server.local_addr();
    let user_id = register(addr, "eve@example.com")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, tokens) = login(addr, "eve@example.com", STRONG);
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let session = tokens["session_id"].as_str().unwrap().to_string();
    let local = std::sync::Arc::clone(server.auth().unwrap());
    let grpc = server.auth_grpc_addr().unwrap();
    on_monoio(async {
        let remote = RemoteAuth(Remote::new(grpc, "unused", Duration::from_secs(5)).unwrap());
        let at = access.rfind('.').unwrap() + 10;
        let flip = if &access[at..at + 1] == "A" { "B" } else { "A" };
        let tampered = format!("{}{flip}{}", &access[..at], &access[at + 1..]);
        for token in [access.clone(), tampered, "garbage".to_string()] {
            let check = || TokenCheck {
                token: token.clone(),
                calling_service: "test".into(),
            };
            assert_eq!(
                remote.validate_token(check()).await,
                local.validate_token(check()).await,
                "{token}"
            );
        }
        for who in [
            UserRef::Token(access.clone()),
            UserRef::Id(user_id.clone()),
            UserRef::Id("nobody".into()),
            UserRef::Token("garbage".into()),
        ] {
            assert_eq!(
                remote.get_user_context(who.clone()).await,
                local.get_user_context(who.clone()).await,
                "{who:?}"
            );
        }
        for permission in ["project:write", "admin:users"] {
            let check = || PermissionCheck {
                user_id: user_id.clone(),
                permission: permission.into(),
                resource: String::new(),
            };
            assert_eq!(
                remote.check_permission(check()).await,
                local.check_permission(check()).await
            );
        }
        let check = || SessionCheck {
            session_id: session.clone(),
            user_id: Some(user_id.clone()),
        };
        let state = remote.validate_session(check()).await.unwrap();
        assert!(state.active, "{}", state.reason);
        assert_eq!(Ok(state), local.validate_session(check()).await);
        assert_eq!(
            remote.get_user_permissions(user_id.clone()).await,
            local.get_user_permissions(user_id.clone()).await
        );
        // Failures cross with their kind and field, those of decoding a request included.
        assert_eq!(
            remote.get_user_context(UserRef::Id(String::new())).await,
            Err(Failure::Invalid {
                field: "user_id".into(),
                message: "is required".into()
            })
        );
        assert_eq!(
            remote.get_user_permissions(String::new()).await,
            Err(Failure::Invalid {
                field: "user_id".into(),
                message: "is required".into()
            })
        );
        assert_eq!(
            remote.get_user_permissions("nobody".into()).await,
            Err(Failure::NotFound("no user nobody".into()))
        );
        assert_eq!(remote.health_check(()).await, local.health_check(()).await);
    });
    stop(server);
}
