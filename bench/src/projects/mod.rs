//! The project and simulation services benchmark (`bench-projects`), three parts:
//!
//! - **api**: `GET` / `PUT /api/projects/{id}` under open-loop load (latency from each request's
//!   intended send time) at each of `--rates`, then closed loop (the most requests per second),
//!   on sdsim (1 shard), on a second sdsim process on the same database with the verified-token
//!   cache off, and on `peer-projects` (axum + jsonwebtoken + rusqlite doing the same work), the
//!   targets alternating, `--runs` times; HDR percentiles per request kind, ratios to the peer.
//!   Mix: `--put-percent` PUTs (half change the description, half the design), the rest GETs,
//!   over `--projects` projects of `--users` owners; each load connection owns its projects.
//! - **ws**: `--ws-clients` WebSocket clients subscribed on the one shard, `{"op":"ping"}` at
//!   `--ping-rate` (the `sdsim-loadtest` ws engine), without simulations and with
//!   `simulation.runs_per_shard` runs at speed 0 on that shard, on each of `--ws-configs`
//!   (`simulation.slice` / `runtime.driver`).
//! - **runs**: `--run-users` users each keep `--run-inflight` short runs (`--run-seconds`
//!   simulated, speed 0) outstanding for `--run-window` seconds: completed runs per second,
//!   429 / 503 answers, submit → completed latency (completion seen on the WebSocket). No peer.
//!
//! Servers are pinned to `--server-cpu` (every thread), the generators to `--client-cpu`.
//! Medians of `--runs`. The report goes to stdout and `bench/results/<UTC time>-projects.md`.
//!
//! `cargo build --release -p sdsim-server -p sdsim-bench && target/release/bench-projects --runs 3`
//!
//! Layout: this module holds the command line and assembles the report; `server` starts and
//! stops the sdsim and peer processes, `http` makes accounts and projects over the API,
//! `figures` formats percentiles and ratios; part A is `api` (its checks and table) over
//! `api_load` (the open- and closed-loop generator); `monitor` follows simulation lifecycle
//! events on a WebSocket for parts B (`ws`) and C (`runs`).

mod api;
mod api_load;
mod figures;
mod http;
mod monitor;
mod runs;
mod server;
mod ws;

