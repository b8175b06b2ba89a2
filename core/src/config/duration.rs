//! Durations in config files: `"15s"`, `"500ms"`, `"2m"`, `"1h"`, or a bare number of seconds.
//!
//! Parsed exactly (decimal digits, not through a float) and formatted in the largest unit that
//! keeps every nanosecond, so that what `sdsim config` prints reads back as the same value.

use serde::{de, Deserializer, Serializer};
use std::time::Duration;

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// The longest duration accepted, in seconds (about 31 years).
const MAX_SECONDS: u128 = 1_000_000_000;

/// Why a text is not a duration; each message quotes the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not a decimal number followed by a unit.
    #[error("`{0}` is not a duration (examples: 500ms, 15s, 2m, 1h)")]
    Malformed(String),
    /// The unit is none of ns, us, ms, s, m and h.
    #[error("unknown duration unit `{unit}` in `{text}` (use ns, us, ms, s, m or h)")]
    UnknownUnit {
        /// The unit given.
        unit: String,
        /// The whole text.
        text: String,
    },
    /// Longer than the longest duration accepted (about 31 years).
    #[error("duration `{0}` is out of range")]
    OutOfRange(String),
}

/// Parses `"250ms"`, `"15s"`, `"10m"`, `"1h"`, `"1.5s"`, `"20us"`, `"7ns"` or `"15"`
/// (seconds), exactly to the nanosecond (finer digits are dropped).
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let not_a_duration = || DurationError::Malformed(text.to_string());
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(not_a_duration());
    }
    let nanos_per_unit: u128 = match unit.trim() {
        "" | "s" => NANOS_PER_SECOND,
        "ms" => 1_000_000,
        "us" | "µs" => 1_000,
        "ns" => 1,
        "m" | "min" => 60 * NANOS_PER_SECOND,
        "h" => 3600 * NANOS_PER_SECOND,
        other => {
            return Err(DurationError::UnknownUnit {
                unit: other.to_string(),
                text: text.to_string(),
            })
        }
    };
    let out_of_range = || DurationError::OutOfRange(text.to_string());
    let whole = whole.trim_start_matches('0');
    if whole.len() > 20 {
        return Err(out_of_range());
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| not_a_duration())?
    };
    // Digits past the nanosecond do not change the value: keep 12, enough for every unit.
    let fraction = &fraction[..fraction.len().min(12)];
    let scale = 10u128.pow(fraction.len() as u32);
    let fraction: u128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().map_err(|_| not_a_duration())?
    };
    let nanos = whole * nanos_per_unit + fraction * nanos_per_unit / scale;
    if nanos > MAX_SECONDS * NANOS_PER_SECOND {
        return Err(out_of_range());
    }
    Ok(Duration::from_nanos(nanos as u64))
}

/// Formats a duration the way [`parse`] reads it back: in the largest of s, ms, us and ns
/// that holds it exactly.
pub fn format(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos.is_multiple_of(NANOS_PER_SECOND) {
        format!("{}s", nanos / NANOS_PER_SECOND)
    } else if nanos.is_multiple_of(1_000_000) {
        format!("{}ms", nanos / 1_000_000)
    } else if nanos.is_multiple_of(1_000) {
        format!("{}us", nanos / 1_000)
    } else {
        format!("{nanos}ns")
    }
}

/// Reads a duration field (`#[serde(with = "duration")]`): a string such as `"15s"` or a
/// number of seconds.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    struct Visitor;
    impl de::Visitor<'_> for Visitor {
        type Value = Duration;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a duration such as \"15s\", \"500ms\" or a number of seconds")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse(v).map_err(E::custom)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v)
                .map(Duration::from_secs)
                .map_err(|_| E::custom("a duration cannot be negative"))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(v))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
            parse(&v.to_string()).map_err(E::custom)
        }
    }
    deserializer.deserialize_any(Visitor)
}

/// Writes a duration field in the form [`format`] gives, which reads back the same.
pub fn serialize<S: Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(*d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse("15s").unwrap(), Duration::from_secs(15));
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse("7").unwrap(), Duration::from_secs(7));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("fast"), Err(DurationError::Malformed("fast".into())));
        let unknown = parse("3d").unwrap_err();
        assert_eq!(
            unknown,
            DurationError::UnknownUnit {
                unit: "d".into(),
                text: "3d".into()
            }
        );
        assert_eq!(
            unknown.to_string(),
            "unknown duration unit `d` in `3d` (use ns, us, ms, s, m or h)"
        );
        assert_eq!(format(Duration::from_millis(1500)), "1500ms");
        assert_eq!(parse(".5s").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("."), Err(DurationError::Malformed(".".into())));
        assert!(matches!(parse("1.2.3s"), Err(DurationError::Malformed(_))));
        assert_eq!(
            parse("1000000001s").unwrap_err().to_string(),
            "duration `1000000001s` is out of range"
        );
        assert_eq!(
            parse("1000000000s").unwrap(),
            Duration::from_secs(1_000_000_000)
        );
    }

    /// What `sdsim config` prints reads back as the same value. Before, durations were parsed
    /// through a float and printed in whole milliseconds: "0.5ms" printed as "0ms", and
    /// "1.0000001s" as "1000ms".
    #[test]
    fn formatted_durations_parse_back_exactly() {
        for text in [
            "0.5ms",
            "1.0000001s",
            "1.5us",
            "7ns",
            "0.000000001s",
            "2m",
            "1.5h",
        ] {
            let d = parse(text).unwrap();
            assert_eq!(parse(&format(d)), Ok(d), "{text} printed as {}", format(d));
        }
        assert_eq!(parse("0.5ms").unwrap(), Duration::from_micros(500));
        assert_eq!(
            parse("1.0000001s").unwrap(),
            Duration::from_nanos(1_000_000_100)
        );
        assert_eq!(format(Duration::from_micros(500)), "500us");
    }
}
