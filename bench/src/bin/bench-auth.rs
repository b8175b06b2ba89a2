//! ValidateToken benchmark: sdsim's `sdsim.auth.v1.AuthService/ValidateToken` against
//! `peer-auth` (tonic 0.14 + jsonwebtoken), same token, same CPU, same load, as ratios.
//!
//! 1. The cost of checking one token on one thread, by library (`sdsim_bench::verify_cost`).
//! 2. sdsim (1 shard, fresh SQLite file, every listener on a free loopback port) is started
//!    pinned to `--server-cpu`; a user registers and logs in over HTTP on the gateway; its access
//!    token is the token of every call.
//! 3. `peer-auth` is started on the same CPU with sdsim's JWKS URL; both must answer the token
//!    valid with the same user, and a tampered copy invalid.
//! 4. The load generator (`sdsim-loadtest`'s engine, in this process, pinned to `--client-cpu`)
//!    calls ValidateToken open loop at each of `--rates` (latency from each call's intended send
//!    time) and closed loop; `--runs` times, the targets alternating. Medians are reported.
//!
//! `--self-test` needs no sdsim: it mints its own key and token (ring), gives `peer-auth` the
//! JWKS as a `file://` URL, checks its answers and runs the load against the peer alone.
//!
//! `cargo build --release -p sdsim-server -p sdsim-bench && target/release/bench-auth --runs 3`

use anyhow::{bail, ensure, Context};
use clap::Parser;
use mimalloc::MiMalloc;
use prost::Message;
use sdsim_bench::proc_sample::load_average;
use sdsim_bench::process::{free_port, pinned, stop, wait_ready};
use sdsim_bench::proto::ValidateTokenRequest;
use sdsim_bench::token::{unix_now, Claims, Signer};
use sdsim_bench::token_checks::{self, Target};
use sdsim_bench::{machine_line, median, utc_stamp, verify_cost};
use sdsim_loadtest::report::Report;
use sdsim_loadtest::run::{build_request, run_http, GrpcCall, HttpLoad, Protocol};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

const METHOD: &str = "/sdsim.auth.v1.AuthService/ValidateToken";

#[derive(Parser)]
struct Args {
    /// Runs per target and load (alternating targets); medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Measured seconds per load point.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Warm-up seconds per load point.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Open-loop rates (calls/s); closed-loop runs over 1 connection (the unloaded round trip)
    /// and over `--connections` (the most calls per second) follow them.
    #[arg(long, value_delimiter = ',', default_value = "2000,10000,20000")]
    rates: Vec<f64>,
    /// HTTP/2 connections of the open-loop and the max-throughput runs, one call in flight on
    /// each.
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// CPU for the servers under test.
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
    /// CPU for the load generator and the single-thread cost measurement.
    #[arg(long, default_value_t = 1)]
    client_cpu: usize,
    /// Token checks timed per operation of the cost measurement (0 = skip it).
    #[arg(long, default_value_t = 20_000)]
    verify_iterations: u32,
    /// Measured seconds of the login run (closed loop on sdsim only; 0 = skip it).
    #[arg(long, default_value_t = 10.0)]
    login_seconds: f64,
    /// Connections of the login run, one login in flight on each.
    #[arg(long, default_value_t = 4)]
    login_connections: usize,
    /// The sdsim binary.
    #[arg(long, default_value = "target/release/sdsim")]
    sdsim: String,
    /// The peer binary.
    #[arg(long, default_value = "target/release/peer-auth")]
    peer: String,
    /// Peer only, with a self-minted key and token served as a file:// JWKS (no sdsim).
    #[arg(long)]
    self_test: bool,
    /// The Markdown report (default: bench/results/<UTC time>-auth.md; none with --self-test).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// A server process, stopped when dropped.
struct Server {
    name: &'static str,
    addr: SocketAddr,
    child: Option<Child>,
}

impl Server {
    fn start(name: &'static str, mut command: Command, port: u16) -> anyhow::Result<Server> {
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        if let Err(e) = wait_ready(port, &mut child) {
            stop(child);
            return Err(e.context(format!("{name} did not come up")));
        }
        Ok(Server {
            name,
            addr: ([127, 0, 0, 1], port).into(),
            child: Some(child),
        })
    }
}

fn target(server: &Server) -> Target<'_> {
    Target {
        name: server.name,
        addr: server.addr,
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop(child);
        }
    }
}

