//! Per-component statistics and the report built from them.

use super::histogram::LatencyCounts;
use crate::design::{Design, Kind, Slo};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;

/// Counters and integrals of one component since the last reset.
#[derive(Debug, Clone)]
pub struct ComponentStats {
    workers: f64,
    /// Requests that entered.
    pub arrivals: u64,
    /// Requests served.
    pub completed: u64,
    /// Requests dropped (waiting room full).
    pub dropped: u64,
    /// Requests that failed here: refused or failed calls, the station's error rate, crashes.
    pub errors: u64,
    /// Requests that waited longer than the station's timeout and were abandoned.
    pub timed_out: u64,
    busy_area: f64,
    capacity_area: f64,
    queue_area: f64,
    last: f64,
    wait_sum: f64,
    response_sum: f64,
    response_us: LatencyCounts,
    /// Attempts sent on each of the component's calls, by index in its `calls`.
    calls_sent: Vec<u64>,
}

impl ComponentStats {
    /// Empty statistics for a component with `workers` workers in total.
    pub fn new(workers: f64) -> ComponentStats {
        ComponentStats {
            workers,
            arrivals: 0,
            completed: 0,
            dropped: 0,
            errors: 0,
            timed_out: 0,
            busy_area: 0.0,
            capacity_area: 0.0,
            queue_area: 0.0,
            last: 0.0,
            wait_sum: 0.0,
            response_sum: 0.0,
            response_us: LatencyCounts::new(),
            calls_sent: Vec::new(),
        }
    }

    /// Adds `busy` workers, `waiting` requests and `capacity` available workers held from the
    /// last change until `now`.
    pub fn integrate_to(&mut self, now: f64, busy: f64, waiting: f64, capacity: f64) {
        let dt = now - self.last;
        if dt > 0.0 {
            self.busy_area += busy * dt;
            self.capacity_area += capacity * dt;
            self.queue_area += waiting * dt;
            self.last = now;
        }
    }

    /// Restarts counting at `now` (end of warm-up); the integrals continue from `now`.
    pub fn reset(&mut self, now: f64) {
        let workers = self.workers;
        *self = ComponentStats::new(workers);
        self.last = now;
    }

    /// Records one request served after `response` seconds, `wait` of them queued.
    pub fn complete(&mut self, response: f64, wait: f64) {
        self.completed += 1;
        self.response_sum += response;
        self.wait_sum += wait;
        self.response_us.record_seconds(response);
    }

    /// Counts one attempt sent on call `call` (index in the component's `calls`).
    pub(crate) fn count_call(&mut self, call: usize) {
        if self.calls_sent.len() <= call {
            self.calls_sent.resize(call + 1, 0);
        }
        self.calls_sent[call] += 1;
    }

    /// Attempts sent on each call since the last reset, by index in the component's `calls`
    /// (shorter when the last calls were never taken): what a tracer sees as client spans.
    pub fn calls_sent(&self) -> &[u64] {
        &self.calls_sent
    }

    /// Response times of the requests served, in microseconds of simulated time (built from
    /// the engine's bucket counts on each call).
    pub fn response_histogram(&self) -> Histogram<u64> {
        self.response_us.histogram()
    }

    /// The sum of the response times of the requests served, in seconds.
    pub fn response_sum_s(&self) -> f64 {
        self.response_sum
    }

    /// Response-time quantiles in milliseconds (0 before the first completion).
    fn ms_at<const N: usize>(&self, quantiles: [f64; N]) -> [f64; N] {
        if self.completed == 0 {
            return [0.0; N];
        }
        let h = self.response_us.histogram();
        quantiles.map(|q| h.value_at_quantile(q) as f64 / 1e3)
    }

    fn mean(sum: f64, n: u64) -> f64 {
        if n == 0 {
            0.0
        } else {
            sum / n as f64 * 1e3
        }
    }
}

