//! WebSocket benchmark: sdsim against an axum peer (`peer-ws`), same protocol, same CPU, same
//! load, in one run, as a ratio. Each server is pinned (all its threads) to `--server-cpu`; the
//! client (one pinned current-thread tokio runtime per `--client-cpus` entry, plus the HTTP
//! publisher) runs in this process. Servers alternate, `--runs` times; medians are reported.
//!
//! Scenarios (`--scenario`):
//! - `idle`: N connections (cumulative `--sizes`), each subscribed to `simulation:data:{i % K}`,
//!   held `--hold` s; server RSS, kernel TCP buffer memory and kernel slab per connection.
//! - `fanout`: `--subscribers` S on `system:announcements`, `--rate` R publishes/s (default 10)
//!   for `--duration` D s: deliveries/s, publish → receive latency, missing events.
//! - `fanout-many`: the same S connections over `--channels` K channels `simulation:data:{k}`
//!   (each on one), the publisher rotating over the channels at R/s (default K, so every
//!   channel gets one event per second).
//!
//! `cargo build --release -p sdsim-server -p sdsim-bench && target/release/bench-ws --scenario fanout`
//! `--servers peer` runs the peer only; `--target-only ws://127.0.0.1:PORT/ws` runs against an
//! already running server (`--server-pid` to read its memory).

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use mimalloc::MiMalloc;
use sdsim_bench::process::{free_port, pinned, stop, wait_ready};
use sdsim_bench::ws_client::{
    parse_target, publish, raise_nofile, server_socket_memory, ClientConfig, ConnSpec, Pool,
    ProcSample, PublishPlan, PublishReport,
};
use sdsim_bench::{machine_line, median};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum Scenario {
    Idle,
    Fanout,
    FanoutMany,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum ServerKind {
    /// sdsim, 1 shard.
    Sdsim,
    /// peer-ws with 4 KiB read and write buffers.
    Peer,
    /// peer-ws with axum's default 128 KiB read and write buffers.
    PeerDefault,
}

#[derive(Parser)]
struct Args {
    /// What to measure.
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Servers to compare (default: sdsim,peer; idle adds peer-default).
    #[arg(long, value_enum, value_delimiter = ',')]
    servers: Vec<ServerKind>,
    /// Runs per server (alternating); medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// CPU for the server under test.
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
    /// CPUs for the client runtimes (one thread each); the publisher uses the first.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    client_cpus: Vec<usize>,
    /// The sdsim binary.
    #[arg(long, default_value = "target/release/sdsim")]
    sdsim: String,
    /// The peer binary.
    #[arg(long, default_value = "target/release/peer-ws")]
    peer: String,
    /// Run against an already running server at this URL (ws://127.0.0.1:PORT/ws) instead.
    #[arg(long)]
    target_only: Option<String>,
    /// With --target-only: the server's pid, to read its RSS and CPU time.
    #[arg(long)]
    server_pid: Option<u32>,
    /// New connections per second.
    #[arg(long, default_value_t = 2000.0)]
    connect_rate: f64,
    /// Client read buffer per connection (bytes).
    #[arg(long, default_value_t = 4096)]
    client_read_buffer: usize,
    /// Application ping (`{"op":"ping"}`) interval per connection, seconds (0 = none).
    #[arg(long, default_value_t = 0.0)]
    ping_secs: f64,
    /// idle: connection counts, measured cumulatively.
    #[arg(long, value_delimiter = ',', default_value = "5000,10000,18000")]
    sizes: Vec<usize>,
    /// idle and fanout-many: number of channels K.
    #[arg(long, default_value_t = 1000)]
    channels: usize,
    /// fanout, fanout-many: subscribers.
    #[arg(long, default_value_t = 10_000)]
    subscribers: usize,
    /// fanout, fanout-many: publishes per second (default: 10 for fanout, K for fanout-many).
    #[arg(long)]
    rate: Option<f64>,
    /// fanout, fanout-many: publishing seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Size of each event's data object (bytes).
    #[arg(long, default_value_t = 128)]
    size: usize,
    /// Publisher keep-alive connections.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Seconds to hold the connections before sampling memory.
    #[arg(long, default_value_t = 3.0)]
    hold: f64,
    /// Longest wait for late deliveries after publishing ends, seconds.
    #[arg(long, default_value_t = 10.0)]
    drain: f64,
}

/// One measured value per metric, in table order.
type Rows = Vec<(String, f64)>;

fn column_name(kind: Option<ServerKind>) -> &'static str {
    match kind {
        Some(ServerKind::Sdsim) => "sdsim",
        Some(ServerKind::Peer) => "peer (4 KiB)",
        Some(ServerKind::PeerDefault) => "peer (128 KiB default)",
        None => "target",
    }
}

