//! Adaptive load shedding, measured (issue 16, item 8): `GET /api/projects/{id}` with a bearer
//! token on a one-shard sdsim pinned to `--server-cpu`, the load from `--client-cpu`.
//!
//! 1. Capacity C: closed loop over `--capacity-connections`, `--capacity-runs` runs, shedding
//!    off; C = the median of the admitted (2xx) answers per second.
//! 2. Open loop at each of `--multipliers` × C over `--connections` (wrk2 schedule, latency
//!    from each request's intended send time), with shedding off and on, alternating which goes
//!    first, a fresh server process for every run, `--runs` times; medians are reported.
//!    Per run: goodput (2xx answers per second that arrived in the window), latency of the
//!    admitted requests, 503s seen by the client and `sdsim_shed_total` counted by the server,
//!    other errors, late sends, the server's CPU per admitted request (`/proc/PID/stat`), the
//!    1-minute load average at the start and end, and the answers per 100 ms.
//! 3. The floor ([`floor`]): in the same rounds, `bare-answer` — a server that does nothing but
//!    answer — under the same load, answering 503 and then 200: the least CPU any server pays
//!    per refusal and per answer here, and from it the best goodput the goal allows.
//!
//! The goal stated in the issue: at 4× capacity, goodput ≥ 90 % of the 1× maximum and admitted
//! p99 under 50 ms. The report says whether this run met it.
//!
//! `cargo build --release -p sdsim-server -p sdsim-bench && target/release/bench-shedding`

mod floor;
mod series;

use anyhow::{bail, ensure, Context};
use clap::Parser;
use floor::{BareProcess, Floor, FloorPoint, SdsimCosts};
use mimalloc::MiMalloc;
use sdsim_bench::proc_sample::load_average;
use sdsim_bench::sdsim_process::{
    create_project_from_template, get_json, register_and_login, SdsimProcess,
};
use sdsim_bench::split_load::{self, percentiles_ms, SplitLoad, SplitReport};
use sdsim_bench::{machine_line, median};
use sdsim_loadtest::run::build_request;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

/// The server's count of refusals (HTTP).
const SHED_SERIES: &str = "sdsim_shed_total{protocol=\"http\"}";

#[derive(Parser)]
struct Args {
    /// Runs of every open-loop point (medians are reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Open-loop rates as multiples of the measured capacity.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    multipliers: Vec<f64>,
    /// Open loop: keep-alive connections (one request in flight on each).
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Measured seconds of every run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Warm-up seconds before every run.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Settings to measure at every point: `off`, `on` (shedding.enabled).
    #[arg(long, value_delimiter = ',', default_value = "off,on")]
    shedding: Vec<String>,
    /// Capacity: closed-loop connections.
    #[arg(long, default_value_t = 64)]
    capacity_connections: usize,
    /// Capacity: closed-loop runs (on one server, back to back).
    #[arg(long, default_value_t = 3)]
    capacity_runs: usize,
    /// Skip the capacity measurement and use this many requests per second as C.
    #[arg(long)]
    capacity: Option<f64>,
    /// Seconds an exchange may take before it counts as a timeout.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// The template the measured project is made from.
    #[arg(long, default_value = "three-tier")]
    template: String,
    /// CPU of the server (every thread).
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
    /// CPU of the load generator.
    #[arg(long, default_value_t = 1)]
    client_cpu: usize,
    /// The sdsim binary.
    #[arg(long, default_value = "target/release/sdsim")]
    sdsim: String,
    /// The bare answering server (default: `bare-answer` beside this program).
    #[arg(long)]
    bare: Option<String>,
    /// Skip the floor (the bare server's runs).
    #[arg(long)]
    no_floor: bool,
    /// Extra `--set KEY=VALUE` for every server (e.g. `shedding.target=10ms`).
    #[arg(long = "sdsim-set")]
    sdsim_set: Vec<String>,
    /// The Markdown report (default: bench/results/<UTC time>-shedding.md).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// What every run reads: one project, with its owner's token.
struct Target {
    project: String,
    request: bytes::Bytes,
    design_bytes: usize,
    /// Length of the answer's JSON body.
    body_bytes: usize,
}

/// A server under measurement: sdsim or the bare one.
trait Watched {
    /// Where it listens.
    fn addr(&self) -> SocketAddr;
    /// Its CPU time so far, every thread.
    fn cpu_time(&self) -> anyhow::Result<Duration>;
    /// Time its threads waited for a CPU so far.
    fn cpu_wait(&self) -> anyhow::Result<Duration>;
    /// Requests it counted as shed so far.
    fn shed_count(&self) -> anyhow::Result<u64>;
    /// An error if it has exited.
    fn check_alive(&mut self) -> anyhow::Result<()>;
}

impl Watched for SdsimProcess {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn cpu_time(&self) -> anyhow::Result<Duration> {
        SdsimProcess::cpu_time(self)
    }

