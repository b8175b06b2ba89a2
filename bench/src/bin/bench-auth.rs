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
//!    time) and closed loop; `--runs` times, the targets alternating. Medians are reported, with
//!    each server's CPU time per call over the measured window (`/proc`).
//! 5. Cache misses: `--miss-tokens` distinct tokens signed with sdsim's own key (read from its
//!    key table, `sdsim_bench::token_batch`), sent round robin, more of them than sdsim's cache
//!    holds (`--cache-entries`), open loop at `--miss-rate` and closed loop; sdsim's `/metrics`
//!    shows the share answered from the cache.
//! 6. The floor: `bare-hop back --grpc`, a bare HTTP/2 responder answering every call as gRPC,
//!    under the same open-loop and closed-loop loads: what the load generator and loopback
//!    measure when the server does nothing.
//!
//! `--self-test` needs no sdsim: it mints its own key and token (ring), gives `peer-auth` the
//! JWKS as a `file://` URL, checks its answers and runs the load against the peer alone.
//!
//! `cargo build --release -p sdsim-server -p sdsim-bench && target/release/bench-auth --runs 3`

use anyhow::{bail, ensure, Context};
use clap::Parser;
use mimalloc::MiMalloc;
use prost::Message;
use sdsim_bench::proc_sample::{cpu_seconds, load_average};
use sdsim_bench::process::{free_port, pinned, stop, wait_ready};
use sdsim_bench::proto::ValidateTokenRequest;
use sdsim_bench::token::{unix_now, Claims, Signer};
use sdsim_bench::token_checks::{self, Target};
use sdsim_bench::token_login::{argon2_verify_ns, login, register, strong_password, EMAIL};
use sdsim_bench::token_report::{load_table, run_line, summarize, Column, Measured};
use sdsim_bench::{machine_line, token_batch, utc_stamp, verify_cost};
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
    /// The bare responder (`bare-hop back --grpc`), the floor; "" leaves it out.
    #[arg(long, default_value = "target/release/bare-hop")]
    bare: String,
    /// Distinct tokens of the cache-miss runs (0 = no such runs); more than `--cache-entries`.
    #[arg(long, default_value_t = 100_000)]
    miss_tokens: usize,
    /// `auth.verify_cache_entries` of the cached sdsim: fewer than `--miss-tokens`, so a token
    /// sent round robin is gone from the cache when it comes round again.
    #[arg(long, default_value_t = 50_000)]
    cache_entries: usize,
    /// Open-loop rate of the cache-miss runs (calls/s); closed loop over `--connections` follows.
    #[arg(long, default_value_t = 2000.0)]
    miss_rate: f64,
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
    /// sdsim's gateway, where its `/metrics` are.
    gateway: Option<SocketAddr>,
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
            gateway: None,
        })
    }

    /// The process's CPU time so far, s.
    fn cpu(&self) -> f64 {
        self.child
            .as_ref()
            .and_then(|c| cpu_seconds(c.id()))
            .unwrap_or(f64::NAN)
    }

    /// sdsim's token checks so far: (answered from the cache, signatures checked).
    fn token_checks(&self) -> Option<(u64, u64)> {
        let gateway = self.gateway?;
        let (status, text) =
            sdsim_bench::sdsim_process::get_text(&format!("http://{gateway}/metrics"), None)
                .ok()?;
        if status != 200 {
            return None;
        }
        let counter = |result: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with("sdsim_auth_token_checks_total{")
                        && l.contains(&format!("result=\"{result}\""))
                })
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .map_or(0, |v| v as u64)
        };
        Some((counter("cache_hit"), counter("signature_checked")))
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

/// The request message of a token.
fn message(token: &str) -> bytes::Bytes {
    ValidateTokenRequest {
        token: token.to_owned(),
        calling_service: "bench".into(),
    }
    .encode_to_vec()
    .into()
}

