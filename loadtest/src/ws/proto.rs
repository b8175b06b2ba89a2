//! The client side of the sdsim WebSocket protocol, sans IO: the upgrade request and the check
//! of its answer, masked client frames, and the server's messages turned into [`Inbound`]
//! events (with the publish-to-receive latency of an event computed from its `data.t`).
//!
//! Frames are decoded by `sdsim_net::ws::frame::Decoder` in the client role (the server's own,
//! fuzzed decoder); this module only builds and interprets.

use bytes::{Bytes, BytesMut};
use sdsim_net::ws::frame::{self, Message, Opcode};
use serde::Deserialize;

/// `{"op":"ping"}`: the application ping the server answers with `{"op":"pong"}`.
pub const PING: &str = r#"{"op":"ping"}"#;

/// A small, fast generator for handshake keys and masking keys (xorshift64*). Masks only need
/// to be unpredictable to intermediaries on the path, and this tool talks to its own servers.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value, zero included).
    pub fn new(seed: u64) -> Rng {
        Rng((seed ^ 0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A masking key.
    pub fn mask(&mut self) -> [u8; 4] {
        (self.next_u64() as u32).to_ne_bytes()
    }

    /// A `Sec-WebSocket-Key`: 16 random bytes, base64.
    pub fn handshake_key(&mut self) -> String {
        use base64::Engine;
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&self.next_u64().to_ne_bytes());
        raw[8..].copy_from_slice(&self.next_u64().to_ne_bytes());
        base64::engine::general_purpose::STANDARD.encode(raw)
    }
}

/// The upgrade request for `path` on `host`, with `Authorization: Bearer token` if given.
pub fn upgrade_request(path: &str, host: &str, key: &str, token: Option<&str>) -> Vec<u8> {
    let mut out = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    if let Some(token) = token {
        out.push_str("Authorization: Bearer ");
        out.push_str(token);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// Why an upgrade was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// The server answered with this status instead of 101.
    Status(u16),
    /// The answer was not a valid WebSocket upgrade.
    Invalid(&'static str),
}

/// Checks the answer to an upgrade request sent with `key`. `Ok(None)`: the head is not
/// complete yet; `Ok(Some(n))`: accepted, the head is `n` bytes long (frames may follow).
pub fn parse_upgrade_response(buf: &[u8], key: &str) -> Result<Option<usize>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(HandshakeError::Invalid("malformed response head")),
    };
    let status = resp.code.unwrap_or(0);
    if status != 101 {
        return Err(HandshakeError::Status(status));
    }
    let accept = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
        .ok_or(HandshakeError::Invalid("no Sec-WebSocket-Accept"))?;
    if accept.value != sdsim_net::ws::handshake::accept_key(key.as_bytes()).as_bytes() {
        return Err(HandshakeError::Invalid("wrong Sec-WebSocket-Accept"));
    }
    if resp
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("sec-websocket-extensions"))
    {
        // None was offered: a server that names one anyway would send frames we cannot read.
        return Err(HandshakeError::Invalid("an extension that was not offered"));
    }
    Ok(Some(len))
}

/// One masked, final client frame.
pub fn client_frame(opcode: Opcode, payload: &[u8], mask: [u8; 4]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 14);
    frame::encode(&mut out, opcode, true, false, payload, Some(mask));
    out.freeze()
}

