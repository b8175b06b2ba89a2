//! WebSocket end to end over real sockets: a tokio-tungstenite client (and a raw client for what
//! tungstenite refuses to send) against a 2-shard server.

mod support;

use futures_util::{SinkExt, StreamExt};
use sdsim_net::ws::frame::{self, Decoder, Limits, Message as Frame, Opcode, Role};
use sdsim_server::Server;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const ADMIN: &str = "admin-token-0123456789";
const ALICE: &str = "alice-token-0123456789";
const TOKENS: &str = r#"auth.tokens=[{token="admin-token-0123456789",user="ops",roles=["admin"]},{token="alice-token-0123456789",user="alice",roles=["user"]}]"#;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn server(extra: &[&str]) -> Server {
    let mut sets = vec![TOKENS];
    sets.extend_from_slice(extra);
    support::start(&sets)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn connect(addr: SocketAddr, token: Option<&str>) -> Ws {
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    if let Some(t) = token {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let (ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade");
    assert_eq!(resp.status(), 101);
    ws
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// The next JSON message (pings are answered by tungstenite).
async fn next(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message within 5 s")
            .expect("stream open")
            .expect("no error");
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// The close code the server sends next (skipping data).
async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(f))))) => return u16::from(f.code),
            Ok(Some(Ok(Message::Close(None)))) => return 1005,
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

async fn subscribe(ws: &mut Ws, channel: &str, since: Option<(u64, &str)>) -> Value {
    let mut op = json!({"op": "subscribe", "channel": channel});
    if let Some((seq, epoch)) = since {
        op["since"] = json!(seq);
        op["epoch"] = json!(epoch);
    }
    send(ws, op).await;
    let reply = next(ws).await;
    assert_eq!(reply["op"], "subscribed", "{reply}");
    reply
}

