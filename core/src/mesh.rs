//! The cross-shard mesh: how shards talk without locks (rule 3 of docs/architecture.md).
//!
//! For N shards there are N×(N-1) bounded single-producer single-consumer rings, one per ordered
//! pair (from, to); each carries boxed jobs, closures that run on the receiving shard. A ring of
//! capacity C costs C × 16 bytes of slots plus two cache lines of indices.
//!
//! - **Sending** ([`MeshEndpoint::submit_to`], [`MeshEndpoint::send_to`],
//!   [`MeshEndpoint::broadcast`]) pushes onto the ring to the target. A full ring is
//!   backpressure: the sender yields and retries (counted in [`MeshStats::full_waits`]); the ring
//!   never grows. The sender wakes the receiver only when it is parked, which saves a syscall per
//!   message while the receiver is busy or spinning.
//! - **Receiving** ([`MeshEndpoint::run_receiver`], one task per shard) drains its N-1 incoming
//!   rings in batches. When they are all empty it keeps polling for ~50 µs by yielding to the
//!   shard's scheduler (other tasks still run), then parks: it marks itself parked, registers its
//!   waker, checks the rings once more (so no wake-up is lost) and sleeps. On this VM a wake-up of
//!   a parked thread costs 20–60 µs (1–4 ms at p99); the spin keeps bursts of traffic below that.
//! - **Results** come back through a oneshot channel; a job that panics is caught on the target
//!   (the receiver loop survives) and the caller gets [`MeshError::Panicked`].

use crate::shard::ShardId;
use crossbeam_utils::CachePadded;
use futures_util::task::AtomicWaker;
use std::cell::UnsafeCell;
use std::future::Future;
use std::mem::MaybeUninit;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A closure to run on another shard.
type Job = Box<dyn FnOnce() + Send>;

/// How long an idle receiver keeps polling before it parks.
const SPIN: Duration = Duration::from_micros(50);
/// How long an idle receiver keeps polling while this shard awaits replies.
const SPIN_AWAITING: Duration = Duration::from_micros(200);
/// Jobs taken from one ring before looking at the next (fairness between senders).
const BATCH: usize = 64;

/// Why a cross-shard call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MeshError {
    /// The mesh was closed (the runtime is stopping): the job did not run, or its result was lost.
    #[error("the mesh is closed")]
    Closed,
    /// There is no shard with this id.
    #[error("no shard {0}")]
    NoSuchShard(ShardId),
    /// The job panicked on the target shard (which carried on).
    #[error("the job panicked on the target shard")]
    Panicked,
}

/// Totals over all rings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MeshStats {
    /// Messages sent.
    pub sent: u64,
    /// Times a sender found its ring full and had to wait.
    pub full_waits: u64,
}

/// A bounded SPSC ring of jobs.
struct Ring {
    slots: Box<[UnsafeCell<MaybeUninit<Job>>]>,
    mask: usize,
    /// Next slot to read; written by the consumer only.
    head: CachePadded<AtomicUsize>,
    /// Next slot to write; written by the producer only.
    tail: CachePadded<AtomicUsize>,
    /// Producer-side counters (written by the producer only).
    sent: CachePadded<AtomicU64>,
    full_waits: AtomicU64,
}

// SAFETY: a slot is written only by the single producer before it publishes `tail`, and read
// only by the single consumer after it observes `tail` (Acquire) and before it publishes `head`.
unsafe impl Sync for Ring {}
unsafe impl Send for Ring {}

impl Ring {
    fn new(capacity: usize) -> Ring {
        let capacity = capacity.max(2).next_power_of_two();
        Ring {
            slots: (0..capacity)
                .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
                .collect(),
            mask: capacity - 1,
            head: CachePadded::new(AtomicUsize::new(0)),
            tail: CachePadded::new(AtomicUsize::new(0)),
            sent: CachePadded::new(AtomicU64::new(0)),
            full_waits: AtomicU64::new(0),
        }
    }

    fn len(&self) -> usize {
        let tail = self.tail.load(Ordering::Acquire);
        let head = self.head.load(Ordering::Acquire);
        tail.wrapping_sub(head)
    }

