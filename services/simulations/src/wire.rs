//! How the simulation service's requests and responses travel in `sdsim.simulation.v1`
//! messages (both directions: the gRPC server decodes what the remote client encodes).

use crate::contract::{Analysis, HistoryQuery, SimulationHealth, SweepId};
use crate::pb;
use crate::runs::{ChangeAccepted, ChangeRequest, Results, Run, StartRequest, Validation};
use crate::sweeps::{Sweep, SweepPoint, SweepRequest, SweepStarted};
use sdsim_contract::{required, RequestWire, ResponseWire, ServiceHealth};
use sdsim_engine::sweep::{Busiest, SweepRow};
use sdsim_projects::projects::wire::{json_text, json_value};
use sdsim_projects::{DesignProblem, Failure};
use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

sdsim_contract::acts_for!(
    pb::StartSimulationRequest,
    pb::StopSimulationRequest,
    pb::GetSimulationStatusRequest,
    pb::GetSimulationResultsRequest,
    pb::GetLiveMetricsRequest,
    pb::GetPerformanceAnalysisRequest,
    pb::ValidateConfigurationRequest,
    pb::GetSimulationHistoryRequest,
    pb::ChangeSimulationRequest,
    pb::StartSweepRequest,
    pb::GetSweepRequest,
    pb::StopSweepRequest,
);

/// The service answered a message without the run.
fn missing_run() -> Failure {
    Failure::Unavailable("the simulation service answered without the run".into())
}

/// The contract's state of a stored status.
pub(crate) fn state_pb(status: &str) -> pb::RunState {
    match status {
        "queued" => pb::RunState::Queued,
        "running" => pb::RunState::Running,
        "completed" => pb::RunState::Completed,
        "stopped" => pb::RunState::Stopped,
        "failed" => pb::RunState::Failed,
        _ => pb::RunState::Unspecified,
    }
}

fn status_name(state: i32) -> String {
    match pb::RunState::try_from(state) {
        Ok(pb::RunState::Queued) => "queued",
        Ok(pb::RunState::Running) => "running",
        Ok(pb::RunState::Completed) => "completed",
        Ok(pb::RunState::Stopped) => "stopped",
        Ok(pb::RunState::Failed) => "failed",
        _ => "unknown",
    }
    .into()
}

fn run_pb(r: &Run) -> pb::GetSimulationStatusResponse {
    pb::GetSimulationStatusResponse {
        simulation_id: r.simulation_id.clone(),
        project_id: r.project_id.clone(),
        state: state_pb(&r.status) as i32,
        duration_s: r.duration_s,
        started_at: r.started_at.unwrap_or(0),
        finished_at: r.finished_at.unwrap_or(0),
        error: r.error.clone().unwrap_or_default(),
        project_version: r.project_version,
        user_id: r.user_id.clone(),
        seed: r.seed,
        created_at: r.created_at,
        websocket_channel: r.websocket_channel.clone(),
        sweep_id: r.sweep_id.clone().unwrap_or_default(),
    }
}

fn run_of(r: pb::GetSimulationStatusResponse) -> Run {
    Run {
        status: status_name(r.state),
        started_at: (r.started_at != 0).then_some(r.started_at),
        finished_at: (r.finished_at != 0).then_some(r.finished_at),
        error: (!r.error.is_empty()).then_some(r.error),
        simulation_id: r.simulation_id,
        project_id: r.project_id,
        project_version: r.project_version,
        user_id: r.user_id,
        duration_s: r.duration_s,
        seed: r.seed,
        created_at: r.created_at,
        websocket_channel: r.websocket_channel,
        sweep_id: (!r.sweep_id.is_empty()).then_some(r.sweep_id),
    }
}

fn f64_of(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(|x| x.as_f64()).unwrap_or(0.0)
}

fn u64_of(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(|x| x.as_u64()).unwrap_or(0)
}

/// Implements [`RequestWire`] for requests whose one field besides `user_id` is the run's id.
macro_rules! run_id_request {
    ($($message:path),* $(,)?) => {
        $(impl RequestWire<$message> for String {
            type Error = Failure;
            fn into_message(self, user_id: &str) -> $message {
                $message { user_id: user_id.into(), simulation_id: self }
            }
            fn from_message(m: $message) -> Result<String, Failure> {
                Ok(m.simulation_id)
            }
        })*
    };
}

