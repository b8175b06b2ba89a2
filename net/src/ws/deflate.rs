//! permessage-deflate (RFC 7692), always without context takeover in both directions.
//!
//! With no context takeover a message compresses to the same bytes on every connection, so an
//! event fanned out to thousands of subscribers is compressed once and shared, and no connection
//! carries a compressor (~300 KB) or a decompressor (~40 KB) of its own: each shard keeps one of
//! each and resets it per message. The server answers every accepted offer with
//! `server_no_context_takeover; client_no_context_takeover` (§7.1.1.1–2 allow it to add both).

use super::frame::{close, ProtocolError};
use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use std::cell::RefCell;

/// The extension response header value sent when an offer is accepted.
pub const RESPONSE: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

thread_local! {
    static INFLATER: RefCell<Decompress> = RefCell::new(Decompress::new(false));
    static DEFLATER: RefCell<Compress> = RefCell::new(Compress::new(Compression::fast(), false));
}

/// Whether one of the offers in `Sec-WebSocket-Extensions` header values is a permessage-deflate
/// offer this server can accept.
pub fn accepts<'a>(header_values: impl Iterator<Item = &'a str>) -> bool {
    header_values
        .flat_map(|v| v.split(','))
        .any(|offer| acceptable_offer(offer.trim()))
}

fn acceptable_offer(offer: &str) -> bool {
    let mut parts = offer.split(';').map(str::trim);
    if parts.next() != Some("permessage-deflate") {
        return false;
    }
    let mut seen: Vec<&str> = Vec::new();
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (param, None),
        };
        if seen.contains(&name) {
            return false;
        }
        seen.push(name);
        let ok = match (name, value) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => true,
            // Our compressor always uses a 32 KiB window: a smaller server window is declined.
            ("server_max_window_bits", Some(v)) => v == "15",
            ("client_max_window_bits", None) => true,
            ("client_max_window_bits", Some(v)) => {
                matches!(v.parse::<u8>(), Ok(bits) if (8..=15).contains(&bits))
            }
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// Decompresses one message payload (the sender stripped the 0x00 0x00 0xff 0xff tail); more
/// than `limit` bytes of output is close 1009.
pub fn inflate(data: &[u8], limit: usize) -> Result<Bytes, ProtocolError> {
    INFLATER.with(|cell| {
        let mut d = cell.borrow_mut();
        d.reset(false);
        let mut out = Vec::with_capacity((data.len() * 3).clamp(64, limit.max(64)));
        for input in [data, &TAIL[..]] {
            let mut consumed = 0usize;
            loop {
                if out.len() == out.capacity() {
                    if out.len() >= limit {
                        return Err(ProtocolError {
                            code: close::TOO_BIG,
                            reason: "message too big after decompression",
                        });
                    }
                    out.reserve((out.len()).clamp(64, limit + 1 - out.len()));
                }
                let before_in = d.total_in();
                let status = d
                    .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)
                    .map_err(|_| ProtocolError {
                        code: close::INVALID_DATA,
                        reason: "invalid deflate data",
                    })?;
                consumed += (d.total_in() - before_in) as usize;
                if out.len() > limit {
                    return Err(ProtocolError {
                        code: close::TOO_BIG,
                        reason: "message too big after decompression",
                    });
                }
                let done_input = consumed >= input.len();
                match status {
                    Status::StreamEnd => break,
                    _ if done_input && out.len() < out.capacity() => break,
                    _ => {}
                }
            }
        }
        Ok(Bytes::from(out))
    })
}

/// Compresses one message payload for a frame with RSV1 set (tail stripped).
pub fn deflate(data: &[u8]) -> Vec<u8> {
    DEFLATER.with(|cell| {
        let mut c = cell.borrow_mut();
        c.reset();
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        loop {
            let consumed = c.total_in() as usize;
            c.compress_vec(&data[consumed..], &mut out, FlushCompress::Sync)
                .expect("deflate into a Vec cannot fail");
            if c.total_in() as usize == data.len() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity().max(64));
        }
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_accepts_plain_and_parameterised_offers() {
        assert!(accepts(["permessage-deflate"].into_iter()));
        assert!(accepts(
            ["permessage-deflate; client_max_window_bits"].into_iter()
        ));
        assert!(accepts(
            ["x-webkit-deflate-frame, permessage-deflate; server_no_context_takeover"].into_iter()
        ));
        assert!(!accepts(
            ["permessage-deflate; server_max_window_bits=10"].into_iter()
        ));
        assert!(!accepts(["permessage-deflate; bogus"].into_iter()));
        assert!(!accepts(
            ["permessage-deflate; client_no_context_takeover; client_no_context_takeover"]
                .into_iter()
        ));
        assert!(!accepts(
            ["permessage-deflate; client_max_window_bits=99"].into_iter()
        ));
        assert!(!accepts(["x-webkit-deflate-frame"].into_iter()));
    }

    #[test]
    fn round_trip_and_limit() {
        let text = "hello hello hello hello ".repeat(200);
        let packed = deflate(text.as_bytes());
        assert!(packed.len() < text.len() / 5);
        assert_eq!(&inflate(&packed, 1 << 20).unwrap()[..], text.as_bytes());
        let err = inflate(&packed, 100).unwrap_err();
        assert_eq!(err.code, close::TOO_BIG);
        assert_eq!(
            inflate(&[0xff, 0xff, 0xff], 1 << 20).unwrap_err().code,
            1007
        );
        assert_eq!(&inflate(&deflate(b""), 10).unwrap()[..], b"");
    }
}
