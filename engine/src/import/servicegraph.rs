//! The servicegraph connector's metrics read into a graph: one [`Edge`] per (client, server)
//! pair with its request and failure counts and the latency it took, seen from the server and
//! from the client.
//!
//! The connector (opentelemetry-collector-contrib `connector/servicegraphconnector`) pairs a
//! client span with the server span it caused and counts the pair on the edge
//! `client` → `server`: `traces_service_graph_request_total` and
//! `traces_service_graph_request_failed_total` (counters; the latter only once an edge has
//! failed), and the histograms `traces_service_graph_request_server_seconds` and
//! `..._client_seconds` (seconds; default bounds 2 ms to 15 s). A client with no spans of its
//! own appears as the virtual node `user`; `connection_type` is empty, `messaging_system` or
//! `database` (`virtual_node` for an uninstrumented peer). Other labels (`failed`, the
//! configured `dimensions`, an exporter's namespace prefix on the names) split an edge into
//! several series: they are added up.

use super::prometheus::{Exposition, Sample};
use super::ImportError;
use std::collections::BTreeMap;

/// Requests between two nodes (counter).
pub const REQUESTS: &str = "traces_service_graph_request_total";
/// Failed requests between two nodes (counter).
pub const FAILED: &str = "traces_service_graph_request_failed_total";
/// Request duration seen from the server (histogram, seconds).
pub const SERVER_SECONDS: &str = "traces_service_graph_request_server_seconds";
/// Request duration seen from the client (histogram, seconds).
pub const CLIENT_SECONDS: &str = "traces_service_graph_request_client_seconds";

/// Count, sum and sum of squares of durations (seconds): the moments a histogram gives, which
/// add up across series and edges.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latency {
    /// Observations.
    pub count: f64,
    /// Their sum, exact (`_sum`).
    pub sum_s: f64,
    /// Their sum of squares, estimated from the buckets.
    pub sum_sq_s2: f64,
}

impl Latency {
    /// Adds another series' observations.
    pub fn add(&mut self, other: &Latency) {
        self.count += other.count;
        self.sum_s += other.sum_s;
        self.sum_sq_s2 += other.sum_sq_s2;
    }

    /// Mean duration, seconds (`None` without observations).
    pub fn mean_s(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum_s / self.count)
    }

    /// Variance, seconds² (0 without observations).
    pub fn variance_s2(&self) -> f64 {
        match self.mean_s() {
            Some(mean) => (self.sum_sq_s2 / self.count - mean * mean).max(0.0),
            None => 0.0,
        }
    }
}

/// Requests from `client` to `server` over the scrape's lifetime.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Edge {
    /// The calling node (`user` for requests from outside).
    pub client: String,
    /// The called node.
    pub server: String,
    /// `connection_type`: empty, `messaging_system`, `database`, `virtual_node`.
    pub connection_type: String,
    /// `traces_service_graph_request_total`.
    pub requests: f64,
    /// `traces_service_graph_request_failed_total` (0 when absent).
    pub failed: f64,
    /// `..._request_server_seconds`.
    pub server_latency: Latency,
    /// `..._request_client_seconds`.
    pub client_latency: Latency,
    /// First line of the text that mentions the edge.
    pub line: usize,
}

/// The edges of a scrape, by (client, server).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Graph {
    /// Sorted by client, then server.
    pub edges: Vec<Edge>,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Histo {
    Server,
    Client,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Bucket,
    Sum,
    Count,
}

/// One histogram series while it is read.
#[derive(Default)]
struct Series {
    metric: String,
    edge: (String, String),
    buckets: Vec<(f64, f64, usize)>,
    sum: Option<(f64, usize)>,
    count: Option<(f64, usize)>,
    line: usize,
}

/// `base` or `<namespace>_base`.
fn named(name: &str, base: &str) -> bool {
    name == base
        || name
            .strip_suffix(base)
            .is_some_and(|prefix| prefix.ends_with('_'))
}

/// Whether `name` is one of the servicegraph metrics the import reads (a bucket, sum or
/// count of its histograms included).
pub fn is_servicegraph(name: &str) -> bool {
    named(name, REQUESTS) || named(name, FAILED) || histogram_part(name).is_some()
}

