//! `bench-bridge`: events carried between two sdsim instances by the Redis bridge, end to end.
//!
//! Setups, alternated at each rate, `--runs` times (medians reported), each on a fresh
//! `redis-server` (no persistence):
//! - `sdsim`: instance A and instance B (`--sdsim`, 1 shard each, every role, their own ports
//!   and SQLite files) on one redis-server. The load generator (`sdsim_loadtest::ws`, in this
//!   process) publishes with `POST /api/publish` on A over `--publishers` keep-alive
//!   connections, in open loop at the rate, rotating over `--channels` channels; its
//!   WebSocket subscribers (`--subscribers`, spread over the channels) are on B. Each event
//!   carries its intended send time: latency is publish → receive on B's socket.
//! - `baseline`: the same with `--baseline` (sdsim of 3cf8dbf50: one `PUBLISH` per round trip).
//! - `inject`: B alone, fed by the bare publisher below on the bridge's channels (tagged as
//!   another instance): what B's subscriber side and fan-out sustain without A's HTTP work.
//! - `bare`: the limit. A bare publisher (a thread writing pipelined `PUBLISH` batches of up to
//!   512, one batch in flight, open loop) and a bare subscriber (a thread reading the
//!   `pmessage` frames of `PSUBSCRIBE sdsim:bus:*` and stamping each), no sdsim.
//!
//! Placement on 2 CPUs: every server (A, B, redis-server) and, in `bare` and `inject`, the bare
//! publisher and subscriber threads on `--server-cpu`; the load generator on `--client-cpu`.
//! Reported per setup: deliveries/s, publish → receive p50/p99/p99.9/max, events missing, seq
//! gaps and reorders, and CPU µs per event of A, B and redis-server (process CPU over the run,
//! drain included) — the ranking figure on a shared machine.
//!
//! `cargo build --release -p sdsim-server -p sdsim-bench && target/release/bench-bridge`

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use mimalloc::MiMalloc;
use sdsim_bench::proc_sample::{cpu_seconds, load_average};
use sdsim_bench::process::{free_port, pinned, stop, wait_ready};
use sdsim_bench::{machine_line, median, pin_current, thread_cpu, write_report};
use sdsim_loadtest::ws::{run_ws_observed, Op, Publish, WsControl, WsEvent, WsLoad};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum Setup {
    Sdsim,
    Baseline,
    Inject,
    Bare,
}

/// The command line of `bench-bridge`.
#[derive(Parser)]
struct Args {
    /// Setups (default: sdsim, baseline if --baseline is given, inject, bare).
    #[arg(long, value_enum, value_delimiter = ',')]
    setups: Vec<Setup>,
    /// Events per second, each rate measured for every setup.
    #[arg(long, value_delimiter = ',', default_value = "10000,25000,50000")]
    rates: Vec<f64>,
    /// Runs per setup and rate (alternating); medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Publishing seconds per run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Longest wait for late deliveries after publishing, seconds.
    #[arg(long, default_value_t = 10.0)]
    drain: f64,
    /// Channels `simulation:data:{k}`; event `n` goes to channel `n % channels`.
    #[arg(long, default_value_t = 50)]
    channels: usize,
    /// WebSocket subscribers on B, connection `i` on channel `i % channels`.
    #[arg(long, default_value_t = 50)]
    subscribers: usize,
    /// Keep-alive connections publishing to A.
    #[arg(long, default_value_t = 16)]
    publishers: usize,
    /// Size of each event's data object, bytes.
    #[arg(long, default_value_t = 128)]
    size: usize,
    /// The sdsim binary.
    #[arg(long, default_value = "target/release/sdsim")]
    sdsim: String,
    /// sdsim built at 3cf8dbf50 (the bridge awaiting one PUBLISH per round trip).
    #[arg(long)]
    baseline: Option<String>,
    /// The redis-server binary.
    #[arg(long, default_value = "redis-server")]
    redis_server: String,
    /// CPU of the servers and of the bare publisher and subscriber.
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
    /// CPU of the load generator.
    #[arg(long, default_value_t = 1)]
    client_cpu: usize,
    /// Where the table goes (default `bench/results/<stamp>-bridge.md`).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

/// One measured value per metric, in table order.
type Rows = Vec<(&'static str, f64)>;

/// ns since the UNIX epoch, the clock the load generator stamps events with.
fn epoch_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// CPU seconds of `pid`'s Redis bridge thread (`sdsim-redis`), from its schedstat (ns).
fn bridge_thread_cpu(pid: u32) -> Option<f64> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let dir = task.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim_end() == "sdsim-redis" {
            let stat = std::fs::read_to_string(dir.join("schedstat")).ok()?;
            let ns: f64 = stat.split_whitespace().next()?.parse().ok()?;
            return Some(ns / 1e9);
        }
    }
    None
}

