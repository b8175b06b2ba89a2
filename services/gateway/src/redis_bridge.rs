//! The Redis bridge: carries bus events between sdsim instances.
//!
//! redis 1.x needs a tokio runtime (docs/architecture.md), so one small thread runs a tokio
//! current-thread runtime and owns both Redis connections: a publisher and a pattern subscriber
//! on `sdsim:bus:*`. Owner shards hand it the events they sequence from local publishes (a
//! bounded queue; full or disconnected → dropped and counted); it publishes each as
//! `<instance id>\n<data>` on `sdsim:bus:<channel>`. Messages from other instances go to the
//! channel's owner shard (bounded queue per shard), which sequences them like a local publish
//! without sending them back out; our own messages are recognised by the instance id and
//! skipped.
//!
//! **Throughput.** The publisher does not wait a round trip per event: it takes everything
//! waiting in the queue (up to [`MAX_BATCH_EVENTS`] events or [`MAX_BATCH_BYTES`]) and writes it
//! as one pipeline of `PUBLISH` commands, then reads the replies; while one batch is in flight
//! the next accumulates in the queue. The subscriber parses pushes in place ([`resp`]) and hands
//! each event to its owner shard's queue. Both directions speak RESP2 by hand on their own
//! socket; the redis crate is only used to read `redis.url`.
//!
//! **Order.** Per-channel order holds because every event of a channel is sequenced on one owner
//! shard, which puts it in the one queue in order; the one publisher connection writes the
//! queue's events in that order, and Redis executes one connection's commands in the order they
//! arrive and delivers each to the one subscriber connection of every instance in that order.
//! Pipelining changes when replies are read, not the order of commands on the connection.
//!
//! When Redis is down the instance keeps serving its own subscribers; `/health/redis` says
//! `down` and the thread reconnects with exponential backoff (100 ms → 5 s).

pub mod resp;

use bytes::{Buf, Bytes, BytesMut};
use redis::{ConnectionAddr, ConnectionInfo};
use sdsim_core::bus::{owner_of, Outlet};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Prefix of the Redis channels the bridge uses.
pub const PREFIX: &str = "sdsim:bus:";
const OUT_QUEUE: usize = 65_536;
const IN_QUEUE: usize = 65_536;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The most events one pipelined write carries.
pub const MAX_BATCH_EVENTS: usize = 512;
/// A batch stops growing once its encoded commands pass this many bytes.
pub const MAX_BATCH_BYTES: usize = 256 * 1024;
/// How much the subscriber reads at once at least.
const READ_CHUNK: usize = 64 * 1024;

