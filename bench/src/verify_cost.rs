//! What checking one access token costs on one thread, by library: ring's Ed25519 (what sdsim
//! uses) against jsonwebtoken's EdDSA (aws-lc-rs backend, what `peer-auth` uses), both for the
//! bare signature and for the whole token.

use crate::token::{Claims, Signer};
use anyhow::Context;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use ring::signature::{UnparsedPublicKey, ED25519};
use sdsim_auth::token::{KeyRing, Keys, SigningKey};
use sdsim_auth::verifier::Verifier;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

/// One measured operation.
#[derive(Debug, Clone)]
pub struct Cost {
    /// What was timed.
    pub operation: &'static str,
    /// Median nanoseconds per operation over the rounds.
    pub ns_per_op: f64,
}

/// Rounds each measurement is split into; the median round is reported.
const ROUNDS: u32 = 5;

/// Times each operation `iterations` times (in [`ROUNDS`] rounds, after a warm-up round) on the
/// calling thread, on a token of sdsim's shape signed with a fresh key.
pub fn measure(iterations: u32) -> anyhow::Result<Vec<Cost>> {
    let signer = Signer::generate("k1")?;
    let claims = Claims::sample(3600);
    let token = signer.mint(&claims)?;
    let (input, signature_b64) = token.rsplit_once('.').context("minted token has 3 parts")?;
    let signature = URL_SAFE_NO_PAD.decode(signature_b64)?;
    let ring_key = UnparsedPublicKey::new(&ED25519, signer.public_key().to_vec());
    let jwks: JwkSet = serde_json::from_str(&signer.jwks())?;
    let jwt_key = DecodingKey::from_jwk(&jwks.keys[0])?;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&["sdsim"]);
    validation.set_audience(&["sdsim"]);
    validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);

    // Every path must accept the token before it is timed.
    ring_key
        .verify(input.as_bytes(), &signature)
        .map_err(|_| anyhow::anyhow!("ring rejects the minted token"))?;
    anyhow::ensure!(
        jsonwebtoken::crypto::verify(signature_b64, input.as_bytes(), &jwt_key, Algorithm::EdDSA)?,
        "jsonwebtoken rejects the minted signature"
    );
    let decoded = jsonwebtoken::decode::<Claims>(&token, &jwt_key, &validation)?;
    anyhow::ensure!(
        decoded.claims == claims,
        "jsonwebtoken decoded other claims"
    );

    let (sdsim_token, cached, uncached) = sdsim_verifiers()?;
    let now = sdsim_auth::service::now();
    anyhow::ensure!(
        cached.verify(&sdsim_token, now).is_ok() && uncached.verify(&sdsim_token, now).is_ok(),
        "sdsim's verifier rejects its own token"
    );
    anyhow::ensure!(
        uncached.stats().entries == 0,
        "the uncached verifier cached a token"
    );

    let n = iterations.max(ROUNDS);
    Ok(vec![
        Cost {
            operation: "sdsim: Verifier::verify, cache hit (SHA-256 of the token, lookup, revocation check)",
            ns_per_op: time(n, || cached.verify(black_box(&sdsim_token), now).is_ok()),
        },
        Cost {
            operation: "sdsim: Verifier::verify, no cache (base64url, Ed25519, claims, iss/aud/exp, revocation check)",
            ns_per_op: time(n, || uncached.verify(black_box(&sdsim_token), now).is_ok()),
        },
        Cost {
            operation: "ring: Ed25519 sign (header.payload)",
            ns_per_op: time(n, || signer.sign(black_box(input.as_bytes()))),
        },
        Cost {
            operation: "ring: Ed25519 verify (signature only)",
            ns_per_op: time(n, || {
                ring_key
                    .verify(black_box(input.as_bytes()), black_box(&signature))
                    .is_ok()
            }),
        },
        Cost {
            operation: "jsonwebtoken: crypto::verify (base64url + EdDSA, aws-lc-rs)",
            ns_per_op: time(n, || {
                jsonwebtoken::crypto::verify(
                    black_box(signature_b64),
                    black_box(input.as_bytes()),
                    &jwt_key,
                    Algorithm::EdDSA,
                )
                .is_ok()
            }),
        },
        Cost {
            operation: "jsonwebtoken: decode (header, EdDSA, claims, iss/aud/exp)",
            ns_per_op: time(n, || {
                jsonwebtoken::decode::<Claims>(black_box(&token), &jwt_key, &validation).is_ok()
            }),
        },
    ])
}

/// A token signed by a fresh key, and two verifiers of it: one caching, one not (capacity 0).
fn sdsim_verifiers() -> anyhow::Result<(String, Verifier, Verifier)> {
    // A shard's verifier state is per key ring, so each verifier gets its own `Keys` (with the
    // same key): the uncached one must not find the cached one's entries.
    let key = Arc::new(SigningKey::generate().map_err(|e| anyhow::anyhow!("{e}"))?);
    let ring = || {
        let keys = Arc::new(Keys::default());
        keys.replace(KeyRing::new(
            Some(Arc::clone(&key)),
            vec![(key.kid.clone(), key.public())],
        ));
        keys
    };
    let keys = ring();
    let now = sdsim_auth::service::now();
    let claims = sdsim_auth::token::Claims {
        iss: "sdsim".into(),
        aud: "sdsim".into(),
        sub: "0190a1b2-user".into(),
        sid: "0190a1b2-session".into(),
        email: "ada@example.com".into(),
        roles: vec!["user".into()],
        perms: vec!["project:read".into(), "project:write".into()],
        iat: now,
        nbf: now,
        exp: now + 3600,
        jti: "0190a1b2-jti".into(),
    };
    let token = keys
        .current()
        .1
        .sign(&claims)
        .context("the key ring has no signing key")?;
    Ok((
        token,
        Verifier::new(keys, "sdsim".into(), 1024),
        Verifier::new(ring(), "sdsim".into(), 0),
    ))
}

/// Median ns per call of `f` over [`ROUNDS`] rounds of `n / ROUNDS` calls.
fn time<T>(n: u32, mut f: impl FnMut() -> T) -> f64 {
    let per_round = (n / ROUNDS).max(1);
    for _ in 0..per_round {
        black_box(f());
    }
    let rounds = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..per_round {
                black_box(f());
            }
            start.elapsed().as_nanos() as f64 / f64::from(per_round)
        })
        .collect();
    crate::median(rounds)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_operation_is_timed() {
        let costs = super::measure(10).unwrap();
        assert_eq!(costs.len(), 6);
        assert!(costs.iter().all(|c| c.ns_per_op > 0.0), "{costs:?}");
    }
}
