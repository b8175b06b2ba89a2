//! Mesh benchmark, two sections (`--sections`):
//! - `mesh`: round-trip latency of `submit_to` and one-way messages/s between two shards pinned
//!   to two CPUs, against `std::sync::mpsc` between two pinned threads in the same run;
//! - `connect`: how long a new internal gRPC connection takes to be ready (seed 004 asks for
//!   under 500 ms): sdsim's client (`Client::connect_now`) against tonic's
//!   `Endpoint::connect()` (the peer) and a bare TCP connect + rustls handshake + h2 handshake
//!   (the machine's limit), to the same sdsim gRPC server, plaintext and TLS, in the same run.
//!
//! `cargo run --release -p sdsim-bench --bin bench-mesh -- --runs 3`

use clap::Parser;
use hdrhistogram::Histogram;
use mimalloc::MiMalloc;
use sdsim_bench::{machine_line, median, pin_current};
use sdsim_core::config::DriverKind;
use sdsim_core::runtime::{Runtime, RuntimeSpec, Shard};
use sdsim_core::shard::ShardId;
use sdsim_core::stall::StallStats;
use std::cell::Cell;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

#[derive(Parser)]
struct Args {
    /// The two CPUs.
    #[arg(long, default_value = "0,1")]
    cpus: String,
    /// Round trips measured per run.
    #[arg(long, default_value_t = 200_000)]
    round_trips: usize,
    /// One-way messages per run.
    #[arg(long, default_value_t = 5_000_000)]
    messages: usize,
    /// Runs (medians are reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Sections to run: `mesh` (cross-shard rings), `connect` (new connection ready).
    #[arg(long, default_value = "mesh,connect", value_delimiter = ',')]
    sections: Vec<String>,
    /// New connections each client opens one after the other, per TLS mode and run.
    #[arg(long, default_value_t = 200)]
    connects: usize,
    /// Unmeasured connections before those (first handshakes, caches).
    #[arg(long, default_value_t = 20)]
    connect_warmup: usize,
}

#[derive(Debug, Clone, Copy)]
struct Figures {
    p50_ns: u64,
    p99_ns: u64,
    p999_ns: u64,
    max_ns: u64,
    msgs_per_s: f64,
}

thread_local! {
    static RECEIVED: Cell<usize> = const { Cell::new(0) };
}

fn mesh_run(cpus: [usize; 2], round_trips: usize, messages: usize) -> Figures {
    let out = Arc::new(Mutex::new(None));
    let slot = Arc::clone(&out);
    let spec = RuntimeSpec {
        cpus: cpus.to_vec(),
        driver: DriverKind::Auto,
        stall_threshold: Duration::from_secs(10),
        ring_capacity: 1024,
        pin: true,
        stalls: Arc::new(StallStats::default()),
        private_fd_tables: false,
        blocking_threads: 1,
        blocking_queue: 16,
    };
    let rt = Runtime::start(spec, move |shard: Shard| {
        let slot = Arc::clone(&slot);
        async move {
            if shard.id() != ShardId(0) {
                return;
            }
            let mesh = shard.mesh().clone();
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
            for i in 0..round_trips + 20_000 {
                let t = Instant::now();
                mesh.submit_to(ShardId(1), || 1u64).await.unwrap();
                if i >= 20_000 {
                    let _ = hist.record(t.elapsed().as_nanos() as u64);
                }
            }
            let t = Instant::now();
            for _ in 0..messages {
                mesh.send_to(ShardId(1), || RECEIVED.with(|c| c.set(c.get() + 1)))
                    .await
                    .unwrap();
            }
            let got = mesh
                .submit_to(ShardId(1), || RECEIVED.with(|c| c.replace(0)))
                .await
                .unwrap();
            let secs = t.elapsed().as_secs_f64();
            assert_eq!(got, messages, "every message arrived");
            *slot.lock().unwrap() = Some(Figures {
                p50_ns: hist.value_at_quantile(0.5),
                p99_ns: hist.value_at_quantile(0.99),
                p999_ns: hist.value_at_quantile(0.999),
                max_ns: hist.max(),
                msgs_per_s: messages as f64 / secs,
            });
        }
    })
    .unwrap();
    rt.join().unwrap();
    let figures = out.lock().unwrap().take().unwrap();
    figures
}

