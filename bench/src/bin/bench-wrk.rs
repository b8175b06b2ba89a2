//! Load generator check: `sdsim-loadtest`'s engine against wrk 4.1.0 (Debian's `wrk`), same
//! target, same CPU, same connections, in one run, as ratios. If both generators agree on the
//! throughput and the latency percentiles of the same server, the other benchmarks' figures are
//! figures of the server, not of the generator.
//!
//! The target is sdsim's `GET /health` (1 shard pinned to `--server-cpu`, access log and rate
//! limit off, as in `bench-http`), started afresh for every measurement. The generator runs on
//! `--client-cpu`: wrk (`-t1`) is pinned before exec, as `taskset -c 1` does; the engine runs
//! its one load thread there (`HttpLoad::cpus`). Loads, `--runs` times, generators alternating
//! (and which goes first alternating too); medians are reported:
//!
//! 1. closed loop over `--connections` (the most requests per second);
//! 2. closed loop over 1 connection (an unloaded round trip);
//! 3. open loop at a rate well below saturation, engine only: Debian's wrk has no `--rate`
//!    (that is wrk2), so wrk can only be compared in closed loop.
//!
//! wrk 4.1.0 does not print the latencies it measured: before printing, `main.c` calls
//! `stats_correct(latency, runtime / (requests / connections))`, which adds synthetic samples
//! `v - i, v - 2i, ...` for every sample `v ≥ 2i` (HdrHistogram's coordinated-omission
//! correction with the mean round trip `i` as the expected interval). Its mean can then exceed
//! connections / throughput, which no closed loop can measure. So the engine's closed-loop
//! histogram is reported twice: as measured, and corrected the same way (`wrk_correct`, with
//! wrk's interval); the latency ratios compare the corrected one with wrk.
//!
//! `cargo build --release -p sdsim-server -p sdsim-bench && target/release/bench-wrk --runs 3`

use anyhow::{bail, Context};
use clap::Parser;
use hdrhistogram::Histogram;
use mimalloc::MiMalloc;
use sdsim_bench::proc_sample::load_average;
use sdsim_bench::process::{free_port, pinned, stop, wait_ready};
use sdsim_bench::{machine_line, median};
use sdsim_loadtest::run::{build_request, run_http_with, HttpLoad};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

#[derive(Parser)]
struct Args {
    /// Runs per generator and load (alternating); medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Measured seconds per run (whole seconds: wrk's `-d` has no finer unit).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Warm-up seconds per run (wrk: a separate, discarded run on the same server).
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Keep-alive connections of the maximum-throughput and open-loop runs.
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// Open-loop rate (req/s); default: `--open-fraction` of the lower closed-loop median.
    #[arg(long)]
    open_rate: Option<f64>,
    /// Fraction of the closed-loop throughput the open-loop run offers, when no `--open-rate`.
    #[arg(long, default_value_t = 0.25)]
    open_fraction: f64,
    /// CPU for sdsim.
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
    /// CPU for the load generators.
    #[arg(long, default_value_t = 1)]
    client_cpu: usize,
    /// The sdsim binary.
    #[arg(long, default_value = "target/release/sdsim")]
    sdsim: String,
    /// The wrk binary (`apt-get install wrk`).
    #[arg(long, default_value = "wrk")]
    wrk: String,
    /// The Markdown report (default: bench/results/<UTC time>-wrk.md).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// What one run measured, whichever generator ran it (latencies in ms).
#[derive(Debug, Clone, Default, PartialEq)]
struct Sample {
    throughput: f64,
    mean: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    errors: u64,
    /// CPU the generator used over the run, in CPUs (1.0 = one CPU all the time).
    client_cpu: f64,
    /// CPU the server used over the same time, in CPUs.
    server_cpu: f64,
    /// The generator's CPU time per completed request, µs.
    client_us_per_request: f64,
}

impl Sample {
    /// Percentiles of a histogram of microseconds.
    fn of(histogram: &Histogram<u64>, throughput: f64, errors: u64) -> Sample {
        let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1e3;
        Sample {
            throughput,
            mean: histogram.mean() / 1e3,
            p50: ms(0.50),
            p90: ms(0.90),
            p99: ms(0.99),
            max: histogram.max() as f64 / 1e3,
            errors,
            client_cpu: 0.0,
            server_cpu: 0.0,
            client_us_per_request: 0.0,
        }
    }
}

/// CPU seconds (user + system) of a process, from `/proc/PID/stat`.
fn process_cpu_seconds(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the parenthesised command name: field 3 (state) first, so utime (14) and stime
    // (15) are at 11 and 12.
    let fields: Vec<&str> = text
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11).unwrap_or(0.0) + ticks(12).unwrap_or(0.0)) / hz
}

