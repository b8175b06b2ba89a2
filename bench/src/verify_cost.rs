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
use std::hint::black_box;
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

    let n = iterations.max(ROUNDS);
    Ok(vec![
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
        assert_eq!(costs.len(), 4);
        assert!(costs.iter().all(|c| c.ns_per_op > 0.0), "{costs:?}");
    }
}
