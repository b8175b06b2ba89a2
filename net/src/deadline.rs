//! The deadline of the request being served, readable by anything the handler calls (the
//! mesh client gives it to every outbound call), without threading it through every
//! signature.
//!
//! monoio has no task-locals, so [`Within`] sets a thread-local around each poll of the
//! handler's future and restores the previous value after it: whatever runs inside that poll
//! (and only that) sees the deadline. Tasks the handler spawns do not inherit it.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

thread_local! {
    static CURRENT: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The deadline of the request whose handler is running now, if it has one.
pub fn current() -> Option<Instant> {
    CURRENT.with(Cell::get)
}

/// `future`, run with `deadline` as the [`current`] deadline (the sooner of it and an
/// enclosing one).
pub fn within<F: Future>(deadline: Option<Instant>, future: F) -> Within<F> {
    Within {
        deadline,
        inner: future,
    }
}

/// A future that runs with a deadline; see [`within`].
pub struct Within<F> {
    deadline: Option<Instant>,
    inner: F,
}

impl<F: Future> Future for Within<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let deadline = self.deadline;
        // SAFETY: `inner` is structurally pinned: it is never moved out of `Within`, and
        // `Within` implements neither `Drop` nor `Unpin` by hand.
        let inner = unsafe { self.map_unchecked_mut(|w| &mut w.inner) };
        let outer = current();
        let effective = match (deadline, outer) {
            (Some(d), Some(o)) => Some(d.min(o)),
            (d, o) => d.or(o),
        };
        CURRENT.with(|c| c.set(effective));
        let result = inner.poll(cx);
        CURRENT.with(|c| c.set(outer));
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_deadline_is_seen_inside_only_and_the_sooner_one_wins() {
        let soon = Instant::now() + Duration::from_secs(1);
        let later = soon + Duration::from_secs(5);
        let seen = futures_util::FutureExt::now_or_never(within(Some(later), async move {
            let outer = current();
            let inner = within(Some(soon), async { current() }).await;
            let wider = within(Some(later + Duration::from_secs(5)), async { current() }).await;
            (outer, inner, wider)
        }));
        assert_eq!(seen, Some((Some(later), Some(soon), Some(later))));
        assert_eq!(current(), None);
    }
}
