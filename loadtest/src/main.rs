//! `sdsim-loadtest http URL [--rate R] --duration 30s --connections 50 [--cpus 1] [--json FILE]`
//! `sdsim-loadtest grpc ADDR --method /pkg.Svc/Method --data JSON [--rate R] ...`
//! `sdsim-loadtest ws ws://HOST:PORT/ws --connections N [--connect-rate R] [--publish-rate R] ...`
//! `sdsim-loadtest run SCENARIO.toml` (an HTTP, WebSocket or flow scenario)

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use mimalloc::MiMalloc;
use sdsim_loadtest::flow::{run_flow_with, FlowLoad, FlowSeriesPoint};
use sdsim_loadtest::report::SeriesPoint;
use sdsim_loadtest::run::{build_request, run_http_with, GrpcCall, HttpLoad, Protocol};
use sdsim_loadtest::scenario::Scenario;
use sdsim_loadtest::thresholds;
use sdsim_loadtest::ws::{Op, WsLoad, WsOptions, WsSeriesPoint};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

#[derive(Parser)]
#[command(
    name = "sdsim-loadtest",
    version,
    about = "Load generator with HDR latency and no coordinated omission"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct Outputs {
    /// Write the JSON report here.
    #[arg(long)]
    json: Option<String>,
    /// Write one NDJSON line per interval here (time series).
    #[arg(long)]
    series: Option<String>,
    /// Write the interval histograms here as an HdrHistogram interval log (.hlog, readable by
    /// HistogramLogProcessor and other HdrHistogram tools; values in µs).
    #[arg(long)]
    hlog: Option<String>,
    /// Write a latency-by-percentile plot (SVG) here.
    #[arg(long)]
    plot: Option<String>,
    /// No progress line on stderr.
    #[arg(long)]
    quiet: bool,
    /// A pass/fail criterion, e.g. 'p99 < 50ms', 'errors < 0.1%', 'login: p99 < 200ms'
    /// (repeatable); when one fails the process exits with code 99 after writing its outputs.
    #[arg(long = "threshold", value_name = "EXPR")]
    thresholds: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// HTTP/1.1 keep-alive load against URL (http:// only).
    Http(HttpArgs),
    /// gRPC unary load against ADDR (host:port): any method of the .proto files, request as JSON.
    Grpc(GrpcArgs),
    /// WebSocket load: hold N subscribed connections, publish events and time their delivery.
    Ws(WsArgs),
    /// Run a scenario file (TOML; examples in loadtest/scenarios/): phases of HTTP load, a
    /// WebSocket hold, or a flow of chained HTTP, WebSocket and gRPC steps per arriving user.
    Run(RunArgs),
}

/// The `http` subcommand's arguments.
#[derive(clap::Args)]
struct HttpArgs {
    /// e.g. http://127.0.0.1:8000/health
    url: String,
    /// Total requests per second (open loop, wrk2-style); without it: closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// Measured duration, e.g. 30s.
    #[arg(long, default_value = "10s")]
    duration: String,
    /// Unmeasured warm-up before it.
    #[arg(long, default_value = "2s")]
    warmup: String,
    /// Connections in total.
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// CPUs to pin the generator's threads to, e.g. 1 or 2,3 (one thread each), within the
    /// affinity mask the process was started with; default: every CPU of that mask.
    #[arg(long)]
    cpus: Option<String>,
    /// HTTP method.
    #[arg(long, default_value = "GET")]
    method: String,
    /// Extra header, "Name: value" (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Request body.
    #[arg(long, default_value = "")]
    body: String,
    /// Interval of the time series and the progress line.
    #[arg(long, default_value = "1s")]
    interval: String,
    /// A request not answered within this counts as a `timeout` error; its connection is
    /// closed and the next request opens a new one.
    #[arg(long, default_value = "10s")]
    timeout: String,
    #[command(flatten)]
    outputs: Outputs,
}

