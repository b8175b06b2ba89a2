//! The live metrics of a run as a stream: the points its runner publishes on
//! `simulation:data:{id}`, with the throughput between points worked out here.

use crate::pb as ps;
use crate::runs::Simulations;
use crate::wire::state_pb;
use sdsim_contract::{Emit, Gone};
use sdsim_core::bus::{Bus, Event, Sink};
use sdsim_projects::{Caller, Failure};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// A receiver that went away ends the stream; that is not a failure of the run.
fn finish(sent: Result<(), Gone>) -> Result<(), Failure> {
    sent.or(Ok(()))
}

/// Forwards bus events to a stream task; a full queue drops the point (the next one carries
/// the cumulative figures), a closed one ends the subscription.
struct Forward(tokio::sync::mpsc::Sender<Arc<Event>>);

impl Sink for Forward {
    fn push(&self, event: &Arc<Event>) -> bool {
        !matches!(
            self.0.try_send(Arc::clone(event)),
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_))
        )
    }
}

#[derive(serde::Deserialize)]
struct LivePoint {
    r#type: String,
    progress: f64,
    events: u64,
    metrics: LiveSeries,
    /// Timeline entries since the previous point (points of older runners have none).
    #[serde(default)]
    timeline: Vec<LiveTimelineEntry>,
}

#[derive(serde::Deserialize)]
struct LiveTimelineEntry {
    t_s: f64,
    component: String,
    event: String,
}

#[derive(serde::Deserialize)]
struct LiveSeries {
    t_s: f64,
    completed: u64,
    mean_ms: f64,
    #[serde(default)]
    p50_ms: f64,
    #[serde(default)]
    p99_ms: f64,
    utilization: BTreeMap<String, f64>,
    mean_queue_length: BTreeMap<String, f64>,
}

/// How often a live stream re-reads the run's state (a failed run publishes no final point).
const LIVE_RECHECK: Duration = Duration::from_secs(2);

/// Streams the points of run `id` until it ends (or the receiver goes away): subscribe first,
/// then read the run's state, so no point falls between the two.
pub(crate) async fn stream(
    sims: &Simulations,
    who: &Caller,
    id: String,
    out: &mut dyn Emit<ps::GetLiveMetricsResponse>,
) -> Result<(), Failure> {
    let id = id.as_str();
    let bus = Bus::local().ok_or_else(|| Failure::Unavailable("no bus on this shard".into()))?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let channel = format!("simulation:data:{id}");
    let (subscription, attached) = bus
        .subscribe(&channel, Rc::new(Forward(tx)), None)
        .await
        .map_err(|e| Failure::Unavailable(e.to_string()))?;
    subscription.activate(attached.seq);
    let run = sims.get(who, id).await?;
    let message =
        |state: ps::RunState, point: Option<ps::MetricsPoint>| ps::GetLiveMetricsResponse {
            simulation_id: id.to_string(),
            state: state as i32,
            point,
        };
    if matches!(run.status.as_str(), "completed" | "stopped" | "failed") {
        return finish(out.emit(message(state_pb(&run.status), None)).await);
    }
    let mut last: Option<(f64, u64)> = None;
    loop {
        let event = monoio::select! {
            e = rx.recv() => e,
            _ = monoio::time::sleep(LIVE_RECHECK) => {
                let run = sims.get(who, id).await?;
                if matches!(run.status.as_str(), "failed") {
                    return finish(out.emit(message(ps::RunState::Failed, None)).await);
                }
                continue;
            }
        };
        let Some(event) = event else {
            return Err(Failure::Unavailable(
                "the bus closed the subscription".into(),
            ));
        };
        let Ok(p) = sonic_rs::from_slice::<LivePoint>(&event.data) else {
            continue;
        };
        let m = &p.metrics;
        let throughput = match last {
            Some((t, done)) if m.t_s > t => (m.completed.saturating_sub(done)) as f64 / (m.t_s - t),
            Some(_) => 0.0,
            None if m.t_s > 0.0 => m.completed as f64 / m.t_s,
            None => 0.0,
        };
        last = Some((m.t_s, m.completed));
        let components = m
            .utilization
            .iter()
            .map(|(id, u)| ps::ComponentMetrics {
                component: id.clone(),
                utilization: *u,
                mean_queue_length: m.mean_queue_length.get(id).copied().unwrap_or(0.0),
                ..Default::default()
            })
            .collect();
        let state = match p.r#type.as_str() {
            "completed" => ps::RunState::Completed,
            "stopped" => ps::RunState::Stopped,
            _ => ps::RunState::Running,
        };
        let point = ps::MetricsPoint {
            t_s: m.t_s,
            throughput_per_s: throughput,
            latency: Some(ps::LatencySummary {
                mean_ms: m.mean_ms,
                p50_ms: m.p50_ms,
                p99_ms: m.p99_ms,
                ..Default::default()
            }),
            components,
            completed: m.completed,
            progress: p.progress,
            events: p.events,
            timeline: p
                .timeline
                .into_iter()
                .map(|e| ps::TimelineEntry {
                    t_s: e.t_s,
                    component: e.component,
                    event: e.event,
                })
                .collect(),
        };
        let sent = out.emit(message(state, Some(point))).await;
        if sent.is_err() || state != ps::RunState::Running {
            return Ok(());
        }
    }
}