/// One component in the report (times in milliseconds of simulated time).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct ComponentReport {
    /// `source`, `service`, `api_gateway`.
    pub kind: String,
    /// Requests that entered.
    pub arrivals: u64,
    /// Requests served.
    pub completed: u64,
    /// Requests dropped.
    pub dropped: u64,
    /// Requests that failed here: refused or failed calls, the station's error rate, crashes.
    pub errors: u64,
    /// Requests abandoned after waiting longer than the station's timeout.
    pub timed_out: u64,
    /// Time-average of workers available (changes with crashes and autoscaling).
    pub mean_workers: f64,
    /// Served per simulated second.
    pub throughput_per_s: f64,
    /// Busy fraction of all workers.
    pub utilization: f64,
    /// Time-average of requests waiting (not in service).
    pub mean_queue_length: f64,
    /// Mean time waiting before service.
    pub mean_wait_ms: f64,
    /// Mean time in the component (wait + service).
    pub mean_response_ms: f64,
    /// Response-time percentiles.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
}

/// End-to-end figures.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct EndToEnd {
    /// Requests the sources emitted.
    pub arrivals: u64,
    /// Requests that completed.
    pub completed: u64,
    /// Requests dropped somewhere.
    pub dropped: u64,
    /// Requests that failed somewhere (a station's `error_rate`).
    pub errors: u64,
    /// Completed per simulated second.
    pub throughput_per_s: f64,
    /// Mean latency.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Maximum.
    pub max_ms: f64,
}

/// The report of a run (or a snapshot of one in progress).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Report {
    /// Simulated time reached.
    pub simulated_s: f64,
    /// Simulated time measured (after the warm-up).
    pub measured_s: f64,
    /// Events processed.
    pub events: u64,
    /// End to end.
    pub end_to_end: EndToEnd,
    /// Per component id.
    pub components: BTreeMap<String, ComponentReport>,
    /// End-to-end figures per request class.
    pub classes: BTreeMap<String, EndToEnd>,
    /// The design's service-level objectives, checked.
    pub slos: Vec<SloResult>,
    /// Faults, breakers and scaling decisions, in order.
    pub timeline: Vec<super::TimelineEntry>,
    /// Schema version 2: each source's client, by source id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub clients: BTreeMap<String, super::ClientReport>,
    /// Schema version 2: each cache with a capacity, by id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub caches: BTreeMap<String, super::CacheReport>,
    /// Schema version 2: goodput against offered load, per window of the whole run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub goodput: Vec<super::GoodputPoint>,
    /// Schema version 2: whether goodput came back after the last fault ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metastability: Option<super::Metastability>,
    /// Schema version 2: what the run cost, when a component has a price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<super::CostReport>,
    /// What-if changes applied while the run went, each with its simulated time: replaying
    /// the design and seed with them gives this report again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<super::changes::AppliedChange>,
}

/// The parts of a report that only version-2 designs have.
#[derive(Debug, Clone, Default)]
pub struct ReportV2 {
    /// Per source id.
    pub clients: BTreeMap<String, super::ClientReport>,
    /// Per cache id.
    pub caches: BTreeMap<String, super::CacheReport>,
    /// The goodput series.
    pub goodput: Vec<super::GoodputPoint>,
    /// The verdict.
    pub metastability: Option<super::Metastability>,
}

/// One service-level objective, checked.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct SloResult {
    /// Its name.
    pub name: String,
    /// The metric.
    pub metric: String,
    /// The bound.
    pub target: f64,
    /// What the run measured.
    pub actual: f64,
    /// Whether the run met it.
    pub met: bool,
}

