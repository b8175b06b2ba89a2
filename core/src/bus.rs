//! The sharded pub/sub bus.
//!
//! Every channel has an **owner shard** (a hash of its name): the owner numbers the channel's
//! events (`seq`), keeps its bounded history (size and age) for subscribers that resume, and
//! knows which shards have subscribers. A publish runs on the owner (one mesh hop when it starts
//! elsewhere); the owner serialises and frames the event **once** (`Event::wire`, shared by
//! reference count), hands it to its own subscribers directly and queues it for each other
//! interested shard, whose forwarder sends queued events in batches: at most one mesh message per
//! event per interested shard, never one per subscriber, in `seq` order.
//!
//! Each shard keeps its channel → subscribers table. A subscription is registered locally
//! *before* the owner is asked for the channel's position and history, and events arriving in
//! between are held until the subscriber has been sent what it missed; subscribers never see an
//! event twice or out of order (delivery is filtered by `seq`).
//!
//! Bounds: `bus.max_channels_per_shard` channels per owner (beyond: the publish or subscribe
//! fails), `bus.history_size` events per channel, `bus.max_forward_queue` events waiting for one
//! other shard (beyond: the oldest are dropped and counted; subscribers see the gap in `seq`).

use crate::config::BusConfig;
use crate::metrics::{Key, Metrics};
use crate::runtime::Shard;
use crate::shard::ShardId;
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::hash::{Hash, Hasher};
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// Metric: events published (sequenced) on this shard.
pub const PUBLISHED: &str = "sdsim_bus_published_total";
/// Metric: event deliveries to subscribers.
pub const DELIVERED: &str = "sdsim_bus_delivered_total";
/// Metric: batches sent to other shards.
pub const FORWARD_BATCHES: &str = "sdsim_bus_forward_batches_total";
/// Metric: events dropped because a forward queue was full.
pub const FORWARD_DROPPED: &str = "sdsim_bus_forward_dropped_total";
/// Metric: channels this shard owns.
pub const CHANNELS: &str = "sdsim_bus_channels";
/// Metric: local subscriptions.
pub const SUBSCRIPTIONS: &str = "sdsim_bus_subscriptions";

/// Times the link to other instances (the Redis bridge) was established, first time included.
static REMOTE_LINKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static REMOTE_LINKED: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Called by the link to other instances each time it (re)connects. Events other instances
/// published while it was down are gone; state that must not miss any (revoked sessions)
/// reconciles from storage when this is called (see [`remote_link_changed`]).
pub fn remote_linked() {
    REMOTE_LINKS.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    REMOTE_LINKED.notify_waiters();
}

/// How many times the link to other instances was established so far.
pub fn remote_links() -> u64 {
    REMOTE_LINKS.load(std::sync::atomic::Ordering::Acquire)
}

/// Resolves once the link to other instances has been established more than `seen` times
/// (callable from any thread; wakes across shards).
pub async fn remote_link_changed(seen: u64) {
    loop {
        let notified = REMOTE_LINKED.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        if remote_links() > seen {
            return;
        }
        notified.await;
    }
}

/// One published event, shared by every shard and subscriber that receives it.
#[derive(Debug)]
pub struct Event {
    /// The channel.
    pub channel: Arc<str>,
    /// Its position in the channel (1, 2, ...).
    pub seq: u64,
    /// The payload as published (JSON).
    pub data: Bytes,
    /// The event as sent to clients, built once by the bus's encoder.
    pub wire: Bytes,
    /// An alternative wire form (a compressed frame), built at most once by whoever needs it.
    pub wire_alt: OnceLock<Bytes>,
}

/// Builds an event's wire form from channel, seq and data.
pub type Encoder = Arc<dyn Fn(&str, u64, &[u8]) -> Bytes + Send + Sync>;

/// Receives every event this instance sequences from local publishes (the Redis bridge).
pub type Outlet = Arc<dyn Fn(&Arc<str>, &Bytes) + Send + Sync>;