/// CPU seconds (user + system) from getrusage: this process's threads (`RUSAGE_SELF`) or its
/// waited-for children (`RUSAGE_CHILDREN`).
fn rusage_cpu_seconds(who: libc::c_int) -> f64 {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// CPU seconds used so far by a generator (measured with `who`) and by the server, at a time.
#[derive(Clone, Copy)]
struct CpuMark {
    at: Instant,
    client: f64,
    server: f64,
}

impl CpuMark {
    fn now(who: libc::c_int, server_pid: u32) -> CpuMark {
        CpuMark {
            at: Instant::now(),
            client: rusage_cpu_seconds(who),
            server: process_cpu_seconds(server_pid),
        }
    }

    /// Sets the sample's CPU figures from `self` to `later`, over which `requests` completed.
    fn until(self, later: CpuMark, requests: u64, sample: &mut Sample) {
        let wall = later.at.duration_since(self.at).as_secs_f64();
        let client = later.client - self.client;
        sample.client_cpu = client / wall;
        sample.server_cpu = (later.server - self.server) / wall;
        sample.client_us_per_request = client / requests.max(1) as f64 * 1e6;
    }
}

/// One engine run: as measured, and with wrk's correction applied (closed loop only).
struct EngineRun {
    measured: Sample,
    corrected: Option<Sample>,
}

/// How the generator drives the server.
#[derive(Clone, Copy)]
enum Load {
    Closed { connections: usize },
    Open { connections: usize, rate: f64 },
}

/// Parses the report of `wrk --latency`. Latencies come from the distribution block (p50, p90,
/// p99) and the `Latency` row of the thread stats (mean, max); errors add up the socket errors
/// and the non-2xx/3xx responses.
fn parse_wrk(text: &str) -> anyhow::Result<Sample> {
    let mut sample = Sample::default();
    let (mut p50, mut p90, mut p99, mut stats, mut rate) = (None, None, None, None, None);
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Latency", avg, _stdev, max, _within] => stats = Some((wrk_ms(avg)?, wrk_ms(max)?)),
            ["50%", v] => p50 = Some(wrk_ms(v)?),
            ["90%", v] => p90 = Some(wrk_ms(v)?),
            ["99%", v] => p99 = Some(wrk_ms(v)?),
            ["Requests/sec:", v] => rate = Some(v.parse::<f64>().context("Requests/sec")?),
            ["Socket", "errors:", rest @ ..] => {
                // connect 0, read 0, write 0, timeout 0
                for count in rest.iter().skip(1).step_by(2) {
                    sample.errors += count.trim_end_matches(',').parse::<u64>()?;
                }
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => sample.errors += n.parse::<u64>()?,
            _ => {}
        }
    }
    let missing = |what: &str| anyhow::anyhow!("no {what} in wrk's output:\n{text}");
    (sample.mean, sample.max) = stats.ok_or_else(|| missing("Latency row"))?;
    sample.p50 = p50.ok_or_else(|| missing("50% line (was --latency given?)"))?;
    sample.p90 = p90.ok_or_else(|| missing("90% line"))?;
    sample.p99 = p99.ok_or_else(|| missing("99% line"))?;
    sample.throughput = rate.ok_or_else(|| missing("Requests/sec"))?;
    Ok(sample)
}

