//! WebSocket load: many subscribed connections held open, events published by the generator
//! itself in open loop, and optional application pings.
//!
//! A run, as the coordinator ([`run_ws_with`]) drives it:
//! 1. **connecting** — connection `i` starts no earlier than `i / connect_rate` after the start
//!    (a deterministic token bucket of depth one), from source address `i mod sources`, and is
//!    timed from that scheduled start to its `subscribed` reply (`connect`);
//! 2. once every connection is subscribed or failed, an unmeasured **warm-up**, then the
//!    **hold** of `duration`: publishers post event `k` at `k / publish_rate` into the hold,
//!    its intended send time in `data.t`; each receiving connection records now − t
//!    (`deliver`); each connection sends its share of `ping_rate` (`ping`);
//! 3. **draining** until every event owed has arrived and every ping is answered (or
//!    `drain` has passed), then the connections held are counted, the generator's RSS is
//!    read, and every connection is closed with 1000. A run whose connections have all been
//!    closed by the server (or refused) stops as soon as the hold would begin or it happens.
//!
//! Callers that measure around a run (a benchmark sampling the server's memory and CPU when
//! the hold starts and ends) use [`run_ws_observed`]: its [`WsEvent`]s say when each stage
//! begins, and a [`WsControl`] reads the connections held and ends a hold early.
//!
//! Layout: [`WsOptions`] (flags and scenario keys, defaults), [`proto`] (sans-IO protocol), `session` (one connection's socket shell), `worker`
//! (one pinned thread), [`report`] (what was measured), [`WsClient`] (one connection outside
//! a run, on the same shell).

mod client;
mod options;
pub mod proto;
pub mod report;
pub(crate) mod session;
mod worker;

pub use client::{WsClient, WsClientError};
pub use options::{WsOptions, DEFAULT_CHANNEL};
pub use report::{Op, Tally, WsReport, WsSeriesPoint};
pub use worker::Tick;

use anyhow::{bail, Context};
use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One WebSocket load run.
#[derive(Debug, Clone)]
pub struct WsLoad {
    /// The server.
    pub addr: SocketAddr,
    /// `Host` of the upgrade request.
    pub host: String,
    /// Path of the upgrade request, e.g. `/ws`.
    pub path: String,
    /// Connections in total.
    pub connections: usize,
    /// New connections per second at most.
    pub connect_rate: f64,
    /// Limit on connect + upgrade + subscribe.
    pub connect_timeout: Duration,
    /// Unmeasured time between the last connection opening and the hold.
    pub warmup: Duration,
    /// The measured hold.
    pub duration: Duration,
    /// Longest wait after the hold for events and pongs still on their way.
    pub drain: Duration,
    /// Connection `i` subscribes to `channels[i mod len]`; event `k` goes to `channels[k mod len]`.
    pub channels: Vec<String>,
    /// Bearer token of the upgrade; `{i}` is replaced by the connection number.
    pub token: Option<String>,
    /// The generator's own publishing, if any.
    pub publish: Option<Publish>,
    /// Application pings per second over all connections.
    pub ping_rate: Option<f64>,
    /// CPUs to run on, one thread each.
    pub cpus: Vec<usize>,
    /// Source addresses, used round robin (empty: the kernel chooses).
    pub sources: Vec<Ipv4Addr>,
    /// Length of the intervals of the time series and the progress line.
    pub interval: Duration,
    /// Bytes taken from a socket per read: the size of each thread's one read buffer
    /// ([`DEFAULT_READ_BUFFER`]); a connection keeps only a frame that has not fully arrived.
    pub read_buffer: usize,
}

/// The read buffer of each load thread, unless a run asks for another.
pub const DEFAULT_READ_BUFFER: usize = 64 * 1024;

/// Where and how fast the generator publishes.
#[derive(Debug, Clone)]
pub struct Publish {
    /// The server of `POST /api/publish`.
    pub addr: SocketAddr,
    /// `Host` header.
    pub host: String,
    /// Path, e.g. `/api/publish`.
    pub path: String,
    /// Bearer token (admin).
    pub token: Option<String>,
    /// Events per second.
    pub rate: f64,
    /// HTTP/1.1 keep-alive connections publishing, one request in flight on each.
    pub connections: usize,
    /// Pad each event's `data` object to this many bytes (`None`: only `t` and `k`).
    pub data_size: Option<usize>,
}

