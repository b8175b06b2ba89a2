//! One load thread of a WebSocket run: it opens its share of the connections on the connect
//! schedule, runs its share of the publishers, follows the coordinator's stages (connecting →
//! holding → stopping) and reports a [`Tick`] per interval.

use super::proto::{publish_body, Rng};
use super::report::{Op, Tally};
use super::{session, WsLoad};
use crate::client::{Connection, ExchangeError};
use crate::run::build_request;
use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

/// Nanosecond timestamps that mean the same on every thread (and, through the UNIX epoch, to
/// other processes on the machine): an origin read once, then the monotonic clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    origin: Instant,
    epoch_ns: u64,
}

impl Clock {
    pub(crate) fn new() -> Clock {
        let epoch = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        Clock {
            origin: Instant::now(),
            epoch_ns: epoch.as_nanos() as u64,
        }
    }

    /// `t` in ns since the UNIX epoch.
    pub(crate) fn ns(&self, t: Instant) -> u64 {
        let offset = if t >= self.origin {
            (t - self.origin).as_nanos() as i128
        } else {
            -((self.origin - t).as_nanos() as i128)
        };
        (self.epoch_ns as i128 + offset).max(0) as u64
    }
}

/// Figures every thread updates and the coordinator reads; the coordinator's decisions.
pub(crate) struct Progress {
    /// Connections subscribed or failed.
    pub(crate) settled: AtomicUsize,
    /// Connections that were subscribed.
    pub(crate) subscribed: AtomicUsize,
    /// When the last `subscribed` reply came, ns after the start.
    pub(crate) last_subscribed_ns: AtomicU64,
    /// Connections subscribed now, per channel.
    pub(crate) held: Vec<AtomicI64>,
    /// Events published successfully, per channel.
    pub(crate) published: Vec<AtomicU64>,
    /// Events received (every connection counted).
    pub(crate) delivered: AtomicU64,
    /// Pings sent and not answered yet.
    pub(crate) pings_outstanding: AtomicI64,
    /// Publisher tasks that have finished.
    pub(crate) publishers_done: AtomicUsize,
    /// When the hold starts, ns after the start, plus one (0: not decided yet).
    pub(crate) hold_start_ns: AtomicU64,
    /// Close every connection and finish.
    pub(crate) stop: AtomicBool,
}

impl Progress {
    pub(crate) fn new(channels: usize) -> Progress {
        Progress {
            settled: AtomicUsize::new(0),
            subscribed: AtomicUsize::new(0),
            last_subscribed_ns: AtomicU64::new(0),
            held: (0..channels).map(|_| AtomicI64::new(0)).collect(),
            published: (0..channels).map(|_| AtomicU64::new(0)).collect(),
            delivered: AtomicU64::new(0),
            pings_outstanding: AtomicI64::new(0),
            publishers_done: AtomicUsize::new(0),
            hold_start_ns: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        }
    }

    /// Connections subscribed now.
    pub(crate) fn held(&self) -> i64 {
        self.held.iter().map(|h| h.load(Relaxed)).sum()
    }

    /// Deliveries owed: every event published on a channel, to each connection holding it.
    pub(crate) fn expected_deliveries(&self) -> u64 {
        self.held
            .iter()
            .zip(&self.published)
            .map(|(h, p)| h.load(Relaxed).max(0) as u64 * p.load(Relaxed))
            .sum()
    }
}

/// Where the run is, as one thread sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Opening connections; nothing published or pinged yet.
    Connecting,
    /// The measured hold, `[start, end)`: publishers and pings run.
    Holding { start: Instant, end: Instant },
    /// Close the connections.
    Stopping,
}

/// The thread's stage and the tasks waiting for it to change, one waker slot per task (a
/// connection re-polled on every read replaces its waker instead of piling up copies).
pub(crate) struct StageCell {
    stage: Cell<(u64, Stage)>,
    waiters: RefCell<Vec<Option<Waker>>>,
}

impl StageCell {
    fn new(slots: usize) -> StageCell {
        StageCell {
            stage: Cell::new((0, Stage::Connecting)),
            waiters: RefCell::new(vec![None; slots]),
        }
    }

    /// The stage and its generation.
    pub(crate) fn get(&self) -> (u64, Stage) {
        self.stage.get()
    }

