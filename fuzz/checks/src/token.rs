//! Access tokens (`sdsim_auth::token`): the JWT decoder and signature check.

use crate::alloc::peak_while;
use crate::ALLOCATION_SLACK;
use sdsim_auth::token::{KeyRing, SigningKey};
use std::sync::{Arc, OnceLock};

fn ring() -> &'static KeyRing {
    static RING: OnceLock<KeyRing> = OnceLock::new();
    RING.get_or_init(|| {
        let key = Arc::new(SigningKey::generate().expect("a key"));
        let public = vec![(key.kid.clone(), key.public())];
        KeyRing::new(Some(key), public)
    })
}

/// `access_token`: arbitrary text gets a verdict, never a panic; it never verifies (it cannot
/// carry a valid Ed25519 signature of the ring's key); decoding holds at most a small multiple
/// of the token.
pub fn access_token(data: &[u8]) {
    let Some(text) = crate::text(data) else {
        return;
    };
    let ring = ring();
    let (verdict, held) = peak_while(|| ring.verify(text, "sdsim", 1_800_000_000));
    assert!(verdict.is_err(), "random text verified as a token");
    let bound = 4 * text.len() + ALLOCATION_SLACK;
    assert!(held <= bound, "verifying held {held} bytes (bound {bound})");
}