/// Counters and state, read by `/health/redis` and `/metrics`.
#[derive(Debug, Default)]
pub struct BridgeStats {
    /// Connected and subscribed.
    pub up: AtomicBool,
    /// Events published to Redis (their `PUBLISH` was answered).
    pub published: AtomicU64,
    /// Pipelined writes of `PUBLISH` commands; `published / batches` is the mean batch size.
    pub batches: AtomicU64,
    /// Local events not sent (queue full or Redis down), or in a batch whose connection failed
    /// before every reply came (Redis may have published some of those).
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
    /// `redis.url` names a Unix socket or TLS: the bridge speaks plain TCP.
    #[error("redis.url: the Redis bridge connects over TCP only (redis://host:port)")]
    NotTcp,
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
        let server = client.get_connection_info().clone();
        if !matches!(server.addr(), ConnectionAddr::Tcp(..)) {
            return Err(BridgeError::NotTcp);
        }
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
            server,
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
    server: ConnectionInfo,
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
        let mut subscriber = open(&self.server)
            .await
            .map_err(|e| format!("subscriber: {e}"))?;
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let mut command = Vec::new();
        resp::command(
            &mut command,
            &[b"PSUBSCRIBE", format!("{PREFIX}*").as_bytes()],
        );
        subscriber
            .write_all(&command)
            .await
            .map_err(|e| e.to_string())?;
        let confirmed = tokio::time::timeout(CONNECT_TIMEOUT, reply(&mut subscriber, &mut buf));
        match confirmed
            .await
            .map_err(|_| "PSUBSCRIBE: timed out".to_string())??
        {
            Reply::Array(kind) if kind == b"psubscribe" => {}
            other => return Err(format!("PSUBSCRIBE answered {other:?}")),
        }
        let publisher = open(&self.server)
            .await
            .map_err(|e| format!("publisher: {e}"))?;
        self.stats.up.store(true, Ordering::Relaxed);
        sdsim_core::bus::remote_linked();
        tracing::info!(instance = %self.instance, "Redis bridge connected");
        let inbound = Inbound {
            shards: &self.shards,
            stats: &self.stats,
            instance: self.instance.as_bytes(),
        };
        let in_flight = Cell::new(0);
        let outbound = Outbound {
            queue: &mut self.out,
            stats: &self.stats,
            instance: &self.instance,
            in_flight: &in_flight,
        };
        let ended = tokio::select! {
            done = outbound.run(publisher) => done,
            failed = inbound.run(subscriber, buf) => failed,
        };
        // A batch whose replies did not all come may or may not have been published: counted
        // as dropped, never sent again (a repeat would reach subscribers twice).
        self.stats
            .publish_dropped
            .fetch_add(in_flight.get() as u64, Ordering::Relaxed);
        ended
    }
}

/// The publishing half: drains the queue into pipelined batches of `PUBLISH`.
struct Outbound<'a> {
    queue: &'a mut mpsc::Receiver<(Arc<str>, Bytes)>,
    stats: &'a BridgeStats,
    instance: &'a str,
    /// Events of the batch awaiting its replies.
    in_flight: &'a Cell<usize>,
}

