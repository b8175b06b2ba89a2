//! `sdsim.simulation.v1.SimulationService`: the simulation service's contract, and its
//! implementation in this process by [`Simulations`].
//!
//! HTTP handlers and the gateway's real-time code call [`SimulationService`];
//! [`SimulationContract::register`] serves any implementation over gRPC and
//! [`RemoteSimulations`] implements it over gRPC. How each request and response travels is in
//! `wire.rs`; the live metrics stream is in `live.rs`.

use crate::live;
use crate::pb;
use crate::runs::{
    ChangeAccepted, ChangeRequest, Results, Run, Simulations, StartRequest, Validation,
};
use crate::sweeps::{Sweep, SweepRequest, SweepStarted};
use sdsim_contract::{Emit, Pending, ServiceHealth};
use sdsim_projects::{Caller, Failure};

sdsim_contract::contract! {
    /// The simulation service: runs of a project's design, their live metrics and results.
    pub trait SimulationService {
        service SimulationContract = "sdsim.simulation.v1.SimulationService";
        error Failure;
        remote RemoteSimulations;
        /// Queues a run of a project's current design.
        caller fn start_simulation(StartRequest) -> Run
            = StartSimulation(pb::StartSimulationRequest) -> pb::StartSimulationResponse;
        /// Stops a queued or running run (by id).
        caller fn stop_simulation(String) -> Run
            = StopSimulation(pb::StopSimulationRequest) -> pb::StopSimulationResponse;
        /// A run the caller can see (by id).
        caller fn get_simulation_status(String) -> Run
            = GetSimulationStatus(pb::GetSimulationStatusRequest)
                -> pb::GetSimulationStatusResponse;
        /// A finished (or stopped) run's report and analysis (by id).
        caller fn get_simulation_results(String) -> Results
            = GetSimulationResults(pb::GetSimulationResultsRequest)
                -> pb::GetSimulationResultsResponse;
        /// A run's metrics (by id), one message per point until the run ends.
        stream fn get_live_metrics(String) -> pb::GetLiveMetricsResponse
            = GetLiveMetrics(pb::GetLiveMetricsRequest) -> pb::GetLiveMetricsResponse;
        /// A finished run's bottleneck analysis (by id).
        caller fn get_performance_analysis(String) -> Analysis
            = GetPerformanceAnalysis(pb::GetPerformanceAnalysisRequest)
                -> pb::GetPerformanceAnalysisResponse;
        /// Checks a design (JSON text) without running it.
        caller fn validate_configuration(String) -> Validation
            = ValidateConfiguration(pb::ValidateConfigurationRequest)
                -> pb::ValidateConfigurationResponse;
        /// Runs of a project, or the caller's own, newest first.
        caller fn get_simulation_history(HistoryQuery) -> Vec<Run>
            = GetSimulationHistory(pb::GetSimulationHistoryRequest)
                -> pb::GetSimulationHistoryResponse;
        /// Changes a running run (live what-if) at its next slice.
        caller fn change_simulation(ChangeRequest) -> ChangeAccepted
            = ChangeSimulation(pb::ChangeSimulationRequest) -> pb::ChangeSimulationResponse;
        /// Starts a sweep of a project's design over a grid of parameter values.
        caller fn start_sweep(SweepRequest) -> SweepStarted
            = StartSweep(pb::StartSweepRequest) -> pb::StartSweepResponse;
        /// A sweep's status and table so far (by id).
        caller fn get_sweep(SweepId) -> Sweep = GetSweep(pb::GetSweepRequest) -> pb::Sweep;
        /// Stops a running sweep (by id).
        caller fn stop_sweep(SweepId) -> Sweep = StopSweep(pb::StopSweepRequest) -> pb::Sweep;
        /// Serving while storage answers, with the runs queued and running here.
        open fn health_check(()) -> SimulationHealth
            = HealthCheck(pb::HealthCheckRequest) -> pb::HealthCheckResponse;
    }
}

