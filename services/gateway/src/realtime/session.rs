//! One client connection: the JSON protocol of docs/architecture.md and the README over the WebSocket driver.
//!
//! client → server: `{"op":"auth","token":".."}`, `{"op":"subscribe","channel":"c","since":42,
//! "epoch":".."}` (`since`, `epoch` optional), `{"op":"unsubscribe","channel":"c"}`,
//! `{"op":"ping"}`. server → client: `subscribed` (with `seq`, `epoch`, `recovered`), `event`,
//! `unsubscribed`, `pong`, `error` (`code`, `message`, `channel` when there is one).
//!
//! A bad message gets an `error` and the connection stays; binary messages close with 1003; a
//! client that does not authenticate within `websocket.auth_timeout` is closed with 1008.

use super::limits::{self, LimitKey, Slot};
use super::op_spans::OpSpans;
use super::{policy, ClientSink, Realtime, WS_ACCEPTED, WS_CLOSED, WS_MESSAGES_IN, WS_OPEN};
use sdsim_contract::Caller;
use sdsim_core::bus::{Since, Subscription};
use sdsim_core::metrics::{Key, LabelValue};
use sdsim_core::runtime::Shard;
use sdsim_net::middleware::trace_context::TraceContext;
use sdsim_net::ws::close;
use sdsim_net::ws::socket::{End, Upgraded, WebSocket};
use sdsim_net::ws::Message;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

/// A message from the client (public so that the fuzz targets decode it as sessions do).
#[derive(Debug, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum ClientOp {
    /// `{"op":"auth","token":".."}`: authenticates the connection.
    Auth {
        /// An access token.
        token: String,
    },
    /// `{"op":"subscribe","channel":"c","since":42,"epoch":".."}`.
    Subscribe {
        /// The channel.
        channel: String,
        /// Replay the events after this sequence number (when the history still has them).
        #[serde(skip_serializing_if = "Option::is_none")]
        since: Option<u64>,
        /// The channel epoch `since` belongs to.
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<String>,
    },
    /// `{"op":"unsubscribe","channel":"c"}`.
    Unsubscribe {
        /// The channel.
        channel: String,
    },
    /// `{"op":"ping"}`: answered with `{"op":"pong"}`.
    Ping,
}

/// Every key a client message may have; which ones an operation takes is checked after.
/// (A struct rather than a tagged enum: serde cannot name the field of a tagged variant whose
/// value has the wrong type, and lets any key through on a variant without fields.)
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fields {
    op: String,
    token: Option<String>,
    channel: Option<String>,
    since: Option<u64>,
    epoch: Option<String>,
}

/// The shape of a client message, first in every error.
const SHAPE: &str = r#"expected {"op": "auth"|"subscribe"|"unsubscribe"|"ping", ...}"#;

/// Why a client message is refused; its text is the `message` of the `bad_request` answer:
/// the expected shape, then the key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientOpError {
    /// Not a JSON object of the known keys with the right types (the decoder's message names
    /// the key).
    #[error("{shape}: {0}", shape = SHAPE)]
    Malformed(String),
    /// `op` is none of the operations.
    #[error("{shape}: `op`: unknown operation `{0}`", shape = SHAPE)]
    UnknownOp(String),
    /// A key that operation `op` does not take.
    #[error("{shape}: `{key}`: not a key of op `{op}`", shape = SHAPE)]
    NotAKeyOf {
        /// The key given.
        key: &'static str,
        /// The operation.
        op: String,
    },
    /// A key that operation `op` needs is absent.
    #[error("{shape}: missing field `{key}` (op `{op}`)", shape = SHAPE)]
    Missing {
        /// The key needed.
        key: &'static str,
        /// The operation.
        op: String,
    },
}

