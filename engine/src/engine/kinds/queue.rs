//! `queue`: asynchronous hand-off. The producer's request completes on enqueue; `consumers`
//! process each message in the background and follow the queue's routes.

use super::{Arrival, Ctx, Entry, StationKind};
use crate::design::{edges, Behavior, Checker, Kind, Station};

/// What a queue station does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queue;

impl StationKind for Queue {
    const REPORT_NAME: &'static str = "queue";
    type State = ();

    #[inline]
    fn arrive(&self, ctx: &mut Ctx<'_>, _state: &mut ()) -> Arrival {
        if ctx.request.background {
            Arrival::Serve
        } else {
            Arrival::Detach
        }
    }
}

/// Parses a `queue`.
pub(super) fn parse(c: &mut Checker, entry: &Entry<'_>) -> Option<Kind> {
    let Entry { item, path, .. } = *entry;
    c.unknown_fields(
        item,
        path,
        &super::fields(&["consumers", "consumer_time", "capacity", "routes"]),
    );
    let consumers = c.integer(item, path, "consumers", 1, 1) as u32;
    let work = super::dist_field(c, item, path, "consumer_time", None);
    let cap = super::queue_capacity(c, item, path, "capacity");
    let (routes, total) = edges(c, item, path, "routes", entry.target, entry.classes);
    if total > 1.0 + 1e-9 {
        c.problem(
            &format!("{path}.routes"),
            format!("probabilities add up to {total}, more than 1"),
        );
    }
    work.map(|d| {
        let mut s = Station::plain(1, consumers, d, cap);
        s.behavior = Behavior::Queue(Queue);
        s.routes = routes;
        Kind::Station(s)
    })
}