fn histogram_part(name: &str) -> Option<(Histo, Part)> {
    for (histo, base) in [
        (Histo::Server, SERVER_SECONDS),
        (Histo::Client, CLIENT_SECONDS),
    ] {
        for (part, suffix) in [
            (Part::Bucket, "_bucket"),
            (Part::Sum, "_sum"),
            (Part::Count, "_count"),
        ] {
            if name
                .strip_suffix(suffix)
                .is_some_and(|stem| named(stem, base))
            {
                return Some((histo, part));
            }
        }
    }
    None
}

fn count_of(sample: &Sample) -> Result<f64, ImportError> {
    if sample.value.is_finite() && sample.value >= 0.0 {
        Ok(sample.value)
    } else {
        Err(ImportError::BadCount {
            line: sample.line,
            metric: sample.name.clone(),
            value: sample.value,
        })
    }
}

fn label(sample: &Sample, label: &'static str) -> Result<String, ImportError> {
    sample
        .label(label)
        .map(str::to_string)
        .ok_or_else(|| ImportError::MissingLabel {
            line: sample.line,
            metric: sample.name.clone(),
            label,
        })
}

impl Graph {
    /// The servicegraph edges of `exposition` (other metrics are ignored).
    pub fn read(exposition: &Exposition) -> Result<Graph, ImportError> {
        let mut edges: BTreeMap<(String, String), Edge> = BTreeMap::new();
        let mut series: BTreeMap<(Histo, String), Series> = BTreeMap::new();
        let (mut any_requests, mut any_latency) = (false, false);
        for s in &exposition.samples {
            let counter = if named(&s.name, REQUESTS) {
                Some(true)
            } else if named(&s.name, FAILED) {
                Some(false)
            } else {
                None
            };
            let histogram = histogram_part(&s.name);
            if counter.is_none() && histogram.is_none() {
                continue;
            }
            let key = (label(s, "client")?, label(s, "server")?);
            let edge = edges.entry(key.clone()).or_insert_with(|| Edge {
                client: key.0.clone(),
                server: key.1.clone(),
                line: s.line,
                ..Edge::default()
            });
            if let Some(kind) = s.label("connection_type").filter(|k| !k.is_empty()) {
                edge.connection_type = kind.to_string();
            }
            let value = count_of(s)?;
            match (counter, histogram) {
                (Some(true), _) => {
                    any_requests = true;
                    edge.requests += value;
                }
                (Some(false), _) => edge.failed += value,
                (None, Some((histo, part))) => {
                    any_latency = true;
                    // The series without its `le`: buckets, sum and count of one histogram.
                    let mut labels: Vec<String> = s
                        .labels
                        .iter()
                        .filter(|(k, _)| k != "le")
                        .map(|(k, v)| format!("{k}={v:?}"))
                        .collect();
                    labels.sort();
                    let stem = s
                        .name
                        .trim_end_matches("_bucket")
                        .trim_end_matches("_sum")
                        .trim_end_matches("_count");
                    let id = format!("{stem}{{{}}}", labels.join(","));
                    let entry = series.entry((histo, id)).or_insert_with(|| Series {
                        metric: stem.to_string(),
                        edge: key.clone(),
                        line: s.line,
                        ..Series::default()
                    });
                    match part {
                        Part::Bucket => {
                            let le = label(s, "le")?;
                            let bound = super::prometheus::parse_value(&le).map_err(|_| {
                                ImportError::BadHistogram {
                                    line: s.line,
                                    metric: s.name.clone(),
                                    field: "le",
                                    reason: format!("`{le}` is not a bucket bound"),
                                }
                            })?;
                            if bound.is_nan() {
                                return Err(ImportError::BadHistogram {
                                    line: s.line,
                                    metric: s.name.clone(),
                                    field: "le",
                                    reason: "NaN is not a bucket bound".into(),
                                });
                            }
                            entry.buckets.push((bound, value, s.line));
                        }
                        Part::Sum => entry.sum = Some((value, s.line)),
                        Part::Count => entry.count = Some((value, s.line)),
                    }
                }
                (None, None) => unreachable!("skipped above"),
            }
        }
        if !any_requests {
            return Err(ImportError::MissingMetric(REQUESTS));
        }
        if !any_latency {
            return Err(ImportError::MissingMetric(SERVER_SECONDS));
        }
        for ((histo, _), s) in series {
            let latency = moments(s.metric.as_str(), &s)?;
            let edge = edges.get_mut(&s.edge).expect("every series has its edge");
            match histo {
                Histo::Server => edge.server_latency.add(&latency),
                Histo::Client => edge.client_latency.add(&latency),
            }
        }
        Ok(Graph {
            edges: edges.into_values().collect(),
        })
    }
}

