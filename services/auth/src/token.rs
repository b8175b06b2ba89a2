//! Access tokens: compact JWS (RFC 7515) JWTs signed with Ed25519 (`alg: EdDSA`, RFC 8037),
//! each naming its key with `kid`, and the key ring that signs and verifies them.
//!
//! Decoding is strict: exactly three base64url parts without padding, a header whose `alg` is
//! `EdDSA` (so `none` and HMAC confusion are impossible), a known `kid`, a valid signature, then
//! the claims: `iss`, `aud`, `nbf`, `exp`.
//!
//! Sizes are checked before anything is decoded, and nothing is allocated before the signature
//! holds: a token over [`MAX_TOKEN_BYTES`], a header part over [`MAX_HEADER_CHARS`] or a
//! signature part longer than an Ed25519 signature is malformed at once; the header and the
//! signature decode into buffers on the stack; only the payload of a token whose signature is
//! valid is decoded onto the heap.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Longest token accepted (bytes); longer ones are malformed without further work.
pub const MAX_TOKEN_BYTES: usize = 8192;
/// Longest header part accepted (base64url characters); ours are about 90.
pub const MAX_HEADER_CHARS: usize = 512;
/// Base64url characters of an Ed25519 signature (64 bytes, no padding).
const SIGNATURE_CHARS: usize = 86;

/// What an access token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// The user id.
    pub sub: String,
    /// The session the token belongs to (logout and revocation act on it).
    pub sid: String,
    /// The user's email.
    pub email: String,
    /// Role names.
    pub roles: Vec<String>,
    /// Permissions the roles grant.
    pub perms: Vec<String>,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Not before (Unix seconds).
    pub nbf: i64,
    /// Expires at (Unix seconds).
    pub exp: i64,
    /// Token id.
    pub jti: String,
}

#[derive(Serialize, Deserialize)]
struct Header<'a> {
    alg: &'a str,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<&'a str>,
    #[serde(default)]
    kid: Option<&'a str>,
}

/// Why a token is not valid (the gRPC `TokenProblem`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// Not three base64url parts, bad JSON, wrong issuer or audience, too long.
    #[error("the token is malformed")]
    Malformed,
    /// The signature does not match.
    #[error("the token's signature is not valid")]
    BadSignature,
    /// `exp` has passed.
    #[error("the token has expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// The session was logged out or revoked.
    #[error("the token's session has been revoked")]
    Revoked,
    /// `kid` names no key this service knows.
    #[error("the token names an unknown signing key")]
    UnknownKey,
    /// `alg` is not EdDSA.
    #[error("the token's algorithm is not supported (EdDSA only)")]
    UnsupportedAlgorithm,
}

impl Problem {
    /// Every problem, in declaration order (the index is [`Problem::index`]).
    pub const ALL: [Problem; 7] = [
        Problem::Malformed,
        Problem::BadSignature,
        Problem::Expired,
        Problem::NotYetValid,
        Problem::Revoked,
        Problem::UnknownKey,
        Problem::UnsupportedAlgorithm,
    ];

    /// Its position in [`Problem::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// A metric label.
    pub fn label(self) -> &'static str {
        match self {
            Problem::Malformed => "malformed",
            Problem::BadSignature => "bad_signature",
            Problem::Expired => "expired",
            Problem::NotYetValid => "not_yet_valid",
            Problem::Revoked => "revoked",
            Problem::UnknownKey => "unknown_key",
            Problem::UnsupportedAlgorithm => "unsupported_algorithm",
        }
    }
}

/// One signing key.
pub struct SigningKey {
    /// Its id.
    pub kid: String,
    /// The key pair.
    pub pair: Ed25519KeyPair,
    /// PKCS#8 document (what storage keeps).
    pub pkcs8: Vec<u8>,
}

