//! The access-token (JWT) decoder: arbitrary text must yield a verdict, never a panic, and only
//! a token signed by the ring's key may verify.

#![no_main]

use libfuzzer_sys::fuzz_target;
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

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        // Random input cannot carry a valid Ed25519 signature of the ring's key.
        assert!(ring().verify(text, "sdsim", 1_800_000_000).is_err());
    }
});
