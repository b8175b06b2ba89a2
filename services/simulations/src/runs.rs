//! Simulation runs of a project's design.
//!
//! `start` checks access (editor or owner, `simulation:start`), validates the design, takes a
//! place in the instance-wide queue (`simulation.max_queued`; full → 503) and records the run
//! with the per-user limit checked in the same statement (`simulation.max_runs_per_user`; over
//! → 429). The run goes to the shard with the fewest runs, whose runner executes at most
//! `simulation.runs_per_shard` at once. A run advances the engine in slices of at most
//! `simulation.slice` of wall time and yields between them, so the shard's connections stay
//! served; it is paced at `speed` simulated seconds per second (0 = flat out), publishes a
//! metrics point on `simulation:data:{id}` every `simulation.metrics_interval` and at the end,
//! lifecycle events on `simulation:events:{started,completed,stopped,failed}`, and a
//! notification on `notifications:user:{id}` when it ends. The report and the bottleneck
//! analysis (whose confirmation re-run happens on a helper thread, not the shard) are stored.
//! `stop` reaches the run's shard through the mesh and takes effect within one slice; it waits
//! for the run to record its end (a notification from the run, not polling) for at most
//! `simulation.stop_timeout`, then answers 503 `timeout`. A stop (or failure) recorded by
//! another instance sharing the database ends the run at its next `simulation.status_check`. Designs over
//! `simulation.max_design_bytes` are refused (413), and large ones are parsed off the shard.

use sdsim_core::runtime::Shard;
use sdsim_core::shard::ShardId;
use sdsim_projects::config::SimulationConfig;
use sdsim_projects::design_limits::{check_design_within, parse_design};
use sdsim_projects::projects::{Projects, Role};
use sdsim_projects::{new_id, now_ms, Caller, DesignProblem, Failure};
use sdsim_store::{Row, Statement, Store};
use serde::Serialize;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod runner;
mod whatif;

use crate::reports::ReportQueue;
use runner::{Job, Runner, Stop};
pub use whatif::{
    changes_of_body, ChangeAccepted, ChangeRequest, OwnerLookup, Owners, MAX_CHANGES_PER_REQUEST,
    MAX_CHANGES_PER_RUN,
};

/// What a caller asks for.
#[derive(Debug, Clone, Default)]
pub struct StartRequest {
    /// The project whose current design runs.
    pub project_id: String,
    /// Simulated seconds (default: the design's `duration_s`).
    pub duration_s: Option<f64>,
    /// Random seed (default: the design's `seed`).
    pub seed: Option<u64>,
    /// Simulated seconds per wall-clock second (default `simulation.default_speed`; 0 = as fast
    /// as possible).
    pub speed: Option<f64>,
}

/// A run as the API returns it.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// Its id.
    pub simulation_id: String,
    /// The project.
    pub project_id: String,
    /// The project version that ran.
    pub project_version: i64,
    /// Who started it.
    pub user_id: String,
    /// `queued`, `running`, `completed`, `stopped` or `failed`.
    pub status: String,
    /// Simulated seconds asked for.
    pub duration_s: f64,
    /// The seed.
    pub seed: u64,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub started_at: Option<i64>,
    /// Unix ms.
    pub finished_at: Option<i64>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Where live metrics are published.
    pub websocket_channel: String,
    /// The sweep this run is a point of.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep_id: Option<String>,
}

/// A finished run's results.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// The run.
    pub simulation: Run,
    /// The engine's report (per component, end to end, SLOs).
    pub report: sonic_rs::Value,
    /// Bottleneck findings with recommendations; `null` while the reports queue (Redis set)
    /// has not produced them yet.
    pub analysis: sonic_rs::Value,
}

/// Problems of a design, for `validate`.
#[derive(Debug, Clone, Serialize)]
pub struct Validation {
    /// No problems.
    pub valid: bool,
    /// Every problem with its path.
    pub problems: Vec<DesignProblem>,
}