impl SigningKey {
    /// A fresh random key.
    pub fn generate() -> Result<SigningKey, ring::error::Unspecified> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)?.as_ref().to_vec();
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| ring::error::Unspecified)?;
        let kid = kid_of(pair.public_key().as_ref());
        Ok(SigningKey { kid, pair, pkcs8 })
    }

    /// From stored PKCS#8 bytes.
    pub fn from_pkcs8(kid: String, pkcs8: Vec<u8>) -> Result<SigningKey, ring::error::KeyRejected> {
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8)?;
        Ok(SigningKey { kid, pair, pkcs8 })
    }

    /// The raw 32-byte public key.
    pub fn public(&self) -> Vec<u8> {
        self.pair.public_key().as_ref().to_vec()
    }
}

/// A key id derived from the public key (RFC 7638-style thumbprint, shortened).
fn kid_of(public: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, public);
    B64.encode(&digest.as_ref()[..12])
}

/// The keys in force: one signs, all verify.
#[derive(Default)]
pub struct KeyRing {
    signer: Option<Arc<SigningKey>>,
    public: HashMap<String, Vec<u8>>,
    /// `kid` → public key, in creation order, for the JWKS document.
    order: Vec<String>,
}

impl KeyRing {
    /// A ring signing with `signer` and verifying with `public` (`kid`, raw key) pairs.
    pub fn new(signer: Option<Arc<SigningKey>>, public: Vec<(String, Vec<u8>)>) -> KeyRing {
        let order = public.iter().map(|(k, _)| k.clone()).collect();
        KeyRing {
            signer,
            public: public.into_iter().collect(),
            order,
        }
    }

    /// The key that signs new tokens.
    pub fn signer(&self) -> Option<&Arc<SigningKey>> {
        self.signer.as_ref()
    }

    /// How many keys verify.
    pub fn len(&self) -> usize {
        self.public.len()
    }

    /// Whether no key verifies.
    pub fn is_empty(&self) -> bool {
        self.public.is_empty()
    }

    /// Whether `kid` verifies.
    pub fn knows(&self, kid: &str) -> bool {
        self.public.contains_key(kid)
    }

    /// Signs `claims` with the current key.
    pub fn sign(&self, claims: &Claims) -> Option<String> {
        let key = self.signer.as_ref()?;
        let header = Header {
            alg: "EdDSA",
            typ: Some("JWT"),
            kid: Some(&key.kid),
        };
        let mut out = B64.encode(sonic_rs::to_vec(&header).ok()?);
        out.push('.');
        out.push_str(&B64.encode(sonic_rs::to_vec(claims).ok()?));
        let signature = key.pair.sign(out.as_bytes());
        out.push('.');
        out.push_str(&B64.encode(signature.as_ref()));
        Some(out)
    }

