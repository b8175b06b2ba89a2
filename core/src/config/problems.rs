//! What validation found: every problem, each naming its full key and the bad value.

use super::{format_duration, ConfigError};
use std::net::SocketAddr;
use std::time::Duration;

/// The problems a configuration's sections report while they validate.
#[derive(Debug, Default)]
pub struct Problems {
    found: Vec<ConfigError>,
}

impl Problems {
    /// No problem yet.
    pub fn new() -> Problems {
        Problems::default()
    }

    /// Key `key` (the full dotted key, e.g. `auth.hash_queue`) has the bad value `value`.
    pub fn bad(&mut self, key: &str, value: String, reason: &str) {
        self.found.push(ConfigError::Invalid {
            key: key.to_string(),
            value,
            reason: reason.to_string(),
        });
    }

    /// A wait or interval that must not be zero.
    pub fn positive(&mut self, key: &str, d: Duration) {
        if d.is_zero() {
            self.bad(key, format_duration(d), "must be greater than zero");
        }
    }

    /// A count or size of at least `min`.
    pub fn at_least(&mut self, key: &str, value: usize, min: usize) {
        if value < min {
            self.bad(key, value.to_string(), &format!("must be at least {min}"));
        }
    }

    /// Key `key` holds a URL that is wrong for `reason`; the URL is quoted with its password
    /// replaced ([`redacted_url`]), since configuration errors reach logs and terminals.
    pub fn bad_url(&mut self, key: &str, url: &str, reason: &str) {
        self.bad(key, redacted_url(url), reason);
    }

    /// A listen or service address, `IP:port`.
    pub fn address(&mut self, key: &str, addr: &str) {
        if addr.parse::<SocketAddr>().is_err() {
            self.bad(key, addr.to_string(), "not an IP:port address");
        }
    }

    /// `Ok` when nothing was found, else every problem in the order found.
    pub fn into_result(self) -> Result<(), Vec<ConfigError>> {
        if self.found.is_empty() {
            Ok(())
        } else {
            Err(self.found)
        }
    }
}

/// `url` with the credentials of its authority (`user:password@`) replaced by `***`, for
/// messages: `redis://:s3cret@cache:6379` → `redis://***@cache:6379`.
pub fn redacted_url(url: &str) -> String {
    let Some(scheme) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme + 3..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    match authority.rfind('@') {
        Some(at) => format!("{}***{}", &url[..scheme + 3], &rest[at..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redacted_url;

    #[test]
    fn urls_lose_their_credentials_only() {
        for (url, shown) in [
            ("redis://:s3cret@cache:6379/0", "redis://***@cache:6379/0"),
            ("postgres://sdsim:pw@db/sdsim", "postgres://***@db/sdsim"),
            ("postgres://u:p@ss@db/x", "postgres://***@db/x"),
            ("redis://cache:6379", "redis://cache:6379"),
            ("sqlite://data/sdsim.db", "sqlite://data/sdsim.db"),
            ("sqlite://data/a@b.db", "sqlite://data/a@b.db"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redacted_url(url), shown, "{url}");
        }
    }
}
