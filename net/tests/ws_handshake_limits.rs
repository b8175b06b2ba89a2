//! The WebSocket handshake refuses oversize and malformed values before allocating memory for
//! them: a table of malformed upgrade requests, each checked for the status, the message, and
//! the bytes `handshake::check` allocated while refusing it (counted by this test binary's
//! allocator, per thread).

use bytes::Bytes;
use http::StatusCode;
use sdsim_net::http::types::Request;
use sdsim_net::ws::handshake::{self, Policy, MAX_ORIGIN_BYTES, MAX_SUBPROTOCOL_TOKEN_BYTES};
use sdsim_testing::alloc::{allocated_during, Counting};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// What refusing a request may allocate whatever its size: the error message.
const MOST_ALLOCATED: usize = 512;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// An upgrade request with the standard headers, `key` as its key, and `extra` headers.
fn upgrade(key: &str, extra: &[(&str, String)]) -> Request {
    let mut b = http::Request::builder()
        .uri("/ws")
        .header("host", "t")
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", key);
    for (name, value) in extra {
        b = b.header(*name, value.as_str());
    }
    b.body(Bytes::new()).unwrap()
}

#[test]
fn oversize_handshake_values_are_refused_before_allocation() {
    let policy = Policy {
        allowed_origins: vec!["https://app.example.com".into()],
        compression: true,
    };
    let long_token = "t".repeat(MAX_SUBPROTOCOL_TOKEN_BYTES + 1);
    let rows: Vec<(&str, Request, StatusCode, &str)> = vec![
        (
            "a 100 KB key",
            upgrade(&"QUFB".repeat(25_000), &[]),
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Key must be 16 bytes",
        ),
        (
            "a key of 15 bytes",
            upgrade("dGhlIHNhbXBsZSBub25jZQ", &[]),
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Key must be 16 bytes",
        ),
        (
            "a key of 24 characters that is not base64",
            upgrade("!!!!!!!!!!!!!!!!!!!!!!==", &[]),
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Key must be 16 bytes",
        ),
        (
            "a 100 KB origin",
            upgrade(
                KEY,
                &[("origin", format!("https://{}", "o".repeat(100_000)))],
            ),
            StatusCode::BAD_REQUEST,
            "Origin of 100008 bytes is longer than 2048",
        ),
        (
            "an origin one byte over the limit",
            upgrade(KEY, &[("origin", "o".repeat(MAX_ORIGIN_BYTES + 1))]),
            StatusCode::BAD_REQUEST,
            "longer than 2048",
        ),
        (
            "a bearer subprotocol token over the token limit",
            upgrade(
                KEY,
                &[(
                    "sec-websocket-protocol",
                    format!("sdsim.v1, bearer.{long_token}"),
                )],
            ),
            StatusCode::BAD_REQUEST,
            "bearer subprotocol token of 8193 bytes is longer than 8192",
        ),
        (
            "a 100 KB bearer subprotocol token",
            upgrade(
                KEY,
                &[(
                    "sec-websocket-protocol",
                    format!("bearer.{}", "t".repeat(100_000)),
                )],
            ),
            StatusCode::BAD_REQUEST,
            "longer than 8192",
        ),
        (
            "an origin not allowed",
            upgrade(KEY, &[("origin", "https://evil.example".into())]),
            StatusCode::FORBIDDEN,
            "is not allowed",
        ),
        (
            "no key",
            {
                let mut r = upgrade(KEY, &[]);
                r.headers_mut().remove("sec-websocket-key");
                r
            },
            StatusCode::BAD_REQUEST,
            "missing Sec-WebSocket-Key",
        ),
        (
            "version 8",
            {
                let mut r = upgrade(KEY, &[]);
                r.headers_mut()
                    .insert("sec-websocket-version", "8".parse().unwrap());
                r
            },
            StatusCode::UPGRADE_REQUIRED,
            "speaks 13",
        ),
    ];
    for (name, req, status, message) in rows {
        let size: usize = req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len())
            .sum();
        let (result, bytes) = allocated_during(|| handshake::check(&req, &policy));
        let refused = result.expect_err(name);
        assert_eq!(refused.status, status, "{name}: {}", refused.message);
        assert!(
            refused.message.contains(message),
            "{name}: {}",
            refused.message
        );
        assert!(
            bytes <= MOST_ALLOCATED,
            "{name}: {bytes} bytes allocated refusing {size} bytes of headers"
        );
    }
    // A proper handshake with a bearer token of the largest size accepted.
    let token = "t".repeat(MAX_SUBPROTOCOL_TOKEN_BYTES);
    let req = upgrade(
        KEY,
        &[
            ("origin", "https://app.example.com".into()),
            (
                "sec-websocket-protocol",
                format!("sdsim.v1, bearer.{token}"),
            ),
        ],
    );
    let accepted = handshake::check(&req, &policy).unwrap();
    assert_eq!(accepted.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    assert_eq!(accepted.protocol, Some(handshake::PROTOCOL));
    assert_eq!(accepted.subprotocol_token.as_deref(), Some(token.as_str()));
}