/// Instance-wide counters, shared by every shard.
struct Shared {
    queued: AtomicUsize,
    per_shard: Vec<AtomicUsize>,
}

/// The simulation service.
pub struct Simulations {
    store: Store,
    pub(crate) projects: Arc<Projects>,
    pub(crate) config: SimulationConfig,
    shared: Shared,
    /// This instance's name (`instance.id`), recorded with every run it accepts.
    pub(crate) instance: String,
    /// When this service started (Unix ms): runs of this instance created before it are left
    /// over from a previous life.
    started_ms: i64,
    /// `async:reports:queue`, when Redis is set.
    reports: Option<Arc<ReportQueue>>,
    /// Instances whose registration expired, with when it was noticed (Unix ms): the first
    /// shard installed fails their runs.
    expired: tokio::sync::mpsc::UnboundedSender<(String, i64)>,
    expired_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<(String, i64)>>>,
}

/// How long the end of a run is retried while the database is unavailable.
const FINISH_RETRY_FOR: Duration = Duration::from_secs(600);

const TERMINAL: [&str; 3] = ["completed", "stopped", "failed"];

const COLUMNS: &str = "id, project_id, project_version, user_id, status, duration_ms, seed, created_at, started_at, finished_at, COALESCE(error, ''), COALESCE(sweep_id, '')";

/// Queues a run, recorded under instance `$9`, unless its user already has `$8` runs queued or
/// running and sweeps running (a sweep counts once, not its points). The runs' condition is word
/// for word the one of the `simulations_active` partial index (migration 4), so it reads only
/// the user's active runs, not their whole history; the sweeps' that of `sweeps_active`. Run
/// with [`Store::batch_exclusive`] keyed by the user: under READ COMMITTED two concurrent
/// inserts would both count the same runs and both pass.
const INSERT_RUN: &str = "INSERT INTO simulation_schema.simulations (id, project_id, project_version, user_id, status, duration_ms, seed, created_at, instance) SELECT $1, $2, $3, $4, 'queued', $5, $6, $7, $9 WHERE (SELECT COUNT(*) FROM simulation_schema.simulations WHERE user_id = $4 AND status IN ('queued', 'running') AND sweep_id IS NULL) + (SELECT COUNT(*) FROM simulation_schema.sweeps WHERE user_id = $4 AND status = 'running') < $8";

/// Records a point of sweep `$8` (its place in the grid `$9`), under instance `$10`, while the
/// sweep is running. Points do not count against the per-user limit, their sweep does: it
/// bounds them (`simulation.sweep_concurrency` at a time), and a sweep whose next point were
/// refused because of its own running points could stall.
const INSERT_SWEEP_POINT: &str = "INSERT INTO simulation_schema.simulations (id, project_id, project_version, user_id, status, duration_ms, seed, created_at, sweep_id, sweep_index, instance) SELECT $1, $2, $3, $4, 'queued', $5, $6, $7, $8, $9, $10 WHERE EXISTS (SELECT 1 FROM simulation_schema.sweeps WHERE id = $8 AND status = 'running')";

/// A run to queue: who, what and how long; a sweep's point names its sweep and index.
pub(crate) struct Placement {
    pub(crate) user_id: String,
    pub(crate) project_id: String,
    pub(crate) version: i64,
    pub(crate) design: String,
    pub(crate) duration: f64,
    pub(crate) seed: u64,
    pub(crate) speed: f64,
    pub(crate) sweep: Option<(String, usize)>,
}

/// Marks the runs instance `$1` accepted before it started (`created_at < $2`) and left queued
/// or running as failed: that instance is this process, so whatever ran them is gone. Runs from
/// before runs had owners (`instance IS NULL`) count as this instance's.
const FAIL_ORPHANED_RUNS: &str = "UPDATE simulation_schema.simulations SET status = 'failed', finished_at = $3, error = $4 WHERE status IN ('queued', 'running') AND (instance = $1 OR instance IS NULL) AND created_at < $2";

