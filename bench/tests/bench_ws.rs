//! `bench-ws` run against a server speaking sdsim's WebSocket protocol in this process
//! (`--target-only`), its printed table read back. Times are asserted only as lower bounds
//! that the server's own delays make certain.

mod support;

use std::process::Command;
use std::time::Duration;
use support::{ProtocolServer, Quirks};

/// Runs `bench-ws` with `args` after `--target-only URL --runs 1 --client-cpus 0`; its stdout.
fn bench_ws(server: &ProtocolServer, args: &[&str]) -> String {
    let url = server.url();
    let out = Command::new(env!("CARGO_BIN_EXE_bench-ws"))
        .args(["--target-only", &url, "--runs", "1", "--client-cpus", "0"])
        .args(args)
        .output()
        .expect("bench-ws runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "bench-ws failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The value of the table row `label` (the only column: `--target-only`).
fn row(table: &str, label: &str) -> f64 {
    let prefix = format!("| {label} |");
    let line = table
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no row `{label}` in\n{table}"));
    let cell = line[prefix.len()..].split('|').next().unwrap_or("").trim();
    cell.parse()
        .unwrap_or_else(|_| panic!("row `{label}`: `{cell}` is not a number"))
}

#[test]
fn fanout_latency_counts_from_each_events_intended_send_time() {
    // The first publish's answer is held back 400 ms; its event goes out at once. With one
    // publisher connection at 20/s, event 1 is due 50 ms after event 0 but can only be sent
    // once that answer has come, at least 400 ms after event 0: at least 350 ms late.
    let server = ProtocolServer::start(Quirks {
        first_publish_answer_delay: Duration::from_millis(400),
        ..Quirks::default()
    });
    let table = bench_ws(
        &server,
        &[
            "--scenario",
            "fanout",
            "--subscribers",
            "4",
            "--rate",
            "20",
            "--duration",
            "1",
            "--hold",
            "0.1",
            "--drain",
            "5",
        ],
    );
    assert_eq!(row(&table, "subscribed connections"), 4.0, "{table}");
    assert_eq!(row(&table, "publishes/s"), 20.0, "{table}");
    assert_eq!(
        row(&table, "missing (expected − delivered)"),
        0.0,
        "{table}"
    );
    assert_eq!(row(&table, "publish errors"), 0.0, "{table}");
    let max = row(&table, "latency max ms");
    assert!(
        max >= 349.0,
        "events sent late because of the held-back answer must count their wait: max {max} ms\n{table}"
    );
    // Events 1..=7 (due 50..350 ms) all waited for that answer: 28 of the 80 deliveries.
    assert!(row(&table, "latency p99 ms") >= 299.0, "{table}");
}

#[test]
fn sequence_gaps_and_repeated_events_are_counted_per_subscriber() {
    let server = ProtocolServer::start(Quirks {
        duplicate_publish: Some(5),
        skip_seq_before_publish: Some(10),
        ..Quirks::default()
    });
    let table = bench_ws(
        &server,
        &[
            "--scenario",
            "fanout-many",
            "--subscribers",
            "4",
            "--channels",
            "1",
            "--rate",
            "20",
            "--duration",
            "1",
            "--hold",
            "0.1",
            "--drain",
            "5",
        ],
    );
    assert_eq!(row(&table, "subscribed connections"), 4.0, "{table}");
    assert_eq!(row(&table, "seq gaps"), 4.0, "{table}");
    assert_eq!(
        row(&table, "duplicate / out-of-order events"),
        4.0,
        "{table}"
    );
    assert_eq!(row(&table, "unparsed messages"), 0.0, "{table}");
    // 20 events owed to each of 4 subscribers; the repeated one came to each once more.
    assert_eq!(
        row(&table, "missing (expected − delivered)"),
        -4.0,
        "{table}"
    );
}

#[test]
fn idle_connections_are_held_cumulatively_across_sizes() {
    let server = ProtocolServer::start(Quirks::default());
    let pid = std::process::id().to_string();
    let table = bench_ws(
        &server,
        &[
            "--scenario",
            "idle",
            "--sizes",
            "3,7",
            "--channels",
            "2",
            "--hold",
            "0.2",
            "--server-pid",
            &pid,
        ],
    );
    assert_eq!(row(&table, "held connections @3"), 3.0, "{table}");
    assert_eq!(row(&table, "held connections @7"), 7.0, "{table}");
    // The server is this process: its RSS is read, so the per-connection rows exist.
    assert!(
        row(&table, "server RSS per conn @7 (B)").is_finite(),
        "{table}"
    );
    assert!(
        row(&table, "server RSS slope over sizes (B/conn)").is_finite(),
        "{table}"
    );
}
