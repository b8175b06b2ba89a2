//! Bottleneck analysis: ranks components by saturation, says why in words, and recommends
//! instance counts for a target utilisation from M/M/c formulas, then confirms the
//! recommendation by re-running the design with it.

use crate::design::{Design, Kind};
use crate::engine::stats::Report;
use crate::engine::Simulation;
use serde::Serialize;

/// One component's verdict.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Finding {
    /// Component id.
    pub component: String,
    /// Busy fraction of its workers.
    pub utilization: f64,
    /// Share of its arrivals dropped.
    pub drop_rate: f64,
    /// Time-average waiting requests.
    pub mean_queue_length: f64,
    /// `saturated`, `busy` or `ok`.
    pub status: &'static str,
    /// A sentence for a person.
    pub explanation: String,
    /// Instances to reach the target utilisation, when more are needed.
    pub recommendation: Option<Recommendation>,
}

/// A sizing recommendation.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Recommendation {
    /// Instances now.
    pub instances_now: u32,
    /// Instances recommended.
    pub instances: u32,
    /// The utilisation aimed at.
    pub target_utilization: f64,
    /// Offered load in Erlangs (arrival rate × mean service time).
    pub offered_load: f64,
    /// Mean wait predicted by Erlang C for the pooled workers (M/M/c approximation).
    pub predicted_wait_ms: f64,
    /// Utilisation measured when the design is re-run with every recommendation applied.
    pub confirmed_utilization: Option<f64>,
    /// Mean wait measured in that re-run.
    pub confirmed_wait_ms: Option<f64>,
}

/// Erlang C: probability an arrival waits, `c` servers, offered load `a` (< c).
pub fn erlang_c(c: u32, a: f64) -> f64 {
    if a >= f64::from(c) {
        return 1.0;
    }
    // Erlang B by its stable recursion, then C from B.
    let b = (1..=c).fold(1.0, |b, k| a * b / (f64::from(k) + a * b));
    let rho = a / f64::from(c);
    b / (1.0 - rho * (1.0 - b))
}

/// Mean M/M/c wait for `c` servers of mean service `s` seconds at arrival rate `lambda`.
pub fn mmc_wait(c: u32, lambda: f64, s: f64) -> f64 {
    let a = lambda * s;
    if a >= f64::from(c) {
        return f64::INFINITY;
    }
    erlang_c(c, a) * s / (f64::from(c) - a)
}

/// Analyses `report` of `design`, aiming at `target` utilisation, and confirms the
/// recommendations with a re-run (same seed).
pub fn analyze(design: &Design, report: &Report, target: f64) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut resized = design.clone();
    let measured = report.measured_s.max(1e-9);
    for (i, comp) in design.components.iter().enumerate() {
        let Kind::Station(st) = &comp.kind else {
            continue;
        };
        let c = &report.components[&comp.id];
        let drop_rate = if c.arrivals == 0 {
            0.0
        } else {
            c.dropped as f64 / c.arrivals as f64
        };
        let status = if c.utilization > 0.85 || drop_rate > 0.001 {
            "saturated"
        } else if c.utilization > target {
            "busy"
        } else {
            "ok"
        };
        let lambda = c.arrivals as f64 / measured;
        let service = st.mean_service();
        let offered = lambda * service;
        let per_instance = f64::from(st.concurrency);
        let needed = ((offered / target / per_instance).ceil() as u32).max(1);
        let recommendation = (needed > st.instances).then(|| {
            if let Kind::Station(r) = &mut resized.components[i].kind {
                r.instances = needed;
            }
            Recommendation {
                instances_now: st.instances,
                instances: needed,
                target_utilization: target,
                offered_load: offered,
                predicted_wait_ms: mmc_wait(needed * st.concurrency, lambda, service) * 1e3,
                confirmed_utilization: None,
                confirmed_wait_ms: None,
            }
        });
        let explanation = match status {
            "saturated" if drop_rate > 0.001 => format!(
                "{} drops {:.1}% of its requests: its queue is full; its {} workers are {:.0}% busy for an offered load of {:.2} Erlangs",
                comp.id,
                drop_rate * 100.0,
                st.instances * st.concurrency,
                c.utilization * 100.0,
                offered
            ),
            "saturated" => format!(
                "{} is {:.0}% busy: requests wait {:.1} ms on average before service, and small traffic growth will make the queue grow without bound",
                comp.id,
                c.utilization * 100.0,
                c.mean_wait_ms
            ),
            "busy" => format!(
                "{} is {:.0}% busy, above the {:.0}% target; waits are {:.1} ms on average",
                comp.id,
                c.utilization * 100.0,
                target * 100.0,
                c.mean_wait_ms
            ),
            _ => format!("{} is {:.0}% busy, within the {:.0}% target", comp.id, c.utilization * 100.0, target * 100.0),
        };
        findings.push(Finding {
            component: comp.id.clone(),
            utilization: c.utilization,
            drop_rate,
            mean_queue_length: c.mean_queue_length,
            status,
            explanation,
            recommendation,
        });
    }
    if findings.iter().any(|f| f.recommendation.is_some()) {
        let mut sim = Simulation::new(resized);
        sim.run();
        let rerun = sim.report();
        for f in &mut findings {
            if let Some(r) = &mut f.recommendation {
                let c = &rerun.components[&f.component];
                r.confirmed_utilization = Some(c.utilization);
                r.confirmed_wait_ms = Some(c.mean_wait_ms);
            }
        }
    }
    findings.sort_by(|a, b| {
        let score = |f: &Finding| f.utilization + f.drop_rate * 10.0;
        score(b).total_cmp(&score(a))
    });
    findings
}

/// The findings for people.
pub fn table(findings: &[Finding]) -> String {
    let mut out = String::from("\nbottlenecks (most saturated first):\n");
    for f in findings {
        out.push_str(&format!("  [{}] {}\n", f.status, f.explanation));
        if let Some(r) = &f.recommendation {
            out.push_str(&format!(
                "      recommend {} instances (now {}) for {:.0}% utilisation: M/M/c predicts a {:.2} ms mean wait",
                r.instances,
                r.instances_now,
                r.target_utilization * 100.0,
                r.predicted_wait_ms
            ));
            if let (Some(u), Some(w)) = (r.confirmed_utilization, r.confirmed_wait_ms) {
                out.push_str(&format!(
                    "; re-run with it: {:.0}% busy, {:.2} ms wait",
                    u * 100.0,
                    w
                ));
            }
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erlang_c_known_values() {
        // c = 2, a = 1: C = 1/3.
        assert!((erlang_c(2, 1.0) - 1.0 / 3.0).abs() < 1e-12);
        // c = 1: C = ρ.
        assert!((erlang_c(1, 0.7) - 0.7).abs() < 1e-12);
        assert_eq!(erlang_c(3, 3.5), 1.0);
        // M/M/1 wait: ρ/(μ-λ).
        assert!((mmc_wait(1, 7.0, 0.1) - 0.7 / 3.0).abs() < 1e-12);
    }
}