/// A wrk time (`612.00us`, `1.06ms`, `2.00s`, `1.00m`, `1.00h`) in milliseconds.
fn wrk_ms(text: &str) -> anyhow::Result<f64> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("no unit in wrk time `{text}`"))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .with_context(|| format!("wrk time `{text}`"))?;
    let scale = match unit {
        "us" => 1e-3,
        "ms" => 1.0,
        "s" => 1e3,
        "m" => 60e3,
        "h" => 3600e3,
        _ => bail!("unknown unit in wrk time `{text}`"),
    };
    Ok(value * scale)
}

/// Starts sdsim pinned to `--server-cpu` on a fresh port, as `bench-http` does.
fn start_sdsim(args: &Args) -> anyhow::Result<(Child, u16)> {
    let port = free_port()?;
    let mut cmd = pinned(&args.sdsim, args.server_cpu);
    cmd.arg("serve");
    for set in [
        "runtime.shards=1".to_owned(),
        format!("runtime.cpus=[{}]", args.server_cpu),
        format!("gateway.listen=127.0.0.1:{port}"),
        "ratelimit.enabled=false".to_owned(),
        "log.access=false".to_owned(),
    ] {
        cmd.arg("--set").arg(set);
    }
    let mut child = cmd.spawn().context("starting sdsim")?;
    if let Err(e) = wait_ready(port, &mut child) {
        stop(child);
        return Err(e);
    }
    Ok((child, port))
}