/// One run against `server`: the first of `messages` on every call, or all of them round robin;
/// the server's CPU per call over the measured window, and sdsim's cache hit ratio over the run.
fn measure(
    server: &Server,
    load: Load,
    messages: &[bytes::Bytes],
    args: &Args,
) -> anyhow::Result<Measured> {
    let checks_before = server.token_checks();
    // run_http starts its connections 200 ms after it is called; the measured window follows
    // the warm-up.
    let window_start = std::time::Instant::now()
        + Duration::from_millis(200)
        + Duration::from_secs_f64(args.warmup);
    let duration = Duration::from_secs_f64(args.duration);
    let report = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            std::thread::sleep(window_start.saturating_duration_since(std::time::Instant::now()));
            let from = server.cpu();
            std::thread::sleep(
                (window_start + duration).saturating_duration_since(std::time::Instant::now()),
            );
            server.cpu() - from
        });
        let report = run_load(server, load, messages, args);
        let cpu = sampler.join().unwrap_or(f64::NAN);
        report.map(|r| (r, cpu))
    });
    let (report, cpu_s) = report?;
    let calls = report.counters.completed.max(1) as f64;
    let hit_ratio = match (checks_before, server.token_checks()) {
        (Some((h0, m0)), Some((h1, m1))) if h1 + m1 > h0 + m0 => {
            Some((h1 - h0) as f64 / ((h1 + m1) - (h0 + m0)) as f64)
        }
        _ => None,
    };
    Ok(Measured {
        report,
        cpu_us_per_call: cpu_s * 1e6 / calls,
        hit_ratio,
    })
}

fn run_load(
    server: &Server,
    load: Load,
    messages: &[bytes::Bytes],
    args: &Args,
) -> anyhow::Result<Report> {
    let (first, more) = messages
        .split_first()
        .context("a run needs a request message")?;
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
            message: first.clone(),
            more_messages: more.into(),
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

/// The login table: measured logins/s and latency against the bound one hashing thread sets.
fn login_table(reports: &[Measured], verify_ns: f64, args: &Args) -> anyhow::Result<String> {
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
        sdsim_bench::token_report::ratio(row.throughput, bound)
    )?;
    Ok(out)
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
    sdsim.gateway = Some(gateway);
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

/// What the runs need once the servers are up.
struct Started {
    /// sdsim's configurations first, then the peer (`peer` is its index), then the bare floor.
    servers: Vec<Server>,
    peer: usize,
    tokens: TokenSource,
    /// The report lines of the answers checked.
    checks: String,
    /// The cache-miss runs' messages, one distinct token each (empty: no such runs).
    miss: Vec<bytes::Bytes>,
}

/// `bare-hop back --grpc` on a free port, pinned as the servers are (none with `--bare ""`).
fn start_bare(args: &Args) -> anyhow::Result<Option<Server>> {
    if args.bare.is_empty() {
        return Ok(None);
    }
    let port = free_port()?;
    let mut command = pinned(&args.bare, args.server_cpu);
    command.args(["back", "--grpc", "--body-bytes", "200", "--listen"]);
    command.arg(format!("127.0.0.1:{port}"));
    Server::start("bare h2 (floor)", command, port).map(Some)
}

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
    let mut servers = vec![peer];
    servers.extend(start_bare(args)?);
    Ok(Started {
        servers,
        peer: 0,
        tokens,
        checks,
        miss: Vec::new(),
    })
}

