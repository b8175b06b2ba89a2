//! HTTP keep-alive benchmark: sdsim against the machine's limit (`limit-http`, a bare
//! responder) and an axum peer, same route, same CPU, same load, in one run, as ratios.
//!
//! Each server is pinned (all its threads) to `--server-cpu`; the load generator
//! (`sdsim-loadtest`'s engine, in this process) to `--client-cpu`. Servers alternate, `--runs`
//! times; medians are reported. Throughput alone cannot rank lean servers on a small machine
//! (the load generator saturates its CPU first), so every row also has the **server's CPU per
//! request**: the process's user + system time over the measured window divided by the
//! requests answered, and CPU `--server-cpu`'s busy time from `/proc/stat` (softirq included:
//! the loopback receive path) per request. The latter also counts anything else that ran on
//! that CPU; the "waited" column (schedstat) shows how long the server was runnable but held
//! back by other work.
//!
//! sdsim runs twice: its default stack (access log on, written to a file; request id, trace
//! context, CORS, rate limit with its owner lookup, metrics, compression check), and the same
//! with `log.access = false`.
//!
//! `cargo build --release -p sdsim-server -p sdsim-bench && target/release/bench-http --runs 3`

use anyhow::{bail, Context};
use clap::Parser;
use mimalloc::MiMalloc;
use sdsim_bench::proc_sample::{
    cpu_seconds, cpu_ticks, cpu_wait_seconds, load_average, ticks_per_second,
};
use sdsim_bench::process::{free_port, pinned, stop, wait_ready};
use sdsim_bench::sdsim_process::LISTENERS;
use sdsim_bench::{machine_line, median, write_report};
use sdsim_loadtest::report::Report;
use sdsim_loadtest::run::{build_request, run_http, HttpLoad};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

#[derive(Parser)]
struct Args {
    /// Runs per server (alternating); medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Warm-up seconds per run.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// CPU for the server under test.
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
    /// CPU for the load generator.
    #[arg(long, default_value_t = 1)]
    client_cpu: usize,
    /// The sdsim binary.
    #[arg(long, default_value = "target/release/sdsim")]
    sdsim: String,
    /// The axum peer binary.
    #[arg(long, default_value = "target/release/peer-axum")]
    axum: String,
    /// The bare responder (the limit).
    #[arg(long, default_value = "target/release/limit-http")]
    limit: String,
    /// Another sdsim binary (e.g. built from an earlier commit) measured in the same run, in
    /// both configurations, as rows `baseline` and `baseline-no-access-log`.
    #[arg(long)]
    baseline: Option<String>,
    /// Only these servers (by name: sdsim, sdsim-no-access-log, axum, limit, baseline,
    /// baseline-no-access-log); all by default.
    #[arg(long)]
    only: Vec<String>,
    /// Extra `--set KEY=VALUE` for both sdsim rows (repeatable).
    #[arg(long = "sdsim-set")]
    sdsim_set: Vec<String>,
    /// Write the report here instead of `bench/results/<UTC stamp>-http.md`.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// How each server is started.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// sdsim's default stack.
    Sdsim,
    /// sdsim with `log.access = false`.
    SdsimNoAccessLog,
    /// The axum peer.
    Axum,
    /// The bare responder.
    Limit,
    /// `--baseline`'s sdsim, default stack.
    Baseline,
    /// `--baseline`'s sdsim with `log.access = false`.
    BaselineNoAccessLog,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::Sdsim,
        Kind::SdsimNoAccessLog,
        Kind::Baseline,
        Kind::BaselineNoAccessLog,
        Kind::Axum,
        Kind::Limit,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Sdsim => "sdsim",
            Kind::SdsimNoAccessLog => "sdsim-no-access-log",
            Kind::Axum => "axum",
            Kind::Limit => "limit",
            Kind::Baseline => "baseline",
            Kind::BaselineNoAccessLog => "baseline-no-access-log",
        }
    }

    fn is_sdsim(self) -> bool {
        matches!(
            self,
            Kind::Sdsim | Kind::SdsimNoAccessLog | Kind::Baseline | Kind::BaselineNoAccessLog
        )
    }

    fn access_log(self) -> bool {
        matches!(self, Kind::Sdsim | Kind::Baseline)
    }

    fn binary(self, args: &Args) -> Option<&str> {
        match self {
            Kind::Sdsim | Kind::SdsimNoAccessLog => Some(&args.sdsim),
            Kind::Baseline | Kind::BaselineNoAccessLog => args.baseline.as_deref(),
            Kind::Axum => Some(&args.axum),
            Kind::Limit => Some(&args.limit),
        }
    }
}

