//! The idle scenario: connections opened in cumulative steps (`--sizes`), each step a load
//! run of its own that holds its connections until every step has been measured; after each
//! step and `--hold` seconds, the server's RSS and the kernel's socket memory per connection.

use super::{per_conn, ws_load, Args, Rows};
use crate::proc_sample::{server_socket_memory, ProcSample};
use anyhow::bail;
use sdsim_loadtest::ws::{run_ws_observed, WsControl, WsEvent, WsReport};
use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// A hold that ends only when [`WsControl::stop`] ends it: an idle stage's connections stay
/// open while the later stages open theirs and are measured.
const HELD_UNTIL_STOPPED: Duration = Duration::from_secs(24 * 3600);

/// One cumulative size of the idle scenario: a load run of its own holding its connections
/// until every size has been measured.
struct IdleStage {
    control: Arc<WsControl>,
    run: std::thread::JoinHandle<anyhow::Result<WsReport>>,
}

/// What the idle stages' threads tell the measuring thread.
enum StageNews {
    /// Stage `n`'s connections are all subscribed or failed.
    Connected(usize),
    /// Stage `n`'s run is over (stopped, or ended by an error or by the server).
    Ended(usize),
}

pub(super) fn measure_idle(
    args: &Args,
    addr: SocketAddr,
    path: &str,
    pid: Option<u32>,
) -> anyhow::Result<Rows> {
    let k = args.channels.max(1);
    let base = ProcSample::take(pid);
    let (news_tx, news) = mpsc::channel();
    let mut stages: Vec<IdleStage> = Vec::new();
    let measured = (|| {
        let mut rows = Rows::new();
        // (held, RSS) at each size: the slope is the marginal cost of one more connection,
        // without fixed costs such as the channels created by the first connections.
        let mut points = Vec::new();
        let mut open = 0;
        for (s, &n) in args.sizes.iter().enumerate() {
            // Connection j of this stage is connection `open + j` of the scenario.
            let channels = (0..k)
                .map(|c| format!("simulation:data:{}", (open + c) % k))
                .collect();
            let mut load = ws_load(
                args,
                addr,
                path,
                n - open,
                channels,
                format!("bench{s}-{{i}}"),
            );
            load.duration = HELD_UNTIL_STOPPED;
            let control = Arc::new(WsControl::default());
            let (c, tx) = (Arc::clone(&control), news_tx.clone());
            let run = std::thread::Builder::new()
                .name(format!("idle-stage-{s}"))
                .spawn(move || {
                    let report = run_ws_observed(&load, &c, |event| {
                        if let WsEvent::Connected { .. } = event {
                            let _ = tx.send(StageNews::Connected(s));
                        }
                    });
                    let _ = tx.send(StageNews::Ended(s));
                    report
                })?;
            stages.push(IdleStage { control, run });
            loop {
                match news.recv()? {
                    StageNews::Connected(x) if x == s => break,
                    StageNews::Ended(x) if x == s => {
                        let why = match stages.pop().map(|stage| stage.run.join()) {
                            Some(Ok(Err(e))) => format!("{e:#}"),
                            Some(Ok(Ok(report))) => format!("{:?}", report.errors_by_kind()),
                            _ => "its thread panicked".into(),
                        };
                        bail!("the load of {} connections (up to {n}) ended before they were open: {why}", n - open);
                    }
                    _ => {}
                }
            }
            let subscribed = stages[s].control.subscribed();
            if subscribed == 0 {
                bail!("no connection could subscribe ({} asked for)", n - open);
            }
            if subscribed < n - open {
                eprintln!("  {} connections did not subscribe", n - open - subscribed);
            }
            open = n;
            std::thread::sleep(Duration::from_secs_f64(args.hold));
            let s = ProcSample::take(pid);
            let held = stages
                .iter()
                .map(|st| st.control.held())
                .sum::<i64>()
                .max(0) as usize;
            eprintln!("  {n}: +{subscribed} subscribed, {held} held");
            rows.push((format!("held connections @{n}"), held as f64));
            if let (Some(a), Some(b)) = (s.rss, base.rss) {
                rows.push((
                    format!("server RSS per conn @{n} (B)"),
                    per_conn(a, b, held),
                ));
                points.push((held as f64, a as f64));
            }
            rows.push((
                format!("kernel TCP buffers per conn @{n} (B)"),
                per_conn(s.tcp_mem, base.tcp_mem, held),
            ));
            rows.push((
                format!("kernel slab per conn @{n} (B)"),
                per_conn(s.slab, base.slab, held),
            ));
            if let Some((sockets, bytes)) = server_socket_memory(addr.port()) {
                rows.push((
                    format!("server socket buffers per conn @{n} (B)"),
                    per_conn(bytes, 0, sockets),
                ));
            }
        }
        if points.len() >= 2 {
            rows.push((
                "server RSS slope over sizes (B/conn)".into(),
                slope(&points),
            ));
        }
        Ok::<_, anyhow::Error>(rows)
    })();
    for stage in &stages {
        stage.control.stop();
    }
    let mut errors = Vec::new();
    for (s, stage) in stages.into_iter().enumerate() {
        match stage.run.join() {
            Ok(Ok(report)) if !report.errors_by_kind().is_empty() => {
                errors.push(format!(
                    "size {}: {:?}",
                    args.sizes[s],
                    report.errors_by_kind()
                ));
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => errors.push(format!("size {}: {e:#}", args.sizes[s])),
            Err(_) => errors.push(format!("size {}: the load thread panicked", args.sizes[s])),
        }
    }
    if !errors.is_empty() {
        eprintln!("  errors: {}", errors.join("; "));
    }
    measured
}

/// Least-squares slope of y over x.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    sxy / sxx
}