/// Marks the runs of instance `$1`, whose registration expired, accepted up to when that was
/// noticed (`created_at <= $2`) and still queued or running, as failed. Conditional on the
/// status, so when several survivors run it each run is failed once, by the first; the bound
/// on `created_at` spares the runs of the instance's next life if it is back already.
const FAIL_EXPIRED_RUNS: &str = "UPDATE simulation_schema.simulations SET status = 'failed', finished_at = $3, error = $4 WHERE status IN ('queued', 'running') AND instance = $1 AND created_at <= $2";

impl Simulations {
    /// The service of instance `instance`; `shards` is the number of shards that will run
    /// [`Simulations::install_shard`].
    pub fn new(
        store: Store,
        projects: Arc<Projects>,
        config: SimulationConfig,
        shards: usize,
        instance: String,
    ) -> Simulations {
        let (expired, expired_rx) = tokio::sync::mpsc::unbounded_channel();
        Simulations {
            store,
            projects,
            config,
            shared: Shared {
                queued: AtomicUsize::new(0),
                per_shard: (0..shards.max(1)).map(|_| AtomicUsize::new(0)).collect(),
            },
            instance,
            started_ms: now_ms(),
            reports: None,
            expired,
            expired_rx: Mutex::new(Some(expired_rx)),
        }
    }

    /// Completed runs are analysed through `queue` (by any simulation instance) while Redis
    /// is up, and this instance takes its share of the queue's jobs.
    pub fn with_reports(mut self, queue: ReportQueue) -> Simulations {
        self.reports = Some(Arc::new(queue));
        self
    }

    /// Instance `instance`'s registration expired (it stopped answering without draining):
    /// its queued and running runs are failed by one shard (retried while the database
    /// is down). Returns at once; callable from any thread.
    pub fn instance_expired(&self, instance: &str) {
        if instance == self.instance {
            return; // Our own runs are ours to finish.
        }
        let _ = self.expired.send((instance.to_string(), now_ms()));
    }

    /// Fails the runs `instance` accepted up to `noticed_ms` and left queued or running, with
    /// the reason; returns how many this call failed (0 when another survivor got there first).
    pub async fn fail_runs_of_expired(
        &self,
        instance: &str,
        noticed_ms: i64,
    ) -> Result<u64, Failure> {
        let reason = format!("instance {instance} stopped answering: registration expired");
        let params: Vec<sdsim_store::Value> = vec![
            instance.to_string().into(),
            noticed_ms.into(),
            now_ms().into(),
            reason.into(),
        ];
        let failed = self
            .store
            .execute(FAIL_EXPIRED_RUNS, params.clone())
            .await?;
        // Its sweeps lost their driver with it.
        self.store
            .execute(crate::sweeps::FAIL_EXPIRED_SWEEPS, params)
            .await?;
        Ok(failed)
    }

