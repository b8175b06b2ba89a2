//! The span exporter: shards hand finished spans to a bounded queue ([`Spans::record`]); one
//! thread ([`Exporter`]) takes them in batches and sends each batch to an OTLP/HTTP receiver
//! (`POST …/v1/traces`, `Content-Type: application/x-protobuf`).
//!
//! - **Never blocks a shard**: the queue holds `otel.queue_spans` spans; while it is full
//!   (a slow or unreachable receiver) a new span is dropped and counted
//!   (`sdsim_otel_spans_dropped_total`), and the shard goes on.
//! - **Batches**: up to [`ExportSettings::batch_spans`] spans, or whatever arrived within
//!   [`ExportSettings::interval`] of a batch's first span.
//! - **Retries**: a failed send that may succeed later (no connection, 429, 502, 503, 504) is
//!   tried again after 100 ms, 200 ms, 400 ms…, up to [`ExportSettings::attempts`] times,
//!   while the queue keeps filling (and dropping); every failed send is counted
//!   (`sdsim_otel_export_failures_total`), a batch given up is counted as dropped.
//! - **Shutdown**: [`Exporter::finish`] stops retrying, sends what the queue still holds (one
//!   attempt per batch, for at most [`ExportSettings::timeout`]; what is left then is dropped),
//!   and returns: a receiver that does not answer delays a stop by about two timeouts.

use super::proto::{collector, common, resource, trace};
use super::sampler::Sampler;
use super::span::{key_value, SpanRecord};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Metric: spans exported (the receiver answered 2xx).
pub const SPANS_EXPORTED: &str = "sdsim_otel_spans_exported_total";
/// Metric: spans dropped: the queue was full, or their batch was given up.
pub const SPANS_DROPPED: &str = "sdsim_otel_spans_dropped_total";
/// Metric: sends to the receiver that failed (each retry counts).
pub const EXPORT_FAILURES: &str = "sdsim_otel_export_failures_total";

/// How the exporter sends.
#[derive(Debug, Clone)]
pub struct ExportSettings {
    /// Where batches are posted (`http://collector:4318/v1/traces`).
    pub url: String,
    /// `service.name` of every span.
    pub service_name: String,
    /// `service.instance.id`, when the process has one.
    pub instance_id: Option<String>,
    /// How many spans the queue holds before new ones are dropped.
    pub queue_spans: usize,
    /// Most spans in one request.
    pub batch_spans: usize,
    /// How long a batch waits for more spans after its first.
    pub interval: Duration,
    /// Sends per batch before it is given up.
    pub attempts: u32,
    /// Bound on one send (connect, write, answer).
    pub timeout: Duration,
    /// The sampler the trace-context layer decides with.
    pub sampler: Sampler,
}

/// What the exporter has done, readable while it runs.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Spans the receiver accepted.
    pub exported: AtomicU64,
    /// Spans dropped (queue full, or batch given up).
    pub dropped: AtomicU64,
    /// Failed sends.
    pub failures: AtomicU64,
    /// When [`Exporter::finish`] was called: from then on a failed send is not retried, and
    /// one timeout later nothing more is sent.
    closing_at: OnceLock<Instant>,
}

enum Message {
    Span(Box<SpanRecord>),
    /// Send what came before, then stop.
    Close,
}

/// Where a shard records finished spans; cheap to clone, one per shard.
#[derive(Clone)]
pub struct Spans {
    queue: SyncSender<Message>,
    stats: Arc<ExportStats>,
    sampler: Sampler,
}

impl Spans {
    /// Queues `span` for export; `false` (and counted) when the queue is full.
    pub fn record(&self, span: SpanRecord) -> bool {
        match self.queue.try_send(Message::Span(Box::new(span))) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// The sampler new traces are decided with.
    pub fn sampler(&self) -> Sampler {
        self.sampler
    }

    /// What the exporter has done so far.
    pub fn stats(&self) -> &ExportStats {
        &self.stats
    }
}

/// The exporter thread; see the module documentation.
pub struct Exporter {
    spans: Spans,
    thread: Option<JoinHandle<()>>,
}

/// What the exporter did over its life (from [`Exporter::finish`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportTotals {
    /// Spans the receiver accepted.
    pub exported: u64,
    /// Spans dropped.
    pub dropped: u64,
    /// Failed sends.
    pub failures: u64,
}

