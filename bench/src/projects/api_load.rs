//! Part A's load: keep-alive connections requesting projects on wrk2's schedule (open loop,
//! latency from each request's intended send time) or back to back (closed loop), on a pinned
//! monoio thread; one report per request kind (GET, PUT description, PUT design).

use super::Args;
use bytes::Bytes;
use sdsim_loadtest::client::Connection;
use sdsim_loadtest::report::Report;
use sdsim_loadtest::run::build_request;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A project a load connection requests, with its owner's token.
#[derive(Clone)]
pub(super) struct ProjectRef {
    pub(super) id: String,
    pub(super) token: String,
    pub(super) design: Value,
}

#[derive(Clone, Copy)]
pub(super) enum Load {
    Open(f64),
    Closed,
}

impl Load {
    pub(super) fn label(self, connections: usize) -> String {
        match self {
            Load::Open(r) => format!("open {r:.0}/s"),
            Load::Closed => format!("closed, {connections} conns"),
        }
    }
}

/// Makes every PUT a real change (descriptions and design durations never repeat).
static REVISION: AtomicU64 = AtomicU64::new(1);

/// The request of `kind` (0 GET, 1 PUT description, 2 PUT design) for project `p`.
fn request(kind: usize, p: &ProjectRef) -> Bytes {
    let path = format!("/api/projects/{}", p.id);
    let auth = format!("Authorization: Bearer {}", p.token);
    let body = match kind {
        0 => return build_request("GET", "127.0.0.1", &path, &[auth], b""),
        1 => {
            json!({"description": format!("revision {}", REVISION.fetch_add(1, Ordering::Relaxed))})
        }
        _ => {
            let mut design = p.design.clone();
            let base = design["duration_s"].as_f64().unwrap_or(600.0);
            design["duration_s"] = json!(base + REVISION.fetch_add(1, Ordering::Relaxed) as f64);
            json!({ "design": design })
        }
    };
    build_request(
        "PUT",
        "127.0.0.1",
        &path,
        &[auth, "Content-Type: application/json".into()],
        body.to_string().as_bytes(),
    )
}

/// xorshift64*: the request mix, reproducible per connection.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct ApiLoad {
    addr: SocketAddr,
    rate: Option<f64>,
    connections: usize,
    warmup: Duration,
    duration: Duration,
    put_fraction: f64,
}

async fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        monoio::time::sleep(t - now).await;
    }
}

/// One connection of the API load: wrk2's schedule (open loop) or back to back (closed).
async fn api_connection(
    load: Rc<ApiLoad>,
    index: usize,
    projects: Vec<ProjectRef>,
    start: Instant,
    tally: Rc<RefCell<[Report; 3]>>,
) {
    let measure_from = start + load.warmup;
    let end = measure_from + load.duration;
    let step = load
        .rate
        .map(|r| Duration::from_secs_f64(load.connections as f64 / r));
    let mut due = start
        + step.map_or(Duration::ZERO, |s| {
            s.mul_f64(index as f64 / load.connections as f64)
        });
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((index as u64 + 1) * 0x1000_0001));
    let mut conn: Option<Connection> = None;
    sleep_until(start).await;
    loop {
        let intended = match step {
            Some(step) => {
                let now = Instant::now();
                if now < due {
                    sleep_until(due).await;
                } else if now - due > step && due >= measure_from {
                    tally.borrow_mut()[0].counters.late += 1;
                }
                due
            }
            None => Instant::now(),
        };
        if intended >= end {
            break;
        }
        if let Some(step) = step {
            due += step;
        }
        let measured = intended >= measure_from;
        let kind = if rng.unit() < load.put_fraction {
            1 + (rng.next() % 2) as usize
        } else {
            0
        };
        let bytes = request(
            kind,
            &projects[(rng.next() % projects.len() as u64) as usize],
        );
        if conn.is_none() {
            match Connection::connect(load.addr).await {
                Ok(c) => conn = Some(c),
                Err(_) => {
                    tally.borrow_mut()[kind].counters.error(measured, "connect");
                    monoio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let result = monoio::time::timeout(Duration::from_secs(10), c.exchange(bytes)).await;
        let latency = intended.elapsed();
        let mut t = tally.borrow_mut();
        let report = &mut t[kind];
        report.counters.sent += u64::from(measured);
        match result {
            Ok(Ok(x)) => {
                if measured {
                    report.counters.completed += 1;
                    let _ = report
                        .histogram
                        .record((latency.as_micros() as u64).clamp(1, Report::MAX_US));
                    match x.status {
                        200..=299 => {}
                        409 => report.counters.error(true, "status_409"),
                        400..=499 => report.counters.error(true, "status_4xx"),
                        _ => report.counters.error(true, "status_5xx"),
                    }
                }
                if !x.reusable {
                    conn = None;
                }
            }
            Ok(Err(_)) => {
                report.counters.error(measured, "io");
                conn = None;
            }
            Err(_) => {
                report.counters.error(measured, "timeout");
                conn = None;
            }
        }
    }
}

/// Runs one load point against `addr`; one report per request kind.
pub(super) fn run_api(
    args: &Args,
    addr: SocketAddr,
    plan: &[Vec<ProjectRef>],
    load: Load,
) -> anyhow::Result<[Report; 3]> {
    let api = ApiLoad {
        addr,
        rate: match load {
            Load::Open(r) => Some(r),
            Load::Closed => None,
        },
        connections: plan.len(),
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.duration),
        put_fraction: args.put_percent / 100.0,
    };
    let (plan, cpu) = (plan.to_vec(), args.client_cpu);
    std::thread::spawn(move || -> anyhow::Result<[Report; 3]> {
        monoio::utils::bind_to_cpu_set(Some(cpu))
            .map_err(|e| anyhow::anyhow!("pinning to CPU {cpu}: {e}"))?;
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()?;
        let duration = api.duration;
        Ok(rt.block_on(async move {
            let load = Rc::new(api);
            let tally = Rc::new(RefCell::new(std::array::from_fn(|_| Report::new(duration))));
            let start = Instant::now() + Duration::from_millis(100);
            let tasks: Vec<_> = plan
                .into_iter()
                .enumerate()
                .map(|(i, projects)| {
                    monoio::spawn(api_connection(
                        Rc::clone(&load),
                        i,
                        projects,
                        start,
                        Rc::clone(&tally),
                    ))
                })
                .collect();
            for t in tasks {
                t.await;
            }
            let reports = tally.borrow().clone();
            reports
        }))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the load thread panicked"))?
}
