//! Drives one sweep from the shard that accepted it: queues its points in grid order, at most
//! `concurrency` at a time, as runs of its user (each placed like any run, on the least busy
//! shard); when a point's run has recorded its end, reads its report, stores the table so far
//! and publishes the point on `simulation:sweep:{id}`. A point that finds the instance's queue
//! full (`simulation.max_queued`) waits for a place rather than fail: the sweep is in no hurry.
//! A stop is the sweep's stored status: checked before each point is queued (and by the
//! point's insert itself), so none starts after it; the running ones are stopped by whoever
//! stopped the sweep.

use super::{channel, knee_of, placement, row_of_report, to_json, PointJob, SweepPoint};
use crate::runs::Simulations;
use futures_util::stream::{FuturesUnordered, StreamExt};
use sdsim_projects::{now_ms, publish, Failure};
use serde::Serialize;
use std::time::Duration;

/// A sweep to drive.
pub(crate) struct Drive {
    pub(crate) id: String,
    pub(crate) user_id: String,
    pub(crate) project_id: String,
    pub(crate) version: i64,
    pub(crate) slo_p99_ms: Option<f64>,
    pub(crate) concurrency: usize,
    pub(crate) jobs: Vec<PointJob>,
}

#[derive(Serialize)]
struct PointEvent<'a> {
    r#type: &'static str,
    sweep_id: &'a str,
    index: usize,
    values: &'a [String],
    simulation_id: Option<&'a str>,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    row: Option<&'a sdsim_engine::sweep::SweepRow>,
}

#[derive(Serialize)]
struct EndEvent<'a> {
    r#type: &'a str,
    sweep_id: &'a str,
    points: usize,
    completed: usize,
    knee: Option<usize>,
}

/// How long a sweep with no point running waits before it asks again for a place in a full
/// queue (`simulation.max_queued`).
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(50);

/// How long the writes of a sweep's progress are retried while the database is unavailable.
const WRITE_RETRY_FOR: Duration = Duration::from_secs(60);

impl Simulations {
    /// Runs the sweep's points and records its table and end.
    pub(crate) async fn drive(&self, d: Drive) {
        let mut table: Vec<Option<SweepPoint>> = vec![None; d.jobs.len()];
        let mut pending = FuturesUnordered::new();
        let mut next = 0;
        let mut stopped = false;
        loop {
            // The instance's queue is full: this point waits for one of ours to end, or a pause.
            let mut full = false;
            while !stopped && !full && pending.len() < d.concurrency.max(1) && next < d.jobs.len() {
                let job = &d.jobs[next];
                if self.sweep_stopped(&d.id).await {
                    stopped = true;
                    break;
                }
                match self.enqueue(placement(&d, job)).await {
                    Ok((run, ended)) => {
                        next += 1;
                        if self.sweep_stopped(&d.id).await {
                            // Stopped while this point was being recorded: whoever stopped
                            // the sweep may not have seen it; the run ends at its next
                            // status check.
                            self.stop_point(&run).await;
                            stopped = true;
                        }
                        let index = job.index;
                        pending.push(async move {
                            // An error says the run's stop flag went without it: ended all the same.
                            let _ = ended.await;
                            (index, run)
                        });
                    }
                    Err(Failure::QueueFull(_)) => full = true,
                    Err(Failure::Conflict(_)) => stopped = true,
                    Err(e) => {
                        next += 1;
                        let point = SweepPoint {
                            index: job.index,
                            values: job.values.clone(),
                            simulation_id: None,
                            status: "failed".into(),
                            error: Some(e.to_string()),
                            row: None,
                        };
                        self.point_done(&d, &mut table, point).await;
                    }
                }
            }
            if pending.is_empty() {
                if full && !stopped {
                    monoio::time::sleep(QUEUE_FULL_PAUSE).await;
                    continue;
                }
                break;
            }
            let Some((index, run)) = pending.next().await else {
                break;
            };
            let point = self.point_of_run(&d.jobs[index], run).await;
            self.point_done(&d, &mut table, point).await;
        }
        let completed = table.iter().flatten().filter(|p| p.row.is_some()).count();
        let (status, knee) = if stopped || self.sweep_stopped(&d.id).await {
            ("stopped", None)
        } else {
            ("completed", knee_of(&table, d.slo_p99_ms))
        };
        let knee_value = knee.map_or(sdsim_store::Value::Null, |k| (k as i64).into());
        self.write_retrying(
            &d.id,
            "UPDATE simulation_schema.sweeps SET status = CASE WHEN status = 'running' THEN $1 ELSE status END, knee = $2, points_done = $3, finished_at = COALESCE(finished_at, $4) WHERE id = $5",
            vec![
                status.into(),
                knee_value,
                to_json(&table).into(),
                now_ms().into(),
                d.id.as_str().into(),
            ],
        )
        .await;
        publish(
            &channel(&d.id),
            &EndEvent {
                r#type: status,
                sweep_id: &d.id,
                points: d.jobs.len(),
                completed,
                knee,
            },
        )
        .await;
    }

