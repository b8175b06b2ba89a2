//! Mesh benchmark: round-trip latency of `submit_to` and one-way messages/s between two shards
//! pinned to two CPUs, against `std::sync::mpsc` between two pinned threads in the same run.
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

fn main() {
    let args = Args::parse();
    let cpus: Vec<usize> = args
        .cpus
        .split(',')
        .map(|c| c.trim().parse().expect("--cpus a,b"))
        .collect();
    let cpus = [cpus[0], cpus[1]];
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
    println!("# mesh benchmark: {}", machine_line());
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