/// `{"op":"subscribe","channel":C}`.
pub fn subscribe(channel: &str) -> String {
    let channel = sonic_rs::to_string(channel).unwrap_or_else(|_| "\"\"".into());
    format!(r#"{{"op":"subscribe","channel":{channel}}}"#)
}

/// The body of a `POST /api/publish`: an event on `channel` carrying its intended send time
/// `t` (ns on the run's clock, see `ws::Clock`) and its number `k`; with `data_size`, a `pad`
/// string makes the `data` object that many bytes (or as few as `t` and `k` allow).
pub fn publish_body(channel: &str, t_ns: u64, k: u64, data_size: Option<usize>) -> String {
    let channel = sonic_rs::to_string(channel).unwrap_or_else(|_| "\"\"".into());
    let mut data = format!(r#"{{"t":{t_ns},"k":{k}"#);
    match data_size {
        Some(size) => {
            const PAD_FIELD: &str = r#","pad":""}"#;
            let pad = size.saturating_sub(data.len() + PAD_FIELD.len());
            data.push_str(r#","pad":""#);
            data.extend(std::iter::repeat_n('x', pad));
            data.push_str(r#""}"#);
        }
        None => data.push('}'),
    }
    format!(r#"{{"channel":{channel},"data":{data}}}"#)
}

/// What a message from the server means to a load connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// `{"op":"subscribed"}` with the channel's current sequence number.
    Subscribed {
        /// The last sequence number of the channel.
        seq: u64,
    },
    /// `{"op":"event"}`.
    Event {
        /// The event's sequence number in its channel.
        seq: Option<u64>,
        /// `data.t`: when the event was meant to be published (ns), if the publisher set it.
        sent_ns: Option<u64>,
    },
    /// `{"op":"pong"}`: the answer to [`PING`].
    Pong,
    /// `{"op":"error"}` with its code (e.g. `forbidden`).
    Error(String),
    /// A WebSocket ping frame: answer with a pong carrying the same payload.
    Ping(Bytes),
    /// A close frame with its code (1005 when it had none).
    Closed(u16),
    /// Anything else (unsubscribed, unknown ops, pong frames, binary).
    Other,
    /// A text message that is not JSON or has no `op`.
    Unparsed,
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    op: &'a str,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    data: Option<EventData>,
    #[serde(default, borrow)]
    code: Option<&'a str>,
}

#[derive(Deserialize)]
struct EventData {
    #[serde(default)]
    t: Option<u64>,
}

/// Interprets one decoded message.
pub fn classify(message: Message) -> Inbound {
    match message {
        Message::Text(text) => match sonic_rs::from_slice::<Wire<'_>>(&text) {
            Ok(w) => match w.op {
                "event" => Inbound::Event {
                    seq: w.seq,
                    sent_ns: w.data.and_then(|d| d.t),
                },
                "subscribed" => Inbound::Subscribed {
                    seq: w.seq.unwrap_or(0),
                },
                "pong" => Inbound::Pong,
                "error" => Inbound::Error(w.code.unwrap_or("unknown").to_string()),
                _ => Inbound::Other,
            },
            Err(_) => Inbound::Unparsed,
        },
        Message::Ping(payload) => Inbound::Ping(payload),
        Message::Close(code, _) => Inbound::Closed(code),
        Message::Binary(_) | Message::Pong(_) => Inbound::Other,
    }
}

/// Counts events missing from a channel's sequence as seen by one connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeqTracker {
    last: Option<u64>,
}

/// Where an event's sequence number falls in what a connection has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqStep {
    /// Events skipped just before it (0 when it follows the last one).
    pub skipped: u64,
    /// It is not after the last one seen: a repeat, or late.
    pub out_of_order: bool,
}

impl SeqTracker {
    /// Starts after `seq` (the `subscribed` reply's).
    pub fn after(seq: u64) -> SeqTracker {
        SeqTracker { last: Some(seq) }
    }

    /// Notes event `seq`.
    pub fn observe(&mut self, seq: u64) -> SeqStep {
        let step = match self.last {
            Some(last) if seq > last + 1 => SeqStep {
                skipped: seq - last - 1,
                out_of_order: false,
            },
            Some(last) => SeqStep {
                skipped: 0,
                out_of_order: seq <= last,
            },
            None => SeqStep {
                skipped: 0,
                out_of_order: false,
            },
        };
        if self.last.is_none_or(|last| seq > last) {
            self.last = Some(seq);
        }
        step
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sdsim_net::ws::frame::{Decoder, Limits, Role};

    fn decode_all(bytes: &[u8]) -> Vec<Inbound> {
        let mut decoder = Decoder::new(Role::Client, Limits::default(), false);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        // Byte by byte: every split point of every frame must work.
        for b in bytes {
            buf.extend_from_slice(&[*b]);
            while let Some(m) = decoder.decode(&mut buf).unwrap() {
                out.push(classify(m));
            }
        }
        out
    }

    #[test]
    fn upgrade_answers_are_checked() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let req = String::from_utf8(upgrade_request("/ws", "h:1", key, Some("T"))).unwrap();
        assert!(
            req.starts_with("GET /ws HTTP/1.1\r\nHost: h:1\r\n"),
            "{req}"
        );
        assert!(req.contains("\r\nAuthorization: Bearer T\r\n"));
        assert!(req.ends_with("\r\n\r\n"));
        let ok =
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        let head = ok.len();
        let mut with_frame = ok.as_bytes().to_vec();
        with_frame.extend_from_slice(b"\x81\x02hi");
        for cut in 0..head {
            assert_eq!(parse_upgrade_response(&with_frame[..cut], key), Ok(None));
        }
        assert_eq!(parse_upgrade_response(&with_frame, key), Ok(Some(head)));
        let wrong = ok.replace("s3pP", "AAAA");
        assert_eq!(
            parse_upgrade_response(wrong.as_bytes(), key),
            Err(HandshakeError::Invalid("wrong Sec-WebSocket-Accept"))
        );
        let refused = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(
            parse_upgrade_response(refused, key),
            Err(HandshakeError::Status(503))
        );
        let mut rng = Rng::new(7);
        let key = rng.handshake_key();
        assert_eq!(key.len(), 24);
        assert_ne!(key, rng.handshake_key());
    }

    #[test]
    fn server_messages_become_events_split_anywhere() {
        let mut wire = Vec::new();
        for (op, text) in [
            (
                Opcode::Text,
                r#"{"op":"subscribed","channel":"c","seq":41,"recovered":false}"#,
            ),
            (
                Opcode::Text,
                r#"{"op":"event","channel":"c","seq":42,"data":{"k":1,"t":123456789012}}"#,
            ),
            (
                Opcode::Text,
                r#"{"op":"event","channel":"c","seq":43,"data":{"other":true}}"#,
            ),
            (Opcode::Text, r#"{"op":"pong"}"#),
            (
                Opcode::Text,
                r#"{"op":"error","code":"forbidden","message":"no"}"#,
            ),
            (Opcode::Ping, "p1"),
            (Opcode::Text, "not json"),
        ] {
            wire.extend_from_slice(&frame::server_frame(op, text.as_bytes()));
        }
        wire.extend_from_slice(&frame::server_frame(
            Opcode::Close,
            &frame::close_body(1001, "going away"),
        ));
        assert_eq!(
            decode_all(&wire),
            vec![
                Inbound::Subscribed { seq: 41 },
                Inbound::Event {
                    seq: Some(42),
                    sent_ns: Some(123_456_789_012)
                },
                Inbound::Event {
                    seq: Some(43),
                    sent_ns: None
                },
                Inbound::Pong,
                Inbound::Error("forbidden".into()),
                Inbound::Ping(Bytes::from_static(b"p1")),
                Inbound::Unparsed,
                Inbound::Closed(1001),
            ]
        );
    }

    #[test]
    fn client_frames_are_masked_and_round_trip() {
        let mut rng = Rng::new(1);
        let text = subscribe("simulation:events:\"x\"");
        assert_eq!(
            text,
            r#"{"op":"subscribe","channel":"simulation:events:\"x\""}"#
        );
        let bytes = client_frame(Opcode::Text, text.as_bytes(), rng.mask());
        assert_eq!(bytes[1] & 0x80, 0x80, "mask bit");
        let mut decoder = Decoder::new(Role::Server, Limits::default(), false);
        let mut buf = BytesMut::from(&bytes[..]);
        let got = decoder.decode(&mut buf).unwrap().unwrap();
        assert_eq!(got.as_text(), Some(text.as_str()));
        let body = publish_body("c-1", 5, 9, None);
        assert_eq!(body, r#"{"channel":"c-1","data":{"t":5,"k":9}}"#);
    }

    #[test]
    fn padded_events_have_the_data_size_asked_for() {
        let t = 1_700_000_000_000_000_000;
        for size in [128, 1000] {
            let body = publish_body("c", t, 12, Some(size));
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["data"].to_string().len(), size, "{body}");
            assert_eq!(v["data"]["t"], t);
            assert_eq!(v["data"]["k"], 12);
        }
        // Smaller than `t` and `k` need: no padding, nothing cut.
        let body = publish_body("c", t, 12, Some(8));
        assert_eq!(
            body,
            format!(r#"{{"channel":"c","data":{{"t":{t},"k":12,"pad":""}}}}"#)
        );
    }

    #[test]
    fn sequence_gaps_are_counted_once() {
        let mut s = SeqTracker::after(10);
        let step = |skipped, out_of_order| SeqStep {
            skipped,
            out_of_order,
        };
        assert_eq!(s.observe(11), step(0, false));
        assert_eq!(s.observe(14), step(2, false));
        assert_eq!(s.observe(13), step(0, true), "late arrival: not a new gap");
        assert_eq!(s.observe(15), step(0, false));
        assert_eq!(s.observe(15), step(0, true), "a repeat");
    }
}
