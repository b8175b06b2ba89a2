//! `database`: a primary and `replicas`, each with a pool of connections; reads go to any
//! instance, writes only to the primary.

use super::{Entry, Operation, StationKind, Ctx, RATIO};
use crate::design::{parse_overload, Behavior, Checker, Kind, Station};
use crate::engine::dist::Dist;

/// What a database station does.
#[derive(Debug, Clone, PartialEq)]
pub struct Database {
    /// Time of a read.
    pub read: Dist,
    /// Time of a write.
    pub write: Dist,
    /// Probability an operation is a write.
    pub write_ratio: f64,
}

impl StationKind for Database {
    const REPORT_NAME: &'static str = "database";
    type State = ();

    #[inline]
    fn operation(&self, ctx: &mut Ctx<'_>) -> Operation {
        if ctx.routing.uniform() < self.write_ratio {
            Operation::SpecialOnPrimary
        } else {
            Operation::Plain
        }
    }

    #[inline]
    fn service_time<'a>(&'a self, _station: &'a Station, write: bool) -> &'a Dist {
        if write {
            &self.write
        } else {
            &self.read
        }
    }

    #[inline]
    fn mean_service(&self, _station: &Station) -> f64 {
        self.write_ratio * self.write.mean() + (1.0 - self.write_ratio) * self.read.mean()
    }
}

/// Parses a `database`.
pub(super) fn parse(c: &mut Checker, entry: &Entry<'_>) -> Option<Kind> {
    let Entry { item, path, .. } = *entry;
    c.unknown_fields(
        item,
        path,
        &super::fields(&[
            "replicas",
            "pool_size",
            "read_time",
            "write_time",
            "write_ratio",
            "queue_capacity",
            "contention",
            "discipline",
            "codel",
        ]),
    );
    let (contention, discipline) = parse_overload(c, item, path);
    let replicas = c.integer(item, path, "replicas", 0, 0) as u32;
    let pool = c.integer(item, path, "pool_size", 10, 1) as u32;
    let read = super::dist_field(c, item, path, "read_time", None);
    let write = super::dist_field(c, item, path, "write_time", None);
    let write_ratio = c.number(item, path, "write_ratio", Some(0.0), RATIO);
    let cap = super::queue_capacity(c, item, path, "queue_capacity");
    let (read, write) = (read?, write?);
    let mut s = Station::plain(1 + replicas, pool, read.clone(), cap);
    s.contention = contention;
    s.discipline = discipline;
    s.behavior = Behavior::Database(Database {
        read,
        write,
        write_ratio,
    });
    Some(Kind::Station(s))
}
