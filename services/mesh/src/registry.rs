//! The service registry in Redis: this process's registrations, their heartbeats, and the
//! watch that keeps the [`Directory`] filled with every registered instance.
//!
//! Each role a process runs is one key, `services:{service}:{instance}`, whose value is the
//! instance's JSON ([`Instance::to_json`]), written with a TTL (`registry.ttl`) and rewritten
//! every `registry.heartbeat` with the load figures of the moment. A change (a new
//! registration, `draining`, a deletion) is announced on [`CHANNEL`], so peers re-read at once
//! rather than at their next heartbeat; every heartbeat also re-reads (`SCAN services:*`, never
//! `KEYS`), because pub/sub loses what is sent while a subscriber is disconnected.
//!
//! redis 1.x needs tokio, so one small thread runs a tokio current-thread runtime and owns the
//! connections, like the bus bridge. While Redis is down the directory keeps the last instances
//! it knew, [`RegistryStats::up`] says so, and the thread reconnects with exponential backoff
//! (100 ms → 5 s).

use crate::directory::{now_ms, Directory, Instance, InstanceStatus, Service, Source};
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// The pub/sub channel registrations are announced on; a message is the changed key, or the
/// key preceded by [`DELETED`] for a registration deleted by its own instance (a clean stop).
pub const CHANNEL: &str = "services:changes";
/// The mark of a deletion on [`CHANNEL`].
pub const DELETED: char = '-';
/// What `SCAN` looks for.
const PATTERN: &str = "services:*";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one Redis command may take before the connection is taken as lost.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);

/// Calls in flight and connections open in this process now (the server counts them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    /// Calls being served.
    pub in_flight: u64,
    /// Connections open.
    pub connections: u64,
}

/// Reads this process's [`Load`] at each heartbeat.
pub type LoadFn = Arc<dyn Fn() -> Load + Send + Sync>;

/// Called (on the registry thread) for an instance whose registration expired: it was last
/// seen `healthy` and its key is gone, so it stopped without draining. Must not block.
pub type ExpiredFn = Arc<dyn Fn(Service, &Instance) + Send + Sync>;

/// Counters and state, read by health and metrics.
#[derive(Debug, Default)]
pub struct RegistryStats {
    /// Connected to Redis: registrations are fresh and the directory follows the registry.
    pub up: AtomicBool,
    /// Heartbeats written.
    pub heartbeats: AtomicU64,
    /// Heartbeats that could not be written (Redis down or too slow).
    pub heartbeats_failed: AtomicU64,
    /// Times the registry was read into the directory.
    pub refreshes: AtomicU64,
    /// Connection attempts that failed or connections lost.
    pub failures: AtomicU64,
    /// Registrations of other instances seen to expire.
    pub expired: AtomicU64,
    /// Keys of this process found written by another process (the same `instance.id` twice).
    pub conflicts: AtomicU64,
}

/// Why the registry did not start.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// `redis.url` is not a Redis URL the client accepts.
    #[error("redis.url = {url}: {source}")]
    Url {
        /// The setting as given.
        url: String,
        /// The client's reason.
        source: redis::RedisError,
    },
    /// The thread that owns the Redis connections could not be started.
    #[error("cannot start the registry thread: {0}")]
    Thread(std::io::Error),
}

/// What a registry is started with.
pub struct RegistryOptions {
    /// `registry.ttl`.
    pub ttl: Duration,
    /// `registry.heartbeat`.
    pub heartbeat: Duration,
    /// The roles of this process, each with its entry (`status` and load are filled in at
    /// every heartbeat).
    pub entries: Vec<(Service, Instance)>,
    /// This process's load, read at each heartbeat.
    pub load: LoadFn,
    /// Told about expired registrations of other instances.
    pub on_expired: Option<ExpiredFn>,
    /// Completes when the process starts to shut down: `draining` is published then (the
    /// same as [`Registry::drain`]).
    pub draining: Option<DrainSignal>,
}

/// A future that completes when the process starts to drain (any runtime's waker works).
pub type DrainSignal = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

enum Command {
    /// Publish `draining` now.
    Drain,
    /// Delete the registrations and stop; the sender is told when it is done.
    Stop(std::sync::mpsc::Sender<()>),
}

/// The handle of the registry thread.
pub struct Registry {
    commands: mpsc::UnboundedSender<Command>,
    /// Counters and state.
    pub stats: Arc<RegistryStats>,
    directory: Arc<Directory>,
    stopped: Mutex<bool>,
}

