//! A shard's runner: it receives the runs [`Simulations::start`] assigns to its shard, waits
//! for one of the shard's `simulation.runs_per_shard` slots, advances the engine in slices that
//! yield, publishes metrics points and lifecycle events, and records how each run ended.

use super::{Simulations, FINISH_RETRY_FOR, TERMINAL};
use crate::reports::{ReportJob, Taken};
use sdsim_core::runtime::Shard;
use sdsim_engine::design::Design;
use sdsim_engine::engine::changes::AppliedChange;
use sdsim_engine::engine::stats::Report;
use sdsim_engine::engine::{Simulation, TimelineEntry};
use sdsim_projects::design_limits::parse_design;
use sdsim_projects::{now_ms, publish};
use sdsim_store::{StoreError, Value};
use serde::Serialize;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Simulations {
    /// Starts this shard's runner (call on every shard).
    pub fn install_shard(self: &Arc<Self>, shard: &Shard) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
        shard.insert(Runner {
            jobs: tx,
            stops: RefCell::new(HashMap::new()),
        });
        // Sweeps started on this shard are driven from it.
        shard.insert(crate::sweeps::Home(Arc::clone(self)));
        if shard.id().index() == 0 {
            let service = Arc::clone(self);
            shard.spawn("simulation-orphans", async move {
                let mut pause = Duration::from_millis(200);
                loop {
                    match service.fail_orphaned_runs().await {
                        Ok(0) => break,
                        Ok(n) => {
                            tracing::warn!(
                                runs = n,
                                instance = %service.instance,
                                "runs left queued or running by this instance's previous life marked failed"
                            );
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "looking for orphaned runs: retrying");
                            monoio::time::sleep(pause).await;
                            pause = (pause * 2).min(Duration::from_secs(10));
                        }
                    }
                }
            });
        }
        if let Some(mut taken) = self.reports.as_ref().and_then(|q| q.take_jobs()) {
            let service = Arc::clone(self);
            shard.spawn("simulation-reports", async move {
                while let Some(job) = taken.recv().await {
                    service.analyse_taken(job).await;
                }
            });
        }
        if let Some(mut expired) = self.take_expired() {
            let service = Arc::clone(self);
            shard.spawn("simulation-expired-runs", async move {
                while let Some((instance, noticed_ms)) = expired.recv().await {
                    let mut pause = Duration::from_millis(200);
                    loop {
                        match service.fail_runs_of_expired(&instance, noticed_ms).await {
                            Ok(n) => {
                                tracing::warn!(
                                    runs = n,
                                    %instance,
                                    "runs of an instance whose registration expired marked failed"
                                );
                                break;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, %instance, "failing an expired instance's runs: retrying");
                                monoio::time::sleep(pause).await;
                                pause = (pause * 2).min(Duration::from_secs(10));
                            }
                        }
                    }
                }
            });
        }
        let service = Arc::clone(self);
        let index = shard.id().index();
        shard.spawn("simulation-runner", async move {
            // Each job waits for one of the shard's slots (first come, first served) or for
            // its stop, whichever comes first.
            let slots = Arc::new(tokio::sync::Semaphore::new(service.config.runs_per_shard));
            while let Some(job) = rx.recv().await {
                let (service, slots) = (Arc::clone(&service), Arc::clone(&slots));
                sdsim_core::runtime::spawn("simulation-run", async move {
                    let stop = Runner::stop_flag(&job.id);
                    let permit = monoio::select! {
                        p = slots.acquire_owned() => p.ok(),
                        _ = stop.notify.notified() => None,
                    };
                    service.shared.queued.fetch_sub(1, Ordering::AcqRel);
                    service.execute(job, &stop, permit.is_some()).await;
                    service.shared.per_shard[index].fetch_sub(1, Ordering::AcqRel);
                    drop(permit);
                });
            }
        });
    }

    /// Records how a run ended, for a run that ended on this shard. While the database is
    /// unavailable the write is retried with backoff (up to [`FINISH_RETRY_FOR`]): a run whose
    /// end is never recorded would stay `running` and count against its user's limit until
    /// the instance restarts.
    pub(super) async fn finish_row(
        &self,
        id: &str,
        status: &str,
        error: Option<&str>,
        report: Option<String>,
        analysis: Option<String>,
    ) {
        if let Err(e) = self
            .record_end(id, status, error, report, analysis, FINISH_RETRY_FOR)
            .await
        {
            tracing::error!(simulation = id, error = %e, "could not record the end of a run");
        }
    }

    /// Writes a run's end, retrying for `retry_for` while the database is unavailable.
    pub(super) async fn record_end(
        &self,
        id: &str,
        status: &str,
        error: Option<&str>,
        report: Option<String>,
        analysis: Option<String>,
        retry_for: Duration,
    ) -> Result<(), StoreError> {
        let text = |v: Option<&str>| v.map_or(Value::Null, Value::from);
        let finished_at = now_ms();
        let giving_up = Instant::now() + retry_for;
        let mut pause = Duration::from_millis(100);
        loop {
            let result = self
                .store
                .execute(
                    "UPDATE simulation_schema.simulations SET status = $1, finished_at = $2, error = $3, report = $4, analysis = $5 WHERE id = $6 AND status IN ('queued', 'running')",
                    vec![
                        status.into(),
                        finished_at.into(),
                        text(error),
                        text(report.as_deref()),
                        text(analysis.as_deref()),
                        id.into(),
                    ],
                )
                .await;
            match result {
                Ok(_) => return Ok(()),
                Err(StoreError::Unavailable(e)) if Instant::now() < giving_up => {
                    tracing::warn!(simulation = id, error = %e, "recording the end of a run: retrying");
                    monoio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Executes one run on this shard (or records it stopped, when it was stopped before it
    /// got a slot).
    async fn execute(&self, job: Job, stop: &Stop, started: bool) {
        let outcome = if started {
            self.simulate(&job, stop).await
        } else {
            self.finish_row(&job.id, "stopped", None, None, None).await;
            Ok(Ended::Stopped)
        };
        // The end is recorded: whoever is stopping this run may answer now.
        stop.ended();
        if let Some(runner) = Shard::current().get::<Runner>() {
            runner.stops.borrow_mut().remove(&job.id);
        }
        let (status, error) = match outcome {
            Ok(Ended::Completed) => ("completed", None),
            Ok(Ended::Stopped) => ("stopped", None),
            Ok(Ended::Elsewhere { status, error }) => (status, error),
            Err(e) => ("failed", Some(e)),
        };
        let event = Lifecycle {
            event: status,
            simulation_id: &job.id,
            project_id: &job.project_id,
            user_id: &job.user_id,
            error: error.as_deref(),
        };
        publish(&format!("simulation:events:{status}"), &event).await;
        publish(&format!("notifications:user:{}", job.user_id), &event).await;
    }

    /// Runs the engine and records how the run ended (unless another instance recorded it).
    async fn simulate(&self, job: &Job, control: &Stop) -> Result<Ended, String> {
        let stop = &control.set;
        if stop.get() {
            self.finish_row(&job.id, "stopped", None, None, None).await;
            return Ok(Ended::Stopped);
        }
        let parsed = match parse_design(&job.design).await {
            Ok(parsed) => parsed,
            Err(busy) => {
                let why = busy.to_string();
                self.finish_row(&job.id, "failed", Some(&why), None, None)
                    .await;
                return Err(why);
            }
        };
        let mut design = match parsed {
            Ok(d) => d,
            Err(p) => {
                let why = format!("the design no longer validates: {}", p[0]);
                self.finish_row(&job.id, "failed", Some(&why), None, None)
                    .await;
                return Err(why);
            }
        };
        as_run(&mut design, job.duration, job.seed);
        control.inbox.open(&design);
        let claimed = self
            .store
            .execute(
                "UPDATE simulation_schema.simulations SET status = 'running', started_at = $1 WHERE id = $2 AND status = 'queued'",
                vec![now_ms().into(), job.id.clone().into()],
            )
            .await
            .map_err(|e| e.to_string())?;
        if claimed == 0 {
            // Stopped while it was on its way to this shard.
            return Ok(Ended::Stopped);
        }
        let channel = format!("simulation:data:{}", job.id);
        publish(
            "simulation:events:started",
            &Lifecycle {
                event: "started",
                simulation_id: &job.id,
                project_id: &job.project_id,
                user_id: &job.user_id,
                error: None,
            },
        )
        .await;
        let mut sim = Simulation::new(design.clone());
        let began = Instant::now();
        let mut next_point = began + self.config.metrics_interval;
        let mut next_check = began + self.config.status_check;
        let mut elsewhere = None;
        // Simulated time per engine step: at most 1/2000 of the run, shrunk while one step takes
        // more than a quarter of a slice (busy designs), grown back while steps are cheap.
        let max_step = (job.duration / 2000.0).max(1e-3);
        let mut step = max_step;
        let budget = self.config.slice;
        // Timeline entries published so far (each point carries the ones since the last).
        let mut logged = 0;
        while !sim.is_finished() {
            // What-if changes accepted since the last slice, at the time their answer gave.
            control.inbox.apply_to(&mut sim);
            // How far the run may be by now: paced, or all of it.
            let target = if job.speed > 0.0 {
                (began.elapsed().as_secs_f64() * job.speed).min(job.duration)
            } else {
                job.duration
            };
            let slice = Instant::now();
            while sim.now() < target && !sim.is_finished() && slice.elapsed() < budget {
                let t0 = Instant::now();
                sim.advance_to((sim.now() + step).min(target));
                let took = t0.elapsed();
                if took > budget / 4 {
                    step = (step / 2.0).max(1e-6);
                } else if took < budget / 16 {
                    step = (step * 2.0).min(max_step);
                }
            }
            control.inbox.after_slice(sim.now(), sim.is_finished());
            if stop.get() {
                break;
            }
            if Instant::now() >= next_check {
                next_check = Instant::now() + self.config.status_check;
                if let Some(ended) = self.ended_elsewhere(&job.id).await {
                    elsewhere = Some(ended);
                    break;
                }
            }
            if Instant::now() >= next_point {
                next_point += self.config.metrics_interval;
                publish(&channel, &point(&sim, job, "metrics", &mut logged)).await;
            }
            if sim.now() >= target && !sim.is_finished() {
                // Paced and caught up: wait for the clock (at most until the next point).
                monoio::time::sleep(Duration::from_millis(10)).await;
            } else {
                // Not a plain yield: a run that only yields keeps the shard's run queue busy, and
                // monoio then polls neither sockets, timers nor other threads' answers.
                sdsim_core::mesh::yield_to_driver().await;
            }
        }
        control.inbox.close();
        if let Some(Ended::Elsewhere { status, error }) = elsewhere {
            // Its end is recorded already (and must not be overwritten): only say it here.
            tracing::info!(simulation = %job.id, status, "run ended by another instance");
            publish(&channel, &point(&sim, job, status, &mut logged)).await;
            return Ok(Ended::Elsewhere { status, error });
        }
        let finished = sim.is_finished();
        let kind = if finished { "completed" } else { "stopped" };
        publish(&channel, &point(&sim, job, kind, &mut logged)).await;
        let report = sim.report();
        let report_json = sonic_rs::to_string(&report).unwrap_or_else(|_| "null".into());
        // With Redis up, any simulation instance analyses a completed run (the analysis stays
        // null until then); otherwise this instance does.
        let queue = self
            .reports
            .as_ref()
            .filter(|q| finished && q.stats.up.load(Ordering::Relaxed));
        let analysis = match (finished, queue) {
            (false, _) => Some("[]".to_string()),
            (true, Some(_)) => None,
            (true, None) => Some(analyze_off_shard(design, report).await),
        };
        let queued = queue.map(|_| report_json.clone());
        self.finish_row(&job.id, kind, None, Some(report_json), analysis)
            .await;
        if let (Some(q), Some(report)) = (queue, queued) {
            // After the row: the analysis must land on the stored report, not under it.
            q.push(&ReportJob {
                simulation_id: job.id.clone(),
                design: job.design.clone(),
                duration_s: job.duration,
                seed: job.seed,
                report,
            });
            count("sdsim_reports_queued_total");
        }
        Ok(if finished {
            Ended::Completed
        } else {
            Ended::Stopped
        })
    }

    /// Does one analysis from the reports queue and stores it (retrying while the database is
    /// unavailable), then acknowledges it. A job that is not one, or whose design no longer
    /// parses, is acknowledged without an analysis (logged), so it does not come back.
    async fn analyse_taken(&self, taken: Taken) {
        let Some(queue) = self.reports.as_ref() else {
            return;
        };
        let job = match taken.job {
            Ok(job) => job,
            Err(e) => {
                tracing::warn!(error = %e, "report queue: dropping a value that is not a job");
                queue.done(taken.raw);
                return;
            }
        };
        let report = sonic_rs::from_str::<Report>(&job.report).map_err(|e| e.to_string());
        let design = match parse_design(&job.design).await {
            Ok(Ok(design)) => Ok(design),
            Ok(Err(problems)) => Err(format!("the design no longer validates: {}", problems[0])),
            Err(busy) => Err(busy.to_string()),
        };
        let (mut design, report) = match (design, report) {
            (Ok(d), Ok(r)) => (d, r),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(simulation = %job.simulation_id, error = %e, "report queue: job cannot be analysed; dropped");
                queue.done(taken.raw);
                return;
            }
        };
        as_run(&mut design, job.duration_s, job.seed);
        let analysis = analyze_off_shard(design, report).await;
        let giving_up = Instant::now() + FINISH_RETRY_FOR;
        let mut pause = Duration::from_millis(100);
        loop {
            let stored = self
                .store
                .execute(
                    "UPDATE simulation_schema.simulations SET analysis = $1 WHERE id = $2",
                    vec![analysis.as_str().into(), job.simulation_id.as_str().into()],
                )
                .await;
            match stored {
                Ok(_) => break,
                Err(StoreError::Unavailable(e)) if Instant::now() < giving_up => {
                    tracing::warn!(simulation = %job.simulation_id, error = %e, "storing an analysis: retrying");
                    monoio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    // Left on this instance's list: its next start puts it back on the queue.
                    tracing::error!(simulation = %job.simulation_id, error = %e, "could not store an analysis");
                    return;
                }
            }
        }
        count("sdsim_reports_analysed_total");
        queue.done(taken.raw);
    }

    /// How the run ended when its row no longer says `running`: another instance stopped it
    /// or failed it. An unreadable row keeps the run going (the database may be briefly down).
    async fn ended_elsewhere(&self, id: &str) -> Option<Ended> {
        let rows = self
            .store
            .query(
                "SELECT status, COALESCE(error, '') FROM simulation_schema.simulations WHERE id = $1",
                vec![id.into()],
            )
            .await
            .ok()?;
        let row = rows.first()?;
        let status = row.text(0).ok()?;
        let status = TERMINAL.into_iter().find(|s| *s == status)?;
        let error = row
            .text(1)
            .ok()
            .filter(|e| !e.is_empty())
            .map(str::to_string);
        Some(Ended::Elsewhere { status, error })
    }
}

/// Applies a run's duration and seed to its design (a warm-up as long as the run shrinks to a
/// tenth of it).
pub(crate) fn as_run(design: &mut Design, duration: f64, seed: u64) {
    design.duration = duration;
    if design.warmup >= design.duration {
        design.warmup = design.duration * 0.1;
    }
    design.seed = seed;
}

/// The bottleneck analysis of `report` as JSON, computed on a helper thread: it confirms its
/// recommendations by re-running the design, which is no work for a shard.
pub(crate) async fn analyze_off_shard(design: Design, report: Report) -> String {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("sdsim-analysis".into())
        .spawn(move || {
            let findings = sdsim_engine::analysis::analyze(&design, &report, 0.7);
            let _ = tx.send(sonic_rs::to_string(&findings).unwrap_or_else(|_| "[]".into()));
        });
    match spawned {
        Ok(_) => rx.await.unwrap_or_else(|_| "[]".into()),
        Err(_) => "[]".into(),
    }
}

/// Adds one to this shard's counter `name`.
pub(crate) fn count(name: &'static str) {
    if let Some(metrics) = Shard::current().get::<sdsim_core::metrics::Metrics>() {
        metrics.inc(sdsim_core::metrics::Key::plain(name), 1);
    }
}

/// How a run ended.
enum Ended {
    /// It ran to the end here.
    Completed,
    /// It was stopped here.
    Stopped,
    /// Another instance recorded its end (`status`, with `error` when it failed).
    Elsewhere {
        status: &'static str,
        error: Option<String>,
    },
}

/// One shard's runner: where jobs arrive and their stop flags.
pub(super) struct Runner {
    pub(super) jobs: tokio::sync::mpsc::UnboundedSender<Job>,
    pub(super) stops: RefCell<HashMap<String, Rc<Stop>>>,
}

impl Runner {
    /// The stop flag of job `id` on this shard.
    fn stop_flag(id: &str) -> Rc<Stop> {
        Shard::current()
            .get::<Runner>()
            .and_then(|r| r.stops.borrow().get(id).cloned())
            .unwrap_or_default()
    }
}

/// Asks a run to stop: checked between slices, and wakes a run still waiting for a slot;
/// and takes the run's what-if changes.
#[derive(Default)]
pub(super) struct Stop {
    pub(super) set: Cell<bool>,
    /// What-if changes for the run's next slice.
    pub(super) inbox: super::whatif::Inbox,
    pub(super) notify: tokio::sync::Notify,
    /// Callers of `stop` waiting for the run to record its end.
    waiting: RefCell<Vec<tokio::sync::oneshot::Sender<()>>>,
}

impl Stop {
    /// Resolves once the run has recorded its end, or errs when the flag is dropped without
    /// that (the run is gone all the same).
    pub(super) fn on_end(&self) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.waiting.borrow_mut().push(tx);
        rx
    }

    /// Tells every waiting caller that the run's end is recorded.
    fn ended(&self) {
        for waiter in self.waiting.borrow_mut().drain(..) {
            let _ = waiter.send(());
        }
    }
}

/// A run handed to a shard.
pub(super) struct Job {
    pub(super) id: String,
    pub(super) project_id: String,
    pub(super) user_id: String,
    pub(super) design: String,
    pub(super) duration: f64,
    pub(super) seed: u64,
    pub(super) speed: f64,
}

#[derive(Serialize)]
struct Lifecycle<'a> {
    event: &'static str,
    simulation_id: &'a str,
    project_id: &'a str,
    user_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

#[derive(Serialize)]
struct Point<'a> {
    r#type: &'static str,
    simulation_id: &'a str,
    progress: f64,
    sim_time_s: f64,
    events: u64,
    metrics: sdsim_engine::engine::stats::Series,
    /// Timeline entries (faults, scaling, what-if changes) since the previous point.
    timeline: &'a [TimelineEntry],
    /// Every what-if change applied so far, with its simulated time.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    changes: &'a [AppliedChange],
}

/// The run's point now; `logged` counts the timeline entries points have carried.
fn point<'a>(
    sim: &'a Simulation,
    job: &'a Job,
    kind: &'static str,
    logged: &mut usize,
) -> Point<'a> {
    let timeline = sim.timeline();
    let new = &timeline[(*logged).min(timeline.len())..];
    *logged = timeline.len();
    Point {
        timeline: new,
        changes: sim.changes(),
        r#type: kind,
        simulation_id: &job.id,
        progress: (sim.now() / job.duration).clamp(0.0, 1.0),
        sim_time_s: sim.now(),
        events: sim.events_processed(),
        metrics: sim.series_point(),
    }
}