impl Exporter {
    /// Starts the exporter thread.
    pub fn start(settings: ExportSettings) -> std::io::Result<Exporter> {
        let (queue, spans_in) = std::sync::mpsc::sync_channel(settings.queue_spans.max(1));
        let stats = Arc::new(ExportStats::default());
        let spans = Spans {
            queue,
            stats: Arc::clone(&stats),
            sampler: settings.sampler,
        };
        let thread = std::thread::Builder::new()
            .name("sdsim-otel-export".into())
            .spawn(move || export_loop(&settings, &spans_in, &stats))?;
        Ok(Exporter {
            spans,
            thread: Some(thread),
        })
    }

    /// A handle for a shard.
    pub fn spans(&self) -> Spans {
        self.spans.clone()
    }

    /// Sends what the queue holds, stops the thread and says what it did. Spans recorded
    /// afterwards are dropped.
    pub fn finish(mut self) -> ExportTotals {
        let _ = self.spans.stats.closing_at.set(Instant::now());
        // Waits for room: this is the main thread at shutdown, not a shard.
        let _ = self.spans.queue.send(Message::Close);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let stats = &self.spans.stats;
        ExportTotals {
            exported: stats.exported.load(Ordering::Relaxed),
            dropped: stats.dropped.load(Ordering::Relaxed),
            failures: stats.failures.load(Ordering::Relaxed),
        }
    }
}

fn export_loop(settings: &ExportSettings, spans_in: &Receiver<Message>, stats: &ExportStats) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(settings.timeout))
        .http_status_as_error(false)
        .build()
        .into();
    let resource = resource::Resource {
        attributes: resource_attributes(settings),
        dropped_attributes_count: 0,
    };
    let mut closing = false;
    while !closing {
        // Wait as long as it takes for a batch's first span.
        let first = match spans_in.recv() {
            Ok(Message::Span(span)) => span,
            Ok(Message::Close) | Err(_) => break,
        };
        let mut batch = vec![*first];
        let until = Instant::now() + settings.interval;
        while batch.len() < settings.batch_spans {
            match spans_in.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(Message::Span(span)) => batch.push(*span),
                Ok(Message::Close) | Err(RecvTimeoutError::Disconnected) => {
                    closing = true;
                    break;
                }
                Err(RecvTimeoutError::Timeout) => break,
            }
        }
        let attempts = if closing { 1 } else { settings.attempts };
        send_batch(&agent, settings, &resource, batch, attempts, stats);
    }
    // What arrived before Close (or before the last handle went away).
    let rest: Vec<SpanRecord> = std::iter::from_fn(|| match spans_in.try_recv() {
        Ok(Message::Span(span)) => Some(*span),
        Ok(Message::Close) | Err(_) => None,
    })
    .collect();
    for batch in rest.chunks(settings.batch_spans.max(1)) {
        send_batch(&agent, settings, &resource, batch.to_vec(), 1, stats);
    }
}

fn resource_attributes(settings: &ExportSettings) -> Vec<common::KeyValue> {
    let mut attributes = vec![
        key_value("service.name", settings.service_name.clone().into()),
        key_value("telemetry.sdk.name", "sdsim".into()),
        key_value("telemetry.sdk.language", "rust".into()),
        key_value("service.version", env!("CARGO_PKG_VERSION").into()),
    ];
    if let Some(id) = &settings.instance_id {
        attributes.push(key_value("service.instance.id", id.clone().into()));
    }
    attributes
}