/// The `grpc` subcommand's arguments.
#[derive(clap::Args)]
struct GrpcArgs {
    /// e.g. 127.0.0.1:9000
    addr: String,
    /// The method, /package.Service/Method.
    #[arg(long)]
    method: String,
    /// The request message as JSON (proto3 JSON mapping).
    #[arg(long, default_value = "{}")]
    data: String,
    /// Folder of the .proto files.
    #[arg(long, default_value = "proto")]
    proto_dir: String,
    /// Metadata sent with every call, "name: value" (repeatable).
    #[arg(long = "metadata")]
    metadata: Vec<String>,
    /// Total calls per second (open loop); without it: closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// Measured duration, e.g. 30s.
    #[arg(long, default_value = "10s")]
    duration: String,
    /// Unmeasured warm-up before it.
    #[arg(long, default_value = "2s")]
    warmup: String,
    /// HTTP/2 connections in total (one call in flight on each).
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// CPUs to pin the generator's threads to, e.g. 1 or 2,3 (one thread each), within the
    /// affinity mask the process was started with; default: every CPU of that mask.
    #[arg(long)]
    cpus: Option<String>,
    /// Interval of the time series and the progress line.
    #[arg(long, default_value = "1s")]
    interval: String,
    /// A call not answered within this counts as a `timeout` error; its connection is
    /// closed and the next call opens a new one.
    #[arg(long, default_value = "10s")]
    timeout: String,
    #[command(flatten)]
    outputs: Outputs,
}

/// The `ws` subcommand's arguments.
#[derive(clap::Args)]
struct WsArgs {
    /// e.g. ws://127.0.0.1:8000/ws
    url: String,
    /// Connections in total.
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// New connections per second at most (deterministic token bucket).
    #[arg(long, default_value_t = 1000.0)]
    connect_rate: f64,
    /// Limit on TCP connect + upgrade + subscribe of one connection.
    #[arg(long, default_value = "10s")]
    connect_timeout: String,
    /// Measured hold once every connection is open, e.g. 30s.
    #[arg(long, default_value = "10s")]
    duration: String,
    /// Unmeasured pause between the last connection opening and the hold.
    #[arg(long, default_value = "1s")]
    warmup: String,
    /// The channel every connection subscribes to (the base name with --channels).
    #[arg(long, default_value = sdsim_loadtest::ws::DEFAULT_CHANNEL)]
    channel: String,
    /// Spread the connections over K channels CHANNEL-0 .. CHANNEL-{K-1}.
    #[arg(long)]
    channels: Option<usize>,
    /// Bearer token of the upgrade; {i} is replaced by the connection number.
    #[arg(long)]
    token: Option<String>,
    /// Events per second the generator publishes (open loop, spread over the channels).
    #[arg(long)]
    publish_rate: Option<f64>,
    /// Where to publish; default http://HOST:PORT/api/publish of URL.
    #[arg(long)]
    publish_url: Option<String>,
    /// Admin token of the publish requests; default --token.
    #[arg(long)]
    publish_token: Option<String>,
    /// HTTP/1.1 connections publishing (one request in flight on each).
    #[arg(long, default_value_t = 4)]
    publish_connections: usize,
    /// {"op":"ping"} per second over all connections (each sends its share).
    #[arg(long)]
    send_rate: Option<f64>,
    /// CPUs to pin the generator's threads to, e.g. 1 or 2,3 (one thread each), within the
    /// affinity mask the process was started with; default: every CPU of that mask.
    #[arg(long)]
    cpus: Option<String>,
    /// Source addresses, round robin, e.g. 127.0.0.1-127.0.0.50 (beyond 64K connections).
    #[arg(long)]
    sources: Option<String>,
    /// Interval of the time series and the progress line.
    #[arg(long, default_value = "1s")]
    interval: String,
    #[command(flatten)]
    outputs: Outputs,
}

/// The `run` subcommand's arguments.
#[derive(clap::Args)]
struct RunArgs {
    /// The scenario.
    scenario: String,
    /// Replace a [flow.vars] constant of a flow scenario, e.g. --var
    /// http=http://10.0.0.5:8000 (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    #[command(flatten)]
    outputs: Outputs,
}

/// Parses "500ms", "10s", "2m" or bare seconds.
fn duration(text: &str) -> anyhow::Result<Duration> {
    sdsim_loadtest::scenario::parse_duration(text).map_err(|e| anyhow::anyhow!(e))
}

/// A duration that must not be zero.
fn positive(text: &str, flag: &str) -> anyhow::Result<Duration> {
    let d = duration(text).with_context(|| flag.to_string())?;
    if d.is_zero() {
        bail!("{flag}: must be positive");
    }
    Ok(d)
}

