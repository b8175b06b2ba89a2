//! `[registry]`: how this process registers itself in Redis and how often it says it is alive.

use sdsim_core::config::{duration, format_duration, Problems};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::time::Duration;

/// `[registry]`: the service registry in Redis (used only when `redis.url` is set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// How long a registration lives without a heartbeat: a process that stops answering
    /// (killed, frozen, cut off) is forgotten by its peers after this long.
    #[serde(with = "duration")]
    pub ttl: Duration,
    /// How often a registration is rewritten (refreshing its TTL and its load figures) and the
    /// registry re-read; must be under half of `ttl`, so one lost heartbeat does not expire it.
    #[serde(with = "duration")]
    pub heartbeat: Duration,
    /// The IP address peers reach this process by, put into its registration in place of the
    /// listeners' own. Required when a listener binds an unspecified address (`0.0.0.0`, `::`)
    /// and `redis.url` is set: a peer cannot connect to `0.0.0.0`.
    pub advertise_host: Option<String>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            ttl: Duration::from_secs(10),
            heartbeat: Duration::from_secs(2),
            advertise_host: None,
        }
    }
}

impl RegistryConfig {
    /// Reports the problems of `[registry]` to `problems` (whether `advertise_host` is needed
    /// depends on the listeners and Redis, and is the composed configuration's check).
    pub fn validate(&self, problems: &mut Problems) {
        problems.positive("registry.ttl", self.ttl);
        problems.positive("registry.heartbeat", self.heartbeat);
        if !self.heartbeat.is_zero() && self.heartbeat * 2 >= self.ttl {
            problems.bad(
                "registry.heartbeat",
                format_duration(self.heartbeat),
                &format!(
                    "must be less than half of registry.ttl ({}), or one late heartbeat expires the registration",
                    format_duration(self.ttl)
                ),
            );
        }
        if let Some(host) = &self.advertise_host {
            match host.parse::<IpAddr>() {
                Ok(ip) if ip.is_unspecified() => problems.bad(
                    "registry.advertise_host",
                    host.clone(),
                    "must be an address peers can connect to, not an unspecified one",
                ),
                Ok(_) => {}
                Err(_) => {
                    problems.bad("registry.advertise_host", host.clone(), "not an IP address")
                }
            }
        }
    }

    /// The advertised IP, when set and valid.
    pub fn advertise_ip(&self) -> Option<IpAddr> {
        self.advertise_host.as_deref().and_then(|h| h.parse().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_of(c: &RegistryConfig) -> Vec<String> {
        let mut p = Problems::new();
        c.validate(&mut p);
        match p.into_result() {
            Ok(()) => vec![],
            Err(v) => v.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn the_defaults_are_valid() {
        assert!(problems_of(&RegistryConfig::default()).is_empty());
    }

    #[test]
    fn a_heartbeat_of_half_the_ttl_or_more_is_refused_naming_the_key() {
        let c = RegistryConfig {
            ttl: Duration::from_secs(4),
            heartbeat: Duration::from_secs(2),
            advertise_host: None,
        };
        let p = problems_of(&c);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("registry.heartbeat"), "{p:?}");
        assert!(p[0].contains("less than half of registry.ttl"), "{p:?}");
    }

    #[test]
    fn an_advertise_host_must_be_a_connectable_ip() {
        for (host, reason) in [("0.0.0.0", "unspecified"), ("my-host", "not an IP address")] {
            let c = RegistryConfig {
                advertise_host: Some(host.into()),
                ..RegistryConfig::default()
            };
            let p = problems_of(&c);
            assert!(
                p.len() == 1 && p[0].contains("registry.advertise_host") && p[0].contains(reason),
                "{host}: {p:?}"
            );
        }
        let ok = RegistryConfig {
            advertise_host: Some("10.0.0.7".into()),
            ..RegistryConfig::default()
        };
        assert!(problems_of(&ok).is_empty());
        assert_eq!(ok.advertise_ip(), Some("10.0.0.7".parse().unwrap()));
    }
}
