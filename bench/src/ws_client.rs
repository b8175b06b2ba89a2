//! A WebSocket load client for `bench-ws`: holds many subscribed connections on pinned
//! current-thread tokio runtimes, timestamps every delivered event, and publishes over a raw
//! HTTP/1.1 keep-alive client. Also reads server and kernel memory figures from `/proc`.
//!
//! Protocol (JSON text frames): connect `ws://HOST:PORT/ws` with `Authorization: Bearer TOKEN`,
//! send `{"op":"subscribe","channel":C}`, wait for `{"op":"subscribed","channel":C,"seq":N}`,
//! then receive `{"op":"event","channel":C,"seq":N,"data":{"t":NS,"pad":"..."}}` where `t` is
//! the publisher's send time (ns since the UNIX epoch). Events are published with
//! `POST /api/publish` (`Authorization: Bearer admin`, body `{"channel":C,"data":{...}}`).

use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// Where and how the client connects.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The server (must be a loopback address).
    pub addr: SocketAddr,
    /// The WebSocket path, e.g. `/ws`.
    pub path: String,
    /// One pinned current-thread runtime per CPU.
    pub cpus: Vec<usize>,
    /// New connections per second, over all threads.
    pub connect_rate: f64,
    /// tungstenite read buffer per connection (it is allocated eagerly: keep it small).
    pub read_buffer: usize,
    /// Seconds between application pings (`{"op":"ping"}`) per connection; 0 = none.
    pub ping_secs: f64,
}

/// One connection to open: its channel and its bearer token.
#[derive(Clone, Debug)]
pub struct ConnSpec {
    /// The channel it subscribes to.
    pub channel: String,
    /// The bearer token (the user id).
    pub token: String,
}

/// Counters shared by the client threads and the controlling thread.
#[derive(Default, Debug)]
pub struct Shared {
    /// Connections that are open and subscribed.
    pub subscribed: AtomicUsize,
    /// Connections that failed to connect, upgrade or subscribe.
    pub failed: AtomicUsize,
    /// Events delivered (all threads).
    pub delivered: AtomicU64,
    /// Subscribed connections the server closed (or that broke) afterwards.
    pub closed: AtomicUsize,
    /// The first few distinct error messages.
    pub errors: Mutex<Vec<String>>,
}

impl Shared {
    fn error(&self, e: impl std::fmt::Display) {
        let mut errors = self.errors.lock().unwrap();
        let e = e.to_string();
        if errors.len() < 5 && !errors.contains(&e) {
            errors.push(e);
        }
    }
}

/// What one client thread (or all of them, merged) observed.
#[derive(Debug)]
pub struct Stats {
    /// publish → receive latency, µs.
    pub latency: Histogram<u64>,
    /// Events received.
    pub delivered: u64,
    /// Events missing inside the received sequence (gaps in `seq`).
    pub gaps: u64,
    /// Events that came twice or out of order.
    pub reordered: u64,
    /// Messages that were not understood, and events without a timestamp `data.t`.
    pub unparsed: u64,
    /// Connections closed by the server with code 1008 (policy: slow consumer).
    pub closed_1008: u64,
    /// Time of the first and last delivery.
    pub first: Option<Instant>,
    /// Time of the last delivery.
    pub last: Option<Instant>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            latency: Histogram::new_with_bounds(1, 120_000_000, 3).unwrap(),
            delivered: 0,
            gaps: 0,
            reordered: 0,
            unparsed: 0,
            closed_1008: 0,
            first: None,
            last: None,
        }
    }
}

impl Stats {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Stats) {
        self.latency.add(&other.latency).unwrap();
        self.delivered += other.delivered;
        self.gaps += other.gaps;
        self.reordered += other.reordered;
        self.unparsed += other.unparsed;
        self.closed_1008 += other.closed_1008;
        self.first = match (self.first, other.first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last = self.last.max(other.last);
    }
}

enum Cmd {
    Open(Vec<(usize, ConnSpec)>),
}

/// A set of client threads holding connections; dropped connections close when it finishes.
pub struct Pool {
    senders: Vec<mpsc::UnboundedSender<Cmd>>,
    threads: Vec<JoinHandle<Stats>>,
    shared: Arc<Shared>,
    requested: usize,
    rate: f64,
}

/// Raises RLIMIT_NOFILE's soft limit to the hard limit; returns the new soft limit.
pub fn raise_nofile() -> u64 {
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        lim.rlim_cur as u64
    }
}