impl EndToEnd {
    /// The end-to-end figures of `s` over `measured` seconds.
    pub(crate) fn from_stats(s: &ComponentStats, measured: f64) -> EndToEnd {
        // The maximum is the top of its bucket, as `Histogram::max` reads it.
        let [p50_ms, p95_ms, p99_ms, max_ms] = s.ms_at([0.50, 0.95, 0.99, 1.0]);
        EndToEnd {
            arrivals: s.arrivals,
            completed: s.completed,
            dropped: s.dropped,
            errors: s.errors,
            throughput_per_s: s.completed as f64 / measured,
            mean_ms: ComponentStats::mean(s.response_sum, s.completed),
            p50_ms,
            p95_ms,
            p99_ms,
            max_ms,
        }
    }
}

fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::Source(_) => "source",
        Kind::Balancer(_) => "load_balancer",
        Kind::Station(s) => s.behavior.report_name(),
    }
}

impl Report {
    /// Builds the report from the engine's statistics.
    pub fn build(
        design: &Design,
        stats: &[ComponentStats],
        e2e: &ComponentStats,
        classes: &[ComponentStats],
        measured: f64,
        events: u64,
        now: f64,
    ) -> Report {
        let components = design
            .components
            .iter()
            .zip(stats)
            .map(|(comp, s)| {
                let [p50_ms, p95_ms, p99_ms] = s.ms_at([0.50, 0.95, 0.99]);
                let report = ComponentReport {
                    kind: kind_name(&comp.kind).to_string(),
                    arrivals: s.arrivals,
                    completed: s.completed,
                    dropped: s.dropped,
                    errors: s.errors,
                    timed_out: s.timed_out,
                    mean_workers: s.capacity_area / measured,
                    throughput_per_s: s.completed as f64 / measured,
                    utilization: if s.capacity_area > 0.0 {
                        s.busy_area / s.capacity_area
                    } else {
                        0.0
                    },
                    mean_queue_length: s.queue_area / measured,
                    mean_wait_ms: ComponentStats::mean(s.wait_sum, s.completed),
                    mean_response_ms: ComponentStats::mean(s.response_sum, s.completed),
                    p50_ms,
                    p95_ms,
                    p99_ms,
                };
                (comp.id.clone(), report)
            })
            .collect();
        let classes = design
            .classes
            .iter()
            .zip(classes)
            .map(|(name, s)| (name.clone(), EndToEnd::from_stats(s, measured)))
            .collect();
        let mut report = Report {
            simulated_s: now,
            measured_s: measured,
            events,
            end_to_end: EndToEnd::from_stats(e2e, measured),
            components,
            classes,
            slos: Vec::new(),
            timeline: Vec::new(),
            clients: BTreeMap::new(),
            caches: BTreeMap::new(),
            goodput: Vec::new(),
            metastability: None,
            cost: None,
            changes: Vec::new(),
        };
        report.slos = design.slos.iter().map(|slo| report.check(slo)).collect();
        report
    }

    /// Attaches the run's timeline.
    pub fn with_timeline(mut self, timeline: Vec<super::TimelineEntry>) -> Report {
        self.timeline = timeline;
        self
    }

    /// Attaches the what-if changes applied.
    pub fn with_changes(mut self, changes: Vec<super::changes::AppliedChange>) -> Report {
        self.changes = changes;
        self
    }

    /// Attaches the parts only version-2 designs have.
    pub fn with_v2(mut self, v2: ReportV2) -> Report {
        self.clients = v2.clients;
        self.caches = v2.caches;
        self.goodput = v2.goodput;
        self.metastability = v2.metastability;
        self
    }

    /// Attaches the cost of the run (computed from this report's figures, the clients'
    /// included) and checks the design's cost budgets against it.
    pub fn with_cost(mut self, design: &Design) -> Report {
        self.cost = super::CostReport::build(design, &self);
        for (slo, result) in design.slos.iter().zip(self.slos.iter_mut()) {
            if slo.metric.starts_with("cost_") {
                *result = Report::check_against(
                    slo,
                    &self.components,
                    &self.classes,
                    &self.end_to_end,
                    self.cost.as_ref(),
                );
            }
        }
        self
    }

    fn check(&self, slo: &Slo) -> SloResult {
        Report::check_against(
            slo,
            &self.components,
            &self.classes,
            &self.end_to_end,
            self.cost.as_ref(),
        )
    }