/// `--cpus`, or every CPU of the affinity mask without it.
fn parse_cpus(text: Option<&str>) -> anyhow::Result<Vec<usize>> {
    let requested: Vec<usize> = match text {
        None => Vec::new(),
        Some(text) => text
            .split(',')
            .map(|c| c.trim().parse())
            .collect::<Result<_, _>>()
            .context("--cpus")?,
    };
    sdsim_loadtest::cpus::resolve(&requested, "--cpus")
}

/// Splits an http:// URL into (address, authority, path).
fn target(url: &str) -> anyhow::Result<(SocketAddr, String, String)> {
    let rest = url
        .strip_prefix("http://")
        .context("only http:// URLs are supported")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .context("no address")?;
    Ok((addr, authority.to_string(), path.to_string()))
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Http(args) => http(args),
        Command::Grpc(args) => grpc(args),
        Command::Ws(args) => ws(args),
        Command::Run(args) => run(args),
    }
}

/// `sdsim-loadtest http`.
fn http(args: HttpArgs) -> anyhow::Result<()> {
    let HttpArgs {
        url,
        rate,
        duration: d,
        warmup,
        connections,
        cpus,
        method,
        headers,
        body,
        interval,
        timeout,
        outputs,
    } = args;
    let (addr, authority, path) = target(&url)?;
    let cpus = parse_cpus(cpus.as_deref())?;
    if rate.is_some_and(|r| r <= 0.0) || connections == 0 {
        bail!("--rate and --connections must be positive");
    }
    let load = HttpLoad {
        addr,
        request: build_request(&method, &authority, &path, &headers, body.as_bytes()),
        connections,
        rate,
        duration: duration(&d)?,
        warmup: duration(&warmup)?,
        cpus: cpus.clone(),
        interval: duration(&interval)?,
        phases: Vec::new(),
        protocol: Default::default(),
        timeout: positive(&timeout, "--timeout")?,
    };
    let params = [
        ("url", url),
        ("rate", rate.map_or("closed-loop".into(), |r| r.to_string())),
        ("connections", connections.to_string()),
        ("duration", d),
        ("warmup", warmup),
        ("cpus", format!("{cpus:?}")),
    ];
    execute(&load, &outputs, &params)
}

