//! Designs from a real system's telemetry: `sdsim design import --from otel-servicegraph`.
//!
//! Layout:
//! - [`prometheus`]: a strict reader of the Prometheus text format (what a `/metrics` scrape
//!   holds), errors by line.
//! - [`servicegraph`]: the OpenTelemetry Collector's servicegraph connector metrics
//!   (`traces_service_graph_request_total`, `..._request_failed_total`,
//!   `..._request_server_seconds` and `..._request_client_seconds` histograms, labelled
//!   `client` and `server`) read into edges of a graph with their counts and latency moments.
//! - `model`: the edges turned into a version-2 design ([`otel_servicegraph`]): a service per
//!   server node, a call per edge weighted by its count, a source per uninstrumented client,
//!   service times fitted to the latency histograms, workers sized by Little's law.

pub mod prometheus;
pub mod servicegraph;

mod model;

use crate::design::{Design, Problem};

/// How to read the counters of a scrape, and the run the design asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportOptions {
    /// Seconds the counters cover: a scrape's counters are totals since the collector
    /// started, so rates are counts / this window.
    pub window_s: f64,
    /// `duration_s` of the design written.
    pub duration_s: f64,
    /// `warmup_s` of the design written.
    pub warmup_s: f64,
    /// `seed` of the design written.
    pub seed: u64,
}

impl ImportOptions {
    /// A window of `window_s` seconds; a 600 s run after a 60 s warm-up, seed 1.
    pub fn new(window_s: f64) -> ImportOptions {
        ImportOptions {
            window_s,
            duration_s: 660.0,
            warmup_s: 60.0,
            seed: 1,
        }
    }
}

/// A design read from telemetry.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The design document (version 2, pretty JSON), valid by the engine's own validator.
    pub document: String,
    /// The same design, parsed.
    pub design: Design,
    /// What the import could not carry over exactly and how it was represented (a client
    /// that calls a service more often than it is called, a node left out, ...).
    pub notes: Vec<String>,
}