/// Where a subscription's events go (a client connection).
pub trait Sink {
    /// Takes one event; false when the sink no longer accepts events (closing). Must not
    /// subscribe, unsubscribe or publish (it runs while the bus walks its table).
    fn push(&self, event: &Arc<Event>) -> bool;
}

/// Where a resuming subscriber left off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Since {
    /// The last `seq` it received.
    pub seq: u64,
    /// The channel epoch it was received in, if it knows it.
    pub epoch: Option<String>,
}

/// The owner's answer to a subscription.
#[derive(Debug)]
pub struct Attached {
    /// The channel's current position (the last `seq` published).
    pub seq: u64,
    /// The channel's epoch: positions are only comparable within one epoch.
    pub epoch: String,
    /// Whether everything after `since` is in `missed` (false without `since`).
    pub recovered: bool,
    /// Events after `since`, oldest first (empty unless recovered).
    pub missed: Vec<Arc<Event>>,
}

/// What the bus could not do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// The owner shard already owns `bus.max_channels_per_shard` channels.
    #[error("too many channels on this instance (bus.max_channels_per_shard)")]
    TooManyChannels,
    /// The owner shard could not be reached (shutting down).
    #[error("the bus is shutting down")]
    Unavailable,
}

struct Owned {
    seq: u64,
    epoch: String,
    history: VecDeque<(Instant, Arc<Event>)>,
    interested: Vec<bool>,
}

struct Sub {
    sink: Rc<dyn Sink>,
    /// Events held while the subscriber is being sent what it missed.
    pending: RefCell<Option<Vec<Arc<Event>>>>,
    /// The last `seq` handed to the sink.
    last: Cell<u64>,
}

struct Forward {
    queue: RefCell<VecDeque<Arc<Event>>>,
    wake: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

/// One shard's part of the bus. Install with [`Bus::install`]; reach with [`Bus::local`].
pub struct Bus {
    me: ShardId,
    shards: usize,
    config: BusConfig,
    encoder: Encoder,
    outlet: RefCell<Option<Outlet>>,
    process_epoch: u64,
    epochs: Cell<u64>,
    owned: RefCell<HashMap<Arc<str>, Owned>>,
    local: RefCell<HashMap<Arc<str>, Vec<Rc<Sub>>>>,
    forward: Vec<Forward>,
    metrics: Rc<Metrics>,
}

impl Bus {
    /// Installs this shard's bus and starts its forwarders and history sweeper. `process_epoch`
    /// must be the same on every shard of the process and differ between processes (it makes
    /// channel epochs unique).
    pub fn install(
        shard: &Shard,
        config: BusConfig,
        encoder: Encoder,
        process_epoch: u64,
        metrics: Rc<Metrics>,
    ) -> Rc<Bus> {
        let shards = shard.count();
        let bus = shard.insert(Bus {
            me: shard.id(),
            shards,
            config,
            encoder,
            outlet: RefCell::new(None),
            process_epoch,
            epochs: Cell::new(0),
            owned: RefCell::new(HashMap::new()),
            local: RefCell::new(HashMap::new()),
            forward: (0..shards)
                .map(|_| Forward {
                    queue: RefCell::new(VecDeque::new()),
                    wake: Cell::new(false),
                    waker: RefCell::new(None),
                })
                .collect(),
            metrics,
        });
        for target in (0..shards).filter(|&t| t != shard.id().index()) {
            shard.spawn(
                "bus-forward",
                forward_loop(Rc::clone(&bus), ShardId(target)),
            );
        }
        shard.spawn("bus-sweep", sweep_loop(Rc::clone(&bus)));
        bus
    }

    /// This shard's bus, if installed.
    pub fn local() -> Option<Rc<Bus>> {
        Shard::try_current().and_then(|s| s.get::<Bus>())
    }

    /// Sets where locally published events also go (the Redis bridge).
    pub fn set_outlet(&self, outlet: Outlet) {
        *self.outlet.borrow_mut() = Some(outlet);
    }

    /// The shard that sequences `channel`.
    pub fn owner(&self, channel: &str) -> ShardId {
        owner_of(channel, self.shards)
    }