use self::api::part_api;
use self::http::{account, login};
use self::monitor::Monitor;
use self::runs::{part_runs, runs_header, RUNS_NOTE};
use self::server::{add_admin, start_sdsim};
use self::ws::{part_ws, ws_header, WS_NOTE};
use crate::machine_line;
use crate::proc_sample::load_average;
use anyhow::{bail, ensure};
use clap::Parser;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The command line of `bench-projects`.
#[derive(Parser)]
#[command(about = None, long_about = None)]
pub struct Args {
    /// Runs of every measurement; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Parts to run: api, ws, runs.
    #[arg(long, value_delimiter = ',', default_value = "api,ws,runs")]
    parts: Vec<String>,
    /// api: measured seconds per load point.
    #[arg(long, default_value_t = 6.0)]
    duration: f64,
    /// api: warm-up seconds per load point.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// api: open-loop rates (requests/s); a closed-loop run over `--connections` follows.
    #[arg(long, value_delimiter = ',', default_value = "2000,8000")]
    rates: Vec<f64>,
    /// api: keep-alive connections (one request in flight on each).
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// api: project owners (registered accounts).
    #[arg(long, default_value_t = 8)]
    users: usize,
    /// api: projects, made from the system templates in turn.
    #[arg(long, default_value_t = 128)]
    projects: usize,
    /// api: percentage of requests that are PUTs.
    #[arg(long, default_value_t = 10.0)]
    put_percent: f64,
    /// api: leave out the sdsim process with the verified-token cache off.
    #[arg(long)]
    no_uncached: bool,
    /// ws: subscribed WebSocket clients.
    #[arg(long, default_value_t = 200)]
    ws_clients: usize,
    /// ws: pings per second over all clients.
    #[arg(long, default_value_t = 2000.0)]
    ping_rate: f64,
    /// ws: measured seconds per phase.
    #[arg(long, default_value_t = 6.0)]
    ws_duration: f64,
    /// ws: servers to compare, `SLICE[/DRIVER]`: `simulation.slice` and `runtime.driver`.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1ms/io_uring,1ms/epoll,10ms/epoll"
    )]
    ws_configs: Vec<String>,
    /// runs: servers to measure, as `--ws-configs` (a server in both does part B first).
    #[arg(long, value_delimiter = ',', default_value = "1ms/io_uring")]
    run_configs: Vec<String>,
    /// ws: `simulation.runs_per_shard`, and the runs started for the measurement.
    #[arg(long, default_value_t = 2)]
    sim_runs: usize,
    /// runs: users submitting.
    #[arg(long, default_value_t = 4)]
    run_users: usize,
    /// runs: runs each user keeps queued or running.
    #[arg(long, default_value_t = 4)]
    run_inflight: usize,
    /// runs: who submits: `same` (the same users every run, their history growing) and/or
    /// `fresh` (new accounts for every run).
    #[arg(long, value_delimiter = ',', default_value = "same,fresh")]
    run_users_mode: Vec<String>,
    /// runs: simulated seconds of each run (three-tier template).
    #[arg(long, default_value_t = 10.0)]
    run_seconds: f64,
    /// runs: measured seconds (after 2 s unmeasured).
    #[arg(long, default_value_t = 10.0)]
    run_window: f64,
    /// CPU of the servers.
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
    /// CPU of the load generators.
    #[arg(long, default_value_t = 1)]
    client_cpu: usize,
    /// The sdsim binary.
    #[arg(long, default_value = "target/release/sdsim")]
    sdsim: String,
    /// The peer binary.
    #[arg(long, default_value = "target/release/peer-projects")]
    peer: String,
    /// Extra `--set KEY=VALUE` for every sdsim process (e.g. `runtime.driver=epoll`).
    #[arg(long = "sdsim-set")]
    sdsim_set: Vec<String>,
    /// The Markdown report (default: bench/results/<UTC time>-projects.md).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// A server of parts B and C: `simulation.slice` and `runtime.driver`, written `1ms/epoll`.
struct SimConfig {
    label: String,
    sets: Vec<String>,
}

fn sim_config(args: &Args, text: &str) -> SimConfig {
    let (slice, driver) = text.split_once('/').unwrap_or((text, ""));
    let mut sets = vec![
        format!("simulation.slice={slice}"),
        format!("simulation.runs_per_shard={}", args.sim_runs),
        // 200 clients of one account; the default allows 100 per user.
        "websocket.max_connections_per_user=0".into(),
        // Part C: neither limit binds (they apply to runs queued or running, not to part B).
        "simulation.max_runs_per_user=1000".into(),
        "simulation.max_queued=4096".into(),
    ];
    if !driver.is_empty() {
        sets.push(format!("runtime.driver={driver}"));
    }
    let driver = if driver.is_empty() { "auto" } else { driver };
    SimConfig {
        label: format!("{slice}, {driver}"),
        sets,
    }
}

