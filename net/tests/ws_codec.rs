//! Frame-codec conformance table in the style of the Autobahn suite: each row is the bytes a
//! client sends and what the server must make of them — messages, or the close code of the
//! violation. Every row is also fed one byte at a time (verdicts must not depend on read splits).

use bytes::BytesMut;
use sdsim_net::ws::deflate;
use sdsim_net::ws::frame::{encode, Decoder, Limits, Message, Opcode, Role};

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A masked client frame with explicit bits.
fn raw(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    let opcode = match b0 & 0x0f {
        0 => Opcode::Continuation,
        1 => Opcode::Text,
        2 => Opcode::Binary,
        8 => Opcode::Close,
        9 => Opcode::Ping,
        10 => Opcode::Pong,
        _ => Opcode::Binary,
    };
    encode(
        &mut out,
        opcode,
        b0 & 0x80 != 0,
        b0 & 0x40 != 0,
        payload,
        Some(MASK),
    );
    // Put back bits `encode` cannot express (reserved opcodes, RSV2/RSV3).
    out[0] = b0;
    out.to_vec()
}

fn frame(op: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    raw(if fin { 0x80 | op } else { op }, payload)
}

fn close_frame(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    frame(0x8, true, &p)
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Messages(Vec<Message>),
    /// Messages decoded before the violation, then its close code.
    Fails(Vec<Message>, u16),
}

fn run(bytes: &[u8], limits: Limits, deflate: bool, split: bool) -> Outcome {
    let mut d = Decoder::new(Role::Server, limits, deflate);
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    let chunks: Vec<&[u8]> = if split {
        bytes.chunks(1).collect()
    } else {
        vec![bytes]
    };
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match d.decode(&mut buf) {
                Ok(Some(m)) => got.push(m),
                Ok(None) => break,
                Err(e) => return Outcome::Fails(got, e.code),
            }
        }
    }
    Outcome::Messages(got)
}