    /// Takes the queue of expired instances (once, for the sweeper of the first shard).
    fn take_expired(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<(String, i64)>> {
        self.expired_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Marks the runs this instance left queued or running in an earlier life (a crash, a kill,
    /// a shutdown that ran out of time) as failed with a reason, so they stop counting against
    /// their users' limits; returns how many. Runs accepted since this service started are not
    /// touched, so it may run while requests are served.
    pub async fn fail_orphaned_runs(&self) -> Result<u64, Failure> {
        let reason = format!(
            "instance {} stopped before the run finished (found at its restart)",
            self.instance
        );
        let now = now_ms();
        let params: Vec<sdsim_store::Value> = vec![
            self.instance.clone().into(),
            self.started_ms.into(),
            now.into(),
            reason.into(),
        ];
        let failed = self
            .store
            .execute(FAIL_ORPHANED_RUNS, params.clone())
            .await?;
        // The sweeps it drove then have no driver any more.
        self.store
            .execute(crate::sweeps::FAIL_ORPHANED_SWEEPS, params)
            .await?;
        Ok(failed)
    }

    /// The storage.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Runs waiting for a slot and runs executing, on this instance.
    pub fn load(&self) -> (usize, usize) {
        let queued = self.shared.queued.load(Ordering::Acquire);
        let assigned: usize = self
            .shared
            .per_shard
            .iter()
            .map(|n| n.load(Ordering::Acquire))
            .sum();
        (queued, assigned.saturating_sub(queued))
    }

    /// Checks a design without running it. A design over `simulation.max_design_bytes` is a
    /// failure (413), not a problem of the design; so is a busy blocking pool (503).
    pub async fn validate(&self, design: &str) -> Result<Validation, Failure> {
        match check_design_within(design, self.config.max_design_bytes).await {
            Ok(_) => Ok(Validation {
                valid: true,
                problems: Vec::new(),
            }),
            Err(Failure::Design(problems)) => Ok(Validation {
                valid: false,
                problems,
            }),
            Err(f @ (Failure::TooLarge(_) | Failure::Unavailable(_))) => Err(f),
            Err(other) => Ok(Validation {
                valid: false,
                problems: vec![DesignProblem {
                    path: "$".into(),
                    message: other.to_string(),
                }],
            }),
        }
    }

    /// Queues a run of the project's current design.
    pub async fn start(&self, who: &Caller, req: StartRequest) -> Result<Run, Failure> {
        who.require("simulation:start")?;
        if req.project_id.is_empty() {
            return Err(Failure::Invalid {
                field: "project_id".into(),
                message: "required".into(),
            });
        }
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
        let design = parse_design(&design_text)
            .await?
            .map_err(|p| Failure::Design(p.into_iter().map(problem).collect()))?;
        let duration = match req.duration_s {
            None => design.duration,
            Some(d) if d > 0.0 && d <= self.config.max_duration_s => d,
            Some(d) => {
                return Err(Failure::Invalid {
                    field: "duration_s".into(),
                    message: format!(
                        "{d} is not between 0 (exclusive) and simulation.max_duration_s = {}",
                        self.config.max_duration_s
                    ),
                })
            }
        };
        let speed = match req.speed {
            None => self.config.default_speed,
            Some(s) if s >= 0.0 && s.is_finite() => s,
            Some(s) => {
                return Err(Failure::Invalid {
                    field: "speed".into(),
                    message: format!("{s}: simulated seconds per second, 0 (flat out) or more"),
                })
            }
        };
        let seed = req.seed.unwrap_or(design.seed);
        let (id, _ended) = self
            .enqueue(Placement {
                user_id: who.user_id.to_string(),
                project_id: req.project_id.clone(),
                version,
                design: design_text,
                duration,
                seed,
                speed,
                sweep: None,
            })
            .await?;
        self.get(who, &id).await
    }

    /// Takes a place in the instance's queue, records the run (under the per-user limit, or
    /// as a point of its sweep) and hands it to the least busy shard. Returns its id and what
    /// resolves once the run has recorded its end.
    pub(crate) async fn enqueue(
        &self,
        p: Placement,
    ) -> Result<(String, tokio::sync::oneshot::Receiver<()>), Failure> {
        // A place in the instance's queue first; given back if the run is not recorded.
        let max = self.config.max_queued;
        if self
            .shared
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q < max).then_some(q + 1)
            })
            .is_err()
        {
            return Err(Failure::QueueFull(format!(
                "the simulation queue is full ({max} runs waiting); retry shortly"
            )));
        }
        let id = new_id();
        let now = now_ms();
        let mut params: Vec<sdsim_store::Value> = vec![
            id.clone().into(),
            p.project_id.clone().into(),
            p.version.into(),
            p.user_id.clone().into(),
            ((p.duration * 1000.0).round() as i64).into(),
            (p.seed as i64).into(),
            now.into(),
        ];
        let statement = match &p.sweep {
            None => {
                params.push((self.config.max_runs_per_user as i64).into());
                params.push(self.instance.clone().into());
                INSERT_RUN
            }
            Some((sweep, index)) => {
                params.push(sweep.clone().into());
                params.push((*index as i64).into());
                params.push(self.instance.clone().into());
                INSERT_SWEEP_POINT
            }
        };
        let inserted = self
            .store
            .batch_exclusive(
                &format!("simulation-runs:{}", p.user_id),
                vec![Statement::new(statement, params)],
            )
            .await
            .map(|counts| counts.first().copied().unwrap_or(0));
        match inserted {
            Ok(1) => {}
            Ok(_) if p.sweep.is_some() => {
                self.shared.queued.fetch_sub(1, Ordering::AcqRel);
                return Err(Failure::Conflict("the sweep has been stopped".into()));
            }
            Ok(_) => {
                self.shared.queued.fetch_sub(1, Ordering::AcqRel);
                return Err(Failure::TooMany(format!(
                    "you have {} runs queued or running and sweeps running (simulation.max_runs_per_user); wait for one to end or stop one",
                    self.config.max_runs_per_user
                )));
            }
            Err(e) => {
                self.shared.queued.fetch_sub(1, Ordering::AcqRel);
                return Err(e.into());
            }
        }
        let job = Job {
            id: id.clone(),
            project_id: p.project_id,
            user_id: p.user_id,
            design: p.design,
            duration: p.duration,
            seed: p.seed,
            speed: p.speed,
        };
        let target = self.least_busy();
        self.shared.per_shard[target].fetch_add(1, Ordering::AcqRel);
        let sent = Shard::current()
            .mesh()
            .submit_to(ShardId(target), move || {
                let runner = Shard::current().get::<Runner>()?;
                let stop = Rc::new(Stop::default());
                let ended = stop.on_end();
                runner.stops.borrow_mut().insert(job.id.clone(), stop);
                runner.jobs.send(job).ok()?;
                Some(ended)
            })
            .await
            .ok()
            .flatten();
        let Some(ended) = sent else {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            self.shared.per_shard[target].fetch_sub(1, Ordering::AcqRel);
            self.finish_row(
                &id,
                "failed",
                Some("the server is shutting down"),
                None,
                None,
            )
            .await;
            return Err(Failure::Unavailable("the server is shutting down".into()));
        };
        Ok((id, ended))
    }

