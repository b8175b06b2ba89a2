//! `bench-hop`: the cost of the internal hop. `GET /api/projects/{id}` on one process running
//! every role, against the same request on a gateway process (gateway and auth roles) that
//! reaches a project-only process over gRPC — alternating in the same run (`--runs`, medians),
//! on the same database and project. Per setup: requests/s, latency p50/p99/p99.9/max (HDR, from each
//! request's intended send time when `--rate` is set), and server CPU per request (every server
//! process of the setup, from its CPU-time clock).
//!
//! `cargo run --release -p sdsim-bench --bin bench-hop -- --sdsim target/release/sdsim`
//! Nothing is pinned unless `--server-cpu`/`--client-cpu` say so.

use anyhow::{bail, ensure, Context};
use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use mimalloc::MiMalloc;
use sdsim_bench::median;
use sdsim_bench::proc_sample::cpu_seconds;
use sdsim_bench::process::{free_port, pinned, stop};
use sdsim_bench::sdsim_process::{create_project_from_template, get_json, register_and_login};
use sdsim_loadtest::client::Connection;
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
}

const SERVICE_TOKEN: &str = "bench-hop-service-token-0123456789";

/// A server process of one setup, stopped when dropped.
struct Server {
    child: Option<Child>,
    /// Its HTTP listener (`gateway.listen`).
    http: SocketAddr,
    /// Its role's gRPC listener.
    grpc: SocketAddr,
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
            grpc: ([127, 0, 0, 1], ports[3]).into(),
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
            format!("gateway.project_service={}", project.grpc),
        ],
    )?;
    let (status, body) = get_json(&format!("http://{}{path}", gateway.http), &token)?;
    ensure!(
        status == 200,
        "the split setup cannot read the project: {status} {body}"
    );
    let request = |addr: SocketAddr| {
        sdsim_loadtest::run::build_request(
            "GET",
            &addr.to_string(),
            &path,
            &[format!("Authorization: Bearer {token}")],
            b"",
        )
    };
    // Alternating, so a disturbance of the machine falls on both setups alike; every process
    // stays up throughout (an idle one costs next to nothing).
    let (mut local, mut hop) = (Vec::new(), Vec::new());
    for _ in 0..args.runs {
        local.push(measure(
            &args,
            "all roles, one process",
            all.http,
            request(all.http),
            &[&all],
        )?);
        hop.push(measure(
            &args,
            "gateway -> project over gRPC",
            gateway.http,
            request(gateway.http),
            &[&gateway, &project],
        )?);
    }
    drop((all, gateway, project));

    let mode = match args.rate {
        Some(r) => format!("open loop, {r} req/s"),
        None => "closed loop".to_string(),
    };
    println!(
        "GET /api/projects/{{id}}: {} connections, {mode}, {} s measured after {} s warm-up, {} shard(s) per process, {} run(s) alternating, {}",
        args.connections, args.duration, args.warmup, args.shards, args.runs, sdsim_bench::machine_line()
    );
    let header = format!(
        "{:<36} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>12}",
        "setup", "req/s", "errors", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "CPU us/req"
    );
    println!("{header}");
    let line = |f: &Figures, label: &str| {
        println!(
            "{:<36} {:>9.0} {:>7} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>12.1}",
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
    for (run, (l, h)) in local.iter().zip(&hop).enumerate() {
        line(l, &format!("{} (run {})", l.name, run + 1));
        line(h, &format!("{} (run {})", h.name, run + 1));
    }
    let (local, hop) = (Figures::median(&local), Figures::median(&hop));
    println!("medians:");
    line(&local, local.name);
    line(&hop, hop.name);
    println!(
        "the hop (medians): x{:.2} throughput, +{:.3} ms p50, +{:.3} ms p99, x{:.2} server CPU per request",
        hop.per_second() / local.per_second(),
        hop.latency_ms[0] - local.latency_ms[0],
        hop.latency_ms[1] - local.latency_ms[1],
        hop.cpu_us_per_request / local.cpu_us_per_request
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
        let doc = serde_json::json!({
            "connections": args.connections, "rate": args.rate, "duration_s": args.duration,
            "shards": args.shards, "runs": args.runs, "medians": [json(&local), json(&hop)],
        });
        std::fs::write(out, serde_json::to_string_pretty(&doc)?)?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