fn mpsc_run(cpus: [usize; 2], round_trips: usize, messages: usize) -> Figures {
    let (to_b, from_a) = mpsc::sync_channel::<u64>(1024);
    let (to_a, from_b) = mpsc::sync_channel::<u64>(1024);
    let b = std::thread::spawn(move || {
        pin_current(cpus[1]);
        while let Ok(v) = from_a.recv() {
            if v == u64::MAX {
                break;
            }
            if v == 0 {
                to_a.send(1).unwrap();
            }
        }
        to_a.send(2).unwrap();
    });
    pin_current(cpus[0]);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
    for i in 0..round_trips + 20_000 {
        let t = Instant::now();
        to_b.send(0).unwrap();
        from_b.recv().unwrap();
        if i >= 20_000 {
            let _ = hist.record(t.elapsed().as_nanos() as u64);
        }
    }
    let t = Instant::now();
    for _ in 0..messages {
        to_b.send(7).unwrap();
    }
    to_b.send(u64::MAX).unwrap();
    assert_eq!(from_b.recv().unwrap(), 2);
    let secs = t.elapsed().as_secs_f64();
    b.join().unwrap();
    Figures {
        p50_ns: hist.value_at_quantile(0.5),
        p99_ns: hist.value_at_quantile(0.99),
        p999_ns: hist.value_at_quantile(0.999),
        max_ns: hist.max(),
        msgs_per_s: messages as f64 / secs,
    }
}

fn med(runs: &[Figures], f: impl Fn(&Figures) -> f64) -> f64 {
    median(runs.iter().map(f).collect())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cpus: Vec<usize> = args
        .cpus
        .split(',')
        .map(|c| c.trim().parse().expect("--cpus a,b"))
        .collect();
    let cpus = [cpus[0], cpus[1]];
    println!("# mesh benchmark: {}", machine_line());
    for section in &args.sections {
        match section.as_str() {
            "mesh" => mesh_section(&args, cpus),
            "connect" => connect::section(&args, cpus)?,
            other => anyhow::bail!("--sections: unknown section {other:?} (mesh, connect)"),
        }
    }
    Ok(())
}

fn mesh_section(args: &Args, cpus: [usize; 2]) {
    let mut mesh = Vec::new();
    let mut peer = Vec::new();
    for run in 1..=args.runs {
        mesh.push(mesh_run(cpus, args.round_trips, args.messages));
        peer.push(mpsc_run(cpus, args.round_trips, args.messages));
        eprintln!(
            "run {run}: mesh {:?}\n        mpsc {:?}",
            mesh.last().unwrap(),
            peer.last().unwrap()
        );
    }
    println!("## cross-shard rings");
    println!(
        "# CPUs {:?}; {} round trips, {} one-way messages per run; medians of {} runs",
        cpus, args.round_trips, args.messages, args.runs
    );
    println!("| | round trip p50 | p99 | p99.9 | max | one-way msgs/s |");
    println!("|---|---|---|---|---|---|");
    for (name, runs) in [
        ("sdsim mesh (submit_to / send_to)", &mesh),
        ("std::sync::mpsc (sync_channel)", &peer),
    ] {
        println!(
            "| {name} | {:.1} µs | {:.1} µs | {:.1} µs | {:.1} µs | {:.2} M |",
            med(runs, |f| f.p50_ns as f64) / 1e3,
            med(runs, |f| f.p99_ns as f64) / 1e3,
            med(runs, |f| f.p999_ns as f64) / 1e3,
            med(runs, |f| f.max_ns as f64) / 1e3,
            med(runs, |f| f.msgs_per_s) / 1e6
        );
    }
    println!(
        "| ratio mesh/mpsc | {:.2}× p50 latency | | | | {:.2}× throughput |",
        med(&mesh, |f| f.p50_ns as f64) / med(&peer, |f| f.p50_ns as f64),
        med(&mesh, |f| f.msgs_per_s) / med(&peer, |f| f.msgs_per_s)
    );
}