    fn set(&self, stage: Stage) {
        let (generation, _) = self.stage.get();
        self.stage.set((generation + 1, stage));
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        let slots = waiters.len();
        for waker in waiters.into_iter().flatten() {
            waker.wake();
        }
        *self.waiters.borrow_mut() = vec![None; slots];
    }

    /// Completes once the stage is no longer generation `seen`.
    pub(crate) async fn changed(&self, slot: usize, seen: u64) {
        poll_fn(|cx| {
            if self.stage.get().0 != seen {
                return Poll::Ready(());
            }
            let mut waiters = self.waiters.borrow_mut();
            if let Some(entry) = waiters.get_mut(slot) {
                if !entry.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *entry = Some(cx.waker().clone());
                }
            }
            Poll::Pending
        })
        .await
    }
}

/// One load thread's shared state.
pub(crate) struct Ctx {
    pub(crate) load: Rc<WsLoad>,
    /// The first scheduled connect.
    pub(crate) start: Instant,
    pub(crate) clock: Clock,
    pub(crate) progress: Arc<Progress>,
    pub(crate) stage: StageCell,
    pub(crate) tally: RefCell<Tally>,
    /// The one read buffer of the thread: sockets are read when ready, straight into it, and
    /// only what a connection has not consumed is kept by the connection.
    pub(crate) scratch: RefCell<Box<[u8]>>,
    pub(crate) rng: RefCell<Rng>,
    /// Connection tasks running.
    pub(crate) live: Cell<usize>,
}

/// One interval of one load thread, sent to the coordinator.
pub struct Tick {
    /// Interval number, from 0 at the start.
    pub index: u64,
    /// What was counted in the interval.
    pub tally: Tally,
}

/// Runs one thread's share: `conns` are global connection numbers, `publishers` publisher
/// numbers. Returns everything counted.
pub(crate) async fn worker(
    load: Rc<WsLoad>,
    start: Instant,
    clock: Clock,
    progress: Arc<Progress>,
    conns: Vec<usize>,
    publishers: Vec<usize>,
    ticks: std::sync::mpsc::Sender<Tick>,
) -> Tally {
    let thread_seed = conns.first().copied().unwrap_or(0) as u64;
    let ctx = Rc::new(Ctx {
        start,
        clock,
        progress,
        stage: StageCell::new(conns.len() + publishers.len()),
        tally: RefCell::new(Tally::default()),
        scratch: RefCell::new(vec![0u8; load.read_buffer.max(1)].into_boxed_slice()),
        rng: RefCell::new(Rng::new(clock.ns(Instant::now()) ^ thread_seed)),
        live: Cell::new(0),
        load,
    });
    for (j, p) in publishers.iter().enumerate() {
        monoio::spawn(publisher(Rc::clone(&ctx), *p, conns.len() + j));
    }
    monoio::spawn(open_connections(Rc::clone(&ctx), conns));
    let mut totals = Tally::default();
    let mut index = 0u64;
    loop {
        let tick_at = start + ctx.load.interval * (index as u32 + 1);
        // Follow the coordinator closely (pings and publishers start on its word).
        while !follow(&ctx) && Instant::now() < tick_at {
            let left = tick_at.saturating_duration_since(Instant::now());
            monoio::time::sleep(left.min(Duration::from_millis(5))).await;
        }
        let done = std::mem::take(&mut *ctx.tally.borrow_mut());
        totals.add(&done);
        let _ = ticks.send(Tick { index, tally: done });
        index += 1;
        if ctx.stage.get().1 == Stage::Stopping {
            break;
        }
    }
    // Each connection sends its close frame; give them a moment.
    let deadline = Instant::now() + Duration::from_secs(2);
    while ctx.live.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    totals.add(&std::mem::take(&mut *ctx.tally.borrow_mut()));
    totals
}

/// Moves this thread to the coordinator's stage; true once stopping.
fn follow(ctx: &Ctx) -> bool {
    let p = &ctx.progress;
    let now = ctx.stage.get().1;
    if p.stop.load(Relaxed) {
        if now != Stage::Stopping {
            ctx.stage.set(Stage::Stopping);
        }
        return true;
    }
    if now == Stage::Connecting {
        let at = p.hold_start_ns.load(Relaxed);
        if at > 0 {
            let start = ctx.start + Duration::from_nanos(at - 1);
            ctx.stage.set(Stage::Holding {
                start,
                end: start + ctx.load.duration,
            });
        }
    }
    false
}

async fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        monoio::time::sleep(t - now).await;
    }
}

/// Opens the thread's connections on the deterministic schedule: connection `i` (of all
/// threads) no earlier than `i / connect_rate` after the start, a token bucket of depth one.
async fn open_connections(ctx: Rc<Ctx>, conns: Vec<usize>) {
    for (slot, index) in conns.into_iter().enumerate() {
        let due = ctx.start + Duration::from_secs_f64(index as f64 / ctx.load.connect_rate);
        sleep_until(due).await;
        if ctx.stage.get().1 == Stage::Stopping {
            break;
        }
        ctx.live.set(ctx.live.get() + 1);
        monoio::spawn(session::run(Rc::clone(&ctx), index, slot, due));
    }
}

/// Publisher `p` of `P`: events `p, p + P, ...`, event `k` intended at `hold start + k / rate`
/// on channel `k mod channels`, its `data.t` the intended time (open loop: a slow answer delays
/// the next sends, never their timestamps).
async fn publisher(ctx: Rc<Ctx>, p: usize, slot: usize) {
    let Some(target) = ctx.load.publish.clone() else {
        return;
    };
    let (start, end) = loop {
        let (generation, stage) = ctx.stage.get();
        match stage {
            Stage::Holding { start, end } => break (start, end),
            Stage::Stopping => {
                ctx.progress.publishers_done.fetch_add(1, Relaxed);
                return;
            }
            Stage::Connecting => ctx.stage.changed(slot, generation).await,
        }
    };
    let step = Duration::from_secs_f64(target.connections as f64 / target.rate);
    let mut pacer = crate::pace::Pacer::new();
    let mut conn: Option<Connection> = None;
    let mut k = p as u64;
    let auth = target
        .token
        .as_ref()
        .map(|t| format!("Authorization: Bearer {t}"));
    loop {
        let intended = start + Duration::from_secs_f64(k as f64 / target.rate);
        if intended >= end || ctx.stage.get().1 == Stage::Stopping {
            break;
        }
        pacer.until(intended).await;
        if Instant::now().saturating_duration_since(intended) > step {
            ctx.tally.borrow_mut().counters(Op::Publish).late += 1;
        }
        if conn.is_none() {
            match Connection::connect(target.addr).await {
                Ok(c) => {
                    ctx.tally.borrow_mut().counters(Op::Publish).connects += 1;
                    conn = Some(c);
                }
                Err(e) => {
                    let kind = session::connect_error_kind(&e);
                    ctx.tally.borrow_mut().error(Op::Publish, kind);
                    k += target.connections as u64;
                    continue;
                }
            }
        }
        let Some(active) = conn.as_mut() else {
            continue;
        };
        let channel = (k % ctx.load.channels.len() as u64) as usize;
        let body = publish_body(
            &ctx.load.channels[channel],
            ctx.clock.ns(intended),
            k,
            target.data_size,
        );
        let mut headers = vec!["Content-Type: application/json".to_string()];
        headers.extend(auth.clone());
        let request = build_request(
            "POST",
            &target.host,
            &target.path,
            &headers,
            body.as_bytes(),
        );
        ctx.tally.borrow_mut().counters(Op::Publish).sent += 1;
        let result = monoio::time::timeout(Duration::from_secs(10), active.exchange(request)).await;
        let mut tally = ctx.tally.borrow_mut();
        match result {
            Ok(Ok(x)) => {
                tally.complete(Op::Publish, intended.elapsed());
                match x.status {
                    200..=299 => {
                        ctx.progress.published[channel].fetch_add(1, Relaxed);
                    }
                    400..=499 => tally.error(Op::Publish, "status_4xx"),
                    _ => tally.error(Op::Publish, "status_5xx"),
                }
                if !x.reusable {
                    conn = None;
                    tally.counters(Op::Publish).reconnects += 1;
                }
            }
            Ok(Err(ExchangeError::Io(_))) => {
                tally.error(Op::Publish, "io");
                conn = None;
            }
            Ok(Err(ExchangeError::Parse(_))) => {
                tally.error(Op::Publish, "parse");
                conn = None;
            }
            Err(_) => {
                tally.error(Op::Publish, "timeout");
                conn = None;
            }
        }
        k += target.connections as u64;
    }
    ctx.progress.publishers_done.fetch_add(1, Relaxed);
}