    /// Publishes `data` (JSON) on `channel` from this instance; returns its `seq`.
    pub async fn publish(&self, channel: &str, data: Bytes) -> Result<u64, BusError> {
        self.publish_from(channel, data, true).await
    }

    /// Publishes an event that came from another instance (not sent back out).
    pub async fn publish_remote(&self, channel: &str, data: Bytes) -> Result<u64, BusError> {
        self.publish_from(channel, data, false).await
    }

    async fn publish_from(&self, channel: &str, data: Bytes, local: bool) -> Result<u64, BusError> {
        let owner = self.owner(channel);
        if owner == self.me {
            return self.sequence(channel, data, local);
        }
        let channel: Arc<str> = channel.into();
        Shard::current()
            .mesh()
            .submit_to(owner, move || match Bus::local() {
                Some(bus) => bus.sequence(&channel, data, local),
                None => Err(BusError::Unavailable),
            })
            .await
            .unwrap_or(Err(BusError::Unavailable))
    }

    /// Subscribes `sink` to `channel`. Events published from now on are held until
    /// [`Subscription::activate`]; send the client its confirmation and `attached.missed`
    /// first, then activate.
    pub async fn subscribe(
        self: &Rc<Self>,
        channel: &str,
        sink: Rc<dyn Sink>,
        since: Option<Since>,
    ) -> Result<(Subscription, Attached), BusError> {
        let channel: Arc<str> = channel.into();
        let sub = Rc::new(Sub {
            sink,
            pending: RefCell::new(Some(Vec::new())),
            last: Cell::new(0),
        });
        let channel = {
            let mut local = self.local.borrow_mut();
            let key = match local.get_key_value(&channel) {
                Some((k, _)) => Arc::clone(k),
                None => channel,
            };
            local
                .entry(Arc::clone(&key))
                .or_default()
                .push(Rc::clone(&sub));
            key
        };
        self.metrics.gauge_add(Key::plain(SUBSCRIPTIONS), 1);
        let subscription = Subscription {
            bus: Rc::clone(self),
            channel: Arc::clone(&channel),
            sub,
        };
        let owner = self.owner(&channel);
        let me = self.me;
        let attached = if owner == me {
            self.attach(&channel, me, since)
        } else {
            let channel = Arc::clone(&channel);
            Shard::current()
                .mesh()
                .submit_to(owner, move || match Bus::local() {
                    Some(bus) => bus.attach(&channel, me, since),
                    None => Err(BusError::Unavailable),
                })
                .await
                .unwrap_or(Err(BusError::Unavailable))
        };
        // On error the subscription is dropped here, which unregisters it.
        attached.map(|a| (subscription, a))
    }

    /// Runs on the owner: registers `shard`'s interest and answers position and history.
    fn attach(
        &self,
        channel: &str,
        shard: ShardId,
        since: Option<Since>,
    ) -> Result<Attached, BusError> {
        let mut owned = self.owned.borrow_mut();
        let ch = self.owned_channel(&mut owned, channel)?;
        ch.interested[shard.index()] = true;
        trim_by_age(ch, self.config.history_ttl);
        let mut attached = Attached {
            seq: ch.seq,
            epoch: ch.epoch.clone(),
            recovered: false,
            missed: Vec::new(),
        };
        if let Some(since) = since {
            let same_epoch = since.epoch.as_deref().is_none_or(|e| e == ch.epoch);
            let oldest = ch.history.front().map(|(_, e)| e.seq).unwrap_or(ch.seq + 1);
            if same_epoch && since.seq <= ch.seq && oldest <= since.seq + 1 {
                attached.recovered = true;
                attached.missed = ch
                    .history
                    .iter()
                    .filter(|(_, e)| e.seq > since.seq)
                    .map(|(_, e)| Arc::clone(e))
                    .collect();
            }
        }
        Ok(attached)
    }

