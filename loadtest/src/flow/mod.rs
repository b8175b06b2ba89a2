//! Flows: chained, mixed-protocol scenarios. Virtual users arrive in open loop following the
//! phases (rate = users per second) and each runs the flow's steps in order — HTTP requests on
//! its own keep-alive connection, a WebSocket connection held while the later steps run, gRPC
//! calls on its own HTTP/2 connection, pauses — passing values captured from responses to later
//! steps as `{{name}}`, then closes its connections and ends.
//!
//! A run, as each pinned thread ([`worker`]) drives it:
//! 1. **arriving** — user k arrives at its intended time from the deterministic schedule
//!    ([`arrivals::Arrivals`]); users go round robin to the threads (k mod threads). Its first
//!    step is measured from that intended time, so a user the generator starts late is charged
//!    for the wait (and counted `late`), never dropped;
//! 2. **running** — each user is a task; later steps are measured from when they are issued.
//!    A failed step (status, capture, timeout, ...) ends the user and is counted by step and
//!    kind;
//! 3. **draining** — after the phases, users still running get `[flow] drain`; those left are
//!    stopped and counted `unfinished`. The run ends as soon as every user has ended.
//!
//! Every `interval` each thread sends its [`report::FlowTally`]; [`run_flow_with`] merges the
//! HDR histograms across threads per interval and in total.
//!
//! Layout: [`spec`] (the `[flow]` keys and their checks), [`template`] (`{{name}}` and
//! captures, sans IO), [`arrivals`] (the schedule, sans IO), `user` (one user's steps),
//! `ws` (a user's WebSocket connection), [`report`] (what was measured).

pub mod arrivals;
pub mod report;
pub mod spec;
pub mod template;
mod user;
mod ws;

pub use report::{FlowReport, FlowSeriesPoint, FlowTally, StepOutcome, Users};
pub use spec::{Flow, FlowSpec};

use crate::run::Phase;
use crate::ws::proto::Rng;
use anyhow::bail;
use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

/// One flow run.
#[derive(Debug, Clone)]
pub struct FlowLoad {
    /// The steps.
    pub flow: Flow,
    /// Open-loop phases; the rate is in users per second.
    pub phases: Vec<Phase>,
    /// CPUs to run on, one thread each.
    pub cpus: Vec<usize>,
    /// Length of the intervals of the time series and the progress line.
    pub interval: Duration,
    /// `{{run}}`: drawn once per run so that re-runs against one server do not collide.
    pub run_id: String,
    /// Where every measured step's [`StepOutcome`] goes, if anywhere (off by default: a
    /// message per step costs the generator time a plain run does not need to spend).
    pub outcomes: Option<std::sync::mpsc::Sender<StepOutcome>>,
    /// Once set, no more users arrive (the phases still give the schedule until then); users
    /// already running finish and the run ends. For a caller that decides the run's length as
    /// it goes, with a phase longer than it will need.
    pub stop_arrivals: Option<Arc<AtomicBool>>,
}

impl FlowLoad {
    /// A run of `flow` with a fresh run id.
    pub fn new(flow: Flow, phases: Vec<Phase>, cpus: Vec<usize>, interval: Duration) -> FlowLoad {
        FlowLoad {
            flow,
            phases,
            cpus,
            interval,
            run_id: run_id(),
            outcomes: None,
            stop_arrivals: None,
        }
    }

    /// The phases' total length.
    pub fn duration(&self) -> Duration {
        self.phases.iter().map(|p| p.duration).sum()
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.phases.is_empty() {
            bail!("a flow needs at least one phase");
        }
        if self.cpus.is_empty() {
            bail!("name at least one CPU");
        }
        if self.interval.is_zero() {
            bail!("the interval must be positive");
        }
        Ok(())
    }
}

/// Eight hex digits from the clock and the process id.
fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let mut rng = Rng::new(nanos ^ (u64::from(std::process::id()) << 32));
    format!("{:08x}", rng.next_u64() as u32)
}

/// A wake-up for one waiting task: `notify` bumps a generation, `changed` completes once the
/// generation is no longer the one seen (a single waker slot, replaced on every poll).
pub(crate) struct Signal {
    generation: Cell<u64>,
    waker: RefCell<Option<Waker>>,
}

impl Signal {
    pub(crate) fn new() -> Signal {
        Signal {
            generation: Cell::new(0),
            waker: RefCell::new(None),
        }
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.get()
    }

