//! The fanout scenarios: subscribers held on one channel (`fanout`) or spread over many
//! (`fanout-many`), events published in open loop by the load generator; deliveries, latency
//! from each event's intended send time, sequence checks, and the server's CPU per delivery.

use super::{per_conn, ws_load, Args, Rows, Scenario};
use crate::proc_sample::{cpu_seconds, server_socket_memory, ProcSample};
use anyhow::bail;
use sdsim_loadtest::ws::{run_ws_observed, Op, Publish, WsControl, WsEvent};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A moment of the fanout run: when, the server's and this process's CPU seconds.
type CpuMark = (Instant, Option<f64>, Option<f64>);

/// What the fanout measurement samples around the load generator's run.
#[derive(Default)]
struct FanoutSamples {
    /// Connections subscribed after `--hold`, before publishing.
    held: usize,
    /// Server and kernel memory then.
    mem: ProcSample,
    /// The server's established sockets and their kernel buffer bytes then.
    skmem: Option<(usize, u64)>,
    /// When the hold (publishing) began: event `k` was due `k / rate` later.
    hold_start: Option<Instant>,
    /// As publishing starts and as it ends.
    publishing: [Option<CpuMark>; 2],
    /// Server CPU seconds once the deliveries owed had come (or `--drain` passed).
    server_cpu_drained: Option<f64>,
}

