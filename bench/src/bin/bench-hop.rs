//! `bench-hop`: the cost of the internal hop. `GET /api/projects/{id}` on one process running
//! every role, against the same request on a gateway process (gateway and auth roles) that
//! reaches a project-only process over gRPC; beside them, in the same run, the same two shapes
//! of the peer and of the machine's limit:
//! - peer: `peer-projects` (axum + jsonwebtoken + rusqlite, one process) against its split,
//!   `peer-projects-front` (verifies the token as `peer-projects` does, one shared tonic
//!   `Channel` with sdsim's keepalive) calling `peer-projects-back` (a tonic `ProjectService`
//!   doing the role check and row read), with sdsim's `GetProject` messages;
//! - bare: `bare-answer` (a fixed answer the size of the project JSON) against `bare-hop`'s
//!   front (the same HTTP/1.1 server) asking its back over one bare `h2` connection for that body,
//!   with a request body the size of the gRPC `GetProject` request.
//!
//! All setups alternate (`--runs`, medians), sdsim's on the same database and project, the
//! peers seeded with sdsim's answer and checked to answer the same JSON. Per setup: requests/s,
//! latency p50/p99/p99.9/max (HDR, from each request's intended send time when `--rate` is set),
//! and server CPU per request (every server process of the setup, from its CPU-time clock); then
//! per system the hop's cost (split against one process) and sdsim's hop cost as ratios to the
//! peer's and the bare one's.
//!
//! `cargo run --release -p sdsim-bench --bin bench-hop -- --sdsim target/release/sdsim
//!  --runs 3 --server-cpu 0 --client-cpu 1` (the peers and bare servers from `--bin-dir`,
//! default `target/release`). Nothing is pinned unless `--server-cpu`/`--client-cpu` say so.
//!
//! 2026-12-02 (`bench/results/20261202T103242Z-hop.md`, servers on CPU 0, load on CPU 1, a shared
//! machine at load average 2.5 before and 2.2 after): the hop adds 33.5 µs of server CPU per
//! request to sdsim (×1.78), 37.7 µs to the peer (×1.53) and 15.7 µs to the bare servers; p50
//! +0.483, +0.615 and +0.260 ms. sdsim's hop costs ×0.89 the peer's CPU and ×2.13 the machine's
//! limit.

use anyhow::{bail, ensure, Context};
use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use mimalloc::MiMalloc;
use sdsim_bench::median;
use sdsim_bench::proc_sample::cpu_seconds;
use sdsim_bench::process::{free_port, pinned, stop, wait_ready};
use sdsim_bench::project_proto::GetProjectRequest;
use sdsim_bench::sdsim_process::{
    create_project_from_template, get_json, get_text, register_and_login,
};
use sdsim_loadtest::client::Connection;
use serde_json::Value;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

#[derive(Parser)]
struct Args {
    /// The sdsim binary.
    #[arg(long, default_value = "target/release/sdsim")]
    sdsim: String,
    /// Measured seconds per setup.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Unmeasured warm-up seconds per setup.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Keep-alive client connections, one request in flight on each.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Requests per second over all connections (open loop, latency from the intended send
    /// time); unset: closed loop, as fast as answers come.
    #[arg(long)]
    rate: Option<f64>,
    /// Shards of each server process.
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// `storage.url` every process shares; unset: a SQLite file in a temporary directory.
    #[arg(long)]
    storage: Option<String>,
    /// Pin every server process to this CPU.
    #[arg(long)]
    server_cpu: Option<usize>,
    /// Pin the load generator to this CPU.
    #[arg(long)]
    client_cpu: Option<usize>,
    /// Runs of each setup, alternating; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Also write the median figures as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where the peer and bare servers are (`peer-projects`, `peer-projects-front`,
    /// `peer-projects-back`, `bare-answer`, `bare-hop`).
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
}

const SERVICE_TOKEN: &str = "bench-hop-service-token-0123456789";

/// A server process of one setup, stopped when dropped.
struct Server {
    child: Option<Child>,
    /// Its HTTP listener (`gateway.listen`).
    http: SocketAddr,
    /// Its project role's gRPC listener (sdsim only).
    grpc: Option<SocketAddr>,
}

