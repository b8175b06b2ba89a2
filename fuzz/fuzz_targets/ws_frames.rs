//! Fuzzes the WebSocket frame decoder (server role, with and without permessage-deflate): the
//! verdict and messages must not depend on how the bytes are split, messages respect the
//! limits, text is valid UTF-8, and every error carries a close code valid on the wire.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
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
            match decoder.decode(&mut input) {
                Ok(Some(m)) => got.push(m),
                Ok(None) => break,
                Err(e) => return (got, Some(e.code)),
            }
        }
    }
    (got, None)
}

fuzz_target!(|data: &[u8]| {
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
});
