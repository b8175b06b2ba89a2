//! HTTP keep-alive benchmark: sdsim against an axum peer, same route, same CPU, same load, in
//! one run, as a ratio. Each server is pinned (all its threads) to `--server-cpu`; the load
//! generator (`sdsim-loadtest`'s engine, in this process) to `--client-cpu`. Servers alternate,
//! `--runs` times; medians are reported.
//!
//! `cargo build --release -p sdsim-server -p sdsim-bench && target/release/bench-http --runs 3`

use anyhow::{bail, Context};
use clap::Parser;
use mimalloc::MiMalloc;
use sdsim_bench::process::{free_port, pinned, stop, wait_ready};
use sdsim_bench::{machine_line, median};
use sdsim_loadtest::report::Report;
use sdsim_loadtest::run::{build_request, run_http, HttpLoad};
use std::net::SocketAddr;
use std::process::Command;
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
    #[arg(long, default_value_t = 50)]
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
}

struct Target {
    name: &'static str,
    port: u16,
    command: Command,
}

fn measure(target: &mut Target, args: &Args) -> anyhow::Result<Report> {
    let mut child = target
        .command
        .spawn()
        .with_context(|| format!("starting {}", target.name))?;
    let result = (|| {
        wait_ready(target.port, &mut child)?;
        let addr: SocketAddr = ([127, 0, 0, 1], target.port).into();
        run_http(&HttpLoad {
            addr,
            request: build_request("GET", "127.0.0.1", "/health", &[], b""),
            connections: args.connections,
            rate: None,
            duration: Duration::from_secs_f64(args.duration),
            warmup: Duration::from_secs_f64(args.warmup),
            cpus: vec![args.client_cpu],
            interval: Duration::from_secs(1),
            phases: Vec::new(),
            timeout: sdsim_loadtest::run::DEFAULT_TIMEOUT,
            protocol: Default::default(),
        })
    })();
    stop(child);
    result
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for bin in [&args.sdsim, &args.axum] {
        if !std::path::Path::new(bin).exists() {
            bail!("{bin} not found: cargo build --release -p sdsim-server -p sdsim-bench");
        }
    }
    let sdsim_port = free_port()?;
    let axum_port = free_port()?;
    let mut sdsim = pinned(&args.sdsim, args.server_cpu);
    sdsim.args([
        "serve",
        "--set",
        "runtime.shards=1",
        "--set",
        &format!("runtime.cpus=[{}]", args.server_cpu),
        "--set",
        &format!("gateway.listen=127.0.0.1:{sdsim_port}"),
        "--set",
        "ratelimit.enabled=false",
        "--set",
        "log.access=false",
    ]);
    let mut axum = pinned(&args.axum, args.server_cpu);
    axum.args([
        "--listen",
        &format!("127.0.0.1:{axum_port}"),
        "--threads",
        "1",
    ]);
    let mut targets = [
        Target {
            name: "sdsim",
            port: sdsim_port,
            command: sdsim,
        },
        Target {
            name: "axum",
            port: axum_port,
            command: axum,
        },
    ];
    let mut results: Vec<Vec<Report>> = vec![Vec::new(), Vec::new()];
    for run in 1..=args.runs {
        for (i, target) in targets.iter_mut().enumerate() {
            let report = measure(target, &args)?;
            let p = report.percentiles();
            eprintln!(
                "run {run} {:<6} {:>9.0} req/s  p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms  errors {}",
                target.name,
                report.throughput(),
                p.p50,
                p.p99,
                p.p999,
                p.max,
                report.errors()
            );
            results[i].push(report);
        }
    }
    let med =
        |reports: &[Report], f: &dyn Fn(&Report) -> f64| median(reports.iter().map(f).collect());
    println!("# HTTP keep-alive GET /health: {}", machine_line());
    println!(
        "# server pinned to CPU {}, load generator (closed loop, {} connections, {} s + {} s warm-up) to CPU {}; medians of {} runs",
        args.server_cpu, args.connections, args.duration, args.warmup, args.client_cpu, args.runs
    );
    println!("# sdsim: 1 shard, full middleware stack (request id, timing, metrics, compression check), access log and rate limit off");
    println!("# axum 0.8: tokio multi-thread runtime with 1 worker, default hyper settings, no middleware");
    println!("| server | req/s | p50 ms | p99 ms | p99.9 ms | max ms | errors |");
    println!("|---|---|---|---|---|---|---|");
    for (target, reports) in targets.iter().zip(&results) {
        println!(
            "| {} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {} |",
            target.name,
            med(reports, &|r| r.throughput()),
            med(reports, &|r| r.percentiles().p50),
            med(reports, &|r| r.percentiles().p99),
            med(reports, &|r| r.percentiles().p999),
            med(reports, &|r| r.percentiles().max),
            reports.iter().map(|r| r.errors()).sum::<u64>()
        );
    }
    println!(
        "| **sdsim / axum** | **{:.2}×** | {:.2}× | {:.2}× | {:.2}× | | |",
        med(&results[0], &|r| r.throughput()) / med(&results[1], &|r| r.throughput()),
        med(&results[0], &|r| r.percentiles().p50) / med(&results[1], &|r| r.percentiles().p50),
        med(&results[0], &|r| r.percentiles().p99) / med(&results[1], &|r| r.percentiles().p99),
        med(&results[0], &|r| r.percentiles().p999) / med(&results[1], &|r| r.percentiles().p999),
    );
    Ok(())
}