    fn cpu_wait(&self) -> anyhow::Result<Duration> {
        SdsimProcess::cpu_wait(self)
    }

    fn shed_count(&self) -> anyhow::Result<u64> {
        self.counter(SHED_SERIES)
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        SdsimProcess::check_alive(self)
    }
}

/// One measured run.
struct Sample {
    report: SplitReport,
    /// Server CPU time during the window.
    server_cpu: Duration,
    /// Time the server's threads waited for a CPU during the window.
    server_cpu_wait: Duration,
    /// `sdsim_shed_total` growth during the window (scraped at its edges).
    shed_counted: u64,
    load_start: f64,
    load_end: f64,
}

impl Sample {
    fn cpu_per_admitted_us(&self) -> f64 {
        self.server_cpu.as_secs_f64() * 1e6 / self.report.admitted_in_window() as f64
    }

    fn server_cpu_share(&self) -> f64 {
        self.server_cpu.as_secs_f64() / self.report.duration.as_secs_f64()
    }

    fn server_wait_share(&self) -> f64 {
        self.server_cpu_wait.as_secs_f64() / self.report.duration.as_secs_f64()
    }

    fn generator_wait_share(&self) -> f64 {
        self.report.generator_cpu_wait.as_secs_f64() / self.report.duration.as_secs_f64()
    }

    fn sent_per_s(&self) -> f64 {
        self.report.sent_in_window as f64 / self.report.duration.as_secs_f64()
    }

