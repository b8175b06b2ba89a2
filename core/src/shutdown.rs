//! Graceful shutdown as an explicit state machine: accepting → draining → closed.
//!
//! - **Accepting**: listeners accept, connections serve requests.
//! - **Draining** (first SIGTERM/SIGINT, or [`Shutdown::drain`]): listeners close, idle keep-alive
//!   connections close, requests in flight finish and their connections close after the response.
//! - **Closed**: every connection has gone, or `server.shutdown_timeout` passed; shards count the
//!   connections still open as forced closes, drop them and stop. A second signal closes at once.
//!
//! The phase only moves forward; the time each phase was entered is kept so tests (and the log)
//! can show the order. Open connections are counted per shard in cache-padded atomics, touched
//! once when a connection opens and once when it closes, never per request.

use crossbeam_utils::CachePadded;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Where the server is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Phase {
    /// Serving and accepting new connections.
    Accepting = 0,
    /// Not accepting; finishing requests in flight.
    Draining = 1,
    /// Done: remaining connections are dropped and shards stop.
    Closed = 2,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Accepting,
            1 => Phase::Draining,
            _ => Phase::Closed,
        }
    }

    /// Lower-case name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Accepting => "accepting",
            Phase::Draining => "draining",
            Phase::Closed => "closed",
        }
    }
}

/// The process-wide shutdown state, shared by the signal thread, the coordinator and the shards.
#[derive(Debug)]
pub struct Shutdown {
    phase: AtomicU8,
    started: Instant,
    /// Nanoseconds after `started` at which each phase was entered (0 = not yet).
    entered_ns: [AtomicU64; 3],
    open: Vec<CachePadded<AtomicUsize>>,
    forced: AtomicU64,
    tx: watch::Sender<Phase>,
}

impl Shutdown {
    /// A new state machine in `Accepting`, counting connections for `shards` shards.
    pub fn new(shards: usize) -> Arc<Shutdown> {
        let (tx, _rx) = watch::channel(Phase::Accepting);
        let shutdown = Shutdown {
            phase: AtomicU8::new(Phase::Accepting as u8),
            started: Instant::now(),
            entered_ns: [AtomicU64::new(1), AtomicU64::new(0), AtomicU64::new(0)],
            open: (0..shards.max(1))
                .map(|_| CachePadded::new(AtomicUsize::new(0)))
                .collect(),
            forced: AtomicU64::new(0),
            tx,
        };
        Arc::new(shutdown)
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    /// Moves to `to` if that is forward; returns whether the phase changed.
    fn advance(&self, to: Phase) -> bool {
        let mut current = self.phase.load(Ordering::Acquire);
        loop {
            if current >= to as u8 {
                return false;
            }
            match self.phase.compare_exchange(
                current,
                to as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(seen) => current = seen,
            }
        }
        // Phases skipped over (accepting → closed) are recorded as entered at the same instant.
        let now = self.started.elapsed().as_nanos().max(1) as u64;
        for p in (current + 1)..=(to as u8) {
            self.entered_ns[p as usize].store(now, Ordering::Release);
        }
        tracing::info!(
            phase = to.name(),
            open = self.open_connections(),
            "shutdown phase"
        );
        self.tx.send_replace(to);
        true
    }

    /// Starts draining and a coordinator thread that closes when every connection has gone or
    /// `timeout` has passed. Returns false if shutdown had already begun.
    pub fn drain(self: &Arc<Self>, timeout: Duration) -> bool {
        if !self.advance(Phase::Draining) {
            return false;
        }
        let this = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("sdsim-shutdown".into())
            .spawn(move || this.coordinate(timeout));
        if spawned.is_err() {
            // Without a coordinator nobody would ever close: close now rather than hang.
            self.close();
        }
        true
    }

    fn coordinate(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.phase() == Phase::Draining {
            if self.open_connections() == 0 {
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    open = self.open_connections(),
                    "shutdown timeout reached; closing the remaining connections"
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.close();
    }

    /// Moves straight to `Closed` (deadline reached, or a second signal).
    pub fn close(&self) -> bool {
        self.advance(Phase::Closed)
    }

    /// When `phase` was entered, measured from the creation of this state machine.
    pub fn entered_at(&self, phase: Phase) -> Option<Duration> {
        match self.entered_ns[phase as usize].load(Ordering::Acquire) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// The phases entered so far, in the order they were entered.
    pub fn history(&self) -> Vec<Phase> {
        let mut seen: Vec<(Duration, Phase)> = [Phase::Accepting, Phase::Draining, Phase::Closed]
            .into_iter()
            .filter_map(|p| self.entered_at(p).map(|t| (t, p)))
            .collect();
        seen.sort();
        seen.into_iter().map(|(_, p)| p).collect()
    }

    /// A receiver that sees every phase change (shards forward it to their connections).
    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.tx.subscribe()
    }

    /// Waits (asynchronously, on any runtime) until the phase is at least `phase`.
    pub async fn reached(&self, phase: Phase) {
        let mut rx = self.subscribe();
        // An error means the sender is gone, which cannot happen while `self` lives.
        let _ = rx.wait_for(|p| *p >= phase).await;
    }

    /// Counts a connection opened on `shard`; dropping the guard counts it closed.
    pub fn connection_opened(self: &Arc<Self>, shard: usize) -> ConnectionGuard {
        let slot = shard % self.open.len();
        self.open[slot].fetch_add(1, Ordering::AcqRel);
        ConnectionGuard {
            shutdown: Arc::clone(self),
            slot,
        }
    }

    /// Connections open on `shard` now.
    pub fn open_on(&self, shard: usize) -> usize {
        self.open[shard % self.open.len()].load(Ordering::Acquire)
    }

    /// Connections open on all shards now.
    pub fn open_connections(&self) -> usize {
        self.open.iter().map(|c| c.load(Ordering::Acquire)).sum()
    }

    /// Records connections that were still open when the phase became `Closed`.
    pub fn record_forced(&self, count: usize) {
        if count > 0 {
            self.forced.fetch_add(count as u64, Ordering::AcqRel);
            tracing::warn!(count, "connections closed by the shutdown deadline");
        }
    }

    /// Connections closed by the deadline rather than by finishing.
    pub fn forced_closes(&self) -> u64 {
        self.forced.load(Ordering::Acquire)
    }

    /// Installs SIGTERM/SIGINT handling: the first signal drains with `timeout`, a second closes.
    pub fn install_signal_handler(self: &Arc<Self>, timeout: Duration) -> std::io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
        let this = Arc::clone(self);
        std::thread::Builder::new()
            .name("sdsim-signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    let name = if signal == SIGTERM {
                        "SIGTERM"
                    } else {
                        "SIGINT"
                    };
                    if this.phase() == Phase::Accepting {
                        tracing::info!(signal = name, "draining");
                        this.drain(timeout);
                    } else {
                        tracing::warn!(signal = name, "second signal: closing now");
                        this.close();
                    }
                }
            })?;
        Ok(())
    }
}