impl Server {
    fn start(args: &Args, dir: &Path, name: &str, sets: &[String]) -> anyhow::Result<Server> {
        let ports: Vec<u16> = (0..7).map(|_| free_port()).collect::<Result<_, _>>()?;
        let mut cmd = match args.server_cpu {
            Some(cpu) => pinned(&args.sdsim, cpu),
            None => Command::new(&args.sdsim),
        };
        let listeners = [
            "gateway.listen",
            "auth.grpc_listen",
            "auth.http_listen",
            "project.grpc_listen",
            "project.http_listen",
            "simulation.grpc_listen",
            "simulation.http_listen",
        ];
        cmd.arg("serve").current_dir(dir).stdout(Stdio::null());
        let log = dir.join(format!("{name}.log"));
        cmd.stderr(std::fs::File::create(&log)?);
        let fixed = [
            "log.access=false".to_string(),
            "ratelimit.enabled=false".to_string(),
            "shedding.enabled=false".to_string(),
            format!("runtime.shards={}", args.shards),
            format!("instance.id={name}"),
        ];
        let listen = listeners
            .iter()
            .zip(&ports)
            .map(|(key, port)| format!("{key}=127.0.0.1:{port}"));
        for set in fixed.into_iter().chain(sets.iter().cloned()).chain(listen) {
            cmd.arg("--set").arg(set);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", args.sdsim))?;
        let http: SocketAddr = ([127, 0, 0, 1], ports[0]).into();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait()? {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                bail!("{name} exited at start ({status}):\n{text}");
            }
            let ready = ureq::get(&format!("http://{http}/health/ready"))
                .call()
                .is_ok_and(|r| r.status() == 200);
            if ready {
                break;
            }
            if Instant::now() > deadline {
                stop(child);
                bail!("{name} was not ready in 60 s (log: {})", log.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Server {
            child: Some(child),
            http,
            grpc: Some(([127, 0, 0, 1], ports[3]).into()),
        })
    }

    /// A peer or bare server from `--bin-dir`, listening on `port`: ready once it accepts
    /// connections.
    fn spawn(
        args: &Args,
        dir: &Path,
        name: &str,
        program: &str,
        argv: &[String],
        port: u16,
    ) -> anyhow::Result<Server> {
        let path = args.bin_dir.join(program);
        let path = path.to_str().context("--bin-dir is not UTF-8")?;
        let mut cmd = match args.server_cpu {
            Some(cpu) => pinned(path, cpu),
            None => Command::new(path),
        };
        let log = dir.join(format!("{name}.log"));
        cmd.args(argv)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        let mut child = cmd.spawn().with_context(|| format!("starting {path}"))?;
        if let Err(e) = wait_ready(port, &mut child) {
            stop(child);
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            bail!("{name}: {e}; its log:\n{text}");
        }
        Ok(Server {
            child: Some(child),
            http: ([127, 0, 0, 1], port).into(),
            grpc: None,
        })
    }

    fn cpu(&self) -> f64 {
        self.child
            .as_ref()
            .and_then(|c| cpu_seconds(c.id()))
            .unwrap_or(f64::NAN)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop(child);
        }
    }
}

/// The figures of one setup.
struct Figures {
    name: &'static str,
    completed: u64,
    errors: u64,
    seconds: f64,
    latency_ms: [f64; 4],
    cpu_us_per_request: f64,
}

impl Figures {
    fn per_second(&self) -> f64 {
        self.completed as f64 / self.seconds
    }