/// Decodes a client's text message; the error names the key at fault.
pub fn decode_client_op(text: &str) -> Result<ClientOp, ClientOpError> {
    let f: Fields = sdsim_net::json::decode(text.as_bytes())
        .map_err(|e| ClientOpError::Malformed(e.to_string()))?;
    let given = [
        ("token", f.token.is_some()),
        ("channel", f.channel.is_some()),
        ("since", f.since.is_some()),
        ("epoch", f.epoch.is_some()),
    ];
    let takes: &[&str] = match f.op.as_str() {
        "auth" => &["token"],
        "subscribe" => &["channel", "since", "epoch"],
        "unsubscribe" => &["channel"],
        "ping" => &[],
        other => return Err(ClientOpError::UnknownOp(other.to_string())),
    };
    if let Some((key, _)) = given.iter().find(|(k, set)| *set && !takes.contains(k)) {
        return Err(ClientOpError::NotAKeyOf {
            key,
            op: f.op.clone(),
        });
    }
    let missing = |key: &'static str| ClientOpError::Missing {
        key,
        op: f.op.clone(),
    };
    Ok(match f.op.as_str() {
        "auth" => ClientOp::Auth {
            token: f.token.ok_or_else(|| missing("token"))?,
        },
        "subscribe" => ClientOp::Subscribe {
            channel: f.channel.ok_or_else(|| missing("channel"))?,
            since: f.since,
            epoch: f.epoch,
        },
        "unsubscribe" => ClientOp::Unsubscribe {
            channel: f.channel.ok_or_else(|| missing("channel"))?,
        },
        _ => ClientOp::Ping,
    })
}

#[derive(Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum ServerOp<'a> {
    Subscribed {
        channel: &'a str,
        seq: u64,
        epoch: &'a str,
        recovered: bool,
    },
    Unsubscribed {
        channel: &'a str,
    },
    Pong,
    Authenticated {
        user: &'a str,
    },
    Error {
        code: &'a str,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        channel: Option<&'a str>,
    },
}

struct Session {
    rt: Rc<Realtime>,
    ws: WebSocket,
    sink: Rc<ClientSink>,
    identity: Option<Caller>,
    subscriptions: HashMap<String, Subscription>,
    slots: Vec<Slot>,
    spans: OpSpans,
    /// The `error` code sent for the operation being handled, if one was.
    refused: RefCell<Option<String>>,
}

impl Session {
    fn send(&self, op: &ServerOp<'_>) {
        if let Ok(text) = sonic_rs::to_vec(op) {
            self.ws.outbox().send_text(&text);
        }
    }

    fn fail(&self, code: &str, message: &str, channel: Option<&str>) {
        self.refused.replace(Some(code.to_owned()));
        self.send(&ServerOp::Error {
            code,
            message,
            channel,
        });
    }

    async fn authenticate(&mut self, token: &str) {
        if self.identity.is_some() {
            return self.fail(
                "already_authenticated",
                "this connection is already authenticated",
                None,
            );
        }
        let identity = match self.rt.authenticator.authenticate(Some(token)) {
            Ok(identity) => identity,
            Err(e) => {
                self.fail("unauthorized", &e.to_string(), None);
                self.ws
                    .outbox()
                    .close(close::POLICY, "authentication failed");
                return;
            }
        };
        let key = LimitKey::User(Arc::clone(&identity.user_id));
        match limits::keyed(key, self.rt.config.max_connections_per_user).await {
            Ok(slot) => self.slots.extend(slot),
            Err(()) => {
                self.fail(
                    "too_many_connections",
                    "this user is at websocket.max_connections_per_user",
                    None,
                );
                self.ws
                    .outbox()
                    .close(close::TRY_AGAIN, "too many connections for this user");
                return;
            }
        }
        self.send(&ServerOp::Authenticated {
            user: &identity.user_id,
        });
        self.identity = Some(identity);
    }