    /// Producer only. Gives the job back when the ring is full.
    fn push(&self, job: Job) -> Result<(), Job> {
        let tail = self.tail.load(Ordering::Relaxed);
        let head = self.head.load(Ordering::Acquire);
        if tail.wrapping_sub(head) > self.mask {
            return Err(job);
        }
        // SAFETY: the slot at `tail` is free (the consumer has moved past it) and only this
        // producer writes it until `tail` is published below.
        unsafe { (*self.slots[tail & self.mask].get()).write(job) };
        self.tail.store(tail.wrapping_add(1), Ordering::Release);
        self.sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Consumer only.
    fn pop(&self) -> Option<Job> {
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Acquire);
        if head == tail {
            return None;
        }
        // SAFETY: the producer published this slot (Acquire on `tail`); only this consumer reads
        // it, once, before releasing it by advancing `head`.
        let job = unsafe { (*self.slots[head & self.mask].get()).assume_init_read() };
        self.head.store(head.wrapping_add(1), Ordering::Release);
        Some(job)
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        while self.pop().is_some() {}
    }
}

/// One shard's receiving side: its incoming rings share one waker.
struct Inbox {
    waker: AtomicWaker,
    parked: AtomicBool,
}

/// The mesh connecting all shards. Create it once; each shard takes its endpoint.
pub struct Mesh {
    shards: usize,
    /// `rings[from * shards + to]`; the diagonal is unused (a shard calls itself inline).
    rings: Vec<Option<Ring>>,
    inboxes: Vec<CachePadded<Inbox>>,
    closed: AtomicBool,
}

impl Mesh {
    /// A mesh for `shards` shards with rings of `ring_capacity` jobs (rounded up to a power of 2).
    pub fn new(shards: usize, ring_capacity: usize) -> Arc<Mesh> {
        let shards = shards.max(1);
        let rings = (0..shards * shards)
            .map(|i| (i / shards != i % shards).then(|| Ring::new(ring_capacity)))
            .collect();
        let inboxes = (0..shards)
            .map(|_| {
                CachePadded::new(Inbox {
                    waker: AtomicWaker::new(),
                    parked: AtomicBool::new(false),
                })
            })
            .collect();
        Arc::new(Mesh {
            shards,
            rings,
            inboxes,
            closed: AtomicBool::new(false),
        })
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// The endpoint of shard `id`; call it on that shard's thread. The endpoint is `!Send`.
    pub fn endpoint(self: &Arc<Self>, id: ShardId) -> MeshEndpoint {
        MeshEndpoint {
            inner: Rc::new(EndpointInner {
                mesh: Arc::clone(self),
                id,
                awaiting: std::cell::Cell::new(0),
            }),
        }
    }

    /// Jobs waiting in each ring: (from, to, depth).
    pub fn queue_depths(&self) -> Vec<(ShardId, ShardId, usize)> {
        self.rings
            .iter()
            .enumerate()
            .filter_map(|(i, ring)| {
                let ring = ring.as_ref()?;
                Some((
                    ShardId(i / self.shards),
                    ShardId(i % self.shards),
                    ring.len(),
                ))
            })
            .collect()
    }

    /// Totals over all rings.
    pub fn stats(&self) -> MeshStats {
        self.rings
            .iter()
            .flatten()
            .fold(MeshStats::default(), |acc, ring| MeshStats {
                sent: acc.sent + ring.sent.load(Ordering::Relaxed),
                full_waits: acc.full_waits + ring.full_waits.load(Ordering::Relaxed),
            })
    }

    /// Closes the mesh: receivers finish their loop, jobs not yet run are dropped (their callers
    /// get [`MeshError::Closed`]), and later sends fail.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for inbox in &self.inboxes {
            inbox.waker.wake();
        }
    }

    /// Whether [`Mesh::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn ring(&self, from: usize, to: usize) -> &Ring {
        self.rings[from * self.shards + to]
            .as_ref()
            .expect("no ring from a shard to itself")
    }
}

struct EndpointInner {
    mesh: Arc<Mesh>,
    id: ShardId,
    /// Replies this shard is waiting for: while any is due, the receiver spins instead of
    /// parking, so the reply is picked up from the ring without a cross-thread wake-up.
    awaiting: std::cell::Cell<usize>,
}

thread_local! {
    /// The endpoint of the shard running on this thread (set by its receiver loop), through
    /// which jobs send their replies back.
    static LOCAL: std::cell::RefCell<Option<MeshEndpoint>> = const { std::cell::RefCell::new(None) };
}

