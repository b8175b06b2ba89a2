//! Sweeps: a project's design run over a grid of parameter values, each point a normal run of
//! the caller's (a row in the runs table naming its sweep, visible in history), at most
//! `simulation.sweep_concurrency` at a time (default: one per shard), spread over the shards
//! like any run. The grid, the point documents, the row of figures and the knee are the
//! engine's (`sdsim_engine::sweep`, which `sdsim simulate --sweep` uses too).
//!
//! `start_sweep` checks access (editor or owner, `simulation:start`), every field (refusals
//! name it by JSON path), the grid against its cap and every point against the engine, stores
//! the sweep and drives it from the shard that took the request (`driver`). Progress goes to
//! `simulation:sweep:{id}`: `{"type": "point", "index", "values", "row"}` per finished point,
//! then `{"type": "completed", "knee"}` (or `stopped`). The table so far is stored with the
//! sweep, so `get_sweep` answers from any instance sharing the database.
//!
//! The per-user limit (`simulation.max_runs_per_user`) counts the sweep, not its points: a
//! running sweep is one of its user's runs for a start (of a run or a sweep), and its points
//! are queued outside the limit. The sweep bounds them itself, and a sweep whose next point
//! were refused because of its own running points would stall.

use crate::runs::{Placement, Simulations};
use sdsim_core::runtime::Shard;
use sdsim_engine::sweep::{self, SweepRow};
use sdsim_projects::design_limits::parse_design;
use sdsim_projects::projects::Role;
use sdsim_projects::{new_id, now_ms, Caller, Failure};
use sdsim_store::{Row, Statement};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

mod driver;
mod request;

use request::{check_paths, invalid};
pub use request::{parameters_of, sweep_of_body, SweepRequest};

/// The service as the shard's sweeps see it: a sweep started on a shard is driven from it.
pub(crate) struct Home(pub(crate) Arc<Simulations>);

/// A sweep accepted: where to follow it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SweepStarted {
    /// Its id.
    pub id: String,
    /// Points of its grid.
    pub points: usize,
    /// The channel of its progress events.
    pub channel: String,
}

/// One finished point of a sweep's table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SweepPoint {
    /// Its place in the grid (the first parameter varying slowest).
    pub index: usize,
    /// The value of each parameter, as JSON text.
    pub values: Vec<String>,
    /// The run of this point (none when it could not be queued).
    pub simulation_id: Option<String>,
    /// How its run ended: `completed`, `stopped` or `failed`.
    pub status: String,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its figures, once completed.
    pub row: Option<SweepRow>,
}

/// A sweep as the API returns it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Sweep {
    /// Its id.
    pub id: String,
    /// The project swept.
    pub project_id: String,
    /// The project version swept.
    pub project_version: i64,
    /// Who started it.
    pub user_id: String,
    /// `running`, `completed`, `stopped` or `failed`.
    pub status: String,
    /// The swept paths, in grid order.
    pub parameters: Vec<String>,
    /// The SLO of the knee.
    pub slo_p99_ms: Option<f64>,
    /// Points of the grid.
    pub points: usize,
    /// The finished points, in grid order.
    pub rows: Vec<SweepPoint>,
    /// The grid index of the knee, once completed (none when no point holds the SLO).
    pub knee: Option<usize>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub finished_at: Option<i64>,
    /// Why it failed (its instance stopped while driving it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The channel of its progress events.
    pub channel: String,
}

/// What is stored of the request: enough to drive and describe the sweep.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Spec {
    parameters: Vec<String>,
    slo_p99_ms: Option<f64>,
}

/// A point ready to run.
pub(crate) struct PointJob {
    index: usize,
    values: Vec<String>,
    design: String,
    duration: f64,
    seed: u64,
}

/// Records a sweep unless its user already has `$10` runs queued or running and sweeps
/// running (the count of a run's start; a sweep's points are not runs of its user's here),
/// in the same statement, under the user's lock, as runs are.
const INSERT_SWEEP: &str = "INSERT INTO simulation_schema.sweeps (id, project_id, project_version, user_id, status, spec, points, points_done, created_at, instance) SELECT $1, $2, $3, $4, 'running', $5, $6, $7, $8, $9 WHERE (SELECT COUNT(*) FROM simulation_schema.simulations WHERE user_id = $4 AND status IN ('queued', 'running') AND sweep_id IS NULL) + (SELECT COUNT(*) FROM simulation_schema.sweeps WHERE user_id = $4 AND status = 'running') < $10";