fn publish(addr: SocketAddr, token: &str, body: &str) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .post(&format!("http://{addr}/api/publish"))
        .header("authorization", &format!("Bearer {token}"))
        .header("content-type", "application/json")
        .send(body)
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn metric(addr: SocketAddr, line_prefix: &str) -> u64 {
    let text = ureq::get(&format!("http://{addr}/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(line_prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[sdsim_testing::backends(epoll, io_uring)]
fn subscribers_on_both_shards_receive_every_event_in_order() {
    let server = server(&[]);
    let addr = server.local_addr();
    rt().block_on(async {
        // SO_REUSEPORT spreads connections by hash: connect until both shards hold some.
        let mut clients = Vec::new();
        while clients.len() < 8
            || metric(addr, "sdsim_connections_open{shard=\"0\"}") == 0
            || metric(addr, "sdsim_connections_open{shard=\"1\"}") == 0
        {
            assert!(clients.len() < 64, "every connection landed on one shard");
            let mut ws = connect(addr, Some(ALICE)).await;
            let reply = subscribe(&mut ws, "system:announcements", None).await;
            assert_eq!(reply["seq"], 0);
            assert_eq!(reply["recovered"], false);
            clients.push(ws);
        }
        for i in 1..=50 {
            let (status, body) = tokio::task::spawn_blocking(move || {
                publish(
                    addr,
                    ADMIN,
                    &format!(r#"{{"channel":"system:announcements","data":{{"n":{i}}}}}"#),
                )
            })
            .await
            .unwrap();
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["seq"], i);
        }
        let subscribers = clients.len() as u64;
        for ws in &mut clients {
            for i in 1..=50u64 {
                let ev = next(ws).await;
                assert_eq!(ev["op"], "event");
                assert_eq!(ev["channel"], "system:announcements");
                assert_eq!(ev["seq"], i);
                assert_eq!(ev["data"], json!({"n": i}));
            }
        }
        // Both shards served subscribers, and events crossed between them in batches.
        assert!(metric(addr, "sdsim_bus_forward_batches_total") >= 1);
        assert_eq!(metric(addr, "sdsim_bus_delivered_total"), subscribers * 50);
    });
    support::stop(server);
}

#[sdsim_testing::backends(epoll, io_uring)]
fn first_message_auth_policy_and_protocol_errors() {
    let server = server(&[]);
    let addr = server.local_addr();
    rt().block_on(async {
        let mut ws = connect(addr, None).await;
        send(&mut ws, json!({"op": "ping"})).await;
        assert_eq!(next(&mut ws).await, json!({"op": "pong"}));
        send(
            &mut ws,
            json!({"op": "subscribe", "channel": "system:announcements"}),
        )
        .await;
        let err = next(&mut ws).await;
        assert_eq!(
            (err["op"].as_str(), err["code"].as_str()),
            (Some("error"), Some("unauthenticated"))
        );
        send(&mut ws, json!({"op": "auth", "token": ALICE})).await;
        assert_eq!(
            next(&mut ws).await,
            json!({"op": "authenticated", "user": "alice"})
        );

        let cases = [
            (
                json!({"op": "subscribe", "channel": "notifications:user:bob"}),
                "forbidden",
            ),
            (
                json!({"op": "subscribe", "channel": "auth:events:login"}),
                "forbidden",
            ),
            (
                json!({"op": "subscribe", "channel": "nonsense:x"}),
                "bad_channel",
            ),
            (
                json!({"op": "subscribe", "channel": "has space"}),
                "bad_channel",
            ),
            (json!({"op": "subscribe"}), "bad_request"),
            (json!({"op": "fly"}), "bad_request"),
            (
                json!({"op": "unsubscribe", "channel": "system:announcements"}),
                "not_subscribed",
            ),
            (
                json!({"op": "auth", "token": ALICE}),
                "already_authenticated",
            ),
        ];
        for (op, code) in cases {
            send(&mut ws, op.clone()).await;
            let err = next(&mut ws).await;
            assert_eq!(err["op"], "error", "{op}");
            assert_eq!(err["code"], code, "{op} -> {err}");
            assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
        ws.send(Message::text("{not json")).await.unwrap();
        assert_eq!(next(&mut ws).await["code"], "bad_request");
        // Still usable after every error.
        subscribe(&mut ws, "notifications:user:alice", None).await;
        send(
            &mut ws,
            json!({"op": "subscribe", "channel": "notifications:user:alice"}),
        )
        .await;
        assert_eq!(next(&mut ws).await["code"], "already_subscribed");
        send(
            &mut ws,
            json!({"op": "unsubscribe", "channel": "notifications:user:alice"}),
        )
        .await;
        assert_eq!(
            next(&mut ws).await,
            json!({"op": "unsubscribed", "channel": "notifications:user:alice"})
        );
        // Binary is not this protocol: 1003.
        ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
        assert_eq!(close_code(&mut ws).await, 1003);

        // A bad token in the first message: error, then close 1008.
        let mut ws = connect(addr, None).await;
        send(
            &mut ws,
            json!({"op": "auth", "token": "wrong-token-0123456789"}),
        )
        .await;
        assert_eq!(next(&mut ws).await["code"], "unauthorized");
        assert_eq!(close_code(&mut ws).await, 1008);
    });
    support::stop(server);
}

#[sdsim_testing::backends(epoll, io_uring)]
fn auth_timeout_closes_with_1008() {
    let server = server(&["websocket.auth_timeout=300ms"]);
    let addr = server.local_addr();
    rt().block_on(async {
        let mut ws = connect(addr, None).await;
        assert_eq!(next(&mut ws).await["code"], "unauthenticated");
        assert_eq!(close_code(&mut ws).await, 1008);
    });
    support::stop(server);
}

#[sdsim_testing::backends(epoll, io_uring)]
fn browser_style_client_with_subprotocol_token_and_origin() {
    let server = server(&[r#"websocket.allowed_origins=["https://app.example"]"#]);
    let addr = server.local_addr();
    rt().block_on(async {
        let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
        let h = req.headers_mut();
        h.insert("origin", "https://app.example".parse().unwrap());
        h.insert(
            "sec-websocket-protocol",
            format!("sdsim.v1, bearer.{ALICE}").parse().unwrap(),
        );
        let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert_eq!(resp.headers()["sec-websocket-protocol"], "sdsim.v1");
        subscribe(&mut ws, "notifications:user:alice", None).await;
        let (status, _) = tokio::task::spawn_blocking(move || {
            publish(
                addr,
                ADMIN,
                r#"{"channel":"notifications:user:alice","data":"run finished"}"#,
            )
        })
        .await
        .unwrap();
        assert_eq!(status, 200);
        let ev = next(&mut ws).await;
        assert_eq!(ev["data"], "run finished");

        // Another origin is refused before the upgrade.
        let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
        req.headers_mut()
            .insert("origin", "https://evil.example".parse().unwrap());
        match tokio_tungstenite::connect_async(req).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 403)
            }
            other => panic!("expected 403, got {other:?}"),
        }
    });
    support::stop(server);
}

#[sdsim_testing::backends(epoll, io_uring)]
fn resume_after_reconnect_recovers_missed_events_or_says_it_cannot() {
    let server = server(&["bus.history_size=5"]);
    let addr = server.local_addr();
    let publish_n = move |channel: &'static str, from: u64, to: u64| {
        for i in from..=to {
            let (status, _) = publish(
                addr,
                ADMIN,
                &format!(r#"{{"channel":"{channel}","data":{i}}}"#),
            );
            assert_eq!(status, 200);
        }
    };
    rt().block_on(async {
        let channel = "system:announcements";
        let mut ws = connect(addr, Some(ALICE)).await;
        let first = subscribe(&mut ws, channel, None).await;
        let epoch = first["epoch"].as_str().unwrap().to_string();
        tokio::task::spawn_blocking(move || publish_n(channel, 1, 3))
            .await
            .unwrap();
        for i in 1..=3 {
            assert_eq!(next(&mut ws).await["seq"], i);
        }
        ws.close(None).await.unwrap();
        tokio::task::spawn_blocking(move || publish_n(channel, 4, 6))
            .await
            .unwrap();

        // Back with the last seq: the three missed events, in order, then live ones.
        let mut ws = connect(addr, Some(ALICE)).await;
        let reply = subscribe(&mut ws, channel, Some((3, &epoch))).await;
        assert_eq!(reply["recovered"], true);
        assert_eq!(reply["seq"], 6);
        for i in 4..=6 {
            let ev = next(&mut ws).await;
            assert_eq!(
                (ev["seq"].as_u64(), ev["data"].as_u64()),
                (Some(i), Some(i))
            );
        }
        tokio::task::spawn_blocking(move || publish_n(channel, 7, 7))
            .await
            .unwrap();
        assert_eq!(next(&mut ws).await["seq"], 7);

        // Too far behind for a history of 5: told so, no events replayed.
        let mut late = connect(addr, Some(ALICE)).await;
        let reply = subscribe(&mut late, channel, Some((1, &epoch))).await;
        assert_eq!(reply["recovered"], false);
        assert_eq!(reply["seq"], 7);
        // Another epoch (the channel was recreated, or another instance): not recoverable.
        let mut other = connect(addr, Some(ALICE)).await;
        let reply = subscribe(&mut other, channel, Some((6, "0000"))).await;
        assert_eq!(reply["recovered"], false);
        tokio::task::spawn_blocking(move || publish_n(channel, 8, 8))
            .await
            .unwrap();
        assert_eq!(next(&mut late).await["seq"], 8);
        assert_eq!(next(&mut other).await["seq"], 8);
    });
    support::stop(server);
}

#[sdsim_testing::backends(epoll, io_uring)]
fn slow_consumer_is_closed_with_1008_and_others_keep_receiving() {
    // One shard: a publish returns once its event is in both clients' queues, or refused by a
    // closing one, so the bus's delivery count tells when the server gave up on the slow
    // client. That client reads nothing until then; its close frame waits behind the kernel
    // buffers meanwhile, which the write and idle timeouts must allow.
    let server = server(&[
        "runtime.shards=1",
        "websocket.max_outbound_bytes=65536",
        "websocket.close_timeout=60s",
        "websocket.idle_timeout=600s",
        "http.write_timeout=600s",
        "ratelimit.enabled=false",
    ]);
    let addr = server.local_addr();
    let delivered = move || metric(addr, "sdsim_bus_delivered_total");
    let slow_closes = move || metric(addr, "sdsim_ws_closed_total{how=\"slow_consumer\"}");
    rt().block_on(async {
        let mut slow = connect(addr, Some(ALICE)).await;
        subscribe(&mut slow, "system:announcements", None).await;
        let mut fast = connect(addr, Some(ALICE)).await;
        subscribe(&mut fast, "system:announcements", None).await;
        let pad = "x".repeat(16 * 1024);
        // ~19 MB: several times what the kernel buffers between the server and a client that
        // reads nothing can hold (the server's send buffer grows to 4 MB at most here).
        let most = 1200u64;
        // The fast client reads each event before the next is published, so however the
        // machine schedules it, its queue never holds more than one (16 KiB of the 64 KiB
        // allowed); the slow client's fills.
        let (published_tx, mut published_rx) = tokio::sync::mpsc::unbounded_channel();
        let (read_tx, read_rx) = std::sync::mpsc::channel();
        let reader = async {
            while let Some(seq) = published_rx.recv().await {
                let ev = next(&mut fast).await;
                assert_eq!(ev["seq"], seq);
                let _ = read_tx.send(seq);
            }
        };
        let publisher = tokio::task::spawn_blocking(move || {
            for seq in 1..=most {
                let body = format!(
                    r#"{{"channel":"system:announcements","data":{{"i":{seq},"pad":"{pad}"}}}}"#
                );
                assert_eq!(publish(addr, ADMIN, &body).0, 200);
                let _ = published_tx.send(seq);
                assert_eq!(
                    read_rx.recv_timeout(Duration::from_secs(10)),
                    Ok(seq),
                    "the fast client did not read event {seq}"
                );
                // A scrape is dearer than a publish: look every 16 events.
                if seq % 16 == 0 && delivered() < 2 * seq {
                    return;
                }
            }
            panic!("{most} events did not fill the slow client's queue");
        });
        reader.await;
        publisher.await.unwrap();
        // The slow client reads what was flushed before, then the close frame.
        assert_eq!(close_code(&mut slow).await, 1008);
    });
    // Counted when the slow connection has ended, which the server sees shortly after.
    let counted_by = std::time::Instant::now() + Duration::from_secs(10);
    while slow_closes() == 0 {
        assert!(
            std::time::Instant::now() < counted_by,
            "no slow consumer counted"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(slow_closes(), 1, "only the slow client was closed as one");
    support::stop(server);
}

#[sdsim_testing::backends(epoll, io_uring)]
fn handshake_refusals_and_connection_limits() {
    let server = server(&[
        "websocket.max_connections_per_ip=2",
        "websocket.max_connections_per_user=3",
    ]);
    let addr = server.local_addr();
    let raw = |headers: &str| {
        let mut c = support::Client::connect(addr);
        c.send(format!("GET /ws HTTP/1.1\r\nhost: x\r\n{headers}\r\n").as_bytes());
        c.read_response(false)
    };
    let good = "upgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let r = raw("");
    assert_eq!(r.status, 426);
    assert_eq!(r.header("upgrade"), Some("websocket"));
    let r = raw("upgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: 8\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n");
    assert_eq!(
        (r.status, r.header("sec-websocket-version")),
        (426, Some("13"))
    );
    let r = raw("upgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: 13\r\nsec-websocket-key: short\r\n");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("Sec-WebSocket-Key"));
    let r = raw("upgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n");
    assert_eq!(r.status, 400);
    let r = raw(&format!("{good}origin: https://elsewhere.example\r\n"));
    assert_eq!(r.status, 403);
    let r = raw(&format!(
        "{good}authorization: Bearer nope-nope-nope-nope\r\n"
    ));
    assert_eq!(r.status, 401);
    // A good handshake: 101 with the RFC's accept value.
    let mut c = support::Client::connect(addr);
    c.send(format!("GET /ws HTTP/1.1\r\nhost: x\r\n{good}\r\n").as_bytes());
    let r = c.read_response(false);
    assert_eq!(r.status, 101);
    assert_eq!(
        r.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    // Two per IP: the one above plus one more; the third is refused with 503.
    rt().block_on(async {
        let _second = connect(addr, None).await;
        let req = format!("ws://{addr}/ws").into_client_request().unwrap();
        match tokio_tungstenite::connect_async(req).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 503)
            }
            other => panic!("expected 503, got {other:?}"),
        }
    });
    drop(c);
    assert!(
        metric(
            addr,
            "sdsim_ws_refused_total{reason=\"too_many_connections\"}"
        ) >= 1
    );
    support::stop(server);
}

#[sdsim_testing::backends(epoll, io_uring)]
fn per_user_limit_closes_with_1013_after_auth_message() {
    let server = server(&["websocket.max_connections_per_user=1"]);
    let addr = server.local_addr();
    rt().block_on(async {
        let _first = connect(addr, Some(ALICE)).await;
        let mut second = connect(addr, None).await;
        send(&mut second, json!({"op": "auth", "token": ALICE})).await;
        assert_eq!(next(&mut second).await["code"], "too_many_connections");
        assert_eq!(close_code(&mut second).await, 1013);
    });
    support::stop(server);
}

#[sdsim_testing::backends(epoll, io_uring)]
fn publish_endpoint_validates_and_authorises() {
    let server = server(&[]);
    let addr = server.local_addr();
    let cases = [
        (
            ALICE,
            r#"{"channel":"system:announcements","data":1}"#,
            403,
            "forbidden",
        ),
        (
            "nope-nope-nope-nope",
            r#"{"channel":"system:announcements","data":1}"#,
            401,
            "unauthorized",
        ),
        (
            ADMIN,
            r#"{"channel":"system:announcements""#,
            400,
            "invalid_json",
        ),
        (
            ADMIN,
            r#"{"channel":"system:announcements"}"#,
            400,
            "invalid_json",
        ),
        (ADMIN, r#"{"channel":"a b","data":1}"#, 400, "bad_channel"),
        (
            ADMIN,
            r#"{"channel":"x","data":{bad}}"#,
            400,
            "invalid_json",
        ),
        (
            ADMIN,
            r#"{"channel":"x","data":1,"extra":2}"#,
            400,
            "invalid_json",
        ),
        // Strings in `data` are checked too (a raw control character, a bad `\u` escape), and
        // before the channel: this body, refused channel and all, is `invalid_json`, not
        // `bad_channel` (found by the `publish_body` fuzz target).
        (
            ADMIN,
            "{\"channel\":\"x\",\"data\":\"a\u{1}b\"}",
            400,
            "invalid_json",
        ),
        (
            ADMIN,
            "{\"channel\":\"cAp%\",\"data\":\"\\u0\u{14}\u{0}\u{10}(0e9\\n[ [ \"}  ",
            400,
            "invalid_json",
        ),
        (
            ADMIN,
            r#"{"channel":"x","data":"\uZZ"}"#,
            400,
            "invalid_json",
        ),
    ];
    for (token, body, status, code) in cases {
        let (got, v) = publish(addr, token, body);
        assert_eq!(got, status, "{body} -> {v}");
        assert_eq!(v["error"]["code"], code, "{body}");
    }
    assert_eq!(
        publish(
            addr,
            ADMIN,
            r#"{"channel":"project:events:created","data":{"id":"p1"}}"#
        )
        .0,
        200
    );
    support::stop(server);
}

#[sdsim_testing::backends(epoll, io_uring)]
fn shutdown_closes_clients_with_1001() {
    let server = server(&[]);
    let addr = server.local_addr();
    let shutdown = std::sync::Arc::clone(server.shutdown());
    rt().block_on(async {
        let mut ws = connect(addr, Some(ALICE)).await;
        subscribe(&mut ws, "system:announcements", None).await;
        std::thread::spawn(move || shutdown.drain(Duration::from_secs(5)));
        assert_eq!(close_code(&mut ws).await, 1001);
    });
    server.join().unwrap();
}

// ---- a raw client, for frames tungstenite will not send ----

async fn raw_connect(addr: SocketAddr, extra: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nauthorization: Bearer {ALICE}\r\n{extra}\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    (s, head)
}

/// Reads frames (as a client) until a close frame; returns the messages before it and the code.
async fn raw_until_close(s: &mut TcpStream, deflate: bool) -> (Vec<Frame>, u16) {
    let mut d = Decoder::new(
        Role::Client,
        Limits {
            max_frame_bytes: 1 << 24,
            max_message_bytes: 1 << 24,
        },
        deflate,
    );
    let mut buf = bytes::BytesMut::new();
    let mut got = Vec::new();
    loop {
        while let Some(m) = d.decode(&mut buf).unwrap() {
            if let Frame::Close(code, _) = m {
                return (got, code);
            }
            got.push(m);
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("server answers within 5 s")
            .unwrap();
        assert!(n > 0, "connection closed without a close frame");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn client_frame(b0: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    let mask = masked.then_some([1, 2, 3, 4]);
    frame::encode(&mut out, Opcode::Binary, true, false, payload, mask);
    out[0] = b0;
    out.to_vec()
}

#[sdsim_testing::backends(epoll, io_uring)]
fn protocol_violations_close_with_the_rfc_code_and_the_shard_survives() {
    let server = server(&["websocket.max_frame_bytes=1000"]);
    let addr = server.local_addr();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("unmasked frame", client_frame(0x81, b"hi", false), 1002),
        ("reserved opcode", client_frame(0x83, b"", true), 1002),
        ("RSV2 set", client_frame(0x80 | 0x20 | 1, b"x", true), 1002),
        (
            "invalid UTF-8",
            client_frame(0x81, &[0xff, 0xfe], true),
            1007,
        ),
        (
            "frame too big",
            client_frame(0x81, &[b'a'; 1001], true),
            1009,
        ),
        (
            "continuation without start",
            client_frame(0x80, b"x", true),
            1002,
        ),
        (
            "ping over 125 bytes",
            client_frame(0x89, &[0; 126], true),
            1002,
        ),
        (
            "bad close code",
            client_frame(0x88, &[0x03, 0xe7], true),
            1002,
        ),
    ];
    rt().block_on(async {
        for (name, bytes, code) in cases {
            let (mut s, _) = raw_connect(addr, "").await;
            s.write_all(&bytes).await.unwrap();
            eprintln!("case: {name}");
            let (_, got) = raw_until_close(&mut s, false).await;
            assert_eq!(got, code, "{name}");
        }
        // The shard still serves: a normal client works.
        let mut ws = connect(addr, Some(ALICE)).await;
        send(&mut ws, json!({"op": "ping"})).await;
        assert_eq!(next(&mut ws).await, json!({"op": "pong"}));
        // A client close is echoed with its code.
        let (mut s, _) = raw_connect(addr, "").await;
        s.write_all(&client_frame(0x88, &[0x0f, 0xa0, b'o', b'k'], true))
            .await
            .unwrap();
        assert_eq!(raw_until_close(&mut s, false).await.1, 4000);
    });
    assert!(metric(addr, "sdsim_ws_closed_total{how=\"protocol_error\"}") >= 8);
    support::stop(server);
}

/// The text messages a raw client reads from a deflate connection, noting whether any frame
/// came compressed (RSV1).
struct RawTexts {
    /// Everything read, to look at each frame head before it is decoded.
    raw: Vec<u8>,
    frames: bytes::BytesMut,
    decoder: Decoder,
    texts: std::collections::VecDeque<Value>,
    saw_rsv1: bool,
}

impl RawTexts {
    fn new() -> RawTexts {
        RawTexts {
            raw: Vec::new(),
            frames: bytes::BytesMut::new(),
            decoder: Decoder::new(Role::Client, Limits::default(), true),
            texts: Default::default(),
            saw_rsv1: false,
        }
    }

    /// The next text message.
    async fn next(&mut self, s: &mut TcpStream) -> Value {
        let mut chunk = [0u8; 8192];
        while self.texts.is_empty() {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
                .await
                .expect("server answers within 5 s")
                .unwrap();
            assert!(n > 0, "connection closed");
            self.raw.extend_from_slice(&chunk[..n]);
            self.frames.extend_from_slice(&chunk[..n]);
            let buf = &self.raw;
            let mut at = 0;
            while at + 2 <= buf.len() {
                let (len, head) = match buf[at + 1] & 0x7f {
                    126 if at + 4 <= buf.len() => {
                        (u16::from_be_bytes([buf[at + 2], buf[at + 3]]) as usize, 4)
                    }
                    126 | 127 => break,
                    n => (n as usize, 2),
                };
                if at + head + len > buf.len() {
                    break;
                }
                if buf[at] & 0x40 != 0 {
                    self.saw_rsv1 = true;
                }
                at += head + len;
            }
            while let Some(m) = self.decoder.decode(&mut self.frames).unwrap() {
                if let Frame::Text(t) = m {
                    self.texts.push_back(serde_json::from_slice(&t).unwrap());
                }
            }
        }
        self.texts.pop_front().unwrap()
    }
}

#[sdsim_testing::backends(epoll, io_uring)]
fn permessage_deflate_is_negotiated_and_large_events_arrive_compressed() {
    let server = server(&[]);
    let addr = server.local_addr();
    rt().block_on(async {
        let (mut s, head) = raw_connect(addr, "sec-websocket-extensions: permessage-deflate; client_max_window_bits\r\n").await;
        assert!(head.to_ascii_lowercase().contains(
            "sec-websocket-extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        ), "{head}");
        // Subscribe with a compressed client message; the event is published once the
        // server has confirmed the subscription.
        let sub = br#"{"op":"subscribe","channel":"system:announcements"}"#;
        let mut out = bytes::BytesMut::new();
        frame::encode(&mut out, Opcode::Text, true, true, &sdsim_net::ws::deflate::deflate(sub), Some([9, 8, 7, 6]));
        s.write_all(&out).await.unwrap();
        let mut texts = RawTexts::new();
        assert_eq!(texts.next(&mut s).await["op"], "subscribed");
        let big = "component latency ".repeat(200);
        let body = format!(r#"{{"channel":"system:announcements","data":"{big}"}}"#);
        tokio::task::spawn_blocking(move || {
            assert_eq!(publish(addr, ADMIN, &body).0, 200);
        })
        .await
        .unwrap();
        // Read raw bytes: the event frame must carry RSV1.
        assert_eq!(texts.next(&mut s).await["data"], big);
        assert!(texts.saw_rsv1, "the large event was not compressed");
    });
    support::stop(server);
}

#[sdsim_testing::backends(epoll, io_uring)]
fn wss_through_the_same_tls_listener() {
    use std::io::{Read, Write};
    use std::sync::Arc;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = support::temp_dir();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let server = server(&[
        &format!("tls.cert={}", cert_path.display()),
        &format!("tls.key={}", key_path.display()),
    ]);
    let addr = server.local_addr();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let https_publish = {
        let config = Arc::clone(&config);
        move |body: &str| -> String {
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let conn = rustls::ClientConnection::new(Arc::clone(&config), name).unwrap();
            let tcp = std::net::TcpStream::connect(addr).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let req = format!(
                "POST /api/publish HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {ADMIN}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            tls.write_all(req.as_bytes()).unwrap();
            let mut text = String::new();
            let _ = tls.read_to_string(&mut text);
            text
        }
    };
    rt().block_on(async {
        let mut req = format!("wss://localhost:{}/ws", addr.port())
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("authorization", format!("Bearer {ALICE}").parse().unwrap());
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut ws, resp) = tokio_tungstenite::client_async_tls_with_config(
            req,
            tcp,
            None,
            Some(tokio_tungstenite::Connector::Rustls(Arc::clone(&config))),
        )
        .await
        .expect("WSS upgrade");
        assert_eq!(resp.status(), 101);
        subscribe(&mut ws, "system:announcements", None).await;
        let answer = tokio::task::spawn_blocking(move || {
            https_publish(r#"{"channel":"system:announcements","data":"over tls"}"#)
        })
        .await
        .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert_eq!(next(&mut ws).await["data"], "over tls");
        ws.close(None).await.unwrap();
    });
    support::stop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[sdsim_testing::backends(epoll, io_uring)]
fn server_pings_and_closes_silent_clients() {
    let server = server(&[
        "websocket.ping_interval=100ms",
        "websocket.idle_timeout=400ms",
    ]);
    let addr = server.local_addr();
    rt().block_on(async {
        // tungstenite answers pings: the connection outlives several idle timeouts.
        let mut alive = connect(addr, Some(ALICE)).await;
        // A raw client that never answers: pinged, then closed as idle. Timed from before it
        // connects, so the idle timeout cannot have started earlier.
        let began = std::time::Instant::now();
        let (mut silent, _) = raw_connect(addr, "").await;
        // Meanwhile the other client is read (tungstenite answers pings as it reads) for at
        // least 1.5 s and 5 pings, whichever comes last: nothing but pings arrives.
        let keep_reading = async {
            let until = tokio::time::Instant::now() + Duration::from_millis(1500);
            let mut pings = 0;
            while pings < 5 || tokio::time::Instant::now() < until {
                let msg = tokio::time::timeout(Duration::from_secs(10), alive.next())
                    .await
                    .expect("a ping within 10 s")
                    .expect("the connection stays open");
                assert!(matches!(msg, Ok(Message::Ping(_))), "{msg:?}");
                pings += 1;
            }
        };
        let closed = async {
            let got = raw_until_close(&mut silent, false).await;
            (got, began.elapsed())
        };
        let (((frames, code), waited), ()) = tokio::join!(closed, keep_reading);
        assert_eq!(code, 1000);
        assert!(
            frames
                .iter()
                .filter(|f| matches!(f, Frame::Ping(_)))
                .count()
                >= 2,
            "{frames:?}"
        );
        assert!(
            waited >= Duration::from_millis(350) && waited < Duration::from_secs(10),
            "{waited:?}"
        );
        send(&mut alive, json!({"op": "ping"})).await;
        assert_eq!(next(&mut alive).await, json!({"op": "pong"}));
    });
    support::stop(server);
}
