//! What a station does under load: the discipline picks which waiting request a freed worker
//! takes (FIFO, LIFO, or FIFO with CoDel shedding); requests that waited past the station's
//! `timeout_ms` are abandoned on the way, as before. (Contention, which stretches service
//! times with the requests in service, applies where service times are drawn.)

use super::Simulation;
use crate::design::{Discipline, Kind};

/// Why a waiting request left without service.
pub(super) enum Shed {
    /// It waited longer than the station's `timeout_ms`.
    TimedOut,
    /// CoDel dropped it: it waited longer than the current limit.
    Dropped,
}

impl Simulation {
    /// The waiting request a freed worker of `instance` takes next; those passed over on the
    /// way are pushed onto `shed` (the caller handles them once the worker is settled).
    pub(super) fn next_waiting(
        &mut self,
        component: usize,
        instance: usize,
        shed: &mut Vec<(usize, Shed)>,
    ) -> Option<usize> {
        let Kind::Station(s) = &self.design.components[component].kind else {
            return None;
        };
        let st = self.stations[component].as_mut()?;
        let inst = &mut st.instances[instance];
        if st.fifo_fast {
            // The common case, kept as lean as before disciplines existed.
            let n = inst.waiting.pop_front()?;
            st.waiting -= 1;
            return Some(n);
        }
        if inst.busy > st.concurrency {
            // A what-if cut the workers: this one retires instead.
            return None;
        }
        let (timeout, discipline) = (s.timeout, s.discipline);
        loop {
            let n = match discipline {
                Discipline::Lifo => inst.waiting.pop_back(),
                Discipline::Fifo | Discipline::Codel { .. } => inst.waiting.pop_front(),
            }?;
            st.waiting -= 1;
            let waited = self.now - self.slab[n].entered;
            if timeout.is_some_and(|t| waited > t) {
                shed.push((n, Shed::TimedOut));
                continue;
            }
            if let Discipline::Codel { target, interval } = discipline {
                // The queue has stood (not been empty) since `nonempty_since`.
                let standing = self.now - inst.nonempty_since;
                let limit = if standing > interval {
                    target
                } else {
                    interval
                };
                if waited > limit {
                    shed.push((n, Shed::Dropped));
                    continue;
                }
            }
            return Some(n);
        }
    }
}