/// Source address number `i` spread over 127.0.0.2 ..= 127.0.0.254.
fn source(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 2 + (i % 253) as u8], 0))
}

impl Pool {
    /// Starts one pinned current-thread runtime per CPU of `cfg.cpus`.
    pub fn start(cfg: &ClientConfig) -> anyhow::Result<Pool> {
        if !cfg.addr.ip().is_loopback() {
            bail!(
                "the WebSocket client only talks to 127.0.0.0/8, not {}",
                cfg.addr
            );
        }
        if cfg.cpus.is_empty() {
            bail!("no client CPUs");
        }
        let shared = Arc::new(Shared::default());
        let threads_n = cfg.cpus.len();
        let mut senders = Vec::new();
        let mut threads = Vec::new();
        for &cpu in &cfg.cpus {
            let (tx, rx) = mpsc::unbounded_channel();
            let cfg = Arc::new(cfg.clone());
            let shared = shared.clone();
            let rate = (cfg.connect_rate / threads_n as f64).max(1.0);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("ws-client-{cpu}"))
                    .spawn(move || client_thread(cpu, rate, cfg, shared, rx))?,
            );
            senders.push(tx);
        }
        Ok(Pool {
            senders,
            threads,
            shared,
            requested: 0,
            rate: cfg.connect_rate,
        })
    }

    /// The counters shared with the client threads.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Opens and subscribes `specs` (paced at the connect rate) and waits until every one of
    /// them is subscribed or failed. Returns (subscribed, failed) for this call.
    pub fn open(&mut self, specs: Vec<ConnSpec>) -> anyhow::Result<(usize, usize)> {
        let n = specs.len();
        let before = self.done();
        let sub_before = self.shared.subscribed.load(Ordering::Relaxed);
        let fail_before = self.shared.failed.load(Ordering::Relaxed);
        let mut batches: Vec<Vec<(usize, ConnSpec)>> = vec![Vec::new(); self.senders.len()];
        for (j, spec) in specs.into_iter().enumerate() {
            let i = self.requested + j;
            batches[i % self.senders.len()].push((i, spec));
        }
        self.requested += n;
        for (tx, batch) in self.senders.iter().zip(batches) {
            tx.send(Cmd::Open(batch))
                .map_err(|_| anyhow!("client thread is gone"))?;
        }
        let deadline = Instant::now() + Duration::from_secs_f64(n as f64 / self.rate * 1.5 + 30.0);
        let mut last_print = Instant::now();
        while self.done() < before + n {
            if Instant::now() > deadline {
                bail!(
                    "timed out opening connections: {} of {} subscribed, {} failed; errors: {:?}",
                    self.shared.subscribed.load(Ordering::Relaxed) - sub_before,
                    n,
                    self.shared.failed.load(Ordering::Relaxed) - fail_before,
                    self.shared.errors.lock().unwrap()
                );
            }
            if last_print.elapsed() > Duration::from_secs(5) {
                eprintln!(
                    "  ... {} of {} subscribed",
                    self.shared.subscribed.load(Ordering::Relaxed) - sub_before,
                    n
                );
                last_print = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok((
            self.shared.subscribed.load(Ordering::Relaxed) - sub_before,
            self.shared.failed.load(Ordering::Relaxed) - fail_before,
        ))
    }

    fn done(&self) -> usize {
        self.shared.subscribed.load(Ordering::Relaxed) + self.shared.failed.load(Ordering::Relaxed)
    }

    /// Closes every connection, stops the threads and merges their statistics.
    pub fn finish(self) -> Stats {
        drop(self.senders);
        let mut total = Stats::default();
        for t in self.threads {
            match t.join() {
                Ok(s) => total.merge(&s),
                Err(_) => eprintln!("a client thread panicked"),
            }
        }
        total
    }
}

fn client_thread(
    cpu: usize,
    rate: f64,
    cfg: Arc<ClientConfig>,
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
) -> Stats {
    crate::pin_current(cpu);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let local = tokio::task::LocalSet::new();
    let stats = Rc::new(RefCell::new(Stats::default()));
    let interval = Duration::from_secs_f64(1.0 / rate);
    local.block_on(&rt, async {
        let mut next = tokio::time::Instant::now();
        while let Some(cmd) = rx.recv().await {
            match cmd {
                Cmd::Open(batch) => {
                    for (i, spec) in batch {
                        let now = tokio::time::Instant::now();
                        if next > now {
                            tokio::time::sleep_until(next).await;
                        } else {
                            next = now;
                        }
                        next += interval;
                        tokio::task::spawn_local(connection(
                            i,
                            spec,
                            cfg.clone(),
                            shared.clone(),
                            stats.clone(),
                        ));
                    }
                }
            }
        }
    });
    let out = std::mem::take(&mut *stats.borrow_mut());
    // Dropping the tasks closes the sockets; do it inside the runtime.
    {
        let _guard = rt.enter();
        drop(local);
    }
    drop(rt);
    out
}

#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(borrow)]
    op: &'a str,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    data: Option<EventData>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
struct EventData {
    /// ns since the UNIX epoch; read as f64 so that a server re-serializing numbers as floats
    /// still works (f64 keeps ns timestamps to within 256 ns).
    #[serde(default)]
    t: Option<f64>,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn open(i: usize, spec: &ConnSpec, cfg: &ClientConfig) -> anyhow::Result<(Ws, u64)> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket
        .bind(source(i))
        .with_context(|| format!("bind {}", source(i)))?;
    let stream = socket
        .connect(cfg.addr)
        .await
        .with_context(|| format!("connect {}", cfg.addr))?;
    stream.set_nodelay(true)?;
    let mut request = format!("ws://{}{}", cfg.addr, cfg.path).into_client_request()?;
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", spec.token).parse().context("token")?,
    );
    let config = WebSocketConfig::default()
        .read_buffer_size(cfg.read_buffer)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .context("WebSocket handshake")?;
    let subscribe = format!(
        r#"{{"op":"subscribe","channel":{}}}"#,
        serde_json::to_string(&spec.channel)?
    );
    ws.send(Message::text(subscribe)).await?;
    loop {
        let msg = ws
            .next()
            .await
            .ok_or_else(|| anyhow!("closed before subscribed"))??;
        let text = match msg {
            Message::Text(t) => t,
            Message::Close(f) => bail!("closed before subscribed: {f:?}"),
            _ => continue,
        };
        let m: Incoming =
            sonic_rs::from_str(text.as_str()).with_context(|| format!("bad reply {text}"))?;
        match m.op {
            "subscribed" => return Ok((ws, m.seq.unwrap_or(0))),
            "error" => bail!(
                "subscribe refused: {} {}",
                m.code.unwrap_or_default(),
                m.message.unwrap_or_default()
            ),
            _ => {}
        }
    }
}

