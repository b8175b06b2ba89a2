//! The directory: every instance of every service this process may call, as one snapshot per
//! service.
//!
//! It is written rarely (a registry change, a heartbeat that changed something, a static list
//! at start) and read on every outbound call by every shard, so a read is one atomic load of
//! the generation; a shard takes a new snapshot (an `Arc` clone under a read lock) only when
//! the generation moved since its last one.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// A service of seed 004, in the order of its priority for connections (auth first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Service {
    /// `auth-service`: accounts, sessions, tokens.
    Auth,
    /// `project-service`: projects, versions, sharing.
    Project,
    /// `simulation-service`: runs.
    Simulation,
    /// `api-gateway`: the public HTTP and WebSocket API.
    Gateway,
}

impl Service {
    /// Every service, highest priority first.
    pub const ALL: [Service; 4] = [
        Service::Auth,
        Service::Project,
        Service::Simulation,
        Service::Gateway,
    ];

    /// Its name in the registry (`services:{name}:{instance}`).
    pub fn registry_name(self) -> &'static str {
        match self {
            Service::Auth => "auth-service",
            Service::Project => "project-service",
            Service::Simulation => "simulation-service",
            Service::Gateway => "api-gateway",
        }
    }

    /// The `server.roles` entry that runs it.
    pub fn role(self) -> &'static str {
        match self {
            Service::Auth => "auth",
            Service::Project => "project",
            Service::Simulation => "simulation",
            Service::Gateway => "gateway",
        }
    }

    /// The service registered as `name`.
    pub fn from_registry_name(name: &str) -> Option<Service> {
        Service::ALL.into_iter().find(|s| s.registry_name() == name)
    }

    /// The service run by role `role`.
    pub fn from_role(role: &str) -> Option<Service> {
        Service::ALL.into_iter().find(|s| s.role() == role)
    }

    /// 0 for the service that gets connections first when the process is short of them.
    pub fn priority(self) -> usize {
        self as usize
    }
}

/// Whether an instance takes new calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceStatus {
    /// Takes new calls.
    Healthy,
    /// Shutting down: finishes what it has, takes nothing new.
    Draining,
}

/// One instance of a service, as its registry entry describes it (the JSON value of
/// `services:{service}:{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instance {
    /// Its `instance.id`; the last part of its registry key.
    pub id: String,
    /// Where its gRPC listener is reached (the gateway has none).
    pub grpc: Option<SocketAddr>,
    /// Where its HTTP listener is reached.
    pub http: Option<SocketAddr>,
    /// Whether it takes new calls.
    pub status: InstanceStatus,
    /// Its shards (0 when not known, e.g. a static address).
    pub shards: u32,
    /// Calls it was serving at its last heartbeat.
    pub in_flight: u64,
    /// Connections open to it at its last heartbeat.
    pub connections: u64,
    /// The sdsim version it runs.
    pub version: String,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_at_ms: u64,
}

/// Why a registry entry was ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// The key is not `services:{service}:{instance}` with a known service.
    #[error("registry key {0:?} is not services:{{service}}:{{instance}} with a known service")]
    Key(String),
    /// The value is not an instance's JSON (bad JSON, a missing or unknown field, a wrong type).
    #[error("registry entry {key}: {reason}")]
    Value {
        /// The entry's key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The value's `id` is not the key's instance.
    #[error("registry entry {key}: id {id:?} is not the key's instance")]
    IdMismatch {
        /// The entry's key.
        key: String,
        /// The id in the value.
        id: String,
    },
    /// The instance gives no address to reach it by.
    #[error("registry entry {key}: neither grpc nor http is set")]
    NoAddress {
        /// The entry's key.
        key: String,
    },
    /// An advertised address cannot be reached from another host (unspecified IP or port 0).
    #[error("registry entry {key}: {addr} is not an address a peer can connect to")]
    Unroutable {
        /// The entry's key.
        key: String,
        /// The address advertised.
        addr: SocketAddr,
    },
}

/// The registry key of instance `id` of `service`.
pub fn registry_key(service: Service, id: &str) -> String {
    format!("services:{}:{id}", service.registry_name())
}

impl Instance {
    /// An instance known only by its gRPC address (a static list in the configuration): it
    /// is named after the address and taken as healthy.
    pub fn fixed(grpc: SocketAddr) -> Instance {
        Instance {
            id: grpc.to_string(),
            grpc: Some(grpc),
            http: None,
            status: InstanceStatus::Healthy,
            shards: 0,
            in_flight: 0,
            connections: 0,
            version: String::new(),
            started_at_ms: 0,
        }
    }