impl Registry {
    /// Starts the registry thread on `url`: it registers `options.entries` and keeps
    /// `directory` filled from the registry.
    pub fn start(
        url: &str,
        options: RegistryOptions,
        directory: Arc<Directory>,
    ) -> Result<Registry, RegistryError> {
        let client = redis::Client::open(url).map_err(|source| RegistryError::Url {
            url: url.to_string(),
            source,
        })?;
        let (tx, rx) = mpsc::unbounded_channel();
        let mut options = options;
        if let Some(signal) = options.draining.take() {
            let to_worker = tx.clone();
            // Forwarded from inside the worker's runtime, so the signal needs no thread of its own.
            let forward: DrainSignal = Box::pin(async move {
                signal.await;
                let _ = to_worker.send(Command::Drain);
            });
            options.draining = Some(forward);
        }
        let stats = Arc::new(RegistryStats::default());
        let worker = Worker {
            client,
            options,
            commands: rx,
            stats: Arc::clone(&stats),
            directory: Arc::clone(&directory),
            draining: false,
            known: HashMap::new(),
            deleted: HashSet::new(),
            conflicting: HashSet::new(),
            malformed: HashMap::new(),
        };
        std::thread::Builder::new()
            .name("sdsim-registry".into())
            .spawn(move || worker.run())
            .map_err(RegistryError::Thread)?;
        Ok(Registry {
            commands: tx,
            stats,
            directory,
            stopped: Mutex::new(false),
        })
    }

    /// Publishes `draining` for every registration of this process (the start of shutdown):
    /// peers stop sending new calls here within a heartbeat.
    pub fn drain(&self) {
        let _ = self.commands.send(Command::Drain);
    }

    /// Deletes this process's registrations (the end of shutdown) and stops the thread; waits
    /// at most `timeout` for Redis. Later calls do nothing.
    pub fn stop(&self, timeout: Duration) {
        let mut stopped = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        if *stopped {
            return;
        }
        *stopped = true;
        let (tx, rx) = std::sync::mpsc::channel();
        if self.commands.send(Command::Stop(tx)).is_ok() && rx.recv_timeout(timeout).is_err() {
            tracing::warn!(
                ?timeout,
                "registry: registrations not deleted in time; they expire by their TTL"
            );
        }
    }

    /// The directory it fills.
    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(2));
    }
}

struct Worker {
    client: redis::Client,
    options: RegistryOptions,
    commands: mpsc::UnboundedReceiver<Command>,
    stats: Arc<RegistryStats>,
    directory: Arc<Directory>,
    draining: bool,
    /// Every instance seen at the last successful read, by key.
    known: HashMap<String, (Service, Instance)>,
    /// Keys whose instance announced their deletion since the last read (clean stops).
    deleted: HashSet<String>,
    /// Own keys already reported as written by another process.
    conflicting: HashSet<String>,
    /// Malformed entries already logged and counted, with the value that was refused.
    malformed: HashMap<String, Vec<u8>>,
}

/// Why the connected loop ended.
enum Ended {
    /// Stopped on request (or the handle is gone): do not reconnect.
    Stopped,
    /// The connection failed.
    Lost(String),
}

type Conn = redis::aio::MultiplexedConnection;

async fn within<T>(
    what: &str,
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(COMMAND_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {COMMAND_TIMEOUT:?}")),
    }
}