/// One measured run of one server.
struct Sample {
    report: Report,
    /// Server process CPU (user + system) per answered request, µs.
    process_us: f64,
    /// Busy time of the server's CPU per answered request, µs.
    cpu_busy_us: f64,
    /// Time the server was runnable but not running during the window, ms.
    waited_ms: f64,
    /// Access-log lines found in the server's output after it stopped (sdsim only).
    access_lines: Option<u64>,
    /// The 1-minute load average at the end of the run.
    load: f64,
}

/// The command that starts `kind` on `port`, its standard output going to `stdout_file`.
fn command(
    kind: Kind,
    args: &Args,
    port: u16,
    dir: &Path,
    stdout_file: &Path,
) -> anyhow::Result<Command> {
    let cpu = args.server_cpu;
    let binary = kind.binary(args).context("no binary")?;
    let mut cmd = match kind {
        _ if kind.is_sdsim() => {
            let mut cmd = pinned(binary, cpu);
            cmd.arg("serve");
            let mut sets = vec![
                "runtime.shards=1".to_owned(),
                format!("runtime.cpus=[{cpu}]"),
                format!("gateway.listen=127.0.0.1:{port}"),
                format!("storage.url=sqlite://{}/sdsim.db", dir.display()),
                // One client IP at full speed must not be refused, and /health (exempt by
                // default) must still go through the limiter and its owner lookup.
                "ratelimit.rate_per_s=1000000000".to_owned(),
                "ratelimit.burst=1000000000".to_owned(),
                "ratelimit.exempt_prefixes=[]".to_owned(),
                r#"cors.allowed_origins=["https://app.example.com"]"#.to_owned(),
            ];
            for key in &LISTENERS[1..] {
                sets.push(format!("{key}=127.0.0.1:{}", free_port()?));
            }
            if !kind.access_log() {
                sets.push("log.access=false".to_owned());
            }
            sets.extend(args.sdsim_set.iter().cloned());
            for set in sets {
                cmd.arg("--set").arg(set);
            }
            cmd
        }
        Kind::Axum => {
            let mut cmd = pinned(binary, cpu);
            cmd.args(["--listen", &format!("127.0.0.1:{port}"), "--threads", "1"]);
            cmd
        }
        _ => {
            let mut cmd = pinned(binary, cpu);
            cmd.args(["--listen", &format!("127.0.0.1:{port}")]);
            cmd
        }
    };
    cmd.stdout(Stdio::from(std::fs::File::create(stdout_file)?));
    cmd.stderr(Stdio::from(std::fs::File::create(
        stdout_file.with_extension("err"),
    )?));
    Ok(cmd)
}

fn load(args: &Args, port: u16, duration: f64) -> HttpLoad {
    HttpLoad {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        request: build_request("GET", "127.0.0.1", "/health", &[], b""),
        connections: args.connections,
        rate: None,
        duration: Duration::from_secs_f64(duration),
        warmup: Duration::ZERO,
        cpus: vec![args.client_cpu],
        interval: Duration::from_secs(1),
        phases: Vec::new(),
        timeout: sdsim_loadtest::run::DEFAULT_TIMEOUT,
        protocol: Default::default(),
    }
}

