//! Soak: the load generator's journey (`loadtest/scenarios/journey.toml`: register, log in,
//! WebSocket notifications, a project, a run, gRPC) against one `sdsim serve` for a long time
//! at a fixed fraction of its measured capacity, sampling the server's resident memory, its
//! open descriptors and the p99 of every step once per sample period.
//!
//! 1. **capacity** (unless `--capacity` gives it): a fresh server; the journey at
//!    `--probe-start` users/s for `--probe-seconds`, the rate multiplied by `--probe-factor`
//!    after every stage that holds — every user completed, at most 1 % started late, the whole
//!    journey's p99 under `--probe-p99-ms` — until one does not. Capacity = the last rate that
//!    held.
//! 2. **soak**: another fresh server; the journey at `--load-fraction` (0.7) × capacity for
//!    `--minutes`; every `--sample-seconds` a row: RSS (`VmRSS`), open descriptors
//!    (`/proc/PID/fd`), users started / completed / failed in the period, p99 per step.
//! 3. **verdict**: after `--warmup-minutes` and before the drain (rows past `--minutes`, when
//!    no user arrives any more), is RSS flat within 5 % (max − min over min)?
//!
//! The server (every role, embedded SQLite in a temporary directory, one shard, rate limiting
//! off) runs on `--server-cpu`, the generator on `--client-cpu`. Writes `PREFIX.csv`,
//! `PREFIX.svg` (RSS, descriptors and p99 against time) and `PREFIX.md`, PREFIX being `--out`
//! or `bench/results/<UTC time>-soak`. Run from the repository root (the gRPC steps compile
//! `proto/`):
//!
//! `cargo build --release -p sdsim-server -p sdsim-bench && target/release/bench-soak`

use anyhow::{bail, Context};
use clap::Parser;
use mimalloc::MiMalloc;
use sdsim_bench::process::{free_port, pinned, stop, wait_ready};
use sdsim_bench::{machine_line, utc_stamp};
use sdsim_loadtest::flow::{run_flow, run_flow_with, FlowLoad, FlowTally};
use sdsim_loadtest::scenario::{PhaseSpec, Scenario};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Child;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

/// The goal: RSS after warm-up stays within this fraction of its lowest sample.
const RSS_FLAT: f64 = 0.05;