const SWEEP_COLUMNS: &str = "id, project_id, project_version, user_id, status, spec, points, points_done, knee, created_at, finished_at, COALESCE(error, '')";

/// Fails the sweeps instance `$1` drove and left running when it accepted them before it
/// started (`created_at < $2`): their driver died with its previous life.
pub(crate) const FAIL_ORPHANED_SWEEPS: &str = "UPDATE simulation_schema.sweeps SET status = 'failed', finished_at = $3, error = $4 WHERE status = 'running' AND instance = $1 AND created_at < $2";

/// Fails the running sweeps of instance `$1`, whose registration expired, accepted up to when
/// that was noticed (`created_at <= $2`); conditional on the status, as for its runs.
pub(crate) const FAIL_EXPIRED_SWEEPS: &str = "UPDATE simulation_schema.sweeps SET status = 'failed', finished_at = $3, error = $4 WHERE status = 'running' AND instance = $1 AND created_at <= $2";

fn channel(id: &str) -> String {
    format!("simulation:sweep:{id}")
}

fn stored<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, Failure> {
    sonic_rs::from_str(text)
        .map_err(|e| Failure::Unavailable(format!("a stored sweep's {what} does not read: {e}")))
}

fn sweep_of(row: &Row) -> Result<Sweep, Failure> {
    let id = row.text(0)?.to_string();
    let spec: Spec = stored(row.text(5)?, "spec")?;
    let done: Vec<Option<SweepPoint>> = stored(row.text(7)?, "table")?;
    Ok(Sweep {
        channel: channel(&id),
        id,
        project_id: row.text(1)?.to_string(),
        project_version: row.int(2)?,
        user_id: row.text(3)?.to_string(),
        status: row.text(4)?.to_string(),
        parameters: spec.parameters,
        slo_p99_ms: spec.slo_p99_ms,
        points: row.int(6)? as usize,
        rows: done.into_iter().flatten().collect(),
        knee: row.opt_int(8)?.map(|k| k as usize),
        created_at: row.int(9)?,
        finished_at: row.opt_int(10)?,
        error: Some(row.text(11)?.to_string()).filter(|e| !e.is_empty()),
    })
}

