//! The access line written off the shard is the line `tracing`'s `fmt` writes for the same
//! exchange (text and JSON), and a full buffer drops lines and counts them.

use super::*;
use crate::grpc::status::Code;
use crate::middleware::layer::Layer;
use crate::middleware::log_writer::LogWriter;
use crate::middleware::trace_context::TraceContexts;
use http::{HeaderMap, Method, StatusCode};
use std::borrow::Cow;
use std::io::Write;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

fn http_exchange(path: &str) -> (Exchange, Outcome) {
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let ex = Exchange::http(Method::GET, path.to_owned(), "/health", peer);
    let outcome = Outcome {
        ended: Ended::Http {
            status: StatusCode::OK,
            body_bytes: 15,
        },
        elapsed: Duration::from_nanos(52_345),
    };
    (ex, outcome)
}

fn grpc_exchange() -> (Exchange, Outcome) {
    let peer: SocketAddr = "[::1]:40001".parse().unwrap();
    let path = "/sdsim.auth.v1.AuthService/ValidateToken";
    let ex = Exchange::grpc(
        "sdsim.auth.v1.AuthService",
        "ValidateToken",
        Cow::Borrowed(path),
        path,
        peer,
    );
    let outcome = Outcome {
        ended: Ended::Grpc {
            code: Code::ResourceExhausted,
        },
        elapsed: Duration::from_micros(1_500),
    };
    (ex, outcome)
}

/// What `tracing`'s `fmt` (as the server binary sets it up, colours off) writes for the
/// exchange after the trace-context layer has run, and what this module writes.
fn both(json: bool, make: fn() -> (Exchange, Outcome), request_id: &str) -> (String, String) {
    let from_tracing = Captured::default();
    let writer = from_tracing.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_target(true)
        .with_ansi(false)
        .with_writer(move || writer.clone());
    let (mut ex, outcome) = make();
    ex.request_id = request_id.to_owned();
    let dispatch = if json {
        tracing::Dispatch::new(subscriber.json().finish())
    } else {
        tracing::Dispatch::new(subscriber.finish())
    };
    tracing::dispatcher::with_default(&dispatch, || {
        let metadata = HeaderMap::new();
        let layer = TraceContexts::new();
        let passed = matches!(
            layer.request(&mut ex, &metadata),
            crate::middleware::layer::Check::Pass
        );
        assert!(passed);
        emit_event(&ex, &outcome);
    });
    let mut ours = Vec::new();
    let mut clock = SecondStamp::default();
    let stamp = clock.stamp(SystemTime::now());
    if json {
        json_line(&mut ours, stamp, &ex, &outcome);
    } else {
        text_line(&mut ours, stamp, &ex, &outcome);
    }
    (from_tracing.text(), String::from_utf8(ours).unwrap())
}

/// The line without its timestamp (27 characters: `2026-12-02T04:18:23.123456Z`), which
/// must have the same shape in both.
fn without_timestamp(line: &str, json: bool) -> String {
    let start = if json {
        line.find("\"timestamp\":\"").unwrap() + 13
    } else {
        0
    };
    let stamp = &line[start..start + 27];
    let shape: String = stamp
        .chars()
        .map(|c| if c.is_ascii_digit() { '9' } else { c })
        .collect();
    assert_eq!(shape, "9999-99-99T99:99:99.999999Z", "{line}");
    format!("{}{}", &line[..start], &line[start + 27..])
}

#[test]
fn the_text_line_is_the_one_tracing_writes() {
    for (make, id) in [
        (
            (|| http_exchange("/health")) as fn() -> (Exchange, Outcome),
            "req-1",
        ),
        (|| http_exchange("/ü/\"quoted\"\\"), "odd\tid"),
        (grpc_exchange, "grpc-7"),
    ] {
        let (theirs, ours) = both(false, make, id);
        assert_eq!(
            without_timestamp(&ours, false),
            without_timestamp(&theirs, false)
        );
        assert!(ours.contains(" INFO trace{trace_id="), "{ours}");
    }
}

#[test]
fn the_json_line_is_the_one_tracing_writes() {
    for (make, id) in [
        (
            (|| http_exchange("/health")) as fn() -> (Exchange, Outcome),
            "req-1",
        ),
        (|| http_exchange("/ü/\"quoted\"\\\u{1}"), "odd\tid"),
        (grpc_exchange, "grpc-7"),
    ] {
        let (theirs, ours) = both(true, make, id);
        assert_eq!(
            without_timestamp(&ours, true),
            without_timestamp(&theirs, true)
        );
    }
}

#[test]
fn timestamps_are_utc_calendar_time() {
    // 2026-11-23 06:06:55 UTC, and a leap day.
    assert_eq!(civil_prefix(1_795_414_015), "2026-11-23T06:06:55.");
    assert_eq!(civil_prefix(951_782_400), "2000-02-29T00:00:00.");
    let mut clock = SecondStamp::default();
    let at = SystemTime::UNIX_EPOCH + Duration::new(1_795_414_015, 7_000);
    let mut line = Vec::new();
    push_stamp(&mut line, &clock.stamp(at));
    assert_eq!(line, b"2026-11-23T06:06:55.000007Z");
}

/// An output whose writes wait until the test drops the sender (having said they started).
struct Held {
    gate: Mutex<mpsc::Receiver<()>>,
    started: mpsc::SyncSender<()>,
    out: Captured,
}

impl Write for Held {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.started.try_send(());
        let _ = self.gate.lock().unwrap().recv();
        self.out.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn lines_the_writer_cannot_take_are_dropped_and_counted() {
    let (release, gate) = mpsc::channel::<()>();
    let (started_tx, started) = mpsc::sync_channel(64);
    let out = Captured::default();
    let held = Held {
        gate: Mutex::new(gate),
        started: started_tx,
        out: out.clone(),
    };
    let writer = LogWriter::start("test-access", Box::new(held), 4096).unwrap();
    let metrics = Rc::new(Metrics::new());
    let layer = BufferedAccessLog::new(writer.shard_log(), LineFormat::Text, Rc::clone(&metrics));
    let dropped = || {
        metrics
            .snapshot()
            .counters
            .get(&Key::plain(ACCESS_LOG_DROPPED))
            .copied()
            .unwrap_or(0)
    };
    let (mut ex, outcome) = http_exchange("/health");
    ex.request_id = "first".into();
    layer.done(&ex, &outcome);
    // The writer took the first line and is held in its write.
    started.recv().unwrap();
    let mut sent = 0;
    while dropped() == 0 {
        ex.request_id = format!("r{sent}");
        layer.done(&ex, &outcome);
        sent += 1;
        assert!(sent < 10_000, "a 4 KiB buffer never filled");
    }
    // Once full, every further line is dropped and counted.
    for n in 0..10 {
        ex.request_id = format!("late{n}");
        layer.done(&ex, &outcome);
    }
    assert_eq!(dropped(), 11);
    drop(release);
    let totals = writer.finish();
    let text = out.text();
    let ids: Vec<&str> = text
        .lines()
        .map(|l| {
            l.split("request_id=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
        })
        .collect();
    let mut expected = vec!["first".to_owned()];
    expected.extend((0..sent - 1).map(|n| format!("r{n}")));
    assert_eq!(ids, expected, "every line the buffer took, in order");
    assert_eq!(totals.written, sent as u64);
}
