//! Accounts: registration, email verification, password resets, roles.

use super::{new_secret, now, secret_hash, Auth, User};
use crate::password;
use crate::Failure;
use sdsim_contract::Caller;
use sdsim_core::new_id;
use sdsim_store::{Statement, StoreError, Value};

/// The normalised email, or why it is not one.
pub fn normalise_email(raw: &str) -> Result<String, Failure> {
    let email = raw.trim().to_lowercase();
    let bad = |why: &str| Failure::Invalid {
        field: "email".into(),
        message: why.to_string(),
    };
    if email.is_empty() {
        return Err(bad("is required"));
    }
    if email.len() > 254 {
        return Err(bad("must be at most 254 characters"));
    }
    let Some((local, domain)) = email.rsplit_once('@') else {
        return Err(bad("must look like name@example.com"));
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic()));
    if !local_ok || !domain_ok {
        return Err(bad("must look like name@example.com"));
    }
    Ok(email)
}

impl Auth {
    /// Registers an account with the `user` role and queues its verification mail.
    pub async fn register(&self, email: &str, password: &str) -> Result<User, Failure> {
        let email = normalise_email(email)?;
        if let Some(why) = password::weakness(password, &email, self.config.min_password_score) {
            return Err(Failure::Invalid {
                field: "password".into(),
                message: why,
            });
        }
        self.create_user(&email, password, &["user"]).await
    }

    /// Creates an account with `roles` (the CLI bootstraps operators this way).
    pub async fn create_user(
        &self,
        email: &str,
        password: &str,
        roles: &[&str],
    ) -> Result<User, Failure> {
        let email = normalise_email(email)?;
        let known = self.role_names().await?;
        for role in roles {
            if !known.iter().any(|k| k == role) {
                return Err(Failure::Invalid {
                    field: "role".into(),
                    message: format!("unknown role {role:?} (known: {})", known.join(", ")),
                });
            }
        }
        let hash = self.hasher.hash(password).await?;
        let id = new_id();
        let now = now();
        let verify = new_secret();
        let mut statements = vec![Statement::new(
            "INSERT INTO auth_schema.users (id, email, password_hash, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)",
            vec![
                Value::Text(id.clone()),
                Value::Text(email.clone()),
                Value::Text(hash),
                Value::Int(now),
            ],
        )];
        for role in roles {
            statements.push(Statement::new(
                "INSERT INTO auth_schema.user_roles (user_id, role) VALUES ($1, $2)",
                vec![Value::Text(id.clone()), Value::Text(role.to_string())],
            ));
        }
        statements.push(self.one_time_token(&id, "verify_email", &verify, now));
        statements.push(self.mail.queue(
            "verify_email",
            &email,
            &format!(
                "Confirm your email address: {}/verify-email?token={verify}",
                self.config.public_url
            ),
            now,
        ));
        match self.store.batch(statements).await {
            Ok(_) => {}
            Err(StoreError::Conflict(_)) => {
                return Err(Failure::Conflict(format!(
                    "an account with email {email} already exists"
                )))
            }
            Err(e) => return Err(e.into()),
        }
        self.mail.wake();
        self.user(&id).await
    }

    fn one_time_token(&self, user: &str, purpose: &str, secret: &str, now: i64) -> Statement {
        let ttl = match purpose {
            "verify_email" => self.config.verify_email_ttl,
            _ => self.config.reset_ttl,
        };
        Statement::new(
            "INSERT INTO auth_schema.one_time_tokens (token_hash, user_id, purpose, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
            vec![
                Value::Text(secret_hash(secret)),
                Value::Text(user.to_string()),
                Value::Text(purpose.to_string()),
                Value::Int(now),
                Value::Int(now + ttl.as_secs() as i64),
            ],
        )
    }

    async fn role_names(&self) -> Result<Vec<String>, Failure> {
        self.strings("SELECT name FROM auth_schema.roles ORDER BY name", vec![])
            .await
    }

    /// Marks an email verified with a token from the verification mail.
    pub async fn verify_email(&self, token: &str) -> Result<User, Failure> {
        let user = self.spend_one_time(token, "verify_email").await?;
        self.store
            .execute(
                "UPDATE auth_schema.users SET email_verified = TRUE, updated_at = $2 WHERE id = $1",
                vec![Value::Text(user.clone()), Value::Int(now())],
            )
            .await?;
        self.user(&user).await
    }

    /// Queues a password reset mail when the account exists (the answer never says whether).
    pub async fn request_reset(&self, email: &str) -> Result<(), Failure> {
        let Ok(email) = normalise_email(email) else {
            return Ok(());
        };
        let row = self
            .store
            .query_opt(
                "SELECT id FROM auth_schema.users WHERE email = $1",
                vec![Value::Text(email.clone())],
            )
            .await?;
        let Some(row) = row else {
            return Ok(());
        };
        let secret = new_secret();
        let now = now();
        self.store
            .batch(vec![
                self.one_time_token(row.text(0)?, "reset_password", &secret, now),
                self.mail.queue(
                    "reset_password",
                    &email,
                    &format!(
                        "Reset your password: {}/reset-password?token={secret}",
                        self.config.public_url
                    ),
                    now,
                ),
            ])
            .await?;
        self.mail.wake();
        Ok(())
    }

