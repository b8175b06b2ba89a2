//! `load_balancer`: forwards each request at once to one of its targets. It has no workers,
//! so it is not a station but a [`Kind::Balancer`] of its own.

use super::{Arrival, Ctx, Entry};
use crate::design::{parse_dist, Checker, Kind};
use crate::engine::dist::{Dist, Rng};
use sonic_rs::{JsonContainerTrait, JsonValueTrait};

/// How a load balancer picks a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// In turn.
    RoundRobin,
    /// Uniformly at random.
    Random,
    /// The target with the fewest requests in it (busy + waiting).
    LeastConnections,
    /// At random, proportionally to `weights`.
    Weighted,
}

/// A `load_balancer`.
#[derive(Debug, Clone, PartialEq)]
pub struct Balancer {
    /// Target component indexes.
    pub targets: Vec<usize>,
    /// Weights (for `Weighted`), one per target.
    pub weights: Vec<f64>,
    /// The strategy.
    pub strategy: Strategy,
    /// Latency of the hop to the target.
    pub latency: Option<Dist>,
}

impl Balancer {
    /// Picks the target of the request arriving now; `turn` is this balancer's round-robin
    /// counter.
    #[inline]
    pub(in crate::engine) fn arrive(&self, ctx: &mut Ctx<'_>, turn: &mut usize) -> Arrival {
        // Health checks: targets with no instance up are skipped while others are up.
        let healthy: Vec<usize> = (0..self.targets.len())
            .filter(|&k| {
                ctx.stations[self.targets[k]]
                    .as_ref()
                    .is_none_or(|s| s.capacity_workers() > 0)
            })
            .collect();
        let candidates: Vec<usize> = if healthy.is_empty() {
            (0..self.targets.len()).collect()
        } else {
            healthy
        };
        let pick = match self.strategy {
            Strategy::RoundRobin => {
                let n = *turn;
                *turn = n.wrapping_add(1);
                candidates[n % candidates.len()]
            }
            Strategy::Random => {
                candidates[((ctx.routing.uniform() * candidates.len() as f64) as usize)
                    .min(candidates.len() - 1)]
            }
            Strategy::Weighted => {
                let weights: Vec<f64> = candidates.iter().map(|&k| self.weights[k]).collect();
                candidates[weighted(&weights, ctx.routing)]
            }
            Strategy::LeastConnections => {
                let load = |t: usize| {
                    ctx.stations[t]
                        .as_ref()
                        .map_or(0, |s| s.busy as usize + s.waiting)
                };
                candidates
                    .iter()
                    .copied()
                    .min_by_key(|&k| load(self.targets[k]))
                    .unwrap_or(0)
            }
        };
        let to = self.targets[pick.min(self.targets.len() - 1)];
        let latency = self.latency.as_ref().map(|d| d.sample(ctx.routing));
        Arrival::Forward { to, latency }
    }
}

fn weighted(weights: &[f64], rng: &mut Rng) -> usize {
    let total: f64 = weights.iter().sum();
    let mut u = rng.uniform() * total;
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i;
        }
        u -= w;
    }
    weights.len().saturating_sub(1)
}

/// Parses a `load_balancer`.
pub(super) fn parse(c: &mut Checker, entry: &Entry<'_>) -> Option<Kind> {
    let Entry { item, path, .. } = *entry;
    c.unknown_fields(
        item,
        path,
        &super::fields(&["targets", "strategy", "weights", "latency"]),
    );
    let strategy = match item.get("strategy").map(|v| v.as_str()) {
        None | Some(Some("round_robin")) => Strategy::RoundRobin,
        Some(Some("random")) => Strategy::Random,
        Some(Some("least_connections")) => Strategy::LeastConnections,
        Some(Some("weighted")) => Strategy::Weighted,
        _ => {
            c.problem(
                &format!("{path}.strategy"),
                "must be round_robin, random, least_connections or weighted",
            );
            Strategy::RoundRobin
        }
    };
    let mut targets = Vec::new();
    match item
        .get("targets")
        .and_then(|t| t.as_array())
        .filter(|l| !l.is_empty())
    {
        None => c.problem(
            &format!("{path}.targets"),
            "missing (required): a non-empty array of component ids",
        ),
        Some(list) => {
            for (i, t) in list.iter().enumerate() {
                let holder = sonic_rs::json!({ "to": t });
                if let Some(to) = (entry.target)(c, &holder, &format!("{path}.targets[{i}]"), "to")
                {
                    targets.push(to);
                }
            }
        }
    }
    let mut weights = vec![1.0; targets.len()];
    if let Some(w) = item.get("weights") {
        match w.as_array() {
            Some(list)
                if list.len() == targets.len()
                    && list.iter().all(|x| x.as_f64().is_some_and(|x| x > 0.0)) =>
            {
                weights = list.iter().filter_map(|x| x.as_f64()).collect();
            }
            _ => c.problem(
                &format!("{path}.weights"),
                "must be one positive number per target",
            ),
        }
    } else if strategy == Strategy::Weighted {
        c.problem(
            &format!("{path}.weights"),
            "missing (required by strategy weighted)",
        );
    }
    let latency = item
        .get("latency")
        .and_then(|d| parse_dist(c, d, &format!("{path}.latency")));
    Some(Kind::Balancer(Balancer {
        targets,
        weights,
        strategy,
        latency,
    }))
}