/// An access token and where fresh ones come from.
struct TokenSource {
    token: String,
    expires_at: u64,
    /// sdsim's gateway and the account's password; `None` in self-test (the token lasts 1 h).
    login: Option<(SocketAddr, String)>,
}

impl TokenSource {
    /// The token, logging in again when it would expire within `needed`.
    fn valid_for(&mut self, needed: Duration) -> anyhow::Result<&str> {
        if self.expires_at < unix_now() + needed.as_secs() + 30 {
            let Some((gateway, password)) = &self.login else {
                bail!("the self-test token expires before the run ends");
            };
            let (token, expires_at) = login(*gateway, password)?;
            self.token = token;
            self.expires_at = expires_at;
        }
        Ok(&self.token)
    }
}

const EMAIL: &str = "bench@example.com";

fn post_json(url: &str, body: &serde_json::Value) -> anyhow::Result<(u16, serde_json::Value)> {
    let response = ureq::post(url)
        .config()
        .http_status_as_error(false)
        .build()
        .header("content-type", "application/json")
        .send(body.to_string())
        .with_context(|| format!("POST {url}"))?;
    let status = response.status().as_u16();
    let text = response.into_body().read_to_string()?;
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    Ok((status, json))
}

/// Registers the benchmark account on a fresh sdsim.
fn register(gateway: SocketAddr, password: &str) -> anyhow::Result<()> {
    let url = format!("http://{gateway}/api/auth/register");
    let (status, body) = post_json(
        &url,
        &serde_json::json!({"email": EMAIL, "password": password}),
    )?;
    ensure!(status == 201, "register answered {status}: {body}");
    Ok(())
}

/// Logs in; returns the access token and its expiry (Unix seconds).
fn login(gateway: SocketAddr, password: &str) -> anyhow::Result<(String, u64)> {
    let url = format!("http://{gateway}/api/auth/login");
    let (status, body) = post_json(
        &url,
        &serde_json::json!({"email": EMAIL, "password": password}),
    )?;
    ensure!(status == 200, "login answered {status}: {body}");
    let token = body["access_token"]
        .as_str()
        .with_context(|| format!("login answer has no access_token: {body}"))?;
    let expires_in = body["expires_in"].as_u64().unwrap_or(900);
    Ok((token.to_owned(), unix_now() + expires_in))
}