    /// Checks `token`'s form, algorithm, key and signature, then issuer/audience and times.
    pub fn verify(&self, token: &str, issuer: &str, now: i64) -> Result<Claims, Problem> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Problem::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Problem::Malformed);
        };
        if h.len() > MAX_HEADER_CHARS || s.len() > SIGNATURE_CHARS {
            return Err(Problem::Malformed);
        }
        let mut header_buf = [0u8; MAX_HEADER_CHARS * 3 / 4 + 3];
        let header_len = B64
            .decode_slice(h, &mut header_buf)
            .map_err(|_| Problem::Malformed)?;
        let header: Header =
            sonic_rs::from_slice(&header_buf[..header_len]).map_err(|_| Problem::Malformed)?;
        if header.alg != "EdDSA" {
            return Err(Problem::UnsupportedAlgorithm);
        }
        let kid = header.kid.ok_or(Problem::UnknownKey)?;
        let public = self.public.get(kid).ok_or(Problem::UnknownKey)?;
        let mut signature = [0u8; SIGNATURE_CHARS * 3 / 4 + 3];
        let signature_len = B64
            .decode_slice(s, &mut signature)
            .map_err(|_| Problem::Malformed)?;
        let signed = &token[..h.len() + 1 + p.len()];
        UnparsedPublicKey::new(&ED25519, public)
            .verify(signed.as_bytes(), &signature[..signature_len])
            .map_err(|_| Problem::BadSignature)?;
        let payload = B64.decode(p).map_err(|_| Problem::Malformed)?;
        let claims: Claims = sonic_rs::from_slice(&payload).map_err(|_| Problem::Malformed)?;
        if claims.iss != issuer || claims.aud != issuer {
            return Err(Problem::Malformed);
        }
        if now >= claims.exp {
            return Err(Problem::Expired);
        }
        if claims.nbf > now + NBF_LEEWAY_S {
            return Err(Problem::NotYetValid);
        }
        Ok(claims)
    }

    /// Every (`kid`, raw public key), oldest first.
    pub fn public_keys(&self) -> Vec<(String, Vec<u8>)> {
        self.order
            .iter()
            .map(|kid| (kid.clone(), self.public[kid].clone()))
            .collect()
    }

    /// The JWKS document (RFC 7517, OKP keys of RFC 8037).
    pub fn jwks(&self) -> Jwks {
        Jwks {
            keys: self
                .order
                .iter()
                .map(|kid| Jwk {
                    kty: "OKP",
                    crv: "Ed25519",
                    alg: "EdDSA",
                    use_: "sig",
                    kid: kid.clone(),
                    x: B64.encode(&self.public[kid]),
                })
                .collect(),
        }
    }
}

/// Clock skew tolerated between instances for `nbf`.
const NBF_LEEWAY_S: i64 = 30;

/// `/.well-known/jwks.json`.
#[derive(Debug, Serialize)]
pub struct Jwks {
    /// The keys.
    pub keys: Vec<Jwk>,
}

/// One public key.
#[derive(Debug, Serialize)]
pub struct Jwk {
    /// Key type.
    pub kty: &'static str,
    /// Curve.
    pub crv: &'static str,
    /// Algorithm.
    pub alg: &'static str,
    /// Use: signatures.
    #[serde(rename = "use")]
    pub use_: &'static str,
    /// Key id.
    pub kid: String,
    /// The public key, base64url.
    pub x: String,
}

/// The process-wide key ring, replaced whole when keys change; shards keep the `Arc` they last
/// saw and compare one version number per verification to notice a change.
#[derive(Default)]
pub struct Keys {
    version: AtomicU64,
    ring: RwLock<Arc<KeyRing>>,
}

impl Keys {
    /// The current ring and its version.
    pub fn current(&self) -> (u64, Arc<KeyRing>) {
        let ring = self.ring.read().unwrap_or_else(|e| e.into_inner());
        (self.version.load(Ordering::Acquire), Arc::clone(&ring))
    }