async fn connection(
    i: usize,
    spec: ConnSpec,
    cfg: Arc<ClientConfig>,
    shared: Arc<Shared>,
    stats: Rc<RefCell<Stats>>,
) {
    let (mut ws, mut last_seq) =
        match tokio::time::timeout(Duration::from_secs(30), open(i, &spec, &cfg)).await {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                shared.failed.fetch_add(1, Ordering::Relaxed);
                shared.error(format!("{e:#}"));
                return;
            }
            Err(_) => {
                shared.failed.fetch_add(1, Ordering::Relaxed);
                shared.error("connect + subscribe timed out (30 s)");
                return;
            }
        };
    shared.subscribed.fetch_add(1, Ordering::Relaxed);
    let ping_every = (cfg.ping_secs > 0.0).then(|| Duration::from_secs_f64(cfg.ping_secs));
    let mut ping = tokio::time::interval(ping_every.unwrap_or(Duration::from_secs(3600)));
    ping.tick().await;
    loop {
        let msg = tokio::select! {
            msg = ws.next() => msg,
            _ = ping.tick(), if ping_every.is_some() => {
                if ws.send(Message::text(r#"{"op":"ping"}"#)).await.is_err() {
                    break;
                }
                continue;
            }
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(frame))) => {
                if frame.is_some_and(|f| u16::from(f.code) == 1008) {
                    stats.borrow_mut().closed_1008 += 1;
                }
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => break,
        };
        let now = now_ns();
        let mut s = stats.borrow_mut();
        let Ok(m) = sonic_rs::from_str::<Incoming>(text.as_str()) else {
            s.unparsed += 1;
            continue;
        };
        if m.op != "event" {
            continue;
        }
        let seq = m.seq.unwrap_or(0);
        if seq > last_seq + 1 {
            s.gaps += seq - last_seq - 1;
        } else if seq <= last_seq {
            s.reordered += 1;
        }
        last_seq = last_seq.max(seq);
        match m.data.and_then(|d| d.t) {
            Some(t) if t > 0.0 => {
                let us = now.saturating_sub(t as u64) / 1000;
                s.latency.saturating_record(us.max(1));
            }
            _ => s.unparsed += 1,
        }
        s.delivered += 1;
        let at = Instant::now();
        s.first.get_or_insert(at);
        s.last = Some(at);
        drop(s);
        shared.delivered.fetch_add(1, Ordering::Relaxed);
    }
    shared.closed.fetch_add(1, Ordering::Relaxed);
}