impl Worker {
    fn run(mut self) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the registry runtime");
                return;
            }
        };
        if let Some(forward) = self.options.draining.take() {
            rt.spawn(forward);
        }
        rt.block_on(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                match self.connected().await {
                    Ended::Stopped => return,
                    Ended::Lost(e) => {
                        let was_up = self.stats.up.swap(false, Ordering::Relaxed);
                        self.stats.failures.fetch_add(1, Ordering::Relaxed);
                        if was_up {
                            backoff = Duration::from_millis(100);
                            tracing::warn!(error = %e, "registry lost Redis; keeping the last known instances and reconnecting");
                        } else {
                            tracing::debug!(error = %e, ?backoff, "registry cannot reach Redis");
                        }
                    }
                }
                let sleep = tokio::time::sleep(backoff);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = &mut sleep => break,
                        cmd = self.commands.recv() => match cmd {
                            Some(Command::Drain) => self.draining = true,
                            // Redis is unreachable: the registrations expire by their TTL.
                            Some(Command::Stop(done)) => { let _ = done.send(()); return; }
                            None => return,
                        },
                    }
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        });
    }

    async fn connected(&mut self) -> Ended {
        let connect = async {
            let pubsub = tokio::time::timeout(CONNECT_TIMEOUT, self.client.get_async_pubsub())
                .await
                .map_err(|_| "subscriber connect: timed out".to_string())?
                .map_err(|e| format!("subscriber connect: {e}"))?;
            let conn = tokio::time::timeout(
                CONNECT_TIMEOUT,
                self.client.get_multiplexed_async_connection(),
            )
            .await
            .map_err(|_| "connect: timed out".to_string())?
            .map_err(|e| format!("connect: {e}"))?;
            Ok::<_, String>((pubsub, conn))
        };
        let (mut pubsub, mut conn) = match connect.await {
            Ok(c) => c,
            Err(e) => return Ended::Lost(e),
        };
        if let Err(e) = within("subscribe", pubsub.subscribe(CHANNEL)).await {
            return Ended::Lost(e);
        }
        // What vanished while we were away may have vanished with Redis itself (a restart
        // loses every key): only a disappearance seen on one connection counts as an expiry.
        self.known.clear();
        self.deleted.clear();
        // Registered and read once before saying we are up.
        if let Err(e) = self.heartbeat(&mut conn, true).await {
            return Ended::Lost(e);
        }
        if let Err(e) = self.refresh(&mut conn).await {
            return Ended::Lost(e);
        }
        self.stats.up.store(true, Ordering::Relaxed);
        tracing::info!(
            registrations = self.options.entries.len(),
            "registry connected"
        );
        let mut messages = pubsub.into_on_message();
        let mut tick = tokio::time::interval(self.options.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // The first tick is immediate; we just did both.
        loop {
            let outcome = tokio::select! {
                _ = tick.tick() => match self.heartbeat(&mut conn, false).await {
                    Ok(()) => self.refresh(&mut conn).await,
                    Err(e) => Err(e),
                },
                msg = messages.next() => match msg {
                    None => Err("subscriber connection closed".to_string()),
                    Some(msg) => {
                        if let Some(key) = msg.get_payload::<String>().ok().and_then(|p| p.strip_prefix(DELETED).map(str::to_string)) {
                            self.deleted.insert(key);
                        }
                        self.refresh(&mut conn).await
                    }
                },
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Drain) => {
                        self.draining = true;
                        self.heartbeat(&mut conn, true).await
                    }
                    Some(Command::Stop(done)) => {
                        self.deregister(&mut conn).await;
                        let _ = done.send(());
                        return Ended::Stopped;
                    }
                    None => {
                        self.deregister(&mut conn).await;
                        return Ended::Stopped;
                    }
                },
            };
            if let Err(e) = outcome {
                return Ended::Lost(e);
            }
        }
    }

    /// Writes every registration with its TTL; `announce`: also tells peers on [`CHANNEL`].
    async fn heartbeat(&mut self, conn: &mut Conn, announce: bool) -> Result<(), String> {
        let load = (self.options.load)();
        let ttl_ms = self.options.ttl.as_millis().max(1) as u64;
        for (service, instance) in &mut self.options.entries {
            instance.status = if self.draining {
                InstanceStatus::Draining
            } else {
                InstanceStatus::Healthy
            };
            instance.in_flight = load.in_flight;
            instance.connections = load.connections;
            let key = crate::directory::registry_key(*service, &instance.id);
            let written = within(
                "heartbeat",
                redis::cmd("SET")
                    .arg(&key)
                    .arg(instance.to_json())
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async::<()>(conn),
            )
            .await;
            if let Err(e) = written {
                self.stats.heartbeats_failed.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
            self.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
            if announce {
                within(
                    "announce",
                    redis::cmd("PUBLISH")
                        .arg(CHANNEL)
                        .arg(&key)
                        .query_async::<i64>(conn),
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Deletes this process's registrations and announces it; failures are only logged (the
    /// keys expire by their TTL anyway).
    async fn deregister(&mut self, conn: &mut Conn) {
        for (service, instance) in &self.options.entries {
            let key = crate::directory::registry_key(*service, &instance.id);
            let deleted = within(
                "delete",
                redis::cmd("DEL").arg(&key).query_async::<i64>(conn),
            )
            .await
            .and(Ok(()));
            let announced = async {
                within(
                    "announce",
                    redis::cmd("PUBLISH")
                        .arg(CHANNEL)
                        .arg(format!("{DELETED}{key}"))
                        .query_async::<i64>(conn),
                )
                .await
            };
            if let Err(e) = deleted.and(announced.await.map(|_| ())) {
                tracing::warn!(%key, error = %e, "registry: deregistration failed; the key expires by its TTL");
            }
        }
        self.stats.up.store(false, Ordering::Relaxed);
    }

    /// Reads every registration into the directory.
    async fn refresh(&mut self, conn: &mut Conn) -> Result<(), String> {
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = within(
                "scan",
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(PATTERN)
                    .arg("COUNT")
                    .arg(500)
                    .query_async(conn),
            )
            .await?;
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        // SCAN may return a key twice.
        keys.sort();
        keys.dedup();
        let mut values: Vec<Option<Vec<u8>>> = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(500) {
            let got: Vec<Option<Vec<u8>>> =
                within("mget", redis::cmd("MGET").arg(chunk).query_async(conn)).await?;
            values.extend(got);
        }
        let mut found: HashMap<String, (Service, Instance)> = HashMap::new();
        let mut still_malformed = HashSet::new();
        for (key, value) in keys.into_iter().zip(values) {
            // Gone between SCAN and MGET.
            let Some(value) = value else { continue };
            match Instance::parse_entry(&key, &value) {
                Ok(entry) => {
                    found.insert(key, entry);
                }
                Err(e) => {
                    if self.malformed.get(&key) != Some(&value) {
                        tracing::warn!(%key, error = %e, "registry entry ignored");
                        self.directory.count_malformed();
                        self.malformed.insert(key.clone(), value);
                    }
                    still_malformed.insert(key);
                }
            }
        }
        // A key fixed or deleted is logged again if it turns bad again.
        self.malformed.retain(|k, _| still_malformed.contains(k));
        for service in Service::ALL {
            let list: Vec<Instance> = found
                .values()
                .filter(|(s, _)| *s == service)
                .map(|(_, i)| i.clone())
                .collect();
            // The configured static addresses stand until the registry knows an instance.
            if list.is_empty() && self.directory.source(service) == Source::Static {
                continue;
            }
            self.directory.set(service, list, Source::Registry);
        }
        self.stats.refreshes.fetch_add(1, Ordering::Relaxed);
        self.find_conflicts(&found);
        let own: HashSet<String> = self
            .options
            .entries
            .iter()
            .map(|(s, i)| crate::directory::registry_key(*s, &i.id))
            .collect();
        for (key, (service, instance)) in &self.known {
            // Gone after `draining` or with its deletion announced: a clean stop, whose runs
            // its own shutdown dealt with.
            let clean = !instance.is_healthy() || self.deleted.contains(key);
            if found.contains_key(key) || own.contains(key) || clean {
                continue;
            }
            self.stats.expired.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%key, started_at_ms = instance.started_at_ms, "registration expired: the instance stopped answering");
            if let Some(f) = &self.options.on_expired {
                f(*service, instance);
            }
        }
        self.known = found;
        self.deleted.clear();
        Ok(())
    }

    /// Reports (once per key) an own key holding another process's entry: two processes run
    /// with the same `instance.id` and overwrite each other's registration.
    fn find_conflicts(&mut self, found: &HashMap<String, (Service, Instance)>) {
        for (service, mine) in &self.options.entries {
            let key = crate::directory::registry_key(*service, &mine.id);
            let Some((_, seen)) = found.get(&key) else {
                continue;
            };
            let same_process = (seen.started_at_ms, seen.grpc, seen.http)
                == (mine.started_at_ms, mine.grpc, mine.http);
            if !same_process && self.conflicting.insert(key.clone()) {
                self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    %key,
                    other = %seen.to_json(),
                    "another process registers under this instance.id: give each process its own instance.id"
                );
            }
        }
    }
}

/// This process's entry for `service`, before its first heartbeat.
pub fn own_instance(
    id: &str,
    grpc: Option<std::net::SocketAddr>,
    http: Option<std::net::SocketAddr>,
    shards: u32,
    version: &str,
    started_at_ms: u64,
) -> Instance {
    Instance {
        id: id.to_string(),
        grpc,
        http,
        status: InstanceStatus::Healthy,
        shards,
        in_flight: 0,
        connections: 0,
        version: version.to_string(),
        started_at_ms,
    }
}

/// Milliseconds since the Unix epoch (the `started_at_ms` of a process starting now).
pub fn started_now_ms() -> u64 {
    now_ms()
}