/// The `connect` section: time from "open a connection" to "a call can be sent on it".
mod connect {
    use super::{median, pin_current, Args};
    use anyhow::{anyhow, Context};
    use bytes::Bytes;
    use hdrhistogram::Histogram;
    use monoio::io::IntoPollIo;
    use sdsim_core::shutdown::Phase;
    use sdsim_net::grpc::client::{Client, Connect};
    use sdsim_net::grpc::server::serve_connection;
    use sdsim_net::grpc::{Services, Settings};
    use sdsim_net::tls::ClientTls;
    use std::net::SocketAddr;
    use std::rc::Rc;
    use std::time::{Duration, Instant};

    /// Seed 004: a new pool connection is ready in under this.
    const BOUND_MS: f64 = 500.0;

    /// Who opens the connections.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Dialer {
        /// sdsim's internal gRPC client, `Client::connect_now` (what a mesh pool does).
        Sdsim,
        /// tonic's `Endpoint::connect()` (hyper's HTTP/2 client) on tokio: the peer.
        Tonic,
        /// `TcpStream::connect`, the rustls handshake, `h2::client::handshake` and the
        /// sender's `ready()`, on tokio, nothing else: the machine's limit.
        Bare,
    }

    const DIALERS: [Dialer; 3] = [Dialer::Sdsim, Dialer::Tonic, Dialer::Bare];

    impl Dialer {
        fn name(self) -> &'static str {
            match self {
                Dialer::Sdsim => "sdsim internal client (`connect_now`)",
                Dialer::Tonic => "peer: tonic `Endpoint::connect()`",
                Dialer::Bare => "limit: TCP (+ rustls) + `h2::client::handshake`",
            }
        }
    }

    /// Percentiles of one client's connects in one run, microseconds.
    #[derive(Debug, Clone, Copy)]
    struct Figures {
        p50_us: u64,
        p99_us: u64,
        p999_us: u64,
        max_us: u64,
    }

    /// The sdsim gRPC server the clients dial, on its own thread pinned to the server CPU
    /// (monoio, `serve_connection` as the sdsim binary serves gRPC), for the process's life.
    struct Server {
        plain: SocketAddr,
        tls: SocketAddr,
        /// The client side of its TLS: trusts its self-signed certificate (IP SAN 127.0.0.1),
        /// ALPN h2. Every dialer uses this same rustls configuration.
        client_tls: ClientTls,
    }

    fn start_server(cpu: usize) -> anyhow::Result<Server> {
        let dir = std::env::temp_dir().join(format!("bench-mesh-connect-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])?;
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, certified.cert.pem())?;
        std::fs::write(&key, certified.key_pair.serialize_pem())?;
        let (cert, key) = (cert.to_string_lossy(), key.to_string_lossy());
        let acceptor = sdsim_net::tls::load_acceptor(&cert, &key, &[b"h2"])?;
        let client_tls = ClientTls::load(&cert, None, None)?;
        // Both are loaded: the files are not needed any more.
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        let (bound, addrs) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("connect-server".into())
            .spawn(move || {
                pin_current(cpu);
                let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                    .enable_timer()
                    .build()
                    .expect("server runtime");
                rt.block_on(async move {
                    let plain = monoio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                    let tls = monoio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                    let _ = bound.send((
                        plain.local_addr().expect("a bound listener has an address"),
                        tls.local_addr().expect("a bound listener has an address"),
                    ));
                    let (_keep, phase) = tokio::sync::watch::channel(Phase::Accepting);
                    let services = Rc::new(Services::new());
                    let settings = Rc::new(Settings::default());
                    let (services2, settings2, phase2) =
                        (Rc::clone(&services), Rc::clone(&settings), phase.clone());
                    sdsim_core::runtime::spawn("connect-accept-tls", async move {
                        loop {
                            let Ok((stream, peer)) = tls.accept().await else {
                                continue;
                            };
                            let _ = stream.set_nodelay(true);
                            let (acceptor, services, settings, phase) = (
                                acceptor.clone(),
                                Rc::clone(&services2),
                                Rc::clone(&settings2),
                                phase2.clone(),
                            );
                            sdsim_core::runtime::spawn("connect-tls-connection", async move {
                                let Ok(io) = stream.into_poll_io() else {
                                    return;
                                };
                                if let Ok(io) = acceptor.accept(io).await {
                                    serve_connection(io, peer, services, settings, phase).await;
                                }
                            });
                        }
                    });
                    loop {
                        let Ok((stream, peer)) = plain.accept().await else {
                            continue;
                        };
                        let _ = stream.set_nodelay(true);
                        let Ok(io) = stream.into_poll_io() else {
                            continue;
                        };
                        sdsim_core::runtime::spawn(
                            "connect-connection",
                            serve_connection(
                                io,
                                peer,
                                Rc::clone(&services),
                                Rc::clone(&settings),
                                phase.clone(),
                            ),
                        );
                    }
                });
            })?;
        let (plain, tls) = addrs.recv().context("the connect server did not start")?;
        Ok(Server {
            plain,
            tls,
            client_tls,
        })
    }

    fn histogram() -> Histogram<u64> {
        Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
    }

    fn figures(h: &Histogram<u64>) -> Figures {
        Figures {
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }

    /// Opens `warmup + n` connections to `addr` one after the other, each closed before the
    /// next, on a thread pinned to `cpu`; the last `n` connect times.
    fn measure(
        dialer: Dialer,
        addr: SocketAddr,
        tls: Option<ClientTls>,
        cpu: usize,
        warmup: usize,
        n: usize,
    ) -> anyhow::Result<Figures> {
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    pin_current(cpu);
                    let mut h = histogram();
                    let mut note = |i: usize, took: Duration| {
                        if i >= warmup {
                            let _ = h.record(took.as_micros().max(1) as u64);
                        }
                    };
                    match dialer {
                        Dialer::Sdsim => {
                            let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                                .enable_timer()
                                .build()?;
                            rt.block_on(async {
                                for i in 0..warmup + n {
                                    let client = Client::with_connect(
                                        addr,
                                        Connect {
                                            tls: tls.clone(),
                                            keepalive: None,
                                            connect_timeout: Duration::from_secs(10),
                                        },
                                    );
                                    let started = Instant::now();
                                    client.connect_now().await?;
                                    note(i, started.elapsed());
                                }
                                anyhow::Ok(())
                            })?;
                        }
                        Dialer::Tonic | Dialer::Bare => {
                            let rt = tokio::runtime::Builder::new_current_thread()
                                .enable_all()
                                .build()?;
                            rt.block_on(async {
                                for i in 0..warmup + n {
                                    let started = Instant::now();
                                    if dialer == Dialer::Tonic {
                                        let channel = tonic_connect(addr, tls.as_ref()).await?;
                                        note(i, started.elapsed());
                                        drop(channel);
                                    } else {
                                        let sender = bare_connect(addr, tls.as_ref()).await?;
                                        note(i, started.elapsed());
                                        drop(sender);
                                    }
                                }
                                anyhow::Ok(())
                            })?;
                        }
                    }
                    Ok(figures(&h))
                })
                .join()
                .map_err(|_| anyhow!("{dialer:?} client thread panicked"))?
        })
    }

    async fn tonic_connect(
        addr: SocketAddr,
        tls: Option<&ClientTls>,
    ) -> anyhow::Result<tonic::transport::Channel> {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?;
        let Some(tls) = tls else {
            return Ok(endpoint.connect().await?);
        };
        // tonic's own TLS is a cargo feature the workspace does not build; its custom
        // connector runs the same rustls configuration as the other two dialers.
        let (connector, name) = (tls.connector().clone(), tls.server_name(addr.ip()));
        let dial = tower::service_fn(move |_: tonic::codegen::http::Uri| {
            let (connector, name) = (connector.clone(), name.clone());
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                let stream = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        });
        Ok(endpoint.connect_with_connector(dial).await?)
    }

    async fn bare_connect(
        addr: SocketAddr,
        tls: Option<&ClientTls>,
    ) -> anyhow::Result<h2::client::SendRequest<Bytes>> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        match tls {
            None => h2_ready(tcp).await,
            Some(tls) => {
                let name = tls.server_name(addr.ip());
                h2_ready(tls.connector().connect(name, tcp).await?).await
            }
        }
    }

    async fn h2_ready<IO>(io: IO) -> anyhow::Result<h2::client::SendRequest<Bytes>>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = h2::client::handshake(io).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender.ready().await?)
    }

    pub(super) fn section(args: &Args, cpus: [usize; 2]) -> anyhow::Result<()> {
        let server = start_server(cpus[0])?;
        let modes = [
            ("plaintext", server.plain, None),
            ("TLS", server.tls, Some(server.client_tls.clone())),
        ];
        // runs[mode][dialer]: one Figures per run.
        let mut runs = vec![vec![Vec::new(); DIALERS.len()]; modes.len()];
        for run in 1..=args.runs {
            for (m, (mode, addr, tls)) in modes.iter().enumerate() {
                for (d, dialer) in DIALERS.iter().enumerate() {
                    let f = measure(
                        *dialer,
                        *addr,
                        tls.clone(),
                        cpus[1],
                        args.connect_warmup,
                        args.connects,
                    )?;
                    eprintln!("run {run}: {mode} {dialer:?} {f:?}");
                    runs[m][d].push(f);
                }
            }
        }
        println!("## new connection ready");
        println!(
            "# sdsim gRPC server (monoio, `serve_connection`; TLS: self-signed rcgen certificate, \
             rustls defaults) on CPU {}, every client on CPU {}; per run, client and mode: {} connects \
             one after the other (each closed before the next) after {} unmeasured; ready = a \
             call can be sent (TCP connected, TLS done, HTTP/2 preface and SETTINGS written; \
             RFC 9113 lets a client send before the server's SETTINGS arrive); medians of {} runs",
            cpus[0], cpus[1], args.connects, args.connect_warmup, args.runs
        );
        println!("# seed 004 bound: a new connection ready in < {BOUND_MS} ms");
        println!("| client | mode | p50 | p99 | p99.9 | max | p50 / limit | p99 / limit | max < 500 ms |");
        println!("|---|---|---|---|---|---|---|---|---|");
        let med = |runs: &[Figures], f: fn(&Figures) -> u64| {
            median(runs.iter().map(|x| f(x) as f64).collect())
        };
        for (m, (mode, _, _)) in modes.iter().enumerate() {
            let limit = &runs[m][DIALERS.len() - 1];
            let (limit_p50, limit_p99) = (med(limit, |f| f.p50_us), med(limit, |f| f.p99_us));
            for (d, dialer) in DIALERS.iter().enumerate() {
                let r = &runs[m][d];
                let worst = r.iter().map(|f| f.max_us).max().unwrap_or(0) as f64 / 1e3;
                println!(
                    "| {} | {mode} | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms | {:.2}× | {:.2}× | {} (worst {worst:.3} ms) |",
                    dialer.name(),
                    med(r, |f| f.p50_us) / 1e3,
                    med(r, |f| f.p99_us) / 1e3,
                    med(r, |f| f.p999_us) / 1e3,
                    med(r, |f| f.max_us) / 1e3,
                    med(r, |f| f.p50_us) / limit_p50,
                    med(r, |f| f.p99_us) / limit_p99,
                    if worst < BOUND_MS { "yes" } else { "NO" },
                );
            }
        }
        Ok(())
    }
}
