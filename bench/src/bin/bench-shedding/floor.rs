//! The floor: what answering costs a server that does nothing else. `bare-answer` (monoio,
//! httparse, one fixed response) is measured under the same load as sdsim, once answering 503
//! (the refusal's bytes) and once 200 (a body of the project's size); its CPU time per answer
//! is the least any server pays per refusal and per served request on this machine. The
//! report then works out the best goodput the goal allows from those costs.

use super::{Sample, Watched};
use anyhow::{ensure, Context};
use sdsim_bench::proc_sample::cpu_seconds;
use sdsim_bench::process::{free_port, pinned, stop, wait_ready};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::Child;
use std::time::Duration;

/// A running `bare-answer`, stopped when dropped.
pub(crate) struct BareProcess {
    addr: SocketAddr,
    child: Option<Child>,
}

impl BareProcess {
    /// Starts `binary` pinned to `cpu`, answering `status` (200 with `body_bytes` of JSON).
    pub(crate) fn start(
        binary: &str,
        cpu: usize,
        status: u16,
        body_bytes: usize,
    ) -> anyhow::Result<BareProcess> {
        let port = free_port()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut cmd = pinned(binary, cpu);
        cmd.arg("--listen")
            .arg(addr.to_string())
            .arg("--status")
            .arg(status.to_string())
            .arg("--body-bytes")
            .arg(body_bytes.to_string());
        let mut child = cmd.spawn().with_context(|| format!("starting {binary}"))?;
        if let Err(e) = wait_ready(port, &mut child) {
            stop(child);
            return Err(e);
        }
        Ok(BareProcess {
            addr,
            child: Some(child),
        })
    }

    fn pid(&self) -> anyhow::Result<u32> {
        Ok(self.child.as_ref().context("stopped")?.id())
    }
}

impl Watched for BareProcess {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn cpu_time(&self) -> anyhow::Result<Duration> {
        cpu_seconds(self.pid()?)
            .map(Duration::from_secs_f64)
            .context("no CPU time for bare-answer")
    }

    fn cpu_wait(&self) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/schedstat", self.pid()?))?;
        let waited = stat
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        Ok(Duration::from_nanos(waited))
    }

    fn shed_count(&self) -> anyhow::Result<u64> {
        Ok(0)
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        let child = self.child.as_mut().context("stopped")?;
        ensure!(
            child.try_wait()?.is_none(),
            "bare-answer exited during the benchmark"
        );
        Ok(())
    }
}

impl Drop for BareProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop(child);
        }
    }
}

/// What a floor run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Floor {
    /// `bare-answer` answering this status.
    Bare(u16),
    /// sdsim refusing (nearly) everything (`shedding.target=1us`).
    SdsimRefusing,
}

impl Floor {
    /// Every floor run of a round.
    pub(crate) const ALL: [Floor; 3] = [Floor::Bare(503), Floor::Bare(200), Floor::SdsimRefusing];

    /// Its name in the report.
    pub(crate) fn label(self) -> String {
        match self {
            Floor::Bare(status) => format!("bare {status}"),
            Floor::SdsimRefusing => "sdsim refusing".into(),
        }
    }
}

/// The floor runs at one load of one kind.
pub(crate) struct FloorPoint {
    /// Load as a multiple of C.
    pub(crate) multiplier: f64,
    /// What was measured.
    pub(crate) floor: Floor,
    /// The runs.
    pub(crate) samples: Vec<Sample>,
}

impl FloorPoint {
    fn med(&self, f: impl Fn(&Sample) -> f64) -> f64 {
        sdsim_bench::median(self.samples.iter().map(f).collect())
    }

    /// Median server CPU µs per answer of any kind.
    pub(crate) fn us_per_answer(&self) -> f64 {
        self.med(|s| s.server_cpu.as_secs_f64() * 1e6 / s.report.answered_in_window().max(1) as f64)
    }
}

/// sdsim's measured costs at one load (µs of server CPU).
pub(crate) struct SdsimCosts {
    /// Load as a multiple of C.
    pub(crate) multiplier: f64,
    /// Per 2xx with shedding off.
    pub(crate) per_ok: f64,
    /// Per 503 with shedding on (estimated: what the run spent beyond its 2xx at `per_ok`).
    pub(crate) per_refusal: Option<f64>,
}

/// The best goodput (req/s) one core allows at offered load `offered` when a served request
/// costs `s` and a refusal `r` seconds: all of the core, `g·s + (offered − g)·r = 1`.
pub(crate) fn best_goodput(offered: f64, s: f64, r: f64) -> f64 {
    ((1.0 - offered * r) / (s - r)).clamp(0.0, offered.min(1.0 / s))
}

/// The most a refusal may cost for goodput `goal` at `offered` when serving costs `s`.
pub(crate) fn refusal_budget(offered: f64, s: f64, goal: f64) -> f64 {
    (1.0 - goal * s) / (offered - goal)
}

