//! Pool sizing: whether one shard's pool of connections to one target instance grows, shrinks
//! or stays, as a pure function of its load and of the process-wide cap (so it is tested as a
//! table, without sockets or clocks).

use crate::config::MeshConfig;
use std::time::Duration;

/// What one shard's pool to one instance looks like now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolLoad {
    /// Open connections.
    pub connections: usize,
    /// Whether a connection is being opened (at most one at a time per pool).
    pub opening: bool,
    /// Calls in flight on the pool's connections.
    pub in_flight: usize,
    /// Calls waiting for a connection to open.
    pub queued: usize,
    /// Mean latency of the pool's recent calls (`None`: no call yet).
    pub mean_latency: Option<Duration>,
    /// How long utilisation has stayed below `mesh.scale_down_utilisation` (zero: it is not).
    pub low_for: Duration,
}

/// The process-wide connection cap as one service sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapView {
    /// Connections open (or opening) in the whole process, every service.
    pub open: usize,
    /// `mesh.max_connections`.
    pub max: usize,
    /// Whether a service of higher priority than this one wants connections it cannot get.
    pub higher_priority_short: bool,
}

/// What the pool should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Open one more connection (in the background).
    Grow,
    /// Close one idle connection.
    Shrink,
    /// Nothing.
    Keep,
    /// It would grow, but the process-wide cap (or a service of higher priority) does not let
    /// it: the pool is short.
    Short,
}

/// Utilisation of a pool: in-flight calls over the calls its connections are meant to carry.
/// A pool with no connection and calls waiting is fully used.
pub fn utilisation(load: &PoolLoad, streams_per_connection: usize) -> f64 {
    let capacity = load.connections * streams_per_connection.max(1);
    if capacity == 0 {
        return if load.in_flight + load.queued > 0 {
            f64::INFINITY
        } else {
            0.0
        };
    }
    load.in_flight as f64 / capacity as f64
}

/// The decision for one pool whose per-shard bounds are `(min, max)`.
///
/// In order: below `min` it grows (one connection at a time); a loaded pool (utilisation,
/// queue or latency above the thresholds) grows up to `max`; a pool that stayed quiet for
/// `scale_down_after` shrinks towards `min`. The cap: nothing grows at `max_connections`;
/// from `rebalance_from` of it, only a service no higher-priority service is waiting behind
/// grows, and a quiet pool above `min` gives a connection back when a higher one is short.
pub fn decide(
    config: &MeshConfig,
    bounds: (usize, usize),
    load: &PoolLoad,
    cap: &CapView,
) -> Decision {
    let (min, max) = bounds;
    let size = load.connections + usize::from(load.opening);
    let util = utilisation(load, config.streams_per_connection);
    let loaded = util > config.scale_up_utilisation
        || load.queued > config.scale_up_queue
        || load
            .mean_latency
            .is_some_and(|l| l > config.scale_up_latency);
    let wants_more = size < min || (loaded && size < max);
    let rebalancing = (cap.open as f64) >= config.rebalance_from * cap.max as f64;
    if wants_more {
        if load.opening {
            return Decision::Keep;
        }
        if cap.open >= cap.max || (rebalancing && cap.higher_priority_short) {
            return Decision::Short;
        }
        return Decision::Grow;
    }
    let quiet = util < config.scale_down_utilisation && load.queued == 0;
    if load.connections > min && quiet {
        if load.low_for >= config.scale_down_after {
            return Decision::Shrink;
        }
        if rebalancing && cap.higher_priority_short {
            return Decision::Shrink;
        }
    }
    Decision::Keep
}

#[cfg(test)]
mod tests {
    use super::*;
    use Decision::*;

    const MS: Duration = Duration::from_millis(1);

    fn load(connections: usize, in_flight: usize) -> PoolLoad {
        PoolLoad {
            connections,
            opening: false,
            in_flight,
            queued: 0,
            mean_latency: Some(MS),
            low_for: Duration::ZERO,
        }
    }

    fn cap(open: usize) -> CapView {
        CapView {
            open,
            max: 1000,
            higher_priority_short: false,
        }
    }

    /// Seed 004's thresholds with 100 streams per connection, bounds (3, 10) as one of two
    /// shards holds them.
    #[test]
    fn the_decision_table() {
        let config = MeshConfig::default();
        let five_min = Duration::from_secs(300);
        let rows: Vec<(&str, PoolLoad, CapView, Decision)> = vec![
            ("empty pool opens its first", load(0, 0), cap(0), Grow),
            ("below min grows", load(2, 0), cap(10), Grow),
            (
                "below min, one opening: wait for it",
                PoolLoad {
                    opening: true,
                    ..load(2, 0)
                },
                cap(10),
                Keep,
            ),
            ("at min and quiet: keep", load(3, 10), cap(10), Keep),
            ("79 % keeps", load(3, 237), cap(10), Keep),
            ("81 % grows", load(3, 243), cap(10), Grow),
            (
                "queue of 11 grows",
                PoolLoad {
                    queued: 11,
                    ..load(3, 10)
                },
                cap(10),
                Grow,
            ),
            (
                "queue of 10 keeps",
                PoolLoad {
                    queued: 10,
                    ..load(3, 10)
                },
                cap(10),
                Keep,
            ),
            (
                "51 ms mean latency grows",
                PoolLoad {
                    mean_latency: Some(51 * MS),
                    ..load(3, 10)
                },
                cap(10),
                Grow,
            ),
            ("loaded at max keeps", load(10, 950), cap(10), Keep),
            (
                "loaded but opening one: keep",
                PoolLoad {
                    opening: true,
                    ..load(5, 490)
                },
                cap(10),
                Keep,
            ),
            (
                "quiet above min for 4 min keeps",
                PoolLoad {
                    low_for: 240 * 1000 * MS,
                    ..load(6, 10)
                },
                cap(10),
                Keep,
            ),
            (
                "quiet above min for 5 min shrinks",
                PoolLoad {
                    low_for: five_min,
                    ..load(6, 10)
                },
                cap(10),
                Shrink,
            ),
            (
                "quiet at min for 5 min keeps",
                PoolLoad {
                    low_for: five_min,
                    ..load(3, 0)
                },
                cap(10),
                Keep,
            ),
            ("cap reached: short", load(3, 290), cap(1000), Short),
            ("below min at the cap: short", load(1, 0), cap(1000), Short),
            (
                "rebalancing, nobody higher short: grows",
                load(3, 290),
                cap(950),
                Grow,
            ),
            (
                "rebalancing, a higher service short: short",
                load(3, 290),
                CapView {
                    higher_priority_short: true,
                    ..cap(950)
                },
                Short,
            ),
            (
                "rebalancing, quiet above min, a higher service short: gives one back",
                load(6, 10),
                CapView {
                    higher_priority_short: true,
                    ..cap(950)
                },
                Shrink,
            ),
            (
                "below rebalancing, a higher service short: keeps",
                load(6, 10),
                CapView {
                    higher_priority_short: true,
                    ..cap(800)
                },
                Keep,
            ),
        ];
        for (name, l, c, want) in rows {
            assert_eq!(
                decide(&config, (3, 10), &l, &c),
                want,
                "{name}: {l:?} {c:?}"
            );
        }
    }

    #[test]
    fn utilisation_of_an_empty_pool_with_calls_is_full() {
        let l = PoolLoad {
            queued: 1,
            ..load(0, 0)
        };
        assert!(utilisation(&l, 100).is_infinite());
        assert_eq!(utilisation(&load(0, 0), 100), 0.0);
        assert_eq!(utilisation(&load(2, 50), 100), 0.25);
    }
}
