//! The peer server for WebSocket benchmarks: an idiomatic axum 0.8 broadcast server (axum's `ws`
//! feature, i.e. tokio-tungstenite) speaking the same JSON protocol as sdsim's `/ws`.
//!
//! - `GET /ws`: WebSocket upgrade. The bearer token comes from the `Authorization` header or
//!   from a first `{"op":"auth","token":"..."}` message (any non-empty token; the user id is the
//!   token). Client messages: `subscribe` (optional `since`), `unsubscribe`, `ping`, `auth`.
//! - `POST /api/publish` (`Authorization: Bearer admin`, body `{"channel":"c","data":{...}}`):
//!   sequences the event on its channel, serializes it ONCE, broadcasts the shared bytes to every
//!   subscriber and answers `{"seq":n,"channel":"c"}`.
//! - `GET /health`: 200.
//!
//! Design, as a careful user would write it: one `tokio::sync::broadcast` per channel (its ring
//! of `--queue` slots is the per-subscriber bound), a `std::sync::Mutex<HashMap<..>>` of
//! channels; per connection ONE task that `select!`s over the socket and the connection's
//! subscriptions (a `SelectAll` of abortable broadcast streams). A subscriber that lags by more
//! than `--queue` events (`RecvError::Lagged`) is closed with 1008. No history is kept: a
//! `since` equal to the current sequence is answered `"recovered":true`, anything else `false`.
//! Buffers: `--read-buffer` (axum's default is 128 KiB, eagerly allocated per connection; the
//! benchmark runs the peer with 4 KiB and with the default), `--write-buffer`, and a bounded
//! `--max-write-buffer`. mimalloc as the allocator (sdsim uses it too).

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use clap::Parser;
use futures_util::stream::{self, AbortHandle, BoxStream, SelectAll};
use futures_util::StreamExt;
use mimalloc::MiMalloc;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8101")]
    listen: String,
    /// tokio worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// WebSocket read buffer per connection (bytes; axum's default is 131072).
    #[arg(long, default_value_t = 4096)]
    read_buffer: usize,
    /// WebSocket write buffer target per connection (bytes; axum's default is 131072).
    #[arg(long, default_value_t = 4096)]
    write_buffer: usize,
    /// Upper bound of a connection's write buffer (bytes).
    #[arg(long, default_value_t = 1 << 20)]
    max_write_buffer: usize,
    /// Events a subscriber may lag behind its channel before it is closed (1008): the capacity
    /// of each channel's broadcast ring.
    #[arg(long, default_value_t = 64)]
    queue: usize,
}

struct Channel {
    /// The last sequence number; held while sending so that ring order is sequence order.
    seq: Mutex<u64>,
    tx: broadcast::Sender<Utf8Bytes>,
}

struct Hub {
    channels: Mutex<HashMap<String, Arc<Channel>>>,
    queue: usize,
    read_buffer: usize,
    write_buffer: usize,
    max_write_buffer: usize,
}

impl Hub {
    fn channel(&self, name: &str) -> Arc<Channel> {
        let mut map = self.channels.lock().unwrap();
        if let Some(c) = map.get(name) {
            return c.clone();
        }
        let (tx, _) = broadcast::channel(self.queue);
        let c = Arc::new(Channel {
            seq: Mutex::new(0),
            tx,
        });
        map.insert(name.to_owned(), c.clone());
        c
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = v.strip_prefix("Bearer ")?.trim();
    (!token.is_empty()).then(|| token.to_owned())
}

fn valid_channel(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":_-.".contains(&b))
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

async fn ws_handler(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let user = bearer(&headers);
    upgrade
        .read_buffer_size(hub.read_buffer)
        .write_buffer_size(hub.write_buffer)
        .max_write_buffer_size(hub.max_write_buffer)
        .max_message_size(64 << 10)
        .on_upgrade(move |socket| connection(socket, hub, user))
}

#[derive(Deserialize)]
struct ClientMsg<'a> {
    op: &'a str,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    since: Option<u64>,
    #[serde(default)]
    token: Option<String>,
}

type Sub = BoxStream<'static, Result<Utf8Bytes, broadcast::error::RecvError>>;

