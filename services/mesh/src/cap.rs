//! The process-wide connection cap (`mesh.max_connections`): one atomic count of open
//! connections shared by every shard and service, with per-service counts of open connections
//! and of pools that are short, so that a service of lower priority gives way to a higher one.

use crate::directory::Service;
use crate::sizing::CapView;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Open connections of the whole process (every shard, every service).
#[derive(Debug, Default)]
pub struct OpenConnections {
    total: AtomicUsize,
    per_service: [AtomicUsize; 4],
    short: [AtomicUsize; 4],
}

impl OpenConnections {
    /// Takes one slot for a connection of `service` unless `max` are open; `false` when full.
    pub fn try_open(&self, service: Service, max: usize) -> bool {
        let taken = self
            .total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if taken {
            self.per_service[service as usize].fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    /// Gives back the slot of a closed (or never opened) connection of `service`.
    pub fn close(&self, service: Service) {
        self.total.fetch_sub(1, Ordering::AcqRel);
        self.per_service[service as usize].fetch_sub(1, Ordering::Relaxed);
    }

    /// A pool of `service` became short (`true`) or stopped being short (`false`).
    pub fn set_short(&self, service: Service, short: bool) {
        let counter = &self.short[service as usize];
        if short {
            counter.fetch_add(1, Ordering::Relaxed);
        } else {
            counter.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Open connections, every service.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    /// Open connections of `service`.
    pub fn of(&self, service: Service) -> usize {
        self.per_service[service as usize].load(Ordering::Relaxed)
    }

    /// The cap as `service` sees it.
    pub fn view(&self, service: Service, max: usize) -> CapView {
        CapView {
            open: self.total(),
            max,
            higher_priority_short: Service::ALL
                .iter()
                .filter(|s| s.priority() < service.priority())
                .any(|s| self.short[*s as usize].load(Ordering::Relaxed) > 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_holds_and_priorities_are_seen() {
        let open = OpenConnections::default();
        assert!(open.try_open(Service::Simulation, 2));
        assert!(open.try_open(Service::Project, 2));
        assert!(!open.try_open(Service::Auth, 2), "the cap holds");
        assert_eq!((open.total(), open.of(Service::Auth)), (2, 0));
        open.set_short(Service::Auth, true);
        assert!(open.view(Service::Simulation, 2).higher_priority_short);
        assert!(!open.view(Service::Auth, 2).higher_priority_short);
        open.close(Service::Simulation);
        assert!(open.try_open(Service::Auth, 2));
        open.set_short(Service::Auth, false);
        assert!(!open.view(Service::Simulation, 2).higher_priority_short);
    }
}
