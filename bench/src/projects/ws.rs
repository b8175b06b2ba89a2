//! Part B: WebSocket ping round trips (the load generator's ws engine) on a shard without
//! simulations and with `simulation.runs_per_shard` runs flat out on it, and a project read
//! timed meanwhile.

use super::figures::{errors_text, fmt_pcts, fmt_ratios, median_pcts, pcts};
use super::http::{agent, call, create_project, User};
use super::monitor::{ended, submit_async, Monitor};
use super::server::Server;
use super::{Args, SimConfig};
use crate::{median, pin_current};
use anyhow::{bail, ensure, Context};
use sdsim_loadtest::report::Report;
use sdsim_loadtest::ws::{run_ws, Op, WsOptions};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The three-tier template with its load and every component's instances multiplied by
/// `factor`: the same queues, `factor` times the engine events per simulated second.
fn scaled_design(gateway: SocketAddr, user: &User, factor: f64) -> anyhow::Result<Value> {
    let (s, t) = call(
        &agent(),
        "GET",
        &format!("http://{gateway}/api/templates/three-tier"),
        Some(&user.token),
        None,
    )?;
    ensure!(s == 200, "template answered {s}: {t}");
    let mut design = t["design"].clone();
    for c in design["components"].as_array_mut().context("components")? {
        for key in ["rate_per_s", "instances"] {
            if let Some(v) = c[key].as_f64() {
                c[key] = json!((v * factor).round() as u64);
            }
        }
    }
    Ok(design)
}

struct WsPhase {
    ping: Report,
    /// `GET /api/projects/{id}` (answered from SQLite) timed during the hold.
    get: Report,
    subscribed: usize,
    /// First run start and last run end, seconds from the hold's start and end.
    coverage: Option<(f64, f64)>,
}

