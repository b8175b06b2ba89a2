//! `external`: a third-party API, seen from the system as one service with a latency, a bound
//! on the calls it takes at once, and an error rate. Its stations behave as plain services.
//! Besides the price per instance-hour every component may have, it may be priced per
//! million calls (`cost_per_million_requests`), as third-party APIs bill.

use super::{Entry, RATIO};
use crate::design::{Checker, Kind, Station};

/// Parses an `external`.
pub(super) fn parse(c: &mut Checker, entry: &Entry<'_>) -> Option<Kind> {
    let Entry { item, path, .. } = *entry;
    c.unknown_fields(
        item,
        path,
        &super::fields(&[
            "latency",
            "max_concurrency",
            "error_rate",
            "queue_capacity",
            crate::design::COST_REQUEST_FIELD,
        ]),
    );
    let latency = super::dist_field(c, item, path, "latency", None);
    let concurrency = c.integer(item, path, "max_concurrency", 10_000, 1) as u32;
    let error_rate = c.number(item, path, "error_rate", Some(0.0), RATIO);
    let cap = super::queue_capacity(c, item, path, "queue_capacity");
    latency.map(|d| {
        let mut s = Station::plain(1, concurrency, d, cap);
        s.error_rate = error_rate;
        Kind::Station(s)
    })
}