fn channel(k: u64, channels: usize) -> String {
    format!("simulation:data:{}", k % channels as u64)
}

struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start(args: &Args) -> anyhow::Result<Redis> {
        let port = free_port()?;
        let mut child = pinned(&args.redis_server, args.server_cpu)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .spawn()
            .context("starting redis-server")?;
        wait_ready(port, &mut child)?;
        Ok(Redis { child, port })
    }
}

/// One sdsim instance on its own ports, database and instance id.
struct Instance {
    child: Child,
    port: u16,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Instance {
    fn start(program: &str, args: &Args, redis: &Redis, id: &str) -> anyhow::Result<Instance> {
        let dir = std::env::temp_dir().join(format!("bench-bridge-{}-{id}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let port = free_port()?;
        let mut cmd = pinned(program, args.server_cpu);
        cmd.arg("serve");
        let mut sets = vec![
            "runtime.shards=1".to_owned(),
            format!("runtime.cpus=[{}]", args.server_cpu),
            format!("gateway.listen=127.0.0.1:{port}"),
            format!("storage.url=sqlite://{}/sdsim.db", dir.display()),
            format!("redis.url=redis://127.0.0.1:{}", redis.port),
            format!("instance.id=bench-{id}"),
            "ratelimit.enabled=false".to_owned(),
            "log.access=false".to_owned(),
            "auth.dev_open=true".to_owned(),
            "websocket.max_connections_per_ip=0".to_owned(),
        ];
        for key in ["auth", "project", "simulation"] {
            for listener in ["grpc_listen", "http_listen"] {
                sets.push(format!("{key}.{listener}=127.0.0.1:{}", free_port()?));
            }
        }
        for set in sets {
            cmd.arg("--set").arg(set);
        }
        let mut child = cmd.spawn().with_context(|| format!("starting {program}"))?;
        wait_ready(port, &mut child)?;
        let instance = Instance {
            child,
            port,
            _dir: TempDir(dir),
        };
        instance.wait_redis_up()?;
        Ok(instance)
    }

    fn wait_redis_up(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        let url = format!("http://127.0.0.1:{}/health/redis", self.port);
        while Instant::now() < deadline {
            if let Ok(resp) = ureq::get(&url).call() {
                if resp.status() == 200 {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("instance on port {} never reached Redis", self.port)
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }
}

/// The bare publisher: open loop at `rate` for `duration`, event `n` stamped with its intended
/// time, written in pipelined batches of up to 512 with one batch in flight (as the bridge).
/// Returns events published and the thread's CPU seconds.
fn bare_publisher(
    port: u16,
    cpu: usize,
    rate: f64,
    duration: f64,
    channels: usize,
    size: usize,
) -> std::thread::JoinHandle<anyhow::Result<(u64, f64)>> {
    std::thread::spawn(move || {
        pin_current(cpu);
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_nodelay(true)?;
        let total = (rate * duration) as u64;
        let (start, start_ns) = (Instant::now(), epoch_ns());
        let cpu0 = thread_cpu();
        let pad = "x".repeat(size.saturating_sub(40));
        let (mut sent, mut batch, mut replies) = (0u64, Vec::new(), vec![0u8; 64 * 1024]);
        while sent < total {
            let due = ((start.elapsed().as_secs_f64() * rate) as u64).min(total);
            if due <= sent {
                std::thread::sleep(Duration::from_micros(50));
                continue;
            }
            batch.clear();
            let n = (due - sent).min(512);
            for k in sent..sent + n {
                let t = start_ns + (k as f64 * 1e9 / rate) as u64;
                let name = format!("sdsim:bus:{}", channel(k, channels));
                let payload = format!("bench-bare\n{{\"t\":{t},\"k\":{k},\"pad\":\"{pad}\"}}");
                write!(
                    batch,
                    "*3\r\n$7\r\nPUBLISH\r\n${}\r\n{name}\r\n${}\r\n{payload}\r\n",
                    name.len(),
                    payload.len()
                )?;
            }
            s.write_all(&batch)?;
            // Each reply is `:N\r\n`: count line ends.
            let mut lines = 0;
            while lines < n {
                let got = s.read(&mut replies)?;
                if got == 0 {
                    bail!("redis closed the publisher");
                }
                lines += replies[..got].iter().filter(|&&b| b == b'\n').count() as u64;
            }
            sent += n;
        }
        Ok((sent, (thread_cpu() - cpu0).as_secs_f64()))
    })
}

/// What the bare subscriber saw.
struct BareSeen {
    histogram: Histogram<u64>,
    received: u64,
    gaps: u64,
    reorders: u64,
    cpu: f64,
    last_at: Instant,
}

/// The bare subscriber: reads `pmessage` frames, stamps each, checks `k` per channel.
fn bare_subscriber(
    port: u16,
    cpu: usize,
    channels: usize,
    expected: u64,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<BareSeen>>> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.write_all(b"*2\r\n$10\r\nPSUBSCRIBE\r\n$11\r\nsdsim:bus:*\r\n")?;
    let mut confirm = [0u8; 48];
    s.read_exact(&mut confirm[..43])?; // *3 $10 psubscribe $11 sdsim:bus:* :1
    s.set_read_timeout(Some(Duration::from_millis(100)))?;
    Ok(std::thread::spawn(move || {
        pin_current(cpu);
        let cpu0 = thread_cpu();
        let mut seen = BareSeen {
            histogram: Histogram::new(3)?,
            received: 0,
            gaps: 0,
            reorders: 0,
            cpu: 0.0,
            last_at: Instant::now(),
        };
        let mut next = vec![None::<u64>; channels];
        let (mut buf, mut len) = (vec![0u8; 1 << 20], 0usize);
        while seen.received < expected && !stop.load(Ordering::Relaxed) {
            let got = match s.read(&mut buf[len..]) {
                Ok(0) => bail!("redis closed the subscriber"),
                Ok(got) => got,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                Err(e) => return Err(e.into()),
            };
            len += got;
            let now = epoch_ns();
            let mut at = 0;
            while let Some((t, k, used)) = bare_frame(&buf[at..len]) {
                at += used;
                seen.received += 1;
                seen.histogram
                    .record((now.saturating_sub(t) / 1000).max(1))?;
                let c = (k % channels as u64) as usize;
                match next[c] {
                    Some(want) if k < want => seen.reorders += 1,
                    Some(want) => seen.gaps += (k - want) / channels as u64,
                    None => {}
                }
                next[c] = Some(k + channels as u64);
            }
            buf.copy_within(at..len, 0);
            len -= at;
            seen.last_at = Instant::now();
        }
        seen.cpu = (thread_cpu() - cpu0).as_secs_f64();
        Ok(seen)
    }))
}

/// One complete `pmessage` frame at the start of `buf`: its `t`, `k` and length.
fn bare_frame(buf: &[u8]) -> Option<(u64, u64, usize)> {
    // *4 \r\n then four bulk strings; the last one is the payload.
    let mut at = buf.iter().position(|&b| b == b'\n')? + 1;
    let mut payload = &buf[0..0];
    for _ in 0..4 {
        let nl = at + buf[at..].iter().position(|&b| b == b'\n')?;
        let len: usize = std::str::from_utf8(&buf[at + 1..nl - 1])
            .ok()?
            .parse()
            .ok()?;
        let start = nl + 1;
        if buf.len() < start + len + 2 {
            return None;
        }
        payload = &buf[start..start + len];
        at = start + len + 2;
    }
    Some((
        number_after(payload, b"\"t\":")?,
        number_after(payload, b"\"k\":")?,
        at,
    ))
}

fn number_after(text: &[u8], key: &[u8]) -> Option<u64> {
    let from = text.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = text[from..].iter().take_while(|b| b.is_ascii_digit());
    Some(digits.fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

fn bare(args: &Args, rate: f64) -> anyhow::Result<Rows> {
    let redis = Redis::start(args)?;
    let total = (rate * args.duration) as u64;
    let stop_flag = Arc::new(AtomicBool::new(false));
    let sub = bare_subscriber(
        redis.port,
        args.server_cpu,
        args.channels,
        total,
        Arc::clone(&stop_flag),
    )?;
    let redis_cpu0 = cpu_seconds(redis.child.id()).unwrap_or(f64::NAN);
    let started = Instant::now();
    let publisher = bare_publisher(
        redis.port,
        args.server_cpu,
        rate,
        args.duration,
        args.channels,
        args.size,
    );
    let (published, publisher_cpu) = publisher.join().expect("publisher panicked")?;
    let deadline = Instant::now() + Duration::from_secs_f64(args.drain);
    while !sub.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop_flag.store(true, Ordering::Relaxed);
    let seen = sub.join().expect("subscriber panicked")?;
    let redis_cpu = cpu_seconds(redis.child.id()).unwrap_or(f64::NAN) - redis_cpu0;
    stop(redis.child);
    let window = seen.last_at.duration_since(started).as_secs_f64();
    let per = |cpu: f64| cpu * 1e6 / seen.received.max(1) as f64;
    let h = &seen.histogram;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
    Ok(vec![
        (
            "deliveries/s",
            seen.received as f64 / window.max(args.duration),
        ),
        ("latency p50 ms", ms(0.5)),
        ("latency p99 ms", ms(0.99)),
        ("latency p99.9 ms", ms(0.999)),
        ("latency max ms", h.max() as f64 / 1e3),
        ("missing", published as f64 - seen.received as f64),
        ("seq gaps", seen.gaps as f64),
        ("out of order", seen.reorders as f64),
        ("A (publisher) CPU µs/event", per(publisher_cpu)),
        ("B (subscriber) CPU µs/event", per(seen.cpu)),
        ("redis-server CPU µs/event", per(redis_cpu)),
        (
            "all servers CPU µs/event",
            per(publisher_cpu + seen.cpu + redis_cpu),
        ),
        ("A's bridge thread CPU µs/event", per(publisher_cpu)),
        ("B's bridge thread CPU µs/event", per(seen.cpu)),
    ])
}

/// The sdsim setups: B holds the subscribers; A (or the bare publisher) publishes.
fn through_sdsim(args: &Args, setup: Setup, rate: f64) -> anyhow::Result<Rows> {
    let redis = Redis::start(args)?;
    let program = match setup {
        Setup::Baseline => args.baseline.as_deref().context("--baseline")?,
        _ => args.sdsim.as_str(),
    };
    let b = Instance::start(program, args, &redis, "b")?;
    let a = match setup {
        Setup::Inject => None,
        _ => Some(Instance::start(program, args, &redis, "a")?),
    };
    let channels: Vec<String> = (0..args.channels as u64)
        .map(|k| channel(k, args.channels))
        .collect();
    let load = WsLoad {
        addr: b.addr(),
        host: b.addr().to_string(),
        path: "/ws".into(),
        connections: args.subscribers,
        connect_rate: 2000.0,
        connect_timeout: Duration::from_secs(30),
        warmup: Duration::from_secs(1),
        duration: Duration::from_secs_f64(args.duration),
        drain: Duration::from_secs_f64(args.drain),
        channels,
        token: Some("bench{i}".into()),
        publish: a.as_ref().map(|a| Publish {
            addr: a.addr(),
            host: a.addr().to_string(),
            path: "/api/publish".into(),
            token: Some("admin".into()),
            rate,
            connections: args.publishers,
            data_size: Some(args.size),
        }),
        ping_rate: None,
        cpus: vec![args.client_cpu],
        sources: Vec::new(),
        interval: Duration::from_secs(1),
        read_buffer: sdsim_loadtest::ws::DEFAULT_READ_BUFFER,
    };
    let pids = [
        a.as_ref().map(|a| a.child.id()),
        Some(b.child.id()),
        Some(redis.child.id()),
    ];
    let cpu_now = || {
        let [a, b, redis] = pids.map(|p| p.and_then(cpu_seconds).unwrap_or(0.0));
        let bridge = |p: Option<u32>| p.and_then(bridge_thread_cpu).unwrap_or(0.0);
        [a, b, redis, bridge(pids[0]), bridge(pids[1])]
    };
    let control = WsControl::default();
    let (mut cpu_start, mut cpu_end) = ([0.0; 5], [0.0; 5]);
    let mut injector = None;
    let mut hold_start = None;
    let report = run_ws_observed(&load, &control, |event| match event {
        WsEvent::HoldStarted { at, .. } => {
            hold_start = Some(at);
            cpu_start = cpu_now();
            if setup == Setup::Inject {
                injector = Some(bare_publisher(
                    redis.port,
                    args.server_cpu,
                    rate,
                    args.duration,
                    args.channels,
                    args.size,
                ));
            }
        }
        WsEvent::Stopping { .. } => cpu_end = cpu_now(),
        _ => {}
    })?;
    let published = match injector {
        Some(handle) => handle.join().expect("injector panicked")?.0 as f64,
        None => report.published.iter().sum::<u64>() as f64,
    };
    let errors = report.errors_by_kind();
    if !errors.is_empty() {
        eprintln!("  {setup:?} errors: {errors:?}");
    }
    let subs_per_channel = args.subscribers as f64 / args.channels as f64;
    let deliver = report.report(Op::Deliver);
    let delivered = deliver.counters.completed as f64;
    let window = report
        .tally
        .last_delivery
        .zip(hold_start)
        .map_or(0.0, |(last, start)| {
            last.saturating_duration_since(start).as_secs_f64()
        })
        .max(args.duration);
    let p = deliver.percentiles();
    let events = delivered / subs_per_channel;
    let per = |i: usize| (cpu_end[i] - cpu_start[i]) * 1e6 / events.max(1.0);
    let rows = vec![
        ("deliveries/s", delivered / window),
        ("latency p50 ms", p.p50),
        ("latency p99 ms", p.p99),
        ("latency p99.9 ms", p.p999),
        ("latency max ms", p.max),
        ("missing", published * subs_per_channel - delivered),
        ("seq gaps", report.tally.seq_gaps as f64),
        ("out of order", report.tally.seq_out_of_order as f64),
        ("A (publisher) CPU µs/event", per(0)),
        ("B (subscriber) CPU µs/event", per(1)),
        ("redis-server CPU µs/event", per(2)),
        ("all servers CPU µs/event", per(0) + per(1) + per(2)),
        ("A's bridge thread CPU µs/event", per(3)),
        ("B's bridge thread CPU µs/event", per(4)),
    ];
    if let Some(a) = a {
        stop(a.child);
    }
    stop(b.child);
    stop(redis.child);
    Ok(rows)
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.setups.is_empty() {
        args.setups = vec![Setup::Sdsim];
        if args.baseline.is_some() {
            args.setups.push(Setup::Baseline);
        }
        args.setups.extend([Setup::Inject, Setup::Bare]);
    }
    let load_before = load_average();
    let mut out = format!(
        "# Redis bridge, end to end\n\n{}; servers on CPU {}, load generator on CPU {}; \
         {} channels, {} subscribers on B, {} publishers to A, {}-byte events, {} s per run, \
         medians of {} alternated runs; load average {load_before:.2} before",
        machine_line(),
        args.server_cpu,
        args.client_cpu,
        args.channels,
        args.subscribers,
        args.publishers,
        args.size,
        args.duration,
        args.runs,
    );
    for &rate in &args.rates {
        let mut results: Vec<Vec<Rows>> = vec![Vec::new(); args.setups.len()];
        for run in 0..args.runs {
            for (i, &setup) in args.setups.iter().enumerate() {
                eprintln!("rate {rate}/s, run {}, {setup:?}", run + 1);
                let rows = match setup {
                    Setup::Bare => bare(&args, rate),
                    _ => through_sdsim(&args, setup, rate),
                };
                match rows {
                    Ok(rows) => {
                        eprintln!("  {rows:?}");
                        results[i].push(rows);
                    }
                    Err(e) => eprintln!("  {setup:?} failed: {e:#}"),
                }
            }
        }
        out.push_str(&table(&args, rate, &results));
        // Written after each rate too, so a run cut short keeps what it measured.
        if let Some(path) = &args.out {
            std::fs::write(path, &out)?;
        }
    }
    out.push_str(&format!("\nload average {:.2} after\n", load_average()));
    write_report(args.out.as_deref(), "bridge", &out)?;
    Ok(())
}

fn table(args: &Args, rate: f64, results: &[Vec<Rows>]) -> String {
    let mut t = format!("\n\n## {rate} events/s\n\n| |");
    for setup in &args.setups {
        t.push_str(&format!(" {setup:?} |"));
    }
    t.push_str(" sdsim / baseline | sdsim / bare |\n|---|");
    t.push_str(&"---|".repeat(args.setups.len() + 2));
    t.push('\n');
    let Some(names) = results.iter().find_map(|r| r.first()) else {
        return t;
    };
    let col = |s: Setup| args.setups.iter().position(|&x| x == s);
    for (row, (name, _)) in names.iter().enumerate() {
        let medians: Vec<f64> = results
            .iter()
            .map(|runs| {
                let values = runs.iter().filter_map(|r| r.get(row).map(|v| v.1));
                median(values.collect())
            })
            .collect();
        t.push_str(&format!("| {name} |"));
        for m in &medians {
            t.push_str(&format!(" {m:.3} |"));
        }
        let ratio = |other: Option<usize>| match (col(Setup::Sdsim), other) {
            (Some(s), Some(o)) if medians[o] != 0.0 => {
                format!(" {:.2}× |", medians[s] / medians[o])
            }
            _ => " |".into(),
        };
        t.push_str(&ratio(col(Setup::Baseline)));
        t.push_str(&ratio(col(Setup::Bare)));
        t.push('\n');
    }
    t
}