    /// The registry entry `key` = `value`, checked: the service it is filed under and the
    /// instance.
    pub fn parse_entry(key: &str, value: &[u8]) -> Result<(Service, Instance), EntryError> {
        let bad_key = || EntryError::Key(key.to_string());
        let rest = key.strip_prefix("services:").ok_or_else(bad_key)?;
        let (name, id) = rest.split_once(':').ok_or_else(bad_key)?;
        let service = Service::from_registry_name(name).ok_or_else(bad_key)?;
        if id.is_empty() {
            return Err(bad_key());
        }
        let instance: Instance = serde_json::from_slice(value).map_err(|e| EntryError::Value {
            key: key.to_string(),
            reason: e.to_string(),
        })?;
        if instance.id != id {
            return Err(EntryError::IdMismatch {
                key: key.to_string(),
                id: instance.id,
            });
        }
        if instance.grpc.is_none() && instance.http.is_none() {
            return Err(EntryError::NoAddress {
                key: key.to_string(),
            });
        }
        for addr in [instance.grpc, instance.http].into_iter().flatten() {
            if addr.ip().is_unspecified() || addr.port() == 0 {
                return Err(EntryError::Unroutable {
                    key: key.to_string(),
                    addr,
                });
            }
        }
        Ok((service, instance))
    }

    /// The JSON value of its registry entry.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an instance always serializes")
    }

    /// Whether it takes new calls.
    pub fn is_healthy(&self) -> bool {
        self.status == InstanceStatus::Healthy
    }
}

/// Where a service's instances came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Nothing is known yet.
    Unknown,
    /// The configuration's static addresses.
    Static,
    /// The Redis registry.
    Registry,
}

struct Entry {
    instances: Arc<[Instance]>,
    source: Source,
    /// Milliseconds since the Unix epoch of the last refresh (0: never).
    refreshed_ms: u64,
}

/// The instances of every service, shared by the process's shards.
pub struct Directory {
    entries: [RwLock<Entry>; 4],
    generation: AtomicU64,
    malformed: AtomicU64,
    connections: crate::cap::OpenConnections,
}

impl Default for Directory {
    fn default() -> Self {
        Directory::new()
    }
}

impl Directory {
    /// A directory that knows no instance.
    pub fn new() -> Directory {
        let empty = || {
            RwLock::new(Entry {
                instances: Arc::from(Vec::new()),
                source: Source::Unknown,
                refreshed_ms: 0,
            })
        };
        Directory {
            entries: [empty(), empty(), empty(), empty()],
            generation: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            connections: crate::cap::OpenConnections::default(),
        }
    }

    fn entry(&self, service: Service) -> &RwLock<Entry> {
        &self.entries[service as usize]
    }