/// 144 random bits, base64url, plus every character class a password policy may ask for.
fn strong_password() -> anyhow::Result<String> {
    use base64::Engine;
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 18];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("no randomness"))?;
    Ok(format!(
        "{}-Aa9!",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// A load point: open loop at a rate over `--connections`, or closed loop over N connections.
#[derive(Clone, Copy)]
enum Load {
    Open(f64),
    Closed(usize),
}

impl Load {
    fn label(self) -> String {
        match self {
            Load::Open(rate) => format!("{rate:.0}/s"),
            Load::Closed(1) => "closed, 1 conn".into(),
            Load::Closed(n) => format!("closed, {n} conns"),
        }
    }
}

fn measure(server: &Server, load: Load, token: &str, args: &Args) -> anyhow::Result<Report> {
    let message = ValidateTokenRequest {
        token: token.to_owned(),
        calling_service: "bench".into(),
    }
    .encode_to_vec();
    run_http(&HttpLoad {
        addr: server.addr,
        request: bytes::Bytes::new(),
        connections: match load {
            Load::Open(_) => args.connections,
            Load::Closed(n) => n,
        },
        rate: match load {
            Load::Open(rate) => Some(rate),
            Load::Closed(_) => None,
        },
        duration: Duration::from_secs_f64(args.duration),
        warmup: Duration::from_secs_f64(args.warmup),
        cpus: vec![args.client_cpu],
        interval: Duration::from_secs(1),
        phases: Vec::new(),
        timeout: sdsim_loadtest::run::DEFAULT_TIMEOUT,
        protocol: Protocol::Grpc(GrpcCall {
            path: METHOD.into(),
            message: message.into(),
            metadata: Vec::new(),
        }),
    })
}

/// Logins over HTTP on the gateway, closed loop over `--login-connections`: each is one argon2id
/// verification on the hashing pool plus a session written to storage.
fn measure_logins(gateway: SocketAddr, password: &str, args: &Args) -> anyhow::Result<Report> {
    let body = serde_json::json!({"email": EMAIL, "password": password}).to_string();
    run_http(&HttpLoad {
        addr: gateway,
        request: build_request(
            "POST",
            &gateway.to_string(),
            "/api/auth/login",
            &["Content-Type: application/json".to_owned()],
            body.as_bytes(),
        ),
        connections: args.login_connections,
        rate: None,
        duration: Duration::from_secs_f64(args.login_seconds),
        warmup: Duration::from_secs(1),
        cpus: vec![args.client_cpu],
        interval: Duration::from_secs(1),
        phases: Vec::new(),
        timeout: sdsim_loadtest::run::DEFAULT_TIMEOUT,
        protocol: Protocol::Http,
    })
}

/// What one argon2id verification (a login's work) costs on one thread of `cpu`: median of 5
/// rounds of 10, in ns.
fn argon2_verify_ns(cpu: usize) -> anyhow::Result<f64> {
    std::thread::spawn(move || {
        sdsim_bench::pin_current(cpu);
        let hash = sdsim_auth::password::hash_now("correct horse battery staple")?;
        let mut rounds = Vec::new();
        for _ in 0..6 {
            let began = std::time::Instant::now();
            for _ in 0..10 {
                ensure!(
                    sdsim_auth::password::verify_now("correct horse battery staple", &hash),
                    "argon2 rejects its own hash"
                );
            }
            rounds.push(began.elapsed().as_nanos() as f64 / 10.0);
        }
        rounds.remove(0); // warm-up
        Ok(median(rounds))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the argon2 measurement panicked"))?
}

/// The login table: measured logins/s and latency against the bound one hashing thread sets.
fn login_table(reports: &[Report], verify_ns: f64, args: &Args) -> anyhow::Result<String> {
    let row = summarize(reports);
    let bound = 1e9 / verify_ns;
    let mut out = format!(
        "
## Login throughput (sdsim only: the peer has no login)

Closed loop, {} connections, {} s after 1 s warm-up, `POST /api/auth/login` of one account with its password; the sdsim process (1 shard, so 1 argon2 thread: `auth.hash_threads = 0` is one per shard) pinned to CPU {}. Bound: one argon2id verification (the crate's defaults: 19 MiB, 2 passes, 1 lane) per login on one thread, measured on CPU {}.

| logins/s | p50 ms | p99 ms | p99.9 ms | max ms | errors | argon2id verify ms | bound logins/s | measured / bound |
|---|---|---|---|---|---|---|---|---|
",
        args.login_connections, args.login_seconds, args.server_cpu, args.client_cpu
    );
    writeln!(
        out,
        "| {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {:.2} | {:.1} | {} |",
        row.throughput,
        row.p50 / 1e3,
        row.p99 / 1e3,
        row.p999 / 1e3,
        row.max / 1e3,
        row.errors,
        verify_ns / 1e6,
        bound,
        ratio(row.throughput, bound)
    )?;
    Ok(out)
}

/// The figures of one target at one load point, medians over runs (latencies in µs).
struct Row {
    throughput: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
    errors: u64,
    late: u64,
}

fn summarize(reports: &[Report]) -> Row {
    let med = |f: &dyn Fn(&Report) -> f64| median(reports.iter().map(f).collect());
    Row {
        throughput: med(&|r| r.throughput()),
        p50: med(&|r| r.percentiles().p50 * 1e3),
        p99: med(&|r| r.percentiles().p99 * 1e3),
        p999: med(&|r| r.percentiles().p999 * 1e3),
        max: med(&|r| r.percentiles().max * 1e3),
        errors: reports.iter().map(|r| r.errors()).sum(),
        late: reports.iter().map(|r| r.counters.late).sum(),
    }
}

fn run_line(name: &str, load: Load, report: &Report) -> String {
    let p = report.percentiles();
    format!(
        "{:<6} {:>12} {:>9.0} calls/s  p50 {:.0} µs  p99 {:.0} µs  p99.9 {:.0} µs  max {:.0} µs  errors {} {:?}  late {}",
        name,
        load.label(),
        report.throughput(),
        p.p50 * 1e3,
        p.p99 * 1e3,
        p.p999 * 1e3,
        p.max * 1e3,
        report.errors(),
        report.counters.errors,
        report.counters.late
    )
}

fn cost_table(iterations: u32, cpu: usize) -> anyhow::Result<String> {
    let costs = std::thread::spawn(move || {
        sdsim_bench::pin_current(cpu);
        verify_cost::measure(iterations)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the cost measurement panicked"))??;
    let mut out = format!(
        "\n## Cost per token check, one thread (CPU {cpu}, {iterations} calls per operation, median of 5 rounds)\n\n| operation | ns/op | µs/op |\n|---|---|---|\n"
    );
    for c in costs {
        writeln!(
            out,
            "| {} | {:.0} | {:.2} |",
            c.operation,
            c.ns_per_op,
            c.ns_per_op / 1e3
        )?;
    }
    Ok(out)
}

fn sdsim_command(args: &Args, dir: &Path, ports: &[u16; 7], extra: &[&str]) -> Command {
    let mut c = pinned(&args.sdsim, args.server_cpu);
    c.arg("serve");
    let [gateway, auth_grpc, auth_http, project_grpc, project_http, sim_grpc, sim_http] = ports;
    for set in [
        "runtime.shards=1".to_owned(),
        format!("runtime.cpus=[{}]", args.server_cpu),
        format!("storage.url=sqlite://{}/bench.db", dir.display()),
        format!("gateway.listen=127.0.0.1:{gateway}"),
        format!("auth.grpc_listen=127.0.0.1:{auth_grpc}"),
        format!("auth.http_listen=127.0.0.1:{auth_http}"),
        format!("project.grpc_listen=127.0.0.1:{project_grpc}"),
        format!("project.http_listen=127.0.0.1:{project_http}"),
        format!("simulation.grpc_listen=127.0.0.1:{sim_grpc}"),
        format!("simulation.http_listen=127.0.0.1:{sim_http}"),
        "ratelimit.enabled=false".to_owned(),
        "log.access=false".to_owned(),
    ]
    .into_iter()
    .chain(extra.iter().map(|s| s.to_string()))
    {
        c.arg("--set").arg(set);
    }
    c
}

/// An sdsim process on fresh ports, on the database in `dir`; calls go to its auth gRPC
/// listener. Returns it and its gateway's address.
fn start_sdsim(
    args: &Args,
    dir: &Path,
    name: &'static str,
    extra: &[&str],
) -> anyhow::Result<(Server, SocketAddr)> {
    let mut ports = [0u16; 7];
    for port in &mut ports {
        *port = free_port()?;
    }
    let mut sdsim = Server::start(name, sdsim_command(args, dir, &ports, extra), ports[0])?;
    let gateway = sdsim.addr;
    sdsim.addr = ([127, 0, 0, 1], ports[1]).into();
    if let Some(child) = sdsim.child.as_mut() {
        wait_ready(ports[1], child).with_context(|| format!("{name}'s auth gRPC listener"))?;
    }
    Ok((sdsim, gateway))
}

fn peer_command(args: &Args, port: u16, jwks: &str) -> Command {
    let mut c = pinned(&args.peer, args.server_cpu);
    c.args([
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--jwks",
        jwks,
        "--cpus",
        &args.server_cpu.to_string(),
    ]);
    c
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let needed: &[&str] = if args.self_test {
        &[&args.peer]
    } else {
        &[&args.sdsim, &args.peer]
    };
    for bin in needed {
        if !Path::new(bin).exists() {
            bail!("{bin} not found: cargo build --release -p sdsim-server -p sdsim-bench");
        }
    }
    let dir = std::env::temp_dir().join(format!("sdsim-bench-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = bench(&args, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let report = result?;
    print!("{report}");
    let out = match (&args.out, args.self_test) {
        (Some(path), _) => Some(path.clone()),
        (None, false) => Some(PathBuf::from(format!(
            "bench/results/{}-auth.md",
            utc_stamp()
        ))),
        (None, true) => None,
    };
    if let Some(path) = out {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, &report).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// The servers to measure (sdsim first), their token, and the check lines for the report.
type Started = (Vec<Server>, TokenSource, String);

/// Self-test: a self-minted key and token, `peer-auth` reading the JWKS from a file.
fn start_self_test(args: &Args, dir: &Path) -> anyhow::Result<Started> {
    let signer = Signer::generate("k1")?;
    let claims = Claims::sample(3600);
    let token = signer.mint(&claims)?;
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, signer.jwks())?;
    let port = free_port()?;
    let url = format!("file://{}", jwks.display());
    let peer = Server::start("peer", peer_command(args, port, &url), port)?;
    let checks = token_checks::check(&[target(&peer)], &token, Some(&signer), Some(&claims), true)?;
    let tokens = TokenSource {
        token,
        expires_at: claims.exp,
        login: None,
    };
    Ok((vec![peer], tokens, checks))
}

/// sdsim on a fresh database, an account and its token, `peer-auth` on sdsim's JWKS URL.
fn start_sdsim_and_peer(args: &Args, dir: &Path) -> anyhow::Result<Started> {
    let (sdsim, gateway) = start_sdsim(args, dir, "sdsim", &[])?;
    // The same database, so the same signing keys: the same tokens verify on both.
    let (uncached, _) = start_sdsim(
        args,
        dir,
        "sdsim (no cache)",
        &["auth.verify_cache_entries=0"],
    )?;
    let password = strong_password()?;
    register(gateway, &password)?;
    let (token, expires_at) = login(gateway, &password)?;
    let port = free_port()?;
    let url = format!("http://{gateway}/.well-known/jwks.json");
    let peer = Server::start("peer", peer_command(args, port, &url), port)?;
    let checks = token_checks::check(
        &[target(&sdsim), target(&uncached), target(&peer)],
        &token,
        None,
        None,
        false,
    )?;
    let tokens = TokenSource {
        token,
        expires_at,
        login: Some((gateway, password)),
    };
    Ok((vec![sdsim, uncached, peer], tokens, checks))
}

/// Runs everything; returns the Markdown report.
fn bench(args: &Args, dir: &Path) -> anyhow::Result<String> {
    let load_at_start = load_average();
    let costs = if args.verify_iterations > 0 {
        eprintln!(
            "== cost per token check ({} calls each)",
            args.verify_iterations
        );
        cost_table(args.verify_iterations, args.client_cpu)?
    } else {
        String::new()
    };
    let (servers, mut tokens, checks) = if args.self_test {
        start_self_test(args, dir)?
    } else {
        start_sdsim_and_peer(args, dir)?
    };
    eprint!("{checks}");

    let loads: Vec<Load> = args
        .rates
        .iter()
        .map(|&r| Load::Open(r))
        .chain([Load::Closed(1), Load::Closed(args.connections)])
        .collect();
    // results[load][server] = one report per run.
    let mut results: Vec<Vec<Vec<Report>>> = vec![vec![Vec::new(); servers.len()]; loads.len()];
    let mut per_run = String::new();
    let per_point = Duration::from_secs_f64(args.duration + args.warmup);
    for run in 1..=args.runs {
        for (l, &load) in loads.iter().enumerate() {
            // Alternate which target goes first, so neither always runs on a warmer machine.
            let mut order: Vec<usize> = (0..servers.len()).collect();
            if run % 2 == 0 {
                order.reverse();
            }
            for s in order {
                let token = tokens.valid_for(per_point)?.to_owned();
                let report = measure(&servers[s], load, &token, args)?;
                let line = run_line(servers[s].name, load, &report);
                eprintln!("run {run} {line}");
                writeln!(per_run, "run {run} {line}")?;
                results[l][s].push(report);
            }
        }
    }
    let logins = match &tokens.login {
        Some((gateway, password)) if args.login_seconds > 0.0 => {
            let verify_ns = argon2_verify_ns(args.client_cpu)?;
            let mut reports = Vec::new();
            for run in 1..=args.runs {
                let report = measure_logins(*gateway, password, args)?;
                let line = run_line("sdsim login", Load::Closed(args.login_connections), &report);
                eprintln!("run {run} {line}");
                writeln!(per_run, "run {run} {line}")?;
                reports.push(report);
            }
            login_table(&reports, verify_ns, args)?
        }
        _ => String::new(),
    };
    let names: Vec<&str> = servers.iter().map(|s| s.name).collect();
    drop(servers);

    let mut out = header(args, load_at_start)?;
    out.push_str(&checks);
    out.push_str(&costs);
    out.push_str(&load_table(&names, &loads, &results)?);
    out.push_str(&logins);
    out.push_str("\n## Every run\n\n```\n");
    out.push_str(&per_run);
    out.push_str("```\n");
    Ok(out)
}

/// The report's first lines: machine, placement, what each target is.
fn header(args: &Args, load_at_start: f64) -> anyhow::Result<String> {
    let mut out = format!("# gRPC ValidateToken: {}\n", machine_line());
    writeln!(
        out,
        "# servers pinned to CPU {} (every thread); load generator (sdsim-loadtest engine, {} HTTP/2 connections unless said otherwise, one call in flight on each) pinned to CPU {}; {} s + {} s warm-up per point; open loop latencies from each call's intended send time; medians of {} runs (errors and late calls: totals), targets alternating",
        args.server_cpu, args.connections, args.client_cpu, args.duration, args.warmup, args.runs
    )?;
    if args.self_test {
        writeln!(
            out,
            "# SELF-TEST: peer only, self-minted key and token (no sdsim)"
        )?;
    } else {
        writeln!(out, "# sdsim: 1 shard, auth role in-process, called on auth.grpc_listen; fresh SQLite database, rate limit and access log off; \"sdsim (no cache)\": a second process on the same database (same keys) with auth.verify_cache_entries=0, so every call verifies the signature as the peer does")?;
    }
    writeln!(out, "# peer: peer-auth, tonic 0.14 + jsonwebtoken 11 (EdDSA, aws-lc-rs backend), tokio multi-thread runtime with one worker per CPU it is pinned to, keys from the JWKS URL fetched once")?;
    writeln!(out, "# open loop: calls/s is the offered rate (every call due in the window is waited for); a server that cannot keep up shows it as latency and late calls (sent more than one interval after their intended time)")?;
    writeln!(out, "# the load generator's timer has 1 ms resolution (monoio): an open-loop call goes out up to ~1 ms after its intended time and that delay is counted, for both targets alike; the 1-connection closed loop is the round trip without it")?;
    writeln!(out, "# request: {{\"token\": <access token>, \"calling_service\": \"bench\"}}, the same token on every call (sdsim answers repeats from its per-shard cache of verified tokens; sdsim (no cache) and jsonwebtoken verify every call)")?;
    writeln!(
        out,
        "# load average (1 min) of the machine: {load_at_start:.2} at the start, {:.2} at the end (other work on it skews the figures)",
        load_average()
    )?;
    Ok(out)
}

/// `a / b` with two decimals, or two significant digits when it is below 0.1.
fn ratio(a: f64, b: f64) -> String {
    let r = a / b;
    if r > 0.0 && r < 0.1 {
        let decimals = (1 - r.log10().floor() as i32).max(2) as usize;
        format!("{r:.decimals$}×")
    } else {
        format!("{r:.2}×")
    }
}

/// One row per target and load point, and the first / second ratios of the medians.
fn load_table(
    names: &[&str],
    loads: &[Load],
    results: &[Vec<Vec<Report>>],
) -> anyhow::Result<String> {
    let mut out = String::from("\n## ValidateToken under load\n\n| load | target | calls/s | p50 µs | p99 µs | p99.9 µs | max µs | errors | late |\n|---|---|---|---|---|---|---|---|---|\n");
    for (load, per_target) in loads.iter().zip(results) {
        let rows: Vec<Row> = per_target.iter().map(|r| summarize(r)).collect();
        for (name, row) in names.iter().zip(&rows) {
            writeln!(
                out,
                "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} |",
                load.label(),
                name,
                row.throughput,
                row.p50,
                row.p99,
                row.p999,
                row.max,
                row.errors,
                row.late
            )?;
        }
        // Every sdsim configuration against the peer (the last target).
        if let Some((b, ours)) = rows.split_last().filter(|(_, ours)| !ours.is_empty()) {
            let peer = names[names.len() - 1];
            for (name, a) in names.iter().zip(ours) {
                writeln!(
                    out,
                    "| {} | **{name} / {peer}** | **{}** | {} | {} | {} | {} | | |",
                    load.label(),
                    ratio(a.throughput, b.throughput),
                    ratio(a.p50, b.p50),
                    ratio(a.p99, b.p99),
                    ratio(a.p999, b.p999),
                    ratio(a.max, b.max)
                )?;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ratios_keep_two_significant_digits() {
        assert_eq!(super::ratio(7.0, 1.0), "7.00×");
        assert_eq!(super::ratio(1.0, 4.0), "0.25×");
        assert_eq!(super::ratio(7.0, 100.0), "0.070×");
        assert_eq!(super::ratio(1299.0, 2_410_495.0), "0.00054×");
    }
}