/// Times `GET /api/projects/{id}` every 100 ms (from CPU `cpu`) until `stop`.
fn probe_gets(
    url: String,
    token: String,
    cpu: usize,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<(Instant, Duration)>> {
    std::thread::spawn(move || {
        pin_current(cpu);
        let (a, mut out) = (agent(), Vec::new());
        while !stop.load(Ordering::Relaxed) {
            let sent = Instant::now();
            if matches!(call(&a, "GET", &url, Some(&token), None), Ok((200, _))) {
                out.push((sent, sent.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(100).saturating_sub(sent.elapsed()));
        }
        out
    })
}

fn ws_phase(
    args: &Args,
    server: &Server,
    user: &User,
    project: &str,
    sims: Option<(&Monitor, f64)>,
) -> anyhow::Result<WsPhase> {
    let options = WsOptions {
        url: format!("ws://{}/ws", server.addr),
        connections: args.ws_clients,
        connect_rate: 1000.0,
        duration: Duration::from_secs_f64(args.ws_duration),
        warmup: Duration::from_secs(1),
        channel: "system:announcements".into(),
        token: Some(user.token.clone()),
        send_rate: Some(args.ping_rate),
        cpus: vec![args.client_cpu],
        ..WsOptions::default()
    };
    let load = options.build()?;
    let mut posts = Vec::new();
    let before = sims.map_or(0, |(m, _)| m.events().len());
    if let Some((monitor, seconds)) = sims {
        for i in 0..args.sim_runs {
            posts.push(submit_async(
                server.addr,
                &user.token,
                json!({"project_id": project, "duration_s": seconds, "speed": 0, "seed": i + 1}),
            ));
        }
        ensure!(
            monitor.wait(Duration::from_secs(20), |e| e[before..]
                .iter()
                .any(|e| e.event == "started")),
            "no run started within 20 s"
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let url = format!("http://{}/api/projects/{project}", server.addr);
    let probe = probe_gets(url, user.token.clone(), args.client_cpu, Arc::clone(&stop));
    let called = Instant::now();
    let report = run_ws(&load);
    stop.store(true, Ordering::Relaxed);
    let gets = probe
        .join()
        .map_err(|_| anyhow::anyhow!("the GET probe panicked"))?;
    let report = report?;
    let hold_start = called + Duration::from_millis(200) + report.ramp + load.warmup;
    let hold_end = hold_start + report.hold;
    let mut get = Report::new(report.hold);
    for (_, took) in gets
        .iter()
        .filter(|(t, _)| (hold_start..hold_end).contains(t))
    {
        get.counters.completed += 1;
        let _ = get
            .histogram
            .record((took.as_micros() as u64).clamp(1, Report::MAX_US));
    }
    let mut coverage = None;
    if let Some((monitor, seconds)) = sims {
        let n = args.sim_runs;
        let all_ended = monitor.wait(Duration::from_secs_f64(60.0 + seconds / 500.0), |e| {
            e[before..].iter().filter(|e| ended(e)).count() >= n
        });
        ensure!(all_ended, "the {n} runs did not end");
        for p in posts {
            let (s, body) = p.join().map_err(|_| anyhow::anyhow!("submit panicked"))??;
            ensure!(s == 202, "start answered {s}: {body}");
        }
        let events = monitor.events();
        let first = events[before..]
            .iter()
            .filter(|e| e.event == "started")
            .map(|e| e.at)
            .min()
            .context("no start")?;
        let last = events[before..]
            .iter()
            .filter(|e| ended(e))
            .map(|e| e.at)
            .max()
            .context("no end")?;
        let secs = |a: Instant, b: Instant| {
            if a >= b {
                (a - b).as_secs_f64()
            } else {
                -(b - a).as_secs_f64()
            }
        };
        coverage = Some((secs(first, hold_start), secs(last, hold_end)));
    }
    Ok(WsPhase {
        ping: report.report(Op::Ping),
        get,
        subscribed: report.subscribed,
        coverage,
    })
}

/// Simulated seconds per wall second of one flat-out run of `project` on the idle shard.
fn calibrate(
    server: &Server,
    user: &User,
    monitor: &Monitor,
    project: &str,
) -> anyhow::Result<f64> {
    let before = monitor.events().len();
    let seconds = 600.0;
    let post = submit_async(
        server.addr,
        &user.token,
        json!({"project_id": project, "duration_s": seconds, "speed": 0}),
    );
    if !monitor.wait(Duration::from_secs(60), |e| e[before..].iter().any(ended)) {
        let seen: Vec<String> = monitor.events()[before..]
            .iter()
            .map(|e| e.event.clone())
            .collect();
        let answer = if post.is_finished() {
            format!(
                "{:?}",
                post.join()
                    .map_err(|_| anyhow::anyhow!("submit panicked"))?
            )
        } else {
            "none yet".into()
        };
        bail!("the calibration run did not end within 60 s; events seen: {seen:?}; start answer: {answer}");
    }
    post.join()
        .map_err(|_| anyhow::anyhow!("submit panicked"))??;
    let events = monitor.events();
    let started = events[before..]
        .iter()
        .find(|e| e.event == "started")
        .context("no start")?
        .at;
    let done = events[before..]
        .iter()
        .find(|e| ended(e))
        .context("no end")?
        .at;
    Ok(seconds / (done - started).as_secs_f64().max(1e-3))
}

/// Part B on one server: (table rows, every-run lines).
pub(super) fn part_ws(
    args: &Args,
    config: &SimConfig,
    server: &Server,
    user: &User,
    monitor: &Monitor,
) -> anyhow::Result<(String, String)> {
    let label = &config.label;
    let (mut rows, mut per_run) = (String::new(), String::new());
    let design = scaled_design(server.addr, user, 10.0)?;
    let project = create_project(
        server.addr,
        user,
        &json!({"name": "heavy", "design": design}),
    )?;
    let project = project["id"].as_str().context("project id")?.to_string();
    let speed = calibrate(server, user, monitor, &project)?;
    let window = args.ws_clients as f64 / 1000.0 + 1.0 + args.ws_duration + 2.0;
    let seconds = (speed * window).ceil();
    let line = format!("{label}: calibration: one run alone simulates {speed:.0} s per wall second; measured runs are {seconds} simulated s");
    eprintln!("{line}");
    writeln!(per_run, "{line}")?;
    let (mut idle, mut busy) = (Vec::new(), Vec::new());
    for run in 1..=args.runs {
        for with_sims in if run % 2 == 1 {
            [false, true]
        } else {
            [true, false]
        } {
            let sims = with_sims.then_some((monitor, seconds));
            let phase = ws_phase(args, server, user, &project, sims)?;
            let cov = phase.coverage.map_or(String::new(), |(a, b)| format!("; runs: first started {a:+.2} s from the hold's start, last ended {b:+.2} s from its end"));
            let kind = if with_sims {
                "with runs"
            } else {
                "without runs"
            };
            let line = format!(
                "{label} run {run} {kind:<12} subscribed {}  pings {:.0}/s  {} ms  errors {}; GET /api/projects/{{id}} ×{}: {} ms{cov}",
                phase.subscribed,
                phase.ping.throughput(),
                fmt_pcts(&pcts(&phase.ping)),
                errors_text(&phase.ping),
                phase.get.counters.completed,
                fmt_pcts(&pcts(&phase.get)),
            );
            eprintln!("{line}");
            writeln!(per_run, "{line}")?;
            if with_sims { &mut busy } else { &mut idle }.push((phase.ping, phase.get));
        }
    }
    let split = |v: Vec<(Report, Report)>| -> (Vec<Report>, Vec<Report>) { v.into_iter().unzip() };
    let ((idle, idle_get), (busy, busy_get)) = (split(idle), split(busy));
    let (a, b) = (median_pcts(&idle), median_pcts(&busy));
    let tp = |v: &[Report]| median(v.iter().map(Report::throughput).collect());
    let errs = |v: &[Report]| v.iter().map(Report::errors).sum::<u64>();
    let get = |v: &[Report]| {
        let p = median_pcts(v);
        format!("{:.3} / {:.3}", p[0], p[3])
    };
    writeln!(
        rows,
        "| {label} | without runs | {:.0} | {} | {} | | {} |",
        tp(&idle),
        fmt_pcts(&a),
        errs(&idle),
        get(&idle_get)
    )?;
    writeln!(
        rows,
        "| {label} | with {} runs | {:.0} | {} | {} | **{}** | {} |",
        args.sim_runs,
        tp(&busy),
        fmt_pcts(&b),
        errs(&busy),
        fmt_ratios(&b, &a),
        get(&busy_get)
    )?;
    Ok((rows, per_run))
}

pub(super) const WS_NOTE: &str = "How a run shares the shard: at speed 0 it advances the engine in steps of at most `duration_s / 2000` simulated seconds, halving the step while one takes more than a quarter of `simulation.slice` and doubling it back while one takes less than a sixteenth, until the slice has passed; then it calls `sdsim_core::mesh::yield_to_driver`, which lets the shard's other ready tasks run and makes monoio poll its driver (sockets, timers, wake-ups from other threads such as the SQLite threads' answers) without idling. (monoio 0.2.4 polls its driver fully only when it parks, and a task that only yields keeps it from parking: before this, 2 flat-out runs held pings for seconds on io_uring.) So with N runs flat out on a shard, a request can wait up to about N slices. The last column: one `GET /api/projects/{id}` every 100 ms from another client (a role lookup and a project read on the SQLite reader threads). The runs are sized (from the calibration run) to end by themselves shortly after the window rather than being stopped; the per-run lines show when they started and ended relative to the measured hold.";

pub(super) fn ws_header(args: &Args) -> String {
    format!(
        "\n## B. WebSocket ping round trip while simulations run on the same shard\n\n{} clients of one account connected and subscribed (to `system:announcements`, where nothing is published) on the one shard, `{{\"op\":\"ping\"}}` → `{{\"op\":\"pong\"}}` at {:.0}/s in total (open loop, latency from each ping's intended send time, `sdsim-loadtest` ws engine pinned to CPU {}), {} s measured after 1 s; without simulations, then with {} runs (= `simulation.runs_per_shard`) started at speed 0 (flat out) on that shard just before the clients connect. Runs are the three-tier template with its load and instances ×10, their simulated duration sized from a calibration run to outlast the measurement. Latency in ms, medians of {} runs; the two phases alternate which goes first. Rows are sdsim servers by `simulation.slice` and `runtime.driver` (auto = io_uring when the kernel allows it).\n\n| slice, driver | phase | pings/s | p50 / p99 / p99.9 / max ms | errors | with / without: p50 / p99 / p99.9 / max | GET /api/projects/{{id}} meanwhile, p50 / max ms |\n|---|---|---|---|---|---|---|\n",
        args.ws_clients, args.ping_rate, args.client_cpu, args.ws_duration, args.sim_runs, args.runs
    )
}