/// Keeps one connection counted as open; see [`Shutdown::connection_opened`].
#[derive(Debug)]
pub struct ConnectionGuard {
    shutdown: Arc<Shutdown>,
    slot: usize,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.shutdown.open[self.slot].fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_only_move_forward_in_order() {
        let s = Shutdown::new(2);
        assert_eq!(s.phase(), Phase::Accepting);
        assert!(s.drain(Duration::from_secs(5)));
        assert!(
            !s.drain(Duration::from_secs(5)),
            "draining twice is a no-op"
        );
        // No connections are open, so the coordinator closes at once (waited for up to 10 s,
        // which only a hang takes).
        wait_until_closed(&s);
        assert_eq!(
            s.history(),
            vec![Phase::Accepting, Phase::Draining, Phase::Closed]
        );
        assert!(s.entered_at(Phase::Draining) <= s.entered_at(Phase::Closed));
    }

    /// Waits for the coordinator to close `s`; panics after 10 s.
    fn wait_until_closed(s: &Shutdown) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.phase() != Phase::Closed {
            assert!(Instant::now() < deadline, "not closed within 10 s");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn drain_waits_for_open_connections_then_deadline_forces() {
        const DEADLINE: Duration = Duration::from_secs(1);
        let s = Shutdown::new(2);
        let guard = s.connection_opened(1);
        let _stuck = s.connection_opened(0);
        assert_eq!(s.open_connections(), 2);
        s.drain(DEADLINE);
        // Gives a coordinator that wrongly closes with connections open time to do so; the
        // deadline is far enough for the check to come first on a busy machine.
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            s.phase(),
            Phase::Draining,
            "connections are open: still draining"
        );
        drop(guard);
        assert_eq!(s.open_on(1), 0);
        wait_until_closed(&s);
        let drained_for =
            s.entered_at(Phase::Closed).unwrap() - s.entered_at(Phase::Draining).unwrap();
        assert!(
            drained_for >= DEADLINE,
            "the deadline, not the last open connection, closed it: {drained_for:?}"
        );
    }

    #[test]
    fn close_from_accepting_records_both_phases() {
        let s = Shutdown::new(1);
        assert!(s.close());
        assert_eq!(
            s.history(),
            vec![Phase::Accepting, Phase::Draining, Phase::Closed]
        );
        assert!(!s.close());
    }
}