/// One wrk run: `wrk -t1 -c<connections> -d<seconds>s --latency`, pinned to `--client-cpu`.
fn run_wrk(args: &Args, port: u16, connections: usize, seconds: u64) -> anyhow::Result<Sample> {
    let output = pinned(&args.wrk, args.client_cpu)
        .args([
            "-t1".to_owned(),
            format!("-c{connections}"),
            format!("-d{seconds}s"),
            "--latency".to_owned(),
            format!("http://127.0.0.1:{port}/health"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running {}", args.wrk))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed ({}): {}{}",
            output.status,
            text,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse_wrk(&text)
}

fn run_engine(args: &Args, port: u16, server: u32, load: Load) -> anyhow::Result<EngineRun> {
    let (connections, rate) = match load {
        Load::Closed { connections } => (connections, None),
        Load::Open { connections, rate } => (connections, Some(rate)),
    };
    // The engine's threads are this process's (the main thread waits meanwhile). CPU is
    // counted from the end of the first measured interval to the end of the last, so neither
    // the start-up nor the warm-up is in it.
    let mut marks: Vec<(CpuMark, u64)> = Vec::new();
    let report = run_http_with(
        &HttpLoad {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            request: build_request("GET", "127.0.0.1", "/health", &[], b""),
            connections,
            rate,
            duration: Duration::from_secs(args.duration),
            warmup: Duration::from_secs(args.warmup),
            cpus: vec![args.client_cpu],
            interval: Duration::from_secs(1),
            phases: Vec::new(),
            timeout: sdsim_loadtest::run::DEFAULT_TIMEOUT,
            protocol: Default::default(),
        },
        |_, _, counters| marks.push((CpuMark::now(libc::RUSAGE_SELF, server), counters.completed)),
    )?;
    let mut cpu = Sample::default();
    if let [(first, _), rest @ ..] = marks.as_slice() {
        if let Some((last, _)) = rest.last() {
            let requests = rest.iter().map(|(_, completed)| completed).sum();
            first.until(*last, requests, &mut cpu);
        }
    }
    let (throughput, errors) = (report.throughput(), report.errors());
    let of = |h: &Histogram<u64>| Sample {
        client_cpu: cpu.client_cpu,
        server_cpu: cpu.server_cpu,
        client_us_per_request: cpu.client_us_per_request,
        ..Sample::of(h, throughput, errors)
    };
    let measured = of(&report.histogram);
    // wrk's expected interval: runtime / (requests / connections), integer µs as in main.c.
    let per_connection = report.counters.completed / connections as u64;
    let corrected = match load {
        Load::Closed { .. } if per_connection > 0 => {
            let interval = report.duration.as_micros() as u64 / per_connection;
            Some(of(&wrk_correct(&report.histogram, interval)))
        }
        _ => None,
    };
    Ok(EngineRun {
        measured,
        corrected,
    })
}

/// wrk 4.1.0's `stats_correct` applied to a histogram of µs: for every recorded `v ≥ 2i`, the
/// same count again at `v - i`, `v - 2i`, ... while above `i`. (HdrHistogram's `clone_correct`
/// is the same but for one extra sample at exactly `i`.)
fn wrk_correct(histogram: &Histogram<u64>, interval: u64) -> Histogram<u64> {
    let mut out = histogram.clone();
    if interval == 0 {
        return out;
    }
    for v in histogram.iter_recorded() {
        let (value, count) = (v.value_iterated_to(), v.count_at_value());
        if value < 2 * interval {
            continue;
        }
        let mut m = value - interval;
        while m > interval {
            // Same bounds as the source: every value below `value` fits.
            let _ = out.record_n(m, count);
            m -= interval;
        }
    }
    out
}

/// Starts a fresh sdsim, runs `generate` against its port, stops it.
fn measure<T>(
    args: &Args,
    generate: impl FnOnce(u16, u32) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let (child, port) = start_sdsim(args)?;
    let result = generate(port, child.id());
    stop(child);
    result
}

/// wrk over `connections`, after a discarded warm-up run on the same server.
fn measure_wrk(args: &Args, connections: usize) -> anyhow::Result<Sample> {
    measure(args, |port, server| {
        if args.warmup > 0 {
            run_wrk(args, port, connections, args.warmup).context("wrk warm-up")?;
        }
        // wrk is a child: its CPU shows in RUSAGE_CHILDREN once `output` has waited for it.
        let before = CpuMark::now(libc::RUSAGE_CHILDREN, server);
        let mut sample = run_wrk(args, port, connections, args.duration)?;
        let after = CpuMark::now(libc::RUSAGE_CHILDREN, server);
        // wrk's Requests/sec is its request count over its own run time, `-d` seconds.
        let requests = (sample.throughput * args.duration as f64) as u64;
        before.until(after, requests, &mut sample);
        Ok(sample)
    })
}

/// The median of every field over the runs.
fn median_sample(samples: &[Sample]) -> Sample {
    let m = |f: fn(&Sample) -> f64| median(samples.iter().map(f).collect());
    Sample {
        throughput: m(|s| s.throughput),
        mean: m(|s| s.mean),
        p50: m(|s| s.p50),
        p90: m(|s| s.p90),
        p99: m(|s| s.p99),
        max: m(|s| s.max),
        errors: samples.iter().map(|s| s.errors).sum(),
        client_cpu: m(|s| s.client_cpu),
        server_cpu: m(|s| s.server_cpu),
        client_us_per_request: m(|s| s.client_us_per_request),
    }
}

/// A closed-loop comparison: each generator's runs at one connection count.
struct Pair {
    connections: usize,
    wrk: Vec<Sample>,
    engine: Vec<Sample>,
    /// The engine's runs with wrk's correction.
    corrected: Vec<Sample>,
}

impl Pair {
    fn new(connections: usize) -> Pair {
        Pair {
            connections,
            wrk: Vec::new(),
            engine: Vec::new(),
            corrected: Vec::new(),
        }
    }
}

/// One run's line, printed to stderr as it ends and kept for the report.
fn log_run(log: &mut Vec<String>, run: usize, what: &str, generator: &str, s: &Sample) {
    let line = format!(
        "run {run} {what:<17} {generator:<25} {:>7.0} req/s  mean {:.3}  p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3} ms  errors {}  cpu generator {:.0}% server {:.0}%",
        s.throughput, s.mean, s.p50, s.p90, s.p99, s.max, s.errors, s.client_cpu * 100.0, s.server_cpu * 100.0
    );
    eprintln!("{line}");
    log.push(line);
}

fn row(out: &mut String, load: &str, generator: &str, s: &Sample) -> std::fmt::Result {
    writeln!(
        out,
        "| {load} | {generator} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {} |",
        s.throughput, s.mean, s.p50, s.p90, s.p99, s.max, s.errors
    )
}

fn ratio_row(out: &mut String, load: &str, engine: &Sample, wrk: &Sample) -> std::fmt::Result {
    writeln!(
        out,
        "| {load} | **sdsim-loadtest / wrk** | **{:.2}×** | {:.2}× | {:.2}× | {:.2}× | {:.2}× | {:.2}× | |",
        engine.throughput / wrk.throughput,
        engine.mean / wrk.mean,
        engine.p50 / wrk.p50,
        engine.p90 / wrk.p90,
        engine.p99 / wrk.p99,
        engine.max / wrk.max
    )
}

/// wrk's version line, e.g. `wrk debian/4.1.0-3+b2 [epoll]`; wrk exits 1 after printing it.
fn wrk_version(wrk: &str) -> anyhow::Result<String> {
    let out = std::process::Command::new(wrk)
        .arg("--version")
        .output()
        .with_context(|| format!("{wrk} not found: apt-get install -y wrk"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap_or("wrk (unknown version)");
    Ok(first
        .split(" Copyright")
        .next()
        .unwrap_or(first)
        .trim()
        .to_owned())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !std::path::Path::new(&args.sdsim).exists() {
        bail!(
            "{} not found: cargo build --release -p sdsim-server -p sdsim-bench",
            args.sdsim
        );
    }
    if args.duration == 0 || args.runs == 0 {
        bail!("--duration and --runs must be at least 1");
    }
    let version = wrk_version(&args.wrk)?;
    let load_at_start = load_average();
    let mut pairs = [Pair::new(args.connections), Pair::new(1)];
    let mut log = Vec::new();
    for run in 1..=args.runs {
        for pair in &mut pairs {
            let what = format!("closed, {} conn", pair.connections);
            // Who goes first alternates too, so a drift of the machine favours neither.
            for wrk_turn in [run % 2 == 1, run % 2 == 0] {
                if wrk_turn {
                    let s = measure_wrk(&args, pair.connections)?;
                    log_run(&mut log, run, &what, "wrk", &s);
                    pair.wrk.push(s);
                } else {
                    let load = Load::Closed {
                        connections: pair.connections,
                    };
                    let r = measure(&args, |port, server| run_engine(&args, port, server, load))?;
                    log_run(&mut log, run, &what, "sdsim-loadtest", &r.measured);
                    pair.engine.push(r.measured);
                    if let Some(c) = r.corrected {
                        log_run(&mut log, run, &what, "sdsim-loadtest corrected", &c);
                        pair.corrected.push(c);
                    }
                }
            }
        }
    }
    let saturation = median_sample(&pairs[0].wrk)
        .throughput
        .min(median_sample(&pairs[0].engine).throughput);
    let open_rate = args
        .open_rate
        .unwrap_or_else(|| (saturation * args.open_fraction / 1000.0).round().max(1.0) * 1000.0);
    let mut open = Vec::new();
    for run in 1..=args.runs {
        let load = Load::Open {
            connections: args.connections,
            rate: open_rate,
        };
        let r = measure(&args, |port, server| run_engine(&args, port, server, load))?;
        let what = format!("open, {open_rate:.0}/s");
        log_run(&mut log, run, &what, "sdsim-loadtest", &r.measured);
        open.push(r.measured);
    }
    let mut report = render(&args, &version, load_at_start, &pairs, open_rate, &open)?;
    report.push_str("\nEvery run (this machine is shared: throughput at 50 connections swings with its neighbours):\n\n```\n");
    for line in &log {
        report.push_str(line);
        report.push('\n');
    }
    report.push_str("```\n");
    sdsim_bench::write_report(args.out.as_deref(), "wrk", &report)?;
    Ok(())
}

/// The Markdown report.
fn render(
    args: &Args,
    version: &str,
    load_at_start: f64,
    pairs: &[Pair],
    open_rate: f64,
    open: &[Sample],
) -> anyhow::Result<String> {
    let mut out = String::new();
    let saturation = median_sample(&pairs[0].wrk)
        .throughput
        .min(median_sample(&pairs[0].engine).throughput);
    writeln!(
        out,
        "# Load generators on sdsim GET /health: sdsim-loadtest vs {version}: {}",
        machine_line()
    )?;
    writeln!(
        out,
        "# sdsim: 1 shard pinned to CPU {}, access log and rate limit off, restarted for every run; generators pinned to CPU {}, one thread each; {} s measured after {} s warm-up; medians of {} runs, generators alternating; load average {load_at_start:.2} at start, {:.2} at end",
        args.server_cpu, args.client_cpu, args.duration, args.warmup, args.runs, load_average()
    )?;
    writeln!(
        out,
        "# wrk: `wrk -t1 -c<conn> -d{}s --latency`, closed loop only: Debian's wrk 4.1.0 has no --rate (that is wrk2). Its latencies are printed after its coordinated-omission correction (`stats_correct`: synthetic samples v-i, v-2i, ... for every v >= 2i, i = runtime / (requests / connections)), not as measured",
        args.duration
    )?;
    writeln!(
        out,
        "# sdsim-loadtest: the engine of bench-http. Closed loop as wrk, reported as measured and \"corrected\" with wrk's stats_correct (same interval); the latency ratios compare the corrected figures. Open loop wrk2-style (latency from each request's intended send time) at {open_rate:.0} req/s, {:.0}% of the closed-loop maximum; its timer has 1 ms resolution (monoio), so a request goes out up to ~1 ms after its intended time and that delay is counted",
        100.0 * open_rate / saturation
    )?;
    out.push('\n');
    out.push_str(
        "| load | generator | req/s | mean ms | p50 ms | p90 ms | p99 ms | max ms | errors |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for pair in pairs {
        let load = format!("closed loop, {} conn", pair.connections);
        let (wrk, engine) = (median_sample(&pair.wrk), median_sample(&pair.engine));
        let corrected = median_sample(&pair.corrected);
        row(&mut out, &load, "wrk (corrected, as printed)", &wrk)?;
        row(&mut out, &load, "sdsim-loadtest, measured", &engine)?;
        row(
            &mut out,
            &load,
            "sdsim-loadtest, corrected as wrk",
            &corrected,
        )?;
        ratio_row(&mut out, &load, &corrected, &wrk)?;
    }
    let load = format!("open loop {open_rate:.0}/s, {} conn", args.connections);
    row(
        &mut out,
        &load,
        "sdsim-loadtest, measured",
        &median_sample(open),
    )?;
    writeln!(
        out,
        "| {load} | wrk | (no --rate in wrk 4.1.0) | | | | | | |"
    )?;
    out.push_str("\nCPU over the same runs (medians; in % of one CPU: the generator's from getrusage, the server's from /proc/PID/stat; the engine's from the end of its first measured second to the end of its last, wrk's over its whole measured run including its start-up; µs per request = CPU time / requests completed in the same window). When the server is at ~100% it is the bottleneck and both generators see the same throughput; the CPU a generator spends per request is then what says which could drive a faster target:\n\n| load | generator | generator CPU | server CPU | generator CPU µs per request |\n|---|---|---|---|---|\n");
    for pair in pairs {
        let load = format!("closed loop, {} conn", pair.connections);
        let (wrk, engine) = (median_sample(&pair.wrk), median_sample(&pair.engine));
        for (name, s) in [("wrk", &wrk), ("sdsim-loadtest", &engine)] {
            writeln!(
                out,
                "| {load} | {name} | {:.0}% | {:.0}% | {:.2} |",
                s.client_cpu * 100.0,
                s.server_cpu * 100.0,
                s.client_us_per_request
            )?;
        }
        writeln!(
            out,
            "| {load} | **sdsim-loadtest / wrk** | {:.2}× | {:.2}× | **{:.2}×** |",
            engine.client_cpu / wrk.client_cpu,
            engine.server_cpu / wrk.server_cpu,
            engine.client_us_per_request / wrk.client_us_per_request
        )?;
    }
    out.push_str("\nLittle's law (closed loop: mean latency <= connections / throughput, equal when the generator adds no time between requests):\n\n");
    for pair in pairs {
        let (wrk, engine) = (median_sample(&pair.wrk), median_sample(&pair.engine));
        writeln!(
            out,
            "- {} conn: connections / throughput {:.3} ms (wrk), {:.3} ms (sdsim-loadtest); mean latency printed by wrk {:.3} ms, measured by sdsim-loadtest {:.3} ms",
            pair.connections,
            pair.connections as f64 / wrk.throughput * 1e3,
            pair.connections as f64 / engine.throughput * 1e3,
            wrk.mean,
            engine.mean
        )?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{parse_wrk, wrk_correct, wrk_ms};
    use hdrhistogram::Histogram;

    const CLEAN: &str = "Running 3s test @ http://127.0.0.1:18777/health
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.51ms    9.53ms  75.97ms   89.52%
    Req/Sec    25.21k    10.77k   47.92k    63.33%
  Latency Distribution
     50%    1.06ms
     75%    6.37ms
     90%   15.90ms
     99%   45.86ms
  76234 requests in 3.06s, 13.16MB read
Requests/sec:  24939.54
Transfer/sec:      4.30MB
";

    #[test]
    fn parses_a_clean_report() {
        let s = parse_wrk(CLEAN).unwrap();
        assert_eq!(s.throughput, 24939.54);
        assert_eq!((s.mean, s.max), (5.51, 75.97));
        assert_eq!((s.p50, s.p90, s.p99), (1.06, 15.90, 45.86));
        assert_eq!(s.errors, 0);
    }

    #[test]
    fn counts_socket_errors_and_bad_statuses() {
        let text = CLEAN.replace(
            "Requests/sec:",
            "  Socket errors: connect 1, read 2, write 0, timeout 4\n  Non-2xx or 3xx responses: 10\nRequests/sec:",
        );
        assert_eq!(parse_wrk(&text).unwrap().errors, 17);
    }

    #[test]
    fn every_wrk_time_unit() {
        for (text, ms) in [
            ("612.00us", 0.612),
            ("1.50ms", 1.5),
            ("2.00s", 2000.0),
            ("1.00m", 60_000.0),
        ] {
            assert!((wrk_ms(text).unwrap() - ms).abs() < 1e-9, "{text}");
        }
        assert!(wrk_ms("12").is_err());
        assert!(wrk_ms("3.0parsecs").is_err());
    }

    #[test]
    fn the_correction_adds_what_wrk_adds() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        h.record(100).unwrap();
        h.record_n(1000, 2).unwrap();
        h.record(399).unwrap();
        // Interval 200: 1000 → 800, 600, 400 (not 200: wrk stops above the interval), twice;
        // 100 and 399 are below 2 × 200.
        let c = wrk_correct(&h, 200);
        assert_eq!(c.len(), 4 + 6);
        for v in [400, 600, 800] {
            assert_eq!(c.count_at(v), 2, "{v}");
        }
        assert_eq!(c.count_at(200), 0);
        assert_eq!(wrk_correct(&h, 0).len(), 4);
    }

    #[test]
    fn a_report_without_latency_distribution_is_refused() {
        let without: String = CLEAN
            .lines()
            .filter(|l| !l.trim_start().starts_with("50%"))
            .map(|l| format!("{l}\n"))
            .collect();
        let err = parse_wrk(&without).unwrap_err().to_string();
        assert!(err.contains("--latency"), "{err}");
    }
}
