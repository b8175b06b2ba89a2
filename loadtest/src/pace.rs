//! Open-loop send times to the microsecond.
//!
//! monoio's timer wheel ticks once a millisecond and parks the thread with a timeout in whole
//! milliseconds, so a send due at `t` woke anywhere up to ~1 ms after `t`: every open-loop
//! latency (measured from the intended time) carried that delay, a ~1 ms floor under the p50
//! whatever the server did. A [`Pacer`] waits for a due time with a timerfd instead: the kernel
//! arms a high-resolution timer for the exact time, and the timerfd becomes readable when it
//! fires. The timerfd is registered with the runtime's driver like a socket (epoll or io_uring,
//! whichever the thread runs), so other tasks run while one waits and the wake-up costs one
//! readiness event, as a socket's does. The last few microseconds, too short to be worth a
//! timer, are waited by yielding to the thread's other tasks and reading the clock again.
//!
//! [`decide`] is the decision — given the time now and the due time: send, yield, or arm the
//! timer for how long — kept free of I/O so tests can drive it with made-up times; [`Pacer`] is
//! the thin shell that carries it out.

use monoio::net::UnixStream;
use std::future::Future;
use std::os::fd::FromRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Below this much time left, a wait yields and reads the clock again rather than arming the
/// timer: a timer's wake-up (a readiness event, a task poll) takes a few microseconds itself.
pub const SPIN_BELOW: Duration = Duration::from_micros(20);

/// What to do for a send due at some time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// It is due: send now.
    Send,
    /// Due within [`SPIN_BELOW`]: let the thread's other tasks run, then look again.
    Yield,
    /// Arm the timer to fire this much later, then look again.
    Arm(Duration),
}

/// What a sender due at `due` does at `now`. Never [`Wait::Send`] before `due`: a send that
/// left early would be measured from its intended time and look faster than it was.
pub fn decide(now: Instant, due: Instant) -> Wait {
    match due.checked_duration_since(now) {
        None => Wait::Send,
        Some(left) if left.is_zero() => Wait::Send,
        Some(left) if left < SPIN_BELOW => Wait::Yield,
        Some(left) => Wait::Arm(left),
    }
}

/// Waits for due times to the microsecond; one per task that schedules sends.
pub struct Pacer {
    /// The timerfd, registered with the driver; `None` where one could not be made (the wait
    /// then falls back to monoio's millisecond timer).
    timer: Option<UnixStream>,
}

impl Pacer {
    /// A pacer with its own timerfd. Call on the runtime thread that will wait with it.
    pub fn new() -> Pacer {
        Pacer {
            timer: timerfd().ok(),
        }
    }

    /// Whether waits are precise (a timerfd) rather than on monoio's 1 ms timer.
    pub fn is_precise(&self) -> bool {
        self.timer.is_some()
    }

    /// Returns at `due` or just after, never before.
    pub async fn until(&mut self, due: Instant) {
        loop {
            match decide(Instant::now(), due) {
                Wait::Send => return,
                Wait::Yield => YieldOnce(false).await,
                Wait::Arm(left) => match &self.timer {
                    Some(timer) => {
                        if arm(timer, left).is_err() || timer.readable(false).await.is_err() {
                            self.timer = None;
                            continue;
                        }
                        drain(timer);
                    }
                    None => monoio::time::sleep(left).await,
                },
            }
        }
    }
}

impl Default for Pacer {
    fn default() -> Pacer {
        Pacer::new()
    }
}

/// A non-blocking CLOCK_MONOTONIC timerfd (the clock `Instant` reads), handed to the driver as
/// if it were a stream socket: monoio registers any descriptor it is given, and the only
/// operation used on it is waiting for readiness; the expiry count is read with `read(2)`.
fn timerfd() -> std::io::Result<UnixStream> {
    // SAFETY: plain syscall; the descriptor is owned by the stream below from here on.
    let fd = unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let owned = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
    UnixStream::from_std(owned)
}

/// Arms `timer` to expire once, `after` from now.
fn arm(timer: &UnixStream, after: Duration) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: after.as_secs() as libc::time_t,
            // A zero it_value disarms the timer; `decide` never arms for zero.
            tv_nsec: after.subsec_nanos().max(1) as libc::c_long,
        },
    };
    // SAFETY: valid descriptor and spec; the old value is not asked for.
    let rc = unsafe { libc::timerfd_settime(timer.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Reads the expiry count, so the timerfd stops being readable until it fires again.
fn drain(timer: &UnixStream) {
    use std::os::fd::AsRawFd;
    let mut expirations = 0u64;
    // SAFETY: reads 8 bytes into a u64 on the stack; EAGAIN (nothing to read) is fine.
    unsafe {
        libc::read(
            timer.as_raw_fd(),
            (&mut expirations as *mut u64).cast(),
            std::mem::size_of::<u64>(),
        );
    }
}

/// Pending once (after asking to be polled again), then ready: lets the thread's other tasks
/// and its I/O run between two looks at the clock.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_send_goes_at_its_due_time_never_before() {
        let t0 = Instant::now();
        let us = Duration::from_micros;
        let due = t0 + us(1_000);
        // Long before: the timer is armed for exactly the time left, not rounded to 1 ms.
        assert_eq!(decide(t0, due), Wait::Arm(us(1_000)));
        assert_eq!(decide(t0 + us(650), due), Wait::Arm(us(350)));
        assert_eq!(decide(t0 + us(980), due), Wait::Arm(us(20)));
        // The last microseconds: yield and look again.
        assert_eq!(decide(t0 + us(981), due), Wait::Yield);
        assert_eq!(decide(t0 + us(999), due), Wait::Yield);
        // Due, and late.
        assert_eq!(decide(due, due), Wait::Send);
        assert_eq!(decide(due + us(1), due), Wait::Send);
        assert_eq!(decide(due + us(5_000), due), Wait::Send);
    }

    #[test]
    fn of_a_staggered_schedule_only_the_sends_whose_time_came_are_due() {
        // 50 connections at 2,000/s: each sends every 25 ms, offset 0.5 ms from the next.
        let t0 = Instant::now();
        let schedule: Vec<Instant> = (0..50)
            .map(|i| t0 + Duration::from_micros(500 * i))
            .collect();
        let due_at = |now: Instant| {
            schedule
                .iter()
                .filter(|&&d| decide(now, d) == Wait::Send)
                .count()
        };
        assert_eq!(due_at(t0), 1);
        assert_eq!(due_at(t0 + Duration::from_micros(499)), 1);
        assert_eq!(due_at(t0 + Duration::from_micros(500)), 2);
        assert_eq!(due_at(t0 + Duration::from_micros(2_250)), 5);
        // A connection 10 µs from its time yields instead of arming a timer.
        let waits: Vec<Wait> = schedule
            .iter()
            .map(|&d| decide(t0 + Duration::from_micros(990), d))
            .take(3)
            .collect();
        assert_eq!(
            waits,
            [Wait::Send, Wait::Send, Wait::Yield],
            "due at 0, 500 and 1,000 µs, looked at 990 µs"
        );
    }

    #[test]
    fn the_pacer_never_returns_before_the_due_time() {
        // Checks only the order of events (never early), not how late: no timed assertion.
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut pacer = Pacer::new();
            assert!(pacer.is_precise(), "timerfd unavailable");
            for step_us in [0u64, 5, 30, 300, 1_500] {
                let due = Instant::now() + Duration::from_micros(step_us);
                pacer.until(due).await;
                assert!(
                    Instant::now() >= due,
                    "returned before a {step_us} µs due time"
                );
            }
        });
    }
}
