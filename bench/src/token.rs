//! Ed25519 JWTs shaped like sdsim's access tokens, minted with ring: the benchmark's self-test
//! key and token, the JWKS document that publishes the key, and a tampered copy of a token.
//!
//! Header `{"alg":"EdDSA","typ":"JWT","kid":..}`; claims `iss`, `aud` (both `"sdsim"`), `sub`,
//! `sid`, `email`, `roles`, `perms`, `iat`, `nbf`, `exp`, `jti`.

use anyhow::Context;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// The claim set of an sdsim access token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer, `"sdsim"`.
    pub iss: String,
    /// Audience, `"sdsim"`.
    pub aud: String,
    /// The user id.
    pub sub: String,
    /// The session id.
    pub sid: String,
    /// The user's email.
    pub email: String,
    /// Role names, e.g. `["user"]`.
    pub roles: Vec<String>,
    /// Permissions the roles grant, e.g. `["project:read"]`.
    pub perms: Vec<String>,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// Not before (Unix seconds).
    pub nbf: u64,
    /// Expires at (Unix seconds).
    pub exp: u64,
    /// Token id.
    pub jti: String,
}

impl Claims {
    /// The self-test claim set (user `u1`, session `s1`, role `user`), valid from now for
    /// `lifetime_secs`.
    pub fn sample(lifetime_secs: u64) -> Claims {
        let now = unix_now();
        Claims {
            iss: "sdsim".into(),
            aud: "sdsim".into(),
            sub: "u1".into(),
            sid: "s1".into(),
            email: "a@b.c".into(),
            roles: vec!["user".into()],
            perms: vec!["project:read".into()],
            iat: now,
            nbf: now,
            exp: now + lifetime_secs,
            jti: format!("{:016x}", now.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        }
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An Ed25519 signing key with its key id.
pub struct Signer {
    key: Ed25519KeyPair,
    kid: String,
}

impl Signer {
    /// A fresh random key named `kid`.
    pub fn generate(kid: &str) -> anyhow::Result<Signer> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| anyhow::anyhow!("generating an Ed25519 key"))?;
        let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
            .map_err(|e| anyhow::anyhow!("loading the Ed25519 key: {e}"))?;
        Ok(Signer {
            key,
            kid: kid.to_owned(),
        })
    }

    /// The raw 32-byte public key.
    pub fn public_key(&self) -> &[u8] {
        self.key.public_key().as_ref()
    }

    /// The Ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> ring::signature::Signature {
        self.key.sign(message)
    }

    /// A compact JWS: `base64url(header).base64url(claims).base64url(signature)`, with the
    /// header `{"alg":"EdDSA","typ":"JWT","kid":<kid>}`.
    pub fn mint(&self, claims: &Claims) -> anyhow::Result<String> {
        let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": self.kid});
        self.mint_with(&header, &serde_json::to_value(claims)?)
    }

    /// A compact JWS of any header and claims, signed with this key (for tokens a verifier
    /// must refuse).
    pub fn mint_with(
        &self,
        header: &serde_json::Value,
        claims: &serde_json::Value,
    ) -> anyhow::Result<String> {
        let mut token = unsigned(header, claims)?;
        let signature = self.key.sign(token.trim_end_matches('.').as_bytes());
        token.push_str(&URL_SAFE_NO_PAD.encode(signature.as_ref()));
        Ok(token)
    }

    /// The JWKS document publishing this key, as sdsim serves `/.well-known/jwks.json`.
    pub fn jwks(&self) -> String {
        serde_json::json!({"keys": [{
            "kty": "OKP",
            "crv": "Ed25519",
            "alg": "EdDSA",
            "use": "sig",
            "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(self.public_key()),
        }]})
        .to_string()
    }
}

/// `base64url(header).base64url(claims).` with an empty signature (what `alg: none` looks like).
pub fn unsigned(header: &serde_json::Value, claims: &serde_json::Value) -> anyhow::Result<String> {
    Ok(format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(header)?),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?)
    ))
}

/// `token` with `"admin"` added to its roles and the original signature kept: what an attacker
/// who edits a token would send. A verifier must answer bad signature.
pub fn escalate(token: &str) -> anyhow::Result<String> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        anyhow::bail!("not a compact JWS: {token}");
    };
    let raw = URL_SAFE_NO_PAD
        .decode(payload)
        .context("payload is not base64url")?;
    let mut claims: serde_json::Value =
        serde_json::from_slice(&raw).context("payload is not JSON")?;
    let roles = claims
        .get_mut("roles")
        .and_then(|r| r.as_array_mut())
        .context("payload has no roles array")?;
    roles.push("admin".into());
    let forged = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims)?);
    Ok(format!("{header}.{forged}.{signature}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{UnparsedPublicKey, ED25519};

    #[test]
    fn minted_tokens_verify_and_escalated_ones_do_not() {
        let signer = Signer::generate("k1").unwrap();
        let token = signer.mint(&Claims::sample(60)).unwrap();
        let key = UnparsedPublicKey::new(&ED25519, signer.public_key().to_vec());
        let verify = |t: &str| {
            let (input, sig) = t.rsplit_once('.').unwrap();
            key.verify(input.as_bytes(), &URL_SAFE_NO_PAD.decode(sig).unwrap())
        };
        assert!(verify(&token).is_ok());
        let forged = escalate(&token).unwrap();
        assert_ne!(forged, token);
        assert!(verify(&forged).is_err());
        let jwks: serde_json::Value = serde_json::from_str(&signer.jwks()).unwrap();
        assert_eq!(jwks["keys"][0]["kid"], "k1");
        assert_eq!(jwks["keys"][0]["x"].as_str().unwrap().len(), 43);
    }
}