    fn check_against(
        slo: &Slo,
        components: &BTreeMap<String, ComponentReport>,
        classes: &BTreeMap<String, EndToEnd>,
        end_to_end: &EndToEnd,
        cost: Option<&super::CostReport>,
    ) -> SloResult {
        let e2e = match &slo.class {
            Some(class) => classes.get(class),
            None => Some(end_to_end),
        };
        // Validation allows cost metrics only where a price makes them defined; a report
        // without a cost (a snapshot asked for before `with_cost`) reads NaN: not met.
        let actual = match (slo.metric.as_str(), &slo.component, e2e) {
            ("cost_per_hour", Some(id), _) => cost
                .and_then(|c| c.components.get(id))
                .map_or(f64::NAN, |c| c.per_hour),
            ("cost_per_hour", None, _) => cost.map_or(f64::NAN, |c| c.per_hour),
            ("cost_per_million_requests", ..) => cost
                .and_then(|c| c.per_million_requests)
                .unwrap_or(f64::NAN),
            (_, Some(id), _) => {
                components
                    .get(id)
                    .map_or(f64::NAN, |c| match slo.metric.as_str() {
                        "mean_ms" => c.mean_response_ms,
                        "p50_ms" => c.p50_ms,
                        "p95_ms" => c.p95_ms,
                        "p99_ms" => c.p99_ms,
                        "drop_rate" => c.dropped as f64 / (c.arrivals.max(1)) as f64,
                        "utilization" => c.utilization,
                        _ => c.throughput_per_s,
                    })
            }
            (_, None, Some(e)) => match slo.metric.as_str() {
                "mean_ms" => e.mean_ms,
                "p50_ms" => e.p50_ms,
                "p95_ms" => e.p95_ms,
                "p99_ms" => e.p99_ms,
                "drop_rate" => e.dropped as f64 / (e.arrivals.max(1)) as f64,
                _ => e.throughput_per_s,
            },
            (_, None, None) => f64::NAN,
        };
        let met = if slo.at_most {
            actual <= slo.target
        } else {
            actual >= slo.target
        };
        SloResult {
            name: slo.name.clone(),
            metric: slo.metric.clone(),
            target: slo.target,
            actual,
            met,
        }
    }

