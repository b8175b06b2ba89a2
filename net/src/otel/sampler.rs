//! Head sampling: whether a trace's spans are recorded, decided once where the trace enters
//! this process and sent on in the sampled bit of `traceparent`, so every process of a trace
//! agrees. The samplers are OpenTelemetry's (`OTEL_TRACES_SAMPLER`).

use super::super::middleware::trace_context::TraceId;

/// The names `otel.sampler` accepts, as `OTEL_TRACES_SAMPLER` spells them.
pub const SAMPLER_NAMES: [&str; 6] = [
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
];

/// What decides a trace that has no sampled parent to follow.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Root {
    AlwaysOn,
    AlwaysOff,
    /// Sampled when the trace-id's random low 63 bits fall below this bound.
    Ratio(u64),
}

/// A sampler; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    /// A caller's sampled bit, when there is a caller, decides (`parentbased_*`).
    parent_based: bool,
    root: Root,
}

/// A sampler name or ratio that is not one of OpenTelemetry's.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BadSampler {
    /// The name is none of [`SAMPLER_NAMES`].
    #[error("unknown sampler (one of {})", SAMPLER_NAMES.join(", "))]
    Name,
    /// The ratio of a `traceidratio` sampler is outside 0..=1.
    #[error("the ratio must be between 0 and 1")]
    Ratio,
}

impl Sampler {
    /// `name` (one of [`SAMPLER_NAMES`]) with `ratio` for the `traceidratio` ones.
    pub fn new(name: &str, ratio: f64) -> Result<Sampler, BadSampler> {
        let (parent_based, root) = match name.strip_prefix("parentbased_") {
            Some(root) => (true, root),
            None => (false, name),
        };
        let root = match root {
            "always_on" => Root::AlwaysOn,
            "always_off" => Root::AlwaysOff,
            "traceidratio" => {
                if !(0.0..=1.0).contains(&ratio) {
                    return Err(BadSampler::Ratio);
                }
                // 2^63 at ratio 1: every 63-bit value is below it.
                Root::Ratio((ratio * (1u64 << 63) as f64) as u64)
            }
            _ => return Err(BadSampler::Name),
        };
        Ok(Sampler { parent_based, root })
    }

    /// Whether the trace `trace_id` is sampled here; `parent_flags` are the caller's trace
    /// flags when the request continued a trace.
    pub fn sampled(&self, trace_id: &TraceId, parent_flags: Option<u8>) -> bool {
        if let (true, Some(flags)) = (self.parent_based, parent_flags) {
            return flags & 1 == 1;
        }
        match self.root {
            Root::AlwaysOn => true,
            Root::AlwaysOff => false,
            Root::Ratio(bound) => {
                // The low 8 bytes are random in W3C Level 2 ids (and in ours), so this
                // keeps about `ratio` of the traces, the same ones in every process.
                let mut low = [0u8; 8];
                low.copy_from_slice(&trace_id.0[8..]);
                (u64::from_be_bytes(low) >> 1) < bound
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(low: u64) -> TraceId {
        let mut id = [0xab; 16];
        id[8..].copy_from_slice(&low.to_be_bytes());
        TraceId(id)
    }

    #[test]
    fn each_sampler_decides_as_opentelemetry_specifies() {
        let on = Sampler::new("always_on", 0.0).unwrap();
        let off = Sampler::new("always_off", 1.0).unwrap();
        let trace = id(42);
        assert!(on.sampled(&trace, None) && on.sampled(&trace, Some(0)));
        assert!(!off.sampled(&trace, None) && !off.sampled(&trace, Some(1)));
        let follow = Sampler::new("parentbased_always_on", 0.0).unwrap();
        assert!(follow.sampled(&trace, None), "a root is sampled");
        assert!(!follow.sampled(&trace, Some(0)), "the caller's no is kept");
        assert!(follow.sampled(&trace, Some(1)));
        let follow_off = Sampler::new("parentbased_always_off", 0.0).unwrap();
        assert!(!follow_off.sampled(&trace, None));
        assert!(
            follow_off.sampled(&trace, Some(0b11)),
            "the caller's yes is kept"
        );
        let half = Sampler::new("traceidratio", 0.5).unwrap();
        assert!(half.sampled(&id(0), None));
        assert!(half.sampled(&id(((1 << 62) - 1) << 1), None));
        assert!(!half.sampled(&id(1 << 63), None));
        assert!(!half.sampled(&id(u64::MAX), None));
        let all = Sampler::new("traceidratio", 1.0).unwrap();
        assert!(all.sampled(&id(u64::MAX), None));
        let none = Sampler::new("parentbased_traceidratio", 0.0).unwrap();
        assert!(!none.sampled(&id(0), None));
        assert!(none.sampled(&id(0), Some(1)));
        // About the ratio of many random ids.
        let tenth = Sampler::new("traceidratio", 0.1).unwrap();
        let kept = (0..10_000u64)
            .filter(|i| tenth.sampled(&id(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)), None))
            .count();
        assert!((800..1200).contains(&kept), "{kept} of 10000 at 0.1");
        assert_eq!(Sampler::new("sometimes", 0.5), Err(BadSampler::Name));
        assert_eq!(Sampler::new("traceidratio", 1.5), Err(BadSampler::Ratio));
        assert_eq!(
            Sampler::new("parentbased_traceidratio", -0.1),
            Err(BadSampler::Ratio)
        );
    }
}