fn text(s: &str) -> Message {
    Message::Text(s.as_bytes().to_vec().into())
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn conformance_table() {
    let small = Limits {
        max_frame_bytes: 1000,
        max_message_bytes: 1500,
    };
    let big = Limits {
        max_frame_bytes: 100_000,
        max_message_bytes: 100_000,
    };
    let euro = "€".as_bytes(); // e2 82 ac
    let packed = deflate::deflate("compressed hello ".repeat(50).as_bytes());
    let bad_utf8_packed = deflate::deflate(&[0x68, 0xff, 0xfe]);
    use Outcome::*;
    #[rustfmt::skip]
    let rows: Vec<(&str, Vec<u8>, Limits, bool, Outcome)> = vec![
        // 1.x framing
        ("1.1 text", frame(1, true, b"Hello"), small, false, Messages(vec![text("Hello")])),
        ("1.1.1 empty text", frame(1, true, b""), small, false, Messages(vec![text("")])),
        ("1.2 binary", frame(2, true, &[0, 1, 2, 255]), small, false, Messages(vec![Message::Binary(vec![0, 1, 2, 255].into())])),
        ("1.1.3 16-bit length", frame(2, true, &[7; 300]), small, false, Messages(vec![Message::Binary(vec![7; 300].into())])),
        ("1.1.6 64-bit length", frame(2, true, &[9; 70_000]), big, false, Messages(vec![Message::Binary(vec![9; 70_000].into())])),
        ("64-bit length with top bit", {
            let mut f = vec![0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1];
            f.extend_from_slice(&MASK);
            f
        }, small, false, Fails(vec![], 1002)),
        ("unmasked client frame", vec![0x81, 0x02, b'h', b'i'], small, false, Fails(vec![], 1002)),
        // 2.x pings and pongs
        ("2.2 ping with payload", frame(9, true, b"abc"), small, false, Messages(vec![Message::Ping(b"abc".to_vec().into())])),
        ("2.5 ping over 125 bytes", frame(9, true, &[1; 126]), small, false, Fails(vec![], 1002)),
        ("2.8 unsolicited pong", frame(10, true, b"x"), small, false, Messages(vec![Message::Pong(b"x".to_vec().into())])),
        // 3.x reserved bits
        ("3.1 RSV2 set", raw(0x80 | 0x20 | 1, b"x"), small, false, Fails(vec![], 1002)),
        ("3.2 RSV3 after a good frame", cat(&[frame(1, true, b"ok"), raw(0x80 | 0x10 | 1, b"x")]), small, false, Fails(vec![text("ok")], 1002)),
        ("RSV1 without deflate", raw(0x80 | 0x40 | 1, b"x"), small, false, Fails(vec![], 1002)),
        // 4.x opcodes
        ("4.1.1 reserved data opcode 3", raw(0x83, b""), small, false, Fails(vec![], 1002)),
        ("4.2.1 reserved control opcode 11", raw(0x8b, b""), small, false, Fails(vec![], 1002)),
        // 5.x fragmentation
        ("5.1 fragmented ping", frame(9, false, b"a"), small, false, Fails(vec![], 1002)),
        ("5.3 text in two fragments", cat(&[frame(1, false, b"Hel"), frame(0, true, b"lo")]), small, false, Messages(vec![text("Hello")])),
        ("5.6 ping between fragments", cat(&[frame(1, false, b"Hel"), frame(9, true, b"p"), frame(0, true, b"lo")]), small, false,
            Messages(vec![Message::Ping(b"p".to_vec().into()), text("Hello")])),
        ("5.9 continuation without start", frame(0, true, b"x"), small, false, Fails(vec![], 1002)),
        ("5.18 text inside a fragmented text", cat(&[frame(1, false, b"a"), frame(1, true, b"b")]), small, false, Fails(vec![], 1002)),
        ("5.19 many fragments with pings", cat(&[frame(1, false, b"a"), frame(0, false, b"b"), frame(9, true, b""), frame(0, false, b"c"), frame(0, true, b"d")]), small, false,
            Messages(vec![Message::Ping(Default::default()), text("abcd")])),
        ("RSV1 on a continuation", cat(&[frame(1, false, b"a"), raw(0x40, b"b")]), small, true, Fails(vec![], 1002)),
        // 6.x UTF-8
        ("6.2 multi-byte text", frame(1, true, "κόσμε".as_bytes()), small, false, Messages(vec![text("κόσμε")])),
        ("6.3 invalid UTF-8", frame(1, true, &[0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80]), small, false, Fails(vec![], 1007)),
        ("6.4 code point cut between fragments", cat(&[frame(1, false, &euro[..1]), frame(0, true, &euro[1..])]), small, false, Messages(vec![text("€")])),
        ("6.4.1 fails fast in the first fragment", cat(&[frame(1, false, &[0x61, 0xff]), frame(0, true, b"never")]), small, false, Fails(vec![], 1007)),
        ("6.x truncated code point at the end", frame(1, true, &euro[..2]), small, false, Fails(vec![], 1007)),
        // 7.x close
        ("7.1 close 1000 with reason", close_frame(1000, b"bye"), small, false, Messages(vec![Message::Close(1000, "bye".into())])),
        ("7.3.1 empty close", frame(8, true, b""), small, false, Messages(vec![Message::Close(1005, String::new())])),
        ("7.3.2 close of one byte", frame(8, true, &[3]), small, false, Fails(vec![], 1002)),
        ("7.5.1 close reason not UTF-8", close_frame(1000, &[0xff]), small, false, Fails(vec![], 1007)),
        ("7.7 close 3000", close_frame(3000, b""), small, false, Messages(vec![Message::Close(3000, String::new())])),
        ("7.7 close 4999", close_frame(4999, b""), small, false, Messages(vec![Message::Close(4999, String::new())])),
        ("7.9 close 999", close_frame(999, b""), small, false, Fails(vec![], 1002)),
        ("7.9 close 1005", close_frame(1005, b""), small, false, Fails(vec![], 1002)),
        ("7.9 close 1006", close_frame(1006, b""), small, false, Fails(vec![], 1002)),
        ("7.9 close 1015", close_frame(1015, b""), small, false, Fails(vec![], 1002)),
        ("7.9 close 5000", close_frame(5000, b""), small, false, Fails(vec![], 1002)),
        // 9.x limits
        ("frame over max_frame_bytes", frame(2, true, &[0; 1001]), small, false, Fails(vec![], 1009)),
        ("message over max_message_bytes", cat(&[frame(2, false, &[0; 1000]), frame(0, true, &[0; 600])]), small, false, Fails(vec![], 1009)),
        // 12.x/13.x permessage-deflate
        ("compressed text", raw(0x80 | 0x40 | 1, &packed), big, true, Messages(vec![text(&"compressed hello ".repeat(50))])),
        ("compressed text, fragmented", cat(&[raw(0x40 | 1, &packed[..5]), frame(0, true, &packed[5..])]), big, true, Messages(vec![text(&"compressed hello ".repeat(50))])),
        ("compressed invalid UTF-8", raw(0x80 | 0x40 | 1, &bad_utf8_packed), big, true, Fails(vec![], 1007)),
        ("compressed over the message limit", raw(0x80 | 0x40 | 2, &deflate::deflate(&[0; 200_000])), big, true, Fails(vec![], 1009)),
        ("garbage deflate data", raw(0x80 | 0x40 | 2, &[0xff, 0xff, 0xff, 0xff]), big, true, Fails(vec![], 1007)),
    ];
    for (name, bytes, limits, deflate, want) in rows {
        assert_eq!(run(&bytes, limits, deflate, false), want, "{name}");
        assert_eq!(
            run(&bytes, limits, deflate, true),
            want,
            "{name} (byte by byte)"
        );
    }
}

#[test]
fn client_role_reads_server_frames_and_rejects_masked_ones() {
    let mut d = Decoder::new(Role::Client, Limits::default(), false);
    let mut buf = BytesMut::new();
    encode(&mut buf, Opcode::Text, true, false, b"from server", None);
    assert_eq!(d.decode(&mut buf).unwrap(), Some(text("from server")));
    encode(&mut buf, Opcode::Text, true, false, b"x", Some(MASK));
    assert_eq!(d.decode(&mut buf).unwrap_err().code, 1002);
}

#[test]
fn mask_round_trips_at_every_length() {
    for len in 0..40 {
        let data: Vec<u8> = (0..len as u8).collect();
        let mut copy = data.clone();
        sdsim_net::ws::frame::apply_mask(&mut copy, MASK);
        sdsim_net::ws::frame::apply_mask(&mut copy, MASK);
        assert_eq!(copy, data);
    }
}