/// What to publish.
#[derive(Clone, Debug)]
pub struct PublishPlan {
    /// The server.
    pub addr: SocketAddr,
    /// Channels, published to in rotation.
    pub channels: Vec<String>,
    /// Publishes per second (over all publisher connections).
    pub rate: f64,
    /// How long.
    pub duration: Duration,
    /// Size in bytes of each event's `data` object.
    pub size: usize,
    /// Keep-alive connections (one thread each).
    pub connections: usize,
    /// CPU for the publisher threads.
    pub cpu: Option<usize>,
}

/// What the publisher did.
#[derive(Debug, Default)]
pub struct PublishReport {
    /// Accepted publishes (2xx) per channel index of the plan.
    pub per_channel: Vec<u64>,
    /// Accepted publishes.
    pub ok: u64,
    /// Refused or failed publishes.
    pub errors: u64,
    /// The first error.
    pub first_error: Option<String>,
    /// Publish request latency, µs.
    pub request_latency: Option<Histogram<u64>>,
}

/// Publishes `plan` from `plan.connections` threads; blocks until done.
pub fn publish(plan: &PublishPlan) -> anyhow::Result<PublishReport> {
    if !plan.addr.ip().is_loopback() {
        bail!("the publisher only talks to 127.0.0.0/8, not {}", plan.addr);
    }
    let conns = plan.connections.max(1);
    let start = Instant::now() + Duration::from_millis(10);
    let handles: Vec<_> = (0..conns)
        .map(|j| {
            let plan = plan.clone();
            std::thread::spawn(move || publisher_thread(&plan, j, conns, start))
        })
        .collect();
    let mut total = PublishReport {
        per_channel: vec![0; plan.channels.len()],
        ..Default::default()
    };
    for h in handles {
        let r = h.join().map_err(|_| anyhow!("publisher panicked"))??;
        for (a, b) in total.per_channel.iter_mut().zip(&r.per_channel) {
            *a += b;
        }
        total.ok += r.ok;
        total.errors += r.errors;
        if total.first_error.is_none() {
            total.first_error = r.first_error;
        }
        match (&mut total.request_latency, r.request_latency) {
            (Some(a), Some(b)) => a.add(&b).unwrap(),
            (a @ None, b) => *a = b,
            _ => {}
        }
    }
    Ok(total)
}

fn publisher_thread(
    plan: &PublishPlan,
    j: usize,
    conns: usize,
    start: Instant,
) -> anyhow::Result<PublishReport> {
    if let Some(cpu) = plan.cpu {
        crate::pin_current(cpu);
    }
    let mut report = PublishReport {
        per_channel: vec![0; plan.channels.len()],
        request_latency: Some(Histogram::new_with_bounds(1, 120_000_000, 3).unwrap()),
        ..Default::default()
    };
    let mut client = HttpClient::connect(plan.addr)?;
    let period = Duration::from_secs_f64(1.0 / plan.rate);
    let end = start + plan.duration;
    // `"t":` + 19 digits, `,"pad":"`, `"}` around the padding.
    let pad = "x".repeat(plan.size.saturating_sub(34));
    let names: Vec<String> = plan
        .channels
        .iter()
        .map(|c| serde_json::to_string(c).unwrap())
        .collect();
    let mut i = j;
    loop {
        let at = start + period * i as u32;
        if at >= end {
            break;
        }
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
        let k = i % names.len();
        let body = format!(
            r#"{{"channel":{},"data":{{"t":{},"pad":"{pad}"}}}}"#,
            names[k],
            now_ns()
        );
        let sent = Instant::now();
        match client.post("/api/publish", "admin", body.as_bytes()) {
            Ok(status) if (200..300).contains(&status) => {
                report.ok += 1;
                report.per_channel[k] += 1;
            }
            Ok(status) => {
                report.errors += 1;
                report
                    .first_error
                    .get_or_insert_with(|| format!("publish answered {status}"));
            }
            Err(e) => {
                report.errors += 1;
                report.first_error.get_or_insert_with(|| format!("{e:#}"));
                client = HttpClient::connect(plan.addr)?;
            }
        }
        let us = sent.elapsed().as_micros() as u64;
        if let Some(h) = &mut report.request_latency {
            h.saturating_record(us.max(1));
        }
        i += conns;
    }
    Ok(report)
}