    /// Whether the sweep's stored status says it was stopped (an unreadable row does not).
    async fn sweep_stopped(&self, id: &str) -> bool {
        let row = self
            .store()
            .query_opt(
                "SELECT status FROM simulation_schema.sweeps WHERE id = $1",
                vec![id.into()],
            )
            .await;
        matches!(row, Ok(Some(r)) if r.text(0).is_ok_and(|s| s != "running"))
    }

    /// Records a point's run as stopped (its runner notices at its next status check).
    async fn stop_point(&self, run: &str) {
        self.write_retrying(
            run,
            "UPDATE simulation_schema.simulations SET status = 'stopped', finished_at = $1 WHERE id = $2 AND status IN ('queued', 'running')",
            vec![now_ms().into(), run.into()],
        )
        .await;
    }

    /// The table entry of a point whose run has ended, from its stored row.
    async fn point_of_run(&self, job: &PointJob, run: String) -> SweepPoint {
        let row = self
            .store()
            .query_opt(
                "SELECT status, COALESCE(error, ''), COALESCE(report, '') FROM simulation_schema.simulations WHERE id = $1",
                vec![run.as_str().into()],
            )
            .await;
        let (status, error, row) = match row {
            Ok(Some(r)) => {
                let status = r.text(0).unwrap_or("failed").to_string();
                let error = r.text(1).unwrap_or_default().to_string();
                let figures = (status == "completed")
                    .then(|| row_of_report(job.values.clone(), r.text(2).unwrap_or_default()))
                    .flatten();
                (status, (!error.is_empty()).then_some(error), figures)
            }
            Ok(None) => ("failed".into(), Some("the run's row is gone".into()), None),
            Err(e) => ("failed".into(), Some(format!("reading the run: {e}")), None),
        };
        SweepPoint {
            index: job.index,
            values: job.values.clone(),
            simulation_id: Some(run),
            status,
            error,
            row,
        }
    }

    /// Records a finished point in the table (stored) and publishes it.
    async fn point_done(&self, d: &Drive, table: &mut [Option<SweepPoint>], point: SweepPoint) {
        let index = point.index;
        table[index] = Some(point);
        self.write_retrying(
            &d.id,
            "UPDATE simulation_schema.sweeps SET points_done = $1 WHERE id = $2",
            vec![to_json(&table).into(), d.id.as_str().into()],
        )
        .await;
        let Some(p) = &table[index] else { return };
        publish(
            &channel(&d.id),
            &PointEvent {
                r#type: "point",
                sweep_id: &d.id,
                index,
                values: &p.values,
                simulation_id: p.simulation_id.as_deref(),
                status: &p.status,
                error: p.error.as_deref(),
                row: p.row.as_ref(),
            },
        )
        .await;
    }

    /// A write of the sweep's progress, retried while the database is unavailable.
    async fn write_retrying(&self, id: &str, sql: &str, params: Vec<sdsim_store::Value>) {
        let giving_up = std::time::Instant::now() + WRITE_RETRY_FOR;
        let mut pause = Duration::from_millis(100);
        loop {
            match self.store().execute(sql, params.clone()).await {
                Ok(_) => return,
                Err(sdsim_store::StoreError::Unavailable(e))
                    if std::time::Instant::now() < giving_up =>
                {
                    tracing::warn!(sweep = id, error = %e, "recording a sweep's progress: retrying");
                    monoio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    tracing::error!(sweep = id, error = %e, "could not record a sweep's progress");
                    return;
                }
            }
        }
    }
}
