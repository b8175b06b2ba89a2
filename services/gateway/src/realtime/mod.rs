//! Real time: the WebSocket endpoint `/ws`, the operator publish endpoint `/api/publish`, and
//! the glue between client connections and the sharded bus.
//!
//! - [`session`]: one client connection — authentication, subscribe / unsubscribe / ping, events.
//! - [`policy`]: who may subscribe to which channel.
//! - [`limits`]: connections per instance, per IP, per user.
//! - `op_spans`: a span per session operation when tracing is on.
//!
//! Services publish with [`publish`] (or `Bus::publish`) on any shard.

pub mod limits;
mod op_spans;
pub mod policy;
pub mod session;

use crate::config::WebSocketConfig;
use crate::state::GatewayState;
use bytes::Bytes;
use http::StatusCode;
use policy::ChannelPolicy;
use sdsim_contract::{bearer, http_caller, Authenticate, Caller};
use sdsim_core::bus::{Bus, BusError, Event, Sink};
use sdsim_core::metrics::{Key, LabelValue, Metrics};
use sdsim_core::runtime::Shard;
use sdsim_core::shutdown::Phase;
use sdsim_net::http::router::Router;
use sdsim_net::http::types::{error, json, ClientAddr, Request, Response};
use sdsim_net::ws::frame::{self as wsframe, Opcode};
use sdsim_net::ws::handshake;
use sdsim_net::ws::socket::{text_frame, Outbox, Settings};
use sdsim_simulations::SimulationService;
use std::rc::Rc;
use std::sync::Arc;

/// Metric: open WebSocket connections.
pub const WS_OPEN: &str = "sdsim_ws_connections";
/// Metric: WebSocket connections accepted.
pub const WS_ACCEPTED: &str = "sdsim_ws_connections_total";
/// Metric: upgrades refused, by reason.
pub const WS_REFUSED: &str = "sdsim_ws_refused_total";
/// Metric: connections ended, by how.
pub const WS_CLOSED: &str = "sdsim_ws_closed_total";
/// Metric: client messages received.
pub const WS_MESSAGES_IN: &str = "sdsim_ws_messages_in_total";

/// This shard's real-time state.
pub struct Realtime {
    /// The bus.
    pub bus: Rc<Bus>,
    settings: Rc<Settings>,
    handshake: handshake::Policy,
    config: WebSocketConfig,
    authenticator: Arc<dyn Authenticate>,
    policy: Arc<dyn ChannelPolicy>,
    state: Arc<GatewayState>,
    metrics: Rc<Metrics>,
    /// The simulation service, which decides who may read a run's live metrics.
    runs: std::cell::RefCell<Option<Rc<dyn SimulationService>>>,
}

impl Realtime {
    /// Sets how this shard reaches the simulation service (`None`: nobody but an admin may
    /// subscribe to `simulation:data:{id}`).
    pub fn set_runs(&self, runs: Option<Rc<dyn SimulationService>>) {
        *self.runs.borrow_mut() = runs;
    }

    /// Whether `who` may read channel `channel` beyond the static policy: the live metrics of
    /// a run are for those who may see the run (a member of its project, or who started it).
    async fn may_read(&self, who: &Caller, channel: &str) -> Result<(), policy::Denied> {
        let (id, sweep) = match (
            channel.strip_prefix("simulation:data:"),
            channel.strip_prefix("simulation:sweep:"),
        ) {
            (Some(id), _) => (id, false),
            (_, Some(id)) => (id, true),
            _ => return Ok(()),
        };
        if who.is_admin() {
            return Ok(());
        }
        let runs = self.runs.borrow().clone();
        let Some(runs) = runs else {
            return Err(policy::Denied {
                code: "forbidden",
                message: "no simulation service is reachable to check access to this run".into(),
            });
        };
        let seen = if sweep {
            runs.get_sweep(who, sdsim_simulations::contract::SweepId(id.to_string()))
                .await
                .map(|_| ())
        } else {
            runs.get_simulation_status(who, id.to_string())
                .await
                .map(|_| ())
        };
        match seen {
            Ok(()) => Ok(()),
            Err(sdsim_projects::Failure::Unavailable(m)) => Err(policy::Denied {
                code: "unavailable",
                message: m,
            }),
            Err(_) => Err(policy::Denied {
                code: "forbidden",
                message: "no such run, or it is not yours to watch".into(),
            }),
        }
    }
}

