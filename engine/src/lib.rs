//! sdsim-engine: the discrete-event simulation of system designs (the simulation service,
//! `sdsim-simulations`, runs it; `sdsim simulate` runs it from the command line).
//!
//! Layout:
//! - [`design`]: design documents (JSON) → a validated model; every problem reported with its
//!   JSON path.
//! - [`engine`]: the event loop ([`engine::Simulation`]): deterministic for a seed, runnable in
//!   slices (`advance_to`), memory bounded by the requests in the system;
//!   [`engine::dist`] (random streams and distributions), [`engine::stats`] (statistics, report);
//!   schema version 2 adds closed-loop clients with timeouts and retries, caches with a
//!   capacity, contention, LIFO and CoDel, and goodput with a metastability verdict.
//! - [`analysis`]: bottleneck ranking and M/M/c sizing, confirmed by a re-run.
//! - [`import`]: designs read from telemetry: the OpenTelemetry Collector's servicegraph
//!   metrics (Prometheus text, [`import::prometheus`]) → a version-2 design
//!   ([`import::otel_servicegraph`]).
//! - [`plot`]: goodput over time as an SVG chart (`sdsim simulate --plot-goodput`).
//! - [`sweep`]: a design run over a grid of parameter values ([`sweep::Parameter`]), a row of
//!   figures per point ([`sweep::SweepRow`]) and the knee.
//!
//! The engine does no I/O, so a server can run it in slices on a shard.
#![warn(missing_docs, unreachable_pub)]

pub mod analysis;
pub mod design;
pub mod engine;
pub mod import;
pub mod plot;
pub mod sweep;
