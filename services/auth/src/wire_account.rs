//! How the account API's requests and responses travel in `sdsim.auth.v1` messages (both
//! directions). Requests pass through unchecked: the service validates them, so a remote
//! caller gets exactly the error a local one would.

use crate::contract::{NewAccount, PasswordReset, RoleChange, SignIn, VerificationKeys};
use crate::service::{Tokens, User};
use crate::{pb, Failure};
use sdsim_contract::{RequestWire, ResponseWire};

sdsim_contract::acts_for!(pb::LogoutRequest, pb::GetMeRequest, pb::SetUserRolesRequest);

fn account_pb(u: User) -> pb::Account {
    pb::Account {
        permissions: u.permissions,
        user: Some(pb::User {
            is_admin: u.roles.iter().any(|r| r == "admin"),
            id: u.id,
            email: u.email,
            email_verified: u.email_verified,
            roles: u.roles,
            created_at: u.created_at,
            locked: u.locked,
        }),
    }
}

fn user_of(a: Option<pb::Account>) -> Result<User, Failure> {
    let missing = || Failure::Unavailable("the auth service answered without the account".into());
    let a = a.ok_or_else(missing)?;
    let u = a.user.ok_or_else(missing)?;
    Ok(User {
        id: u.id,
        email: u.email,
        email_verified: u.email_verified,
        roles: u.roles,
        permissions: a.permissions,
        created_at: u.created_at,
        locked: u.locked,
    })
}

fn tokens_pb(t: Tokens) -> pb::Tokens {
    pb::Tokens {
        access_token: t.access_token,
        refresh_token: t.refresh_token,
        expires_in: t.expires_in,
        session_id: t.session_id,
        account: Some(account_pb(t.user)),
    }
}

fn tokens_of(t: Option<pb::Tokens>) -> Result<Tokens, Failure> {
    let t = t.ok_or_else(|| {
        Failure::Unavailable("the auth service answered without the tokens".into())
    })?;
    Ok(Tokens {
        access_token: t.access_token,
        refresh_token: t.refresh_token,
        expires_in: t.expires_in,
        token_type: "Bearer",
        session_id: t.session_id,
        user: user_of(t.account)?,
    })
}

/// A request message and the request it carries, field for field.
macro_rules! request {
    ($Type:ty, $Msg:ty, |$v:ident, $user:ident| $to:expr, |$m:ident| $from:expr) => {
        impl RequestWire<$Msg> for $Type {
            type Error = Failure;
            fn into_message(self, $user: &str) -> $Msg {
                let $v = self;
                $to
            }
            fn from_message($m: $Msg) -> Result<$Type, Failure> {
                Ok($from)
            }
        }
    };
}

/// A response message carrying an account.
macro_rules! account_response {
    ($($Msg:ty),*) => {$(
        impl ResponseWire<$Msg> for User {
            type Error = Failure;
            fn into_message(self) -> $Msg {
                <$Msg>::from(account_pb(self))
            }
            fn from_message(m: $Msg) -> Result<User, Failure> {
                user_of(m.account)
            }
        }
        impl From<pb::Account> for $Msg {
            fn from(a: pb::Account) -> $Msg {
                Self { account: Some(a) }
            }
        }
    )*};
}

/// An empty response message.
macro_rules! empty_response {
    ($($Msg:ty),*) => {$(
        impl ResponseWire<$Msg> for () {
            type Error = Failure;
            fn into_message(self) -> $Msg {
                <$Msg>::default()
            }
            fn from_message(_: $Msg) -> Result<(), Failure> {
                Ok(())
            }
        }
    )*};
}

account_response!(
    pb::RegisterResponse,
    pb::GetMeResponse,
    pb::VerifyEmailResponse,
    pb::SetUserRolesResponse
);
empty_response!(
    pb::LogoutResponse,
    pb::RequestPasswordResetResponse,
    pb::ConfirmPasswordResetResponse
);

request!(
    NewAccount,
    pb::RegisterRequest,
    |a, _user| pb::RegisterRequest {
        email: a.email,
        password: a.password
    },
    |m| NewAccount {
        email: m.email,
        password: m.password
    }
);
request!(
    SignIn,
    pb::LoginRequest,
    |s, _user| pb::LoginRequest {
        email: s.email,
        password: s.password,
        client_ip: s.client_ip
    },
    |m| SignIn {
        email: m.email,
        password: m.password,
        client_ip: m.client_ip
    }
);
request!(
    String,
    pb::RefreshRequest,
    |token, _user| pb::RefreshRequest {
        refresh_token: token
    },
    |m| m.refresh_token
);
request!(
    String,
    pb::LogoutRequest,
    |session, user| pb::LogoutRequest {
        user_id: user.to_string(),
        session_id: session
    },
    |m| m.session_id
);
request!(
    (),
    pb::GetMeRequest,
    |_v, user| pb::GetMeRequest {
        user_id: user.to_string()
    },
    |_m| ()
);
request!(
    String,
    pb::VerifyEmailRequest,
    |token, _user| pb::VerifyEmailRequest { token },
    |m| m.token
);
request!(
    String,
    pb::RequestPasswordResetRequest,
    |email, _user| pb::RequestPasswordResetRequest { email },
    |m| m.email
);
request!(
    PasswordReset,
    pb::ConfirmPasswordResetRequest,
    |r, _user| pb::ConfirmPasswordResetRequest {
        token: r.token,
        password: r.password
    },
    |m| PasswordReset {
        token: m.token,
        password: m.password
    }
);
request!(
    RoleChange,
    pb::SetUserRolesRequest,
    |c, user| pb::SetUserRolesRequest {
        user_id: user.to_string(),
        target_user_id: c.user_id,
        roles: c.roles
    },
    |m| RoleChange {
        user_id: m.target_user_id,
        roles: m.roles
    }
);
request!(
    (),
    pb::GetSigningKeysRequest,
    |_v, _user| pb::GetSigningKeysRequest {},
    |_m| ()
);