    async fn subscribe(&mut self, channel: String, since: Option<u64>, epoch: Option<String>) {
        let Some(who) = &self.identity else {
            return self.fail(
                "unauthenticated",
                "send {\"op\":\"auth\",\"token\":...} first",
                Some(&channel),
            );
        };
        if let Err(d) = policy::valid_channel(&channel)
            .and_then(|()| self.rt.policy.may_subscribe(who, &channel))
        {
            return self.fail(d.code, &d.message, Some(&channel));
        }
        if let Err(d) = self.rt.may_read(who, &channel).await {
            return self.fail(d.code, &d.message, Some(&channel));
        }
        if self.subscriptions.contains_key(&channel) {
            return self.fail(
                "already_subscribed",
                "already subscribed to this channel",
                Some(&channel),
            );
        }
        if self.subscriptions.len() >= self.rt.config.max_subscriptions {
            return self.fail(
                "too_many_subscriptions",
                "this connection is at websocket.max_subscriptions",
                Some(&channel),
            );
        }
        let since = since.map(|seq| Since { seq, epoch });
        let sink: Rc<dyn sdsim_core::bus::Sink> = Rc::clone(&self.sink) as _;
        match self.rt.bus.subscribe(&channel, sink, since).await {
            Ok((subscription, attached)) => {
                self.send(&ServerOp::Subscribed {
                    channel: &channel,
                    seq: attached.seq,
                    epoch: &attached.epoch,
                    recovered: attached.recovered,
                });
                for event in &attached.missed {
                    self.sink_push(event);
                }
                subscription.activate(attached.seq);
                self.subscriptions.insert(channel, subscription);
            }
            Err(e) => self.fail("unavailable", &e.to_string(), Some(&channel)),
        }
    }

    fn sink_push(&self, event: &Arc<sdsim_core::bus::Event>) {
        use sdsim_core::bus::Sink;
        self.sink.push(event);
    }

    async fn handle(&mut self, text: &str) {
        let op = match decode_client_op(text) {
            Ok(op) => op,
            Err(refused) => return self.fail("bad_request", &refused.to_string(), None),
        };
        let (name, channel) = match &op {
            ClientOp::Auth { .. } => ("auth", None),
            ClientOp::Subscribe { channel, .. } => ("subscribe", Some(channel)),
            ClientOp::Unsubscribe { channel } => ("unsubscribe", Some(channel)),
            ClientOp::Ping => return self.send(&ServerOp::Pong),
        };
        let span = self.spans.begin();
        let channel = channel.filter(|_| self.spans.recording()).cloned();
        self.refused.replace(None);
        let context = span.as_ref().map(|s| s.context.clone());
        // The calls the operation makes are children of its span.
        sdsim_net::otel::current::traced(context, self.apply(op)).await;
        if let Some(span) = span {
            let refused = self.refused.take();
            self.spans.end(span, name, channel.as_deref(), refused);
        }
    }

    async fn apply(&mut self, op: ClientOp) {
        match op {
            ClientOp::Auth { token } => self.authenticate(&token).await,
            ClientOp::Subscribe {
                channel,
                since,
                epoch,
            } => self.subscribe(channel, since, epoch).await,
            ClientOp::Unsubscribe { channel } => {
                if self.subscriptions.remove(&channel).is_some() {
                    self.send(&ServerOp::Unsubscribed { channel: &channel });
                } else {
                    self.fail(
                        "not_subscribed",
                        "not subscribed to this channel",
                        Some(&channel),
                    );
                }
            }
            ClientOp::Ping => self.send(&ServerOp::Pong),
        }
    }
}

