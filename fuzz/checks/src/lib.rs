//! The invariants of sdsim's fuzz targets, in one place: the libFuzzer targets in `fuzz/`
//! call [`Target::check`] on each input, and this crate's test replays every file of
//! `fuzz/corpus/<target>/` through the same function on the stable toolchain.
//!
//! Layout (one module per decoder family; every check asserts invariants, not only "no panic"):
//! - [`http`]: HTTP/1.1 requests and chunked bodies (`sdsim_net::http`).
//! - [`ws`]: WebSocket frames, with and without permessage-deflate (`sdsim_net::ws`).
//! - [`grpc`]: gRPC message frames and `grpc-status-details-bin` (`sdsim_net::grpc`).
//! - [`token`]: access tokens (`sdsim_auth::token`).
//! - [`design`]: design documents (`sdsim_engine::design`, `sdsim_projects::projects`).
//! - [`metrics`]: Prometheus text and the servicegraph import (`sdsim_engine::import`).
//! - [`config`]: the configuration file and its `--set` / `SDSIM__` overrides
//!   (`sdsim_server::config`).
//! - [`bodies`]: every JSON request body of the HTTP API (auth, projects, simulations).
//! - [`realtime`]: `POST /api/publish` and the WebSocket client messages (`sdsim_gateway::realtime`).
//! - [`redis`]: the Redis bridge's RESP2 frames (`sdsim_gateway::redis_bridge::resp`).
//! - [`scenario`]: load-test scenario files with their flows (`sdsim_loadtest`).
//! - [`alloc`]: the counting allocator the size limits are checked with.
//!
//! [`TARGETS`] lists every target; a target's name is its libFuzzer binary and its corpus folder.

#![warn(missing_docs, unreachable_pub)]

pub mod alloc;
pub mod bodies;
pub mod config;
pub mod design;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod realtime;
pub mod redis;
pub mod scenario;
pub mod token;
pub mod ws;

/// A fuzz target: its name and its check, which panics when an invariant does not hold.
#[derive(Clone, Copy)]
pub struct Target {
    /// The libFuzzer binary (`fuzz/fuzz_targets/<name>.rs`) and corpus (`fuzz/corpus/<name>/`).
    pub name: &'static str,
    /// Runs one input through the decoder and asserts its invariants.
    pub check: fn(&[u8]),
}

/// Every fuzz target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "http_request",
        check: http::request,
    },
    Target {
        name: "chunked_body",
        check: http::chunked_body,
    },
    Target {
        name: "ws_frames",
        check: ws::frames,
    },
    Target {
        name: "grpc_frames",
        check: grpc::frames,
    },
    Target {
        name: "whatif_changes",
        check: design::whatif_changes,
    },
    Target {
        name: "grpc_reflection",
        check: grpc::reflection,
    },
    Target {
        name: "grpc_status_details",
        check: grpc::status_details,
    },
    Target {
        name: "access_token",
        check: token::access_token,
    },
    Target {
        name: "design_document",
        check: design::document,
    },
    Target {
        name: "servicegraph_metrics",
        check: metrics::servicegraph_metrics,
    },
    Target {
        name: "config_file",
        check: config::file,
    },
    Target {
        name: "auth_credentials",
        check: bodies::auth_credentials,
    },
    Target {
        name: "auth_refresh",
        check: bodies::auth_refresh,
    },
    Target {
        name: "project_create",
        check: bodies::project_create,
    },
    Target {
        name: "project_update",
        check: bodies::project_update,
    },
    Target {
        name: "project_import",
        check: bodies::project_import,
    },
    Target {
        name: "simulation_start",
        check: bodies::simulation_start,
    },
    Target {
        name: "sweep_request",
        check: bodies::sweep_request,
    },
    Target {
        name: "other_json_bodies",
        check: bodies::other,
    },
    Target {
        name: "publish_body",
        check: realtime::publish_body,
    },
    Target {
        name: "ws_client_message",
        check: realtime::client_message,
    },
    Target {
        name: "redis_resp",
        check: redis::resp,
    },
    Target {
        name: "loadtest_scenario",
        check: scenario::file,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().copied().find(|t| t.name == name)
}

/// Text input: the fuzzers' bytes when they are UTF-8 (the decoders below take `&str`).
pub(crate) fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// The most a decoder may hold beyond its input and its own limits: fixed-size state (an
/// inflate window, header tables) and allocator rounding.
pub(crate) const ALLOCATION_SLACK: usize = 128 << 10;