fn count_lines(path: &Path, needle: &[u8]) -> anyhow::Result<u64> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .split(|&b| b == b'\n')
        .filter(|line| line.windows(needle.len()).any(|w| w == needle))
        .count() as u64)
}

fn measure(kind: Kind, args: &Args, run: usize) -> anyhow::Result<Sample> {
    let dir = std::env::temp_dir().join(format!(
        "bench-http-{}-{}-{run}",
        std::process::id(),
        kind.name()
    ));
    std::fs::create_dir_all(&dir)?;
    let port = free_port()?;
    let stdout_file = dir.join("stdout.log");
    let mut child = command(kind, args, port, &dir, &stdout_file)?
        .spawn()
        .with_context(|| format!("starting {}", kind.name()))?;
    let pid = child.id();
    let result = (|| {
        wait_ready(port, &mut child)?;
        run_http(&load(args, port, args.warmup))?;
        let cpu0 = cpu_seconds(pid).context("no process CPU time")?;
        let ticks0 = cpu_ticks(args.server_cpu).context("no /proc/stat")?;
        let wait0 = cpu_wait_seconds(pid).unwrap_or(0.0);
        let report = run_http(&load(args, port, args.duration))?;
        let cpu1 = cpu_seconds(pid).context("no process CPU time")?;
        let ticks1 = cpu_ticks(args.server_cpu).context("no /proc/stat")?;
        let wait1 = cpu_wait_seconds(pid).unwrap_or(0.0);
        let requests = report.throughput() * args.duration;
        let busy = (ticks1.0 - ticks0.0) as f64 / ticks_per_second();
        Ok::<_, anyhow::Error>(Sample {
            process_us: (cpu1 - cpu0) * 1e6 / requests.max(1.0),
            cpu_busy_us: busy * 1e6 / requests.max(1.0),
            waited_ms: (wait1 - wait0) * 1e3,
            access_lines: None,
            load: load_average(),
            report,
        })
    })();
    stop(child);
    let mut sample = result?;
    if kind.access_log() {
        sample.access_lines = Some(count_lines(&stdout_file, b"sdsim::access")?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(sample)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let kinds: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|k| k.binary(&args).is_some())
        .filter(|k| args.only.is_empty() || args.only.iter().any(|o| o == k.name()))
        .collect();
    for kind in &kinds {
        let bin = kind.binary(&args).unwrap_or_default();
        if !Path::new(bin).exists() {
            bail!("{bin} not found: cargo build --release -p sdsim-server -p sdsim-bench");
        }
    }
    let load_before = load_average();
    let mut samples: Vec<Vec<Sample>> = kinds.iter().map(|_| Vec::new()).collect();
    let mut log = String::new();
    for run in 1..=args.runs {
        for (i, kind) in kinds.iter().enumerate() {
            let s = measure(*kind, &args, run)?;
            let p = s.report.percentiles();
            let line = format!(
                "run {run} {:<20} {:>7.0} req/s  p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms  process {:.2} µs/req  cpu{} {:.2} µs/req  waited {:.0} ms  errors {}{}  load {:.2}",
                kind.name(),
                s.report.throughput(),
                p.p50,
                p.p99,
                p.p999,
                p.max,
                s.process_us,
                args.server_cpu,
                s.cpu_busy_us,
                s.waited_ms,
                s.report.errors(),
                s.access_lines
                    .map(|n| format!("  access lines {n} (warm-up included; measured requests {:.0})", s.report.throughput() * args.duration))
                    .unwrap_or_default(),
                s.load,
            );
            eprintln!("{line}");
            log.push_str(&line);
            log.push('\n');
            samples[i].push(s);
        }
    }
    let med = |i: usize, f: &dyn Fn(&Sample) -> f64| median(samples[i].iter().map(f).collect());
    let rps = |s: &Sample| s.report.throughput();
    let process = |s: &Sample| s.process_us;
    let busy = |s: &Sample| s.cpu_busy_us;
    let mut out = String::new();
    writeln!(out, "# HTTP keep-alive GET /health: {}", machine_line())?;
    writeln!(out)?;
    writeln!(
        out,
        "Server pinned to CPU {}, load generator (closed loop, {} connections, {} s measured after {} s warm-up) on CPU {}; servers alternate, medians of {} runs. Load average (1 min) {:.2} before, {:.2} after; the machine is shared with other work, which the \"waited\" column (schedstat: runnable but not running) shows.",
        args.server_cpu, args.connections, args.duration, args.warmup, args.client_cpu, args.runs, load_before, load_average()
    )?;
    writeln!(out)?;
    writeln!(out, "- **sdsim**: 1 shard, default stack: request id, trace context, CORS (an allowed origin set), rate limit (owner lookup on every request: `ratelimit.rate_per_s` and `burst` = 1e9, `exempt_prefixes = []`), metrics, compression check, access log on (text, to a file){}", args.sdsim_set.iter().map(|s| format!(", `{s}`")).collect::<String>())?;
    writeln!(
        out,
        "- **sdsim-no-access-log**: the same with `log.access = false`"
    )?;
    writeln!(out, "- **axum** 0.8: tokio multi-thread runtime with 1 worker, default hyper settings, no middleware")?;
    writeln!(
        out,
        "- **limit**: `limit-http`, a bare monoio + httparse responder with one fixed response"
    )?;
    writeln!(out, "- *process µs/req*: the server's user + system CPU over the window / requests; *cpu{} µs/req*: CPU {}'s busy time (`/proc/stat`, softirq included, other processes too) / requests", args.server_cpu, args.server_cpu)?;
    writeln!(out)?;
    writeln!(out, "| server | req/s | p50 ms | p99 ms | p99.9 ms | max ms | process µs/req | cpu{} µs/req | waited ms | errors |", args.server_cpu)?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|---|")?;
    for (i, kind) in kinds.iter().enumerate() {
        writeln!(
            out,
            "| {} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {:.2} | {:.2} | {:.0} | {} |",
            kind.name(),
            med(i, &rps),
            med(i, &|s| s.report.percentiles().p50),
            med(i, &|s| s.report.percentiles().p99),
            med(i, &|s| s.report.percentiles().p999),
            med(i, &|s| s.report.percentiles().max),
            med(i, &process),
            med(i, &busy),
            med(i, &|s| s.waited_ms),
            samples[i].iter().map(|s| s.report.errors()).sum::<u64>()
        )?;
    }
    let index = |k: Kind| kinds.iter().position(|&x| x == k);
    for sdsim in [
        Kind::Sdsim,
        Kind::SdsimNoAccessLog,
        Kind::Baseline,
        Kind::BaselineNoAccessLog,
    ] {
        for base in [Kind::Limit, Kind::Axum] {
            let (Some(a), Some(b)) = (index(sdsim), index(base)) else {
                continue;
            };
            writeln!(
                out,
                "| **{} / {}** | {:.2}× | {:.2}× | {:.2}× | | | **{:.2}×** | {:.2}× | | |",
                sdsim.name(),
                base.name(),
                med(a, &rps) / med(b, &rps),
                med(a, &|s| s.report.percentiles().p50) / med(b, &|s| s.report.percentiles().p50),
                med(a, &|s| s.report.percentiles().p99) / med(b, &|s| s.report.percentiles().p99),
                med(a, &process) / med(b, &process),
                med(a, &busy) / med(b, &busy),
            )?;
        }
    }
    writeln!(out)?;
    writeln!(out, "Every run, in the order run:")?;
    writeln!(out)?;
    writeln!(out, "```\n{log}```")?;
    write_report(args.out.as_deref(), "http", &out)?;
    Ok(())
}