/// The floor section: the bare server's costs beside sdsim's, and the arithmetic.
pub(crate) fn write_floor(
    out: &mut String,
    capacity: f64,
    one_x: f64,
    floor: &[FloorPoint],
    sdsim: &[SdsimCosts],
) -> anyhow::Result<()> {
    if floor.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "\n## The floor: a bare server's CPU per answer\n\n`bare-answer` (monoio on the same driver as sdsim, httparse, one task per connection, one fixed response: the refusal's bytes, or 200 with a body of the project's size) pinned to the server CPU, the same open-loop load, a fresh process for every run, in the same rounds as sdsim; medians. Beside it, **sdsim refusing**: sdsim with `shedding.target=1us`, which no queueing delay meets, so after the warm-up its admission limit is at its floor (one request per interval) and nearly every answer is a 503: its CPU per answer is sdsim's refusal cost, measured. µs per answer = CPU time in the window / answers in the window.\n\n| load | server | sent req/s | answered req/s | server CPU / waited | µs per answer | sdsim µs per 2xx (off) | sdsim µs per 503 (on, estimated) |\n|---|---|---|---|---|---|---|---|"
    )?;
    for p in floor {
        let costs = sdsim.iter().find(|c| c.multiplier == p.multiplier);
        let fmt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.1}"));
        writeln!(
            out,
            "| {}× | {} | {:.0} | {:.0} | {:.0}% / {:.0}% | {:.1} | {} | {} |",
            p.multiplier,
            p.floor.label(),
            p.med(Sample::sent_per_s),
            p.med(|s| s.report.answered_in_window() as f64 / s.report.duration.as_secs_f64()),
            p.med(Sample::server_cpu_share) * 100.0,
            p.med(Sample::server_wait_share) * 100.0,
            p.us_per_answer(),
            fmt(costs.map(|c| c.per_ok)),
            fmt(costs.and_then(|c| c.per_refusal)),
        )?;
    }
    let top = floor.iter().map(|p| p.multiplier).fold(f64::MIN, f64::max);
    let at = |kind: Floor| {
        floor
            .iter()
            .find(|p| p.multiplier == top && p.floor == kind)
            .map(FloorPoint::us_per_answer)
    };
    let r_sdsim = at(Floor::SdsimRefusing);
    let (Some(r_floor), Some(s_floor), Some(costs)) = (
        at(Floor::Bare(503)),
        at(Floor::Bare(200)),
        sdsim.iter().find(|c| c.multiplier == top),
    ) else {
        return Ok(());
    };
    let offered = top * capacity;
    let goal = 0.9 * one_x;
    let s = costs.per_ok * 1e-6;
    let budget = refusal_budget(offered, s, goal) * 1e6;
    let best = |r_us: f64| best_goodput(offered, s, r_us * 1e-6) / one_x;
    let budget_text = if budget > 0.0 {
        format!("the goal needs **r ≤ {budget:.2} µs**")
    } else {
        format!(
            "no r is small enough: serving 0.9·G₁ at s alone takes {:.2} of the core (s here, under 1,000 connections, is above the closed-loop 1/C)",
            goal * s
        )
    };
    writeln!(
        out,
        "\n**The arithmetic.** On one core, a second of CPU pays for the requests served and the requests refused: with goodput g, offered load λ = k·C, serve cost s and refusal cost r, g·s + (λ − g)·r ≤ 1, so **g ≤ (1 − λ·r) / (s − r)** (and g ≤ 1/s, g ≤ λ). The goal g ≥ 0.9·G₁ (G₁, the 1× maximum, = {one_x:.0} req/s) therefore needs **r ≤ (1 − 0.9·G₁·s) / (λ − 0.9·G₁)**; with G₁ = 1/s this is r ≤ 0.1·s / (k − 0.9), s / 31 at k = 4. Here, at {top}× (λ = {offered:.0} req/s) with sdsim's s = {:.1} µs per 2xx (shedding off, same load): {budget_text}. The bare server pays **{r_floor:.1} µs per refusal** and {s_floor:.1} µs per 200 of the project's size (the read, the write, the kernel's TCP work: no server that answers each request pays less here); sdsim pays {} per refusal. With sdsim's s, the best goodput one core allows is {:.2}·G₁ at the bare floor r{}; with free refusals (r = 0) it would be {:.2}·G₁.",
        costs.per_ok,
        r_sdsim.map_or("(not measured)".to_string(), |r| format!("**{r:.1} µs**")),
        best(r_floor),
        r_sdsim.map_or(String::new(), |r| format!(", {:.2}·G₁ at sdsim's r", best(r))),
        best(0.0),
    )?;
    let verdict = if budget > 0.0 && r_floor <= budget {
        format!("The floor ({r_floor:.1} µs) is within the budget ({budget:.2} µs): the goal is reachable in principle on this machine; what is left is sdsim's own costs and its policy.")
    } else {
        format!("**At {top}× on one core, the goal is beyond what this machine allows any server that answers every request** (the floor, {r_floor:.1} µs per refusal, is above the budget); the best achievable is the bound above, and reaching it needs refusals at the floor and admissions that keep the core full.")
    };
    writeln!(out, "\n{verdict}")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_and_the_budget_agree() {
        // C = 1/s = 20,000/s, k = 4: the budget is s / 31.
        let s = 50e-6;
        let budget = refusal_budget(80_000.0, s, 18_000.0);
        assert!((budget - s / 31.0).abs() < 1e-12, "{budget}");
        // At exactly the budget, the best goodput is the goal.
        assert!((best_goodput(80_000.0, s, budget) - 18_000.0).abs() < 1e-6);
        // Free refusals: the whole core serves; refusals that fill the core: nothing.
        assert!((best_goodput(80_000.0, s, 0.0) - 20_000.0).abs() < 1e-6);
        assert_eq!(best_goodput(80_000.0, s, 1.0 / 80_000.0), 0.0);
    }
}