/// Sends `reply` to run on `origin`, through the ring from this shard when there is room;
/// otherwise runs it here (the oneshot inside still reaches the origin, with a cross-thread
/// wake-up instead of a ring hop).
fn reply_to(origin: ShardId, reply: Job) {
    let pushed = LOCAL.with(|local| match local.borrow().as_ref() {
        Some(endpoint) if endpoint.inner.id != origin => endpoint.try_push(origin, reply),
        _ => Err(reply),
    });
    if let Err(reply) = pushed {
        reply();
    }
}

/// One shard's handle on the mesh. Cheap to clone; `!Send` (it belongs to its shard).
#[derive(Clone)]
pub struct MeshEndpoint {
    inner: Rc<EndpointInner>,
}

impl MeshEndpoint {
    /// This shard's id.
    pub fn id(&self) -> ShardId {
        self.inner.id
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.inner.mesh.shards
    }

    /// Enqueues `job` on `target` if its ring has room (no waiting).
    fn try_push(&self, target: ShardId, job: Job) -> Result<(), Job> {
        let mesh = &self.inner.mesh;
        if target.index() >= mesh.shards || mesh.is_closed() {
            return Err(job);
        }
        mesh.ring(self.inner.id.index(), target.index()).push(job)?;
        self.wake_if_parked(target);
        Ok(())
    }

    fn wake_if_parked(&self, target: ShardId) {
        let inbox = &self.inner.mesh.inboxes[target.index()];
        // Pairs with the receiver's SeqCst store of `parked` before its final check of the rings.
        if inbox.parked.load(Ordering::SeqCst) {
            inbox.parked.store(false, Ordering::SeqCst);
            inbox.waker.wake();
        }
    }

    /// Enqueues `job` on `target`, waiting while its ring is full.
    async fn push(&self, target: ShardId, job: Job) -> Result<(), MeshError> {
        let mesh = &self.inner.mesh;
        if target.index() >= mesh.shards {
            return Err(MeshError::NoSuchShard(target));
        }
        let ring = mesh.ring(self.inner.id.index(), target.index());
        let mut job = job;
        let mut waited = 0u32;
        loop {
            if mesh.is_closed() {
                return Err(MeshError::Closed);
            }
            match ring.push(job) {
                Ok(()) => break,
                Err(back) => {
                    job = back;
                    if waited == 0 {
                        ring.full_waits.fetch_add(1, Ordering::Relaxed);
                    }
                    waited += 1;
                    // The receiver is behind: make sure it is awake, then let it catch up,
                    // yielding to this shard's other tasks; sleep if it stays behind.
                    mesh.inboxes[target.index()].waker.wake();
                    if waited.is_multiple_of(256) {
                        monoio::time::sleep(Duration::from_millis(1)).await;
                    } else {
                        yield_now().await;
                    }
                }
            }
        }
        self.wake_if_parked(target);
        Ok(())
    }

