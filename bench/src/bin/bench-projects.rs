//! Project and simulation services benchmark, three parts:
//!
//! - **api**: `GET` / `PUT /api/projects/{id}` under open-loop load (latency from each request's
//!   intended send time) at each of `--rates`, then closed loop (the most requests per second),
//!   on sdsim (1 shard), on a second sdsim process on the same database with the verified-token
//!   cache off, and on `peer-projects` (axum + jsonwebtoken + rusqlite doing the same work), the
//!   targets alternating, `--runs` times; HDR percentiles per request kind, ratios to the peer.
//!   Mix: `--put-percent` PUTs (half change the description, half the design), the rest GETs,
//!   over `--projects` projects of `--users` owners; each load connection owns its projects.
//! - **ws**: `--ws-clients` WebSocket clients subscribed on the one shard, `{"op":"ping"}` at
//!   `--ping-rate` (the `sdsim-loadtest` ws engine), without simulations and with
//!   `simulation.runs_per_shard` runs at speed 0 on that shard, on each of `--ws-configs`
//!   (`simulation.slice` / `runtime.driver`).
//! - **runs**: `--run-users` users each keep `--run-inflight` short runs (`--run-seconds`
//!   simulated, speed 0) outstanding for `--run-window` seconds: completed runs per second,
//!   429 / 503 answers, submit → completed latency (completion seen on the WebSocket). No peer.
//!
//! Servers are pinned to `--server-cpu` (every thread), the generators to `--client-cpu`.
//! Medians of `--runs`. The report goes to stdout and `bench/results/<UTC time>-projects.md`.
//!
//! `cargo build --release -p sdsim-server -p sdsim-bench && target/release/bench-projects --runs 3`

use anyhow::{bail, ensure, Context};
use bytes::Bytes;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use mimalloc::MiMalloc;
use sdsim_bench::process::{free_port, pinned, stop, wait_ready};
use sdsim_bench::{machine_line, median, pin_current};
use sdsim_loadtest::client::Connection;
use sdsim_loadtest::report::Report;
use sdsim_loadtest::run::build_request;
use sdsim_loadtest::ws::{run_ws, Op, WsOptions};
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

#[derive(Parser)]
struct Args {
    /// Runs of every measurement; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Parts to run: api, ws, runs.
    #[arg(long, value_delimiter = ',', default_value = "api,ws,runs")]
    parts: Vec<String>,
    /// api: measured seconds per load point.
    #[arg(long, default_value_t = 6.0)]
    duration: f64,
    /// api: warm-up seconds per load point.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// api: open-loop rates (requests/s); a closed-loop run over `--connections` follows.
    #[arg(long, value_delimiter = ',', default_value = "2000,8000")]
    rates: Vec<f64>,
    /// api: keep-alive connections (one request in flight on each).
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// api: project owners (registered accounts).
    #[arg(long, default_value_t = 8)]
    users: usize,
    /// api: projects, made from the system templates in turn.
    #[arg(long, default_value_t = 128)]
    projects: usize,
    /// api: percentage of requests that are PUTs.
    #[arg(long, default_value_t = 10.0)]
    put_percent: f64,
    /// api: leave out the sdsim process with the verified-token cache off.
    #[arg(long)]
    no_uncached: bool,
    /// ws: subscribed WebSocket clients.
    #[arg(long, default_value_t = 200)]
    ws_clients: usize,
    /// ws: pings per second over all clients.
    #[arg(long, default_value_t = 2000.0)]
    ping_rate: f64,
    /// ws: measured seconds per phase.
    #[arg(long, default_value_t = 6.0)]
    ws_duration: f64,
    /// ws: servers to compare, `SLICE[/DRIVER]`: `simulation.slice` and `runtime.driver`.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1ms/io_uring,1ms/epoll,10ms/epoll"
    )]
    ws_configs: Vec<String>,
    /// runs: servers to measure, as `--ws-configs` (a server in both does part B first).
    #[arg(long, value_delimiter = ',', default_value = "1ms/io_uring")]
    run_configs: Vec<String>,
    /// ws: `simulation.runs_per_shard`, and the runs started for the measurement.
    #[arg(long, default_value_t = 2)]
    sim_runs: usize,
    /// runs: users submitting.
    #[arg(long, default_value_t = 4)]
    run_users: usize,
    /// runs: runs each user keeps queued or running.
    #[arg(long, default_value_t = 4)]
    run_inflight: usize,
    /// runs: who submits: `same` (the same users every run, their history growing) and/or
    /// `fresh` (new accounts for every run).
    #[arg(long, value_delimiter = ',', default_value = "same,fresh")]
    run_users_mode: Vec<String>,
    /// runs: simulated seconds of each run (three-tier template).
    #[arg(long, default_value_t = 10.0)]
    run_seconds: f64,
    /// runs: measured seconds (after 2 s unmeasured).
    #[arg(long, default_value_t = 10.0)]
    run_window: f64,
    /// CPU of the servers.
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
    /// CPU of the load generators.
    #[arg(long, default_value_t = 1)]
    client_cpu: usize,
    /// The sdsim binary.
    #[arg(long, default_value = "target/release/sdsim")]
    sdsim: String,
    /// The peer binary.
    #[arg(long, default_value = "target/release/peer-projects")]
    peer: String,
    /// Extra `--set KEY=VALUE` for every sdsim process (e.g. `runtime.driver=epoll`).
    #[arg(long = "sdsim-set")]
    sdsim_set: Vec<String>,
    /// The Markdown report (default: bench/results/<UTC time>-projects.md).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// A server process, stopped when dropped.
struct Server {
    name: String,
    addr: SocketAddr,
    sets: Vec<String>,
    child: Option<Child>,
    /// Its standard error.
    log: PathBuf,
}

impl Server {
    /// An error (with the end of its log) if the process has exited: a dead server's
    /// connection errors must not pass for measurements.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "{} exited during the benchmark ({status}); its log ends:\n{}",
                self.name,
                tail.join("\n")
            );
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop(child);
        }
    }
}

fn spawn_server(
    name: &str,
    mut cmd: Command,
    port: u16,
    sets: Vec<String>,
    log: PathBuf,
) -> anyhow::Result<Server> {
    cmd.stderr(std::fs::File::create(&log)?);
    let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    if let Err(e) = wait_ready(port, &mut child) {
        stop(child);
        return Err(e.context(format!("{name} did not come up")));
    }
    Ok(Server {
        name: name.into(),
        addr: ([127, 0, 0, 1], port).into(),
        sets,
        child: Some(child),
        log,
    })
}