/// A minimal HTTP/1.1 keep-alive client (Content-Length or chunked responses).
struct HttpClient {
    addr: SocketAddr,
    stream: TcpStream,
    buf: Vec<u8>,
}

impl HttpClient {
    fn connect(addr: SocketAddr) -> anyhow::Result<HttpClient> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("publisher connect {addr}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(HttpClient {
            addr,
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends one POST and reads the whole response; returns the status.
    fn post(&mut self, path: &str, token: &str, body: &[u8]) -> anyhow::Result<u16> {
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        self.stream.write_all(&req)?;
        self.buf.clear();
        let head_end = loop {
            if let Some(p) = find(&self.buf, b"\r\n\r\n") {
                break p + 4;
            }
            self.fill()?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).context("response head")?;
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("bad status line"))?;
        let mut length = None;
        let mut chunked = false;
        let mut close = false;
        for line in head.split("\r\n").skip(1) {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            if k.eq_ignore_ascii_case("content-length") {
                length = v.parse::<usize>().ok();
            } else if k.eq_ignore_ascii_case("transfer-encoding") {
                chunked = v.to_ascii_lowercase().contains("chunked");
            } else if k.eq_ignore_ascii_case("connection") {
                close = v.eq_ignore_ascii_case("close");
            }
        }
        if chunked {
            while find(&self.buf[head_end..], b"0\r\n\r\n").is_none() {
                self.fill()?;
            }
        } else {
            let want = head_end + length.unwrap_or(0);
            while self.buf.len() < want {
                self.fill()?;
            }
        }
        if close {
            *self = HttpClient::connect(self.addr)?;
        }
        Ok(status)
    }

    fn fill(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            bail!("publisher connection closed by the server");
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses `ws://HOST:PORT/PATH`, `http://HOST:PORT` or `HOST:PORT` into (address, path);
/// the path defaults to `/ws`.
pub fn parse_target(url: &str) -> anyhow::Result<(SocketAddr, String)> {
    let rest = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    let (hostport, path) = match rest.find('/') {
        Some(p) => (&rest[..p], &rest[p..]),
        None => (rest, "/ws"),
    };
    let (host, port) = hostport
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("{url}: no port"))?;
    let ip: IpAddr = if host == "localhost" {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse().with_context(|| format!("{url}: host"))?
    };
    if !ip.is_loopback() {
        bail!("{url}: only 127.0.0.0/8 targets are allowed");
    }
    let path = if path.is_empty() || path == "/" {
        "/ws"
    } else {
        path
    };
    Ok((SocketAddr::new(ip, port.parse()?), path.to_owned()))
}

/// Memory and CPU figures of one process and of the kernel, from `/proc`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSample {
    /// The process's resident set (bytes), if a pid was given.
    pub rss: Option<u64>,
    /// The process's user + system CPU time (seconds), if a pid was given.
    pub cpu: Option<f64>,
    /// Kernel memory of TCP socket buffers (`/proc/net/sockstat` TCP mem, bytes).
    pub tcp_mem: u64,
    /// Kernel slab memory (`/proc/meminfo` Slab, bytes).
    pub slab: u64,
}

impl ProcSample {
    /// Samples now.
    pub fn take(pid: Option<u32>) -> ProcSample {
        let page = 4096u64;
        let tcp_mem = std::fs::read_to_string("/proc/net/sockstat")
            .ok()
            .and_then(|s| {
                let line = s.lines().find(|l| l.starts_with("TCP:"))?;
                let mut it = line.split_whitespace();
                while let Some(w) = it.next() {
                    if w == "mem" {
                        return it.next()?.parse::<u64>().ok();
                    }
                }
                None
            })
            .unwrap_or(0)
            * page;
        let slab = meminfo_kb("Slab:").unwrap_or(0) * 1024;
        let rss = pid.and_then(|p| {
            let s = std::fs::read_to_string(format!("/proc/{p}/status")).ok()?;
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
        });
        let cpu = pid.and_then(|p| process_cpu_clock(p).or_else(|| stat_cpu(p)));
        ProcSample {
            rss,
            cpu,
            tcp_mem,
            slab,
        }
    }
}

