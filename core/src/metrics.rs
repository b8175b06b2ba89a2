//! Per-shard metrics: counters, gauges and HDR latency histograms owned by one shard (no atomics,
//! no locks on the request path), copied into a [`Snapshot`] and merged across shards at scrape
//! time, then rendered as Prometheus text or read as percentiles.
//!
//! Keys are a static name plus up to three labels whose values are static strings or integers,
//! so recording on the request path never allocates.

use hdrhistogram::Histogram;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

/// Largest latency a histogram records, in microseconds (60 s); longer values are clamped.
pub const MAX_LATENCY_US: u64 = 60_000_000;

/// The value of one label.
#[derive(Debug, Clone, Eq, PartialOrd, Ord)]
pub enum LabelValue {
    /// A static string, e.g. a route pattern registered at start-up or a method name.
    Str(&'static str),
    /// An integer, e.g. a status code or a shard index.
    Int(u64),
}

/// Equal contents, found without reading them when both are the same static string (the
/// usual case: the request path records keys built from the same literals every time).
fn same_str(a: &'static str, b: &'static str) -> bool {
    (a.as_ptr() == b.as_ptr() && a.len() == b.len()) || a == b
}

impl PartialEq for LabelValue {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (LabelValue::Str(a), LabelValue::Str(b)) => same_str(a, b),
            (LabelValue::Int(a), LabelValue::Int(b)) => a == b,
            _ => false,
        }
    }
}

// By content, as equality is.
impl std::hash::Hash for LabelValue {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            LabelValue::Str(s) => s.hash(state),
            LabelValue::Int(i) => i.hash(state),
        }
    }
}

impl std::fmt::Display for LabelValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LabelValue::Str(s) => f.write_str(s),
            LabelValue::Int(i) => write!(f, "{i}"),
        }
    }
}

/// A metric name with up to three labels (unused label slots have an empty name).
#[derive(Debug, Clone, Eq, PartialOrd, Ord)]
pub struct Key {
    /// Prometheus metric name, e.g. `sdsim_http_requests_total`.
    pub name: &'static str,
    /// Label name/value pairs; slots with an empty name are not rendered.
    pub labels: [(&'static str, LabelValue); 3],
}

const NO_LABEL: (&str, LabelValue) = ("", LabelValue::Str(""));

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        same_str(self.name, other.name)
            && self
                .labels
                .iter()
                .zip(&other.labels)
                .all(|((n1, v1), (n2, v2))| same_str(n1, n2) && v1 == v2)
    }
}

// By content, as equality is.
impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        self.labels.hash(state);
    }
}

/// The request path hashes a key a few times per request: a fast hash, not SipHash (keys are
/// static names and integers chosen by the code, not by clients).
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

impl Key {
    /// A key without labels.
    pub fn plain(name: &'static str) -> Key {
        Key {
            name,
            labels: [NO_LABEL, NO_LABEL, NO_LABEL],
        }
    }