    /// Runs `f` on shard `target` and returns its result; inline when `target` is this shard.
    pub async fn submit_to<F, R>(&self, target: ShardId, f: F) -> Result<R, MeshError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        if target == self.inner.id {
            return std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|_| MeshError::Panicked);
        }
        let (tx, rx) = oneshot::channel();
        let origin = self.inner.id;
        self.push(
            target,
            Box::new(move || {
                let result = std::panic::catch_unwind(AssertUnwindSafe(f));
                reply_to(
                    origin,
                    Box::new(move || {
                        let _ = tx.send(result);
                    }),
                );
            }),
        )
        .await?;
        let result = self.awaiting_reply(rx).await;
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(MeshError::Panicked),
            Err(_) => Err(MeshError::Closed),
        }
    }

    /// Awaits a reply, counted so the receiver keeps spinning for it.
    async fn awaiting_reply<T>(
        &self,
        rx: oneshot::Receiver<T>,
    ) -> Result<T, oneshot::error::RecvError> {
        let awaiting = &self.inner.awaiting;
        awaiting.set(awaiting.get() + 1);
        let result = rx.await;
        awaiting.set(awaiting.get() - 1);
        result
    }

    /// Like [`MeshEndpoint::submit_to`], but `f` builds a future that runs as a task on `target`
    /// (it may hold `!Send` shard-local state).
    pub async fn submit_to_async<F, Fut, R>(&self, target: ShardId, f: F) -> Result<R, MeshError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
        R: Send + 'static,
    {
        use futures_util::FutureExt;
        let (tx, rx) = oneshot::channel();
        let job = move || {
            crate::runtime::spawn("mesh-submitted-task", async move {
                let result = AssertUnwindSafe(async move { f().await })
                    .catch_unwind()
                    .await;
                let _ = tx.send(result);
            });
        };
        if target == self.inner.id {
            job();
        } else {
            self.push(target, Box::new(job)).await?;
        }
        match rx.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(MeshError::Panicked),
            Err(_) => Err(MeshError::Closed),
        }
    }

    /// Enqueues `f` on `target` without waiting for it to run (still backpressured).
    pub async fn send_to<F>(&self, target: ShardId, f: F) -> Result<(), MeshError>
    where
        F: FnOnce() + Send + 'static,
    {
        if target == self.inner.id {
            f();
            return Ok(());
        }
        self.push(
            target,
            Box::new(move || {
                if std::panic::catch_unwind(AssertUnwindSafe(f)).is_err() {
                    tracing::error!("a fire-and-forget mesh job panicked");
                }
            }),
        )
        .await
    }

    /// Runs `f` on every shard, this one included; results in shard order. The jobs are all
    /// enqueued before any result is awaited, so the shards work in parallel.
    pub async fn broadcast<F, R>(&self, f: F) -> Vec<Result<R, MeshError>>
    where
        F: Fn() -> R + Send + Sync + 'static,
        R: Send + 'static,
    {
        let f = Arc::new(f);
        let mut pending = Vec::with_capacity(self.shards());
        for shard in 0..self.shards() {
            if shard == self.inner.id.index() {
                pending.push(None);
                continue;
            }
            let (tx, rx) = oneshot::channel();
            let f = Arc::clone(&f);
            let origin = self.inner.id;
            let job: Job = Box::new(move || {
                let result = std::panic::catch_unwind(AssertUnwindSafe(|| f()));
                reply_to(
                    origin,
                    Box::new(move || {
                        let _ = tx.send(result);
                    }),
                );
            });
            pending.push(Some(self.push(ShardId(shard), job).await.map(|()| rx)));
        }
        let mut results = Vec::with_capacity(pending.len());
        for slot in pending {
            results.push(match slot {
                None => std::panic::catch_unwind(AssertUnwindSafe(|| f()))
                    .map_err(|_| MeshError::Panicked),
                Some(Err(e)) => Err(e),
                Some(Ok(rx)) => match self.awaiting_reply(rx).await {
                    Ok(Ok(value)) => Ok(value),
                    Ok(Err(_)) => Err(MeshError::Panicked),
                    Err(_) => Err(MeshError::Closed),
                },
            });
        }
        results
    }

    /// Drains `count` jobs at most from each incoming ring; returns how many ran.
    fn drain(&self) -> usize {
        let mesh = &self.inner.mesh;
        let me = self.inner.id.index();
        let mut ran = 0;
        for from in (0..mesh.shards).filter(|&from| from != me) {
            let ring = mesh.ring(from, me);
            for _ in 0..BATCH {
                match ring.pop() {
                    Some(job) => {
                        job();
                        ran += 1;
                    }
                    None => break,
                }
            }
        }
        ran
    }

    fn any_waiting(&self) -> bool {
        let mesh = &self.inner.mesh;
        let me = self.inner.id.index();
        (0..mesh.shards)
            .filter(|&from| from != me)
            .any(|from| mesh.ring(from, me).len() > 0)
    }

    /// The receiver loop of this shard: runs incoming jobs until the mesh closes.
    pub async fn run_receiver(self) {
        let mesh = Arc::clone(&self.inner.mesh);
        let inbox = &mesh.inboxes[self.inner.id.index()];
        let mut idle_since: Option<Instant> = None;
        LOCAL.with(|local| *local.borrow_mut() = Some(self.clone()));
        loop {
            if mesh.is_closed() {
                // Jobs still queued are dropped with the rings; their callers see Closed.
                LOCAL.with(|local| local.borrow_mut().take());
                return;
            }
            if self.drain() > 0 {
                idle_since = None;
                yield_now().await;
                continue;
            }
            let since = *idle_since.get_or_insert_with(Instant::now);
            let spin = if self.inner.awaiting.get() > 0 {
                SPIN_AWAITING
            } else {
                SPIN
            };
            if since.elapsed() < spin {
                yield_now().await;
                continue;
            }
            Park {
                endpoint: &self,
                inbox,
            }
            .await;
            idle_since = None;
        }
    }
}