/// sdsim, 1 shard, on the database in `dir`, every listener on a free loopback port.
fn start_sdsim(args: &Args, dir: &Path, name: &str, extra: &[String]) -> anyhow::Result<Server> {
    let ports: Vec<u16> = (0..7).map(|_| free_port()).collect::<Result<_, _>>()?;
    let listeners = [
        "gateway.listen",
        "auth.grpc_listen",
        "auth.http_listen",
        "project.grpc_listen",
        "project.http_listen",
        "simulation.grpc_listen",
        "simulation.http_listen",
    ];
    let mut sets: Vec<String> = vec![
        "runtime.shards=1".into(),
        format!("runtime.cpus=[{}]", args.server_cpu),
        format!("storage.url=sqlite://{}/sdsim.db", dir.display()),
        "ratelimit.enabled=false".into(),
        "log.access=false".into(),
        "log.level=warn".into(),
        "auth.access_ttl=1h".into(),
    ];
    sets.extend(args.sdsim_set.iter().chain(extra).cloned());
    let mut cmd = pinned(&args.sdsim, args.server_cpu);
    cmd.arg("serve");
    for s in sets.iter().cloned().chain(
        listeners
            .iter()
            .zip(&ports)
            .map(|(k, p)| format!("{k}=127.0.0.1:{p}")),
    ) {
        cmd.arg("--set").arg(s);
    }
    std::fs::create_dir_all(dir)?;
    let log = dir.join(format!(
        "{}.log",
        name.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
    ));
    spawn_server(name, cmd, ports[0], sets, log)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(180)))
        .build()
        .new_agent()
}

/// One HTTP call; the answer's status and JSON body.
fn call(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> anyhow::Result<(u16, Value)> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let response = match (method, body) {
        ("GET", _) => {
            let mut req = agent.get(url);
            if let Some(a) = &auth {
                req = req.header("authorization", a);
            }
            req.call()
        }
        (_, body) => {
            let mut req = if method == "PUT" {
                agent.put(url)
            } else {
                agent.post(url)
            };
            if let Some(a) = &auth {
                req = req.header("authorization", a);
            }
            req.header("content-type", "application/json")
                .send(body.map_or(String::new(), Value::to_string))
        }
    }
    .with_context(|| format!("{method} {url}"))?;
    let status = response.status().as_u16();
    let text = response.into_body().read_to_string()?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

struct User {
    id: String,
    token: String,
}

/// Registers `email` (a random strong password) and logs in.
fn account(gateway: SocketAddr, email: &str) -> anyhow::Result<User> {
    let creds = json!({"email": email, "password": strong_password()?});
    let url = format!("http://{gateway}/api/auth/register");
    let (status, body) = call(&agent(), "POST", &url, None, Some(&creds))?;
    ensure!(status == 201, "register answered {status}: {body}");
    login(gateway, &creds)
}

/// 144 random bits, base64url, and every character class a password policy may ask for.
fn strong_password() -> anyhow::Result<String> {
    use base64::Engine;
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 18];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("no randomness"))?;
    let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    Ok(format!("{text}-Aa9!"))
}

/// Logs in with `{"email", "password"}`.
fn login(gateway: SocketAddr, creds: &Value) -> anyhow::Result<User> {
    let url = format!("http://{gateway}/api/auth/login");
    let (status, body) = call(&agent(), "POST", &url, None, Some(creds))?;
    ensure!(status == 200, "login answered {status}: {body}");
    let text = |v: &Value, what: &str| {
        v.as_str()
            .map(str::to_string)
            .with_context(|| format!("login: {what}"))
    };
    Ok(User {
        id: text(&body["user"]["id"], "user.id")?,
        token: text(&body["access_token"], "access_token")?,
    })
}

