//! The trace context of the request being served, readable by the calls its handler makes
//! (they send it on as their parent), without threading it through every signature.
//!
//! Like `crate::deadline`: monoio has no task-locals, so [`Traced`] sets a thread-local
//! around each poll of the handler's future and restores the previous value after it.
//! Tasks the handler spawns do not inherit it.

use crate::middleware::trace_context::TraceContext;
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

thread_local! {
    static CURRENT: RefCell<Option<Rc<TraceContext>>> = const { RefCell::new(None) };
}

/// The trace context of the request whose handler is running now, if any.
pub fn current() -> Option<Rc<TraceContext>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// `future`, run with `context` as the [`current`] one (`None` keeps the enclosing one).
pub fn traced<F: Future>(context: Option<TraceContext>, future: F) -> Traced<F> {
    Traced {
        context: context.map(Rc::new),
        inner: future,
    }
}

/// A future that runs in a trace context; see [`traced`].
pub struct Traced<F> {
    context: Option<Rc<TraceContext>>,
    inner: F,
}

impl<F: Future> Future for Traced<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let context = self.context.clone();
        // SAFETY: `inner` is structurally pinned: it is never moved out of `Traced`, and
        // `Traced` implements neither `Drop` nor `Unpin` by hand (as `crate::deadline::Within`).
        let inner = unsafe { self.map_unchecked_mut(|t| &mut t.inner) };
        let Some(context) = context else {
            return inner.poll(cx);
        };
        let outer = CURRENT.with(|c| c.replace(Some(context)));
        let result = inner.poll(cx);
        CURRENT.with(|c| *c.borrow_mut() = outer);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middleware::trace_context::{SpanId, TraceId};

    fn context(span: u8) -> TraceContext {
        TraceContext {
            trace_id: TraceId([1; 16]),
            span_id: SpanId([span; 8]),
            parent_id: None,
            flags: 1,
            state: None,
        }
    }

    #[test]
    fn the_context_is_seen_inside_only_and_the_innermost_wins() {
        let seen = futures_util::FutureExt::now_or_never(traced(Some(context(1)), async {
            let outer = current().map(|c| c.span_id);
            let inner = traced(Some(context(2)), async { current().map(|c| c.span_id) }).await;
            let kept = traced(None, async { current().map(|c| c.span_id) }).await;
            (outer, inner, kept)
        }));
        assert_eq!(
            seen,
            Some((
                Some(SpanId([1; 8])),
                Some(SpanId([2; 8])),
                Some(SpanId([1; 8]))
            ))
        );
        assert!(current().is_none());
    }
}
