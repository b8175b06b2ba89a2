//! Counters, merged HDR histograms, the human table and the JSON report.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Per-connection (then merged) counters. Only requests in the measured window are counted.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// Requests sent.
    pub sent: u64,
    /// Responses received.
    pub completed: u64,
    /// Requests sent more than one interval after their intended time (open loop).
    pub late: u64,
    /// Connections opened.
    pub connects: u64,
    /// Connections the server closed that were reopened.
    pub reconnects: u64,
    /// Errors by kind.
    pub errors: BTreeMap<&'static str, u64>,
}

impl Counters {
    /// Counts an error of `kind` if it happened in the measured window.
    pub fn error(&mut self, measured: bool, kind: &'static str) {
        if measured {
            *self.errors.entry(kind).or_insert(0) += 1;
        }
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Counters) {
        self.sent += other.sent;
        self.completed += other.completed;
        self.late += other.late;
        self.connects += other.connects;
        self.reconnects += other.reconnects;
        for (k, v) in &other.errors {
            *self.errors.entry(k).or_insert(0) += v;
        }
    }
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct Report {
    /// Latency histogram in microseconds, merged over all workers.
    pub histogram: Histogram<u64>,
    /// Merged counters.
    pub counters: Counters,
    /// The measured duration.
    pub duration: Duration,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th.
    pub p90: f64,
    /// 99th.
    pub p99: f64,
    /// 99.9th.
    pub p999: f64,
    /// 99.99th.
    pub p9999: f64,
    /// Maximum.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

/// The machine a run was measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Online CPUs.
    pub nproc: usize,
    /// CPU model name.
    pub cpu_model: String,
    /// Kernel release.
    pub kernel: String,
}

impl Machine {
    /// Reads the machine description from /proc.
    pub fn current() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map_or_else(|| "unknown".to_string(), |s| s.trim().to_string());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".to_string(), |s| s.trim().to_string());
        Machine {
            // Online CPUs of the machine, not of this thread's affinity mask.
            // SAFETY: sysconf has no preconditions.
            nproc: usize::try_from(unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) })
                .unwrap_or(1),
            cpu_model,
            kernel,
        }
    }
}

/// Request counts as they appear in the JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Requests {
    /// Requests sent (for WebSocket deliveries: deliveries expected).
    pub sent: u64,
    /// Responses (deliveries, pongs) received.
    pub completed: u64,
    /// Errors of every kind.
    pub errors: u64,
    /// Sent more than one interval after their intended time.
    pub late: u64,
}

/// One request type's figures, with the same names as the top level of an HTTP report (used
/// per type by the WebSocket report).
#[derive(Debug, Clone, Serialize)]
pub struct Section<'a> {
    /// Completed per second over the type's duration.
    pub throughput_per_s: f64,
    /// The duration the throughput is computed over.
    pub duration_s: f64,
    /// Counts.
    pub requests: Requests,
    /// Latency percentiles.
    pub latency_ms: Percentiles,
    /// Errors by kind.
    pub errors_by_kind: &'a BTreeMap<&'static str, u64>,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    throughput_per_s: f64,
    duration_s: f64,
    requests: Requests,
    latency_ms: Percentiles,
    errors_by_kind: &'a BTreeMap<&'static str, u64>,
    connections_opened: u64,
    reconnects: u64,
    machine: Machine,
    parameters: &'a BTreeMap<String, String>,
}

impl Report {
    /// Largest latency recorded (60 s), in microseconds.
    pub const MAX_US: u64 = 60_000_000;

    /// An empty histogram with the bounds every worker uses.
    pub fn histogram() -> Histogram<u64> {
        Histogram::new_with_bounds(1, Self::MAX_US, 3).expect("valid bounds")
    }

    /// An empty report for a run of `duration`.
    pub fn new(duration: Duration) -> Report {
        Report {
            histogram: Self::histogram(),
            counters: Counters::default(),
            duration,
        }
    }

    /// Adds one worker's results.
    pub fn merge(&mut self, histogram: &Histogram<u64>, counters: &Counters) {
        // Same bounds everywhere, so adding cannot fail.
        let _ = self.histogram.add(histogram);
        self.counters.add(counters);
    }