pub(super) fn measure_fanout(
    args: &Args,
    addr: SocketAddr,
    path: &str,
    pid: Option<u32>,
) -> anyhow::Result<Rows> {
    let many = args.scenario == Scenario::FanoutMany;
    let k = if many { args.channels.max(1) } else { 1 };
    let channels: Vec<String> = (0..k)
        .map(|i| {
            if many {
                format!("simulation:data:{i}")
            } else {
                "system:announcements".to_owned()
            }
        })
        .collect();
    let mut subs_per_channel = vec![0u64; k];
    for i in 0..args.subscribers {
        subs_per_channel[i % k] += 1;
    }
    let rate = args.rate.unwrap_or(if many { k as f64 } else { 10.0 });
    let mut load = ws_load(
        args,
        addr,
        path,
        args.subscribers,
        channels,
        "bench{i}".into(),
    );
    load.publish = Some(Publish {
        addr,
        host: addr.to_string(),
        path: "/api/publish".into(),
        token: Some("admin".into()),
        rate,
        connections: args.publishers,
        data_size: Some(args.size),
    });

    let base = ProcSample::take(pid);
    let me = std::process::id();
    let cpu_mark = || (Instant::now(), pid.and_then(cpu_seconds), cpu_seconds(me));
    let control = WsControl::default();
    let mut samples = FanoutSamples::default();
    let report = run_ws_observed(&load, &control, |event| match event {
        WsEvent::Connected { held } => {
            if held > 0 {
                std::thread::sleep(Duration::from_secs_f64(args.hold));
            }
            samples.held = control.held().max(0) as usize;
            samples.mem = ProcSample::take(pid);
            samples.skmem = server_socket_memory(addr.port());
        }
        WsEvent::HoldStarted { at, .. } => {
            samples.hold_start = Some(at);
            samples.publishing[0] = Some(cpu_mark());
        }
        WsEvent::HoldEnded { .. } => samples.publishing[1] = Some(cpu_mark()),
        WsEvent::Stopping { .. } => samples.server_cpu_drained = pid.and_then(cpu_seconds),
        WsEvent::Interval { .. } => {}
    })?;
    let errors = report.errors_by_kind();
    if report.subscribed == 0 {
        bail!("no connection could subscribe; errors: {errors:?}");
    }
    if !errors.is_empty() {
        eprintln!("  errors: {errors:?}");
    }

    let published: u64 = report.published.iter().sum();
    let expected: u64 = report
        .published
        .iter()
        .zip(&subs_per_channel)
        .map(|(p, s)| p * s)
        .sum();
    let deliver = report.report(Op::Deliver);
    let delivered = deliver.counters.completed;
    let window = report
        .tally
        .last_delivery
        .zip(samples.hold_start)
        .map(|(last, start)| last.saturating_duration_since(start).as_secs_f64())
        .unwrap_or(0.0)
        .max(args.duration);
    let latency = deliver.percentiles();
    let publish = report.report(Op::Publish);
    let count = |n: u64| n as f64;
    let mut rows: Rows = vec![
        ("subscribed connections".into(), report.subscribed as f64),
        ("publishes/s".into(), published as f64 / args.duration),
        ("deliveries/s".into(), delivered as f64 / window),
        ("latency p50 ms".into(), latency.p50),
        ("latency p99 ms".into(), latency.p99),
        ("latency p99.9 ms".into(), latency.p999),
        ("latency max ms".into(), latency.max),
        (
            "missing (expected − delivered)".into(),
            expected as f64 - delivered as f64,
        ),
        ("seq gaps".into(), count(report.tally.seq_gaps)),
        (
            "duplicate / out-of-order events".into(),
            count(report.tally.seq_out_of_order),
        ),
        (
            "unparsed messages".into(),
            count(
                deliver
                    .counters
                    .errors
                    .get("unparsed")
                    .copied()
                    .unwrap_or(0),
            ),
        ),
        (
            "closed by server (1008)".into(),
            count(report.tally.close_codes.get(&1008).copied().unwrap_or(0)),
        ),
        (
            "closed by server (any)".into(),
            (report.subscribed as i64 - report.held_at_end).max(0) as f64,
        ),
        ("publish errors".into(), count(publish.errors())),
        ("publish request p50 ms".into(), publish.percentiles().p50),
    ];
    if let [Some((t0, Some(c0), m0)), Some((t1, Some(c1), m1))] = samples.publishing {
        let publish_secs = (t1 - t0).as_secs_f64().max(1e-9);
        rows.push((
            "server CPU % while publishing".into(),
            (c1 - c0) / publish_secs * 100.0,
        ));
        if let Some(c2) = samples.server_cpu_drained {
            rows.push((
                "server CPU µs per delivery".into(),
                (c2 - c0) * 1e6 / delivered.max(1) as f64,
            ));
        }
        if let (Some(m0), Some(m1)) = (m0, m1) {
            // The whole bench-ws process, as a share of its client CPUs: near 100 % means the
            // client, not the server, may be the bottleneck.
            rows.push((
                "client CPU % while publishing".into(),
                (m1 - m0) / publish_secs / args.client_cpus.len() as f64 * 100.0,
            ));
        }
    } else if let [Some((t0, None, Some(m0))), Some((t1, None, Some(m1)))] = samples.publishing {
        rows.push((
            "client CPU % while publishing".into(),
            (m1 - m0) / (t1 - t0).as_secs_f64().max(1e-9) / args.client_cpus.len() as f64 * 100.0,
        ));
    }
    let (mem, held) = (samples.mem, samples.held);
    if let (Some(a), Some(b)) = (mem.rss, base.rss) {
        rows.push(("server RSS per conn (B)".into(), per_conn(a, b, held)));
    }
    rows.push((
        "kernel TCP buffers per conn (B)".into(),
        per_conn(mem.tcp_mem, base.tcp_mem, held),
    ));
    rows.push((
        "kernel slab per conn (B)".into(),
        per_conn(mem.slab, base.slab, held),
    ));
    if let Some((sockets, bytes)) = samples.skmem {
        rows.push((
            "server socket buffers per conn (B)".into(),
            per_conn(bytes, 0, sockets),
        ));
    }
    eprintln!(
        "  {delivered} delivered of {expected} expected in {window:.2} s, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms (from each event's intended send time)",
        latency.p50, latency.p99, latency.max
    );
    Ok(rows)
}