/// Splits `scheme://host:port/path` into (address, authority, path).
pub fn resolve_url(url: &str, scheme: &str) -> anyhow::Result<(SocketAddr, String, String)> {
    let rest = url
        .strip_prefix(scheme)
        .and_then(|r| r.strip_prefix("://"))
        .with_context(|| format!("{url}: expected a {scheme}:// URL"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .context("no address")?;
    Ok((addr, authority.to_string(), path.to_string()))
}

/// Parses source addresses: `127.0.0.1-127.0.0.50`, `127.0.0.7`, or a comma list of both.
pub fn parse_sources(text: &str) -> anyhow::Result<Vec<Ipv4Addr>> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (from, to) = part.split_once('-').unwrap_or((part, part));
        let from: Ipv4Addr = from
            .trim()
            .parse()
            .with_context(|| format!("`{part}`: not an IPv4 address or range"))?;
        let to: Ipv4Addr = to
            .trim()
            .parse()
            .with_context(|| format!("`{part}`: not an IPv4 address or range"))?;
        let (a, b) = (u32::from(from), u32::from(to));
        if a > b || b - a >= 1 << 16 {
            bail!("`{part}`: the range must go upwards and hold at most 65,536 addresses");
        }
        out.extend((a..=b).map(Ipv4Addr::from));
    }
    if out.is_empty() {
        bail!("no source addresses in `{text}`");
    }
    Ok(out)
}

/// The channel names: `base` alone, or `base-0 .. base-{count-1}`.
pub fn channel_names(base: &str, count: Option<usize>) -> Vec<String> {
    match count {
        None => vec![base.to_string()],
        Some(k) => (0..k).map(|i| format!("{base}-{i}")).collect(),
    }
}

/// Why the connections asked for do not fit under RLIMIT_NOFILE; the message names the limit,
/// the connections asked for and what would fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FdBudgetError {
    /// Over the limit of the process's one descriptor table.
    #[error(
        "{connections} connections were asked for, but RLIMIT_NOFILE allows {limit} open files \
         per process ({in_use} in use, {other} more for the generator itself), so at most {fit} \
         connections fit; raise the limit (ulimit -n, LimitNOFILE=) or split the run over \
         several processes"
    )]
    OneTable {
        /// Connections asked for.
        connections: usize,
        /// Descriptors the generator needs besides its connections.
        other: usize,
        /// RLIMIT_NOFILE.
        limit: u64,
        /// Descriptors already open.
        in_use: u64,
        /// Connections that would fit.
        fit: u64,
    },
    /// Over the limit even with a descriptor table per generator thread.
    #[error(
        "{connections} connections were asked for, but RLIMIT_NOFILE allows {limit} open files \
         per descriptor table ({in_use} in use), and {threads} generator threads with a table \
         each hold about {fit} connections; give at least {threads_needed} threads (a CPU may \
         repeat in --cpus, e.g. --cpus 1,1,1,1,1,1), raise the limit (ulimit -n, LimitNOFILE=) \
         or split the run over several processes"
    )]
    PerThreadTables {
        /// Connections asked for.
        connections: usize,
        /// RLIMIT_NOFILE.
        limit: u64,
        /// Descriptors already open (in every table: each starts as a copy).
        in_use: u64,
        /// Generator threads asked for.
        threads: usize,
        /// Connections that would fit over those threads.
        fit: u64,
        /// Threads that would make the run fit.
        threads_needed: u64,
    },
}

/// Checks that `wanted` more descriptors fit under `limit` with `in_use` already open; the
/// error names the limit and the connections asked for.
pub fn check_fd_budget(
    connections: usize,
    other: usize,
    limit: u64,
    in_use: u64,
) -> Result<(), FdBudgetError> {
    let needed = connections as u64 + other as u64;
    if in_use + needed <= limit {
        return Ok(());
    }
    Err(FdBudgetError::OneTable {
        connections,
        other,
        limit,
        in_use,
        fit: limit.saturating_sub(in_use + other as u64),
    })
}