    /// A key with one label.
    pub fn with1(name: &'static str, l1: (&'static str, LabelValue)) -> Key {
        Key {
            name,
            labels: [l1, NO_LABEL, NO_LABEL],
        }
    }

    /// A key with two labels.
    pub fn with2(
        name: &'static str,
        l1: (&'static str, LabelValue),
        l2: (&'static str, LabelValue),
    ) -> Key {
        Key {
            name,
            labels: [l1, l2, NO_LABEL],
        }
    }

    /// A key with three labels.
    pub fn with3(
        name: &'static str,
        l1: (&'static str, LabelValue),
        l2: (&'static str, LabelValue),
        l3: (&'static str, LabelValue),
    ) -> Key {
        Key {
            name,
            labels: [l1, l2, l3],
        }
    }

    /// The value of label `name`, if present.
    pub fn label(&self, name: &str) -> Option<&LabelValue> {
        self.labels.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    fn write_labels(&self, out: &mut String, extra: Option<(&str, &str)>) {
        let mut first = true;
        let mut open = |out: &mut String| {
            out.push(if first { '{' } else { ',' });
            first = false;
        };
        for (name, value) in self.labels.iter().filter(|(n, _)| !n.is_empty()) {
            open(out);
            let _ = write!(out, "{name}=\"");
            escape_label(out, &value.to_string());
            out.push('"');
        }
        if let Some((name, value)) = extra {
            open(out);
            let _ = write!(out, "{name}=\"{value}\"");
        }
        if !first {
            out.push('}');
        }
    }
}

fn escape_label(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    // Bounds are constants known to be valid, so construction cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// One shard's metrics. Shard-local (`!Sync`): record from the shard's own tasks only.
#[derive(Default)]
pub struct Metrics {
    counters: RefCell<FastMap<Key, u64>>,
    gauges: RefCell<FastMap<Key, i64>>,
    histograms: RefCell<FastMap<Key, Histogram<u64>>>,
}

impl Metrics {
    /// Empty metrics.
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Adds `by` to a counter.
    pub fn inc(&self, key: Key, by: u64) {
        *self.counters.borrow_mut().entry(key).or_insert(0) += by;
    }

    /// Adds `delta` (may be negative) to a gauge.
    pub fn gauge_add(&self, key: Key, delta: i64) {
        *self.gauges.borrow_mut().entry(key).or_insert(0) += delta;
    }

    /// Sets a gauge.
    pub fn gauge_set(&self, key: Key, value: i64) {
        self.gauges.borrow_mut().insert(key, value);
    }

    /// Records one latency in microseconds (clamped to `1..=MAX_LATENCY_US`).
    pub fn record_us(&self, key: Key, micros: u64) {
        let value = micros.clamp(1, MAX_LATENCY_US);
        let mut histograms = self.histograms.borrow_mut();
        let histogram = histograms.entry(key).or_insert_with(new_histogram);
        // Cannot fail: the value is clamped into the histogram's bounds.
        let _ = histogram.record(value);
    }

    /// A copy of everything, to send to the shard that merges a scrape.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            counters: self
                .counters
                .borrow()
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            gauges: self
                .gauges
                .borrow()
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            histograms: self
                .histograms
                .borrow()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

/// Metrics copied out of one or more shards; `Send`, mergeable.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Counters by key.
    pub counters: BTreeMap<Key, u64>,
    /// Gauges by key.
    pub gauges: BTreeMap<Key, i64>,
    /// Latency histograms (microseconds) by key.
    pub histograms: BTreeMap<Key, Histogram<u64>>,
}

/// Upper bounds (seconds) of the Prometheus histogram buckets rendered from HDR histograms.
pub const BUCKETS_S: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

impl Snapshot {
    /// Adds `other` into `self`: counters and gauges sum, histograms merge.
    pub fn merge(&mut self, other: Snapshot) {
        for (k, v) in other.counters {
            *self.counters.entry(k).or_insert(0) += v;
        }
        for (k, v) in other.gauges {
            *self.gauges.entry(k).or_insert(0) += v;
        }
        for (k, h) in other.histograms {
            match self.histograms.get_mut(&k) {
                // Same bounds on both sides, so adding cannot fail.
                Some(mine) => {
                    let _ = mine.add(&h);
                }
                None => {
                    self.histograms.insert(k, h);
                }
            }
        }
    }

    /// Renders Prometheus text format. `help` gives the HELP line of a metric name.
    pub fn render_prometheus(&self, help: impl Fn(&str) -> &'static str) -> String {
        let mut out = String::with_capacity(4096);
        let mut last = "";
        for (k, v) in &self.counters {
            header(&mut out, &mut last, k.name, "counter", &help);
            out.push_str(k.name);
            k.write_labels(&mut out, None);
            let _ = writeln!(out, " {v}");
        }
        for (k, v) in &self.gauges {
            header(&mut out, &mut last, k.name, "gauge", &help);
            out.push_str(k.name);
            k.write_labels(&mut out, None);
            let _ = writeln!(out, " {v}");
        }
        for (k, h) in &self.histograms {
            header(&mut out, &mut last, k.name, "histogram", &help);
            for le in BUCKETS_S {
                let upper_us = (le * 1e6) as u64;
                let count = h.count_between(0, upper_us);
                let _ = write!(out, "{}_bucket", k.name);
                k.write_labels(&mut out, Some(("le", &le.to_string())));
                let _ = writeln!(out, " {count}");
            }
            let _ = write!(out, "{}_bucket", k.name);
            k.write_labels(&mut out, Some(("le", "+Inf")));
            let _ = writeln!(out, " {}", h.len());
            let sum_s = h.mean() * h.len() as f64 / 1e6;
            let _ = write!(out, "{}_sum", k.name);
            k.write_labels(&mut out, None);
            let _ = writeln!(out, " {sum_s}");
            let _ = write!(out, "{}_count", k.name);
            k.write_labels(&mut out, None);
            let _ = writeln!(out, " {}", h.len());
        }
        out
    }
}

fn header(
    out: &mut String,
    last: &mut &'static str,
    name: &'static str,
    kind: &str,
    help: &impl Fn(&str) -> &'static str,
) {
    if *last != name {
        let _ = writeln!(out, "# HELP {name} {}", help(name));
        let _ = writeln!(out, "# TYPE {name} {kind}");
        *last = name;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(route: &'static str, status: u64) -> Key {
        Key::with2(
            "reqs",
            ("route", LabelValue::Str(route)),
            ("status", LabelValue::Int(status)),
        )
    }

    #[test]
    fn snapshots_merge_across_shards() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.inc(key("/x", 200), 2);
        b.inc(key("/x", 200), 3);
        b.inc(key("/x", 500), 1);
        for us in [100, 200, 300] {
            a.record_us(Key::plain("lat"), us);
        }
        b.record_us(Key::plain("lat"), 10_000);
        let mut merged = a.snapshot();
        merged.merge(b.snapshot());
        assert_eq!(merged.counters[&key("/x", 200)], 5);
        assert_eq!(merged.counters[&key("/x", 500)], 1);
        let lat = &merged.histograms[&Key::plain("lat")];
        assert_eq!(lat.len(), 4);
        assert!(lat.value_at_quantile(1.0) >= 9_990);
    }

    #[test]
    fn prometheus_text_has_types_buckets_and_escaped_labels() {
        let m = Metrics::new();
        m.inc(Key::with1("c_total", ("path", LabelValue::Str("a\"b"))), 1);
        m.gauge_set(Key::plain("g"), -3);
        m.record_us(Key::plain("h_seconds"), 300);
        m.record_us(Key::plain("h_seconds"), 2_000_000);
        let text = m.snapshot().render_prometheus(|_| "help");
        assert!(
            text.contains("# TYPE c_total counter\nc_total{path=\"a\\\"b\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("g -3\n"), "{text}");
        assert!(
            text.contains("h_seconds_bucket{le=\"0.0005\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("h_seconds_bucket{le=\"+Inf\"} 2\n"), "{text}");
        assert!(text.contains("h_seconds_count 2\n"), "{text}");
    }
}