impl Simulations {
    /// Starts a sweep of a project's current design (see the module documentation).
    pub async fn start_sweep(
        &self,
        who: &Caller,
        req: SweepRequest,
    ) -> Result<SweepStarted, Failure> {
        who.require("simulation:start")?;
        if req.project_id.is_empty() {
            return Err(invalid("$.project_id", "required"));
        }
        let parameters = parameters_of(&req.parameters)?;
        let cap = self.config.sweep_max_points;
        let max = match req.max_points {
            None => cap,
            Some(n) if n >= 1 && n as usize <= cap => n as usize,
            Some(n) => {
                return Err(invalid(
                    "$.max_points",
                    format!("{n} is not between 1 and simulation.sweep_max_points = {cap}"),
                ))
            }
        };
        if let Some(slo) = req.slo_p99_ms {
            if !(slo.is_finite() && slo > 0.0) {
                return Err(invalid(
                    "$.slo_p99_ms",
                    format!("{slo}: a positive number of milliseconds"),
                ));
            }
        }
        if let Some(d) = req.duration_s {
            if !(d > 0.0 && d <= self.config.max_duration_s) {
                return Err(invalid(
                    "$.duration_s",
                    format!(
                        "{d} is not between 0 (exclusive) and simulation.max_duration_s = {}",
                        self.config.max_duration_s
                    ),
                ));
            }
        }
        let grid =
            sweep::grid(&parameters, max).map_err(|e| invalid("$.parameters", e.to_string()))?;
        let (design_text, version) = self
            .projects
            .design_for(who, &req.project_id, Role::Editor)
            .await?;
        if design_text.len() > self.config.max_design_bytes {
            return Err(Failure::TooLarge(format!(
                "design: the project's design of {} bytes is over the limit of {} bytes (simulation.max_design_bytes)",
                design_text.len(),
                self.config.max_design_bytes
            )));
        }
        let doc: sonic_rs::Value = sonic_rs::from_str(&design_text).map_err(|e| {
            invalid(
                "$.project_id",
                format!("the project's design is not JSON: {e}"),
            )
        })?;
        check_paths(&doc, &parameters)?;
        let mut jobs = Vec::with_capacity(grid.len());
        for (index, point) in grid.iter().enumerate() {
            let (at, values) = sweep::apply_point(&doc, &parameters, point)
                .map_err(|e| invalid("$.parameters", e.to_string()))?;
            let text = at.to_string();
            let design = parse_design(&text).await?.map_err(|problems| {
                let refused = sweep::SweepError::InvalidPoint {
                    point: sweep::describe(&parameters, &values),
                    problems,
                };
                invalid("$.parameters", refused.to_string())
            })?;
            jobs.push(PointJob {
                index,
                values,
                design: text,
                duration: req.duration_s.unwrap_or(design.duration),
                seed: req.seed.unwrap_or(design.seed),
            });
        }
        let id = new_id();
        let spec = Spec {
            parameters: parameters.iter().map(|p| p.path.clone()).collect(),
            slo_p99_ms: req.slo_p99_ms,
        };
        let empty: Vec<Option<SweepPoint>> = vec![None; jobs.len()];
        let inserted = self
            .store()
            .batch_exclusive(
                &format!("simulation-runs:{}", who.user_id),
                vec![Statement::new(
                    INSERT_SWEEP,
                    vec![
                        id.clone().into(),
                        req.project_id.clone().into(),
                        version.into(),
                        who.user_id.as_ref().into(),
                        to_json(&spec).into(),
                        (jobs.len() as i64).into(),
                        to_json(&empty).into(),
                        now_ms().into(),
                        self.instance.clone().into(),
                        (self.config.max_runs_per_user as i64).into(),
                    ],
                )],
            )
            .await?;
        if inserted.first().copied().unwrap_or(0) != 1 {
            return Err(Failure::TooMany(format!(
                "you have {} runs queued or running and sweeps running (simulation.max_runs_per_user); wait for one to end or stop one",
                self.config.max_runs_per_user
            )));
        }
        let home = Shard::current()
            .get::<Home>()
            .ok_or_else(|| Failure::Unavailable("no simulation runner on this shard".into()))?;
        let started = SweepStarted {
            id: id.clone(),
            points: jobs.len(),
            channel: channel(&id),
        };
        let concurrency = match self.config.sweep_concurrency {
            0 => self.shards(),
            n => n,
        };
        let drive = driver::Drive {
            id,
            user_id: who.user_id.to_string(),
            project_id: req.project_id,
            version,
            slo_p99_ms: req.slo_p99_ms,
            concurrency,
            jobs,
        };
        let service = Arc::clone(&home.0);
        sdsim_core::runtime::spawn("simulation-sweep", async move {
            service.drive(drive).await;
        });
        Ok(started)
    }

    /// A sweep the caller can see (viewer of its project, or who started it).
    pub async fn get_sweep(&self, who: &Caller, id: &str) -> Result<Sweep, Failure> {
        let not_found = || Failure::NotFound(format!("sweep {id} not found"));
        let row = self
            .store()
            .query_opt(
                &format!("SELECT {SWEEP_COLUMNS} FROM simulation_schema.sweeps WHERE id = $1"),
                vec![id.into()],
            )
            .await?
            .ok_or_else(not_found)?;
        let sweep = sweep_of(&row)?;
        match self.projects.role(who, &sweep.project_id).await {
            Ok(_) => Ok(sweep),
            Err(Failure::NotFound(_)) if sweep.user_id == *who.user_id => Ok(sweep),
            Err(Failure::NotFound(_)) => Err(not_found()),
            Err(e) => Err(e),
        }
    }