    /// Replaces the instances of `service` (sorted by id, so that equal lists compare equal).
    /// The generation moves only when the list changed; the refresh time always does.
    pub fn set(&self, service: Service, mut instances: Vec<Instance>, source: Source) {
        instances.sort_by(|a, b| a.id.cmp(&b.id));
        let mut entry = self
            .entry(service)
            .write()
            .unwrap_or_else(|e| e.into_inner());
        entry.refreshed_ms = now_ms();
        if entry.source == source && *entry.instances == *instances {
            return;
        }
        entry.instances = Arc::from(instances);
        entry.source = source;
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The instances of `service` now.
    pub fn instances(&self, service: Service) -> Arc<[Instance]> {
        let entry = self
            .entry(service)
            .read()
            .unwrap_or_else(|e| e.into_inner());
        Arc::clone(&entry.instances)
    }

    /// Where the instances of `service` came from.
    pub fn source(&self, service: Service) -> Source {
        self.entry(service)
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .source
    }

    /// How long ago the instances of `service` were last refreshed (`None`: never).
    pub fn age(&self, service: Service) -> Option<std::time::Duration> {
        let at = self
            .entry(service)
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .refreshed_ms;
        (at != 0).then(|| std::time::Duration::from_millis(now_ms().saturating_sub(at)))
    }

    /// A number that changes whenever any service's instances change: a reader whose last
    /// snapshot was taken at the same generation need not take another.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Counts a registry entry that was ignored.
    pub fn count_malformed(&self) {
        self.malformed.fetch_add(1, Ordering::Relaxed);
    }

    /// The process's open mesh connections (the count `mesh.max_connections` caps); it lives
    /// here because the directory is the one mesh object every shard of a process shares.
    pub fn connections(&self) -> &crate::cap::OpenConnections {
        &self.connections
    }

    /// Registry entries ignored so far.
    pub fn malformed(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str, port: u16) -> Instance {
        Instance {
            id: id.into(),
            grpc: Some(SocketAddr::from(([127, 0, 0, 1], port))),
            http: Some(SocketAddr::from(([127, 0, 0, 1], port + 1))),
            status: InstanceStatus::Healthy,
            shards: 2,
            in_flight: 3,
            connections: 4,
            version: "0.1.0".into(),
            started_at_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn an_entry_round_trips_through_its_json() {
        let i = instance("host-1", 9000);
        let key = registry_key(Service::Auth, "host-1");
        assert_eq!(key, "services:auth-service:host-1");
        let (service, parsed) = Instance::parse_entry(&key, i.to_json().as_bytes()).unwrap();
        assert_eq!((service, parsed), (Service::Auth, i));
    }

    /// Each malformed entry is refused with what is wrong with it.
    #[test]
    fn malformed_entries_are_refused_with_their_reason() {
        let good = instance("a", 9000).to_json();
        let with = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
            f(&mut v);
            v.to_string()
        };
        let cases: Vec<(&str, String, &str)> = vec![
            ("services:auth-service", good.clone(), "is not services:"),
            ("services:cache-service:a", good.clone(), "known service"),
            ("services:auth-service:", good.clone(), "is not services:"),
            ("queues:auth-service:a", good.clone(), "is not services:"),
            (
                "services:auth-service:a",
                "{not json".into(),
                "key must be a string",
            ),
            (
                "services:auth-service:a",
                "[]".into(),
                "expected struct Instance",
            ),
            (
                "services:auth-service:a",
                with(&|v| {
                    v["weight"] = 3.into();
                }),
                "unknown field `weight`",
            ),
            (
                "services:auth-service:a",
                with(&|v| {
                    v.as_object_mut().unwrap().remove("status");
                }),
                "missing field `status`",
            ),
            (
                "services:auth-service:a",
                with(&|v| v["status"] = "sleeping".into()),
                "unknown variant `sleeping`",
            ),
            (
                "services:auth-service:a",
                with(&|v| v["grpc"] = "localhost".into()),
                "invalid socket address",
            ),
            (
                "services:auth-service:b",
                good.clone(),
                "is not the key's instance",
            ),
            (
                "services:auth-service:a",
                with(&|v| {
                    v["grpc"] = serde_json::Value::Null;
                    v["http"] = serde_json::Value::Null;
                }),
                "neither grpc nor http",
            ),
            (
                "services:auth-service:a",
                with(&|v| v["grpc"] = "0.0.0.0:9000".into()),
                "not an address a peer can connect to",
            ),
            (
                "services:auth-service:a",
                with(&|v| v["http"] = "127.0.0.1:0".into()),
                "not an address a peer can connect to",
            ),
        ];
        for (key, value, reason) in cases {
            let err = Instance::parse_entry(key, value.as_bytes())
                .expect_err(&format!("{key} = {value} is refused"))
                .to_string();
            assert!(
                err.contains(reason),
                "{key} = {value}: {err:?} lacks {reason:?}"
            );
        }
    }

    #[test]
    fn the_generation_moves_only_when_a_list_changes() {
        let dir = Directory::new();
        assert_eq!(dir.age(Service::Project), None);
        let g0 = dir.generation();
        dir.set(
            Service::Project,
            vec![instance("b", 10), instance("a", 20)],
            Source::Registry,
        );
        let g1 = dir.generation();
        assert!(g1 > g0);
        let ids: Vec<_> = dir
            .instances(Service::Project)
            .iter()
            .map(|i| i.id.clone())
            .collect();
        assert_eq!(ids, ["a", "b"], "sorted by id");
        // The same instances in another order: nothing changed.
        dir.set(
            Service::Project,
            vec![instance("a", 20), instance("b", 10)],
            Source::Registry,
        );
        assert_eq!(dir.generation(), g1);
        assert!(dir.age(Service::Project).is_some());
        let mut draining = instance("a", 20);
        draining.status = InstanceStatus::Draining;
        dir.set(
            Service::Project,
            vec![draining, instance("b", 10)],
            Source::Registry,
        );
        assert!(dir.generation() > g1);
        assert!(!dir.instances(Service::Project)[0].is_healthy());
        assert!(dir.instances(Service::Auth).is_empty());
    }

    #[test]
    fn services_are_named_as_the_seed_names_them_and_ordered_by_priority() {
        let names: Vec<_> = Service::ALL.iter().map(|s| s.registry_name()).collect();
        assert_eq!(
            names,
            [
                "auth-service",
                "project-service",
                "simulation-service",
                "api-gateway"
            ]
        );
        for s in Service::ALL {
            assert_eq!(Service::from_registry_name(s.registry_name()), Some(s));
            assert_eq!(Service::from_role(s.role()), Some(s));
        }
        assert!(Service::Auth.priority() < Service::Gateway.priority());
    }
}