    /// Responses per second over the measured window.
    pub fn throughput(&self) -> f64 {
        self.counters.completed as f64 / self.duration.as_secs_f64().max(1e-9)
    }

    /// Errors of every kind.
    pub fn errors(&self) -> u64 {
        self.counters.errors.values().sum()
    }

    /// Latency percentiles in milliseconds.
    pub fn percentiles(&self) -> Percentiles {
        let h = &self.histogram;
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
        Percentiles {
            p50: ms(0.50),
            p90: ms(0.90),
            p99: ms(0.99),
            p999: ms(0.999),
            p9999: ms(0.9999),
            max: h.max() as f64 / 1e3,
            mean: h.mean() / 1e3,
        }
    }

    fn requests(&self) -> Requests {
        Requests {
            sent: self.counters.sent,
            completed: self.counters.completed,
            errors: self.errors(),
            late: self.counters.late,
        }
    }

    /// This report's figures as one section of a larger report.
    pub fn section(&self) -> Section<'_> {
        Section {
            throughput_per_s: self.throughput(),
            duration_s: self.duration.as_secs_f64(),
            requests: self.requests(),
            latency_ms: self.percentiles(),
            errors_by_kind: &self.counters.errors,
        }
    }

    /// The report as JSON, with the run's parameters.
    pub fn to_json(&self, parameters: &BTreeMap<String, String>) -> String {
        let report = JsonReport {
            throughput_per_s: self.throughput(),
            duration_s: self.duration.as_secs_f64(),
            requests: self.requests(),
            latency_ms: self.percentiles(),
            errors_by_kind: &self.counters.errors,
            connections_opened: self.counters.connects,
            reconnects: self.counters.reconnects,
            machine: Machine::current(),
            parameters,
        };
        sonic_rs::to_string_pretty(&report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// One line of a table with a line per request type: `name` padded to `width`, counts and
    /// percentiles.
    pub fn type_line(&self, name: &str, width: usize) -> String {
        let p = self.percentiles();
        format!(
            "{name:<width$} sent {} completed {} errors {} late {}  ms p50 {:.3} p90 {:.3} p99 {:.3} p99.9 {:.3} max {:.3}\n",
            self.counters.sent,
            self.counters.completed,
            self.errors(),
            self.counters.late,
            p.p50,
            p.p90,
            p.p99,
            p.p999,
            p.max
        )
    }

    /// A table for people.
    pub fn table(&self) -> String {
        let p = self.percentiles();
        let mut out = format!(
            "throughput   {:>12.0} req/s\nrequests     sent {} completed {} errors {} late {}\n",
            self.throughput(),
            self.counters.sent,
            self.counters.completed,
            self.errors(),
            self.counters.late
        );
        out.push_str(&format!(
            "latency ms   p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  p99.99 {:.3}  max {:.3}  mean {:.3}\n",
            p.p50, p.p90, p.p99, p.p999, p.p9999, p.max, p.mean
        ));
        if !self.counters.errors.is_empty() {
            out.push_str(&format!("errors       {:?}\n", self.counters.errors));
        }
        out
    }
}

/// One interval of the time series (`--series`, NDJSON).
#[derive(Debug, Clone, Serialize)]
pub struct SeriesPoint {
    /// Seconds since the end of the warm-up, at the end of the interval.
    pub t_s: f64,
    /// Responses in the interval.
    pub completed: u64,
    /// Responses per second in the interval.
    pub throughput_per_s: f64,
    /// Errors in the interval.
    pub errors: u64,
    /// Requests sent late in the interval.
    pub late: u64,
    /// Latency percentiles of the interval.
    pub latency_ms: Percentiles,
}

impl SeriesPoint {
    /// The point of interval `index` (each `step` seconds long).
    pub fn new(
        index: u64,
        step: f64,
        histogram: &Histogram<u64>,
        counters: &Counters,
    ) -> SeriesPoint {
        let mut report = Report::new(Duration::from_secs_f64(step));
        report.merge(histogram, counters);
        SeriesPoint {
            t_s: (index + 1) as f64 * step,
            completed: counters.completed,
            throughput_per_s: report.throughput(),
            errors: report.errors(),
            late: counters.late,
            latency_ms: report.percentiles(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_histograms_equal_a_single_one() {
        let values: Vec<u64> = (1..=10_000u64).map(|i| (i * 7919) % 50_000 + 1).collect();
        let mut single = Report::histogram();
        for v in &values {
            single.record(*v).unwrap();
        }
        let mut merged = Report::new(Duration::from_secs(1));
        for part in values.chunks(1234) {
            let mut h = Report::histogram();
            for v in part {
                h.record(*v).unwrap();
            }
            merged.merge(&h, &Counters::default());
        }
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(
                merged.histogram.value_at_quantile(q),
                single.value_at_quantile(q)
            );
        }
        assert_eq!(merged.histogram.len(), single.len());
    }
}

/// Writes interval histograms (µs) as an HdrHistogram interval log (V2 compressed encoding,
/// `max_value_divisor` 1000 so tools show milliseconds), readable by HistogramLogProcessor.
/// `intervals` are `(index, histogram)`; interval `i` starts `i × interval` after `start`.
pub fn write_interval_log(
    out: impl std::io::Write,
    start: std::time::SystemTime,
    interval: Duration,
    intervals: &[(u64, Histogram<u64>)],
) -> anyhow::Result<()> {
    let tagged: Vec<(u64, Option<&str>, &Histogram<u64>)> =
        intervals.iter().map(|(i, h)| (*i, None, h)).collect();
    write_tagged_interval_log(out, start, interval, &tagged)
}

/// Like [`write_interval_log`], each histogram with an optional tag (`Tag=connect,...` in the
/// log), for runs with several request types.
pub fn write_tagged_interval_log(
    out: impl std::io::Write,
    start: std::time::SystemTime,
    interval: Duration,
    intervals: &[(u64, Option<&str>, &Histogram<u64>)],
) -> anyhow::Result<()> {
    use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
    use hdrhistogram::serialization::interval_log::Tag;
    use hdrhistogram::serialization::V2DeflateSerializer;
    let mut out = std::io::BufWriter::new(out);
    let mut serializer = V2DeflateSerializer::new();
    {
        let mut log = IntervalLogWriterBuilder::new()
            .add_comment("sdsim-loadtest latency, microseconds")
            .with_start_time(start)
            .with_base_time(start)
            .with_max_value_divisor(1000.0)
            .begin_log_with(&mut out, &mut serializer)?;
        for (index, tag, histogram) in intervals {
            log.write_histogram(
                *histogram,
                interval * (*index as u32),
                interval,
                tag.and_then(Tag::new),
            )
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
    }
    std::io::Write::flush(&mut out)?;
    Ok(())
}

#[cfg(test)]
mod log_tests {
    use super::*;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use hdrhistogram::serialization::Deserializer;

    #[test]
    fn interval_log_round_trips() {
        let mut intervals = Vec::new();
        for i in 0..3u64 {
            let mut h = Report::histogram();
            for v in 1..=100 * (i + 1) {
                h.record(v * 10).unwrap();
            }
            intervals.push((i, h));
        }
        let mut bytes = Vec::new();
        write_interval_log(
            &mut bytes,
            std::time::SystemTime::now(),
            Duration::from_secs(1),
            &intervals,
        )
        .unwrap();
        let mut counts = Vec::new();
        for entry in IntervalLogIterator::new(&bytes) {
            if let Ok(LogEntry::Interval(h)) = entry {
                let raw = base64::Engine::decode(
                    &base64::engine::general_purpose::STANDARD,
                    h.encoded_histogram(),
                )
                .unwrap();
                let decoded: Histogram<u64> =
                    Deserializer::new().deserialize(&mut &raw[..]).unwrap();
                counts.push((h.start_timestamp().as_secs(), decoded.len()));
            }
        }
        assert_eq!(counts, vec![(0, 100), (1, 200), (2, 300)]);
    }
}