    fn owned_channel<'a>(
        &self,
        owned: &'a mut HashMap<Arc<str>, Owned>,
        channel: &str,
    ) -> Result<&'a mut Owned, BusError> {
        if !owned.contains_key(channel) {
            if owned.len() >= self.config.max_channels_per_shard {
                return Err(BusError::TooManyChannels);
            }
            let n = self.epochs.get() + 1;
            self.epochs.set(n);
            let epoch = format!(
                "{:x}",
                mix(self.process_epoch ^ mix(n ^ ((self.me.index() as u64) << 48)))
            );
            owned.insert(
                channel.into(),
                Owned {
                    seq: 0,
                    epoch,
                    history: VecDeque::new(),
                    interested: vec![false; self.shards],
                },
            );
            self.metrics.gauge_add(Key::plain(CHANNELS), 1);
        }
        Ok(owned.get_mut(channel).expect("inserted above"))
    }

    /// Runs on the owner: numbers, records and fans out one event.
    fn sequence(&self, channel: &str, data: Bytes, local: bool) -> Result<u64, BusError> {
        let (event, targets) = {
            let mut owned = self.owned.borrow_mut();
            let ch = self.owned_channel(&mut owned, channel)?;
            ch.seq += 1;
            let channel: Arc<str> = channel.into();
            let event = Arc::new(Event {
                wire: (self.encoder)(&channel, ch.seq, &data),
                channel,
                seq: ch.seq,
                data,
                wire_alt: OnceLock::new(),
            });
            if self.config.history_size > 0 {
                if ch.history.len() == self.config.history_size {
                    ch.history.pop_front();
                }
                ch.history.push_back((Instant::now(), Arc::clone(&event)));
            }
            (event, ch.interested.clone())
        };
        self.metrics.inc(Key::plain(PUBLISHED), 1);
        for (shard, interested) in targets.into_iter().enumerate() {
            if !interested {
                continue;
            }
            if shard == self.me.index() {
                self.deliver(&event);
            } else {
                self.enqueue(shard, Arc::clone(&event));
            }
        }
        if local {
            if let Some(outlet) = self.outlet.borrow().as_ref() {
                outlet(&event.channel, &event.data);
            }
        }
        Ok(event.seq)
    }

    fn enqueue(&self, shard: usize, event: Arc<Event>) {
        let f = &self.forward[shard];
        let mut queue = f.queue.borrow_mut();
        if queue.len() >= self.config.max_forward_queue {
            queue.pop_front();
            self.metrics.inc(Key::plain(FORWARD_DROPPED), 1);
        }
        queue.push_back(event);
        f.wake.set(true);
        if let Some(w) = f.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Hands `event` to this shard's subscribers of its channel.
    fn deliver(&self, event: &Arc<Event>) {
        // Sinks only queue bytes (they never call back into the bus), so the table can stay
        // borrowed while a big channel is walked.
        let local = self.local.borrow();
        let Some(subs) = local.get(&event.channel) else {
            return;
        };
        let mut delivered = 0;
        for sub in subs {
            if let Some(pending) = sub.pending.borrow_mut().as_mut() {
                pending.push(Arc::clone(event));
                continue;
            }
            if event.seq <= sub.last.get() {
                continue;
            }
            sub.last.set(event.seq);
            // A sink that is gone stays listed until its connection drops the subscription.
            if sub.sink.push(event) {
                delivered += 1;
            }
        }
        self.metrics.inc(Key::plain(DELIVERED), delivered);
    }

    fn unsubscribe(&self, channel: &Arc<str>, sub: &Rc<Sub>) {
        let now_empty = {
            let mut local = self.local.borrow_mut();
            let Some(list) = local.get_mut(channel) else {
                return;
            };
            let before = list.len();
            list.retain(|s| !Rc::ptr_eq(s, sub));
            if list.len() == before {
                return;
            }
            let empty = list.is_empty();
            if empty {
                local.remove(channel);
            }
            empty
        };
        self.metrics.gauge_add(Key::plain(SUBSCRIPTIONS), -1);
        if !now_empty {
            return;
        }
        let owner = self.owner(channel);
        let me = self.me;
        if owner == me {
            self.detach(channel, me);
            return;
        }
        let channel = Arc::clone(channel);
        // Unsubscribing happens in Drop: the detach travels on its own task. (While a shard
        // stops, its state is dropped after the shard handle is gone: nothing to tell then.)
        let Some(shard) = Shard::try_current() else {
            return;
        };
        crate::runtime::spawn("bus-detach", async move {
            let _ = shard
                .mesh()
                .send_to(owner, move || {
                    if let Some(bus) = Bus::local() {
                        bus.detach(&channel, me);
                    }
                })
                .await;
        });
    }

    fn detach(&self, channel: &str, shard: ShardId) {
        // A subscribe that raced ahead re-registers after this in ring order.
        if let Some(ch) = self.owned.borrow_mut().get_mut(channel) {
            ch.interested[shard.index()] = false;
        }
    }

    /// Channels this shard owns and local subscriptions (for tests and monitoring).
    pub fn counts(&self) -> (usize, usize) {
        let subs = self.local.borrow().values().map(Vec::len).sum();
        (self.owned.borrow().len(), subs)
    }

    fn sweep(&self) {
        let ttl = self.config.history_ttl;
        let mut owned = self.owned.borrow_mut();
        let before = owned.len();
        owned.retain(|_, ch| {
            trim_by_age(ch, ttl);
            ch.interested.iter().any(|&i| i) || !ch.history.is_empty()
        });
        let removed = before - owned.len();
        if removed > 0 {
            self.metrics
                .gauge_add(Key::plain(CHANNELS), -(removed as i64));
        }
    }
}

