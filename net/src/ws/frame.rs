//! The RFC 6455 frame codec, sans-IO: [`Decoder`] turns bytes into whole messages (fragments
//! joined, control frames passed through as they interleave, text checked as UTF-8 across
//! fragments, permessage-deflate undone) and [`encode`] writes frames.
//!
//! Every violation is a [`ProtocolError`] carrying the close code the RFC asks for; the caller
//! sends that close frame and ends the connection.

use super::deflate;
use bytes::{Buf, Bytes, BytesMut};

/// Close codes (RFC 6455 §7.4.1, plus 1012–1014 from the IANA registry).
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The server is going away (shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol error.
    pub const PROTOCOL: u16 = 1002;
    /// A data type the endpoint cannot accept.
    pub const UNSUPPORTED: u16 = 1003;
    /// No status code was present (never sent on the wire).
    pub const NO_STATUS: u16 = 1005;
    /// Data inconsistent with its type (invalid UTF-8 in a text message).
    pub const INVALID_DATA: u16 = 1007;
    /// Policy violation (slow consumer, authentication).
    pub const POLICY: u16 = 1008;
    /// Message too big.
    pub const TOO_BIG: u16 = 1009;
    /// Internal server error.
    pub const INTERNAL: u16 = 1011;
    /// Try again later (over a connection limit).
    pub const TRY_AGAIN: u16 = 1013;

    /// Whether `code` may appear in a close frame on the wire.
    pub fn is_valid(code: u16) -> bool {
        matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

/// Frame opcodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// Continuation of a fragmented message.
    Continuation,
    /// UTF-8 text.
    Text,
    /// Binary data.
    Binary,
    /// Close.
    Close,
    /// Ping.
    Ping,
    /// Pong.
    Pong,
}

impl Opcode {
    fn from_u8(v: u8) -> Option<Opcode> {
        Some(match v {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    fn as_u8(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// A whole message (or a control frame) from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message; the bytes are valid UTF-8.
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping with its payload.
    Ping(Bytes),
    /// A pong with its payload.
    Pong(Bytes),
    /// A close frame: the code ([`close::NO_STATUS`] when absent) and the reason.
    Close(u16, String),
}

impl Message {
    /// The text of a text message.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            // Validated when the message was decoded.
            Message::Text(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }
}

/// A protocol violation and the close code to answer it with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} (close {code})")]
pub struct ProtocolError {
    /// The close code.
    pub code: u16,
    /// Why, short enough for a close frame (≤ 123 bytes).
    pub reason: &'static str,
}

fn fail<T>(code: u16, reason: &'static str) -> Result<T, ProtocolError> {
    Err(ProtocolError { code, reason })
}

/// Which side of the connection decodes: servers require masked frames, clients unmasked ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Decoding frames sent by a client.
    Server,
    /// Decoding frames sent by a server.
    Client,
}

/// Size limits for incoming data.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest single frame payload.
    pub max_frame_bytes: usize,
    /// Largest whole message (after decompression).
    pub max_message_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 1 << 20,
            max_message_bytes: 1 << 20,
        }
    }
}

struct Partial {
    text: bool,
    compressed: bool,
    data: BytesMut,
    /// Bytes of `data` already known to be valid UTF-8 (uncompressed text only).
    checked: usize,
}

/// Decodes frames into messages; keeps the state of a fragmented message between calls.
pub struct Decoder {
    role: Role,
    limits: Limits,
    deflate: bool,
    partial: Option<Partial>,
}

impl Decoder {
    /// A decoder for `role`; `deflate` says whether permessage-deflate was negotiated.
    pub fn new(role: Role, limits: Limits, deflate: bool) -> Decoder {
        Decoder {
            role,
            limits,
            deflate,
            partial: None,
        }
    }

    /// Whether a fragmented message is half-way through.
    pub fn in_message(&self) -> bool {
        self.partial.is_some()
    }

    /// Decodes the next message from `buf`, consuming the frames it used. `Ok(None)`: more
    /// bytes are needed (a partial frame stays in `buf`).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, ProtocolError> {
        loop {
            let Some(header) = self.header(buf)? else {
                return Ok(None);
            };
            if buf.len() < header.header_len + header.len {
                buf.reserve(header.header_len + header.len - buf.len());
                return Ok(None);
            }
            buf.advance(header.header_len);
            let mut payload = buf.split_to(header.len);
            if let Some(mask) = header.mask {
                apply_mask(&mut payload, mask);
            }
            if let Some(message) = self.frame(header, payload)? {
                return Ok(Some(message));
            }
        }
    }

    fn header(&self, buf: &[u8]) -> Result<Option<Header>, ProtocolError> {
        if buf.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (buf[0], buf[1]);
        let fin = b0 & 0x80 != 0;
        let rsv1 = b0 & 0x40 != 0;
        if b0 & 0x30 != 0 {
            return fail(close::PROTOCOL, "reserved bits RSV2/RSV3 set");
        }
        let Some(opcode) = Opcode::from_u8(b0 & 0x0F) else {
            return fail(close::PROTOCOL, "reserved opcode");
        };
        let masked = b1 & 0x80 != 0;
        match (self.role, masked) {
            (Role::Server, false) => return fail(close::PROTOCOL, "client frames must be masked"),
            (Role::Client, true) => {
                return fail(close::PROTOCOL, "server frames must not be masked")
            }
            _ => {}
        }
        if rsv1 && (!self.deflate || opcode.is_control() || opcode == Opcode::Continuation) {
            return fail(close::PROTOCOL, "RSV1 set without a compressed message");
        }
        if opcode.is_control() {
            if !fin {
                return fail(close::PROTOCOL, "fragmented control frame");
            }
            if b1 & 0x7F > 125 {
                return fail(close::PROTOCOL, "control frame payload over 125 bytes");
            }
        } else if opcode == Opcode::Continuation {
            if self.partial.is_none() {
                return fail(
                    close::PROTOCOL,
                    "continuation frame without a message to continue",
                );
            }
        } else if self.partial.is_some() {
            return fail(
                close::PROTOCOL,
                "new data frame inside a fragmented message",
            );
        }
        let (len, mut at) = match b1 & 0x7F {
            126 => {
                if buf.len() < 4 {
                    return Ok(None);
                }
                (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
            }
            127 => {
                if buf.len() < 10 {
                    return Ok(None);
                }
                let mut raw = [0u8; 8];
                raw.copy_from_slice(&buf[2..10]);
                let len = u64::from_be_bytes(raw);
                if len >> 63 != 0 {
                    return fail(close::PROTOCOL, "64-bit length with the top bit set");
                }
                (len, 10)
            }
            n => (n as u64, 2),
        };
        if !opcode.is_control() && len > self.limits.max_frame_bytes as u64 {
            return fail(close::TOO_BIG, "frame too big");
        }
        let mask = if masked {
            if buf.len() < at + 4 {
                return Ok(None);
            }
            let m = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
            at += 4;
            Some(m)
        } else {
            None
        };
        Ok(Some(Header {
            fin,
            rsv1,
            opcode,
            mask,
            len: len as usize,
            header_len: at,
        }))
    }

    fn frame(&mut self, h: Header, payload: BytesMut) -> Result<Option<Message>, ProtocolError> {
        match h.opcode {
            Opcode::Ping => Ok(Some(Message::Ping(payload.freeze()))),
            Opcode::Pong => Ok(Some(Message::Pong(payload.freeze()))),
            Opcode::Close => close_payload(&payload).map(|(c, r)| Some(Message::Close(c, r))),
            Opcode::Text | Opcode::Binary => {
                let partial = Partial {
                    text: h.opcode == Opcode::Text,
                    compressed: h.rsv1,
                    data: payload,
                    checked: 0,
                };
                self.data(partial, h.fin)
            }
            Opcode::Continuation => {
                let mut partial = self.partial.take().expect("checked in header()");
                if partial.data.len() + payload.len() > self.limits.max_message_bytes {
                    return fail(close::TOO_BIG, "message too big");
                }
                partial.data.extend_from_slice(&payload);
                self.data(partial, h.fin)
            }
        }
    }

    fn data(&mut self, mut p: Partial, fin: bool) -> Result<Option<Message>, ProtocolError> {
        if p.data.len() > self.limits.max_message_bytes {
            return fail(close::TOO_BIG, "message too big");
        }
        if p.text && !p.compressed {
            // Check what has arrived so far, so an invalid sequence fails fast; a code point
            // cut at the end of a fragment is completed by the next one.
            match simdutf8::compat::from_utf8(&p.data[p.checked..]) {
                Ok(_) => p.checked = p.data.len(),
                Err(e) if e.error_len().is_none() && !fin => p.checked += e.valid_up_to(),
                Err(_) => return fail(close::INVALID_DATA, "invalid UTF-8 in a text message"),
            }
        }
        if !fin {
            self.partial = Some(p);
            return Ok(None);
        }
        let data = if p.compressed {
            let inflated = deflate::inflate(&p.data, self.limits.max_message_bytes)?;
            if p.text && simdutf8::basic::from_utf8(&inflated).is_err() {
                return fail(close::INVALID_DATA, "invalid UTF-8 in a text message");
            }
            inflated
        } else {
            p.data.freeze()
        };
        Ok(Some(if p.text {
            Message::Text(data)
        } else {
            Message::Binary(data)
        }))
    }
}

#[derive(Debug, Clone, Copy)]
struct Header {
    fin: bool,
    rsv1: bool,
    opcode: Opcode,
    mask: Option<[u8; 4]>,
    len: usize,
    header_len: usize,
}

fn close_payload(payload: &[u8]) -> Result<(u16, String), ProtocolError> {
    match payload.len() {
        0 => Ok((close::NO_STATUS, String::new())),
        1 => fail(close::PROTOCOL, "close payload of one byte"),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !close::is_valid(code) {
                return fail(close::PROTOCOL, "invalid close code");
            }
            match std::str::from_utf8(&payload[2..]) {
                Ok(reason) => Ok((code, reason.to_string())),
                Err(_) => fail(close::INVALID_DATA, "close reason is not UTF-8"),
            }
        }
    }
}

