//! WebSocket frame decoding (`sdsim_net::ws::frame`), server role.

use crate::alloc::peak_while;
use crate::ALLOCATION_SLACK;
use bytes::BytesMut;
use sdsim_net::ws::frame::{close, Decoder, Limits, Message, Role};

const LIMITS: Limits = Limits {
    max_frame_bytes: 4096,
    max_message_bytes: 8192,
};

fn run(data: &[u8], step: usize, deflate: bool) -> (Vec<Message>, Option<u16>) {
    let mut decoder = Decoder::new(Role::Server, LIMITS, deflate);
    let mut input = BytesMut::new();
    let mut got = Vec::new();
    for piece in data.chunks(step.max(1)) {
        input.extend_from_slice(piece);
        loop {
            let (result, held) = peak_while(|| decoder.decode(&mut input));
            // Inflating a small frame into a huge message must stop at the message limit.
            let bound = 2 * data.len() + 4 * LIMITS.max_message_bytes + ALLOCATION_SLACK;
            assert!(
                held <= bound,
                "one decode held {held} bytes (bound {bound})"
            );
            match result {
                Ok(Some(m)) => got.push(m),
                Ok(None) => break,
                Err(e) => return (got, Some(e.code)),
            }
        }
    }
    (got, None)
}

/// `ws_frames` (first byte: bit 0 = permessage-deflate, the rest picks the step size): the
/// messages and the verdict do not depend on how the bytes are split; messages respect the
/// limits; text is UTF-8; every error carries a close code valid on the wire.
pub fn frames(data: &[u8]) {
    let Some((&flags, data)) = data.split_first() else {
        return;
    };
    let deflate = flags & 1 == 1;
    let whole = run(data, data.len(), deflate);
    let stepped = run(data, 1 + (flags as usize >> 1) % 7, deflate);
    assert_eq!(whole, stepped);
    if let Some(code) = whole.1 {
        assert!(close::is_valid(code), "error code {code} is not sendable");
    }
    for m in &whole.0 {
        match m {
            Message::Text(t) => {
                assert!(t.len() <= LIMITS.max_message_bytes);
                assert!(std::str::from_utf8(t).is_ok());
            }
            Message::Binary(b) => assert!(b.len() <= LIMITS.max_message_bytes),
            Message::Ping(p) | Message::Pong(p) => assert!(p.len() <= 125),
            Message::Close(..) => {}
        }
    }
}
