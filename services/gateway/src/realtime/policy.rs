//! Who may subscribe to which channel.
//!
//! Channels are `namespace:...` names of seed 004. The default policy:
//! - `notifications:user:{id}`: only user `{id}` (and admins);
//! - `auth:events:*`, `simulation:events:*`, `project:events:*`: admins only (instance-wide
//!   feeds: they name every user's projects and runs; users get theirs on
//!   `notifications:user:{id}`);
//! - `simulation:data:{id}`: users who may see run `{id}` (checked with the simulation service
//!   at subscribe time, after this policy) and admins;
//! - `simulation:sweep:{id}`: likewise, users who may see sweep `{id}`, and admins;
//! - `system:announcements`: any authenticated user;
//! - anything else: refused as an unknown channel.

use sdsim_contract::Caller;

/// Why a subscription was refused: an error code for the client and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// `bad_channel` or `forbidden`.
    pub code: &'static str,
    /// A sentence naming the channel rule.
    pub message: String,
}

/// Decides subscriptions.
pub trait ChannelPolicy: Send + Sync {
    /// Whether `who` may read `channel` (already checked by [`valid_channel`]).
    fn may_subscribe(&self, who: &Caller, channel: &str) -> Result<(), Denied>;
}

/// Longest channel name.
pub const MAX_CHANNEL_LEN: usize = 200;

/// Checks the shape of a channel name: 1–200 of `A-Z a-z 0-9 : _ - . @`.
pub fn valid_channel(channel: &str) -> Result<(), Denied> {
    let ok = !channel.is_empty()
        && channel.len() <= MAX_CHANNEL_LEN
        && channel
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":_-.@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Denied {
            code: "bad_channel",
            message: format!(
                "channel names are 1-{MAX_CHANNEL_LEN} characters of A-Z a-z 0-9 : _ - . @"
            ),
        })
    }
}

/// The default policy described in the module documentation.
pub struct DefaultPolicy;

impl ChannelPolicy for DefaultPolicy {
    fn may_subscribe(&self, who: &Caller, channel: &str) -> Result<(), Denied> {
        let forbidden = |why: &str| Denied {
            code: "forbidden",
            message: why.to_string(),
        };
        if let Some(user) = channel.strip_prefix("notifications:user:") {
            return if who.is_admin() || *user == *who.user_id {
                Ok(())
            } else {
                Err(forbidden("users may only read their own notifications"))
            };
        }
        let feed = ["auth:events:", "simulation:events:", "project:events:"]
            .iter()
            .any(|p| channel.len() > p.len() && channel.starts_with(p));
        if feed {
            return if who.is_admin() {
                Ok(())
            } else {
                Err(forbidden(
                    "instance-wide event feeds are for admins; yours come on notifications:user:{id}",
                ))
            };
        }
        let open = channel == "system:announcements"
            || ["simulation:data:", "simulation:sweep:"]
                .iter()
                .any(|p| channel.len() > p.len() && channel.starts_with(p));
        if open {
            Ok(())
        } else {
            Err(Denied {
                code: "bad_channel",
                message: "unknown channel; namespaces: notifications:user:{id}, simulation:data:{id}, simulation:sweep:{id}, simulation:events:*, project:events:*, auth:events:*, system:announcements".into(),
            })
        }
    }
}
