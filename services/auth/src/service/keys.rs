//! Signing keys: the first one, rotation, and the ring every shard verifies with.

use super::Auth;
use crate::token::{KeyRing, SigningKey};
use crate::Failure;
use sdsim_store::{StoreError, Value};
use std::sync::Arc;

impl Auth {
    /// Reads the signing keys, making the first one or the next one when due, and installs the
    /// ring (keys still needed to verify live tokens, the current signer, the next one).
    pub async fn refresh_keys(&self, now: i64) -> Result<(), Failure> {
        let mut rows = self.load_keys().await?;
        let rotation = self.config.key_rotation.as_secs() as i64;
        let newest_created = rows.iter().map(|k| k.1).max();
        let due = match newest_created {
            None => Some(now),
            Some(created) if created + rotation <= now => {
                Some(now + self.config.key_publish_delay.as_secs() as i64)
            }
            _ => None,
        };
        if let Some(active_from) = due {
            let key = SigningKey::generate()
                .map_err(|_| Failure::Unavailable("cannot generate a signing key".into()))?;
            self.store
                .execute(
                    "INSERT INTO auth_schema.signing_keys (kid, private_pkcs8, public_key, created_at, active_from) VALUES ($1, $2, $3, $4, $5)",
                    vec![
                        Value::Text(key.kid.clone()),
                        Value::Bytes(key.pkcs8.clone()),
                        Value::Bytes(key.public()),
                        Value::Int(now),
                        Value::Int(active_from),
                    ],
                )
                .await?;
            tracing::info!(kid = %key.kid, active_from, "new signing key");
            rows = self.load_keys().await?;
        }
        // Oldest first: (kid, created_at, active_from, pkcs8).
        rows.sort_by(|a, b| (a.2, &a.0).cmp(&(b.2, &b.0)));
        let grace = self.config.access_ttl.as_secs() as i64 + 60;
        let signer_index = rows.iter().rposition(|k| k.2 <= now).unwrap_or(0);
        let mut public = Vec::new();
        for (i, (kid, _, _, pkcs8)) in rows.iter().enumerate() {
            let successor_since = rows.get(i + 1).map(|n| n.2).filter(|t| *t <= now);
            let needed = match successor_since {
                Some(t) => t + grace > now,
                None => true,
            };
            if needed {
                let key = SigningKey::from_pkcs8(kid.clone(), pkcs8.clone()).map_err(|e| {
                    Failure::Unavailable(format!("signing key {kid} is unreadable: {e}"))
                })?;
                public.push((kid.clone(), key.public()));
            }
        }
        let signer = rows
            .get(signer_index)
            .map(|(kid, _, _, pkcs8)| SigningKey::from_pkcs8(kid.clone(), pkcs8.clone()))
            .transpose()
            .map_err(|e| Failure::Unavailable(format!("signing key is unreadable: {e}")))?
            .map(Arc::new);
        let (_, current) = self.keys.current();
        let same = current.signer().map(|k| &k.kid) == signer.as_ref().map(|k| &k.kid)
            && public.iter().all(|(kid, _)| current.knows(kid))
            && current.len() == public.len();
        if !same {
            self.keys.replace(KeyRing::new(signer, public));
        }
        Ok(())
    }

    async fn load_keys(&self) -> Result<Vec<(String, i64, i64, Vec<u8>)>, Failure> {
        let rows = self
            .store
            .query(
                "SELECT kid, created_at, active_from, private_pkcs8 FROM auth_schema.signing_keys",
                vec![],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.text(0)?.to_string(),
                    r.int(1)?,
                    r.int(2)?,
                    r.bytes(3)?.to_vec(),
                ))
            })
            .collect::<Result<_, StoreError>>()
            .map_err(Failure::from)
    }
}