    /// Sets a new password with a reset token; every session of the account is revoked and
    /// the lockout cleared.
    pub async fn reset_password(&self, token: &str, password: &str) -> Result<(), Failure> {
        let user = self.peek_one_time(token, "reset_password").await?;
        let email = self.user(&user).await?.email;
        if let Some(why) = password::weakness(password, &email, self.config.min_password_score) {
            return Err(Failure::Invalid {
                field: "password".into(),
                message: why,
            });
        }
        let hash = self.hasher.hash(password).await?;
        let user = self.spend_one_time(token, "reset_password").await?;
        self.store
            .execute(
                "UPDATE auth_schema.users SET password_hash = $2, failed_logins = 0, first_failed_at = NULL, locked_until = NULL, updated_at = $3 WHERE id = $1",
                vec![Value::Text(user.clone()), Value::Text(hash), Value::Int(now())],
            )
            .await?;
        let sessions = self.open_sessions(&user).await?;
        self.revoke_sessions(&sessions, "password reset").await
    }

    async fn peek_one_time(&self, token: &str, purpose: &str) -> Result<String, Failure> {
        let row = self
            .store
            .query_opt(
                "SELECT user_id, expires_at, used_at FROM auth_schema.one_time_tokens WHERE token_hash = $1 AND purpose = $2",
                vec![Value::Text(secret_hash(token)), Value::Text(purpose.into())],
            )
            .await?;
        let invalid = |why: &str| Failure::Invalid {
            field: "token".into(),
            message: why.to_string(),
        };
        let row = row.ok_or_else(|| invalid("unknown token"))?;
        if row.opt_int(2)?.is_some() {
            return Err(invalid("the token was already used"));
        }
        if row.int(1)? <= now() {
            return Err(invalid("the token has expired"));
        }
        Ok(row.text(0)?.to_string())
    }

    async fn spend_one_time(&self, token: &str, purpose: &str) -> Result<String, Failure> {
        let user = self.peek_one_time(token, purpose).await?;
        let spent = self
            .store
            .execute(
                "UPDATE auth_schema.one_time_tokens SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL",
                vec![Value::Text(secret_hash(token)), Value::Int(now())],
            )
            .await?;
        if spent != 1 {
            return Err(Failure::Invalid {
                field: "token".into(),
                message: "the token was already used".into(),
            });
        }
        Ok(user)
    }

    /// Replaces a user's roles (needs `admin:users`); their sessions are revoked so the new
    /// roles apply at the next login.
    pub async fn set_roles(
        &self,
        actor: &Caller,
        user: &str,
        roles: &[String],
    ) -> Result<User, Failure> {
        if !actor.has_perm("admin:users") {
            return Err(Failure::Forbidden(
                "changing roles needs the admin:users permission".into(),
            ));
        }
        self.user(user).await?;
        let known = self.role_names().await?;
        if let Some(bad) = roles.iter().find(|r| !known.contains(r)) {
            return Err(Failure::Invalid {
                field: "roles".into(),
                message: format!("unknown role {bad:?} (known: {})", known.join(", ")),
            });
        }
        let mut statements = vec![Statement::new(
            "DELETE FROM auth_schema.user_roles WHERE user_id = $1",
            vec![Value::Text(user.to_string())],
        )];
        for role in roles {
            statements.push(Statement::new(
                "INSERT INTO auth_schema.user_roles (user_id, role) VALUES ($1, $2)",
                vec![Value::Text(user.to_string()), Value::Text(role.clone())],
            ));
        }
        self.store.batch(statements).await?;
        let sessions = self.open_sessions(user).await?;
        self.revoke_sessions(&sessions, "roles changed").await?;
        let changed = self.user(user).await?;
        let event = crate::events::AuthEvent::roles(user, &changed.roles, &changed.permissions);
        crate::events::publish(crate::events::PERMISSION_CHANGED, &event).await;
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(
            normalise_email(" Ada@Example.COM ").unwrap(),
            "ada@example.com"
        );
        assert!(normalise_email("a.b+tag@sub.example.org").is_ok());
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@example",
            "a@@example.com",
            "a..b@example.com",
            ".a@example.com",
            "a@-example.com",
            "a b@example.com",
            "a@example.c0m",
        ] {
            let e = normalise_email(bad).unwrap_err();
            assert!(
                matches!(e, Failure::Invalid { ref field, .. } if field == "email"),
                "{bad}"
            );
        }
        assert!(normalise_email(&format!("{}@example.com", "a".repeat(65))).is_err());
    }
}