/// Whether the run fits one descriptor table (`Ok(false)`), fits only with a table per
/// generator thread (`Ok(true)`: each thread holds its share of the connections under the
/// limit), or does not fit at all (the error says how many threads would make it fit).
pub fn plan_fd_tables(
    connections: usize,
    threads: usize,
    other: usize,
    limit: u64,
    in_use: u64,
) -> Result<bool, FdBudgetError> {
    let shared = check_fd_budget(connections, other, limit, in_use);
    if shared.is_ok() || threads < 2 {
        return shared.map(|()| false);
    }
    // Every private table starts as a copy of the process's, so `in_use` counts in each.
    let share = connections.div_ceil(threads);
    let per_thread = other.div_ceil(threads) + 8;
    if check_fd_budget(share, per_thread, limit, in_use).is_ok() {
        return Ok(true);
    }
    let fits = limit.saturating_sub(in_use + per_thread as u64).max(1);
    Err(FdBudgetError::PerThreadTables {
        connections,
        limit,
        in_use,
        threads,
        fit: fits * threads as u64,
        threads_needed: (connections as u64).div_ceil(fits),
    })
}

/// RLIMIT_NOFILE (soft, hard).
pub fn fd_limits() -> (u64, u64) {
    // SAFETY: getrlimit on an initialised struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return (1024, 1024);
        }
        (lim.rlim_cur, lim.rlim_max)
    }
}

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(16, |d| d.count() as u64)
}

/// This process's resident memory, bytes.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    pages * page
}

fn local_port_range() -> u64 {
    let text =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut parts = text
        .split_whitespace()
        .filter_map(|p| p.parse::<u64>().ok());
    match (parts.next(), parts.next()) {
        (Some(lo), Some(hi)) if hi >= lo => hi - lo + 1,
        _ => 28_232,
    }
}

impl WsLoad {
    /// Checks the numbers, the descriptors and the source ports this run needs.
    pub fn check(&self) -> anyhow::Result<()> {
        let positive = |x: f64| x > 0.0 && x.is_finite();
        if self.connections == 0 {
            bail!("--connections must be at least 1");
        }
        if !positive(self.connect_rate) {
            bail!("--connect-rate must be positive");
        }
        if self.ping_rate.is_some_and(|r| !positive(r)) {
            bail!("--send-rate must be positive");
        }
        if let Some(p) = &self.publish {
            if !positive(p.rate) || p.connections == 0 {
                bail!("--publish-rate and --publish-connections must be positive");
            }
        }
        if self.channels.is_empty() {
            bail!("--channels must be at least 1");
        }
        if self.cpus.is_empty() {
            bail!("name at least one CPU in --cpus");
        }
        if self.interval.is_zero() || self.duration.is_zero() {
            bail!("--interval and --duration must be positive");
        }
        let ports = local_port_range() * self.sources.len().max(1) as u64;
        if self.connections as u64 > ports {
            bail!(
                "{} connections to one address and port need more source ports than {} source \
                 address(es) offer ({} each, net.ipv4.ip_local_port_range); spread them with \
                 --sources, e.g. 127.0.0.1-127.0.0.{}",
                self.connections,
                self.sources.len().max(1),
                local_port_range(),
                (self.connections as u64)
                    .div_ceil(local_port_range())
                    .min(254)
            );
        }
        Ok(())
    }

    /// Descriptors the generator needs besides the connections: per thread an io_uring, an
    /// epoll and an eventfd or two; the publishers; some slack for stdio and output files.
    fn fd_overhead(&self) -> usize {
        self.cpus.len() * 8 + self.publish.as_ref().map_or(0, |p| p.connections) + 32
    }
}

/// Runs the load and returns the report.
pub fn run_ws(load: &WsLoad) -> anyhow::Result<WsReport> {
    run_ws_with(load, |_, _, _| {})
}

enum Coordinator {
    Connecting {
        deadline: Instant,
    },
    Holding {
        start: Instant,
        end: Instant,
        announced: bool,
    },
    Draining {
        until: Instant,
    },
    Stopped,
}