/// sdsim on a fresh database, an account and its token, `peer-auth` on sdsim's JWKS URL, the
/// bare floor, and the cache-miss tokens.
fn start_sdsim_and_peer(args: &Args, dir: &Path) -> anyhow::Result<Started> {
    ensure!(
        args.miss_tokens == 0 || args.miss_tokens > args.cache_entries,
        "--miss-tokens {} must exceed --cache-entries {}: round robin over fewer tokens than the cache holds would hit it",
        args.miss_tokens,
        args.cache_entries
    );
    let cache = format!("auth.verify_cache_entries={}", args.cache_entries);
    let (sdsim, gateway) = start_sdsim(args, dir, "sdsim", &[&cache])?;
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
    let miss = if args.miss_tokens > 0 {
        eprintln!(
            "== signing {} distinct tokens with sdsim's key",
            args.miss_tokens
        );
        let key = token_batch::signing_key(&dir.join("bench.db"), &token_batch::kid_of(&token)?)?;
        let template = token_batch::claims_of(&token)?;
        let now = sdsim_auth::service::now();
        // Valid for the whole benchmark: these are not refreshed by logging in again.
        let minted = token_batch::mint(key, &template, args.miss_tokens, now, 6 * 3600)?;
        // Every target must accept them as it accepts the login's token.
        token_checks::check(
            &[target(&sdsim), target(&uncached), target(&peer)],
            &minted[minted.len() - 1],
            None,
            None,
            false,
        )?;
        minted.iter().map(|t| message(t)).collect()
    } else {
        Vec::new()
    };
    let tokens = TokenSource {
        token,
        expires_at,
        login: Some((gateway, password)),
    };
    let mut servers = vec![sdsim, uncached, peer];
    servers.extend(start_bare(args)?);
    Ok(Started {
        servers,
        peer: 2,
        tokens,
        checks,
        miss,
    })
}