/// XORs `data` with the masking key (RFC 6455 §5.3), a word at a time.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let word = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut v = [0u8; 8];
        v.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(v) ^ word).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

/// Appends one frame to `out`. `mask` is required for client frames and absent for server ones;
/// `compressed` sets RSV1 (first frame of a permessage-deflate message).
pub fn encode(
    out: &mut BytesMut,
    opcode: Opcode,
    fin: bool,
    compressed: bool,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    let mut b0 = opcode.as_u8();
    if fin {
        b0 |= 0x80;
    }
    if compressed {
        b0 |= 0x40;
    }
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    out.reserve(14 + payload.len());
    out.extend_from_slice(&[b0]);
    match payload.len() {
        n if n <= 125 => out.extend_from_slice(&[mask_bit | n as u8]),
        n if n <= 0xFFFF => {
            out.extend_from_slice(&[mask_bit | 126]);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.extend_from_slice(&[mask_bit | 127]);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(m) => {
            out.extend_from_slice(&m);
            let start = out.len();
            out.extend_from_slice(payload);
            apply_mask(&mut out[start..], m);
        }
        None => out.extend_from_slice(payload),
    }
}

/// One unmasked, final server frame.
pub fn server_frame(opcode: Opcode, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 10);
    encode(&mut out, opcode, true, false, payload, None);
    out.freeze()
}

/// The payload of a close frame: code then reason, cut to fit 125 bytes on a char boundary.
pub fn close_body(code: u16, reason: &str) -> Vec<u8> {
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut body = code.to_be_bytes().to_vec();
    body.extend_from_slice(&reason.as_bytes()[..cut]);
    body
}