/// Parks the receiver until a sender (or `close`) wakes it.
struct Park<'a> {
    endpoint: &'a MeshEndpoint,
    inbox: &'a Inbox,
}

impl Future for Park<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.inbox.waker.register(cx.waker());
        self.inbox.parked.store(true, Ordering::SeqCst);
        // A job pushed before `parked` became visible is seen here; one pushed after will see
        // `parked` and wake us.
        if self.endpoint.any_waiting() || self.endpoint.inner.mesh.is_closed() {
            self.inbox.parked.store(false, Ordering::SeqCst);
            return Poll::Ready(());
        }
        // Woken by a sender (which cleared `parked`) or by `close`.
        if self.inbox.parked.load(Ordering::SeqCst) {
            return Poll::Pending;
        }
        Poll::Ready(())
    }
}

/// Lets every other ready task of this shard run, then continues.
///
/// monoio has no `yield_now`, and a task that wakes itself while being polled is put back at
/// the *front* of the run queue, so a self-waking spin loop would starve the shard's other
/// tasks. Here the yielding task hands its waker to a per-shard helper task and wakes that
/// instead; the helper, polled in turn at the back of the queue, wakes the yielders, which go to
/// the back too. Every spin iteration therefore lets all other ready tasks run first.
pub async fn yield_now() {
    YieldNow { registered: false }.await
}

/// Lets every other ready task of this shard run *and* makes the runtime poll its driver
/// (I/O completions and readiness, expired timers, wake-ups sent from other threads) before
/// continuing, without waiting when nothing is ready.
///
/// For long CPU work that yields between slices. [`yield_now`] alone is not enough there:
/// monoio 0.2 polls its driver fully only when the run queue is empty and it parks, and a task
/// that keeps yielding keeps the queue non-empty, so sockets, timers and cross-thread answers
/// wait until the work ends. A plain short `sleep` does force a park but costs up to one timer
/// tick (1 ms) of idleness each time. This sleeps until a deadline one tick in the past: if the
/// driver has not parked since that tick, the timer is already due, so the runtime parks with a
/// zero timeout (a non-blocking poll of everything) and wakes the task at once; if it parked
/// more recently, the timer fires immediately and this falls back to [`yield_now`].
pub async fn yield_to_driver() {
    let now = monoio::time::Instant::now();
    let past = now.checked_sub(Duration::from_millis(1)).unwrap_or(now);
    let mut sleep = std::pin::pin!(monoio::time::sleep_until(past));
    let mut first = true;
    let ready_at_once = std::future::poll_fn(|cx| {
        let ready = sleep.as_mut().poll(cx).is_ready();
        let at_once = std::mem::replace(&mut first, false);
        if ready {
            Poll::Ready(at_once)
        } else {
            Poll::Pending
        }
    })
    .await;
    if ready_at_once {
        yield_now().await;
    }
}

#[derive(Default)]
struct Yielders {
    waiting: std::cell::RefCell<Vec<std::task::Waker>>,
    helper: std::cell::RefCell<Option<std::task::Waker>>,
    helper_spawned: std::cell::Cell<bool>,
}

thread_local! {
    static YIELDERS: Yielders = Yielders::default();
}

struct YieldNow {
    registered: bool,
}

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.registered {
            return Poll::Ready(());
        }
        self.registered = true;
        YIELDERS.with(|y| {
            y.waiting.borrow_mut().push(cx.waker().clone());
            if let Some(helper) = y.helper.borrow_mut().take() {
                helper.wake();
            } else if !y.helper_spawned.replace(true) {
                crate::runtime::spawn("yield-helper", YieldHelper);
            }
        });
        Poll::Pending
    }
}

/// The per-shard task that wakes yielders from outside their own poll.
struct YieldHelper;

impl Drop for YieldHelper {
    fn drop(&mut self) {
        // The runtime that ran the helper is going away: the next one on this thread spawns its
        // own. (`try_with`: during thread exit the thread-local may already be gone.)
        let _ = YIELDERS.try_with(|y| {
            y.helper_spawned.set(false);
            y.helper.borrow_mut().take();
        });
    }
}

impl Future for YieldHelper {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        YIELDERS.with(|y| {
            let waiting = std::mem::take(&mut *y.waiting.borrow_mut());
            *y.helper.borrow_mut() = Some(cx.waker().clone());
            for waker in waiting {
                waker.wake();
            }
        });
        Poll::Pending
    }
}