    pub(crate) fn notify(&self) {
        self.generation.set(self.generation.get() + 1);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    pub(crate) async fn changed(&self, seen: u64) {
        poll_fn(|cx| {
            if self.generation.get() != seen {
                return Poll::Ready(());
            }
            *self.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// Figures every thread updates and reads.
struct Shared {
    /// Users running, every thread.
    live: AtomicU64,
    /// Threads still starting users.
    arriving: AtomicUsize,
}

/// What one thread's tasks share.
pub(crate) struct Ctx {
    pub(crate) load: Arc<FlowLoad>,
    pub(crate) tally: RefCell<FlowTally>,
    /// The thread's one read buffer for WebSocket connections.
    pub(crate) scratch: RefCell<Box<[u8]>>,
    /// Handshake keys and masks.
    pub(crate) rng: RefCell<Rng>,
    /// Users running on this thread.
    live: Cell<u64>,
    /// Each running user's stop signal.
    stops: RefCell<Vec<Weak<Signal>>>,
    shared: Arc<Shared>,
}

impl Ctx {
    /// Registers a user's stop signal.
    fn watch(&self, stop: &Rc<Signal>) {
        let mut stops = self.stops.borrow_mut();
        if stops.len() >= 64 && stops.len() as u64 > 2 * self.live.get() {
            stops.retain(|s| s.strong_count() > 0);
        }
        stops.push(Rc::downgrade(stop));
    }

    /// A user has ended.
    fn user_ended(&self) {
        self.live.set(self.live.get() - 1);
        self.shared.live.fetch_sub(1, Relaxed);
    }
}

/// One interval of one thread, sent to the coordinator.
pub struct FlowTick {
    /// Interval number, from 0 at the first intended arrival.
    pub index: u64,
    /// Users running on the thread at the end of the interval.
    pub active: u64,
    /// What the interval counted.
    pub tally: FlowTally,
}

/// Runs the flow and returns the report.
pub fn run_flow(load: &FlowLoad) -> anyhow::Result<FlowReport> {
    run_flow_with(load, |_, _, _| {})
}

/// Like [`run_flow`], calling `on_interval(index, active users, tally)` with the merged figures
/// of every interval once every thread has reported it.
pub fn run_flow_with(
    load: &FlowLoad,
    mut on_interval: impl FnMut(u64, u64, &FlowTally),
) -> anyhow::Result<FlowReport> {
    load.check()?;
    crate::run::raise_fd_limit();
    let threads = load.cpus.len();
    let shared = Arc::new(Shared {
        live: AtomicU64::new(0),
        arriving: AtomicUsize::new(threads),
    });
    let (sender, receiver) = std::sync::mpsc::channel::<FlowTick>();
    // Everyone starts together, a little after the threads are up.
    let start = Instant::now() + Duration::from_millis(200);
    let load = Arc::new(load.clone());
    let mut handles = Vec::new();
    for (t, &cpu) in load.cpus.iter().enumerate() {
        let (load, shared, tx) = (Arc::clone(&load), Arc::clone(&shared), sender.clone());
        handles.push(
            std::thread::Builder::new()
                .name(format!("flow-loadgen-{t}"))
                .spawn(move || {
                    monoio::utils::bind_to_cpu_set(Some(cpu))
                        .map_err(|e| anyhow::anyhow!("pinning to CPU {cpu}: {e}"))?;
                    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                        .enable_timer()
                        .build()?;
                    Ok::<_, anyhow::Error>(rt.block_on(worker(load, t, start, shared, tx)))
                })?,
        );
    }
    drop(sender);
    let empty = FlowTally::new(
        load.flow.types.len(),
        load.flow.steps.len(),
        load.phases.len(),
    );
    let mut pending: std::collections::BTreeMap<u64, (usize, u64, FlowTally)> = Default::default();
    for tick in receiver {
        let entry = pending
            .entry(tick.index)
            .or_insert_with(|| (0, 0, empty.empty_like()));
        entry.0 += 1;
        entry.1 += tick.active;
        entry.2.add(&tick.tally);
        if entry.0 == threads {
            if let Some((_, active, tally)) = pending.remove(&tick.index) {
                on_interval(tick.index, active, &tally);
            }
        }
    }
    // Intervals not every thread reported (threads end within a few ms of each other).
    for (index, (_, active, tally)) in pending {
        on_interval(index, active, &tally);
    }
    let mut tally = empty;
    let mut end = start;
    for h in handles {
        let (part, ended) = h
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
        tally.add(&part);
        end = end.max(ended);
    }
    Ok(FlowReport {
        tally,
        types: load.flow.types.clone(),
        steps: load.flow.steps.iter().map(|s| s.name.clone()).collect(),
        duration: end.saturating_duration_since(start),
        threads,
    })
}

async fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        monoio::time::sleep(t - now).await;
    }
}

/// One pinned thread: its share of the users, a tick per interval, the drain, the stop.
/// Returns what it counted and when it ended.
async fn worker(
    load: Arc<FlowLoad>,
    thread: usize,
    start: Instant,
    shared: Arc<Shared>,
    ticks: std::sync::mpsc::Sender<FlowTick>,
) -> (FlowTally, Instant) {
    let tally = FlowTally::new(
        load.flow.types.len(),
        load.flow.steps.len(),
        load.phases.len(),
    );
    let ctx = Rc::new(Ctx {
        load: Arc::clone(&load),
        tally: RefCell::new(tally),
        scratch: RefCell::new(vec![0u8; 64 * 1024].into_boxed_slice()),
        rng: RefCell::new(Rng::new(thread as u64 ^ start.elapsed().as_nanos() as u64)),
        live: Cell::new(0),
        stops: RefCell::new(Vec::new()),
        shared: Arc::clone(&shared),
    });
    monoio::spawn(arrive(Rc::clone(&ctx), thread, start));
    let deadline = start + load.duration() + load.flow.drain;
    let everyone_done = || shared.arriving.load(Relaxed) == 0 && shared.live.load(Relaxed) == 0;
    let mut totals = ctx.tally.borrow().empty_like();
    let mut index = 0u64;
    let ended = loop {
        let tick_at = start + load.interval * (index as u32 + 1);
        // Until the interval ends, or the run does (polled: a few wake-ups a second).
        let over = loop {
            let now = Instant::now();
            if now >= deadline || everyone_done() {
                break true;
            }
            if now >= tick_at {
                break false;
            }
            monoio::time::sleep((tick_at - now).min(Duration::from_millis(5))).await;
        };
        let ended = Instant::now();
        if over {
            stop_users(&ctx).await;
        }
        let done = std::mem::replace(&mut *ctx.tally.borrow_mut(), totals.empty_like());
        totals.add(&done);
        let _ = ticks.send(FlowTick {
            index,
            active: ctx.live.get(),
            tally: done,
        });
        index += 1;
        if over {
            break ended;
        }
    };
    (totals, ended)
}

/// Stops the users still running (each counts itself unfinished) and waits for them to unwind.
async fn stop_users(ctx: &Ctx) {
    for stop in ctx.stops.borrow_mut().drain(..) {
        if let Some(stop) = stop.upgrade() {
            stop.notify();
        }
    }
    let until = Instant::now() + Duration::from_secs(2);
    while ctx.live.get() > 0 && Instant::now() < until {
        monoio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Starts this thread's users at their intended times.
async fn arrive(ctx: Rc<Ctx>, thread: usize, start: Instant) {
    let load = Arc::clone(&ctx.load);
    let threads = load.cpus.len();
    let deadline = start + load.duration() + load.flow.drain;
    let schedule = arrivals::Arrivals::new(&load.phases);
    let mut pacer = crate::pace::Pacer::new();
    for (user, t, phase) in schedule.filter(|a| a.0 % threads as u64 == thread as u64) {
        let intended = start + Duration::from_secs_f64(t);
        pacer.until(intended).await;
        let now = Instant::now();
        let stopped = load.stop_arrivals.as_ref().is_some_and(|s| s.load(Relaxed));
        if now >= deadline || stopped {
            break;
        }
        // Late: past the next arrival of this thread (and past the timer's resolution).
        let gap = crate::run::rate_at(&load.phases, t).map_or(Duration::ZERO, |r| {
            Duration::from_secs_f64(threads as f64 / r)
        });
        let late = now - intended > gap.max(Duration::from_millis(2));
        {
            let mut tally = ctx.tally.borrow_mut();
            tally.users.started += 1;
            tally.users.late += u64::from(late);
            tally.started_by_phase[phase] += 1;
            // `flow` (a whole user): sent and late as the users; completed by those that end.
            let flow = load.flow.flow_type();
            tally.counters[flow].sent += 1;
            tally.counters[flow].late += u64::from(late);
        }
        ctx.live.set(ctx.live.get() + 1);
        ctx.shared.live.fetch_add(1, Relaxed);
        monoio::spawn(user::run(Rc::clone(&ctx), user, intended, late));
    }
    ctx.shared.arriving.fetch_sub(1, Relaxed);
}