run_id_request!(
    pb::StopSimulationRequest,
    pb::GetSimulationStatusRequest,
    pb::GetSimulationResultsRequest,
    pb::GetPerformanceAnalysisRequest,
);

impl RequestWire<pb::GetLiveMetricsRequest> for String {
    type Error = Failure;
    fn into_message(self, user_id: &str) -> pb::GetLiveMetricsRequest {
        pb::GetLiveMetricsRequest {
            user_id: user_id.into(),
            simulation_id: self,
        }
    }
    fn from_message(m: pb::GetLiveMetricsRequest) -> Result<String, Failure> {
        Ok(required(m.simulation_id, "simulation_id")?)
    }
}

/// A stream's points travel as they are made: the message is the item.
impl ResponseWire<pb::GetLiveMetricsResponse> for pb::GetLiveMetricsResponse {
    type Error = Failure;
    fn into_message(self) -> pb::GetLiveMetricsResponse {
        self
    }
    fn from_message(m: pb::GetLiveMetricsResponse) -> Result<Self, Failure> {
        Ok(m)
    }
}

impl RequestWire<pb::StartSimulationRequest> for StartRequest {
    type Error = Failure;
    fn into_message(self, user_id: &str) -> pb::StartSimulationRequest {
        pb::StartSimulationRequest {
            user_id: user_id.into(),
            project_id: self.project_id,
            duration_s: self.duration_s,
            seed: self.seed,
            speed: self.speed,
        }
    }
    fn from_message(m: pb::StartSimulationRequest) -> Result<StartRequest, Failure> {
        Ok(StartRequest {
            project_id: m.project_id,
            duration_s: m.duration_s,
            seed: m.seed,
            speed: m.speed,
        })
    }
}

impl ResponseWire<pb::StartSimulationResponse> for Run {
    type Error = Failure;
    fn into_message(self) -> pb::StartSimulationResponse {
        pb::StartSimulationResponse {
            simulation_id: self.simulation_id.clone(),
            state: state_pb(&self.status) as i32,
            websocket_channel: self.websocket_channel.clone(),
            simulation: Some(run_pb(&self)),
        }
    }
    fn from_message(m: pb::StartSimulationResponse) -> Result<Run, Failure> {
        m.simulation.map(run_of).ok_or_else(missing_run)
    }
}

impl ResponseWire<pb::StopSimulationResponse> for Run {
    type Error = Failure;
    fn into_message(self) -> pb::StopSimulationResponse {
        pb::StopSimulationResponse {
            state: state_pb(&self.status) as i32,
            simulation: Some(run_pb(&self)),
        }
    }
    fn from_message(m: pb::StopSimulationResponse) -> Result<Run, Failure> {
        m.simulation.map(run_of).ok_or_else(missing_run)
    }
}

impl ResponseWire<pb::GetSimulationStatusResponse> for Run {
    type Error = Failure;
    fn into_message(self) -> pb::GetSimulationStatusResponse {
        run_pb(&self)
    }
    fn from_message(m: pb::GetSimulationStatusResponse) -> Result<Run, Failure> {
        Ok(run_of(m))
    }
}

impl ResponseWire<pb::GetSimulationResultsResponse> for Results {
    type Error = Failure;
    /// The typed summary is read from the engine's report.
    fn into_message(self) -> pb::GetSimulationResultsResponse {
        let e2e = self.report.get("end_to_end").cloned().unwrap_or_default();
        let latency = |v: &Value, mean: &str, max: Option<&str>| pb::LatencySummary {
            mean_ms: f64_of(v, mean),
            p50_ms: f64_of(v, "p50_ms"),
            p95_ms: f64_of(v, "p95_ms"),
            p99_ms: f64_of(v, "p99_ms"),
            max_ms: max.map_or(0.0, |k| f64_of(v, k)),
        };
        let mut components = Vec::new();
        if let Some(map) = self.report.get("components").and_then(|c| c.as_object()) {
            for (id, c) in map.iter() {
                components.push(pb::ComponentMetrics {
                    component: id.to_string(),
                    kind: c
                        .get("kind")
                        .and_then(|k| k.as_str())
                        .unwrap_or_default()
                        .into(),
                    arrivals_per_s: 0.0,
                    throughput_per_s: f64_of(c, "throughput_per_s"),
                    utilization: f64_of(c, "utilization"),
                    mean_queue_length: f64_of(c, "mean_queue_length"),
                    dropped: u64_of(c, "dropped"),
                    errors: u64_of(c, "errors"),
                    latency: Some(latency(c, "mean_response_ms", None)),
                });
            }
        }
        pb::GetSimulationResultsResponse {
            simulation_id: self.simulation.simulation_id.clone(),
            state: state_pb(&self.simulation.status) as i32,
            requests: u64_of(&e2e, "arrivals"),
            completed: u64_of(&e2e, "completed"),
            failed: u64_of(&e2e, "dropped") + u64_of(&e2e, "errors"),
            end_to_end: Some(latency(&e2e, "mean_ms", Some("max_ms"))),
            components,
            report_json: json_text(&self.report),
            simulation: Some(run_pb(&self.simulation)),
            analysis_json: json_text(&self.analysis),
        }
    }
    fn from_message(m: pb::GetSimulationResultsResponse) -> Result<Results, Failure> {
        Ok(Results {
            simulation: run_of(m.simulation.unwrap_or_default()),
            report: json_value(&m.report_json, "report_json")?,
            analysis: json_value(&m.analysis_json, "analysis_json")?,
        })
    }
}

