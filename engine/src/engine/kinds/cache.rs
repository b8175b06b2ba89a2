//! `cache` and `cdn`: a hit is served in `hit_time` and completes; a miss takes `miss_time`
//! and goes on to the origin (`miss_to`). Hits follow a given `hit_ratio`, or, for a cache
//! with a capacity (schema version 2), the keys it holds.

use super::{After, Ctx, Entry, Operation, StationKind, OP_SPECIAL, RATIO};
use crate::design::{self, Behavior, CacheModel, Checker, Kind, Station};
use crate::engine::dist::Dist;
use sonic_rs::JsonValueTrait;

/// What a cache station does.
#[derive(Debug, Clone, PartialEq)]
pub struct Cache {
    /// Probability of a hit: given, or for a cache with a `model` the estimate of
    /// [`CacheModel::estimated_hit_ratio`] (sizing only; the run decides hits by key).
    pub hit_ratio: f64,
    /// Capacity, TTL, eviction and key space, when hits emerge from the traffic.
    pub model: Option<CacheModel>,
    /// Time of a hit.
    pub hit: Dist,
    /// Time of a miss (before it goes downstream).
    pub miss: Dist,
    /// Where misses go (the origin), if anywhere.
    pub miss_to: Option<usize>,
}

impl StationKind for Cache {
    const REPORT_NAME: &'static str = "cache";
    type State = ();

    #[inline]
    fn operation(&self, ctx: &mut Ctx<'_>) -> Operation {
        let hit = if self.model.is_some() {
            // Hits and misses follow the keys held; no draw of the routing stream.
            let now = ctx.now;
            let Some(keys) = ctx.station().and_then(|st| st.cache.as_mut()) else {
                return Operation::Plain;
            };
            let key = keys.draw_key();
            let hit = keys.lookup(key, now);
            ctx.request.key = key;
            hit
        } else {
            ctx.routing.uniform() < self.hit_ratio
        };
        if hit {
            Operation::Special
        } else {
            Operation::Plain
        }
    }

    #[inline]
    fn service_time<'a>(&'a self, _station: &'a Station, hit: bool) -> &'a Dist {
        if hit {
            &self.hit
        } else {
            &self.miss
        }
    }

    #[inline]
    fn after_service(&self, ctx: &mut Ctx<'_>) -> After {
        if ctx.request.op == OP_SPECIAL {
            return After::Complete;
        }
        if self.model.is_some() {
            // Cache-aside: the origin's answer fills the entry; without an origin the miss
            // time includes fetching it, so the entry is filled now.
            match self.miss_to {
                Some(_) => ctx.request.fill = ctx.component as u32,
                None => {
                    let (key, now) = (ctx.request.key, ctx.now);
                    if let Some(keys) = ctx.station().and_then(|st| st.cache.as_mut()) {
                        keys.fill(key, now);
                    }
                }
            }
        }
        self.miss_to.map_or(After::Complete, After::To)
    }

    #[inline]
    fn mean_service(&self, _station: &Station) -> f64 {
        self.hit_ratio * self.hit.mean() + (1.0 - self.hit_ratio) * self.miss.mean()
    }
}

/// Parses a `cache` or `cdn`.
pub(super) fn parse(c: &mut Checker, entry: &Entry<'_>) -> Option<Kind> {
    let Entry { item, path, .. } = *entry;
    c.unknown_fields(
        item,
        path,
        &super::fields(&[
            "instances",
            "concurrency",
            "hit_ratio",
            "hit_time",
            "miss_time",
            "miss_to",
            "queue_capacity",
            "capacity",
            "ttl_s",
            "eviction",
            "keys",
        ]),
    );
    let model = design::parse_cache_model(c, item, path);
    let instances = c.integer(item, path, "instances", 1, 1) as u32;
    let default_concurrency = if entry.kind == "cdn" { 10_000 } else { 1_000 };
    let concurrency = c.integer(item, path, "concurrency", default_concurrency, 1) as u32;
    let hit_ratio = match &model {
        Some(m) => m.estimated_hit_ratio(),
        None if item.get("capacity").is_some() => 0.0,
        None => c.number(item, path, "hit_ratio", None, RATIO),
    };
    let hit = super::dist_field(c, item, path, "hit_time", None);
    let miss = super::dist_field(c, item, path, "miss_time", Some(Dist::Constant(0.0)));
    let miss_to = item
        .get("miss_to")
        .and_then(|_| (entry.target)(c, item, path, "miss_to"));
    let cap = super::queue_capacity(c, item, path, "queue_capacity");
    let (hit, miss) = (hit?, miss?);
    let mut s = Station::plain(instances, concurrency, hit.clone(), cap);
    s.behavior = Behavior::Cache(Cache {
        hit_ratio,
        model,
        hit,
        miss,
        miss_to,
    });
    Some(Kind::Station(s))
}
