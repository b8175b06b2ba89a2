//! Designs arriving from clients: their size limit (`simulation.max_design_bytes`, 413 before
//! any parsing) and where they are parsed — on the shard when small, on the blocking pool when
//! large, so that a large design never holds its shard (rule 5 of docs/architecture.md).

use crate::projects::check_design;
use crate::Failure;
use sdsim_core::runtime::Shard;
use sdsim_engine::design::{Design, Problem};

/// Designs up to this size are validated on the shard (well under a slice); larger ones on the
/// blocking pool, which keeps the shard serving while a large design is parsed.
pub const VALIDATE_ON_SHARD_BYTES: usize = 64 << 10;

/// [`check_design`] for a design arriving from a client: over `max_bytes`
/// (`simulation.max_design_bytes`) it is refused (413) before any parsing; over
/// [`VALIDATE_ON_SHARD_BYTES`] it is validated on the blocking pool, off the shard.
pub async fn check_design_within(design: &str, max_bytes: usize) -> Result<String, Failure> {
    if design.len() > max_bytes {
        return Err(Failure::TooLarge(format!(
            "design: {} bytes of JSON is over the limit of {max_bytes} bytes (simulation.max_design_bytes)",
            design.len()
        )));
    }
    let shard = Shard::try_current();
    let Some(shard) = shard.filter(|_| design.len() > VALIDATE_ON_SHARD_BYTES) else {
        return check_design(design);
    };
    let design = design.to_string();
    shard
        .blocking()
        .run(move || check_design(&design))
        .await
        .unwrap_or_else(|e| {
            Err(Failure::Unavailable(format!(
                "design validation: {e}; retry shortly"
            )))
        })
}

/// Parses a design with the engine: on the blocking pool when it is large (off the shard), on
/// the shard otherwise. The outer error is a busy pool.
pub async fn parse_design(text: &str) -> Result<Result<Design, Vec<Problem>>, Failure> {
    let shard = Shard::try_current();
    let Some(shard) = shard.filter(|_| text.len() > VALIDATE_ON_SHARD_BYTES) else {
        return Ok(sdsim_engine::design::parse(text));
    };
    let text = text.to_string();
    shard
        .blocking()
        .run(move || sdsim_engine::design::parse(&text))
        .await
        .map_err(|e| Failure::Unavailable(format!("design parsing: {e}; retry shortly")))
}