impl ResponseWire<pb::GetPerformanceAnalysisResponse> for Analysis {
    type Error = Failure;
    /// The findings as bottlenecks (those not `ok`) and recommendations.
    fn into_message(self) -> pb::GetPerformanceAnalysisResponse {
        let mut bottlenecks = Vec::new();
        let mut recommendations = Vec::new();
        if let Some(list) = self.0.as_array() {
            for f in list.iter() {
                let status = f.get("status").and_then(|s| s.as_str()).unwrap_or("ok");
                let text = |key: &str| {
                    f.get(key)
                        .and_then(|s| s.as_str())
                        .unwrap_or_default()
                        .to_string()
                };
                let component = text("component");
                let recommendation = match f.get("recommendation").filter(|r| !r.is_null()) {
                    Some(r) => format!(
                        "{component}: instances {} -> {} (predicted mean wait {:.1} ms)",
                        u64_of(r, "instances_now"),
                        u64_of(r, "instances"),
                        f64_of(r, "predicted_wait_ms")
                    ),
                    None => String::new(),
                };
                if !recommendation.is_empty() {
                    recommendations.push(recommendation.clone());
                }
                if status != "ok" {
                    bottlenecks.push(pb::Bottleneck {
                        component,
                        reason: text("explanation"),
                        utilization: f64_of(f, "utilization"),
                        recommendation,
                    });
                }
            }
        }
        pb::GetPerformanceAnalysisResponse {
            bottlenecks,
            recommendations,
            analysis_json: json_text(&self.0),
        }
    }
    fn from_message(m: pb::GetPerformanceAnalysisResponse) -> Result<Analysis, Failure> {
        Ok(Analysis(json_value(&m.analysis_json, "analysis_json")?))
    }
}

impl RequestWire<pb::ValidateConfigurationRequest> for String {
    type Error = Failure;
    fn into_message(self, user_id: &str) -> pb::ValidateConfigurationRequest {
        pb::ValidateConfigurationRequest {
            user_id: user_id.into(),
            design_json: self,
        }
    }
    fn from_message(m: pb::ValidateConfigurationRequest) -> Result<String, Failure> {
        Ok(required(m.design_json, "design_json")?)
    }
}

impl ResponseWire<pb::ValidateConfigurationResponse> for Validation {
    type Error = Failure;
    fn into_message(self) -> pb::ValidateConfigurationResponse {
        pb::ValidateConfigurationResponse {
            valid: self.valid,
            problems: self
                .problems
                .into_iter()
                .map(|p| pb::DesignProblem {
                    path: p.path,
                    message: p.message,
                })
                .collect(),
        }
    }
    fn from_message(m: pb::ValidateConfigurationResponse) -> Result<Validation, Failure> {
        Ok(Validation {
            valid: m.valid,
            problems: m
                .problems
                .into_iter()
                .map(|p| DesignProblem {
                    path: p.path,
                    message: p.message,
                })
                .collect(),
        })
    }
}

impl RequestWire<pb::GetSimulationHistoryRequest> for HistoryQuery {
    type Error = Failure;
    fn into_message(self, user_id: &str) -> pb::GetSimulationHistoryRequest {
        pb::GetSimulationHistoryRequest {
            user_id: user_id.into(),
            project_id: self.project_id.unwrap_or_default(),
            page_size: self.limit.clamp(1, 200) as i32,
        }
    }
    fn from_message(m: pb::GetSimulationHistoryRequest) -> Result<HistoryQuery, Failure> {
        Ok(HistoryQuery {
            project_id: (!m.project_id.is_empty()).then_some(m.project_id),
            limit: if m.page_size == 0 {
                50
            } else {
                m.page_size.into()
            },
        })
    }
}

