//! Real-time input: `POST /api/publish` bodies and the WebSocket client messages
//! (`sdsim_gateway::realtime`).

use crate::bodies::{
    assert_keys_allowed, assert_names_the_key, error_of, json, names_one_of, object_keys, Keys,
};
use sdsim_gateway::realtime::policy::valid_channel;
use sdsim_gateway::realtime::session::{decode_client_op, ClientOp};
use sdsim_gateway::realtime::{decode_publish, encode_event};
use sonic_rs::{JsonValueTrait, Value};

const PUBLISH: Keys = Keys {
    all: &["channel", "data"],
    required: &["channel", "data"],
};

/// The payload of an unmasked server frame.
fn payload(frame: &[u8]) -> &[u8] {
    let header = match frame[1] & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    &frame[header..]
}

/// `publish_body`: an accepted body has a valid channel and its data reaches subscribers as
/// the same JSON value, inside an event frame that is valid UTF-8 JSON; a rejection is a 400
/// naming the key at fault (or the channel, when its name is not allowed).
pub fn publish_body(data: &[u8]) {
    match decode_publish(data) {
        Ok(publish) => {
            assert_keys_allowed(data, &PUBLISH, false);
            assert!(valid_channel(&publish.channel).is_ok());
            let sent: Value = json(data).expect("an accepted body is JSON");
            let passed: Value = json(&publish.data).expect("the data passed on is JSON");
            assert_eq!(Some(&passed), sent.get("data"));
            let frame = encode_event(&publish.channel, 7, &publish.data);
            assert_eq!(frame[0], 0x81, "one final text frame");
            let text = std::str::from_utf8(payload(&frame)).expect("a text frame is UTF-8");
            let event: Value = json(text.as_bytes()).expect("an event frame is JSON");
            assert_eq!(event["op"].as_str(), Some("event"));
            assert_eq!(event["channel"].as_str(), Some(publish.channel.as_ref()));
            assert_eq!(event["seq"].as_u64(), Some(7));
            assert_eq!(event.get("data"), Some(&passed));
        }
        Err(resp) => {
            let (status, code, message) = error_of(&resp);
            assert_eq!(status, 400, "{message}");
            match code.as_str() {
                "invalid_json" => {
                    assert!(message.starts_with("body must be "), "{message}");
                    if let Some(keys) = object_keys(data) {
                        assert_names_the_key(&message, &keys, &PUBLISH);
                    }
                }
                "bad_channel" => {
                    assert!(message.starts_with("channel: "), "{message}");
                    let sent: Value = json(data).expect("JSON");
                    let channel = sent["channel"].as_str().expect("a string channel");
                    assert!(valid_channel(channel).is_err(), "{channel:?} refused");
                }
                other => panic!("code {other}: {message}"),
            }
        }
    }
}

/// The keys each client operation takes (besides `op`), and those it requires.
fn op_keys(op: &str) -> Option<Keys> {
    Some(match op {
        "auth" => Keys {
            all: &["op", "token"],
            required: &["op", "token"],
        },
        "subscribe" => Keys {
            all: &["op", "channel", "since", "epoch"],
            required: &["op", "channel"],
        },
        "unsubscribe" => Keys {
            all: &["op", "channel"],
            required: &["op", "channel"],
        },
        "ping" => Keys {
            all: &["op"],
            required: &["op"],
        },
        _ => return None,
    })
}

/// `ws_client_message`: an accepted message is an object whose `op` is known and whose keys
/// are that operation's; it re-encodes to a message that decodes to itself; a rejection (sent
/// back as a `bad_request` error) names what is wrong: the key at fault, `op` when it is
/// missing, or the unknown operation.
pub fn client_message(data: &[u8]) {
    let Some(text) = crate::text(data) else {
        // The frame decoder refuses text that is not UTF-8 before a session sees it.
        return;
    };
    let op_of = || -> Option<String> {
        let v: Value = json(text.as_bytes()).ok()?;
        v.get("op")?.as_str().map(str::to_string)
    };
    match decode_client_op(text) {
        Ok(op) => {
            let name = op_of().expect("an accepted message has an op");
            let keys = op_keys(&name).expect("a known op");
            // `"since": null` and the like mean "not given".
            assert_keys_allowed(data, &keys, true);
            let again = sonic_rs::to_string(&op).expect("re-encodes");
            let back: ClientOp = decode_client_op(&again).expect("a re-encoded message decodes");
            assert_eq!(back, op);
        }
        Err(refused) => {
            let message = refused.to_string();
            assert!(message.starts_with("expected {\"op\""), "{message}");
            let Some(keys) = object_keys(data) else {
                return;
            };
            match op_of() {
                Some(name) => match op_keys(&name) {
                    Some(expected) => assert_names_the_key(&message, &keys, &expected),
                    // An unknown operation, unless another key is at fault first.
                    None => assert!(
                        names_one_of(
                            &message,
                            keys.iter().map(String::as_str).chain([name.as_str()])
                        ),
                        "{message}"
                    ),
                },
                None => assert!(
                    names_one_of(&message, keys.iter().map(String::as_str).chain(["op"])),
                    "{message}"
                ),
            }
        }
    }
}
