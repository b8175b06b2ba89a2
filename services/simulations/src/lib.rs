//! The simulation service of seed 004: runs of a project's design.
//!
//! - [`runs`]: the service ([`Simulations`]): a bounded instance-wide queue, per-user limits,
//!   execution on a shard in slices that yield (its runner), live metrics on
//!   `simulation:data:{id}`, lifecycle on `simulation:events:*`, results and bottleneck analysis
//!   in storage; live what-if changes ([`ChangeRequest`]) reach the run on its shard and apply
//!   at its next slice.
//! - [`sweeps`]: a design over a grid of parameter values, each point a run, driven from the
//!   shard that accepted it; its table and knee stored, its progress on `simulation:sweep:{id}`.
//! - [`contract`]: [`SimulationService`], what HTTP handlers, the gateway's real-time code and
//!   remote callers use; its gRPC registration ([`SimulationContract`]) and remote client
//!   ([`RemoteSimulations`]).
//! - `wire`: how the contract's requests and responses travel in `sdsim.simulation.v1` messages.
//! - `live`: a run's live metrics as a gRPC stream.
//! - [`reports`]: [`reports::ReportQueue`], `async:reports:queue`: completed runs analysed by
//!   any simulation instance when Redis is set.
//! - [`http`]: the HTTP API (`/api/simulations/*`) over the contract.
//! - [`pb`]: the messages of `proto/sdsim/simulation/v1`.
//!
//! Projects, their designs and the caller's role in them come from `sdsim_projects`, and so
//! does the error type ([`Failure`]) that the two services share.
#![warn(missing_docs, unreachable_pub)]

pub mod contract;
pub mod http;
mod live;
pub mod reports;
pub mod runs;
pub mod sweeps;
mod wire;

/// Types generated from `proto/sdsim/simulation/v1` (`sdsim.simulation.v1`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/sdsim.simulation.v1.rs"));
}

/// The encoded `google.protobuf.FileDescriptorSet` of `proto/sdsim/simulation/v1/simulation.proto`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/file_descriptor_set.bin"));

pub use contract::{RemoteSimulations, SimulationContract, SimulationService};
pub use runs::{
    ChangeAccepted, ChangeRequest, OwnerLookup, Owners, Results, Run, Simulations, StartRequest,
    Validation,
};
pub use sdsim_projects::Failure;
pub use sweeps::{Sweep, SweepPoint, SweepRequest, SweepStarted};