impl ResponseWire<pb::GetSimulationHistoryResponse> for Vec<Run> {
    type Error = Failure;
    fn into_message(self) -> pb::GetSimulationHistoryResponse {
        pb::GetSimulationHistoryResponse {
            runs: self.iter().map(run_pb).collect(),
        }
    }
    fn from_message(m: pb::GetSimulationHistoryResponse) -> Result<Vec<Run>, Failure> {
        Ok(m.runs.into_iter().map(run_of).collect())
    }
}

impl RequestWire<pb::HealthCheckRequest> for () {
    type Error = Failure;
    fn into_message(self, _user_id: &str) -> pb::HealthCheckRequest {
        pb::HealthCheckRequest {}
    }
    fn from_message(_: pb::HealthCheckRequest) -> Result<(), Failure> {
        Ok(())
    }
}

impl ResponseWire<pb::HealthCheckResponse> for SimulationHealth {
    type Error = Failure;
    fn into_message(self) -> pb::HealthCheckResponse {
        pb::HealthCheckResponse {
            status: self.service.status,
            dependencies: self.service.dependencies,
            version: self.service.version,
            queued: self.queued as i32,
            running: self.running as i32,
        }
    }
    fn from_message(m: pb::HealthCheckResponse) -> Result<SimulationHealth, Failure> {
        Ok(SimulationHealth {
            service: ServiceHealth {
                status: m.status,
                dependencies: m.dependencies,
                version: m.version,
            },
            queued: m.queued.max(0) as usize,
            running: m.running.max(0) as usize,
        })
    }
}

impl RequestWire<pb::ChangeSimulationRequest> for ChangeRequest {
    type Error = Failure;
    fn into_message(self, user_id: &str) -> pb::ChangeSimulationRequest {
        pb::ChangeSimulationRequest {
            user_id: user_id.into(),
            simulation_id: self.simulation_id,
            changes_json: self.changes,
        }
    }
    fn from_message(m: pb::ChangeSimulationRequest) -> Result<ChangeRequest, Failure> {
        Ok(ChangeRequest {
            simulation_id: required(m.simulation_id, "simulation_id")?,
            changes: m.changes_json,
        })
    }
}

impl ResponseWire<pb::ChangeSimulationResponse> for ChangeAccepted {
    type Error = Failure;
    fn into_message(self) -> pb::ChangeSimulationResponse {
        pb::ChangeSimulationResponse {
            simulation_id: self.id,
            accepted_json: sonic_rs::to_string(&self.accepted).unwrap_or_else(|_| "[]".into()),
            simulated_s: self.simulated_s,
        }
    }
    fn from_message(m: pb::ChangeSimulationResponse) -> Result<Self, Failure> {
        let accepted = sonic_rs::from_str(&m.accepted_json).map_err(|e| {
            Failure::Unavailable(format!(
                "the simulation service answered changes that do not read back: {e}"
            ))
        })?;
        Ok(ChangeAccepted {
            id: m.simulation_id,
            accepted,
            simulated_s: m.simulated_s,
        })
    }
}

impl RequestWire<pb::StartSweepRequest> for SweepRequest {
    type Error = Failure;
    fn into_message(self, user_id: &str) -> pb::StartSweepRequest {
        pb::StartSweepRequest {
            user_id: user_id.into(),
            project_id: self.project_id,
            parameters_json: self.parameters,
            slo_p99_ms: self.slo_p99_ms,
            duration_s: self.duration_s,
            seed: self.seed,
            max_points: self.max_points,
        }
    }
    /// The fields are checked by the service, as for an HTTP body.
    fn from_message(m: pb::StartSweepRequest) -> Result<SweepRequest, Failure> {
        Ok(SweepRequest {
            project_id: m.project_id,
            parameters: m.parameters_json,
            slo_p99_ms: m.slo_p99_ms,
            duration_s: m.duration_s,
            seed: m.seed,
            max_points: m.max_points,
        })
    }
}