fn error_msg(code: &str, message: &str, channel: Option<&str>) -> Message {
    let mut s = format!(
        r#"{{"op":"error","code":{},"message":{}"#,
        json_str(code),
        json_str(message)
    );
    if let Some(c) = channel {
        s.push_str(&format!(r#","channel":{}"#, json_str(c)));
    }
    s.push('}');
    Message::Text(s.into())
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}

async fn connection(mut socket: WebSocket, hub: Arc<Hub>, mut user: Option<String>) {
    let mut subs: SelectAll<Sub> = SelectAll::new();
    let mut handles: HashMap<String, AbortHandle> = HashMap::new();
    let auth_deadline = tokio::time::sleep(Duration::from_secs(10));
    tokio::pin!(auth_deadline);
    loop {
        tokio::select! {
            incoming = socket.recv() => {
                let text = match incoming {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue, // ping/pong are answered by tungstenite; binary ignored
                };
                let Ok(msg) = sonic_rs::from_str::<ClientMsg>(text.as_str()) else {
                    if socket.send(error_msg("bad_request", "invalid message", None)).await.is_err() {
                        break;
                    }
                    continue;
                };
                let reply = match (msg.op, &user) {
                    ("ping", _) => Message::Text(Utf8Bytes::from_static(r#"{"op":"pong"}"#)),
                    ("auth", _) => match msg.token.filter(|t| !t.is_empty()) {
                        Some(t) => {
                            user = Some(t);
                            continue;
                        }
                        None => error_msg("unauthorized", "empty token", None),
                    },
                    (_, None) => error_msg("unauthorized", "authenticate first", msg.channel.as_deref()),
                    ("subscribe", Some(_)) => match msg.channel {
                        Some(name) if valid_channel(&name) => {
                            if handles.contains_key(&name) {
                                error_msg("already_subscribed", "already subscribed", Some(&name))
                            } else {
                                let channel = hub.channel(&name);
                                let (rx, seq) = {
                                    let seq = channel.seq.lock().unwrap();
                                    (channel.tx.subscribe(), *seq)
                                };
                                let (s, handle) = stream::abortable(stream::unfold(rx, |mut rx| async move {
                                    let item = rx.recv().await;
                                    Some((item, rx))
                                }));
                                subs.push(s.boxed());
                                handles.insert(name.clone(), handle);
                                let mut r = format!(r#"{{"op":"subscribed","channel":{},"seq":{seq}"#, json_str(&name));
                                if let Some(since) = msg.since {
                                    r.push_str(if since == seq { r#","recovered":true"# } else { r#","recovered":false"# });
                                }
                                r.push('}');
                                Message::Text(r.into())
                            }
                        }
                        other => error_msg("bad_channel", "invalid channel", other.as_deref()),
                    },
                    ("unsubscribe", Some(_)) => match msg.channel {
                        Some(name) => match handles.remove(&name) {
                            Some(h) => {
                                h.abort();
                                Message::Text(format!(r#"{{"op":"unsubscribed","channel":{}}}"#, json_str(&name)).into())
                            }
                            None => error_msg("not_subscribed", "not subscribed", Some(&name)),
                        },
                        None => error_msg("bad_channel", "missing channel", None),
                    },
                    _ => error_msg("bad_request", "unknown op", None),
                };
                if socket.send(reply).await.is_err() {
                    break;
                }
            }
            Some(event) = subs.next(), if !subs.is_empty() => match event {
                Ok(bytes) => {
                    if socket.send(Message::Text(bytes)).await.is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let _ = socket.send(close(1008, "slow consumer")).await;
                    break;
                }
                Err(broadcast::error::RecvError::Closed) => {}
            },
            () = &mut auth_deadline, if user.is_none() => {
                let _ = socket.send(close(1008, "authentication timeout")).await;
                break;
            }
        }
    }
}

#[derive(Deserialize)]
struct PublishReq<'a> {
    channel: String,
    #[serde(borrow)]
    data: sonic_rs::LazyValue<'a>,
}

async fn publish(State(hub): State<Arc<Hub>>, headers: HeaderMap, body: Bytes) -> Response {
    if bearer(&headers).as_deref() != Some("admin") {
        return (StatusCode::UNAUTHORIZED, r#"{"error":"unauthorized"}"#).into_response();
    }
    let Ok(req) = sonic_rs::from_slice::<PublishReq>(&body) else {
        return (StatusCode::BAD_REQUEST, r#"{"error":"bad request"}"#).into_response();
    };
    if !valid_channel(&req.channel) {
        return (StatusCode::BAD_REQUEST, r#"{"error":"bad channel"}"#).into_response();
    }
    let channel = hub.channel(&req.channel);
    let name = json_str(&req.channel);
    let seq = {
        let mut seq = channel.seq.lock().unwrap();
        *seq += 1;
        let event = format!(
            r#"{{"op":"event","channel":{name},"seq":{},"data":{}}}"#,
            *seq,
            req.data.as_raw_str()
        );
        // No subscribers is not an error.
        let _ = channel.tx.send(Utf8Bytes::from(event));
        *seq
    };
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!(r#"{{"seq":{seq},"channel":{name}}}"#),
    )
        .into_response()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let hub = Arc::new(Hub {
            channels: Mutex::new(HashMap::new()),
            queue: args.queue.max(1),
            read_buffer: args.read_buffer,
            write_buffer: args.write_buffer,
            max_write_buffer: args.max_write_buffer.max(args.write_buffer + (64 << 10)),
        });
        let app = Router::new()
            .route("/ws", get(ws_handler))
            .route("/api/publish", post(publish))
            .route(
                "/health",
                get(|| async {
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        r#"{"status":"ok"}"#,
                    )
                }),
            )
            .with_state(hub);
        let listener = tokio::net::TcpListener::bind(&args.listen).await?;
        eprintln!(
            "peer-ws listening on {} with {} worker thread(s), read buffer {} B, write buffer {} B, queue {}",
            args.listen, args.threads, args.read_buffer, args.write_buffer, args.queue
        );
        axum::serve(listener, app).await?;
        Ok(())
    })
}
