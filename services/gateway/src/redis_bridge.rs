//! The Redis bridge: carries bus events between sdsim instances.
//!
//! redis 1.x needs a tokio runtime (docs/architecture.md), so one small thread runs a tokio current-thread
//! runtime and owns both Redis connections: a publisher and a pattern subscriber on
//! `sdsim:bus:*`. Owner shards hand it the events they sequence from local publishes (a bounded
//! queue; full or disconnected → dropped and counted); it publishes each as
//! `<instance id>\n<data>` on `sdsim:bus:<channel>`. Messages from other instances go to the
//! channel's owner shard (bounded queue per shard), which sequences them like a local publish
//! without sending them back out; our own messages are recognised by the instance id and
//! skipped. One connection carries each direction, so per-channel order is kept.
//!
//! When Redis is down the instance keeps serving its own subscribers; `/health/redis` says
//! `down` and the thread reconnects with exponential backoff (100 ms → 5 s).

use bytes::Bytes;
use futures_util::StreamExt;
use sdsim_core::bus::{owner_of, Outlet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Prefix of the Redis channels the bridge uses.
pub const PREFIX: &str = "sdsim:bus:";
const OUT_QUEUE: usize = 65_536;
const IN_QUEUE: usize = 65_536;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Counters and state, read by `/health/redis` and `/metrics`.
#[derive(Debug, Default)]
pub struct BridgeStats {
    /// Connected and subscribed.
    pub up: AtomicBool,
    /// Events published to Redis.
    pub published: AtomicU64,
    /// Local events not sent (queue full or Redis down).
    pub publish_dropped: AtomicU64,
    /// Events received from other instances.
    pub received: AtomicU64,
    /// Received events dropped because a shard's queue was full.
    pub receive_dropped: AtomicU64,
    /// Connection attempts that failed or connections lost.
    pub failures: AtomicU64,
}

/// One event crossing instances.
pub type Remote = (String, Bytes);

/// Why the bridge did not start.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// `redis.url` is not a Redis URL the client accepts.
    #[error("redis.url = {url}: {source}")]
    Url {
        /// The setting as given.
        url: String,
        /// The client's reason.
        source: redis::RedisError,
    },
    /// The thread that owns the Redis connections could not be started.
    #[error("cannot start the Redis thread: {0}")]
    Thread(std::io::Error),
}

/// The handle the shards use.
pub struct Bridge {
    out: mpsc::Sender<(Arc<str>, Bytes)>,
    inbound: Mutex<Vec<Option<mpsc::Receiver<Remote>>>>,
    /// Counters and state.
    pub stats: Arc<BridgeStats>,
    /// This instance's id on the wire.
    pub instance: String,
}

impl Bridge {
    /// Starts the bridge thread for `url` with one inbound queue per shard.
    pub fn start(url: &str, shards: usize, instance: String) -> Result<Arc<Bridge>, BridgeError> {
        let client = redis::Client::open(url).map_err(|source| BridgeError::Url {
            url: url.to_string(),
            source,
        })?;
        let (out_tx, out_rx) = mpsc::channel(OUT_QUEUE);
        let mut senders = Vec::with_capacity(shards);
        let mut receivers = Vec::with_capacity(shards);
        for _ in 0..shards {
            let (tx, rx) = mpsc::channel(IN_QUEUE);
            senders.push(tx);
            receivers.push(Some(rx));
        }
        let stats = Arc::new(BridgeStats::default());
        let thread = Worker {
            client,
            out: out_rx,
            shards: senders,
            stats: Arc::clone(&stats),
            instance: instance.clone(),
        };
        std::thread::Builder::new()
            .name("sdsim-redis".into())
            .spawn(move || thread.run())
            .map_err(BridgeError::Thread)?;
        Ok(Arc::new(Bridge {
            out: out_tx,
            inbound: Mutex::new(receivers),
            stats,
            instance,
        }))
    }