    /// Stops a running sweep (who started it, or an editor or owner of its project): queued
    /// points never start, running ones stop as a stopped run does.
    pub async fn stop_sweep(&self, who: &Caller, id: &str) -> Result<Sweep, Failure> {
        who.require("simulation:start")?;
        let sweep = self.get_sweep(who, id).await?;
        if sweep.user_id != *who.user_id {
            self.projects
                .require(who, &sweep.project_id, Role::Editor)
                .await?;
        }
        let stopped = self
            .store()
            .execute(
                "UPDATE simulation_schema.sweeps SET status = 'stopped', finished_at = $1 WHERE id = $2 AND status = 'running'",
                vec![now_ms().into(), id.into()],
            )
            .await?;
        if stopped == 0 {
            return Err(Failure::Conflict(format!(
                "sweep {id} has already ended ({})",
                sweep.status
            )));
        }
        // No point is recorded once the sweep says stopped (the insert checks it); those
        // recorded before are stopped like any run.
        let active = self
            .store()
            .query(
                "SELECT id FROM simulation_schema.simulations WHERE sweep_id = $1 AND status IN ('queued', 'running')",
                vec![id.into()],
            )
            .await?;
        for row in &active {
            let run = row.text(0)?.to_string();
            match self.stop(who, &run).await {
                Ok(_) | Err(Failure::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        self.get_sweep(who, id).await
    }
}

fn to_json<T: Serialize>(value: &T) -> String {
    sonic_rs::to_string(value).unwrap_or_else(|_| "null".into())
}

/// The figures of a completed point's report, as the table shows them.
pub(crate) fn row_of_report(values: Vec<String>, report: &str) -> Option<SweepRow> {
    let report: sdsim_engine::engine::stats::Report = serde_json::from_str(report).ok()?;
    Some(SweepRow::from_report(values, &report))
}

/// The knee of a table (grid indexes), from the completed points.
pub(crate) fn knee_of(points: &[Option<SweepPoint>], slo_p99_ms: Option<f64>) -> Option<usize> {
    let slo = slo_p99_ms?;
    let rows: Vec<(usize, &SweepRow)> = points
        .iter()
        .flatten()
        .filter_map(|p| p.row.as_ref().map(|r| (p.index, r)))
        .collect();
    let plain: Vec<SweepRow> = rows.iter().map(|(_, r)| (*r).clone()).collect();
    sweep::knee(&plain, slo).map(|k| rows[k].0)
}

/// A placement of a point of sweep `sweep` for `user_id`.
pub(crate) fn placement(d: &driver::Drive, job: &PointJob) -> Placement {
    Placement {
        user_id: d.user_id.clone(),
        project_id: d.project_id.clone(),
        version: d.version,
        design: job.design.clone(),
        duration: job.duration,
        seed: job.seed,
        // A sweep wants its table, not a live show: its points run flat out.
        speed: 0.0,
        sweep: Some((d.id.clone(), job.index)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sdsim_projects::config::SimulationConfig;
    use sdsim_projects::projects::Projects;
    use sdsim_store::Store;

    /// A sweep's driver lives in the instance that accepted it: when that instance is found
    /// gone (restarted, or its registration expired), its running sweeps are failed, so they
    /// stop counting against their users' sweeps; others' sweeps and ended ones are left.
    #[test]
    fn the_sweeps_of_a_gone_instance_are_failed() {
        let dir = std::env::temp_dir().join(format!("sdsim-sweeps-gone-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let url = format!("sqlite://{}", dir.display());
        let store = Store::open(&url, &sdsim_store::Options::default()).unwrap();
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        let service = Simulations::new(
            store.clone(),
            Arc::new(Projects::new(store.clone())),
            SimulationConfig::default(),
            1,
            "me".to_string(),
        );
        let rows = rt.block_on(async {
            sdsim_store::migrate::run(&store).await.unwrap();
            let later = now_ms() + 60_000;
            let rows: [(&str, &str, &str, i64); 5] = [
                ("s-mine-old", "me", "running", 100),
                ("s-mine-new", "me", "running", later),
                ("s-dead", "dead", "running", 100),
                ("s-dead-done", "dead", "completed", 100),
                ("s-alive", "alive", "running", 100),
            ];
            for (id, instance, status, created) in rows {
                store
                    .execute(
                        "INSERT INTO simulation_schema.sweeps (id, project_id, project_version, user_id, status, spec, points, points_done, created_at, instance) VALUES ($1, 'p', 1, 'u', $2, '{}', 1, '[null]', $3, $4)",
                        vec![id.into(), status.into(), created.into(), instance.into()],
                    )
                    .await
                    .unwrap();
            }
            service.fail_orphaned_runs().await.unwrap();
            service.fail_runs_of_expired("dead", 500).await.unwrap();
            let rows = store
                .query(
                    "SELECT id, status, COALESCE(error, '') FROM simulation_schema.sweeps ORDER BY id",
                    vec![],
                )
                .await
                .unwrap();
            rows.iter()
                .map(|r| {
                    let text = |i| r.text(i).unwrap().to_string();
                    (text(0), text(1), !text(2).is_empty())
                })
                .collect::<Vec<_>>()
        });
        let _ = std::fs::remove_dir_all(&dir);
        let got: Vec<(&str, &str, bool)> = rows
            .iter()
            .map(|(a, b, c)| (a.as_str(), b.as_str(), *c))
            .collect();
        assert_eq!(
            got,
            [
                ("s-alive", "running", false),
                ("s-dead", "failed", true),
                ("s-dead-done", "completed", false),
                ("s-mine-new", "running", false),
                ("s-mine-old", "failed", true),
            ]
        );
    }
}