/// Like [`run_ws`], calling `on_interval(index, held, tally)` with the merged figures of every
/// interval (from the start of the run) once every thread has reported it.
pub fn run_ws_with(
    load: &WsLoad,
    mut on_interval: impl FnMut(u64, i64, &Tally),
) -> anyhow::Result<WsReport> {
    run_ws_observed(load, &WsControl::default(), |event| {
        if let WsEvent::Interval { index, held, tally } = event {
            on_interval(index, held, tally);
        }
    })
}

/// What [`run_ws_observed`] reports while a run goes, on the calling thread.
#[derive(Debug)]
pub enum WsEvent<'a> {
    /// Interval `index` (from the start of the run) ended on every thread: its merged figures,
    /// and the connections subscribed then.
    Interval {
        /// The interval's number.
        index: u64,
        /// Connections subscribed at its end.
        held: i64,
        /// What every thread counted in it.
        tally: &'a Tally,
    },
    /// Every connection has been subscribed or has failed (or the connect deadline passed).
    /// Nothing is published or pinged yet, and the warm-up starts only when `observe`
    /// returns: a caller may take its time here to measure the idle connections.
    Connected {
        /// Connections subscribed.
        held: i64,
    },
    /// The warm-up is over and the hold begins: publishing and pinging start now.
    HoldStarted {
        /// When the hold began (the publishers' and pings' schedules count from here).
        at: Instant,
        /// Connections subscribed.
        held: i64,
    },
    /// The hold's `duration` has passed: nothing more is published or pinged; what is on its
    /// way is awaited.
    HoldEnded {
        /// When it ended.
        at: Instant,
        /// Connections subscribed.
        held: i64,
    },
    /// The run ends (drained, everything closed by the server, or [`WsControl::stop`]): the
    /// connections close now.
    Stopping {
        /// When the run ended.
        at: Instant,
        /// Connections subscribed.
        held: i64,
    },
}

/// A run seen and steered from outside its coordinator: how many connections it holds, and a
/// way to end it (for a hold meant to last until the caller has measured what it wanted).
#[derive(Default)]
pub struct WsControl {
    stop: std::sync::atomic::AtomicBool,
    progress: std::sync::OnceLock<Arc<worker::Progress>>,
}

impl WsControl {
    /// Ends the run within a few milliseconds, whatever its stage: every connection closes,
    /// and what is still on its way is not awaited.
    pub fn stop(&self) {
        self.stop.store(true, Relaxed);
    }

    /// Connections subscribed now (0 before the run starts).
    pub fn held(&self) -> i64 {
        self.progress.get().map_or(0, |p| p.held())
    }

    /// Connections subscribed or failed so far.
    pub fn settled(&self) -> usize {
        self.progress.get().map_or(0, |p| p.settled.load(Relaxed))
    }

    /// Connections that have been subscribed so far.
    pub fn subscribed(&self) -> usize {
        self.progress
            .get()
            .map_or(0, |p| p.subscribed.load(Relaxed))
    }

    fn stopped(&self) -> bool {
        self.stop.load(Relaxed)
    }
}