    /// The report for people.
    pub fn table(&self) -> String {
        let e = &self.end_to_end;
        let mut out = format!(
            "simulated {:.1} s (measured {:.1} s after warm-up), {} events\n\n\
             end to end: {} completed, {} dropped, {} errors, {:.2} req/s; latency mean {:.2} ms, p50 {:.2}, p95 {:.2}, p99 {:.2}, max {:.2}\n\n",
            self.simulated_s, self.measured_s, self.events, e.completed, e.dropped, e.errors, e.throughput_per_s, e.mean_ms, e.p50_ms, e.p95_ms, e.p99_ms, e.max_ms
        );
        for t in &self.timeline {
            out.push_str(&format!(
                "t={:>9.1}s {:<16} {}\n",
                t.t_s, t.component, t.event
            ));
        }
        if !self.timeline.is_empty() {
            out.push('\n');
        }
        for (name, e) in &self.classes {
            out.push_str(&format!(
                "class {name}: {} completed, {:.2} req/s; latency mean {:.2} ms, p50 {:.2}, p95 {:.2}, p99 {:.2}\n",
                e.completed, e.throughput_per_s, e.mean_ms, e.p50_ms, e.p95_ms, e.p99_ms
            ));
        }
        for slo in &self.slos {
            out.push_str(&format!(
                "SLO {}: {} (measured {:.3}, target {})\n",
                slo.name,
                if slo.met { "met" } else { "MISSED" },
                slo.actual,
                slo.target
            ));
        }
        for (id, c) in &self.clients {
            out.push_str(&format!(
                "client {id}: {} first tries, {} retries, {} succeeded, {} failed, {} timeouts ({} answered late), {} retries over budget; goodput {:.2}/s\n",
                c.first_tries, c.retries, c.succeeded, c.failed, c.timeouts, c.late_answers, c.budget_denied, c.goodput_per_s
            ));
        }
        for (id, c) in &self.caches {
            out.push_str(&format!(
                "cache {id}: hit ratio {:.3} ({} hits, {} misses, {} evictions, {} expired)\n",
                c.hit_ratio, c.hits, c.misses, c.evictions, c.expired
            ));
        }
        if let Some(m) = &self.metastability {
            out.push_str(&format!(
                "metastability: {} (trigger ended at {:.1} s; goodput {:.1}% of the offered load after it{})\n",
                m.verdict,
                m.trigger_end_s,
                m.goodput_ratio_after * 100.0,
                m.recovered_at_s.map_or(String::new(), |t| format!("; at or above {:.0}% from {t:.1} s", m.threshold * 100.0))
            ));
        }
        if let Some(cost) = &self.cost {
            out.push_str(&cost.lines());
        }
        if !self.classes.is_empty()
            || !self.slos.is_empty()
            || !self.clients.is_empty()
            || !self.caches.is_empty()
            || self.cost.is_some()
        {
            out.push('\n');
        }
        out.push_str(&format!(
            "{:<16} {:>9} {:>9} {:>8} {:>7} {:>9} {:>10} {:>10} {:>9} {:>9}\n",
            "component",
            "arrivals",
            "served",
            "dropped",
            "util",
            "queue",
            "wait ms",
            "resp ms",
            "p95 ms",
            "p99 ms"
        ));
        for (id, c) in &self.components {
            if c.kind == "source" {
                continue;
            }
            out.push_str(&format!(
                "{:<16} {:>9} {:>9} {:>8} {:>6.1}% {:>9.3} {:>10.3} {:>10.3} {:>9.3} {:>9.3}\n",
                id,
                c.arrivals,
                c.completed,
                c.dropped,
                c.utilization * 100.0,
                c.mean_queue_length,
                c.mean_wait_ms,
                c.mean_response_ms,
                c.p95_ms,
                c.p99_ms
            ));
        }
        out
    }
}

/// One point of the per-interval series (NDJSON), cumulative since the warm-up.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Series {
    /// Simulated time.
    pub t_s: f64,
    /// Requests completed end to end.
    pub completed: u64,
    /// Mean end-to-end latency so far.
    pub mean_ms: f64,
    /// Median end-to-end latency so far (0 before the first completion).
    #[serde(default)]
    pub p50_ms: f64,
    /// 99th percentile of the end-to-end latency so far (0 before the first completion).
    #[serde(default)]
    pub p99_ms: f64,
    /// Utilisation per component id.
    pub utilization: BTreeMap<String, f64>,
    /// Mean queue length per component id.
    pub mean_queue_length: BTreeMap<String, f64>,
}

impl Series {
    /// A point at `now`.
    pub fn build(
        design: &Design,
        stats: &[ComponentStats],
        e2e: &ComponentStats,
        now: f64,
        since: f64,
    ) -> Series {
        let measured = (now - since).max(1e-12);
        let mut utilization = BTreeMap::new();
        let mut queue = BTreeMap::new();
        for (comp, s) in design.components.iter().zip(stats) {
            if s.workers > 0.0 {
                utilization.insert(comp.id.clone(), s.busy_area / s.capacity_area.max(1e-12));
                queue.insert(comp.id.clone(), s.queue_area / measured);
            }
        }
        let [p50_ms, p99_ms] = e2e.ms_at([0.5, 0.99]);
        Series {
            t_s: now,
            completed: e2e.completed,
            mean_ms: ComponentStats::mean(e2e.response_sum, e2e.completed),
            p50_ms,
            p99_ms,
            utilization,
            mean_queue_length: queue,
        }
    }
}