impl ResponseWire<pb::StartSweepResponse> for SweepStarted {
    type Error = Failure;
    fn into_message(self) -> pb::StartSweepResponse {
        pb::StartSweepResponse {
            sweep_id: self.id,
            points: self.points as u64,
            channel: self.channel,
        }
    }
    fn from_message(m: pb::StartSweepResponse) -> Result<SweepStarted, Failure> {
        Ok(SweepStarted {
            id: m.sweep_id,
            points: m.points as usize,
            channel: m.channel,
        })
    }
}

/// Implements [`RequestWire`] for requests whose one field besides `user_id` is a sweep's id.
macro_rules! sweep_id_request {
    ($($message:path),* $(,)?) => {
        $(impl RequestWire<$message> for SweepId {
            type Error = Failure;
            fn into_message(self, user_id: &str) -> $message {
                $message { user_id: user_id.into(), sweep_id: self.0 }
            }
            fn from_message(m: $message) -> Result<SweepId, Failure> {
                Ok(SweepId(required(m.sweep_id, "sweep_id")?))
            }
        })*
    };
}

sweep_id_request!(pb::GetSweepRequest, pb::StopSweepRequest);

fn sweep_row_pb(r: &SweepRow) -> pb::SweepRow {
    let (component, utilization) = r.busiest.as_ref().map_or((String::new(), 0.0), |b| {
        (b.component.clone(), b.utilization)
    });
    pb::SweepRow {
        offered_per_s: r.offered_per_s,
        throughput_per_s: r.throughput_per_s,
        p50_ms: r.p50_ms,
        p99_ms: r.p99_ms,
        drop_rate: r.drop_rate,
        busiest_component: component,
        busiest_utilization: utilization,
        cost_per_hour: r.cost_per_hour,
        cost_per_million_requests: r.cost_per_million_requests,
    }
}

fn sweep_row_of(values: Vec<String>, r: pb::SweepRow) -> SweepRow {
    SweepRow {
        values,
        offered_per_s: r.offered_per_s,
        throughput_per_s: r.throughput_per_s,
        p50_ms: r.p50_ms,
        p99_ms: r.p99_ms,
        drop_rate: r.drop_rate,
        busiest: (!r.busiest_component.is_empty()).then_some(Busiest {
            component: r.busiest_component,
            utilization: r.busiest_utilization,
        }),
        cost_per_hour: r.cost_per_hour,
        cost_per_million_requests: r.cost_per_million_requests,
    }
}

impl ResponseWire<pb::Sweep> for Sweep {
    type Error = Failure;
    fn into_message(self) -> pb::Sweep {
        pb::Sweep {
            sweep_id: self.id,
            project_id: self.project_id,
            project_version: self.project_version,
            user_id: self.user_id,
            status: self.status,
            parameters: self.parameters,
            slo_p99_ms: self.slo_p99_ms,
            points: self.points as u64,
            rows: self
                .rows
                .into_iter()
                .map(|p| pb::SweepPoint {
                    index: p.index as u64,
                    row: p.row.as_ref().map(sweep_row_pb),
                    values: p.values,
                    simulation_id: p.simulation_id.unwrap_or_default(),
                    status: p.status,
                    error: p.error.unwrap_or_default(),
                })
                .collect(),
            knee: self.knee.map(|k| k as u64),
            created_at: self.created_at,
            finished_at: self.finished_at.unwrap_or(0),
            error: self.error.unwrap_or_default(),
            channel: self.channel,
        }
    }
    fn from_message(m: pb::Sweep) -> Result<Sweep, Failure> {
        Ok(Sweep {
            id: m.sweep_id,
            project_id: m.project_id,
            project_version: m.project_version,
            user_id: m.user_id,
            status: m.status,
            parameters: m.parameters,
            slo_p99_ms: m.slo_p99_ms,
            points: m.points as usize,
            rows: m
                .rows
                .into_iter()
                .map(|p| SweepPoint {
                    index: p.index as usize,
                    row: p.row.map(|r| sweep_row_of(p.values.clone(), r)),
                    values: p.values,
                    simulation_id: (!p.simulation_id.is_empty()).then_some(p.simulation_id),
                    status: p.status,
                    error: (!p.error.is_empty()).then_some(p.error),
                })
                .collect(),
            knee: m.knee.map(|k| k as usize),
            created_at: m.created_at,
            finished_at: (m.finished_at != 0).then_some(m.finished_at),
            error: (!m.error.is_empty()).then_some(m.error),
            channel: m.channel,
        })
    }
}