/// Runs the parts `args` asks for, prints the report and writes it to `bench/results/`.
pub fn run(args: Args) -> anyhow::Result<()> {
    for bin in [&args.sdsim, &args.peer] {
        if !Path::new(bin).exists() {
            bail!("{bin} not found: cargo build --release -p sdsim-server -p sdsim-bench");
        }
    }
    for p in &args.parts {
        ensure!(
            ["api", "ws", "runs"].contains(&p.as_str()),
            "unknown part {p}: api, ws, runs"
        );
    }
    for m in &args.run_users_mode {
        ensure!(
            ["same", "fresh"].contains(&m.as_str()),
            "unknown --run-users-mode {m}: same, fresh"
        );
    }
    let dir = std::env::temp_dir().join(format!("sdsim-bench-projects-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let started = Instant::now();
    let load_at_start = load_average();
    let result = bench(&args, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let body = result?;
    let command: Vec<String> = std::env::args().collect();
    let commit = Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let mut report = format!("# Project and simulation services: {}\n\n", machine_line());
    writeln!(
        report,
        "- command: `{}` (sdsim {commit})",
        command.join(" ")
    )?;
    writeln!(report, "- servers pinned to CPU {} (every thread), load generators to CPU {}; one sdsim shard; a fresh SQLite database per server in a temporary directory", args.server_cpu, args.client_cpu)?;
    writeln!(report, "- sdsim `--set` of every server: `runtime.shards=1` `runtime.cpus=[{}]` `storage.url=sqlite://TMP/<server>/sdsim.db` `ratelimit.enabled=false` `log.access=false` `log.level=warn` `auth.access_ttl=1h` (tokens outlive the run){}, and every listener (`gateway.listen`, `auth.grpc_listen`, `auth.http_listen`, `project.grpc_listen`, `project.http_listen`, `simulation.grpc_listen`, `simulation.http_listen`) on a free 127.0.0.1 port; per part below", args.server_cpu, args.sdsim_set.iter().map(|s| format!(" `{s}`")).collect::<String>())?;
    writeln!(report, "- load average (1 min): {load_at_start:.2} at the start, {:.2} at the end (the machine is shared; other work on it skews every figure); wall time {:.0} s", load_average(), started.elapsed().as_secs_f64())?;
    report.push_str(&body);
    crate::write_report(args.out.as_deref(), "projects", &report)?;
    Ok(())
}

/// The report's body: part A, then parts B and C server by server (a server in both runs
/// part B first), each part's table, note and every-run lines.
fn bench(args: &Args, dir: &Path) -> anyhow::Result<String> {
    let has = |part: &str| args.parts.iter().any(|p| p == part);
    let mut out = String::new();
    if has("api") {
        out.push_str(&part_api(args, dir)?);
    }
    let ws: &[String] = if has("ws") { &args.ws_configs } else { &[] };
    let runs: &[String] = if has("runs") { &args.run_configs } else { &[] };
    let mut configs: Vec<&String> = ws.iter().collect();
    configs.extend(runs.iter().filter(|c| !ws.contains(c)));
    // Tables rows and every-run lines of parts B and C.
    let (mut ws_rows, mut ws_lines) = (String::new(), String::new());
    let (mut run_rows, mut run_lines) = (String::new(), String::new());
    for (k, text) in configs.into_iter().enumerate() {
        let config = sim_config(args, text);
        let sims_dir = dir.join(format!("sims{k}"));
        let admin = add_admin(args, &sims_dir)?;
        let mut server = start_sdsim(args, &sims_dir, "sdsim", &config.sets)?;
        let user = account(server.addr, "watcher@example.com")?;
        let admin = login(server.addr, &admin)?;
        let monitor = Monitor::start(server.addr, &admin.token, args.client_cpu)?;
        let sets: Vec<String> = config.sets.iter().map(|s| format!("`{s}`")).collect();
        let line = format!("{}: sdsim --set {}\n", config.label, sets.join(" "));
        if ws.contains(text) {
            let result = part_ws(args, &config, &server, &user, &monitor);
            server.check_alive()?;
            let (rows, lines) = result?;
            ws_rows.push_str(&rows);
            ws_lines.push_str(&(line.clone() + &lines));
        }
        if runs.contains(text) {
            run_lines.push_str(&line);
            for mode in &args.run_users_mode {
                let result = part_runs(args, &config, &server, &monitor, mode == "fresh");
                server.check_alive()?;
                let (row, lines) = result?;
                run_rows.push_str(&row);
                run_lines.push_str(&lines);
            }
        }
    }
    for (present, header, rows, lines, note) in [
        (has("ws"), ws_header(args), ws_rows, ws_lines, WS_NOTE),
        (
            has("runs"),
            runs_header(args),
            run_rows,
            run_lines,
            RUNS_NOTE,
        ),
    ] {
        if present {
            out.push_str(&header);
            out.push_str(&rows);
            writeln!(out, "\n{note}")?;
            write!(out, "\n### Every run\n\n```\n{lines}```\n")?;
        }
    }
    Ok(out)
}