/// Like [`run_ws`], reporting each interval and each change of stage to `observe` as it
/// happens, and following `control`. `observe` runs on this thread, which coordinates the run:
/// the load threads go on while it runs, but stage changes wait for it (see
/// [`WsEvent::Connected`]), so keep it short elsewhere.
pub fn run_ws_observed(
    load: &WsLoad,
    control: &WsControl,
    mut observe: impl FnMut(WsEvent<'_>),
) -> anyhow::Result<WsReport> {
    load.check()?;
    crate::run::raise_fd_limit();
    let (limit, _) = fd_limits();
    let private_tables = plan_fd_tables(
        load.connections,
        load.cpus.len(),
        load.fd_overhead(),
        limit,
        open_fds(),
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    if private_tables {
        eprintln!(
            "{} connections exceed one descriptor table (RLIMIT_NOFILE {limit}): each of the {} \
             generator threads uses its own",
            load.connections,
            load.cpus.len()
        );
    }
    // With private tables every thread's runtime (its wake-up eventfd) must exist before any
    // thread leaves the shared table, so that its number means the same file in every table.
    let built = Arc::new(std::sync::Barrier::new(load.cpus.len()));
    let rss_start = rss_bytes();
    let threads = load.cpus.len();
    let publishers = load.publish.as_ref().map_or(0, |p| p.connections);
    let progress = Arc::new(worker::Progress::new(load.channels.len()));
    // A control serves one run; a second run leaves it reading the first one's figures.
    let _ = control.progress.set(Arc::clone(&progress));
    let clock = worker::Clock::new();
    let (sender, receiver) = std::sync::mpsc::channel::<Tick>();
    // Everyone starts together, a little after the threads are up.
    let start = Instant::now() + Duration::from_millis(200);
    let mut handles = Vec::new();
    for (t, &cpu) in load.cpus.iter().enumerate() {
        let conns: Vec<usize> = (t..load.connections).step_by(threads).collect();
        let mine: Vec<usize> = (t..publishers).step_by(threads).collect();
        let (load, progress, tx) = (load.clone(), Arc::clone(&progress), sender.clone());
        let built = Arc::clone(&built);
        handles.push(
            std::thread::Builder::new()
                .name(format!("ws-loadgen-{t}"))
                .spawn(move || {
                    let pinned = monoio::utils::bind_to_cpu_set(Some(cpu))
                        .map_err(|e| anyhow::anyhow!("pinning to CPU {cpu}: {e}"));
                    let rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                        .enable_timer()
                        .build();
                    if private_tables {
                        // Every thread reaches the barrier, failed or not.
                        built.wait();
                    }
                    pinned?;
                    let mut rt = rt?;
                    // SAFETY: unshare(2) with CLONE_FILES only affects this thread's table.
                    if private_tables && unsafe { libc::unshare(libc::CLONE_FILES) } != 0 {
                        let e = std::io::Error::last_os_error();
                        anyhow::bail!("unshare(CLONE_FILES) for a private descriptor table: {e}");
                    }
                    let work =
                        worker::worker(Rc::new(load), start, clock, progress, conns, mine, tx);
                    Ok::<_, anyhow::Error>(rt.block_on(work))
                })?,
        );
    }
    drop(sender);

    let ramp = Duration::from_secs_f64((load.connections - 1) as f64 / load.connect_rate);
    let mut state = Coordinator::Connecting {
        deadline: start + ramp + load.connect_timeout + Duration::from_secs(1),
    };
    let (mut held_at_end, mut rss_end, mut expected) = (0i64, rss_start, 0u64);
    let mut pending: std::collections::BTreeMap<u64, (usize, Tally)> = Default::default();
    loop {
        match receiver.recv_timeout(Duration::from_millis(5)) {
            Ok(tick) => {
                let entry = pending.entry(tick.index).or_default();
                entry.0 += 1;
                entry.1.add(&tick.tally);
                if entry.0 == threads {
                    if let Some((_, tally)) = pending.remove(&tick.index) {
                        observe(WsEvent::Interval {
                            index: tick.index,
                            held: progress.held(),
                            tally: &tally,
                        });
                    }
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let now = Instant::now();
        let p = &progress;
        state = match state {
            Coordinator::Stopped => Coordinator::Stopped,
            _ if control.stopped() => {
                held_at_end = p.held();
                expected = p.expected_deliveries();
                rss_end = rss_bytes();
                observe(WsEvent::Stopping {
                    at: now,
                    held: held_at_end,
                });
                p.stop.store(true, Relaxed);
                Coordinator::Stopped
            }
            Coordinator::Connecting { deadline }
                if p.settled.load(Relaxed) >= load.connections || now >= deadline =>
            {
                observe(WsEvent::Connected { held: p.held() });
                // From when the observer returns: it may have measured the connections.
                let hold_start = Instant::now() + load.warmup;
                let offset = hold_start.saturating_duration_since(start).as_nanos() as u64;
                p.hold_start_ns.store(offset + 1, Relaxed);
                Coordinator::Holding {
                    start: hold_start,
                    end: hold_start + load.duration,
                    announced: false,
                }
            }
            Coordinator::Holding {
                start,
                end,
                announced: false,
            } if now >= start && p.held() > 0 => {
                observe(WsEvent::HoldStarted {
                    at: start,
                    held: p.held(),
                });
                Coordinator::Holding {
                    start,
                    end,
                    announced: true,
                }
            }
            Coordinator::Holding { end, .. } if now >= end => {
                observe(WsEvent::HoldEnded {
                    at: end,
                    held: p.held(),
                });
                Coordinator::Draining {
                    until: now + load.drain,
                }
            }
            // The server closed (or refused) every connection: nothing is left to measure.
            Coordinator::Holding { .. } if p.held() <= 0 => {
                expected = p.expected_deliveries();
                rss_end = rss_bytes();
                observe(WsEvent::Stopping { at: now, held: 0 });
                p.stop.store(true, Relaxed);
                Coordinator::Stopped
            }
            Coordinator::Draining { until }
                if now >= until
                    || (p.publishers_done.load(Relaxed) >= publishers
                        && p.pings_outstanding.load(Relaxed) <= 0
                        && p.delivered.load(Relaxed) >= p.expected_deliveries()) =>
            {
                held_at_end = p.held();
                expected = p.expected_deliveries();
                rss_end = rss_bytes();
                observe(WsEvent::Stopping {
                    at: now,
                    held: held_at_end,
                });
                p.stop.store(true, Relaxed);
                Coordinator::Stopped
            }
            other => other,
        };
    }
    // Intervals some thread did not finish (a thread that stopped early or failed).
    for (index, (_, tally)) in std::mem::take(&mut pending) {
        observe(WsEvent::Interval {
            index,
            held: held_at_end,
            tally: &tally,
        });
    }
    let mut tally = Tally::default();
    for h in handles {
        let part = h
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
        tally.add(&part);
    }
    tally.counters(Op::Deliver).sent = expected;
    let last = Duration::from_nanos(progress.last_subscribed_ns.load(Relaxed));
    Ok(WsReport {
        tally,
        requested: load.connections,
        subscribed: progress.subscribed.load(Relaxed),
        held_at_end,
        ramp: last,
        hold: load.duration,
        rss_start,
        rss_end,
        fd_limit: limit,
        threads,
        published: progress.published.iter().map(|p| p.load(Relaxed)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_channels_and_urls_parse() {
        let s = parse_sources("127.0.0.1-127.0.0.3, 127.0.1.9").unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s[2], Ipv4Addr::new(127, 0, 0, 3));
        assert_eq!(s[3], Ipv4Addr::new(127, 0, 1, 9));
        assert!(parse_sources("127.0.0.9-127.0.0.1").is_err());
        assert!(parse_sources("localhost").is_err());
        assert_eq!(channel_names("c", None), ["c"]);
        assert_eq!(channel_names("c", Some(2)), ["c-0", "c-1"]);
        let (addr, host, path) = resolve_url("ws://127.0.0.1:8000/ws", "ws").unwrap();
        assert_eq!(
            (addr.port(), host.as_str(), path.as_str()),
            (8000, "127.0.0.1:8000", "/ws")
        );
        assert!(resolve_url("http://127.0.0.1:8000/ws", "ws").is_err());
    }

    #[test]
    fn the_fd_budget_names_the_limit_and_the_ask() {
        assert_eq!(plan_fd_tables(900, 1, 40, 1024, 10), Ok(false));
        assert_eq!(plan_fd_tables(100_000, 6, 40, 20_000, 20), Ok(true));
        let err = plan_fd_tables(100_000, 4, 40, 20_000, 20)
            .unwrap_err()
            .to_string();
        assert!(err.contains("give at least 6 threads"), "{err}");
        assert!(plan_fd_tables(30_000, 1, 40, 20_000, 10).is_err());
        assert!(check_fd_budget(900, 40, 1024, 10).is_ok());
        let err = check_fd_budget(30_000, 40, 20_000, 10)
            .unwrap_err()
            .to_string();
        assert!(err.contains("30000 connections"), "{err}");
        assert!(err.contains("RLIMIT_NOFILE allows 20000"), "{err}");
        assert!(err.contains("at most 19950"), "{err}");
    }
}