/// The encoder of event frames: `{"op":"event","channel":..,"seq":..,"data":..}` in one
/// unmasked text frame, built once per event.
pub fn encode_event(channel: &str, seq: u64, data: &[u8]) -> Bytes {
    let channel = sonic_rs::to_string(channel).unwrap_or_else(|_| "\"\"".into());
    let mut text = Vec::with_capacity(48 + channel.len() + data.len());
    text.extend_from_slice(b"{\"op\":\"event\",\"channel\":");
    text.extend_from_slice(channel.as_bytes());
    text.extend_from_slice(b",\"seq\":");
    text.extend_from_slice(seq.to_string().as_bytes());
    text.extend_from_slice(b",\"data\":");
    text.extend_from_slice(data);
    text.push(b'}');
    wsframe::server_frame(Opcode::Text, &text)
}

/// Installs the bus and real-time state on this shard.
pub fn install(shard: &Shard, state: &Arc<GatewayState>, metrics: Rc<Metrics>) -> Rc<Realtime> {
    let config = &state.config;
    let bus = Bus::install(
        shard,
        config.bus.clone(),
        Arc::new(encode_event),
        state.process_epoch,
        Rc::clone(&metrics),
    );
    if let Some(bridge) = &state.redis {
        bus.set_outlet(bridge.outlet());
    }
    shard.insert(limits::Counts::default());
    let ws = &config.websocket;
    let settings = Rc::new(Settings {
        limits: wsframe::Limits {
            max_frame_bytes: ws.max_frame_bytes,
            max_message_bytes: ws.max_message_bytes,
        },
        ping_interval: ws.ping_interval,
        idle_timeout: ws.idle_timeout,
        close_timeout: ws.close_timeout,
        write_timeout: config.http.write_timeout,
        max_outbound_bytes: ws.max_outbound_bytes,
        compression_min_bytes: ws.compression_min_bytes,
    });
    shard.insert(Realtime {
        bus,
        settings,
        handshake: handshake::Policy {
            allowed_origins: ws.allowed_origins.clone(),
            compression: ws.compression,
        },
        config: ws.clone(),
        authenticator: Arc::clone(&state.authenticator),
        policy: Arc::new(policy::DefaultPolicy),
        state: Arc::clone(state),
        metrics,
        runs: std::cell::RefCell::new(None),
    })
}

/// Registers `/ws` (when enabled) and `POST /api/publish`.
pub fn register(router: &mut Router, state: &Arc<GatewayState>) {
    if state.config.websocket.enabled {
        router
            .route(http::Method::GET, "/ws", upgrade)
            .expect("/ws is registered once");
    }
    router
        .route(http::Method::POST, "/api/publish", publish_route)
        .expect("/api/publish is registered once");
}

fn local() -> Option<Rc<Realtime>> {
    Shard::try_current().and_then(|s| s.get::<Realtime>())
}

/// Publishes `data` (JSON) on `channel` to every subscriber on every shard (and instance, with
/// Redis); returns the event's `seq`.
pub async fn publish(channel: &str, data: Bytes) -> Result<u64, BusError> {
    match Bus::local() {
        Some(bus) => bus.publish(channel, data).await,
        None => Err(BusError::Unavailable),
    }
}

fn refused(rt: &Realtime, status: StatusCode, code: &'static str, message: &str) -> Response {
    rt.metrics
        .inc(Key::with1(WS_REFUSED, ("reason", LabelValue::Str(code))), 1);
    error(status, code, message)
}