#[derive(Parser)]
struct Args {
    /// The `sdsim` binary.
    #[arg(long, default_value = "target/release/sdsim")]
    sdsim: String,
    /// The journey scenario; its vars are pointed at the server.
    #[arg(long, default_value = "loadtest/scenarios/journey.toml")]
    scenario: PathBuf,
    /// Length of the soak.
    #[arg(long, default_value_t = 30.0)]
    minutes: f64,
    /// Sample period.
    #[arg(long, default_value_t = 60.0)]
    sample_seconds: f64,
    /// Samples in the first minutes are left out of the RSS verdict.
    #[arg(long, default_value_t = 5.0)]
    warmup_minutes: f64,
    /// Soak rate as a fraction of the capacity.
    #[arg(long, default_value_t = 0.7)]
    load_fraction: f64,
    /// Capacity in users/s; measured when not given.
    #[arg(long)]
    capacity: Option<f64>,
    /// First rate of the capacity probe (users/s).
    #[arg(long, default_value_t = 2.0)]
    probe_start: f64,
    /// Rate multiplier between probe stages.
    #[arg(long, default_value_t = 1.5)]
    probe_factor: f64,
    /// Length of one probe stage.
    #[arg(long, default_value_t = 15.0)]
    probe_seconds: f64,
    /// A probe stage holds only while the whole journey's p99 stays under this.
    #[arg(long, default_value_t = 3000.0)]
    probe_p99_ms: f64,
    /// CPU of the server (every thread).
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
    /// CPU of the load generator.
    #[arg(long, default_value_t = 1)]
    client_cpu: usize,
    /// Output prefix (default `bench/results/<UTC time>-soak`).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// A `sdsim serve` on free loopback ports with its data in a temporary directory.
struct Server {
    child: Option<Child>,
    dir: PathBuf,
    http: u16,
    auth_grpc: u16,
    project_grpc: u16,
}

impl Server {
    fn start(args: &Args, tag: &str) -> anyhow::Result<Server> {
        let dir = std::env::temp_dir().join(format!("sdsim-soak-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let (http, auth_grpc, project_grpc) = (free_port()?, free_port()?, free_port()?);
        let sdsim = std::fs::canonicalize(&args.sdsim)
            .with_context(|| format!("{} (build it first, see --help)", args.sdsim))?;
        let mut cmd = pinned(&sdsim.to_string_lossy(), args.server_cpu);
        let local = |port: u16| format!("127.0.0.1:{port}");
        let any = "127.0.0.1:0".to_string();
        cmd.arg("serve")
            .current_dir(&dir)
            .env("SDSIM__GATEWAY__LISTEN", local(http))
            .env("SDSIM__AUTH__GRPC_LISTEN", local(auth_grpc))
            .env("SDSIM__PROJECT__GRPC_LISTEN", local(project_grpc))
            .env("SDSIM__AUTH__HTTP_LISTEN", &any)
            .env("SDSIM__PROJECT__HTTP_LISTEN", &any)
            .env("SDSIM__SIMULATION__GRPC_LISTEN", &any)
            .env("SDSIM__SIMULATION__HTTP_LISTEN", &any)
            .env("SDSIM__RUNTIME__SHARDS", "1")
            .env("SDSIM__RUNTIME__CPUS", format!("[{}]", args.server_cpu))
            .env("SDSIM__RATELIMIT__ENABLED", "false")
            .env("SDSIM__LOG__ACCESS", "false");
        let mut child = cmd.spawn().context("starting sdsim")?;
        for port in [http, auth_grpc, project_grpc] {
            wait_ready(port, &mut child)?;
        }
        Ok(Server {
            child: Some(child),
            dir,
            http,
            auth_grpc,
            project_grpc,
        })
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Resident memory (KiB) and open descriptors of the server process.
    fn sample(&self) -> anyhow::Result<(u64, usize)> {
        let proc = PathBuf::from(format!("/proc/{}", self.pid()));
        let status = std::fs::read_to_string(proc.join("status"))?;
        let rss = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("VmRSS in /proc/PID/status")?;
        let fds = std::fs::read_dir(proc.join("fd"))?.count();
        Ok((rss, fds))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop(child);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The journey against `server` at `rate` users/s for `seconds`, reporting every `interval`.
fn journey(
    args: &Args,
    server: &Server,
    rate: f64,
    seconds: f64,
    interval: f64,
) -> anyhow::Result<FlowLoad> {
    let text = std::fs::read_to_string(&args.scenario)
        .with_context(|| format!("reading {}", args.scenario.display()))?;
    let mut scenario = Scenario::parse(&text)?;
    let Some(flow) = scenario.flow.as_mut() else {
        bail!("{} is not a flow scenario", args.scenario.display());
    };
    for (name, value) in [
        ("http", format!("http://127.0.0.1:{}", server.http)),
        ("ws", format!("ws://127.0.0.1:{}/ws", server.http)),
        ("auth_grpc", format!("127.0.0.1:{}", server.auth_grpc)),
        ("project_grpc", format!("127.0.0.1:{}", server.project_grpc)),
    ] {
        let Some(slot) = flow.vars.get_mut(name) else {
            bail!("{} has no [flow.vars] {name}", args.scenario.display());
        };
        *slot = value;
    }
    scenario.phases = vec![PhaseSpec {
        duration: format!("{}ms", (seconds * 1e3).round()),
        rate,
        ramp_to: None,
    }];
    scenario.load.cpus = vec![args.client_cpu];
    scenario.load.interval = format!("{}ms", (interval * 1e3).round());
    let load = scenario.flow_load()?.context("a flow scenario")?;
    Ok(load)
}

/// p99 in ms of request type `t` in `tally`, `None` without samples.
fn p99_ms(tally: &FlowTally, t: usize) -> Option<f64> {
    let h = &tally.histograms[t];
    (!h.is_empty()).then(|| h.value_at_quantile(0.99) as f64 / 1e3)
}

/// Finds the capacity; returns it and one line per stage.
fn probe(args: &Args) -> anyhow::Result<(f64, Vec<String>)> {
    let server = Server::start(args, "probe")?;
    let mut lines = Vec::new();
    let mut rate = args.probe_start;
    let mut held = None;
    loop {
        let load = journey(args, &server, rate, args.probe_seconds, args.probe_seconds)?;
        let report = run_flow(&load)?;
        let users = report.tally.users;
        let p99 = p99_ms(&report.tally, load.flow.flow_type()).unwrap_or(f64::INFINITY);
        let holds = users.failed == 0
            && users.unfinished == 0
            && users.completed == users.started
            && users.late as f64 <= 0.01 * users.started as f64
            && p99 <= args.probe_p99_ms;
        let line = format!(
            "{rate:>7.2} users/s: started {} completed {} failed {} unfinished {} late {}, journey p99 {p99:.0} ms: {}",
            users.started,
            users.completed,
            users.failed,
            users.unfinished,
            users.late,
            if holds { "holds" } else { "does not hold" }
        );
        eprintln!("probe {line}");
        lines.push(line);
        if !holds {
            break;
        }
        held = Some(rate);
        rate *= args.probe_factor;
    }
    let capacity = held.with_context(|| {
        format!(
            "even {} users/s does not hold; lower --probe-start",
            args.probe_start
        )
    })?;
    Ok((capacity, lines))
}

/// One sample period.
struct Row {
    minute: f64,
    rss_kib: u64,
    fds: usize,
    started: u64,
    completed: u64,
    failed: u64,
    p99: Vec<Option<f64>>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.minutes <= 0.0 || args.sample_seconds <= 0.0 || args.load_fraction <= 0.0 {
        bail!("--minutes, --sample-seconds and --load-fraction must be positive");
    }
    let prefix = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("bench/results/{}-soak", utc_stamp())));
    let (capacity, stages) = match args.capacity {
        Some(c) => (c, vec![format!("given: {c} users/s (--capacity)")]),
        None => probe(&args)?,
    };
    let rate = capacity * args.load_fraction;
    eprintln!(
        "soak: {rate:.2} users/s for {} min, a sample every {} s",
        args.minutes, args.sample_seconds
    );

    let server = Server::start(&args, "soak")?;
    let load = journey(
        &args,
        &server,
        rate,
        args.minutes * 60.0,
        args.sample_seconds,
    )?;
    let types = load.flow.types.clone();
    let mut rows: Vec<Row> = Vec::new();
    let mut sample_error = None;
    let report = run_flow_with(&load, |index, _active, tally| {
        let (rss_kib, fds) = match server.sample() {
            Ok(s) => s,
            Err(e) => {
                sample_error.get_or_insert(e);
                (0, 0)
            }
        };
        let row = Row {
            minute: (index + 1) as f64 * args.sample_seconds / 60.0,
            rss_kib,
            fds,
            started: tally.users.started,
            completed: tally.users.completed,
            failed: tally.users.failed,
            p99: (0..types.len()).map(|t| p99_ms(tally, t)).collect(),
        };
        eprintln!(
            "{:>6.1} min  RSS {:>8.1} MiB  fds {:>5}  users +{} ={} x{}  journey p99 {}",
            row.minute,
            row.rss_kib as f64 / 1024.0,
            row.fds,
            row.started,
            row.completed,
            row.failed,
            row.p99
                .last()
                .copied()
                .flatten()
                .map_or("-".into(), |p| format!("{p:.0} ms"))
        );
        rows.push(row);
    })?;
    if let Some(e) = sample_error {
        bail!("sampling the server: {e:#}");
    }
    drop(server);

    let csv = to_csv(&rows, &types);
    let svg = to_svg(&rows, &types, &args);
    let verdict = rss_verdict(&rows, args.warmup_minutes, args.minutes);
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Soak: the journey at {:.0} % of capacity\n",
        args.load_fraction * 100.0
    );
    let _ = writeln!(md, "- machine: {}", machine_line());
    let _ = writeln!(
        md,
        "- server: `{}` (1 shard, SQLite, rate limiting off) on CPU {}; generator on CPU {}",
        args.sdsim, args.server_cpu, args.client_cpu
    );
    let _ = writeln!(md, "- capacity: {capacity:.2} users/s; soak rate {rate:.2} users/s for {} min, a sample every {} s", args.minutes, args.sample_seconds);
    for s in &stages {
        let _ = writeln!(md, "  - {s}");
    }
    let u = report.tally.users;
    let _ = writeln!(
        md,
        "- users: started {} completed {} failed {} unfinished {} late {}",
        u.started, u.completed, u.failed, u.unfinished, u.late
    );
    let _ = writeln!(md, "- {verdict}\n");
    let _ = writeln!(md, "```\n{}```\n", report.table());
    let _ = writeln!(md, "```\n{csv}```");
    write(&prefix, "csv", &csv)?;
    write(&prefix, "svg", &svg)?;
    write(&prefix, "md", &md)?;
    print!("{md}");
    Ok(())
}

fn write(prefix: &Path, ext: &str, text: &str) -> anyhow::Result<()> {
    let path = prefix.with_extension(ext);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn to_csv(rows: &[Row], types: &[String]) -> String {
    let mut out = String::from("minute,rss_kib,fds,users_started,users_completed,users_failed");
    for t in types {
        let _ = write!(out, ",p99_ms_{t}");
    }
    out.push('\n');
    for r in rows {
        let _ = write!(
            out,
            "{:.2},{},{},{},{},{}",
            r.minute, r.rss_kib, r.fds, r.started, r.completed, r.failed
        );
        for p in &r.p99 {
            match p {
                Some(p) => {
                    let _ = write!(out, ",{p:.3}");
                }
                None => out.push(','),
            }
        }
        out.push('\n');
    }
    out
}

/// RSS after the warm-up and before the drain (the periods after `minutes`, when no user
/// arrives any more): lowest, highest, spread, and whether it meets [`RSS_FLAT`].
fn rss_verdict(rows: &[Row], warmup_minutes: f64, minutes: f64) -> String {
    let after: Vec<u64> = rows
        .iter()
        .filter(|r| r.minute > warmup_minutes && r.minute <= minutes + 1e-9)
        .map(|r| r.rss_kib)
        .collect();
    let (Some(&lo), Some(&hi)) = (after.iter().min(), after.iter().max()) else {
        return format!("RSS: no sample after the {warmup_minutes}-minute warm-up");
    };
    let spread = (hi - lo) as f64 / lo.max(1) as f64;
    format!(
        "RSS after the {warmup_minutes}-minute warm-up ({} samples): {:.1} to {:.1} MiB, spread {:.1} %: {} (goal: within {:.0} %)",
        after.len(),
        lo as f64 / 1024.0,
        hi as f64 / 1024.0,
        spread * 100.0,
        if spread <= RSS_FLAT { "flat" } else { "NOT flat" },
        RSS_FLAT * 100.0
    )
}

/// A named line: (minute, value) points.
type Series<'a> = (&'a str, Vec<(f64, f64)>);

/// Three panels against minutes: RSS (MiB), open descriptors, p99 (ms) of the whole journey
/// and of each step.
fn to_svg(rows: &[Row], types: &[String], args: &Args) -> String {
    const W: f64 = 900.0;
    const PANEL: f64 = 220.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 170.0;
    const TOP: f64 = 40.0;
    const GAP: f64 = 50.0;
    let palette = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
        "#bcbd22", "#17becf", "#000000", "#aec7e8",
    ];
    let height = TOP + 3.0 * (PANEL + GAP);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{LEFT}\" y=\"22\" font-size=\"15\">sdsim soak: journey at {:.0} % of capacity, {} min (sample {} s)</text>\n",
        args.load_fraction * 100.0,
        args.minutes,
        args.sample_seconds
    );
    let x_max = rows.last().map_or(1.0, |r| r.minute).max(f64::EPSILON);
    let rss: Vec<(f64, f64)> = rows
        .iter()
        .map(|r| (r.minute, r.rss_kib as f64 / 1024.0))
        .collect();
    let fds: Vec<(f64, f64)> = rows.iter().map(|r| (r.minute, r.fds as f64)).collect();
    let p99: Vec<Series> = types
        .iter()
        .enumerate()
        .map(|(t, name)| {
            let points = rows
                .iter()
                .filter_map(|r| r.p99[t].map(|p| (r.minute, p)))
                .collect();
            (name.as_str(), points)
        })
        .collect();
    let panels: [(&str, Vec<Series>); 3] = [
        ("RSS (MiB)", vec![("rss", rss)]),
        ("open descriptors", vec![("fds", fds)]),
        ("p99 (ms)", p99),
    ];
    for (k, (title, series)) in panels.iter().enumerate() {
        let y0 = TOP + k as f64 * (PANEL + GAP);
        let y_max = series
            .iter()
            .flat_map(|(_, s)| s.iter().map(|p| p.1))
            .fold(0.0f64, f64::max)
            .max(1.0)
            * 1.1;
        let plot_w = W - LEFT - RIGHT;
        let _ = writeln!(
            svg,
            "<text x=\"{LEFT}\" y=\"{:.1}\" font-size=\"13\">{title}</text>\n<rect x=\"{LEFT}\" y=\"{:.1}\" width=\"{plot_w}\" height=\"{PANEL}\" fill=\"none\" stroke=\"#888\"/>",
            y0 + 12.0,
            y0 + 18.0
        );
        let top = y0 + 18.0;
        for i in 0..=4 {
            let v = y_max * i as f64 / 4.0;
            let y = top + PANEL - PANEL * i as f64 / 4.0;
            let _ = writeln!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{v:.0}</text><line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#eee\"/>",
                LEFT - 6.0,
                y + 4.0,
                LEFT + plot_w
            );
            let m = x_max * i as f64 / 4.0;
            let x = LEFT + plot_w * i as f64 / 4.0;
            let _ = writeln!(
                svg,
                "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{m:.1} min</text>",
                top + PANEL + 16.0
            );
        }
        for (j, (name, points)) in series.iter().enumerate() {
            let colour = palette[j % palette.len()];
            let path: Vec<String> = points
                .iter()
                .map(|(m, v)| {
                    format!(
                        "{:.1},{:.1}",
                        LEFT + plot_w * m / x_max,
                        top + PANEL - PANEL * v / y_max
                    )
                })
                .collect();
            let _ = writeln!(
                svg,
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{colour}\">{name}</text>",
                path.join(" "),
                LEFT + plot_w + 8.0,
                top + 12.0 + 14.0 * j as f64
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}