/// The moments of one histogram series, after checking it is a cumulative histogram whose
/// `+Inf` bucket is its `_count`. Within a bucket, observations are taken as spread evenly
/// (the variance adds width²/12 per observation); the `+Inf` bucket's observations get the
/// mean that makes the total match `_sum`.
fn moments(metric: &str, s: &Series) -> Result<Latency, ImportError> {
    let bad = |line: usize, field: &'static str, reason: String| ImportError::BadHistogram {
        line,
        metric: metric.to_string(),
        field,
        reason,
    };
    let Some((sum, sum_line)) = s.sum else {
        return Err(bad(s.line, "_sum", "the histogram has no `_sum`".into()));
    };
    let Some((count, count_line)) = s.count else {
        return Err(bad(
            s.line,
            "_count",
            "the histogram has no `_count`".into(),
        ));
    };
    let mut buckets = s.buckets.clone();
    if buckets.is_empty() {
        return Err(bad(
            s.line,
            "_bucket",
            "the histogram has no buckets".into(),
        ));
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    for pair in buckets.windows(2) {
        let ((b0, c0, _), (b1, c1, line)) = (pair[0], pair[1]);
        if b0 == b1 {
            return Err(bad(line, "le", format!("bucket {b1} given twice")));
        }
        if c1 < c0 {
            return Err(bad(
                line,
                "le",
                format!(
                    "count falls from {c0} (le {b0}) to {c1} (le {b1}): buckets are cumulative"
                ),
            ));
        }
    }
    let &(last, inf_count, last_line) = buckets.last().expect("not empty");
    if last != f64::INFINITY {
        return Err(bad(last_line, "le", "no `+Inf` bucket".into()));
    }
    if (inf_count - count).abs() > 1e-9 * count.max(1.0) {
        return Err(bad(
            count_line,
            "_count",
            format!("{count} differs from the `+Inf` bucket's {inf_count}"),
        ));
    }
    if count == 0.0 {
        if sum != 0.0 {
            return Err(bad(sum_line, "_sum", format!("{sum} with no observations")));
        }
        return Ok(Latency::default());
    }
    // Midpoint and width of each finite bucket; the +Inf bucket closes the sum.
    let (mut lower, mut below) = (0.0f64, 0.0f64);
    let (mut finite_sum, mut sq) = (0.0, 0.0);
    for &(bound, cumulative, _) in &buckets[..buckets.len() - 1] {
        let n = cumulative - below;
        let low = lower.min(bound);
        let (mid, width) = ((low + bound) / 2.0, bound - low);
        finite_sum += n * mid;
        sq += n * (mid * mid + width * width / 12.0);
        lower = bound;
        below = cumulative;
    }
    let overflow = count - below;
    let mut first = finite_sum;
    if overflow > 0.0 {
        let mean = ((sum - finite_sum) / overflow).max(lower);
        first += overflow * mean;
        sq += overflow * mean * mean;
    }
    let (m1, m2) = (first / count, sq / count);
    let cv2 = if m1 > 0.0 {
        (m2 - m1 * m1).max(0.0) / (m1 * m1)
    } else {
        0.0
    };
    // The buckets give the shape (cv); the exact `_sum` gives the scale.
    let exact_mean = sum / count;
    Ok(Latency {
        count,
        sum_s: sum,
        sum_sq_s2: count * exact_mean * exact_mean * (1.0 + cv2),
    })
}