/// The body of one export request.
pub fn encode_request(resource: &resource::Resource, batch: &[SpanRecord]) -> Vec<u8> {
    let request = collector::ExportTraceServiceRequest {
        resource_spans: vec![trace::ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![trace::ScopeSpans {
                scope: Some(common::InstrumentationScope {
                    name: "sdsim".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    attributes: Vec::new(),
                    dropped_attributes_count: 0,
                }),
                spans: batch.iter().map(SpanRecord::to_otlp).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    prost::Message::encode_to_vec(&request)
}

/// Why a send failed, and whether trying again may help.
struct Failed {
    reason: String,
    retry: bool,
}

fn send_batch(
    agent: &ureq::Agent,
    settings: &ExportSettings,
    resource: &resource::Resource,
    batch: Vec<SpanRecord>,
    attempts: u32,
    stats: &ExportStats,
) {
    let body = encode_request(resource, &batch);
    let count = batch.len() as u64;
    let mut backoff = Duration::from_millis(100);
    for attempt in 1..=attempts.max(1) {
        let flushed_long_enough = stats
            .closing_at
            .get()
            .is_some_and(|at| at.elapsed() >= settings.timeout);
        if flushed_long_enough {
            break;
        }
        let failed = match post(agent, &settings.url, &body) {
            Ok(()) => {
                stats.exported.fetch_add(count, Ordering::Relaxed);
                return;
            }
            Err(failed) => failed,
        };
        stats.failures.fetch_add(1, Ordering::Relaxed);
        let stopping = stats.closing_at.get().is_some();
        if !failed.retry || attempt >= attempts || stopping {
            tracing::warn!(
                url = settings.url,
                spans = count,
                attempt,
                reason = failed.reason,
                "span export failed; the batch is dropped"
            );
            break;
        }
        tracing::debug!(
            url = settings.url,
            attempt,
            reason = failed.reason,
            "span export failed; retrying"
        );
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
    stats.dropped.fetch_add(count, Ordering::Relaxed);
}

fn post(agent: &ureq::Agent, url: &str, body: &[u8]) -> Result<(), Failed> {
    let response = agent
        .post(url)
        .header("Content-Type", "application/x-protobuf")
        .send(body)
        .map_err(|e| Failed {
            reason: e.to_string(),
            retry: true,
        })?;
    let status = response.status().as_u16();
    // Read the answer whole so that the connection is kept for the next batch.
    let _ = response.into_body().read_to_vec();
    match status {
        200..=299 => Ok(()),
        _ => Err(Failed {
            reason: format!("the receiver answered HTTP {status}"),
            retry: matches!(status, 429 | 502 | 503 | 504),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middleware::trace_context::{SpanId, TraceContext, TraceId};
    use crate::otel::span::SpanKind;

    fn settings(url: String, queue_spans: usize) -> ExportSettings {
        ExportSettings {
            url,
            service_name: "sdsim-test".into(),
            instance_id: None,
            queue_spans,
            batch_spans: 512,
            interval: Duration::from_millis(20),
            attempts: 1,
            timeout: Duration::from_secs(5),
            sampler: Sampler::new("always_on", 1.0).unwrap(),
        }
    }

    fn span(n: u8) -> SpanRecord {
        let context = TraceContext {
            trace_id: TraceId([7; 16]),
            span_id: SpanId([n; 8]),
            parent_id: None,
            flags: 1,
            state: None,
        };
        SpanRecord::ended_now(
            &context,
            format!("span {n}"),
            SpanKind::Server,
            Duration::ZERO,
        )
    }

    /// A receiver that accepts one connection and answers nothing until told to: the exporter
    /// thread is then stuck in its first send, and the queue behind it fills.
    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        let exporter = Exporter::start(settings(url, 2)).unwrap();
        let spans = exporter.spans();
        // The thread takes the first span and sends it: the receiver accepts the connection
        // and reads the request, so the thread is in its send from here on.
        assert!(spans.record(span(1)));
        let (mut conn, _) = listener.accept().unwrap();
        let mut head = [0u8; 256];
        let read = std::io::Read::read(&mut conn, &mut head).unwrap();
        assert!(head[..read].starts_with(b"POST /v1/traces HTTP/1.1"));
        let kept: Vec<bool> = (2..=6).map(|n| spans.record(span(n))).collect();
        assert_eq!(kept, [true, true, false, false, false], "two fit the queue");
        assert_eq!(spans.stats().dropped.load(Ordering::Relaxed), 3);
        // The receiver fails the send: that batch is given up (one attempt) and counted.
        std::io::Write::write_all(
            &mut conn,
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )
        .unwrap();
        drop(conn);
        // The last two go out when the exporter finishes; nobody answers them any more.
        drop(listener);
        let totals = exporter.finish();
        assert_eq!(totals.exported, 0);
        assert_eq!(totals.dropped, 3 + 1 + 2);
        assert!(totals.failures >= 2, "{totals:?}");
    }

    /// Reads one whole request (head and `Content-Length` body) from `conn`; returns the head.
    fn read_request(conn: &mut std::net::TcpStream) -> String {
        let mut bytes = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = std::io::Read::read(conn, &mut buf).unwrap();
            assert!(n > 0, "the exporter closed mid-request");
            bytes.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let Some(end) = text.find("\r\n\r\n") else {
                continue;
            };
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap();
            if bytes.len() >= end + 4 + length {
                return text[..end].to_owned();
            }
        }
    }

    #[test]
    fn a_send_answered_503_is_retried_and_counted() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        let exporter = Exporter::start(ExportSettings {
            attempts: 3,
            ..settings(url, 16)
        })
        .unwrap();
        assert!(exporter.spans().record(span(1)));
        for status in ["503 Service Unavailable", "200 OK"] {
            let (mut conn, _) = listener.accept().unwrap();
            let head = read_request(&mut conn);
            assert!(head.starts_with("POST /v1/traces HTTP/1.1"), "{head}");
            assert!(
                head.to_ascii_lowercase()
                    .contains("content-type: application/x-protobuf"),
                "{head}"
            );
            let answer =
                format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            std::io::Write::write_all(&mut conn, answer.as_bytes()).unwrap();
        }
        let totals = exporter.finish();
        assert_eq!(
            totals,
            ExportTotals {
                exported: 1,
                dropped: 0,
                failures: 1
            }
        );
    }

    /// Spans still waiting for their batch's interval are sent by `finish`.
    #[test]
    fn finish_sends_what_is_queued() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        let exporter = Exporter::start(ExportSettings {
            interval: Duration::from_secs(3600),
            ..settings(url, 16)
        })
        .unwrap();
        let spans = exporter.spans();
        for n in 1..=3 {
            assert!(spans.record(span(n)));
        }
        let receiver = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            read_request(&mut conn);
            std::io::Write::write_all(
                &mut conn,
                b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            )
            .unwrap();
        });
        let totals = exporter.finish();
        receiver.join().unwrap();
        assert_eq!(totals.exported, 3, "{totals:?}");
        assert_eq!((totals.dropped, totals.failures), (0, 0));
    }

    #[test]
    fn the_request_decodes_as_otlp() {
        let resource = resource::Resource {
            attributes: resource_attributes(&settings(String::new(), 1)),
            dropped_attributes_count: 0,
        };
        let mut with_error = span(2);
        with_error.error = Some("boom".into());
        with_error.attribute("http.response.status_code", 500);
        let body = encode_request(&resource, &[span(1), with_error]);
        let back: collector::ExportTraceServiceRequest = prost::Message::decode(&body[..]).unwrap();
        let scope = &back.resource_spans[0].scope_spans[0];
        assert_eq!(scope.spans.len(), 2);
        assert_eq!(scope.spans[0].trace_id, vec![7; 16]);
        assert_eq!(scope.spans[1].span_id, vec![2; 8]);
        assert_eq!(scope.spans[1].kind, trace::span::SpanKind::Server as i32);
        assert_eq!(
            scope.spans[1].status.as_ref().map(|s| s.code),
            Some(trace::status::StatusCode::Error as i32)
        );
        let service = back.resource_spans[0].resource.as_ref().unwrap().attributes[0].clone();
        assert_eq!(service.key, "service.name");
    }
}