    /// The version (changes whenever the ring does).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Installs `ring`.
    pub fn replace(&self, ring: KeyRing) {
        let mut slot = self.ring.write().unwrap_or_else(|e| e.into_inner());
        *slot = Arc::new(ring);
        self.version.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(now: i64) -> Claims {
        Claims {
            iss: "sdsim".into(),
            aud: "sdsim".into(),
            sub: "u1".into(),
            sid: "s1".into(),
            email: "a@example.com".into(),
            roles: vec!["user".into()],
            perms: vec!["project:read".into()],
            iat: now,
            nbf: now,
            exp: now + 900,
            jti: "j".into(),
        }
    }

    fn ring() -> KeyRing {
        let key = Arc::new(SigningKey::generate().unwrap());
        let public = vec![(key.kid.clone(), key.public())];
        KeyRing::new(Some(key), public)
    }

    fn part(value: &str) -> String {
        B64.encode(value)
    }

    #[test]
    fn round_trip_and_every_problem() {
        let now = 1_800_000_000;
        let ring = ring();
        let token = ring.sign(&claims(now)).unwrap();
        assert_eq!(ring.verify(&token, "sdsim", now).unwrap(), claims(now));
        let (h, rest) = token.split_once('.').unwrap();
        let (p, s) = rest.split_once('.').unwrap();
        let kid = ring.signer().unwrap().kid.clone();
        let other = self::ring();
        let mut tampered_claims = claims(now);
        tampered_claims.roles = vec!["admin".into()];
        let tampered_payload = B64.encode(sonic_rs::to_vec(&tampered_claims).unwrap());
        let cases: Vec<(String, Result<(), Problem>, &str)> = vec![
            (String::new(), Err(Problem::Malformed), "empty"),
            ("a.b".into(), Err(Problem::Malformed), "two parts"),
            (format!("{token}.x"), Err(Problem::Malformed), "four parts"),
            (
                format!("!!.{p}.{s}"),
                Err(Problem::Malformed),
                "header not base64url",
            ),
            (
                format!("{}.{p}.{s}", part("{")),
                Err(Problem::Malformed),
                "header not JSON",
            ),
            (
                format!("{}.{p}.", part(r#"{"alg":"none","typ":"JWT"}"#)),
                Err(Problem::UnsupportedAlgorithm),
                "alg none",
            ),
            (
                format!(
                    "{}.{p}.{s}",
                    part(&format!(r#"{{"alg":"HS256","kid":"{kid}"}}"#))
                ),
                Err(Problem::UnsupportedAlgorithm),
                "alg HS256",
            ),
            (
                format!("{}.{p}.{s}", part(r#"{"alg":"EdDSA","kid":"nope"}"#)),
                Err(Problem::UnknownKey),
                "wrong kid",
            ),
            (
                format!("{}.{p}.{s}", part(r#"{"alg":"EdDSA"}"#)),
                Err(Problem::UnknownKey),
                "no kid",
            ),
            (
                format!("{h}.{tampered_payload}.{s}"),
                Err(Problem::BadSignature),
                "tampered claims",
            ),
            (
                format!("{h}.{p}.AAAA"),
                Err(Problem::BadSignature),
                "short signature",
            ),
            (
                format!("{h}.{p}.{s}="),
                Err(Problem::Malformed),
                "padded signature",
            ),
            (
                "x".repeat(MAX_TOKEN_BYTES + 1),
                Err(Problem::Malformed),
                "too long",
            ),
        ];
        for (token, want, name) in cases {
            assert_eq!(
                ring.verify(&token, "sdsim", now).map(|_| ()),
                want,
                "{name}"
            );
        }
        // Signed by a key this ring does not know.
        let foreign = other.sign(&claims(now)).unwrap();
        assert_eq!(
            ring.verify(&foreign, "sdsim", now),
            Err(Problem::UnknownKey)
        );
        // Times and issuer.
        assert_eq!(
            ring.verify(&token, "sdsim", now + 900),
            Err(Problem::Expired)
        );
        assert_eq!(
            ring.verify(&token, "sdsim", now - 31),
            Err(Problem::NotYetValid)
        );
        assert_eq!(ring.verify(&token, "other", now), Err(Problem::Malformed));
    }

    #[test]
    fn jwks_lists_every_verifying_key() {
        let a = Arc::new(SigningKey::generate().unwrap());
        let b = SigningKey::generate().unwrap();
        let ring = KeyRing::new(
            Some(Arc::clone(&a)),
            vec![(a.kid.clone(), a.public()), (b.kid.clone(), b.public())],
        );
        let jwks = ring.jwks();
        assert_eq!(jwks.keys.len(), 2);
        assert_eq!(jwks.keys[1].kid, b.kid);
        assert_eq!(B64.decode(&jwks.keys[0].x).unwrap(), a.public());
        // A token signed by b verifies through the ring although a signs.
        let ring_b = KeyRing::new(Some(Arc::new(b)), vec![]);
        let token = ring_b.sign(&claims(1_800_000_000)).unwrap();
        assert!(ring.verify(&token, "sdsim", 1_800_000_000).is_ok());
    }
}
