//! The Redis bridge's RESP2 reader and writer (`sdsim_gateway::redis_bridge::resp`): what
//! another instance's events arrive through.

use sdsim_gateway::redis_bridge::resp::{self, Frame, Item, RespError, MAX_BULK, MAX_LINE};

/// `redis_resp`: the input as bytes from Redis, then as the parts of an event the bridge
/// publishes.
///
/// - A frame parsed is self-delimiting: it took at least one byte and at most the input, the
///   same bytes alone parse to the same frame, and (for inputs up to 4 KiB) every shorter
///   prefix is incomplete, never a different frame or an error.
/// - A refusal of a size comes from the header, never after buffering past the limits.
/// - Frames follow one another: the rest of the input after a frame parses on its own.
/// - An event encoded with `publish` (channel and payload from the input) is one command that
///   parses back to exactly those bytes, and the same parts sent as a `pmessage` push read
///   back as that channel and payload.
pub fn resp(data: &[u8]) {
    let mut rest = data;
    let mut frames = 0;
    while frames < 64 {
        match resp::parse(rest) {
            Ok(Some((frame, used))) => {
                assert!(used >= 1 && used <= rest.len(), "{used} of {}", rest.len());
                assert_eq!(resp::parse(&rest[..used]), Ok(Some((frame, used))));
                if used <= 4096 {
                    for cut in 0..used {
                        assert_eq!(
                            resp::parse(&rest[..cut]),
                            Ok(None),
                            "a {cut}-byte prefix of a {used}-byte frame {frame:?}"
                        );
                    }
                }
                check_frame(&frame);
                rest = &rest[used..];
                frames += 1;
            }
            Ok(None) => break,
            Err(RespError::TooLong(n)) => {
                assert!(n > MAX_BULK);
                break;
            }
            Err(RespError::LineTooLong) => {
                assert!(rest.len() >= MAX_LINE);
                break;
            }
            Err(_) => break,
        }
    }
    round_trip(data);
}

fn check_frame(frame: &Frame<'_>) {
    match frame {
        Frame::Array(items, n) => {
            assert!(*n <= items.len());
            if let Some((channel, payload)) = frame.pmessage() {
                assert!(channel.len() as i64 <= MAX_BULK && payload.len() as i64 <= MAX_BULK);
            }
        }
        Frame::Bulk(Item::Bytes(b)) => assert!(b.len() as i64 <= MAX_BULK),
        Frame::Simple(s) | Frame::Error(s) => {
            assert!(!s.contains(&b'\n'), "a simple string ends at its line")
        }
        _ => {}
    }
}

fn round_trip(data: &[u8]) {
    let split = data
        .first()
        .map_or(0, |&b| usize::from(b) % (data.len().max(1)));
    let (head, payload) = data.split_at(split);
    let channel = String::from_utf8_lossy(head);
    let mut out = Vec::new();
    resp::publish(&mut out, "sdsim:bus:", &channel, "inst-1", payload);
    let (frame, used) = resp::parse(&out)
        .expect("a published event parses")
        .expect("a published event is complete");
    assert_eq!(used, out.len());
    let redis_channel = format!("sdsim:bus:{channel}");
    let body = [b"inst-1\n".as_slice(), payload].concat();
    match frame {
        Frame::Array([Item::Bytes(cmd), Item::Bytes(c), Item::Bytes(b), _], 3) => {
            assert_eq!(cmd, b"PUBLISH");
            assert_eq!(c, redis_channel.as_bytes());
            assert_eq!(b, body.as_slice());
        }
        other => panic!("PUBLISH read back as {other:?}"),
    }
    out.clear();
    resp::command(
        &mut out,
        &[b"pmessage", b"sdsim:bus:*", redis_channel.as_bytes(), &body],
    );
    let (push, used) = resp::parse(&out).unwrap().unwrap();
    assert_eq!(used, out.len());
    assert_eq!(
        push.pmessage(),
        Some((redis_channel.as_bytes(), body.as_slice()))
    );
}
