//! sdsim-loadtest: a thread-per-core load generator that measures without coordinated omission.
//!
//! Layout:
//! - [`run`]: the engine — pinned monoio threads, closed loop or constant-rate open loop with
//!   latencies measured from each request's intended send time ([`run::run_http`]).
//! - [`client`]: the HTTP/1.1 client connection and response parser.
//! - [`cpus`]: the CPUs the threads run on (the affinity mask the process was started with).
//! - [`flow`]: chained, mixed-protocol scenarios — users arriving in open loop, each running
//!   HTTP, WebSocket, gRPC and pause steps with values captured between them
//!   ([`flow::run_flow`]).
//! - [`grpc`]: gRPC targets — any unary method of `proto/`, the request given as JSON.
//! - [`report`]: counters, merged HDR histograms, the table and the JSON report.
//! - [`pace`]: open-loop send times to the microsecond — a timerfd per sending task instead of
//!   monoio's 1 ms timer ([`pace::Pacer`], the decision in [`pace::decide`]).
//! - [`plot`]: latency-by-percentile plots (SVG).
//! - [`scenario`]: scenario files (TOML) with open-loop phases, a WebSocket target, or a flow.
//! - [`thresholds`]: pass/fail criteria (`p99 < 50ms`, `errors < 0.1%`) and the exit code.
//! - [`ws`]: WebSocket load — many subscribed connections at a bounded connect rate, events
//!   published in open loop and timed to every receiver, pings ([`ws::run_ws`]).
#![warn(missing_docs, unreachable_pub)]

pub mod client;
pub mod cpus;
pub mod flow;
pub mod grpc;
pub mod pace;
pub mod plot;
pub mod report;
pub mod run;
pub mod scenario;
pub mod thresholds;
pub mod ws;