    /// Each figure's median over `runs` (of one setup); counts are summed.
    fn median(runs: &[Figures]) -> Figures {
        let of = |f: fn(&Figures) -> f64| median(runs.iter().map(f).collect());
        let seconds = runs.iter().map(|f| f.seconds).sum::<f64>() / runs.len() as f64;
        Figures {
            name: runs[0].name,
            completed: (of(|f| f.per_second()) * seconds).round() as u64,
            errors: runs.iter().map(|f| f.errors).sum(),
            seconds,
            latency_ms: [0, 1, 2, 3]
                .map(|i| median(runs.iter().map(|f| f.latency_ms[i]).collect())),
            cpu_us_per_request: of(|f| f.cpu_us_per_request),
        }
    }
}

#[derive(Default)]
struct Tally {
    completed: u64,
    errors: u64,
}

/// Runs the load against `addr` with `request`, measuring `servers`' CPU over the window.
fn measure(
    args: &Args,
    name: &'static str,
    addr: SocketAddr,
    request: Bytes,
    servers: &[&Server],
) -> anyhow::Result<Figures> {
    let (warmup, window) = (
        Duration::from_secs(args.warmup),
        Duration::from_secs(args.duration),
    );
    let start = Instant::now() + Duration::from_millis(100);
    let (connections, rate, client_cpu) = (args.connections, args.rate, args.client_cpu);
    let load = std::thread::spawn(move || -> anyhow::Result<(Histogram<u64>, Tally)> {
        if let Some(cpu) = client_cpu {
            monoio::utils::bind_to_cpu_set(Some(cpu))?;
        }
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()?;
        rt.block_on(async move {
            let histogram = Rc::new(RefCell::new(Histogram::<u64>::new_with_bounds(
                1, 60_000_000, 3,
            )?));
            let tally = Rc::new(RefCell::new(Tally::default()));
            let tasks: Vec<_> = (0..connections)
                .map(|i| {
                    let step = rate.map(|r| Duration::from_secs_f64(connections as f64 / r));
                    let offset =
                        step.map_or(Duration::ZERO, |s| s.mul_f64(i as f64 / connections as f64));
                    let ctx = (Rc::clone(&histogram), Rc::clone(&tally), request.clone());
                    monoio::spawn(one_connection(
                        addr,
                        start + offset,
                        step,
                        warmup,
                        window,
                        start,
                        ctx,
                    ))
                })
                .collect();
            for t in tasks {
                t.await;
            }
            let h = histogram.borrow().clone();
            let t = std::mem::take(&mut *tally.borrow_mut());
            Ok((h, t))
        })
    });
    // The servers' CPU over the measured window only.
    std::thread::sleep((start + warmup).saturating_duration_since(Instant::now()));
    let cpu_from: f64 = servers.iter().map(|s| s.cpu()).sum();
    std::thread::sleep((start + warmup + window).saturating_duration_since(Instant::now()));
    let cpu_to: f64 = servers.iter().map(|s| s.cpu()).sum();
    let (histogram, tally) = load
        .join()
        .map_err(|_| anyhow::anyhow!("the load thread panicked"))??;
    ensure!(tally.completed > 0, "{name}: no request completed");
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1e3;
    Ok(Figures {
        name,
        completed: tally.completed,
        errors: tally.errors,
        seconds: window.as_secs_f64(),
        latency_ms: [ms(0.5), ms(0.99), ms(0.999), histogram.max() as f64 / 1e3],
        cpu_us_per_request: (cpu_to - cpu_from) * 1e6 / tally.completed as f64,
    })
}

type Shared = (Rc<RefCell<Histogram<u64>>>, Rc<RefCell<Tally>>, Bytes);

/// One keep-alive connection: requests back to back (or every `step`), latency from the
/// intended send time, counted when due inside the measured window.
async fn one_connection(
    addr: SocketAddr,
    first: Instant,
    step: Option<Duration>,
    warmup: Duration,
    window: Duration,
    start: Instant,
    (histogram, tally, request): Shared,
) {
    let (measure_from, end) = (start + warmup, start + warmup + window);
    let mut due = first;
    let mut conn: Option<Connection> = None;
    while due < end {
        let now = Instant::now();
        if due > now {
            monoio::time::sleep(due - now).await;
        }
        let sent = if step.is_some() { due } else { Instant::now() };
        if conn.is_none() {
            conn = Connection::connect(addr).await.ok();
        }
        let outcome = match conn.as_mut() {
            Some(c) => c.exchange(request.clone()).await.ok(),
            None => None,
        };
        let measured = sent >= measure_from;
        match outcome {
            Some(x) if x.status == 200 => {
                if measured {
                    let us = sent.elapsed().as_micros().max(1) as u64;
                    let _ = histogram.borrow_mut().record(us.min(60_000_000));
                    tally.borrow_mut().completed += 1;
                }
                if !x.reusable {
                    conn = None;
                }
            }
            _ => {
                if measured {
                    tally.borrow_mut().errors += 1;
                }
                conn = None;
            }
        }
        due = match step {
            Some(s) => due + s,
            None => Instant::now(),
        };
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.runs >= 1, "--runs must be at least 1");
    let dir = std::env::temp_dir().join(format!("sdsim-bench-hop-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let storage = args
        .storage
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.join("hop.db").display()));
    let storage_set = format!("storage.url={storage}");

    // Every role in one process; it also creates the user and the project both setups read.
    let all = Server::start(&args, &dir, "all-roles", std::slice::from_ref(&storage_set))?;
    let token = register_and_login(all.http, &format!("hop{}@example.com", std::process::id()))?;
    let id = create_project_from_template(all.http, &token, "three-tier")?;
    let path = format!("/api/projects/{id}");
    // The gateway (with auth, so it verifies the token itself) reaching a project-only
    // process over gRPC.
    let project = Server::start(
        &args,
        &dir,
        "project-only",
        &[
            storage_set.clone(),
            r#"roles=["project"]"#.into(),
            format!(
                r#"auth.tokens=[{{token="{SERVICE_TOKEN}",user="gateway",roles=["service"]}}]"#
            ),
        ],
    )?;
    let gateway = Server::start(
        &args,
        &dir,
        "gateway",
        &[
            storage_set,
            r#"roles=["gateway","auth"]"#.into(),
            format!("gateway.service_token={SERVICE_TOKEN}"),
            format!(
                "gateway.project_service={}",
                project
                    .grpc
                    .context("the project process has a gRPC listener")?
            ),
        ],
    )?;
    let (status, body) = get_json(&format!("http://{}{path}", gateway.http), &token)?;
    ensure!(
        status == 200,
        "the split setup cannot read the project: {status} {body}"
    );
    // The peers and the bare servers serve the same project to the same token: sdsim's answer
    // is the peers' seed, its size the bare answer's, its owner and id the bare request's.
    let (status, text) = get_text(&format!("http://{}{path}", all.http), Some(&token))?;
    ensure!(
        status == 200,
        "sdsim cannot read the project: {status} {text}"
    );
    let project_json: Value = serde_json::from_str(&text)?;
    let owner = project_json["owner_id"]
        .as_str()
        .context("the project has an owner_id")?;
    // A gRPC message is framed by 5 bytes (compressed flag, length).
    let request_bytes = 5 + prost::Message::encoded_len(&GetProjectRequest {
        user_id: owner.to_string(),
        project_id: id.clone(),
    });
    let answer_bytes = text.len();
    let seed = dir.join("seed.json");
    std::fs::write(&seed, format!("[{text}]"))?;
    let file = |name: &str| dir.join(name).display().to_string();
    let (seed, jwks) = (
        seed.display().to_string(),
        format!("http://{}/.well-known/jwks.json", all.http),
    );
    let cpus: Vec<String> = match args.server_cpu {
        Some(cpu) => vec!["--cpus".into(), cpu.to_string()],
        None => Vec::new(),
    };
    let with_cpus = |mut argv: Vec<String>| {
        argv.extend(cpus.iter().cloned());
        argv
    };
    let ports: Vec<u16> = (0..6).map(|_| free_port()).collect::<Result<_, _>>()?;
    let addr = |port: u16| format!("127.0.0.1:{port}");
    let peer = Server::spawn(
        &args,
        &dir,
        "peer-projects",
        "peer-projects",
        &with_cpus(vec![
            "--listen".into(),
            addr(ports[0]),
            "--jwks".into(),
            jwks.clone(),
            "--db".into(),
            file("peer.db"),
            "--seed".into(),
            seed.clone(),
        ]),
        ports[0],
    )?;
    let peer_back = Server::spawn(
        &args,
        &dir,
        "peer-projects-back",
        "peer-projects-back",
        &with_cpus(vec![
            "--listen".into(),
            addr(ports[1]),
            "--db".into(),
            file("peer-back.db"),
            "--seed".into(),
            seed,
            "--service-token".into(),
            SERVICE_TOKEN.into(),
        ]),
        ports[1],
    )?;
    let peer_front = Server::spawn(
        &args,
        &dir,
        "peer-projects-front",
        "peer-projects-front",
        &with_cpus(vec![
            "--listen".into(),
            addr(ports[2]),
            "--back".into(),
            addr(ports[1]),
            "--jwks".into(),
            jwks,
            "--service-token".into(),
            SERVICE_TOKEN.into(),
        ]),
        ports[2],
    )?;
    let bare = Server::spawn(
        &args,
        &dir,
        "bare-answer",
        "bare-answer",
        &[
            "--listen".into(),
            addr(ports[3]),
            "--status".into(),
            "200".into(),
            "--body-bytes".into(),
            answer_bytes.to_string(),
        ],
        ports[3],
    )?;
    let bare_back = Server::spawn(
        &args,
        &dir,
        "bare-hop-back",
        "bare-hop",
        &[
            "back".into(),
            "--listen".into(),
            addr(ports[4]),
            "--body-bytes".into(),
            answer_bytes.to_string(),
        ],
        ports[4],
    )?;
    let bare_front = Server::spawn(
        &args,
        &dir,
        "bare-hop-front",
        "bare-hop",
        &[
            "front".into(),
            "--listen".into(),
            addr(ports[5]),
            "--back".into(),
            addr(ports[4]),
            "--request-bytes".into(),
            request_bytes.to_string(),
        ],
        ports[5],
    )?;
    // Nothing is measured that does not answer what it stands for: the peers the same JSON
    // (the same project, design and role as sdsim's), the bare servers a body of its size.
    let read = |server: &Server| get_text(&format!("http://{}{path}", server.http), Some(&token));
    let (one, split) = (read(&peer)?, read(&peer_front)?);
    ensure!(one.0 == 200, "peer-projects answered {}: {}", one.0, one.1);
    ensure!(
        split == one,
        "the split peer answered {} {}, the one-process peer {} {}",
        split.0,
        split.1,
        one.0,
        one.1
    );
    let peer_json: Value = serde_json::from_str(&one.1)?;
    for field in ["id", "owner_id", "design", "settings", "version", "role"] {
        ensure!(
            peer_json[field] == project_json[field],
            "the peer's {field} is {}, sdsim's {}",
            peer_json[field],
            project_json[field]
        );
    }
    for server in [&bare, &bare_front] {
        let (status, body) = read(server)?;
        ensure!(
            status == 200 && body.len() == answer_bytes,
            "a bare server answered {status} with {} bytes, not 200 with {answer_bytes}",
            body.len()
        );
    }

    let request = |addr: SocketAddr| {
        sdsim_loadtest::run::build_request(
            "GET",
            &addr.to_string(),
            &path,
            &[format!("Authorization: Bearer {token}")],
            b"",
        )
    };
    // Alternating, so a disturbance of the machine falls on every setup alike; every process
    // stays up throughout (an idle one costs next to nothing). In pairs: one process, then
    // the same answer across a hop.
    let setups: [(&'static str, &Server, Vec<&Server>); 6] = [
        ("sdsim: all roles, one process", &all, vec![&all]),
        (
            "sdsim: gateway -> project over gRPC",
            &gateway,
            vec![&gateway, &project],
        ),
        ("peer: one process", &peer, vec![&peer]),
        (
            "peer: front -> back over gRPC",
            &peer_front,
            vec![&peer_front, &peer_back],
        ),
        ("bare: one process", &bare, vec![&bare]),
        (
            "bare: front -> back over HTTP/2",
            &bare_front,
            vec![&bare_front, &bare_back],
        ),
    ];
    let load_before = load_average();
    let mut runs: Vec<Vec<Figures>> = setups.iter().map(|_| Vec::new()).collect();
    for _ in 0..args.runs {
        for (i, (name, entry, servers)) in setups.iter().enumerate() {
            runs[i].push(measure(
                &args,
                name,
                entry.http,
                request(entry.http),
                servers,
            )?);
        }
    }
    let load_after = load_average();
    drop(setups);
    drop((all, gateway, project, peer, peer_front, peer_back));
    drop((bare, bare_front, bare_back));

    let mode = match args.rate {
        Some(r) => format!("open loop, {r} req/s"),
        None => "closed loop".to_string(),
    };
    println!(
        "GET /api/projects/{{id}}: {} connections, {mode}, {} s measured after {} s warm-up, {} shard(s) per sdsim process, {} run(s) alternating, {}",
        args.connections, args.duration, args.warmup, args.shards, args.runs, sdsim_bench::machine_line()
    );
    println!(
        "project JSON {answer_bytes} bytes (the bare answer's size), GetProject request {request_bytes} bytes (the bare hop's request body); load average (1, 5, 15 min) before {load_before}, after {load_after}"
    );
    let header = format!(
        "{:<44} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>12}",
        "setup", "req/s", "errors", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "CPU us/req"
    );
    println!("{header}");
    let line = |f: &Figures, label: &str| {
        println!(
            "{:<44} {:>9.0} {:>7} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>12.1}",
            label,
            f.per_second(),
            f.errors,
            f.latency_ms[0],
            f.latency_ms[1],
            f.latency_ms[2],
            f.latency_ms[3],
            f.cpu_us_per_request
        );
    };
    for run in 0..args.runs {
        for setup in &runs {
            line(
                &setup[run],
                &format!("{} (run {})", setup[run].name, run + 1),
            );
        }
    }
    let medians: Vec<Figures> = runs.iter().map(|r| Figures::median(r)).collect();
    println!("medians:");
    for f in &medians {
        line(f, f.name);
    }
    // Each system's hop: its split setup against its one-process setup.
    let hops: Vec<Hop> = ["sdsim", "peer", "bare"]
        .iter()
        .enumerate()
        .map(|(i, system)| Hop::of(system, &medians[2 * i], &medians[2 * i + 1]))
        .collect();
    for hop in &hops {
        println!(
            "the hop, {} (medians): x{:.2} throughput, +{:.3} ms p50, +{:.3} ms p99, +{:.1} us server CPU per request (x{:.2})",
            hop.system, hop.throughput, hop.p50_ms, hop.p99_ms, hop.cpu_us, hop.cpu_ratio
        );
    }
    let (sdsim, peer, bare) = (&hops[0], &hops[1], &hops[2]);
    println!(
        "sdsim's hop against the peer's: x{:.2} CPU us added, x{:.2} p50 added; against the machine's limit (bare): x{:.2} CPU us added, x{:.2} p50 added",
        sdsim.cpu_us / peer.cpu_us,
        sdsim.p50_ms / peer.p50_ms,
        sdsim.cpu_us / bare.cpu_us,
        sdsim.p50_ms / bare.p50_ms
    );
    if let Some(out) = &args.out {
        let json = |f: &Figures| {
            serde_json::json!({
                "setup": f.name, "requests_per_s": f.per_second(), "completed": f.completed,
                "errors": f.errors, "p50_ms": f.latency_ms[0], "p99_ms": f.latency_ms[1],
                "p999_ms": f.latency_ms[2], "max_ms": f.latency_ms[3],
                "server_cpu_us_per_request": f.cpu_us_per_request,
            })
        };
        let hop_json = |h: &Hop| {
            serde_json::json!({
                "system": h.system, "throughput_ratio": h.throughput, "p50_ms_added": h.p50_ms,
                "p99_ms_added": h.p99_ms, "cpu_us_added": h.cpu_us, "cpu_ratio": h.cpu_ratio,
            })
        };
        let doc = serde_json::json!({
            "connections": args.connections, "rate": args.rate, "duration_s": args.duration,
            "shards": args.shards, "runs": args.runs, "project_json_bytes": answer_bytes,
            "grpc_request_bytes": request_bytes, "load_before": load_before,
            "load_after": load_after,
            "medians": medians.iter().map(json).collect::<Vec<_>>(),
            "hops": hops.iter().map(hop_json).collect::<Vec<_>>(),
        });
        std::fs::write(out, serde_json::to_string_pretty(&doc)?)?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// What one system's hop adds: its split setup against its one-process setup (medians).
struct Hop {
    system: &'static str,
    throughput: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us: f64,
    cpu_ratio: f64,
}

impl Hop {
    fn of(system: &'static str, one: &Figures, split: &Figures) -> Hop {
        Hop {
            system,
            throughput: split.per_second() / one.per_second(),
            p50_ms: split.latency_ms[0] - one.latency_ms[0],
            p99_ms: split.latency_ms[1] - one.latency_ms[1],
            cpu_us: split.cpu_us_per_request - one.cpu_us_per_request,
            cpu_ratio: split.cpu_us_per_request / one.cpu_us_per_request,
        }
    }
}

/// The 1, 5 and 15 minute load averages, as `uptime` shows them.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|e| format!("unknown ({e})"))
}