    /// Shards of this instance that run simulations.
    pub(crate) fn shards(&self) -> usize {
        self.shared.per_shard.len()
    }

    fn least_busy(&self) -> usize {
        self.shared
            .per_shard
            .iter()
            .enumerate()
            .min_by_key(|(_, n)| n.load(Ordering::Acquire))
            .map_or(0, |(i, _)| i)
    }

    /// A run the caller can see (viewer of its project).
    pub async fn get(&self, who: &Caller, id: &str) -> Result<Run, Failure> {
        let row = self
            .store
            .query_opt(
                &format!("SELECT {COLUMNS} FROM simulation_schema.simulations WHERE id = $1"),
                vec![id.into()],
            )
            .await?
            .ok_or_else(|| Failure::NotFound(format!("simulation {id} not found")))?;
        let run = run_of(&row)?;
        match self.projects.role(who, &run.project_id).await {
            Ok(_) => Ok(run),
            // A run of a project the caller cannot see, or of a deleted project, is visible to
            // the user who started it only.
            Err(Failure::NotFound(_)) if run.user_id == *who.user_id => Ok(run),
            Err(Failure::NotFound(_)) => {
                Err(Failure::NotFound(format!("simulation {id} not found")))
            }
            Err(e) => Err(e),
        }
    }