/// A process's CPU time (all threads, exited ones included) in seconds, to the nanosecond,
/// from its CPU-time clock.
fn process_cpu_clock(pid: u32) -> Option<f64> {
    // SAFETY: out-parameters are valid locals.
    unsafe {
        let mut clock: libc::clockid_t = 0;
        if libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) != 0 {
            return None;
        }
        let mut ts: libc::timespec = std::mem::zeroed();
        if libc::clock_gettime(clock, &mut ts) != 0 {
            return None;
        }
        Some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
    }
}

/// A process's user + system time in seconds from `/proc/PID/stat` (clock-tick resolution).
fn stat_cpu(p: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
    // Fields after the command (which may hold spaces): state is field 3.
    let after = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(ticks as f64 / hz)
}

/// Kernel memory charged to the established TCP sockets whose local port is `port` (the
/// server's end of each connection): (sockets, bytes), the bytes summing each socket's receive
/// queue, send queue, forward allocation and option memory (`ss -m`'s `r`, `w`, `f`, `o`).
/// `None` if `ss` (iproute2) is not available.
pub fn server_socket_memory(port: u16) -> Option<(usize, u64)> {
    let out = std::process::Command::new("ss")
        .args([
            "-tnmH",
            "state",
            "established",
            "sport",
            "=",
            &format!(":{port}"),
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(parse_skmem(&String::from_utf8_lossy(&out.stdout)))
}

fn parse_skmem(text: &str) -> (usize, u64) {
    let mut sockets = 0;
    let mut bytes = 0;
    for part in text.split("skmem:(").skip(1) {
        let Some(inner) = part.split(')').next() else {
            continue;
        };
        sockets += 1;
        for field in inner.split(',') {
            let key: String = field
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            if matches!(key.as_str(), "r" | "w" | "f" | "o") {
                bytes += field[key.len()..].parse::<u64>().unwrap_or(0);
            }
        }
    }
    (sockets, bytes)
}

fn meminfo_kb(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let (a, p) = parse_target("ws://127.0.0.1:8101/ws").unwrap();
        assert_eq!(a, "127.0.0.1:8101".parse().unwrap());
        assert_eq!(p, "/ws");
        assert_eq!(parse_target("127.0.0.1:9").unwrap().1, "/ws");
        assert!(parse_target("ws://10.0.0.1:80/ws").is_err());
    }

    #[test]
    fn sources_stay_in_loopback() {
        for i in 0..600 {
            let ip = source(i).ip();
            assert!(ip.is_loopback() && ip != IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)));
        }
    }

    #[test]
    fn cpu_time_of_a_process() {
        let me = std::process::id();
        let a = process_cpu_clock(me).unwrap();
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(30) {}
        let b = process_cpu_clock(me).unwrap();
        assert!(b - a >= 0.02, "{a} {b}");
        assert!(stat_cpu(me).is_some());
    }

    #[test]
    fn skmem() {
        let text = "0 0 127.0.0.1:8102 127.0.0.1:55214\n\t skmem:(r10,rb131072,t5,tb2626560,f4096,w20,o1,bl0,d0)\n0 0 127.0.0.1:8102 127.0.0.1:55215\n\t skmem:(r0,rb131072,t0,tb2626560,f0,w0,o0,bl0,d0)\n";
        assert_eq!(parse_skmem(text), (2, 10 + 4096 + 20 + 1));
    }

    #[test]
    fn parses_events() {
        let m: Incoming = sonic_rs::from_str(
            r#"{"op":"event","channel":"c","seq":44,"data":{"t":1700000000000000000,"pad":"xx"}}"#,
        )
        .unwrap();
        assert_eq!(m.op, "event");
        assert_eq!(m.seq, Some(44));
        assert_eq!(m.data.unwrap().t.unwrap() as u64, 1_700_000_000_000_000_000);
        let m: Incoming =
            sonic_rs::from_str(r#"{"op":"subscribed","channel":"c","seq":43,"recovered":true}"#)
                .unwrap();
        assert_eq!(m.seq, Some(43));
    }
}