impl Outbound<'_> {
    /// Returns `Ok` when every sender is gone (the process is stopping), `Err` when the
    /// connection fails (the batch in flight is left in `in_flight`).
    async fn run(self, mut publisher: TcpStream) -> Result<(), String> {
        let mut batch = Vec::with_capacity(MAX_BATCH_BYTES + 4096);
        let mut replies = BytesMut::with_capacity(4096);
        loop {
            let Some((channel, data)) = self.queue.recv().await else {
                return Ok(());
            };
            batch.clear();
            resp::publish(&mut batch, PREFIX, &channel, self.instance, &data);
            let mut events = 1;
            while events < MAX_BATCH_EVENTS && batch.len() < MAX_BATCH_BYTES {
                let Ok((channel, data)) = self.queue.try_recv() else {
                    break;
                };
                resp::publish(&mut batch, PREFIX, &channel, self.instance, &data);
                events += 1;
            }
            // One batch in flight: the next one gathers in the queue meanwhile, so a batch grows
            // with the load (one event when idle, so no added latency; up to the cap under a
            // burst), and what a failure loses is at most this batch, counted below.
            self.in_flight.set(events);
            publisher
                .write_all(&batch)
                .await
                .map_err(|e| e.to_string())?;
            read_counts(&mut publisher, &mut replies, events).await?;
            self.in_flight.set(0);
            self.stats
                .published
                .fetch_add(events as u64, Ordering::Relaxed);
            self.stats.batches.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Reads `count` integer replies (one per `PUBLISH`).
async fn read_counts(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    mut count: usize,
) -> Result<(), String> {
    loop {
        let mut at = 0;
        while count > 0 {
            match resp::parse(&buf[at..]).map_err(|e| e.to_string())? {
                None => break,
                Some((resp::Frame::Integer(_), used)) => {
                    at += used;
                    count -= 1;
                }
                Some((other, _)) => return Err(format!("PUBLISH answered {other:?}")),
            }
        }
        buf.advance(at);
        if count == 0 {
            return Ok(());
        }
        read_more(stream, buf).await?;
    }
}

/// The subscribing half: hands other instances' events to their owner shards.
struct Inbound<'a> {
    shards: &'a [mpsc::Sender<Remote>],
    stats: &'a BridgeStats,
    instance: &'a [u8],
}

impl Inbound<'_> {
    /// Runs until the connection fails.
    async fn run(self, mut subscriber: TcpStream, mut buf: BytesMut) -> Result<(), String> {
        loop {
            let mut at = 0;
            while let Some((frame, used)) = resp::parse(&buf[at..]).map_err(|e| e.to_string())? {
                at += used;
                if let Some((channel, payload)) = frame.pmessage() {
                    self.received(channel, payload);
                }
            }
            buf.advance(at);
            read_more(&mut subscriber, &mut buf).await?;
        }
    }

    fn received(&self, redis_channel: &[u8], payload: &[u8]) {
        let Some(channel) = redis_channel.strip_prefix(PREFIX.as_bytes()) else {
            return;
        };
        let Some(split) = payload.iter().position(|&b| b == b'\n') else {
            return;
        };
        let (from, data) = (&payload[..split], &payload[split + 1..]);
        if from == self.instance {
            return; // Our own event, already delivered here.
        }
        let Ok(channel) = std::str::from_utf8(channel) else {
            return; // Not a channel name a bus accepts; no sdsim published it.
        };
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        let owner = owner_of(channel, self.shards.len()).index();
        let event = (channel.to_string(), Bytes::copy_from_slice(data));
        if self.shards[owner].try_send(event).is_err() {
            self.stats.receive_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Reads what the socket has into `buf`; a closed connection is an error.
async fn read_more(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<(), String> {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    match stream.read_buf(buf).await {
        Ok(0) => Err("Redis closed the connection".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// A reply during connection set-up, owned.
#[derive(Debug)]
enum Reply {
    Simple(Vec<u8>),
    Error(String),
    Array(Vec<u8>),
    Other,
}

async fn reply(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<Reply, String> {
    loop {
        if let Some((frame, used)) = resp::parse(buf).map_err(|e| e.to_string())? {
            let owned = match frame {
                resp::Frame::Simple(s) => Reply::Simple(s.to_vec()),
                resp::Frame::Error(e) => Reply::Error(String::from_utf8_lossy(e).into_owned()),
                resp::Frame::Array([resp::Item::Bytes(kind), ..], _) => Reply::Array(kind.to_vec()),
                _ => Reply::Other,
            };
            buf.advance(used);
            return Ok(owned);
        }
        read_more(stream, buf).await?;
    }
}

/// Connects to the server of `redis.url` and authenticates if it names a password.
async fn open(server: &ConnectionInfo) -> Result<TcpStream, String> {
    let ConnectionAddr::Tcp(host, port) = server.addr() else {
        return Err("not a TCP address".into());
    };
    let connect = TcpStream::connect((host.as_str(), *port));
    let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| "connect: timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    // Small batches (one event when idle) must leave at once.
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let settings = server.redis_settings();
    if let Some(password) = settings.password() {
        let mut command = Vec::new();
        match settings.username() {
            Some(user) => resp::command(
                &mut command,
                &[b"AUTH", user.as_bytes(), password.as_bytes()],
            ),
            None => resp::command(&mut command, &[b"AUTH", password.as_bytes()]),
        }
        stream
            .write_all(&command)
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = BytesMut::with_capacity(256);
        let answer = tokio::time::timeout(CONNECT_TIMEOUT, reply(&mut stream, &mut buf))
            .await
            .map_err(|_| "AUTH: timed out".to_string())??;
        match answer {
            Reply::Simple(ok) if ok == b"OK" => {}
            Reply::Error(e) => return Err(format!("AUTH: {e}")),
            other => return Err(format!("AUTH answered {other:?}")),
        }
    }
    Ok(stream)
}