    /// Where owner shards send locally published events.
    pub fn outlet(self: &Arc<Self>) -> Outlet {
        let bridge = Arc::clone(self);
        Arc::new(move |channel: &Arc<str>, data: &Bytes| {
            let sent = bridge.stats.up.load(Ordering::Relaxed)
                && bridge
                    .out
                    .try_send((Arc::clone(channel), data.clone()))
                    .is_ok();
            if !sent {
                bridge.stats.publish_dropped.fetch_add(1, Ordering::Relaxed);
            }
        })
    }

    /// Takes shard `index`'s inbound queue (once, at shard start).
    pub fn take_inbound(&self, index: usize) -> Option<mpsc::Receiver<Remote>> {
        self.inbound
            .lock()
            .ok()
            .and_then(|mut v| v.get_mut(index).and_then(Option::take))
    }
}

struct Worker {
    client: redis::Client,
    out: mpsc::Receiver<(Arc<str>, Bytes)>,
    shards: Vec<mpsc::Sender<Remote>>,
    stats: Arc<BridgeStats>,
    instance: String,
}

impl Worker {
    fn run(mut self) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the Redis bridge runtime");
                return;
            }
        };
        rt.block_on(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                match self.connected().await {
                    Ok(()) => return, // Every shard has gone: the process is stopping.
                    Err(e) => {
                        let was_up = self.stats.up.swap(false, Ordering::Relaxed);
                        self.stats.failures.fetch_add(1, Ordering::Relaxed);
                        if was_up {
                            backoff = Duration::from_millis(100);
                            tracing::warn!(error = %e, "Redis bridge lost its connection; reconnecting");
                        } else {
                            tracing::debug!(error = %e, ?backoff, "Redis bridge cannot connect");
                        }
                    }
                }
                // While down, local events are dropped (counted), not kept for later.
                let sleep = tokio::time::sleep(backoff);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = &mut sleep => break,
                        msg = self.out.recv() => match msg {
                            Some(_) => { self.stats.publish_dropped.fetch_add(1, Ordering::Relaxed); }
                            None => return,
                        },
                    }
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        });
    }

    async fn connected(&mut self) -> Result<(), String> {
        let timeout = |what: &'static str| move |_| format!("{what}: timed out");
        let mut pubsub = tokio::time::timeout(CONNECT_TIMEOUT, self.client.get_async_pubsub())
            .await
            .map_err(timeout("subscriber connect"))?
            .map_err(|e| e.to_string())?;
        pubsub
            .psubscribe(format!("{PREFIX}*"))
            .await
            .map_err(|e| e.to_string())?;
        let mut publisher = tokio::time::timeout(
            CONNECT_TIMEOUT,
            self.client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(timeout("publisher connect"))?
        .map_err(|e| e.to_string())?;
        self.stats.up.store(true, Ordering::Relaxed);
        sdsim_core::bus::remote_linked();
        tracing::info!(instance = %self.instance, "Redis bridge connected");
        let mut messages = pubsub.into_on_message();
        let mut payload = Vec::new();
        loop {
            tokio::select! {
                msg = messages.next() => {
                    let Some(msg) = msg else {
                        return Err("subscriber connection closed".into());
                    };
                    self.received(msg.get_channel_name(), msg.get_payload_bytes());
                }
                out = self.out.recv() => {
                    let Some((channel, data)) = out else { return Ok(()) };
                    payload.clear();
                    payload.extend_from_slice(self.instance.as_bytes());
                    payload.push(b'\n');
                    payload.extend_from_slice(&data);
                    let target = format!("{PREFIX}{channel}");
                    let published: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                        .arg(&target)
                        .arg(&payload[..])
                        .query_async(&mut publisher)
                        .await;
                    published.map_err(|e| e.to_string())?;
                    self.stats.published.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn received(&self, redis_channel: &str, payload: &[u8]) {
        let Some(channel) = redis_channel.strip_prefix(PREFIX) else {
            return;
        };
        let Some(split) = payload.iter().position(|&b| b == b'\n') else {
            return;
        };
        let (from, data) = (&payload[..split], &payload[split + 1..]);
        if from == self.instance.as_bytes() {
            return; // Our own event, already delivered here.
        }
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        let owner = owner_of(channel, self.shards.len()).index();
        let event = (channel.to_string(), Bytes::copy_from_slice(data));
        if self.shards[owner].try_send(event).is_err() {
            self.stats.receive_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}