/// A live subscription; dropping it unsubscribes.
pub struct Subscription {
    bus: Rc<Bus>,
    channel: Arc<str>,
    sub: Rc<Sub>,
}

impl Subscription {
    /// The channel.
    pub fn channel(&self) -> &Arc<str> {
        &self.channel
    }

    /// Starts live delivery after the client has been sent everything up to `seq`: events held
    /// since subscribing that come after `seq` are pushed now, in order.
    pub fn activate(&self, seq: u64) {
        self.sub.last.set(seq);
        let held = self.sub.pending.borrow_mut().take().unwrap_or_default();
        for event in held {
            if event.seq > self.sub.last.get() {
                self.sub.last.set(event.seq);
                if !self.sub.sink.push(&event) {
                    break;
                }
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.bus.unsubscribe(&self.channel, &self.sub);
    }
}

fn trim_by_age(ch: &mut Owned, ttl: Duration) {
    while let Some((at, _)) = ch.history.front() {
        if at.elapsed() <= ttl {
            break;
        }
        ch.history.pop_front();
    }
}

/// The owner shard of `channel` among `shards`.
pub fn owner_of(channel: &str, shards: usize) -> ShardId {
    // SipHash with fixed keys: the same channel maps to the same shard in every process.
    let mut h = std::hash::DefaultHasher::new();
    channel.hash(&mut h);
    ShardId((h.finish() % shards.max(1) as u64) as usize)
}

fn mix(mut x: u64) -> u64 {
    // splitmix64 finaliser.
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

async fn forward_loop(bus: Rc<Bus>, target: ShardId) {
    let f = &bus.forward[target.index()];
    loop {
        poll_fn(|cx| {
            if f.wake.replace(false) {
                return Poll::Ready(());
            }
            *f.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        loop {
            let batch: Vec<Arc<Event>> = f.queue.borrow_mut().drain(..).collect();
            if batch.is_empty() {
                break;
            }
            bus.metrics.inc(Key::plain(FORWARD_BATCHES), 1);
            let Some(shard) = Shard::try_current() else {
                return;
            };
            let sent = shard
                .mesh()
                .send_to(target, move || {
                    if let Some(bus) = Bus::local() {
                        for event in &batch {
                            bus.deliver(event);
                        }
                    }
                })
                .await;
            if sent.is_err() {
                return; // The mesh closed: shutting down.
            }
        }
    }
}

async fn sweep_loop(bus: Rc<Bus>) {
    let period =
        (bus.config.history_ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(10));
    loop {
        monoio::time::sleep(period).await;
        bus.sweep();
    }
}