impl ResponseWire<pb::LoginResponse> for Tokens {
    type Error = Failure;
    fn into_message(self) -> pb::LoginResponse {
        pb::LoginResponse {
            tokens: Some(tokens_pb(self)),
        }
    }
    fn from_message(m: pb::LoginResponse) -> Result<Tokens, Failure> {
        tokens_of(m.tokens)
    }
}

impl ResponseWire<pb::RefreshResponse> for Tokens {
    type Error = Failure;
    fn into_message(self) -> pb::RefreshResponse {
        pb::RefreshResponse {
            tokens: Some(tokens_pb(self)),
        }
    }
    fn from_message(m: pb::RefreshResponse) -> Result<Tokens, Failure> {
        tokens_of(m.tokens)
    }
}

impl ResponseWire<pb::GetSigningKeysResponse> for VerificationKeys {
    type Error = Failure;
    fn into_message(self) -> pb::GetSigningKeysResponse {
        pb::GetSigningKeysResponse {
            keys: self
                .keys
                .into_iter()
                .map(|(kid, public_key)| pb::VerificationKey {
                    kid,
                    alg: "EdDSA".into(),
                    public_key,
                })
                .collect(),
            refresh_by: self.refresh_by,
        }
    }
    fn from_message(m: pb::GetSigningKeysResponse) -> Result<VerificationKeys, Failure> {
        let mut keys = Vec::with_capacity(m.keys.len());
        for k in m.keys {
            // A key of another algorithm could not verify our tokens: refuse the answer rather
            // than install a ring that rejects every token.
            if k.alg != "EdDSA" || k.public_key.len() != 32 || k.kid.is_empty() {
                return Err(Failure::Unavailable(format!(
                    "the auth service sent an unusable verification key (kid {:?}, alg {:?}, {} bytes)",
                    k.kid,
                    k.alg,
                    k.public_key.len()
                )));
            }
            keys.push((k.kid, k.public_key));
        }
        Ok(VerificationKeys {
            keys,
            refresh_by: m.refresh_by,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kid: &str, alg: &str, bytes: usize) -> pb::VerificationKey {
        pb::VerificationKey {
            kid: kid.into(),
            alg: alg.into(),
            public_key: vec![1; bytes],
        }
    }

    #[test]
    fn signing_keys_cross_the_wire_and_unusable_ones_are_refused() {
        let keys = VerificationKeys {
            keys: vec![("k1".into(), vec![1; 32]), ("k2".into(), vec![2; 32])],
            refresh_by: 1_700_000_060,
        };
        let message: pb::GetSigningKeysResponse = keys.clone().into_message();
        assert_eq!(VerificationKeys::from_message(message).unwrap(), keys);
        // A ring with such a key would refuse every token: the answer is refused instead.
        for bad in [
            key("k", "RS256", 32),
            key("k", "EdDSA", 31),
            key("", "EdDSA", 32),
        ] {
            let message = pb::GetSigningKeysResponse {
                keys: vec![key("k1", "EdDSA", 32), bad],
                refresh_by: 0,
            };
            let refused = VerificationKeys::from_message(message).unwrap_err();
            assert!(matches!(refused, Failure::Unavailable(_)), "{refused}");
        }
    }

    #[test]
    fn account_requests_pass_through_unchecked_so_the_service_names_the_field() {
        // An empty email reaches the service, whose error a local caller would get too.
        let m = pb::RegisterRequest {
            email: String::new(),
            password: String::new(),
        };
        let a = NewAccount::from_message(m).unwrap();
        assert_eq!((a.email.as_str(), a.password.as_str()), ("", ""));
        // The acting user travels in user_id; the target of a role change separately.
        let m: pb::SetUserRolesRequest = RoleChange {
            user_id: "target".into(),
            roles: vec!["admin".into()],
        }
        .into_message("actor");
        assert_eq!(
            (m.user_id.as_str(), m.target_user_id.as_str()),
            ("actor", "target")
        );
        let back = RoleChange::from_message(m).unwrap();
        assert_eq!(
            (back.user_id.as_str(), back.roles),
            ("target", vec!["admin".to_string()])
        );
    }
}