    /// Stops a queued or running run (editor or owner of its project, or who started it).
    pub async fn stop(&self, who: &Caller, id: &str) -> Result<Run, Failure> {
        who.require("simulation:start")?;
        let run = self.get(who, id).await?;
        if run.user_id != *who.user_id {
            self.projects
                .require(who, &run.project_id, Role::Editor)
                .await?;
        }
        if TERMINAL.contains(&run.status.as_str()) {
            return Err(Failure::Conflict(format!(
                "simulation {id} has already ended ({})",
                run.status
            )));
        }
        let key = id.to_string();
        let ended = Shard::current()
            .mesh()
            .broadcast(move || {
                let runner = Shard::current().get::<Runner>()?;
                let stops = runner.stops.borrow();
                let stop = stops.get(&key)?;
                stop.set.set(true);
                stop.notify.notify_one();
                Some(stop.on_end())
            })
            .await
            .into_iter()
            .find_map(|r| r.ok().flatten());
        let Some(ended) = ended else {
            // Not running here (another instance, or one that stopped without recording it).
            // The caller waits for this write, so it is not retried: a database outage is the
            // caller's 503.
            self.record_end(id, "stopped", None, None, None, Duration::ZERO)
                .await?;
            return self.get(who, id).await;
        };
        // The run stops within one slice and tells us once it has recorded its end (or its stop
        // flag is gone with it, which says the same).
        let bound = self.config.stop_timeout;
        if monoio::time::timeout(bound, ended).await.is_err() {
            return Err(Failure::Timeout(format!(
                "stopping simulation {id} timed out after {} (simulation.stop_timeout): the run did not record its end in time; it stops at its next slice",
                sdsim_core::config::format_duration(bound)
            )));
        }
        self.get(who, id).await
    }

    /// A finished (or stopped) run's report and analysis.
    pub async fn results(&self, who: &Caller, id: &str) -> Result<Results, Failure> {
        let run = self.get(who, id).await?;
        if !matches!(run.status.as_str(), "completed" | "stopped") {
            return Err(Failure::Conflict(format!(
                "simulation {id} is {}: results exist once it has completed or been stopped",
                run.status
            )));
        }
        let row = self
            .store
            .query_opt(
                "SELECT COALESCE(report, 'null'), COALESCE(analysis, 'null') FROM simulation_schema.simulations WHERE id = $1",
                vec![id.into()],
            )
            .await?
            .ok_or_else(|| Failure::NotFound(format!("simulation {id} not found")))?;
        Ok(Results {
            simulation: run,
            report: sonic_rs::from_str(row.text(0)?).unwrap_or_default(),
            analysis: sonic_rs::from_str(row.text(1)?).unwrap_or_default(),
        })
    }