async fn upgrade(req: Request) -> Response {
    let Some(rt) = local() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "real time is not running on this shard",
        );
    };
    if rt.state.shutdown.phase() != Phase::Accepting {
        return refused(
            &rt,
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "the server is shutting down",
        );
    }
    let accepted = match handshake::check(&req, &rt.handshake) {
        Ok(a) => a,
        Err(refusal) => {
            rt.metrics.inc(
                Key::with1(WS_REFUSED, ("reason", LabelValue::Str("handshake"))),
                1,
            );
            return refusal.response();
        }
    };
    let Some(instance_slot) = limits::instance(&rt.state.ws_open, rt.config.max_connections) else {
        return refused(
            &rt,
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            "this instance is at websocket.max_connections",
        );
    };
    let ip = req
        .extensions()
        .get::<ClientAddr>()
        .map(|a| a.0.ip())
        .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    let Ok(ip_slot) =
        limits::keyed(limits::LimitKey::Ip(ip), rt.config.max_connections_per_ip).await
    else {
        return refused(
            &rt,
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            "this client IP is at websocket.max_connections_per_ip",
        );
    };
    let token = bearer(req.headers())
        .map(str::to_string)
        .or_else(|| accepted.subprotocol_token.clone());
    let mut user_slot = None;
    let identity = match token {
        None => None,
        Some(token) => match rt.authenticator.authenticate(Some(&token)) {
            Ok(identity) => {
                match limits::keyed(
                    limits::LimitKey::User(Arc::clone(&identity.user_id)),
                    rt.config.max_connections_per_user,
                )
                .await
                {
                    Ok(slot) => user_slot = slot,
                    Err(()) => {
                        return refused(
                            &rt,
                            StatusCode::SERVICE_UNAVAILABLE,
                            "too_many_connections",
                            "this user is at websocket.max_connections_per_user",
                        )
                    }
                }
                Some(identity)
            }
            Err(e) => {
                return refused(
                    &rt,
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    &e.to_string(),
                )
            }
        },
    };
    let deflate = accepted.deflate;
    let slots = vec![Some(instance_slot), ip_slot, user_slot];
    let upgrade = req
        .extensions()
        .get::<sdsim_net::middleware::trace_context::TraceContext>()
        .cloned();
    let token = sdsim_net::ws::upgrade::register(move |conn| {
        Box::pin(async move {
            session::run(conn, deflate, identity, slots, upgrade).await;
        })
    });
    let mut resp = handshake::switching_protocols(&accepted);
    resp.extensions_mut().insert(token);
    resp
}

/// A client connection as a bus subscriber: events go to its outbox, compressed (once per
/// event, shared by every deflate connection) when the connection negotiated deflate.
pub struct ClientSink {
    outbox: Rc<Outbox>,
    compress_from: usize,
}

impl ClientSink {
    /// A sink writing to `outbox`.
    pub fn new(outbox: Rc<Outbox>, compress_from: usize) -> ClientSink {
        ClientSink {
            outbox,
            compress_from,
        }
    }
}

impl Sink for ClientSink {
    fn push(&self, event: &Arc<Event>) -> bool {
        let frame = if self.outbox.deflate() && event.wire.len() >= self.compress_from {
            event
                .wire_alt
                .get_or_init(|| text_frame(frame_payload(&event.wire), true, 0))
                .clone()
        } else {
            event.wire.clone()
        };
        self.outbox.send_frame(frame)
    }
}

/// The payload of an unmasked frame.
fn frame_payload(frame: &[u8]) -> &[u8] {
    let header = match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        _ => 2,
    };
    frame.get(header..).unwrap_or_default()
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody<'a> {
    #[serde(borrow)]
    channel: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    data: sonic_rs::LazyValue<'a>,
}

/// A checked `POST /api/publish` body.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishRequest<'a> {
    /// The channel, a valid name ([`policy::valid_channel`]).
    pub channel: std::borrow::Cow<'a, str>,
    /// The event's data: the JSON text as sent, passed on without re-encoding.
    pub data: Bytes,
}