/// Runs one client connection to its end.
pub async fn run(
    conn: Upgraded,
    deflate: bool,
    identity: Option<Caller>,
    slots: Vec<Option<Slot>>,
    upgrade: Option<TraceContext>,
) {
    let Some(rt) = Shard::try_current().and_then(|s| s.get::<Realtime>()) else {
        return;
    };
    let metrics = Rc::clone(&rt.metrics);
    metrics.inc(Key::plain(WS_ACCEPTED), 1);
    metrics.gauge_add(Key::plain(WS_OPEN), 1);
    let ws = WebSocket::start(conn, Rc::clone(&rt.settings), deflate);
    let sink = Rc::new(ClientSink::new(
        Rc::clone(ws.outbox()),
        rt.config.compression_min_bytes,
    ));
    let auth_deadline = Instant::now() + rt.config.auth_timeout;
    let mut s = Session {
        rt,
        ws,
        sink,
        identity,
        subscriptions: HashMap::new(),
        slots: slots.into_iter().flatten().collect(),
        spans: OpSpans::new(upgrade),
        refused: RefCell::new(None),
    };
    let mut timed_out = false;
    loop {
        let deadline = (s.identity.is_none() && !timed_out).then_some(auth_deadline);
        let message = {
            match s.ws.recv_by(deadline).await {
                Ok(m) => m,
                Err(_) => {
                    timed_out = true;
                    s.fail(
                        "unauthenticated",
                        "no auth message within websocket.auth_timeout",
                        None,
                    );
                    s.ws.outbox().close(close::POLICY, "authentication timeout");
                    continue;
                }
            }
        };
        let Some(message) = message else { break };
        metrics.inc(Key::plain(WS_MESSAGES_IN), 1);
        match message {
            Message::Text(_) => {
                let text = message.as_text().unwrap_or_default().to_string();
                // Boxed: an idle connection's future then holds no room for this path.
                Box::pin(s.handle(&text)).await;
            }
            _ => {
                s.ws.outbox()
                    .close(close::UNSUPPORTED, "this protocol uses text messages")
            }
        }
    }
    let how = match s.ws.end() {
        Some(End::PeerClosed(_)) => "peer_closed",
        Some(End::ServerClosed(close::GOING_AWAY)) => "shutdown",
        Some(End::ServerClosed(_)) => "server_closed",
        Some(End::Protocol(_)) => "protocol_error",
        Some(End::SlowConsumer) => "slow_consumer",
        Some(End::WriteTimeout) => "write_timeout",
        Some(End::Io) | None => "io",
    };
    metrics.inc(Key::with1(WS_CLOSED, ("how", LabelValue::Str(how))), 1);
    metrics.gauge_add(Key::plain(WS_OPEN), -1);
    drop(s.subscriptions);
    drop(s.slots);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_decode() {
        assert_eq!(decode_client_op(r#"{"op":"ping"}"#), Ok(ClientOp::Ping));
        assert_eq!(
            decode_client_op(r#"{"op":"subscribe","channel":"c","since":4}"#),
            Ok(ClientOp::Subscribe {
                channel: "c".into(),
                since: Some(4),
                epoch: None
            })
        );
        assert_eq!(
            decode_client_op(r#"{"op":"auth","token":"t"}"#),
            Ok(ClientOp::Auth { token: "t".into() })
        );
    }

    /// Each refusal names the key at fault. Before, a value of the wrong type gave serde's
    /// "invalid type" without the key, and `ping` took any key (serde does not apply
    /// `deny_unknown_fields` to a tagged variant without fields).
    #[test]
    fn refusals_name_the_key() {
        let cases = [
            (r#"{"op":"ping","x":1}"#, "`x`"),
            (r#"{"op":"ping","channel":"c"}"#, "`channel`"),
            (
                r#"{"op":"subscribe","channel":"c","since":"42"}"#,
                "`since`",
            ),
            (r#"{"op":"auth","token":5}"#, "`token`"),
            (r#"{"op":1}"#, "`op`"),
            (r#"{"op":"fly"}"#, "`fly`"),
            (r#"{"channel":"c"}"#, "`op`"),
            (r#"{"op":"unsubscribe"}"#, "`channel`"),
        ];
        for (text, key) in cases {
            let err = decode_client_op(text).expect_err(text).to_string();
            assert!(err.starts_with(SHAPE), "{err}");
            assert!(err.contains(key), "{text}: {err} does not name {key}");
        }
    }
}