/// `sdsim-loadtest grpc`.
fn grpc(args: GrpcArgs) -> anyhow::Result<()> {
    let GrpcArgs {
        addr,
        method,
        data,
        proto_dir,
        metadata,
        rate,
        duration: d,
        warmup,
        connections,
        cpus,
        interval,
        timeout,
        outputs,
    } = args;
    let target = addr
        .to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .context("no address")?;
    let cpus = parse_cpus(cpus.as_deref())?;
    if rate.is_some_and(|r| r <= 0.0) || connections == 0 {
        bail!("--rate and --connections must be positive");
    }
    let pool = sdsim_loadtest::grpc::load_pool(std::path::Path::new(&proto_dir))?;
    let message = sdsim_loadtest::grpc::encode_request(&pool, &method, &data)?;
    let metadata = metadata
        .iter()
        .map(|m| {
            m.split_once(':')
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .with_context(|| format!("--metadata {m:?}: expected \"name: value\""))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let load = HttpLoad {
        addr: target,
        request: bytes::Bytes::new(),
        connections,
        rate,
        duration: duration(&d)?,
        warmup: duration(&warmup)?,
        cpus: cpus.clone(),
        interval: duration(&interval)?,
        phases: Vec::new(),
        protocol: Protocol::Grpc(GrpcCall {
            path: format!("/{}", method.trim_start_matches('/')),
            message,
            more_messages: Default::default(),
            metadata,
        }),
        timeout: positive(&timeout, "--timeout")?,
    };
    let params = [
        ("grpc", addr),
        ("method", method),
        ("rate", rate.map_or("closed-loop".into(), |r| r.to_string())),
        ("connections", connections.to_string()),
        ("duration", d),
        ("warmup", warmup),
        ("cpus", format!("{cpus:?}")),
    ];
    execute(&load, &outputs, &params)
}

/// `sdsim-loadtest ws`.
fn ws(args: WsArgs) -> anyhow::Result<()> {
    let WsArgs {
        url,
        connections,
        connect_rate,
        connect_timeout,
        duration: d,
        warmup,
        channel,
        channels,
        token,
        publish_rate,
        publish_url,
        publish_token,
        publish_connections,
        send_rate,
        cpus,
        sources,
        interval,
        outputs,
    } = args;
    let options = WsOptions {
        url,
        connections,
        connect_rate,
        connect_timeout: duration(&connect_timeout)?,
        duration: duration(&d)?,
        warmup: duration(&warmup)?,
        channel,
        channels,
        token,
        publish_rate,
        publish_url,
        publish_token,
        publish_connections,
        send_rate,
        cpus: parse_cpus(cpus.as_deref())?,
        sources,
        interval: duration(&interval)?,
    };
    let load = options.build()?;
    execute_ws(&load, &outputs, &options.parameters())
}

/// `sdsim-loadtest run`.
fn run(args: RunArgs) -> anyhow::Result<()> {
    let RunArgs {
        scenario,
        vars,
        mut outputs,
    } = args;
    let text = std::fs::read_to_string(&scenario).with_context(|| format!("reading {scenario}"))?;
    let mut parsed =
        Scenario::parse(&text).with_context(|| format!("{scenario} is not a valid scenario"))?;
    outputs.thresholds.extend(parsed.threshold_texts());
    for var in &vars {
        let Some(flow) = parsed.flow.as_mut() else {
            bail!("--var: only a flow scenario has [flow.vars]");
        };
        let (name, value) = var
            .split_once('=')
            .with_context(|| format!("--var {var}: expected NAME=VALUE"))?;
        let Some(slot) = flow.vars.get_mut(name) else {
            let known: Vec<&String> = flow.vars.keys().collect();
            bail!("--var {name}: {scenario} has no such [flow.vars] (it has {known:?})");
        };
        *slot = value.to_string();
    }
    if let Some(load) = parsed
        .flow_load()
        .with_context(|| format!("{scenario}: the flow cannot run"))?
    {
        let rates: Vec<String> = parsed
            .phases
            .iter()
            .map(|p| match p.ramp_to {
                Some(to) => format!("{}->{}/s for {}", p.rate, to, p.duration),
                None => format!("{}/s for {}", p.rate, p.duration),
            })
            .collect();
        let params = [
            ("scenario", scenario),
            ("users", rates.join(", ")),
            ("steps", load.flow.steps.len().to_string()),
            ("run", load.run_id.clone()),
            ("cpus", format!("{:?}", load.cpus)),
            ("vars", vars.join(" ")),
        ];
        return execute_flow(&load, &outputs, &params);
    }
    if let Some(options) = parsed.ws_options()? {
        let load = options.build()?;
        let mut params = options.parameters();
        params.push(("scenario", scenario));
        return execute_ws(&load, &outputs, &params);
    }
    let url = parsed.target()?.url.clone();
    let (addr, authority, path) = target(&url)?;
    let load = parsed.load(addr, &authority, &path)?;
    let params = [
        ("scenario", scenario),
        ("url", url),
        ("phases", parsed.phases.len().to_string()),
    ];
    execute(&load, &outputs, &params)
}

/// The `--series` file (NDJSON), and the first error writing it.
struct Series {
    out: Option<std::io::BufWriter<std::fs::File>>,
    error: Option<std::io::Error>,
}

impl Series {
    fn create(outputs: &Outputs) -> anyhow::Result<Series> {
        let out = match &outputs.series {
            Some(path) => Some(std::io::BufWriter::new(
                std::fs::File::create(path).with_context(|| format!("creating {path}"))?,
            )),
            None => None,
        };
        Ok(Series { out, error: None })
    }

    fn write(&mut self, point: &impl serde::Serialize) {
        if let Some(out) = self.out.as_mut() {
            let line = sonic_rs::to_string(point).unwrap_or_default();
            if let Err(e) = writeln!(out, "{line}") {
                self.error.get_or_insert(e);
            }
        }
    }

    fn finish(self) -> anyhow::Result<()> {
        if let Some(mut out) = self.out {
            out.flush()?;
        }
        match self.error {
            Some(e) => bail!("writing the series: {e}"),
            None => Ok(()),
        }
    }
}

/// The plot's title: the parameters named in `keys` (all of them without).
fn plot_title(params: &[(&str, String)], keys: Option<&[&str]>) -> String {
    params
        .iter()
        .filter(|(k, _)| keys.is_none_or(|keys| keys.contains(k)))
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("  ")
}

/// Writes the plot, the JSON report and the interval log where `outputs` asks.
fn write_outputs(
    outputs: &Outputs,
    plot: impl FnOnce() -> String,
    json: impl FnOnce(&BTreeMap<String, String>) -> String,
    params: &[(&str, String)],
    hlog: impl FnOnce(std::fs::File) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if let Some(path) = &outputs.hlog {
        let file = std::fs::File::create(path).with_context(|| format!("creating {path}"))?;
        hlog(file).with_context(|| format!("writing {path}"))?;
    }
    if let Some(path) = &outputs.plot {
        std::fs::write(path, plot()).with_context(|| format!("writing {path}"))?;
    }
    if let Some(path) = &outputs.json {
        let params: BTreeMap<String, String> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        std::fs::write(path, json(&params)).with_context(|| format!("writing {path}"))?;
    }
    Ok(())
}

/// The percentile plot of a run with several request types: one line per type that recorded
/// something.
fn plot_by_type<'a>(
    title: &str,
    reports: impl Iterator<Item = (&'a str, sdsim_loadtest::report::Report)>,
) -> String {
    let reports: Vec<_> = reports.filter(|(_, r)| !r.histogram.is_empty()).collect();
    let lines: Vec<_> = reports.iter().map(|(n, r)| (*n, &r.histogram)).collect();
    sdsim_loadtest::plot::percentile_svg(title, &lines)
}

/// The HDR interval log of a run with several request types, one tag per type; intervals are
/// counted from the runs' start, 200 ms after `started`.
fn hlog_by_type<'a>(
    file: std::fs::File,
    started: std::time::SystemTime,
    interval: Duration,
    tagged: impl Iterator<Item = (u64, &'a str, &'a hdrhistogram::Histogram<u64>)>,
) -> anyhow::Result<()> {
    let tagged: Vec<_> = tagged
        .map(|(index, tag, h)| (index, Some(tag), h))
        .collect();
    let start = started + Duration::from_millis(200);
    sdsim_loadtest::report::write_tagged_interval_log(file, start, interval, &tagged)
}

/// Runs `load`, printing progress and the table, writing the series and JSON if asked.
fn execute(load: &HttpLoad, outputs: &Outputs, params: &[(&str, String)]) -> anyhow::Result<()> {
    if load.interval.is_zero() {
        bail!("the interval must be positive");
    }
    let checks = thresholds::prepare(&outputs.thresholds, &["run"], Some("run"))?;
    let mut series = Series::create(outputs)?;
    let step = load.interval.as_secs_f64();
    let started = std::time::SystemTime::now();
    let mut intervals: Vec<(u64, hdrhistogram::Histogram<u64>)> = Vec::new();
    let report = run_http_with(load, |index, histogram, counters| {
        if outputs.hlog.is_some() {
            intervals.push((index, histogram.clone()));
        }
        let point = SeriesPoint::new(index, step, histogram, counters);
        if !outputs.quiet {
            eprintln!(
                "[{:>7.1}s] {:>10.0} req/s  errors {}  late {}  p50 {:.3} ms  p99 {:.3} ms",
                point.t_s,
                point.throughput_per_s,
                point.errors,
                point.late,
                point.latency_ms.p50,
                point.latency_ms.p99
            );
        }
        series.write(&point);
    })?;
    series.finish()?;
    print!("{}", report.table());
    let verdicts = thresholds::check_all(&checks, "run", |_| Some(report.clone()));
    let measured_from = started + Duration::from_millis(200) + load.warmup;
    write_outputs(
        outputs,
        || {
            let title = plot_title(params, None);
            sdsim_loadtest::plot::percentile_svg(&title, &[("latency", &report.histogram)])
        },
        |p| thresholds::with_verdicts(report.to_json(p), &verdicts),
        params,
        |file| {
            sdsim_loadtest::report::write_interval_log(
                file,
                measured_from,
                load.interval,
                &intervals,
            )
        },
    )?;
    conclude(&verdicts);
    Ok(())
}

/// Runs a WebSocket load, printing progress and the table, writing the outputs asked for.
fn execute_ws(load: &WsLoad, outputs: &Outputs, params: &[(&str, String)]) -> anyhow::Result<()> {
    let names = Op::ALL.map(Op::name);
    let checks = thresholds::prepare(&outputs.thresholds, &names, None)?;
    let mut series = Series::create(outputs)?;
    let started = std::time::SystemTime::now();
    let mut intervals: Vec<(u64, Op, hdrhistogram::Histogram<u64>)> = Vec::new();
    let report = sdsim_loadtest::ws::run_ws_with(load, |index, held, tally| {
        if outputs.hlog.is_some() {
            for op in Op::ALL {
                let h = &tally.histograms[op as usize];
                if !h.is_empty() {
                    intervals.push((index, op, h.clone()));
                }
            }
        }
        let point = WsSeriesPoint::new(index, load.interval, held, tally);
        if !outputs.quiet {
            eprintln!("{}", point.line());
        }
        series.write(&point);
    })?;
    series.finish()?;
    print!("{}", report.table());
    let verdicts = thresholds::check_all(&checks, "", |line| {
        let op = Op::ALL.into_iter().find(|op| op.name() == line)?;
        Some(report.report(op))
    });
    write_outputs(
        outputs,
        || {
            let keys = ["url", "connections", "publish_rate", "send_rate"];
            let title = plot_title(params, Some(&keys));
            plot_by_type(
                &title,
                Op::ALL.iter().map(|op| (op.name(), report.report(*op))),
            )
        },
        |p| thresholds::with_verdicts(report.to_json(p), &verdicts),
        params,
        |file| {
            let tagged = intervals
                .iter()
                .map(|(index, op, h)| (*index, op.name(), h));
            hlog_by_type(file, started, load.interval, tagged)
        },
    )?;
    conclude(&verdicts);
    Ok(())
}

/// Runs a flow, printing progress and the table per step, writing the outputs asked for.
fn execute_flow(
    load: &FlowLoad,
    outputs: &Outputs,
    params: &[(&str, String)],
) -> anyhow::Result<()> {
    let types = &load.flow.types;
    let names: Vec<&str> = types.iter().map(String::as_str).collect();
    let checks = thresholds::prepare(&outputs.thresholds, &names, Some("flow"))?;
    let mut series = Series::create(outputs)?;
    let started = std::time::SystemTime::now();
    let mut intervals: Vec<(u64, usize, hdrhistogram::Histogram<u64>)> = Vec::new();
    let report = run_flow_with(load, |index, active, tally| {
        if outputs.hlog.is_some() {
            for (t, h) in tally.histograms.iter().enumerate() {
                if !h.is_empty() {
                    intervals.push((index, t, h.clone()));
                }
            }
        }
        let point = FlowSeriesPoint::new(index, load.interval, active, types, tally);
        if !outputs.quiet {
            eprintln!("{}", point.line());
        }
        series.write(&point);
    })?;
    series.finish()?;
    print!("{}", report.table());
    let verdicts = thresholds::check_all(&checks, "flow", |line| {
        let t = types.iter().position(|name| name == line)?;
        Some(report.report(t))
    });
    write_outputs(
        outputs,
        || {
            let title = plot_title(params, Some(&["scenario", "users"]));
            plot_by_type(
                &title,
                (0..types.len()).map(|t| (types[t].as_str(), report.report(t))),
            )
        },
        |p| thresholds::with_verdicts(report.to_json(p), &verdicts),
        params,
        |file| {
            let tagged = intervals
                .iter()
                .map(|(index, t, h)| (*index, types[*t].as_str(), h));
            hlog_by_type(file, started, load.interval, tagged)
        },
    )?;
    conclude(&verdicts);
    Ok(())
}

/// Prints the verdicts; when one failed, ends the process with
/// [`thresholds::EXIT_CODE`] (the outputs are written by then).
fn conclude(verdicts: &[thresholds::Verdict]) {
    if verdicts.is_empty() {
        return;
    }
    print!("{}", thresholds::table(verdicts));
    let failed = verdicts.iter().filter(|v| !v.passed).count();
    if failed > 0 {
        let _ = std::io::stdout().flush();
        eprintln!(
            "sdsim-loadtest: {failed} of {} thresholds failed",
            verdicts.len()
        );
        std::process::exit(thresholds::EXIT_CODE);
    }
}