/// Why a scrape could not be turned into a design.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ImportError {
    /// The text is not valid Prometheus exposition format.
    #[error(transparent)]
    Parse(#[from] prometheus::ParseError),
    /// The earlier scrape (`--before`) is not valid Prometheus exposition format.
    #[error("the earlier scrape: {0}")]
    EarlierScrape(prometheus::ParseError),
    /// A metric the design needs has no sample at all.
    #[error("no `{0}` samples: is this a scrape of the servicegraph connector's metrics?")]
    MissingMetric(&'static str),
    /// A servicegraph sample lacks a label it needs (`client`, `server`, or `le` on a bucket).
    #[error("line {line}: `{metric}` needs the label `{label}`")]
    MissingLabel {
        /// Line of the sample.
        line: usize,
        /// Its metric name.
        metric: String,
        /// The label.
        label: &'static str,
    },
    /// A count (counter, bucket, `_count`) or a `_sum` is negative, NaN or infinite.
    #[error("line {line}: `{metric}` is {value}: a count must be a finite number ≥ 0")]
    BadCount {
        /// Line of the sample.
        line: usize,
        /// Its metric name.
        metric: String,
        /// The value found.
        value: f64,
    },
    /// A histogram is not a valid cumulative histogram: a bucket bound that is not a number,
    /// counts that fall as `le` grows, no `+Inf` bucket, a `_count` other than the `+Inf`
    /// bucket, or a part (`_bucket`, `_sum`, `_count`) missing.
    #[error("line {line}: `{metric}` field `{field}`: {reason}")]
    BadHistogram {
        /// Line of the sample at fault (or of one sample of the series).
        line: usize,
        /// The histogram's metric name.
        metric: String,
        /// The label or part at fault: `le`, `_count`, `_sum`, `_bucket`.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A server received requests but no latency was recorded for it.
    #[error("line {line}: server `{server}` has requests but no latency histogram (`traces_service_graph_request_server_seconds`)")]
    MissingLatency {
        /// Line of its first request counter.
        line: usize,
        /// The server node.
        server: String,
    },
    /// A producer hands off more messages than it serves requests (a hand-off route carries
    /// each request once).
    #[error("`{client}` publishes {ratio:.3} messages per request it serves: routes hand each request off once, so this cannot be modelled")]
    TooManyMessages {
        /// The producer.
        client: String,
        /// Messages per request served.
        ratio: f64,
    },
    /// An edge carries more calls per request than a design lists (100).
    #[error("`{client}` calls `{server}` {ratio:.3} times per request: more than 100 calls per request on one edge cannot be written as calls")]
    TooManyCalls {
        /// The caller.
        client: String,
        /// The callee.
        server: String,
        /// Calls per request served.
        ratio: f64,
    },
    /// A node holds more requests in service (rate × response time) than the import sizes
    /// workers for (100,000): the window is probably wrong.
    #[error("`{server}` would hold {erlangs:.0} requests in service (rate × response time): more than 100000; is --window-s right?")]
    TooBusy {
        /// The node.
        server: String,
        /// Requests in service by Little's law.
        erlangs: f64,
    },
    /// A servicegraph series is lower in the later scrape than in the earlier one: the
    /// collector restarted (or the series was dropped and started again) between the two.
    #[error("line {line}: `{series}` fell from {before} to {after} between the scrapes (did the collector restart?)")]
    CounterReset {
        /// Line of the series in the later scrape.
        line: usize,
        /// The series.
        series: String,
        /// Its value in the earlier scrape.
        before: f64,
        /// Its value in the later scrape.
        after: f64,
    },
    /// `--window-s` is not a positive number of seconds.
    #[error("the window must be a positive number of seconds, not {0}")]
    BadWindow(f64),
    /// No edge carries a request in the window.
    #[error("no requests in the window: every `traces_service_graph_request_total` is 0")]
    NoTraffic,
    /// The design built is refused by the engine's validator (a bug of the import, or a graph
    /// the engine cannot run, such as calls that always loop).
    #[error("the imported design is not valid: {}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    Design(Vec<Problem>),
}

/// Reads two scrapes of the servicegraph connector's metrics, `window_s` apart, into a design
/// of what happened between them: every series of the later scrape less its value in the
/// earlier one (a series new in the later scrape counts from 0). Errors name lines of `after`,
/// except [`ImportError::EarlierScrape`].
pub fn otel_servicegraph_between(
    before: &str,
    after: &str,
    options: &ImportOptions,
) -> Result<Imported, ImportError> {
    if !(options.window_s.is_finite() && options.window_s > 0.0) {
        return Err(ImportError::BadWindow(options.window_s));
    }
    let earlier = prometheus::parse(before).map_err(ImportError::EarlierScrape)?;
    let mut later = prometheus::parse(after)?;
    let values: std::collections::HashMap<String, f64> = earlier
        .samples
        .iter()
        .filter(|s| servicegraph::is_servicegraph(&s.name))
        .map(|s| (s.series(), s.value))
        .collect();
    for s in later
        .samples
        .iter_mut()
        .filter(|s| servicegraph::is_servicegraph(&s.name))
    {
        let Some(&was) = values.get(&s.series()) else {
            continue;
        };
        // Equal infinities (a `+Inf` bound is a label, but a value may be one) leave nothing.
        if s.value == was {
            s.value = 0.0;
        } else if s.value < was {
            return Err(ImportError::CounterReset {
                line: s.line,
                series: s.series(),
                before: was,
                after: s.value,
            });
        } else {
            s.value -= was;
        }
    }
    let graph = servicegraph::Graph::read(&later)?;
    model::build(&graph, options)
}

/// Reads a scrape of the servicegraph connector's metrics (Prometheus text) into a design.
pub fn otel_servicegraph(text: &str, options: &ImportOptions) -> Result<Imported, ImportError> {
    if !(options.window_s.is_finite() && options.window_s > 0.0) {
        return Err(ImportError::BadWindow(options.window_s));
    }
    let exposition = prometheus::parse(text)?;
    let graph = servicegraph::Graph::read(&exposition)?;
    model::build(&graph, options)
}
