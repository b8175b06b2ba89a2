//! Many distinct access tokens signed by an sdsim instance's own key, for the cache-miss
//! benchmark: the key is read from the instance's SQLite key table (what `refresh_keys` wrote),
//! the claims copied from a token the instance issued at login, and each copy given its own
//! `jti` and lifetime before sdsim's own `KeyRing::sign` signs it. Every token verifies on the
//! instance (and on anything trusting its JWKS) as a login's would, and no two share a cache
//! entry.

use anyhow::{ensure, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sdsim_auth::token::{Claims, KeyRing, SigningKey};
use std::path::Path;
use std::sync::Arc;

/// The `kid` of a compact JWS's header.
pub fn kid_of(token: &str) -> anyhow::Result<String> {
    let header = token.split('.').next().context("empty token")?;
    let raw = URL_SAFE_NO_PAD
        .decode(header)
        .context("the token's header is not base64url")?;
    let json: serde_json::Value =
        serde_json::from_slice(&raw).context("the token's header is not JSON")?;
    Ok(json["kid"]
        .as_str()
        .context("the token's header has no kid")?
        .to_owned())
}

/// The claims of a compact JWS (not verified: the token came from the instance itself).
pub fn claims_of(token: &str) -> anyhow::Result<Claims> {
    let payload = token
        .split('.')
        .nth(1)
        .context("the token has no payload")?;
    let raw = URL_SAFE_NO_PAD
        .decode(payload)
        .context("the token's payload is not base64url")?;
    serde_json::from_slice(&raw).context("the token's payload is not sdsim's claims")
}

/// The signing key `kid` from the key table of the SQLite database `main_db` (sdsim keeps the
/// `auth_schema` tables in `<stem>.auth_schema.db` beside it).
pub fn signing_key(main_db: &Path, kid: &str) -> anyhow::Result<SigningKey> {
    let stem = main_db
        .file_stem()
        .and_then(|s| s.to_str())
        .context("the database path has no file name")?;
    let file = main_db.with_file_name(format!("{stem}.auth_schema.db"));
    let db =
        rusqlite::Connection::open_with_flags(&file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("opening {}", file.display()))?;
    let pkcs8: Vec<u8> = db
        .query_row(
            "SELECT private_pkcs8 FROM signing_keys WHERE kid = ?1",
            [kid],
            |row| row.get(0),
        )
        .with_context(|| format!("signing key {kid} in {}", file.display()))?;
    SigningKey::from_pkcs8(kid.to_owned(), pkcs8)
        .map_err(|e| anyhow::anyhow!("signing key {kid} is unreadable: {e}"))
}

/// `count` tokens with `template`'s claims, each with its own `jti` (`<jti>-<n>`), valid from
/// `now` for `lifetime_s`, signed by `key`.
pub fn mint(
    key: SigningKey,
    template: &Claims,
    count: usize,
    now: i64,
    lifetime_s: i64,
) -> anyhow::Result<Vec<String>> {
    let ring = KeyRing::new(Some(Arc::new(key)), Vec::new());
    let mut claims = template.clone();
    (claims.iat, claims.nbf, claims.exp) = (now, now, now + lifetime_s);
    let mut tokens = Vec::with_capacity(count);
    for n in 0..count {
        claims.jti = format!("{}-{n}", template.jti);
        tokens.push(
            ring.sign(&claims)
                .context("the key ring has no signing key")?,
        );
    }
    ensure!(
        tokens.len() < 2 || tokens[0] != tokens[1],
        "minted tokens are not distinct"
    );
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sdsim_auth::token::Keys;
    use sdsim_auth::verifier::Verifier;

    #[test]
    fn minted_tokens_are_distinct_and_verify_with_the_instances_key() {
        let key = SigningKey::generate().unwrap();
        let (kid, pkcs8, public) = (key.kid.clone(), key.pkcs8.clone(), key.public());
        // A key table laid out as sdsim's migration makes it.
        let dir = std::env::temp_dir().join(format!("sdsim-token-batch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let main_db = dir.join("bench.db");
        let table = rusqlite::Connection::open(dir.join("bench.auth_schema.db")).unwrap();
        table
            .execute_batch(
                "CREATE TABLE signing_keys (kid TEXT PRIMARY KEY, private_pkcs8 BLOB NOT NULL, public_key BLOB NOT NULL, created_at BIGINT NOT NULL, active_from BIGINT NOT NULL)",
            )
            .unwrap();
        table
            .execute(
                "INSERT INTO signing_keys VALUES (?1, ?2, ?3, 0, 0)",
                rusqlite::params![kid, pkcs8, public],
            )
            .unwrap();
        let now = 1_800_000_000;
        let login = KeyRing::new(Some(Arc::new(key)), Vec::new())
            .sign(&Claims {
                iss: "sdsim".into(),
                aud: "sdsim".into(),
                sub: "u1".into(),
                sid: "s1".into(),
                email: "a@example.com".into(),
                roles: vec!["user".into()],
                perms: vec!["project:read".into()],
                iat: now - 10,
                nbf: now - 10,
                exp: now + 890,
                jti: "j".into(),
            })
            .unwrap();
        assert_eq!(kid_of(&login).unwrap(), kid);
        let loaded = signing_key(&main_db, &kid).unwrap();
        let tokens = mint(loaded, &claims_of(&login).unwrap(), 50, now, 3600).unwrap();
        let Err(unknown) = signing_key(&main_db, "no-such-kid") else {
            panic!("a kid the table lacks was found");
        };
        assert!(
            format!("{unknown:#}").contains("no-such-kid"),
            "{unknown:#}"
        );
        std::fs::remove_dir_all(&dir).unwrap();

        let keys = Arc::new(Keys::default());
        keys.replace(KeyRing::new(None, vec![(kid.clone(), public)]));
        let verifier = Verifier::new(keys, "sdsim".into(), 1000);
        for t in &tokens {
            let caller = verifier.verify(t, now + 3000).unwrap();
            assert_eq!(&*caller.user_id, "u1");
        }
        // Fifty distinct tokens: fifty signatures checked, none answered from the cache.
        let stats = verifier.stats();
        assert_eq!((stats.hits, stats.misses, stats.entries), (0, 50, 50));
    }
}