    /// Runs of a project (any member), or the caller's own runs, newest first.
    pub async fn history(
        &self,
        who: &Caller,
        project_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Run>, Failure> {
        let limit = limit.clamp(1, 200);
        let rows = match project_id {
            Some(p) => {
                self.projects.role(who, p).await?;
                self.store
                    .query(
                        &format!("SELECT {COLUMNS} FROM simulation_schema.simulations WHERE project_id = $1 ORDER BY created_at DESC, id LIMIT $2"),
                        vec![p.into(), limit.into()],
                    )
                    .await?
            }
            None => {
                self.store
                    .query(
                        &format!("SELECT {COLUMNS} FROM simulation_schema.simulations WHERE user_id = $1 ORDER BY created_at DESC, id LIMIT $2"),
                        vec![who.user_id.as_ref().into(), limit.into()],
                    )
                    .await?
            }
        };
        rows.iter().map(run_of).collect()
    }
}

pub(crate) fn problem(p: sdsim_engine::design::Problem) -> DesignProblem {
    DesignProblem {
        path: p.path,
        message: p.message,
    }
}

fn run_of(row: &Row) -> Result<Run, Failure> {
    let id = row.text(0)?.to_string();
    let error = row.text(10)?;
    let sweep = row.text(11)?;
    Ok(Run {
        sweep_id: (!sweep.is_empty()).then(|| sweep.to_string()),
        websocket_channel: format!("simulation:data:{id}"),
        simulation_id: id,
        project_id: row.text(1)?.to_string(),
        project_version: row.int(2)?,
        user_id: row.text(3)?.to_string(),
        status: row.text(4)?.to_string(),
        duration_s: row.int(5)? as f64 / 1000.0,
        seed: row.int(6)? as u64,
        created_at: row.int(7)?,
        started_at: row.opt_int(8)?,
        finished_at: row.opt_int(9)?,
        error: (!error.is_empty()).then(|| error.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starting a run must not slow down as a user's history grows: on SQLite the per-user
    /// count uses the partial indexes of active runs and running sweeps.
    #[test]
    fn the_per_user_count_reads_only_active_runs() {
        let dir = std::env::temp_dir().join(format!("sdsim-plan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let url = format!("sqlite://{}", dir.display());
        let store = Store::open(&url, &sdsim_store::Options::default()).unwrap();
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        let plan = rt.block_on(async {
            sdsim_store::migrate::run(&store).await.unwrap();
            let params = (1..=9).map(|i| i64::from(i).into()).collect();
            let rows = store
                .query(&format!("EXPLAIN QUERY PLAN {INSERT_RUN}"), params)
                .await
                .unwrap();
            rows.iter()
                .map(|r| r.text(3).unwrap_or_default().to_string())
                .collect::<Vec<_>>()
                .join("\n")
        });
        let _ = std::fs::remove_dir_all(&dir);
        assert!(plan.contains("simulations_active"), "plan:\n{plan}");
        assert!(plan.contains("sweeps_active"), "plan:\n{plan}");
    }

    /// When several survivors notice the same expiry, each run is failed once, by the first;
    /// runs of other instances, finished runs and runs newer than the expiry are left alone.
    #[test]
    fn the_runs_of_an_expired_instance_are_failed_once_whatever_the_survivors() {
        let dir = std::env::temp_dir().join(format!("sdsim-expired-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let url = format!("sqlite://{}", dir.display());
        let store = Store::open(&url, &sdsim_store::Options::default()).unwrap();
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        let survivor = |name: &str| {
            let projects = Arc::new(Projects::new(store.clone()));
            Simulations::new(
                store.clone(),
                projects,
                SimulationConfig::default(),
                1,
                name.to_string(),
            )
        };
        let (first, second) = (survivor("alive-1"), survivor("alive-2"));
        let statuses = rt.block_on(async {
            sdsim_store::migrate::run(&store).await.unwrap();
            let rows: [(&str, &str, &str, i64); 5] = [
                ("r-running", "dead", "running", 100),
                ("r-queued", "dead", "queued", 200),
                ("r-next-life", "dead", "running", 900),
                ("r-other", "alive-1", "running", 100),
                ("r-done", "dead", "completed", 100),
            ];
            for (id, instance, status, created) in rows {
                store
                    .execute(
                        "INSERT INTO simulation_schema.simulations (id, project_id, project_version, user_id, status, duration_ms, seed, created_at, instance) VALUES ($1, 'p', 1, 'u', $2, 1000, 1, $3, $4)",
                        vec![id.into(), status.into(), created.into(), instance.into()],
                    )
                    .await
                    .unwrap();
            }
            let counts = (
                first.fail_runs_of_expired("dead", 500).await.unwrap(),
                second.fail_runs_of_expired("dead", 500).await.unwrap(),
            );
            let rows = store
                .query(
                    "SELECT id, status, COALESCE(error, '') FROM simulation_schema.simulations ORDER BY id",
                    vec![],
                )
                .await
                .unwrap();
            let rows: Vec<(String, String, String)> = rows
                .iter()
                .map(|r| {
                    let text = |i| r.text(i).unwrap().to_string();
                    (text(0), text(1), text(2))
                })
                .collect();
            (counts, rows)
        });
        let _ = std::fs::remove_dir_all(&dir);
        let ((by_first, by_second), rows) = statuses;
        assert_eq!((by_first, by_second), (2, 0), "{rows:?}");
        let reason = "instance dead stopped answering: registration expired";
        let want = [
            ("r-done", "completed", ""),
            ("r-next-life", "running", ""),
            ("r-other", "running", ""),
            ("r-queued", "failed", reason),
            ("r-running", "failed", reason),
        ];
        let got: Vec<(&str, &str, &str)> = rows
            .iter()
            .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
            .collect();
        assert_eq!(got, want);
    }
}