/// A finished run's bottleneck findings (the analysis JSON of [`Results::analysis`]).
#[derive(Debug, Clone)]
pub struct Analysis(pub sonic_rs::Value);

/// A sweep's id (a type of its own: a run's id is a `String` on the same wire).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepId(pub String);

/// Which runs to list.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// A project's runs (any member may list them); `None`: the caller's own.
    pub project_id: Option<String>,
    /// At most this many (1 to 200).
    pub limit: i64,
}

/// The simulation service's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulationHealth {
    /// Storage and version.
    pub service: ServiceHealth,
    /// Runs waiting for a slot on this instance.
    pub queued: usize,
    /// Runs executing on this instance.
    pub running: usize,
}

impl SimulationService for Simulations {
    fn start_simulation<'a>(
        &'a self,
        who: &'a Caller,
        start: StartRequest,
    ) -> Pending<'a, Run, Failure> {
        Box::pin(self.start(who, start))
    }

    fn stop_simulation<'a>(&'a self, who: &'a Caller, id: String) -> Pending<'a, Run, Failure> {
        Box::pin(async move { self.stop(who, &id).await })
    }

    fn get_simulation_status<'a>(
        &'a self,
        who: &'a Caller,
        id: String,
    ) -> Pending<'a, Run, Failure> {
        Box::pin(async move { self.get(who, &id).await })
    }

    fn get_simulation_results<'a>(
        &'a self,
        who: &'a Caller,
        id: String,
    ) -> Pending<'a, Results, Failure> {
        Box::pin(async move { self.results(who, &id).await })
    }

    fn get_live_metrics<'a>(
        &'a self,
        who: &'a Caller,
        id: String,
        out: &'a mut dyn Emit<pb::GetLiveMetricsResponse>,
    ) -> Pending<'a, (), Failure> {
        Box::pin(live::stream(self, who, id, out))
    }

    fn get_performance_analysis<'a>(
        &'a self,
        who: &'a Caller,
        id: String,
    ) -> Pending<'a, Analysis, Failure> {
        Box::pin(async move { Ok(Analysis(self.results(who, &id).await?.analysis)) })
    }

    fn validate_configuration<'a>(
        &'a self,
        _who: &'a Caller,
        design: String,
    ) -> Pending<'a, Validation, Failure> {
        Box::pin(async move { self.validate(&design).await })
    }

    fn get_simulation_history<'a>(
        &'a self,
        who: &'a Caller,
        q: HistoryQuery,
    ) -> Pending<'a, Vec<Run>, Failure> {
        Box::pin(async move { self.history(who, q.project_id.as_deref(), q.limit).await })
    }

    fn change_simulation<'a>(
        &'a self,
        who: &'a Caller,
        req: ChangeRequest,
    ) -> Pending<'a, ChangeAccepted, Failure> {
        Box::pin(self.change(who, req))
    }

    fn start_sweep<'a>(
        &'a self,
        who: &'a Caller,
        req: SweepRequest,
    ) -> Pending<'a, SweepStarted, Failure> {
        Box::pin(self.start_sweep(who, req))
    }

    fn get_sweep<'a>(&'a self, who: &'a Caller, id: SweepId) -> Pending<'a, Sweep, Failure> {
        Box::pin(async move { Simulations::get_sweep(self, who, &id.0).await })
    }

    fn stop_sweep<'a>(&'a self, who: &'a Caller, id: SweepId) -> Pending<'a, Sweep, Failure> {
        Box::pin(async move { Simulations::stop_sweep(self, who, &id.0).await })
    }

    fn health_check<'a>(&'a self, (): ()) -> Pending<'a, SimulationHealth, Failure> {
        Box::pin(async move {
            let up = self.store().ping().await.is_ok();
            let (queued, running) = self.load();
            Ok(SimulationHealth {
                service: ServiceHealth::of_storage(up, env!("CARGO_PKG_VERSION")),
                queued,
                running,
            })
        })
    }
}
