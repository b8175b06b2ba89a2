//! The WebSocket benchmark (`bench-ws`): sdsim against an axum peer (`peer-ws`), same
//! protocol, same CPU, same load, in one run, as a ratio. Each server is pinned (all its
//! threads) to `--server-cpu`; the client is the load generator's WebSocket engine
//! (`sdsim_loadtest::ws`: one pinned monoio thread per `--client-cpus` entry, holding the
//! connections and running the HTTP publishers) in this process. Events are published in open loop and each carries its *intended* send
//! time, so latency is publish → receive without coordinated omission: a publish held up by a
//! slow answer counts its wait. Servers alternate, `--runs` times; medians are reported.
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
//!
//! Layout: this module holds the command line, the servers and the table; `idle` measures
//! memory per held connection at cumulative sizes, `fanout` the delivery of published events.

mod fanout;
mod idle;

use crate::process::{free_port, pinned, stop, wait_ready};
use crate::{machine_line, median};
use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use sdsim_loadtest::ws::{fd_limits, WsLoad};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

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

/// The command line of `bench-ws`.
#[derive(Parser)]
#[command(about = None, long_about = None)]
pub struct Args {
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
    /// CPUs for the client (one load-generator thread each, holding its share of the
    /// connections and of the publishers).
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
    /// Client read size (bytes): each client thread reads its sockets through one buffer of
    /// this size; a connection keeps only a frame that has not fully arrived.
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

/// The source addresses of the connections, used in turn: 127.0.0.2 ..= 127.0.0.254 (so many
/// connections to one server port never run out of source ports).
fn source_addresses() -> Vec<Ipv4Addr> {
    (2..=254)
        .map(|last| Ipv4Addr::new(127, 0, 0, last))
        .collect()
}

/// The load generator's run: `connections` to the server at `addr` + `path`, connection `i`
/// subscribing to `channels[i % len]` with the bearer token `token` (`{i}`: its number).
/// Nothing is published and the hold is `--duration`; callers set what differs.
fn ws_load(
    args: &Args,
    addr: SocketAddr,
    path: &str,
    connections: usize,
    channels: Vec<String>,
    token: String,
) -> WsLoad {
    WsLoad {
        addr,
        host: addr.to_string(),
        path: path.to_owned(),
        connections,
        connect_rate: args.connect_rate,
        connect_timeout: Duration::from_secs(30),
        // The holds of `--hold` are waited out by the measurements themselves, before anything
        // is published (see `WsEvent::Connected`).
        warmup: Duration::ZERO,
        duration: Duration::from_secs_f64(args.duration),
        drain: Duration::from_secs_f64(args.drain),
        channels,
        token: Some(token),
        publish: None,
        ping_rate: (args.ping_secs > 0.0).then(|| connections as f64 / args.ping_secs),
        cpus: args.client_cpus.clone(),
        sources: source_addresses(),
        interval: Duration::from_secs(1),
        read_buffer: args.client_read_buffer,
    }
}

fn per_conn(after: u64, before: u64, n: usize) -> f64 {
    (after as f64 - before as f64) / n.max(1) as f64
}

fn measure(args: &Args, addr: SocketAddr, path: &str, pid: Option<u32>) -> anyhow::Result<Rows> {
    match args.scenario {
        Scenario::Idle => idle::measure_idle(args, addr, path, pid),
        Scenario::Fanout | Scenario::FanoutMany => fanout::measure_fanout(args, addr, path, pid),
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

/// Parses `ws://HOST:PORT/PATH`, `http://HOST:PORT` or `HOST:PORT` into (address, path);
/// the path defaults to `/ws`. Only loopback targets: the client spreads its connections over
/// 127.0.0.2–254.
fn parse_target(url: &str) -> anyhow::Result<(SocketAddr, String)> {
    let rest = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    let (hostport, path) = match rest.find('/') {
        Some(p) => (&rest[..p], &rest[p..]),
        None => (rest, "/ws"),
    };
    let (host, port) = hostport
        .rsplit_once(':')
        .with_context(|| format!("{url}: no port"))?;
    let ip: IpAddr = if host == "localhost" {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse().with_context(|| format!("{url}: host"))?
    };
    if !ip.is_loopback() {
        bail!("{url}: only 127.0.0.0/8 targets are allowed");
    }
    let path = if path.is_empty() || path == "/" {
        "/ws"
    } else {
        path
    };
    Ok((SocketAddr::new(ip, port.parse()?), path.to_owned()))
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

/// Runs the benchmark `args` describes and prints its table.
pub fn run(mut args: Args) -> anyhow::Result<()> {
    args.sizes.sort_unstable();
    args.sizes.dedup();
    let most = match args.scenario {
        Scenario::Idle => args.sizes.last().copied().unwrap_or(0),
        _ => args.subscribers,
    };
    sdsim_loadtest::run::raise_fd_limit();
    let (nofile, _) = fd_limits();
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
    crate::pin_current(args.client_cpus[0]);

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
            "# server pinned to CPU {}; client ({} load-generator thread(s), publishers included) on CPU(s) {}; connect rate {}/s; medians of {} runs",
            args.server_cpu,
            args.client_cpus.len(),
            client_cpus.join(","),
            args.connect_rate,
            args.runs
        );
        println!("# sdsim: 1 shard, dev-open auth, rate limit and access log off; peer: axum 0.8 ws (tokio-tungstenite), 1 tokio worker, broadcast per channel");
    }
    if args.scenario != Scenario::Idle {
        println!("# client: the load generator's WebSocket engine (sdsim_loadtest::ws), events published in open loop; latency from each event's intended send time to its arrival");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let (a, p) = parse_target("ws://127.0.0.1:8101/ws").unwrap();
        assert_eq!(a, "127.0.0.1:8101".parse().unwrap());
        assert_eq!(p, "/ws");
        assert_eq!(parse_target("127.0.0.1:9").unwrap().1, "/ws");
        assert_eq!(parse_target("http://localhost:9/").unwrap().1, "/ws");
        assert!(parse_target("ws://10.0.0.1:80/ws").is_err());
    }

    #[test]
    fn sources_stay_in_loopback_and_off_the_servers_address() {
        let sources = source_addresses();
        assert_eq!(sources.len(), 253);
        assert!(sources
            .iter()
            .all(|ip| ip.is_loopback() && *ip != Ipv4Addr::LOCALHOST));
    }
}
