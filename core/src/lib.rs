//! sdsim-core: the shard-per-core runtime every sdsim role runs on.
//!
//! Layout:
//! - [`shard`]: [`shard::ShardId`] and CPU placement (the process affinity mask).
//! - [`runtime`]: one pinned monoio runtime per CPU ([`runtime::Runtime`]); the typed shard handle
//!   [`runtime::Shard`] with shard-local state and the instrumented spawn; [`runtime::spawn`],
//!   the one way to start a task (timed by the stall detector).
//! - [`mesh`]: the cross-shard mesh, N×(N-1) bounded SPSC rings with `submit_to` and `broadcast`.
//! - [`stall`]: the stall detector that logs and counts tasks holding a shard too long.
//! - [`blocking`]: the bounded pool of threads off the shards for work longer than a slice.
//! - [`shutdown`]: the graceful-shutdown state machine (accepting → draining → closed).
//! - [`metrics`]: per-shard counters and HDR histograms, merged at scrape time.
//! - [`bus`]: the sharded pub/sub bus (owner-shard sequencing, history, batched fan-out).
//! - [`civil`]: [`civil::Civil`], a Unix time as a UTC date and time of day (timestamps).
//! - [`config`]: the configuration types, loading, overrides and validation.
//! - [`load`]: the shard's queueing delay (a probe task) and the CoDel-style overload decision
//!   that load shedding acts on.
#![warn(missing_docs, unreachable_pub)]

pub mod blocking;
pub mod bus;
pub mod civil;
pub mod config;
pub mod load;
pub mod mesh;
pub mod metrics;
pub mod runtime;
pub mod shard;
pub mod shutdown;
pub mod stall;

/// `d` in milliseconds to the microsecond, for logs: `23.124`, never the float noise of
/// `as_secs_f64() * 1e3` (`0.023124000000000002`). A whole number of microseconds divided by
/// 1,000 is the double nearest that decimal, and floats print as the shortest text that reads
/// back as the same double.
pub fn millis(d: std::time::Duration) -> f64 {
    d.as_micros() as f64 / 1e3
}

/// A random UUID (version 4) string, for row ids.
pub fn new_id() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("the system random source works");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn millis_print_without_float_noise() {
        for (d, text) in [
            (Duration::from_nanos(23_124_000), "23.124"),
            (Duration::from_nanos(23_124), "0.023"),
            (Duration::from_nanos(23_124_999), "23.124"),
            (Duration::from_micros(1), "0.001"),
            (Duration::from_secs(3), "3000.0"),
            (Duration::from_micros(100_000_007), "100000.007"),
        ] {
            assert_eq!(format!("{:?}", super::millis(d)), text, "{d:?}");
        }
        // What the logs printed before.
        let noisy = Duration::from_nanos(23_124).as_secs_f64() * 1e3;
        assert_eq!(format!("{noisy:?}"), "0.023124000000000002");
    }
}
