//! The JWT decoder refuses oversize and malformed tokens before allocating memory for them: a
//! table of malformed inputs, each checked for the problem reported and for the bytes the
//! decoder allocated while refusing it (counted by this test binary's allocator, per thread).

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use sdsim_auth::token::{Claims, KeyRing, Problem, SigningKey, MAX_TOKEN_BYTES};
use sdsim_testing::alloc::{allocated_during, Counting};
use std::sync::Arc;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const NOW: i64 = 1_800_000_000;

/// What refusing a token may allocate whatever its size: sonic-rs builds its error for a header
/// that is not JSON (about 200 bytes here); nothing may grow with the input.
const MOST_ALLOCATED: usize = 512;

fn claims() -> Claims {
    Claims {
        iss: "sdsim".into(),
        aud: "sdsim".into(),
        sub: "u1".into(),
        sid: "s1".into(),
        email: "a@example.com".into(),
        roles: vec!["user".into()],
        perms: vec!["project:read".into()],
        iat: NOW,
        nbf: NOW,
        exp: NOW + 900,
        jti: "j".into(),
    }
}

#[test]
fn oversize_and_forged_tokens_are_refused_before_allocation() {
    let key = Arc::new(SigningKey::generate().unwrap());
    let kid = key.kid.clone();
    let ring = KeyRing::new(Some(Arc::clone(&key)), vec![(kid.clone(), key.public())]);
    let token = ring.sign(&claims()).unwrap();
    let (h, rest) = token.split_once('.').unwrap();
    let (p, s) = rest.split_once('.').unwrap();
    let big_payload = B64.encode(vec![b'x'; 5000]);
    let padded_header = B64.encode(format!(
        r#"{{"alg":"EdDSA","kid":"{kid}","pad":"{}"}}"#,
        "p".repeat(4000)
    ));
    let rows: Vec<(&str, String, Problem)> = vec![
        (
            "a megabyte of token",
            "x".repeat(1 << 20),
            Problem::Malformed,
        ),
        (
            "just over the token limit",
            format!("{h}.{}.{s}", "A".repeat(MAX_TOKEN_BYTES)),
            Problem::Malformed,
        ),
        (
            "a header part of 6 KB within the token limit",
            format!("{padded_header}.{p}.{s}"),
            Problem::Malformed,
        ),
        (
            "a signature part of 6 KB",
            format!("{h}.{p}.{}", "A".repeat(6000)),
            Problem::Malformed,
        ),
        (
            "a signature one character too long",
            format!("{h}.{p}.{s}A"),
            Problem::Malformed,
        ),
        (
            "a forged signature over a 5 KB payload",
            format!("{h}.{big_payload}.{}", "A".repeat(86)),
            Problem::BadSignature,
        ),
        (
            "header not base64url",
            format!("!!.{p}.{s}"),
            Problem::Malformed,
        ),
        (
            "header not JSON",
            format!("{}.{p}.{s}", B64.encode("{")),
            Problem::Malformed,
        ),
        (
            "the longest header accepted, not JSON",
            format!("{}.{p}.{s}", B64.encode("{".repeat(384))),
            Problem::Malformed,
        ),
        (
            "unknown key",
            format!("{}.{p}.{s}", B64.encode(r#"{"alg":"EdDSA","kid":"nope"}"#)),
            Problem::UnknownKey,
        ),
        (
            "alg none",
            format!("{}.{p}.", B64.encode(r#"{"alg":"none"}"#)),
            Problem::UnsupportedAlgorithm,
        ),
    ];
    for (name, input, want) in rows {
        let (got, bytes) = allocated_during(|| ring.verify(&input, "sdsim", NOW));
        assert_eq!(got, Err(want), "{name}");
        assert!(
            bytes <= MOST_ALLOCATED,
            "{name}: {bytes} bytes allocated while refusing a {}-byte token",
            input.len()
        );
    }
    // The genuine token still verifies.
    assert_eq!(ring.verify(&token, "sdsim", NOW), Ok(claims()));
}