/// Runs `loads` against every target `args.runs` times, the targets alternating; appends a line
/// per run to `per_run`. `messages(target)` gives the messages of a run (`None`: skip it); with
/// `resume`, each target's next run starts where its previous one stopped in them (a little
/// past: calls are counted, not tracked), so a round robin goes on across runs instead of
/// sending again the tokens the last run has just left in the cache.
fn run_loads(
    args: &Args,
    servers: &[Server],
    loads: &[Load],
    per_run: &mut String,
    resume: bool,
    mut messages: impl FnMut(usize) -> anyhow::Result<Option<Vec<bytes::Bytes>>>,
) -> anyhow::Result<Vec<Vec<Vec<Measured>>>> {
    let mut offsets = vec![0usize; servers.len()];
    // results[load][server] = one run each.
    let mut results: Vec<Vec<Vec<Measured>>> = vec![vec![Vec::new(); servers.len()]; loads.len()];
    for run in 1..=args.runs {
        for (l, &load) in loads.iter().enumerate() {
            // Alternate which target goes first, so neither always runs on a warmer machine.
            let mut order: Vec<usize> = (0..servers.len()).collect();
            if run % 2 == 0 {
                order.reverse();
            }
            for s in order {
                let Some(mut batch) = messages(s)? else {
                    continue;
                };
                if resume && !batch.is_empty() {
                    let by = offsets[s] % batch.len();
                    batch.rotate_left(by);
                }
                let measured = measure(&servers[s], load, &batch, args)?;
                // Measured calls, the warm-up's at the same pace, and 5 % to spare.
                let sent = measured.report.counters.sent as f64;
                let calls = sent * (1.0 + args.warmup / args.duration) * 1.05 + 100.0;
                offsets[s] += calls as usize;
                let line = run_line(servers[s].name, &load.label(), &measured);
                eprintln!("run {run} {line}");
                writeln!(per_run, "run {run} {line}")?;
                results[l][s].push(measured);
            }
        }
    }
    Ok(results)
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
    let Started {
        servers,
        peer,
        mut tokens,
        checks,
        miss,
    } = if args.self_test {
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
    let mut per_run = String::new();
    let per_point = Duration::from_secs_f64(args.duration + args.warmup);
    let hits = run_loads(args, &servers, &loads, &mut per_run, false, |_| {
        Ok(Some(vec![message(tokens.valid_for(per_point)?)]))
    })?;
    let miss_loads = [Load::Open(args.miss_rate), Load::Closed(args.connections)];
    let misses = if miss.is_empty() {
        None
    } else {
        // The bare floor answers without looking at the token: nothing to add there.
        let bare = servers.len() > peer + 1;
        let results = run_loads(args, &servers, &miss_loads, &mut per_run, true, |s| {
            Ok((!(bare && s == servers.len() - 1)).then(|| miss.clone()))
        })?;
        Some(results)
    };
    let logins = match &tokens.login {
        Some((gateway, password)) if args.login_seconds > 0.0 => {
            let verify_ns = argon2_verify_ns(args.client_cpu)?;
            let mut runs = Vec::new();
            for run in 1..=args.runs {
                let measured = Measured {
                    report: measure_logins(*gateway, password, args)?,
                    cpu_us_per_call: f64::NAN,
                    hit_ratio: None,
                };
                let label = Load::Closed(args.login_connections).label();
                let line = run_line("sdsim login", &label, &measured);
                eprintln!("run {run} {line}");
                writeln!(per_run, "run {run} {line}")?;
                runs.push(measured);
            }
            login_table(&runs, verify_ns, args)?
        }
        _ => String::new(),
    };
    let columns: Vec<Column<'_>> = servers
        .iter()
        .enumerate()
        .map(|(i, s)| Column {
            name: s.name,
            sdsim: s.gateway.is_some() && i != peer,
        })
        .collect();
    let labels = |loads: &[Load]| loads.iter().map(|l| l.label()).collect::<Vec<_>>();

    let mut out = header(args, load_at_start)?;
    out.push_str(&checks);
    out.push_str(&costs);
    out.push_str(&load_table(
        "ValidateToken under load, one token (sdsim answers from its cache)",
        &columns,
        peer,
        &labels(&loads),
        &hits,
    )?);
    if let Some(misses) = &misses {
        out.push_str(&load_table(
            &format!(
                "ValidateToken under load, {} distinct tokens round robin (cache misses; sdsim's cache holds {})",
                miss.len(),
                args.cache_entries
            ),
            &columns,
            peer,
            &labels(&miss_loads),
            misses,
        )?);
    }
    out.push_str(&logins);
    out.push_str("\n## Every run\n\n```\n");
    out.push_str(&per_run);
    out.push_str("```\n");
    drop(servers);
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
        writeln!(out, "# sdsim: 1 shard, auth role in-process, called on auth.grpc_listen; fresh SQLite database, rate limit and access log off, auth.verify_cache_entries={}; \"sdsim (no cache)\": a second process on the same database (same keys) with auth.verify_cache_entries=0, so every call verifies the signature as the peer does", args.cache_entries)?;
    }
    writeln!(out, "# peer: peer-auth, tonic 0.14 + jsonwebtoken 11 (EdDSA, aws-lc-rs backend), tokio multi-thread runtime with one worker per CPU it is pinned to, keys from the JWKS URL fetched once")?;
    writeln!(out, "# open loop: calls/s is the offered rate (every call due in the window is waited for); a server that cannot keep up shows it as latency and late calls (sent more than one interval after their intended time)")?;
    writeln!(out, "# open-loop sends wait with a timerfd per connection (microsecond precision, sdsim_loadtest::pace); \"bare h2 (floor)\" is bare-hop back --grpc, a bare HTTP/2 responder answering every call with a fixed gRPC message: what the generator and loopback measure when the server does nothing")?;
    writeln!(out, "# server CPU µs/call: the server process's user + system time over the measured window / calls completed in it; cache hits: sdsim's sdsim_auth_token_checks_total (cache_hit / (cache_hit + signature_checked)) over the run")?;
    writeln!(out, "# request: {{\"token\": <access token>, \"calling_service\": \"bench\"}}: the first table sends the same token on every call (sdsim answers repeats from its per-shard cache of verified tokens; sdsim (no cache) and jsonwebtoken verify every call); the cache-miss table sends --miss-tokens distinct tokens signed with sdsim's own key (its claims, a jti each) round robin")?;
    writeln!(
        out,
        "# load average (1 min) of the machine: {load_at_start:.2} at the start, {:.2} at the end (other work on it skews the figures)",
        load_average()
    )?;
    Ok(out)
}
