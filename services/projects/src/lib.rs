//! The project service of seed 004 (the simulation service, `sdsim-simulations`, builds on it).
//!
//! - [`projects`]: projects (a design document and settings) with versions, members (owner,
//!   editor, viewer), templates, import/export; events on `project:events:*`. Its contract,
//!   [`projects::contract::ProjectService`], is what HTTP handlers and remote callers use.
//! - [`design_limits`]: the design size limit and off-shard validation of large designs.
//! - [`error`]: [`Failure`], the project and simulation services' one error type, and its HTTP
//!   and gRPC forms.
//! - [`http`]: the HTTP API (`/api/templates`, `/api/projects/*`) over the contract: it serves
//!   the same whether the service runs here or in another process.
//! - [`templates`]: the system templates.
//! - [`pb`]: the messages of `proto/sdsim/project/v1`.
//!
//! Callers are authenticated by the embedding server (a [`Caller`] per request); authorization
//! (global permissions from the token, and the caller's role in the project) happens here, on
//! every operation.
#![warn(missing_docs, unreachable_pub)]

pub mod config;
pub mod design_limits;
pub mod error;
pub mod http;
pub mod projects;
pub mod templates;

/// Types generated from `proto/sdsim/project/v1`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod pb {
    /// `sdsim.project.v1`.
    pub mod project {
        include!(concat!(env!("OUT_DIR"), "/sdsim.project.v1.rs"));
    }
}

/// The encoded `google.protobuf.FileDescriptorSet` of `proto/sdsim/project/v1/project.proto`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/file_descriptor_set.bin"));

pub use error::{DesignProblem, Failure};
pub use sdsim_contract::Caller;
pub use sdsim_core::new_id;

use bytes::Bytes;

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Publishes `value` as JSON on `channel` through this shard's bus (dropped, with a debug
/// line, when there is no bus or it refuses: events are notifications, storage is the record).
pub async fn publish<T: serde::Serialize>(channel: &str, value: &T) {
    let Some(bus) = sdsim_core::bus::Bus::local() else {
        return;
    };
    match sonic_rs::to_vec(value) {
        Ok(data) => {
            if let Err(e) = bus.publish(channel, Bytes::from(data)).await {
                tracing::debug!(%channel, error = %e, "event not published");
            }
        }
        Err(e) => tracing::warn!(%channel, error = %e, "event not serialisable"),
    }
}