/// An admin account in the database of `dir`, made with `sdsim user add` before the server
/// starts (the instance-wide `simulation:events:*` feeds are for admins); its credentials.
fn add_admin(args: &Args, dir: &Path) -> anyhow::Result<Value> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let (email, password) = ("bench-admin@example.com", strong_password()?);
    let storage = format!("storage.url=sqlite://{}/sdsim.db", dir.display());
    let mut child = Command::new(&args.sdsim)
        .args([
            "user", "add", "--email", email, "--role", "admin", "--set", &storage,
        ])
        .args(["--set", "log.level=warn"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("sdsim user add")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(format!("{password}\n").as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "sdsim user add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(json!({"email": email, "password": password}))
}

/// Creates a project; returns it as sdsim answers.
fn create_project(gateway: SocketAddr, user: &User, body: &Value) -> anyhow::Result<Value> {
    let (status, project) = call(
        &agent(),
        "POST",
        &format!("http://{gateway}/api/projects"),
        Some(&user.token),
        Some(body),
    )?;
    ensure!(status == 201, "create project answered {status}: {project}");
    Ok(project)
}

/// The 1-minute load average.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// `a / b` as a ratio with two decimals.
fn ratio(a: f64, b: f64) -> String {
    format!("{:.2}×", a / b)
}

/// Percentiles of a report in ms: p50, p99, p99.9, max.
fn pcts(r: &Report) -> [f64; 4] {
    let p = r.percentiles();
    [p.p50, p.p99, p.p999, p.max]
}

/// The median of each percentile over reports.
fn median_pcts(reports: &[Report]) -> [f64; 4] {
    let all: Vec<[f64; 4]> = reports.iter().map(pcts).collect();
    std::array::from_fn(|i| median(all.iter().map(|p| p[i]).collect()))
}

fn fmt_pcts(p: &[f64; 4]) -> String {
    format!("{:.3} / {:.3} / {:.3} / {:.3}", p[0], p[1], p[2], p[3])
}

fn fmt_ratios(a: &[f64; 4], b: &[f64; 4]) -> String {
    format!(
        "{} / {} / {} / {}",
        ratio(a[0], b[0]),
        ratio(a[1], b[1]),
        ratio(a[2], b[2]),
        ratio(a[3], b[3])
    )
}

fn errors_text(r: &Report) -> String {
    if r.counters.errors.is_empty() {
        "0".into()
    } else {
        r.counters
            .errors
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

// ---------------------------------------------------------------------------------------------
// Part A: the project API under load.

/// A project a load connection requests, with its owner's token.
#[derive(Clone)]
struct ProjectRef {
    id: String,
    token: String,
    design: Value,
}

#[derive(Clone, Copy)]
enum Load {
    Open(f64),
    Closed,
}

impl Load {
    fn label(self, connections: usize) -> String {
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
fn run_api(
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

/// The answers both implementations must give before they are measured.
fn api_checks(
    targets: &[Server],
    users: &[User],
    projects: &[ProjectRef],
    owner_of: &[usize],
) -> anyhow::Result<String> {
    let a = agent();
    let (p, owner) = (&projects[0], &users[owner_of[0]]);
    let stranger = &users[(owner_of[0] + 1) % users.len()];
    let mut out = String::from("\n### Checks (every target, before the load)\n\n");
    let mut first: Option<Value> = None;
    for t in targets {
        let url = format!("http://{}/api/projects/{}", t.addr, p.id);
        let (s, got) = call(&a, "GET", &url, Some(&owner.token), None)?;
        ensure!(
            s == 200 && got["id"] == json!(p.id) && got["role"] == "owner",
            "{}: GET answered {s}: {got}",
            t.name
        );
        let same = [
            "id",
            "name",
            "owner_id",
            "design",
            "settings",
            "template_id",
            "created_at",
        ];
        if let Some(f) = &first {
            for k in same {
                ensure!(
                    f[k] == got[k],
                    "{}: GET field {k} differs: {} vs {}",
                    t.name,
                    f[k],
                    got[k]
                );
            }
        } else {
            first = Some(got.clone());
        }
        let (s, put) = call(
            &a,
            "PUT",
            &url,
            Some(&owner.token),
            Some(&json!({"description": format!("check {}", t.name)})),
        )?;
        ensure!(
            s == 200 && put["version"].as_i64() > got["version"].as_i64(),
            "{}: PUT answered {s}: {put}",
            t.name
        );
        let mut bad = p.design.clone();
        bad["components"][0]["to"] = json!("nowhere");
        let (s422, _) = call(
            &a,
            "PUT",
            &url,
            Some(&owner.token),
            Some(&json!({ "design": bad })),
        )?;
        let (s404, _) = call(&a, "GET", &url, Some(&stranger.token), None)?;
        let (s401, _) = call(&a, "GET", &url, None, None)?;
        ensure!(
            (s422, s404, s401) == (422, 404, 401),
            "{}: invalid design / non-member / no token answered {s422} / {s404} / {s401}",
            t.name
        );
        writeln!(out, "- {}: GET 200 (same project JSON fields: {}), PUT 200 (version {} → {}), invalid design 422, non-member 404, no token 401", t.name, same.join(", "), got["version"], put["version"])?;
    }
    Ok(out)
}

fn part_api(args: &Args, dir: &Path) -> anyhow::Result<String> {
    let sdsim = start_sdsim(args, &dir.join("api"), "sdsim", &[])?;
    let mut targets = vec![];
    let gateway = sdsim.addr;
    targets.push(sdsim);
    if !args.no_uncached {
        // The same database, so the same signing keys: the same tokens verify on both.
        targets.push(start_sdsim(
            args,
            &dir.join("api"),
            "sdsim (no token cache)",
            &["auth.verify_cache_entries=0".into()],
        )?);
    }
    eprintln!("== api: {} users, {} projects", args.users, args.projects);
    let users: Vec<User> = (0..args.users)
        .map(|i| account(gateway, &format!("owner{i}@example.com")))
        .collect::<Result<_, _>>()?;
    let templates = [
        "three-tier",
        "url-shortener",
        "chat-notifications",
        "read-heavy-cache",
        "event-pipeline",
    ];
    let mut seed = Vec::new();
    let mut projects = Vec::new();
    let mut owner_of = Vec::new();
    let mut sizes = Vec::new();
    for i in 0..args.projects {
        let owner = i % users.len();
        let p = create_project(
            gateway,
            &users[owner],
            &json!({"name": format!("project {i}"), "description": "seed", "template_id": templates[i % templates.len()]}),
        )?;
        projects.push(ProjectRef {
            id: p["id"].as_str().context("project id")?.into(),
            token: users[owner].token.clone(),
            design: p["design"].clone(),
        });
        owner_of.push(owner);
        sizes.push(p["design"].to_string().len());
        seed.push(p);
    }
    let seed_file = dir.join("seed.json");
    std::fs::write(&seed_file, serde_json::to_string(&seed)?)?;
    let port = free_port()?;
    let mut cmd = pinned(&args.peer, args.server_cpu);
    let peer_args = vec![
        "--listen".to_string(),
        format!("127.0.0.1:{port}"),
        "--jwks".into(),
        format!("http://{gateway}/.well-known/jwks.json"),
        "--db".into(),
        dir.join("peer.db").display().to_string(),
        "--seed".into(),
        seed_file.display().to_string(),
        "--cpus".into(),
        args.server_cpu.to_string(),
    ];
    cmd.args(&peer_args);
    targets.push(spawn_server(
        "peer",
        cmd,
        port,
        peer_args,
        dir.join("peer.log"),
    )?);
    let checks = api_checks(&targets, &users, &projects, &owner_of)?;
    eprint!("{checks}");

    // Connection c owns projects c, c + C, c + 2C, ...: no two PUTs race on one project.
    let conns = args.connections.min(projects.len()).max(1);
    let plan: Vec<Vec<ProjectRef>> = (0..conns)
        .map(|c| projects.iter().skip(c).step_by(conns).cloned().collect())
        .collect();
    let loads: Vec<Load> = args
        .rates
        .iter()
        .map(|&r| Load::Open(r))
        .chain([Load::Closed])
        .collect();
    let mut results: Vec<Vec<Vec<[Report; 3]>>> =
        vec![vec![Vec::new(); targets.len()]; loads.len()];
    let mut per_run = String::new();
    for run in 1..=args.runs {
        for (l, &load) in loads.iter().enumerate() {
            let mut order: Vec<usize> = (0..targets.len()).collect();
            if run % 2 == 0 {
                order.reverse();
            }
            for t in order {
                let r = run_api(args, targets[t].addr, &plan, load)?;
                targets[t].check_alive()?;
                let all = merged(&r, &[0, 1, 2]);
                let line = format!(
                    "run {run} {:<22} {:<18} {:>8.0} req/s  GET {} ms  PUT {} ms  errors {}  late {}",
                    targets[t].name,
                    load.label(conns),
                    all.throughput(),
                    fmt_pcts(&pcts(&r[0])),
                    fmt_pcts(&pcts(&merged(&r, &[1, 2]))),
                    errors_text(&all),
                    all.counters.late
                );
                eprintln!("{line}");
                writeln!(per_run, "{line}")?;
                results[l][t].push(r);
            }
        }
    }
    let (fewest, most) = (
        plan.iter().map(Vec::len).min(),
        plan.iter().map(Vec::len).max(),
    );
    let per_conn = match (fewest, most) {
        (Some(a), Some(b)) if a != b => format!("{a}–{b}"),
        (_, b) => b.unwrap_or(0).to_string(),
    };
    let mut out = format!(
        "\n## A. Project API under load\n\nMix: {}% PUT (half `{{\"description\"}}`, half `{{\"design\"}}` with `duration_s` changed: the design is validated by the engine and a version row written), the rest `GET /api/projects/{{id}}`; {} projects ({} system templates in turn, designs of {}–{} bytes of JSON) owned by {} users, each of the {conns} connections requesting only its own {} projects (so no two PUTs race); every PUT changes something. Latency in ms from each request's intended send time (open loop: {} connections on a fixed schedule, wrk2 style; closed loop: next request when the answer arrives), {} s measured after {} s warm-up, medians of {} runs; errors and late sends are totals over the runs. The generator's timer has 1 ms resolution (monoio): an open-loop request goes out up to ~1 ms after its intended time and that delay is counted, for every target alike.\n\n",
        args.put_percent, args.projects, templates.len(), sizes.iter().min().unwrap_or(&0), sizes.iter().max().unwrap_or(&0), args.users, per_conn, conns, args.duration, args.warmup, args.runs
    );
    out.push_str("| load | target | req/s | GET p50 / p99 / p99.9 / max ms | PUT p50 / p99 / p99.9 / max ms | errors | late |\n|---|---|---|---|---|---|---|\n");
    for (l, load) in loads.iter().enumerate() {
        let rows: Vec<(f64, [f64; 4], [f64; 4])> = results[l]
            .iter()
            .map(|runs| {
                let gets: Vec<Report> = runs.iter().map(|r| r[0].clone()).collect();
                let puts: Vec<Report> = runs.iter().map(|r| merged(r, &[1, 2])).collect();
                (
                    median(
                        runs.iter()
                            .map(|r| merged(r, &[0, 1, 2]).throughput())
                            .collect(),
                    ),
                    median_pcts(&gets),
                    median_pcts(&puts),
                )
            })
            .collect();
        for (t, row) in rows.iter().enumerate() {
            let all: Vec<Report> = results[l][t]
                .iter()
                .map(|r| merged(r, &[0, 1, 2]))
                .collect();
            let mut total = Report::new(Duration::from_secs(1));
            for r in &all {
                total.merge(&r.histogram, &r.counters);
            }
            writeln!(
                out,
                "| {} | {} | {:.0} | {} | {} | {} | {} |",
                load.label(conns),
                targets[t].name,
                row.0,
                fmt_pcts(&row.1),
                fmt_pcts(&row.2),
                errors_text(&total),
                total.counters.late
            )?;
        }
        let peer = rows.last().context("no peer row")?;
        for (t, row) in rows.iter().enumerate().take(rows.len() - 1) {
            writeln!(
                out,
                "| {} | **{} / peer** | **{}** | {} | {} | | |",
                load.label(conns),
                targets[t].name,
                ratio(row.0, peer.0),
                fmt_ratios(&row.1, &peer.1),
                fmt_ratios(&row.2, &peer.2)
            )?;
        }
    }
    out.push_str(&checks);
    writeln!(out, "\n### Targets\n\n- sdsim: `{} serve` with `--set` {}; every listener on a free loopback port; the project and simulation roles in-process on the gateway.", args.sdsim, targets[0].sets.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(" "))?;
    if !args.no_uncached {
        writeln!(out, "- sdsim (no token cache): a second sdsim process on the same database (so the same signing keys and tokens), also `auth.verify_cache_entries=0`: every request verifies the token's Ed25519 signature, as the peer does. The two sdsim processes are never loaded at the same time.")?;
    }
    writeln!(out, "- peer: `{} {}` — axum 0.8 on a tokio multi-thread runtime with 1 worker (one per CPU of its affinity mask: CPU {}), jsonwebtoken 11 (EdDSA, aws-lc-rs) verifying every request's token against sdsim's JWKS (fetched once), rusqlite 0.37 (bundled SQLite, WAL, synchronous=NORMAL, foreign_keys, busy_timeout 5 s: sdsim's pragmas) with a pool of 2 read connections and 1 write connection used through `spawn_blocking`, cached prepared statements; GET = role lookup + project row in one blocking job; PUT = design validated with sdsim's engine parser, then role, version check, UPDATE ... WHERE version = current and the version row in one `BEGIN IMMEDIATE` transaction; mimalloc. It does not publish `project:events:updated` and does not re-read the row after the update (sdsim does both). Its database holds the same projects (loaded from sdsim's answers at start).", args.peer, targets.last().map_or(String::new(), |p| p.sets.join(" ")), args.server_cpu)?;
    out.push_str("\n### Every run\n\n```\n");
    out.push_str(&per_run);
    out.push_str("```\n");
    Ok(out)
}

/// The reports of `kinds` merged into one.
fn merged(reports: &[Report; 3], kinds: &[usize]) -> Report {
    let mut out = Report::new(reports[0].duration);
    for &k in kinds {
        out.merge(&reports[k].histogram, &reports[k].counters);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Simulation lifecycle events, seen on the WebSocket.

#[derive(Clone)]
struct SimEvent {
    event: String,
    id: String,
    user: String,
    at: Instant,
}

#[derive(Default)]
struct MonitorState {
    events: Vec<SimEvent>,
    /// Ended runs are announced to their user's submitter.
    routes: HashMap<String, mpsc::Sender<()>>,
}

/// A WebSocket client subscribed to `simulation:events:{started,completed,stopped,failed}`.
struct Monitor {
    state: Arc<Mutex<MonitorState>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Monitor {
    fn start(gateway: SocketAddr, token: &str, cpu: usize) -> anyhow::Result<Monitor> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::Message;
        let state = Arc::new(Mutex::new(MonitorState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut request = format!("ws://{gateway}/ws").into_client_request()?;
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        let (st, sp) = (Arc::clone(&state), Arc::clone(&stop));
        let thread = std::thread::spawn(move || -> anyhow::Result<()> {
            pin_current(cpu);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
                for e in ["started", "completed", "stopped", "failed"] {
                    ws.send(Message::text(
                        json!({"op": "subscribe", "channel": format!("simulation:events:{e}")})
                            .to_string(),
                    ))
                    .await?;
                }
                // Every subscription confirmed, or the server's refusal.
                let mut confirmed = 0;
                while confirmed < 4 {
                    let Some(Ok(Message::Text(text))) = ws.next().await else {
                        bail!("the monitor's WebSocket closed while subscribing");
                    };
                    let v: Value = serde_json::from_str(text.as_str()).unwrap_or_default();
                    match v["op"].as_str() {
                        Some("subscribed") => confirmed += 1,
                        Some("error") => bail!("the monitor's subscription was refused: {v}"),
                        _ => {}
                    }
                }
                let _ = ready_tx.send(());
                while !sp.load(Ordering::Relaxed) {
                    let Ok(next) = tokio::time::timeout(Duration::from_millis(50), ws.next()).await
                    else {
                        continue;
                    };
                    let text = match next {
                        Some(Ok(Message::Text(text))) => text,
                        Some(_) => continue,
                        None => bail!("the monitor's WebSocket closed"),
                    };
                    let at = Instant::now();
                    let v: Value = serde_json::from_str(text.as_str()).unwrap_or_default();
                    if v["op"] != "event" {
                        continue;
                    }
                    let d = &v["data"];
                    let e = SimEvent {
                        event: d["event"].as_str().unwrap_or("").into(),
                        id: d["simulation_id"].as_str().unwrap_or("").into(),
                        user: d["user_id"].as_str().unwrap_or("").into(),
                        at,
                    };
                    let mut s = st.lock().unwrap();
                    if e.event != "started" {
                        if let Some(tx) = s.routes.get(&e.user) {
                            let _ = tx.send(());
                        }
                    }
                    s.events.push(e);
                }
                Ok::<(), anyhow::Error>(())
            })
        });
        if ready_rx.recv_timeout(Duration::from_secs(10)).is_err() {
            let why = match thread.join() {
                Ok(Err(e)) => e.to_string(),
                _ => "no answer within 10 s".into(),
            };
            bail!("the monitor did not subscribe: {why}");
        }
        Ok(Monitor {
            state,
            stop,
            thread: Some(thread),
        })
    }

    fn events(&self) -> Vec<SimEvent> {
        self.state.lock().unwrap().events.clone()
    }

    /// Waits until `done(events)` or `timeout`; whether it happened.
    fn wait(&self, timeout: Duration, done: impl Fn(&[SimEvent]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if done(&self.state.lock().unwrap().events) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn ended(e: &SimEvent) -> bool {
    matches!(e.event.as_str(), "completed" | "stopped" | "failed")
}

/// Starts a run from its own thread (the answer can take as long as the run: see the report).
fn submit_async(
    gateway: SocketAddr,
    token: &str,
    body: Value,
) -> std::thread::JoinHandle<anyhow::Result<(u16, Value)>> {
    let token = token.to_string();
    std::thread::spawn(move || {
        call(
            &agent(),
            "POST",
            &format!("http://{gateway}/api/simulations"),
            Some(&token),
            Some(&body),
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Part B: WebSocket latency while simulations run on the same shard.

/// The three-tier template with its load and every component's instances multiplied by
/// `factor`: the same queues, `factor` times the engine events per simulated second.
fn scaled_design(gateway: SocketAddr, user: &User, factor: f64) -> anyhow::Result<Value> {
    let (s, t) = call(
        &agent(),
        "GET",
        &format!("http://{gateway}/api/templates/three-tier"),
        Some(&user.token),
        None,
    )?;
    ensure!(s == 200, "template answered {s}: {t}");
    let mut design = t["design"].clone();
    for c in design["components"].as_array_mut().context("components")? {
        for key in ["rate_per_s", "instances"] {
            if let Some(v) = c[key].as_f64() {
                c[key] = json!((v * factor).round() as u64);
            }
        }
    }
    Ok(design)
}

struct WsPhase {
    ping: Report,
    /// `GET /api/projects/{id}` (answered from SQLite) timed during the hold.
    get: Report,
    subscribed: usize,
    /// First run start and last run end, seconds from the hold's start and end.
    coverage: Option<(f64, f64)>,
}

/// Times `GET /api/projects/{id}` every 100 ms (from CPU `cpu`) until `stop`.
fn probe_gets(
    url: String,
    token: String,
    cpu: usize,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<(Instant, Duration)>> {
    std::thread::spawn(move || {
        pin_current(cpu);
        let (a, mut out) = (agent(), Vec::new());
        while !stop.load(Ordering::Relaxed) {
            let sent = Instant::now();
            if matches!(call(&a, "GET", &url, Some(&token), None), Ok((200, _))) {
                out.push((sent, sent.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(100).saturating_sub(sent.elapsed()));
        }
        out
    })
}

fn ws_phase(
    args: &Args,
    server: &Server,
    user: &User,
    project: &str,
    sims: Option<(&Monitor, f64)>,
) -> anyhow::Result<WsPhase> {
    let options = WsOptions {
        url: format!("ws://{}/ws", server.addr),
        connections: args.ws_clients,
        connect_rate: 1000.0,
        duration: Duration::from_secs_f64(args.ws_duration),
        warmup: Duration::from_secs(1),
        channel: "system:announcements".into(),
        token: Some(user.token.clone()),
        send_rate: Some(args.ping_rate),
        cpus: vec![args.client_cpu],
        ..WsOptions::default()
    };
    let load = options.build()?;
    let mut posts = Vec::new();
    let before = sims.map_or(0, |(m, _)| m.events().len());
    if let Some((monitor, seconds)) = sims {
        for i in 0..args.sim_runs {
            posts.push(submit_async(
                server.addr,
                &user.token,
                json!({"project_id": project, "duration_s": seconds, "speed": 0, "seed": i + 1}),
            ));
        }
        ensure!(
            monitor.wait(Duration::from_secs(20), |e| e[before..]
                .iter()
                .any(|e| e.event == "started")),
            "no run started within 20 s"
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let url = format!("http://{}/api/projects/{project}", server.addr);
    let probe = probe_gets(url, user.token.clone(), args.client_cpu, Arc::clone(&stop));
    let called = Instant::now();
    let report = run_ws(&load);
    stop.store(true, Ordering::Relaxed);
    let gets = probe
        .join()
        .map_err(|_| anyhow::anyhow!("the GET probe panicked"))?;
    let report = report?;
    let hold_start = called + Duration::from_millis(200) + report.ramp + load.warmup;
    let hold_end = hold_start + report.hold;
    let mut get = Report::new(report.hold);
    for (_, took) in gets
        .iter()
        .filter(|(t, _)| (hold_start..hold_end).contains(t))
    {
        get.counters.completed += 1;
        let _ = get
            .histogram
            .record((took.as_micros() as u64).clamp(1, Report::MAX_US));
    }
    let mut coverage = None;
    if let Some((monitor, seconds)) = sims {
        let n = args.sim_runs;
        let all_ended = monitor.wait(Duration::from_secs_f64(60.0 + seconds / 500.0), |e| {
            e[before..].iter().filter(|e| ended(e)).count() >= n
        });
        ensure!(all_ended, "the {n} runs did not end");
        for p in posts {
            let (s, body) = p.join().map_err(|_| anyhow::anyhow!("submit panicked"))??;
            ensure!(s == 202, "start answered {s}: {body}");
        }
        let events = monitor.events();
        let first = events[before..]
            .iter()
            .filter(|e| e.event == "started")
            .map(|e| e.at)
            .min()
            .context("no start")?;
        let last = events[before..]
            .iter()
            .filter(|e| ended(e))
            .map(|e| e.at)
            .max()
            .context("no end")?;
        let secs = |a: Instant, b: Instant| {
            if a >= b {
                (a - b).as_secs_f64()
            } else {
                -(b - a).as_secs_f64()
            }
        };
        coverage = Some((secs(first, hold_start), secs(last, hold_end)));
    }
    Ok(WsPhase {
        ping: report.report(Op::Ping),
        get,
        subscribed: report.subscribed,
        coverage,
    })
}

/// Simulated seconds per wall second of one flat-out run of `project` on the idle shard.
fn calibrate(
    server: &Server,
    user: &User,
    monitor: &Monitor,
    project: &str,
) -> anyhow::Result<f64> {
    let before = monitor.events().len();
    let seconds = 600.0;
    let post = submit_async(
        server.addr,
        &user.token,
        json!({"project_id": project, "duration_s": seconds, "speed": 0}),
    );
    if !monitor.wait(Duration::from_secs(60), |e| e[before..].iter().any(ended)) {
        let seen: Vec<String> = monitor.events()[before..]
            .iter()
            .map(|e| e.event.clone())
            .collect();
        let answer = if post.is_finished() {
            format!(
                "{:?}",
                post.join()
                    .map_err(|_| anyhow::anyhow!("submit panicked"))?
            )
        } else {
            "none yet".into()
        };
        bail!("the calibration run did not end within 60 s; events seen: {seen:?}; start answer: {answer}");
    }
    post.join()
        .map_err(|_| anyhow::anyhow!("submit panicked"))??;
    let events = monitor.events();
    let started = events[before..]
        .iter()
        .find(|e| e.event == "started")
        .context("no start")?
        .at;
    let done = events[before..]
        .iter()
        .find(|e| ended(e))
        .context("no end")?
        .at;
    Ok(seconds / (done - started).as_secs_f64().max(1e-3))
}

/// A server of parts B and C: `simulation.slice` and `runtime.driver`, written `1ms/epoll`.
struct SimConfig {
    label: String,
    sets: Vec<String>,
}

fn sim_config(args: &Args, text: &str) -> SimConfig {
    let (slice, driver) = text.split_once('/').unwrap_or((text, ""));
    let mut sets = vec![
        format!("simulation.slice={slice}"),
        format!("simulation.runs_per_shard={}", args.sim_runs),
        // 200 clients of one account; the default allows 100 per user.
        "websocket.max_connections_per_user=0".into(),
        // Part C: neither limit binds (they apply to runs queued or running, not to part B).
        "simulation.max_runs_per_user=1000".into(),
        "simulation.max_queued=4096".into(),
    ];
    if !driver.is_empty() {
        sets.push(format!("runtime.driver={driver}"));
    }
    let driver = if driver.is_empty() { "auto" } else { driver };
    SimConfig {
        label: format!("{slice}, {driver}"),
        sets,
    }
}

/// Part B on one server: (table rows, every-run lines).
fn part_ws(
    args: &Args,
    config: &SimConfig,
    server: &Server,
    user: &User,
    monitor: &Monitor,
) -> anyhow::Result<(String, String)> {
    let label = &config.label;
    let (mut rows, mut per_run) = (String::new(), String::new());
    let design = scaled_design(server.addr, user, 10.0)?;
    let project = create_project(
        server.addr,
        user,
        &json!({"name": "heavy", "design": design}),
    )?;
    let project = project["id"].as_str().context("project id")?.to_string();
    let speed = calibrate(server, user, monitor, &project)?;
    let window = args.ws_clients as f64 / 1000.0 + 1.0 + args.ws_duration + 2.0;
    let seconds = (speed * window).ceil();
    let line = format!("{label}: calibration: one run alone simulates {speed:.0} s per wall second; measured runs are {seconds} simulated s");
    eprintln!("{line}");
    writeln!(per_run, "{line}")?;
    let (mut idle, mut busy) = (Vec::new(), Vec::new());
    for run in 1..=args.runs {
        for with_sims in if run % 2 == 1 {
            [false, true]
        } else {
            [true, false]
        } {
            let sims = with_sims.then_some((monitor, seconds));
            let phase = ws_phase(args, server, user, &project, sims)?;
            let cov = phase.coverage.map_or(String::new(), |(a, b)| format!("; runs: first started {a:+.2} s from the hold's start, last ended {b:+.2} s from its end"));
            let kind = if with_sims {
                "with runs"
            } else {
                "without runs"
            };
            let line = format!(
                "{label} run {run} {kind:<12} subscribed {}  pings {:.0}/s  {} ms  errors {}; GET /api/projects/{{id}} ×{}: {} ms{cov}",
                phase.subscribed,
                phase.ping.throughput(),
                fmt_pcts(&pcts(&phase.ping)),
                errors_text(&phase.ping),
                phase.get.counters.completed,
                fmt_pcts(&pcts(&phase.get)),
            );
            eprintln!("{line}");
            writeln!(per_run, "{line}")?;
            if with_sims { &mut busy } else { &mut idle }.push((phase.ping, phase.get));
        }
    }
    let split = |v: Vec<(Report, Report)>| -> (Vec<Report>, Vec<Report>) { v.into_iter().unzip() };
    let ((idle, idle_get), (busy, busy_get)) = (split(idle), split(busy));
    let (a, b) = (median_pcts(&idle), median_pcts(&busy));
    let tp = |v: &[Report]| median(v.iter().map(Report::throughput).collect());
    let errs = |v: &[Report]| v.iter().map(Report::errors).sum::<u64>();
    let get = |v: &[Report]| {
        let p = median_pcts(v);
        format!("{:.3} / {:.3}", p[0], p[3])
    };
    writeln!(
        rows,
        "| {label} | without runs | {:.0} | {} | {} | | {} |",
        tp(&idle),
        fmt_pcts(&a),
        errs(&idle),
        get(&idle_get)
    )?;
    writeln!(
        rows,
        "| {label} | with {} runs | {:.0} | {} | {} | **{}** | {} |",
        args.sim_runs,
        tp(&busy),
        fmt_pcts(&b),
        errs(&busy),
        fmt_ratios(&b, &a),
        get(&busy_get)
    )?;
    Ok((rows, per_run))
}

const WS_NOTE: &str = "How a run shares the shard: at speed 0 it advances the engine in steps of at most `duration_s / 2000` simulated seconds, halving the step while one takes more than a quarter of `simulation.slice` and doubling it back while one takes less than a sixteenth, until the slice has passed; then it calls `sdsim_core::mesh::yield_to_driver`, which lets the shard's other ready tasks run and makes monoio poll its driver (sockets, timers, wake-ups from other threads such as the SQLite threads' answers) without idling. (monoio 0.2.4 polls its driver fully only when it parks, and a task that only yields keeps it from parking: before this, 2 flat-out runs held pings for seconds on io_uring.) So with N runs flat out on a shard, a request can wait up to about N slices. The last column: one `GET /api/projects/{id}` every 100 ms from another client (a role lookup and a project read on the SQLite reader threads). The runs are sized (from the calibration run) to end by themselves shortly after the window rather than being stopped; the per-run lines show when they started and ended relative to the measured hold.";

fn ws_header(args: &Args) -> String {
    format!(
        "\n## B. WebSocket ping round trip while simulations run on the same shard\n\n{} clients of one account connected and subscribed (to `system:announcements`, where nothing is published) on the one shard, `{{\"op\":\"ping\"}}` → `{{\"op\":\"pong\"}}` at {:.0}/s in total (open loop, latency from each ping's intended send time, `sdsim-loadtest` ws engine pinned to CPU {}), {} s measured after 1 s; without simulations, then with {} runs (= `simulation.runs_per_shard`) started at speed 0 (flat out) on that shard just before the clients connect. Runs are the three-tier template with its load and instances ×10, their simulated duration sized from a calibration run to outlast the measurement. Latency in ms, medians of {} runs; the two phases alternate which goes first. Rows are sdsim servers by `simulation.slice` and `runtime.driver` (auto = io_uring when the kernel allows it).\n\n| slice, driver | phase | pings/s | p50 / p99 / p99.9 / max ms | errors | with / without: p50 / p99 / p99.9 / max | GET /api/projects/{{id}} meanwhile, p50 / max ms |\n|---|---|---|---|---|---|---|\n",
        args.ws_clients, args.ping_rate, args.client_cpu, args.ws_duration, args.sim_runs, args.runs
    )
}

// ---------------------------------------------------------------------------------------------
// Part C: simulation runs per second.

#[derive(Default)]
struct Submits {
    /// (simulation id, when its POST was sent).
    accepted: Vec<(String, Instant)>,
    too_many: u64,
    queue_full: u64,
    other: Vec<String>,
}

/// One user's submitter: keeps `inflight` runs outstanding until `until`.
fn submitter(
    gateway: SocketAddr,
    token: String,
    body: Value,
    inflight: usize,
    until: Instant,
    ended: mpsc::Receiver<()>,
    submits: Arc<Mutex<Submits>>,
) -> anyhow::Result<()> {
    let (a, url) = (agent(), format!("http://{gateway}/api/simulations"));
    let mut outstanding = 0usize;
    while Instant::now() < until {
        while outstanding < inflight && Instant::now() < until {
            let sent = Instant::now();
            let (s, answer) = call(&a, "POST", &url, Some(&token), Some(&body))?;
            let mut sub = submits.lock().unwrap();
            match s {
                202 => {
                    sub.accepted
                        .push((answer["simulation_id"].as_str().unwrap_or("").into(), sent));
                    outstanding += 1;
                }
                429 | 503 => {
                    *if s == 429 {
                        &mut sub.too_many
                    } else {
                        &mut sub.queue_full
                    } += 1;
                    drop(sub);
                    std::thread::sleep(Duration::from_millis(10));
                    break;
                }
                _ => sub.other.push(format!("{s}: {answer}")),
            }
        }
        let left = until
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        if ended.recv_timeout(left).is_ok() {
            outstanding = outstanding.saturating_sub(1 + ended.try_iter().count());
        }
    }
    Ok(())
}

/// Part C on one server: (table row, every-run lines).
fn part_runs(
    args: &Args,
    config: &SimConfig,
    server: &Server,
    monitor: &Monitor,
    fresh: bool,
) -> anyhow::Result<(String, String)> {
    let mode = if fresh { "fresh" } else { "same" };
    let label = format!(
        "{}; {}",
        config.label,
        if fresh {
            "new users every run"
        } else {
            "same users every run"
        }
    );
    let new_users = |round: usize| -> anyhow::Result<Vec<(User, Value)>> {
        let mut users = Vec::new();
        for u in 0..args.run_users {
            let user = account(
                server.addr,
                &format!("runner{u}-{mode}-{round}@example.com"),
            )?;
            let project = create_project(
                server.addr,
                &user,
                &json!({"name": "short runs", "template_id": "three-tier"}),
            )?;
            let body =
                json!({"project_id": project["id"], "duration_s": args.run_seconds, "speed": 0});
            users.push((user, body));
        }
        Ok(users)
    };
    let mut users = new_users(0)?;
    let window = Duration::from_secs_f64(args.run_window);
    let (mut rows, mut per_run) = (Vec::new(), String::new());
    // Runs already stored for these users (all of them ended).
    let mut history = 0;
    for run in 1..=args.runs {
        if fresh && run > 1 {
            users = new_users(run)?;
            history = 0;
        }
        let before = monitor.events().len();
        let from = Instant::now() + Duration::from_secs(2);
        let until = from + window;
        let submits = Arc::new(Mutex::new(Submits::default()));
        let mut threads = Vec::new();
        for (user, body) in &users {
            let (tx, rx) = mpsc::channel();
            monitor
                .state
                .lock()
                .unwrap()
                .routes
                .insert(user.id.clone(), tx);
            let (token, body, submits) = (user.token.clone(), body.clone(), Arc::clone(&submits));
            let (gateway, inflight, cpu) = (server.addr, args.run_inflight, args.client_cpu);
            threads.push(std::thread::spawn(move || {
                pin_current(cpu);
                submitter(gateway, token, body, inflight, until, rx, submits)
            }));
        }
        for t in threads {
            t.join()
                .map_err(|_| anyhow::anyhow!("a submitter panicked"))??;
        }
        let submits = std::mem::take(&mut *submits.lock().unwrap());
        let accepted: HashMap<&str, Instant> = submits
            .accepted
            .iter()
            .map(|(id, t)| (id.as_str(), *t))
            .collect();
        let mine = |e: &SimEvent| ended(e) && accepted.contains_key(e.id.as_str());
        let all_ended = monitor.wait(Duration::from_secs(120), |e| {
            e[before..].iter().filter(|e| mine(e)).count() >= accepted.len()
        });
        monitor.state.lock().unwrap().routes.clear();
        let events = monitor.events()[before..].to_vec();
        let starts: HashMap<&str, Instant> = events
            .iter()
            .filter(|e| e.event == "started")
            .map(|e| (e.id.as_str(), e.at))
            .collect();
        let ends: Vec<&SimEvent> = events.iter().filter(|e| mine(e)).collect();
        let done = ends
            .iter()
            .filter(|e| e.event == "completed" && e.at >= from && e.at < until)
            .count();
        let failed = ends.iter().filter(|e| e.event != "completed").count();
        let (mut total, mut exec) = (Report::new(window), Report::new(window));
        let micros = |d: Duration| (d.as_micros() as u64).clamp(1, Report::MAX_US);
        for e in ends
            .iter()
            .filter(|e| (from..until).contains(&accepted[e.id.as_str()]))
        {
            let _ = total
                .histogram
                .record(micros(e.at - accepted[e.id.as_str()]));
            if let Some(s) = starts.get(e.id.as_str()) {
                let _ = exec
                    .histogram
                    .record(micros(e.at.saturating_duration_since(*s)));
            }
        }
        let per_s = done as f64 / window.as_secs_f64();
        let line = format!(
            "{} run {run}: {per_s:.1} runs/s completed in the window ({history} runs of these users stored before it); accepted {} (all ended: {all_ended}), failed or stopped {failed}, 429 {}, 503 {}, other answers {:?}; submit → completed {} ms; started → completed {} ms",
            label, accepted.len(), submits.too_many, submits.queue_full, submits.other.iter().take(3).collect::<Vec<_>>(), fmt_pcts(&pcts(&total)), fmt_pcts(&pcts(&exec))
        );
        eprintln!("{line}");
        writeln!(per_run, "{line}")?;
        history += accepted.len();
        rows.push((
            per_s,
            submits.too_many,
            submits.queue_full,
            failed,
            total,
            exec,
        ));
    }
    let totals: Vec<Report> = rows.iter().map(|r| r.4.clone()).collect();
    let execs: Vec<Report> = rows.iter().map(|r| r.5.clone()).collect();
    let each: Vec<String> = rows.iter().map(|r| format!("{:.1}", r.0)).collect();
    let row = format!(
        "| {} | **{:.1}** | {} | {} | {} | {} | {} | {} |\n",
        label,
        median(rows.iter().map(|r| r.0).collect()),
        each.join(", "),
        rows.iter().map(|r| r.1).sum::<u64>(),
        rows.iter().map(|r| r.2).sum::<u64>(),
        rows.iter().map(|r| r.3).sum::<usize>(),
        fmt_pcts(&median_pcts(&totals)),
        fmt_pcts(&median_pcts(&execs))
    );
    Ok((row, per_run))
}

const RUNS_NOTE: &str = "`POST /api/simulations` checks `simulation.max_runs_per_user` inside its INSERT with `SELECT COUNT(*) FROM simulation_schema.simulations WHERE user_id = $4 AND status IN ('queued', 'running')`, on the one SQLite writer thread. Migration 4 added the partial index `simulations_active` on `(user_id) WHERE status IN ('queued', 'running')`, so the count reads only the user's active runs (a unit test checks SQLite's plan); before it, the count read the user's whole history and runs/s fell as the table grew. The rows \"new users every run\" give every run new accounts, so each run starts with no history of its own (the database still holds the earlier runs): equal figures in both rows mean history does not slow starting a run.";

fn runs_header(args: &Args) -> String {
    format!(
        "\n## C. Simulation runs per second (no peer: no other server runs these designs)\n\n{} users, each keeping {} runs queued or running (a new one as soon as the WebSocket reports one of theirs ended; 429 / 503 answers retried after 10 ms), runs of the three-tier template for {} simulated seconds at speed 0, {} s measured after 2 s, on the part B servers (`simulation.max_runs_per_user=1000` and `simulation.max_queued=4096`, so neither limit binds: the counts show it). Completion is seen on `simulation:events:completed` by a WebSocket client of an admin account (made with `sdsim user add --role admin`: the instance-wide feeds are for admins); submit latency from the POST's send time; runs/s counts completions inside the measured window. Medians of {} runs; counts are totals. The same users submit in every run, so each run starts with the runs of the runs before it stored (see the note under the table).\n\n| slice, driver; users | completed runs/s | each run, in order | 429 | 503 | failed or stopped | submit → completed p50 / p99 / p99.9 / max ms | started → completed p50 / p99 / p99.9 / max ms |\n|---|---|---|---|---|---|---|---|\n",
        args.run_users, args.run_inflight, args.run_seconds, args.run_window, args.runs
    )
}

// ---------------------------------------------------------------------------------------------

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for bin in [&args.sdsim, &args.peer] {
        if !Path::new(bin).exists() {
            bail!("{bin} not found: cargo build --release -p sdsim-server -p sdsim-bench");
        }
    }
    for p in &args.parts {
        ensure!(
            ["api", "ws", "runs"].contains(&p.as_str()),
            "unknown part {p}: api, ws, runs"
        );
    }
    for m in &args.run_users_mode {
        ensure!(
            ["same", "fresh"].contains(&m.as_str()),
            "unknown --run-users-mode {m}: same, fresh"
        );
    }
    let dir = std::env::temp_dir().join(format!("sdsim-bench-projects-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let started = Instant::now();
    let load_at_start = load_average();
    let result = bench(&args, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let body = result?;
    let command: Vec<String> = std::env::args().collect();
    let commit = Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let mut report = format!("# Project and simulation services: {}\n\n", machine_line());
    writeln!(
        report,
        "- command: `{}` (sdsim {commit})",
        command.join(" ")
    )?;
    writeln!(report, "- servers pinned to CPU {} (every thread), load generators to CPU {}; one sdsim shard; a fresh SQLite database per server in a temporary directory", args.server_cpu, args.client_cpu)?;
    writeln!(report, "- sdsim `--set` of every server: `runtime.shards=1` `runtime.cpus=[{}]` `storage.url=sqlite://TMP/<server>/sdsim.db` `ratelimit.enabled=false` `log.access=false` `log.level=warn` `auth.access_ttl=1h` (tokens outlive the run){}, and every listener (`gateway.listen`, `auth.grpc_listen`, `auth.http_listen`, `project.grpc_listen`, `project.http_listen`, `simulation.grpc_listen`, `simulation.http_listen`) on a free 127.0.0.1 port; per part below", args.server_cpu, args.sdsim_set.iter().map(|s| format!(" `{s}`")).collect::<String>())?;
    writeln!(report, "- load average (1 min): {load_at_start} at the start, {} at the end (the machine is shared; other work on it skews every figure); wall time {:.0} s", load_average(), started.elapsed().as_secs_f64())?;
    report.push_str(&body);
    sdsim_bench::write_report(args.out.as_deref(), "projects", &report)?;
    Ok(())
}

fn bench(args: &Args, dir: &Path) -> anyhow::Result<String> {
    let has = |part: &str| args.parts.iter().any(|p| p == part);
    let mut out = String::new();
    if has("api") {
        out.push_str(&part_api(args, dir)?);
    }
    let ws: &[String] = if has("ws") { &args.ws_configs } else { &[] };
    let runs: &[String] = if has("runs") { &args.run_configs } else { &[] };
    let mut configs: Vec<&String> = ws.iter().collect();
    configs.extend(runs.iter().filter(|c| !ws.contains(c)));
    // Tables rows and every-run lines of parts B and C.
    let (mut ws_rows, mut ws_lines) = (String::new(), String::new());
    let (mut run_rows, mut run_lines) = (String::new(), String::new());
    for (k, text) in configs.into_iter().enumerate() {
        let config = sim_config(args, text);
        let sims_dir = dir.join(format!("sims{k}"));
        let admin = add_admin(args, &sims_dir)?;
        let mut server = start_sdsim(args, &sims_dir, "sdsim", &config.sets)?;
        let user = account(server.addr, "watcher@example.com")?;
        let admin = login(server.addr, &admin)?;
        let monitor = Monitor::start(server.addr, &admin.token, args.client_cpu)?;
        let sets: Vec<String> = config.sets.iter().map(|s| format!("`{s}`")).collect();
        let line = format!("{}: sdsim --set {}\n", config.label, sets.join(" "));
        if ws.contains(text) {
            let result = part_ws(args, &config, &server, &user, &monitor);
            server.check_alive()?;
            let (rows, lines) = result?;
            ws_rows.push_str(&rows);
            ws_lines.push_str(&(line.clone() + &lines));
        }
        if runs.contains(text) {
            run_lines.push_str(&line);
            for mode in &args.run_users_mode {
                let result = part_runs(args, &config, &server, &monitor, mode == "fresh");
                server.check_alive()?;
                let (row, lines) = result?;
                run_rows.push_str(&row);
                run_lines.push_str(&lines);
            }
        }
    }
    for (present, header, rows, lines, note) in [
        (has("ws"), ws_header(args), ws_rows, ws_lines, WS_NOTE),
        (
            has("runs"),
            runs_header(args),
            run_rows,
            run_lines,
            RUNS_NOTE,
        ),
    ] {
        if present {
            out.push_str(&header);
            out.push_str(&rows);
            writeln!(out, "\n{note}")?;
            write!(out, "\n### Every run\n\n```\n{lines}```\n")?;
        }
    }
    Ok(out)
}
