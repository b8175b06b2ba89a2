//! The auth service's events on the bus (seed 004's `auth:events:*`): a login, a logout, a
//! change of a user's roles. Admins may subscribe to them (the gateway's channel policy); a
//! payload names the user and session, never a token.

use serde::Serialize;

/// Channel: a user logged in (a session opened).
pub const LOGIN: &str = "auth:events:login";
/// Channel: a user logged out (a session ended).
pub const LOGOUT: &str = "auth:events:logout";
/// Channel: a user's roles, and so permissions, changed.
pub const PERMISSION_CHANGED: &str = "auth:events:permission_changed";

/// The payload of every auth event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthEvent<'a> {
    /// The user.
    pub user_id: &'a str,
    /// The session opened or ended; absent for a change of roles (every session of the user
    /// is revoked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<&'a str>,
    /// The user's roles now (permission changes only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles: Option<&'a [String]>,
    /// The permissions those roles grant (permission changes only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<&'a [String]>,
    /// When (Unix milliseconds).
    pub at_ms: i64,
}

impl<'a> AuthEvent<'a> {
    /// A session event of `user`.
    pub fn session(user_id: &'a str, session_id: &'a str) -> AuthEvent<'a> {
        AuthEvent {
            user_id,
            session_id: Some(session_id),
            roles: None,
            permissions: None,
            at_ms: now_ms(),
        }
    }

    /// A change of `user`'s roles: the roles now and the permissions they grant.
    pub fn roles(
        user_id: &'a str,
        roles: &'a [String],
        permissions: &'a [String],
    ) -> AuthEvent<'a> {
        AuthEvent {
            user_id,
            session_id: None,
            roles: Some(roles),
            permissions: Some(permissions),
            at_ms: now_ms(),
        }
    }
}

/// Unix milliseconds now.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Publishes `event` on `channel` through this shard's bus (and, with Redis, to every
/// instance). Dropped with a debug line when there is no bus or it refuses: events are
/// notifications, storage is the record.
pub async fn publish(channel: &str, event: &AuthEvent<'_>) {
    let Some(bus) = sdsim_core::bus::Bus::local() else {
        return;
    };
    match sonic_rs::to_vec(event) {
        Ok(data) => {
            if let Err(e) = bus.publish(channel, data.into()).await {
                tracing::debug!(%channel, error = %e, "auth event not published");
            }
        }
        Err(e) => tracing::warn!(%channel, error = %e, "auth event not serialisable"),
    }
}