fn command(kind: ServerKind, args: &Args, port: u16) -> Command {
    match kind {
        ServerKind::Sdsim => {
            let mut c = pinned(&args.sdsim, args.server_cpu);
            c.arg("serve");
            for set in [
                "runtime.shards=1".to_owned(),
                format!("runtime.cpus=[{}]", args.server_cpu),
                format!("gateway.listen=127.0.0.1:{port}"),
                "ratelimit.enabled=false".to_owned(),
                "log.access=false".to_owned(),
                "auth.dev_open=true".to_owned(),
                "websocket.max_connections_per_ip=0".to_owned(),
                "server.max_connections=200000".to_owned(),
            ] {
                c.arg("--set").arg(set);
            }
            c
        }
        ServerKind::Peer | ServerKind::PeerDefault => {
            let buffer = if kind == ServerKind::Peer {
                "4096"
            } else {
                "131072"
            };
            let mut c = pinned(&args.peer, args.server_cpu);
            c.args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--threads",
                "1",
                "--read-buffer",
                buffer,
                "--write-buffer",
                buffer,
            ]);
            c
        }
    }
}

fn client_config(args: &Args, addr: SocketAddr, path: &str) -> ClientConfig {
    ClientConfig {
        addr,
        path: path.to_owned(),
        cpus: args.client_cpus.clone(),
        connect_rate: args.connect_rate,
        read_buffer: args.client_read_buffer,
        ping_secs: args.ping_secs,
    }
}

fn specs(range: std::ops::Range<usize>, channel: impl Fn(usize) -> String) -> Vec<ConnSpec> {
    range
        .map(|i| ConnSpec {
            channel: channel(i),
            token: format!("bench{i}"),
        })
        .collect()
}

/// Opens `specs`; warns about failures, fails if none subscribed. Returns how many did.
fn open_checked(pool: &mut Pool, specs: Vec<ConnSpec>) -> anyhow::Result<usize> {
    let (ok, failed) = pool.open(specs)?;
    let errors = pool.shared().errors.lock().unwrap().clone();
    if ok == 0 && failed > 0 {
        bail!("no connection could subscribe ({failed} failed); first errors: {errors:?}");
    }
    if failed > 0 {
        eprintln!("  {failed} connections failed; first errors: {errors:?}");
    }
    Ok(ok)
}

fn per_conn(after: u64, before: u64, n: usize) -> f64 {
    (after as f64 - before as f64) / n.max(1) as f64
}