    fn line(&self, label: &str) -> String {
        let [p50, p99, p999, max] = self.report.admitted_ms();
        let exchange = percentiles_ms(&self.report.admitted_exchange);
        let shed = self.report.shed_ms();
        format!(
            "{label:<28} sent {:>7.0}/s goodput {:>7.0}/s admitted {p50:.2} / {p99:.2} / {p999:.2} / {max:.2} ms (exchange {:.2} / {:.2})  503 {} (p99 {:.2} ms) shed_total {}  other {}  late {}  server CPU {:.0}% (waited {:.0}%) {:.1} µs/ok  gen CPU {:.0}% (waited {:.0}%)  load {:.1}→{:.1}",
            self.sent_per_s(),
            self.report.goodput(),
            exchange[0],
            exchange[1],
            self.report.shed_in_window(),
            shed[1],
            self.shed_counted,
            other_text(&self.report),
            self.report.late,
            self.server_cpu_share() * 100.0,
            self.server_wait_share() * 100.0,
            self.cpu_per_admitted_us(),
            self.report.generator_cpu.as_secs_f64() / self.report.duration.as_secs_f64() * 100.0,
            self.generator_wait_share() * 100.0,
            self.load_start,
            self.load_end,
        )
    }
}

fn other_text(r: &SplitReport) -> String {
    if r.other.is_empty() {
        return "0".into();
    }
    r.other
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn sets(args: &Args, dir: &Path, shedding: bool) -> Vec<String> {
    let mut sets: Vec<String> = vec![
        "runtime.shards=1".into(),
        format!("runtime.cpus=[{}]", args.server_cpu),
        format!("storage.url=sqlite://{}/sdsim.db", dir.display()),
        "ratelimit.enabled=false".into(),
        "log.access=false".into(),
        "log.level=warn".into(),
        // The token is made once and used by every run.
        "auth.access_ttl=1h".into(),
        format!("shedding.enabled={shedding}"),
    ];
    sets.extend(args.sdsim_set.iter().cloned());
    sets
}

fn start(args: &Args, dir: &Path, shedding: bool) -> anyhow::Result<SdsimProcess> {
    let name = if shedding {
        "shedding-on"
    } else {
        "shedding-off"
    };
    SdsimProcess::start(
        &args.sdsim,
        args.server_cpu,
        &sets(args, dir, shedding),
        dir,
        name,
    )
}

/// sdsim that refuses (nearly) everything: a 1 µs target is always exceeded, so the admission
/// limit falls to its floor (one per `shedding.interval`) within the warm-up. Its CPU per
/// answer is what a refusal costs sdsim, measured rather than estimated.
fn start_refusing(args: &Args, dir: &Path) -> anyhow::Result<SdsimProcess> {
    let mut sets = sets(args, dir, true);
    sets.push("shedding.target=1us".into());
    SdsimProcess::start(&args.sdsim, args.server_cpu, &sets, dir, "refusing")
}

/// Registers a user, creates the project and checks that the measured request answers 200
/// with that project.
fn set_up(args: &Args, server: &SdsimProcess) -> anyhow::Result<Target> {
    let token = register_and_login(server.addr, "shedding@example.com")?;
    let project = create_project_from_template(server.addr, &token, &args.template)?;
    let path = format!("/api/projects/{project}");
    let (status, body) = get_json(&format!("http://{}{path}", server.addr), &token)?;
    ensure!(status == 200, "GET {path} answered {status}: {body}");
    ensure!(body["id"] == project.as_str(), "GET {path} answered {body}");
    Ok(Target {
        request: build_request(
            "GET",
            "127.0.0.1",
            &path,
            &[format!("Authorization: Bearer {token}")],
            b"",
        ),
        design_bytes: body["design"].to_string().len(),
        body_bytes: body.to_string().len(),
        project,
    })
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// One run against `server`: the load on the generator CPU, the server watched at the
/// window's edges from this thread.
fn sample(
    args: &Args,
    server: &mut impl Watched,
    target: &Target,
    rate: Option<f64>,
    connections: usize,
) -> anyhow::Result<Sample> {
    let load = SplitLoad {
        addr: server.addr(),
        request: target.request.clone(),
        connections,
        rate,
        start: Instant::now() + Duration::from_millis(300),
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.duration),
        cpu: args.client_cpu,
        timeout: Duration::from_secs_f64(args.timeout),
        bucket: Duration::from_millis(100),
    };
    let generator = split_load::spawn(&load)?;
    sleep_until(load.measure_from());
    // CPU first: the scrape may wait behind the queue, the CPU window must not.
    let (cpu_from, wait_from) = (server.cpu_time()?, server.cpu_wait()?);
    let load_start = load_average();
    let shed_from = server.shed_count()?;
    sleep_until(load.end());
    let (cpu_to, wait_to) = (server.cpu_time()?, server.cpu_wait()?);
    let shed_to = server.shed_count()?;
    let load_end = load_average();
    let report = generator
        .join()
        .map_err(|_| anyhow::anyhow!("the load thread panicked"))??;
    server.check_alive()?;
    Ok(Sample {
        report,
        server_cpu: cpu_to.saturating_sub(cpu_from),
        server_cpu_wait: wait_to.saturating_sub(wait_from),
        shed_counted: shed_to.saturating_sub(shed_from),
        load_start,
        load_end,
    })
}

/// One open-loop point of one round: both settings, each on a fresh server.
struct Point {
    multiplier: f64,
    shedding: bool,
    samples: Vec<Sample>,
}

impl Point {
    fn med(&self, f: impl Fn(&Sample) -> f64) -> f64 {
        median(self.samples.iter().map(f).collect())
    }

    fn med_pct(&self, i: usize) -> f64 {
        self.med(|s| s.report.admitted_ms()[i])
    }

    fn sum(&self, f: impl Fn(&Sample) -> u64) -> u64 {
        self.samples.iter().map(f).sum()
    }
}

fn setting(shedding: bool) -> &'static str {
    if shedding {
        "on"
    } else {
        "off"
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !Path::new(&args.sdsim).exists() {
        bail!(
            "{} not found: cargo build --release -p sdsim-server -p sdsim-bench",
            args.sdsim
        );
    }
    ensure!(args.runs >= 1, "--runs: must be at least 1");
    ensure!(
        !args.multipliers.is_empty(),
        "--multipliers: give at least one"
    );
    for s in &args.shedding {
        ensure!(
            s == "off" || s == "on",
            "--shedding: `{s}` is neither `off` nor `on`"
        );
    }
    let dir = std::env::temp_dir().join(format!("sdsim-bench-shedding-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let started = Instant::now();
    let load_at_start = load_average();
    let result = bench(&args, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let body = result?;
    let command: Vec<String> = std::env::args().collect();
    let commit = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let mut report = format!("# Load shedding: {}\n\n", machine_line());
    writeln!(
        report,
        "- command: `{}` (sdsim {commit})",
        command.join(" ")
    )?;
    writeln!(
        report,
        "- server: `sdsim serve` pinned to CPU {} (every thread), `--set` {} (`shedding.enabled=true` for \"on\"), every listener on a free 127.0.0.1 port, the SQLite database in a temporary directory; a fresh process for every run",
        args.server_cpu,
        sets(&args, Path::new("TMP"), false)
            .iter()
            .filter(|s| !s.starts_with("shedding.enabled"))
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(" ")
    )?;
    writeln!(
        report,
        "- load generator: one thread pinned to CPU {} (the `sdsim-loadtest` client, epoll); latency from each request's intended send time; the timer has 1 ms resolution, so a request can leave up to ~1 ms late and that delay is counted",
        args.client_cpu
    )?;
    writeln!(
        report,
        "- load average (1 min): {load_at_start:.2} at the start, {:.2} at the end (the machine is shared; other work on it skews every figure); wall time {:.0} s",
        load_average(),
        started.elapsed().as_secs_f64()
    )?;
    report.push_str(&body);
    sdsim_bench::write_report(args.out.as_deref(), "shedding", &report)?;
    Ok(())
}

fn bench(args: &Args, dir: &Path) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut lines = String::new();
    // Set up on a first server; every later server opens the same database, so the token
    // (signed with the stored key) and the project stay valid.
    let mut server = start(args, dir, false)?;
    let target = set_up(args, &server)?;
    writeln!(
        out,
        "- target: `GET /api/projects/{}` (a project made from the `{}` template, design {} bytes of JSON) with its owner's bearer token (the same token and project on every request)",
        target.project, args.template, target.design_bytes
    )?;
    let capacity = match args.capacity {
        Some(c) => {
            writeln!(
                out,
                "\n## Capacity\n\nGiven: C = {c:.0} req/s (`--capacity`)."
            )?;
            c
        }
        None => {
            let mut samples = Vec::new();
            for run in 1..=args.capacity_runs.max(1) {
                let s = sample(args, &mut server, &target, None, args.capacity_connections)?;
                let line = s.line(&format!("capacity run {run}"));
                eprintln!("{line}");
                writeln!(lines, "{line}")?;
                samples.push(s);
            }
            let c = median(samples.iter().map(|s| s.report.goodput()).collect());
            write_capacity(&mut out, args, &samples, c)?;
            c
        }
    };
    drop(server);
    ensure!(
        capacity > 0.0,
        "the capacity came out as 0 req/s: see the runs above"
    );
    let bare = match &args.bare {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .with_file_name("bare-answer")
            .display()
            .to_string(),
    };
    ensure!(
        args.no_floor || Path::new(&bare).exists(),
        "{bare} not found: cargo build --release -p sdsim-bench (or --no-floor)"
    );
    let mut floor_points: Vec<FloorPoint> = Vec::new();
    let mut points: Vec<Point> = Vec::new();
    for &m in &args.multipliers {
        for shedding in [false, true] {
            if !args.shedding.iter().any(|s| s == setting(shedding)) {
                continue;
            }
            points.push(Point {
                multiplier: m,
                shedding,
                samples: Vec::new(),
            });
        }
    }
    for run in 0..args.runs {
        for (k, &m) in args.multipliers.iter().enumerate() {
            // Alternate which setting goes first, so a machine that gets busier or quieter
            // over time does not favour one.
            let order = if (run + k) % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            for shedding in order {
                if !args.shedding.iter().any(|s| s == setting(shedding)) {
                    continue;
                }
                let rate = capacity * m;
                let mut server = start(args, dir, shedding)?;
                let s = sample(args, &mut server, &target, Some(rate), args.connections)?;
                drop(server);
                let line = s.line(&format!(
                    "run {} {m}× shedding {}",
                    run + 1,
                    setting(shedding)
                ));
                eprintln!("{line}");
                writeln!(lines, "{line}")?;
                points
                    .iter_mut()
                    .find(|p| p.multiplier == m && p.shedding == shedding)
                    .context("point")?
                    .samples
                    .push(s);
            }
            if args.no_floor {
                continue;
            }
            let mut order = Floor::ALL;
            order.rotate_left((run + k) % Floor::ALL.len());
            for floor in order {
                let rate = capacity * m;
                let s = match floor {
                    Floor::Bare(status) => {
                        let mut server =
                            BareProcess::start(&bare, args.server_cpu, status, target.body_bytes)?;
                        sample(args, &mut server, &target, Some(rate), args.connections)?
                    }
                    Floor::SdsimRefusing => {
                        let mut server = start_refusing(args, dir)?;
                        sample(args, &mut server, &target, Some(rate), args.connections)?
                    }
                };
                let line = s.line(&format!("run {} {m}× {}", run + 1, floor.label()));
                eprintln!("{line}");
                writeln!(lines, "{line}")?;
                let at = floor_points
                    .iter()
                    .position(|p| p.multiplier == m && p.floor == floor);
                match at {
                    Some(i) => floor_points[i].samples.push(s),
                    None => floor_points.push(FloorPoint {
                        multiplier: m,
                        floor,
                        samples: vec![s],
                    }),
                }
            }
        }
    }
    write_open_loop(&mut out, args, capacity, &points)?;
    let costs: Vec<SdsimCosts> = args
        .multipliers
        .iter()
        .filter_map(|&m| {
            let off = find(&points, m, false)?;
            let per_ok = off.med(Sample::cpu_per_admitted_us);
            Some(SdsimCosts {
                multiplier: m,
                per_ok,
                per_refusal: find(&points, m, true).and_then(|on| refusal_cost(on, per_ok)),
            })
        })
        .collect();
    floor::write_floor(
        &mut out,
        capacity,
        one_x(capacity, &points),
        &floor_points,
        &costs,
    )?;
    write!(out, "\n## Every run\n\n```\n{lines}```\n")?;
    Ok(out)
}

fn write_capacity(
    out: &mut String,
    args: &Args,
    samples: &[Sample],
    capacity: f64,
) -> anyhow::Result<()> {
    let goodputs: Vec<String> = samples
        .iter()
        .map(|s| format!("{:.0}", s.report.goodput()))
        .collect();
    let pct = |i: usize| median(samples.iter().map(|s| s.report.admitted_ms()[i]).collect());
    let cpu = median(samples.iter().map(Sample::cpu_per_admitted_us).collect());
    let share = median(samples.iter().map(Sample::server_cpu_share).collect());
    let errors: u64 = samples
        .iter()
        .map(|s| s.report.other_total() + s.report.shed.len())
        .sum();
    writeln!(
        out,
        "\n## Capacity\n\nClosed loop, {} connections, {} s after {} s warm-up, shedding off, {} runs on one server: **C = {capacity:.0} req/s** (runs: {}); admitted p50 / p99 {:.2} / {:.2} ms; server CPU {:.0}% of a core, {cpu:.1} µs per request; errors {errors}.",
        args.capacity_connections,
        args.duration,
        args.warmup,
        samples.len(),
        goodputs.join(", "),
        pct(0),
        pct(1),
        share * 100.0,
    )?;
    Ok(())
}

fn write_open_loop(
    out: &mut String,
    args: &Args,
    capacity: f64,
    points: &[Point],
) -> anyhow::Result<()> {
    writeln!(
        out,
        "\n## Open loop at {} × C\n\n{} connections on a fixed schedule (wrk2's), one request in flight on each; {} s measured after {} s warm-up; shedding off and on alternating (which goes first alternates too), a fresh server process for every run; medians of {} runs, counts are totals over the runs. **goodput**: 2xx answers per second that arrived in the window; **admitted**: latency of the 2xx answers, from the intended send time (a connection stuck behind a slow answer keeps its schedule and is charged for it; it sends what it owes after the window, so every request intended in the window is measured); **exchange**: the admitted requests' time from the moment they were sent (the server's share of the latency, without the wait for a free connection); **503**: refusals that arrived in the window; **shed_total**: growth of `sdsim_shed_total` scraped at the window's edges (the same window, seen by the server); **sent**: requests sent during the window (what the server was actually offered: a connection stuck behind a slow answer sends less than its schedule); **late**: requests sent more than one schedule step after their intended time; **server CPU**: its CPU time in the window (`/proc/PID/stat`, every thread) as a share of one core, and **waited**: the time its threads were runnable but another process had the CPU (`schedstat`) — the same for the generator's thread; **µs/ok**: server CPU time per 2xx answer in the window.\n",
        args.multipliers
            .iter()
            .map(|m| format!("{m}"))
            .collect::<Vec<_>>()
            .join(", "),
        args.connections,
        args.duration,
        args.warmup,
        args.runs,
    )?;
    writeln!(out, "| load | shedding | offered req/s | sent req/s | goodput req/s | goodput / C | admitted p50 / p99 / p99.9 / max ms | exchange p50 / p99 ms | 503 | shed_total | other errors | late | server CPU / waited | µs/ok | generator CPU / waited | load avg start → end |")?;
    writeln!(
        out,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )?;
    for p in points {
        let other: u64 = p.sum(|s| s.report.other_total());
        writeln!(
            out,
            "| {}× | {} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} / {:.2} / {:.2} / {:.2} | {:.2} / {:.2} | {} | {} | {} | {} | {:.0}% / {:.0}% | {:.1} | {:.0}% / {:.0}% | {:.1} → {:.1} |",
            p.multiplier,
            setting(p.shedding),
            capacity * p.multiplier,
            p.med(Sample::sent_per_s),
            p.med(|s| s.report.goodput()),
            p.med(|s| s.report.goodput()) / capacity,
            p.med_pct(0),
            p.med_pct(1),
            p.med_pct(2),
            p.med_pct(3),
            p.med(|s| percentiles_ms(&s.report.admitted_exchange)[0]),
            p.med(|s| percentiles_ms(&s.report.admitted_exchange)[1]),
            p.sum(|s| s.report.shed_in_window()),
            p.sum(|s| s.shed_counted),
            other,
            p.sum(|s| s.report.late),
            p.med(Sample::server_cpu_share) * 100.0,
            p.med(Sample::server_wait_share) * 100.0,
            p.med(Sample::cpu_per_admitted_us),
            p.med(|s| s.report.generator_cpu.as_secs_f64() / s.report.duration.as_secs_f64())
                * 100.0,
            p.med(Sample::generator_wait_share) * 100.0,
            p.med(|s| s.load_start),
            p.med(|s| s.load_end),
        )?;
    }
    write_goal(out, capacity, points)?;
    write_refusal_cost(out, points)?;
    series::write_series(out, points)?;
    Ok(())
}

fn find(points: &[Point], multiplier: f64, shedding: bool) -> Option<&Point> {
    points
        .iter()
        .find(|p| p.multiplier == multiplier && p.shedding == shedding)
}

/// "The 1× maximum": the most that was served at 1× (capacity or open loop at 1×).
fn one_x(capacity: f64, points: &[Point]) -> f64 {
    points
        .iter()
        .filter(|p| p.multiplier == 1.0)
        .map(|p| p.med(|s| s.report.goodput()))
        .fold(capacity, f64::max)
}

/// The server CPU µs per 503 of the shedding runs `on`: what each spent beyond its 2xx answers
/// at `per_ok` µs each, per 503 (median over the runs); `None` without refusals.
fn refusal_cost(on: &Point, per_ok: f64) -> Option<f64> {
    let per_503 = on.med(|s| {
        let shed = s.report.shed_in_window();
        let rest = s.server_cpu.as_secs_f64() * 1e6 - per_ok * s.report.admitted_in_window() as f64;
        if shed == 0 {
            f64::NAN
        } else {
            rest / shed as f64
        }
    });
    (!per_503.is_nan()).then_some(per_503)
}

fn write_goal(out: &mut String, capacity: f64, points: &[Point]) -> anyhow::Result<()> {
    let Some(at4) = find(points, 4.0, true) else {
        return Ok(());
    };
    let one_x = one_x(capacity, points);
    let goodput = at4.med(|s| s.report.goodput());
    let p99 = at4.med_pct(1);
    let verdict = |ok: bool| if ok { "**met**" } else { "**not met**" };
    writeln!(
        out,
        "\n**Goal** (issue 16, item 8: at 4× capacity, goodput ≥ 90 % of the 1× maximum and admitted p99 under 50 ms), shedding on, medians: goodput {goodput:.0} req/s = {:.2} of the 1× maximum ({one_x:.0} req/s: the larger of C and the 1× goodputs) — {}; admitted p99 {p99:.2} ms — {}.",
        goodput / one_x,
        verdict(goodput >= 0.9 * one_x),
        verdict(p99 < 50.0),
    )?;
    if let Some(off) = find(points, 4.0, false) {
        writeln!(
            out,
            "With shedding off at 4×: goodput {:.0} req/s ({:.2}), admitted p99 {:.2} ms.",
            off.med(|s| s.report.goodput()),
            off.med(|s| s.report.goodput()) / one_x,
            off.med_pct(1),
        )?;
    }
    Ok(())
}

/// The server CPU a refusal costs, estimated per load point: the run with shedding off gives
/// the cost of an admitted request when the server is saturated; what the run with shedding on
/// spent beyond its admitted requests at that cost, per 503, is the cost of a refusal.
fn write_refusal_cost(out: &mut String, points: &[Point]) -> anyhow::Result<()> {
    let mut rows = String::new();
    for on in points.iter().filter(|p| p.shedding) {
        let Some(off) = find(points, on.multiplier, false) else {
            continue;
        };
        let per_ok = off.med(Sample::cpu_per_admitted_us);
        let Some(per_503) = refusal_cost(on, per_ok) else {
            continue;
        };
        writeln!(
            rows,
            "| {}× | {per_ok:.1} | {per_503:.1} | {:.2} |",
            on.multiplier,
            per_503 / per_ok
        )?;
    }
    if !rows.is_empty() {
        writeln!(out, "\n**What a refusal costs** (estimate: server CPU of the shedding run minus its 2xx answers at the per-2xx cost of the run without shedding at the same load, divided by its 503s; medians):\n\n| load | µs per 2xx (shedding off) | µs per 503 | 503 / 2xx |\n|---|---|---|---|\n{rows}")?;
    }
    Ok(())
}