/// Decodes and checks a publish body `{"channel": string, "data": any JSON}`; the error is the
/// 400 response naming what is wrong.
pub fn decode_publish(body: &[u8]) -> Result<PublishRequest<'_>, Box<Response>> {
    let body: PublishBody = sdsim_net::json::decode(body).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            &format!("body must be {{\"channel\": string, \"data\": any JSON}}: {e}"),
        ))
    })?;
    // Finding the end of `data` skips it without checking its strings' escapes: `"\uZZ"` was
    // accepted and reached every subscriber as an event that is not JSON. Parse it once, before
    // the channel: a body that is not JSON is `invalid_json`, whatever its channel.
    let data = body.data.as_raw_str();
    if let Err(e) = sonic_rs::from_str::<sonic_rs::Value>(data) {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            &format!("body must be {{\"channel\": string, \"data\": any JSON}}: `data`: {e}"),
        )));
    }
    if let Err(denied) = policy::valid_channel(&body.channel) {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            denied.code,
            &format!("channel: {}", denied.message),
        )));
    }
    Ok(PublishRequest {
        data: Bytes::copy_from_slice(data.as_bytes()),
        channel: body.channel,
    })
}

#[derive(serde::Serialize)]
struct Published<'a> {
    channel: &'a str,
    seq: u64,
}

async fn publish_route(req: Request) -> Response {
    let Some(rt) = local() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "real time is not running on this shard",
        );
    };
    let who = match http_caller(&*rt.authenticator, &req) {
        Ok(who) => who,
        Err(resp) => return *resp,
    };
    if !who.is_admin() {
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "publishing needs the admin role",
        );
    }
    let PublishRequest { channel, data } = match decode_publish(req.body()) {
        Ok(body) => body,
        Err(resp) => return *resp,
    };
    match rt.bus.publish(&channel, data).await {
        Ok(seq) => json(
            StatusCode::OK,
            &Published {
                channel: &channel,
                seq,
            },
        ),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            &e.to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonic_rs::JsonValueTrait;

    fn refusal(body: &str) -> (u16, String) {
        let resp = decode_publish(body.as_bytes()).expect_err(body);
        let v: sonic_rs::Value = sonic_rs::from_slice(resp.body()).expect("JSON");
        let message = v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        (resp.status().as_u16(), message)
    }

    #[test]
    fn publish_bodies_pass_their_data_on_as_sent() {
        let p = decode_publish(br#"{"channel":"c:1","data":{"a":[1, 2.5]}}"#).unwrap();
        assert_eq!(p.channel, "c:1");
        assert_eq!(&p.data[..], br#"{"a":[1, 2.5]}"#);
    }

    /// Data nested deeper than a stack allows is refused: before, the JSON parser recursed once
    /// per level and this test overflowed its thread's stack (which aborts the process).
    #[test]
    fn deeply_nested_data_is_refused_before_parsing() {
        let levels = 1_000_000;
        let body = format!(
            r#"{{"channel":"c","data":{}{}}}"#,
            "[".repeat(levels),
            "]".repeat(levels)
        );
        let (status, message) = refusal(&body);
        assert_eq!(status, 400);
        assert!(
            message.contains("nested deeper than 32 levels"),
            "{message}"
        );
    }

    /// Data the event frame would carry as invalid JSON is refused (found by the publish_body
    /// fuzz target: an invalid `\u` escape was accepted and sent to every subscriber).
    #[test]
    fn data_that_is_not_json_is_refused() {
        for data in [r#""\uCC]]""#, r#"["\q"]"#, r#"{"a":"\u12"}"#] {
            let body = format!(r#"{{"channel":"c","data":{data}}}"#);
            let (status, message) = refusal(&body);
            assert_eq!(status, 400, "{body}");
            assert!(message.contains("`data`"), "{body}: {message}");
        }
    }

    /// A value of the wrong type names its key (before: serde's "invalid type" alone).
    #[test]
    fn refusals_name_the_key() {
        let (status, message) = refusal(r#"{"channel":5,"data":1}"#);
        assert_eq!(status, 400);
        assert!(message.contains("`channel`: invalid type"), "{message}");
    }

    /// A body must be an object: `["general", {...}]` was accepted by position as channel
    /// `general` (found by the publish_body fuzz target).
    #[test]
    fn an_array_is_not_a_body() {
        for body in [r#"["general", {"x": 1}]"#, r#"[     "  ","data"]      "#] {
            let (status, message) = refusal(body);
            assert_eq!(status, 400, "{body}");
            assert!(
                message.contains("expected a JSON object"),
                "{body}: {message}"
            );
        }
    }
}