fn measure_idle(
    args: &Args,
    addr: SocketAddr,
    path: &str,
    pid: Option<u32>,
) -> anyhow::Result<Rows> {
    let k = args.channels.max(1);
    let mut pool = Pool::start(&client_config(args, addr, path))?;
    let base = ProcSample::take(pid);
    let mut rows = Rows::new();
    // (held, RSS) at each size: the slope is the marginal cost of one more connection,
    // without fixed costs such as the channels created by the first connections.
    let mut points = Vec::new();
    let mut open = 0;
    for &n in &args.sizes {
        let ok = open_checked(
            &mut pool,
            specs(open..n, |i| format!("simulation:data:{}", i % k)),
        )?;
        open = n;
        std::thread::sleep(Duration::from_secs_f64(args.hold));
        let s = ProcSample::take(pid);
        let held = pool.shared().subscribed.load(Ordering::Relaxed)
            - pool.shared().closed.load(Ordering::Relaxed);
        eprintln!("  {n}: +{ok} subscribed, {held} held");
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
    pool.finish();
    Ok(rows)
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

/// What one fanout measurement collected before its connections closed.
struct FanoutPhase {
    ok: usize,
    held: usize,
    base: ProcSample,
    mem: ProcSample,
    published: PublishReport,
    expected: u64,
    start: Instant,
    publish_secs: f64,
    /// The server's established sockets and their kernel buffer bytes, before publishing.
    skmem: Option<(usize, u64)>,
    /// Server CPU seconds at publish start, publish end, drain end.
    server_cpu: [Option<f64>; 3],
    /// This process's CPU seconds while publishing.
    client_cpu: Option<f64>,
}

fn measure_fanout(
    args: &Args,
    addr: SocketAddr,
    path: &str,
    pid: Option<u32>,
) -> anyhow::Result<Rows> {
    let many = args.scenario == Scenario::FanoutMany;
    let k = if many { args.channels.max(1) } else { 1 };
    let name = |i: usize| {
        if many {
            format!("simulation:data:{}", i % k)
        } else {
            "system:announcements".to_owned()
        }
    };
    let channels: Vec<String> = (0..k).map(name).collect();
    let mut subs_per_channel = vec![0u64; k];
    for i in 0..args.subscribers {
        subs_per_channel[i % k] += 1;
    }
    let rate = args.rate.unwrap_or(if many { k as f64 } else { 10.0 });

    let mut pool = Pool::start(&client_config(args, addr, path))?;
    let result = (|| {
        let base = ProcSample::take(pid);
        let ok = open_checked(&mut pool, specs(0..args.subscribers, name))?;
        std::thread::sleep(Duration::from_secs_f64(args.hold));
        let held = pool.shared().subscribed.load(Ordering::Relaxed)
            - pool.shared().closed.load(Ordering::Relaxed);
        let mem = ProcSample::take(pid);
        let skmem = server_socket_memory(addr.port());

        let plan = PublishPlan {
            addr,
            channels,
            rate,
            duration: Duration::from_secs_f64(args.duration),
            size: args.size,
            connections: args.publishers,
            cpu: args.client_cpus.first().copied(),
        };
        let me = Some(std::process::id());
        let start = Instant::now();
        let (server0, client0) = (ProcSample::take(pid).cpu, ProcSample::take(me).cpu);
        let published = publish(&plan)?;
        let publish_secs = start.elapsed().as_secs_f64();
        let (server1, client1) = (ProcSample::take(pid).cpu, ProcSample::take(me).cpu);
        if let Some(e) = &published.first_error {
            eprintln!("  publish errors: {} (first: {e})", published.errors);
        }
        let expected: u64 = published
            .per_channel
            .iter()
            .zip(&subs_per_channel)
            .map(|(p, s)| p * s)
            .sum();
        // Late deliveries: until all arrived, or nothing for 2 s, or --drain s.
        let drain_end = Instant::now() + Duration::from_secs_f64(args.drain);
        let mut last = pool.shared().delivered.load(Ordering::Relaxed);
        let mut last_change = Instant::now();
        loop {
            let d = pool.shared().delivered.load(Ordering::Relaxed);
            if d >= expected || Instant::now() > drain_end {
                break;
            }
            if d != last {
                last = d;
                last_change = Instant::now();
            } else if last_change.elapsed() > Duration::from_secs(2) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let server2 = ProcSample::take(pid).cpu;
        Ok::<_, anyhow::Error>(FanoutPhase {
            ok,
            held,
            base,
            mem,
            published,
            expected,
            start,
            publish_secs,
            skmem,
            server_cpu: [server0, server1, server2],
            client_cpu: client0.zip(client1).map(|(a, b)| b - a),
        })
    })();
    let closed = pool.shared().closed.load(Ordering::Relaxed);
    let stats = pool.finish();
    let FanoutPhase {
        ok,
        held,
        base,
        mem,
        published,
        expected,
        start,
        publish_secs,
        skmem,
        server_cpu,
        client_cpu,
    } = result?;

    let window = stats
        .last
        .map(|l| l.saturating_duration_since(start).as_secs_f64())
        .unwrap_or(0.0)
        .max(args.duration);
    let q = |p: f64| stats.latency.value_at_quantile(p) as f64 / 1000.0;
    let mut rows: Rows = vec![
        ("subscribed connections".into(), ok as f64),
        ("publishes/s".into(), published.ok as f64 / args.duration),
        ("deliveries/s".into(), stats.delivered as f64 / window),
        ("latency p50 ms".into(), q(0.5)),
        ("latency p99 ms".into(), q(0.99)),
        ("latency p99.9 ms".into(), q(0.999)),
        ("latency max ms".into(), stats.latency.max() as f64 / 1000.0),
        (
            "missing (expected − delivered)".into(),
            expected as f64 - stats.delivered as f64,
        ),
        ("seq gaps".into(), stats.gaps as f64),
        (
            "duplicate / out-of-order events".into(),
            stats.reordered as f64,
        ),
        ("unparsed messages".into(), stats.unparsed as f64),
        ("closed by server (1008)".into(), stats.closed_1008 as f64),
        ("closed by server (any)".into(), closed as f64),
        ("publish errors".into(), published.errors as f64),
    ];
    if let Some(h) = &published.request_latency {
        rows.push((
            "publish request p50 ms".into(),
            h.value_at_quantile(0.5) as f64 / 1000.0,
        ));
    }
    if let [Some(c0), Some(c1), Some(c2)] = server_cpu {
        rows.push((
            "server CPU % while publishing".into(),
            (c1 - c0) / publish_secs * 100.0,
        ));
        rows.push((
            "server CPU µs per delivery".into(),
            (c2 - c0) * 1e6 / stats.delivered.max(1) as f64,
        ));
    }
    if let Some(c) = client_cpu {
        // The whole bench-ws process, as a share of its client CPUs: near 100 % means the
        // client, not the server, may be the bottleneck.
        rows.push((
            "client CPU % while publishing".into(),
            c / publish_secs / args.client_cpus.len() as f64 * 100.0,
        ));
    }
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
    if let Some((sockets, bytes)) = skmem {
        rows.push((
            "server socket buffers per conn (B)".into(),
            per_conn(bytes, 0, sockets),
        ));
    }
    eprintln!(
        "  {} delivered of {} expected in {:.2} s, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        stats.delivered,
        expected,
        window,
        q(0.5),
        q(0.99),
        stats.latency.max() as f64 / 1000.0
    );
    Ok(rows)
}

fn measure(args: &Args, addr: SocketAddr, path: &str, pid: Option<u32>) -> anyhow::Result<Rows> {
    match args.scenario {
        Scenario::Idle => measure_idle(args, addr, path, pid),
        Scenario::Fanout | Scenario::FanoutMany => measure_fanout(args, addr, path, pid),
    }
}

fn measure_spawned(kind: ServerKind, args: &Args) -> anyhow::Result<Rows> {
    let port = free_port()?;
    let mut child = command(kind, args, port)
        .spawn()
        .with_context(|| format!("starting {}", column_name(Some(kind))))?;
    let result = (|| {
        wait_ready(port, &mut child)?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        measure(args, addr, "/ws", Some(child.id()))
    })();
    stop(child);
    // Let the kernel reap the closed sockets before the next server's baseline.
    std::thread::sleep(Duration::from_millis(500));
    result
}

fn fmt(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else if v.abs() >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    args.sizes.sort_unstable();
    args.sizes.dedup();
    let most = match args.scenario {
        Scenario::Idle => args.sizes.last().copied().unwrap_or(0),
        _ => args.subscribers,
    };
    let nofile = raise_nofile();
    let needed = most as u64 + 200;
    if needed > nofile {
        bail!(
            "{most} connections need about {needed} file descriptors in this process, but \
             RLIMIT_NOFILE is {nofile} (its hard limit; it cannot be raised here): use at most \
             {} connections per bench-ws process",
            nofile.saturating_sub(200)
        );
    }
    if args.client_cpus.is_empty() || args.runs == 0 {
        bail!("--client-cpus and --runs must not be empty or zero");
    }
    // The controlling thread stays off the server's CPU too.
    sdsim_bench::pin_current(args.client_cpus[0]);

    let columns: Vec<Option<ServerKind>> = if args.target_only.is_some() {
        vec![None]
    } else if !args.servers.is_empty() {
        args.servers.iter().copied().map(Some).collect()
    } else if args.scenario == Scenario::Idle {
        vec![
            Some(ServerKind::Sdsim),
            Some(ServerKind::Peer),
            Some(ServerKind::PeerDefault),
        ]
    } else {
        vec![Some(ServerKind::Sdsim), Some(ServerKind::Peer)]
    };
    for kind in columns.iter().flatten() {
        let bin = if *kind == ServerKind::Sdsim {
            &args.sdsim
        } else {
            &args.peer
        };
        if !std::path::Path::new(bin).exists() {
            bail!("{bin} not found: cargo build --release -p sdsim-server -p sdsim-bench (or --servers peer)");
        }
    }

    let mut results: Vec<Vec<Rows>> = vec![Vec::new(); columns.len()];
    for run in 1..=args.runs {
        for (c, kind) in columns.iter().enumerate() {
            eprintln!("run {run} {} {:?}", column_name(*kind), args.scenario);
            let rows = match (kind, &args.target_only) {
                (Some(kind), _) => measure_spawned(*kind, &args)?,
                (None, Some(url)) => {
                    let (addr, path) = parse_target(url)?;
                    measure(&args, addr, &path, args.server_pid)?
                }
                (None, None) => unreachable!(),
            };
            results[c].push(rows);
        }
    }

    let labels: Vec<String> = results[0][0].iter().map(|(l, _)| l.clone()).collect();
    let medians: Vec<Vec<f64>> = results
        .iter()
        .map(|runs| {
            labels
                .iter()
                .map(|label| {
                    median(
                        runs.iter()
                            .filter_map(|rows| rows.iter().find(|(l, _)| l == label).map(|r| r.1))
                            .collect(),
                    )
                })
                .collect()
        })
        .collect();
    let sdsim = columns.iter().position(|c| *c == Some(ServerKind::Sdsim));
    let peer = columns.iter().position(|c| *c == Some(ServerKind::Peer));
    let ratio = sdsim.zip(peer);

    let client_cpus: Vec<String> = args.client_cpus.iter().map(|c| c.to_string()).collect();
    println!("# WebSocket {:?}: {}", args.scenario, machine_line());
    match args.scenario {
        Scenario::Idle => println!(
            "# {} connections (cumulative), each subscribed to one of {} channels, held {} s",
            args.sizes
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(" → "),
            args.channels,
            args.hold
        ),
        Scenario::Fanout => println!(
            "# {} subscribers on system:announcements; {} publishes/s for {} s, data {} B",
            args.subscribers,
            args.rate.unwrap_or(10.0),
            args.duration,
            args.size
        ),
        Scenario::FanoutMany => println!(
            "# {} subscribers over {} channels (one each); {} publishes/s rotating over the channels for {} s, data {} B",
            args.subscribers,
            args.channels,
            args.rate.unwrap_or(args.channels as f64),
            args.duration,
            args.size
        ),
    }
    if args.target_only.is_none() {
        println!(
            "# server pinned to CPU {}; client ({} current-thread runtime(s)) and publisher on CPU(s) {}; connect rate {}/s; medians of {} runs",
            args.server_cpu,
            args.client_cpus.len(),
            client_cpus.join(","),
            args.connect_rate,
            args.runs
        );
        println!("# sdsim: 1 shard, dev-open auth, rate limit and access log off; peer: axum 0.8 ws (tokio-tungstenite), 1 tokio worker, broadcast per channel");
    }
    println!("# kernel figures are system-wide deltas over both ends of each loopback connection: TCP buffers = /proc/net/sockstat TCP mem (cached per CPU by the kernel: ± ~1 MB per CPU), slab = /proc/meminfo Slab; server socket buffers = `ss -m` r+w+f+o of the server's end only");
    let mut header = String::from("| metric |");
    let mut rule = String::from("|---|");
    for kind in &columns {
        header.push_str(&format!(" {} |", column_name(*kind)));
        rule.push_str("---|");
    }
    if ratio.is_some() {
        header.push_str(" sdsim / peer |");
        rule.push_str("---|");
    }
    println!("{header}");
    println!("{rule}");
    for (r, label) in labels.iter().enumerate() {
        let mut line = format!("| {label} |");
        for col in &medians {
            line.push_str(&format!(" {} |", fmt(col[r])));
        }
        if let Some((s, p)) = ratio {
            let (a, b) = (medians[s][r], medians[p][r]);
            // Only for positive quantities: sign-noisy deltas (kernel counters) have no ratio.
            if a >= 0.0 && b > 0.0 && a.is_finite() && b.is_finite() {
                line.push_str(&format!(" {:.2}× |", a / b));
            } else {
                line.push_str(" – |");
            }
        }
        println!("{line}");
    }
    Ok(())
}
