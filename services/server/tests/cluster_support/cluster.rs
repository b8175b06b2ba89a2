//! The whole cluster through `deploy/cluster.sh` (so the test also proves the script): Redis,
//! PostgreSQL, HAProxy and N `sdsim` processes per role from the test's debug binary, on a
//! block of free loopback ports; `down` runs when the handle drops, a panicking test included.
//! And a small open-loop load generator that records every request it sent.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/cluster.sh");

/// A running cluster.
pub struct Cluster {
    state: PathBuf,
    /// HAProxy's port: the entry point.
    pub lb: u16,
    /// HAProxy's stats port.
    pub stats: u16,
    /// Redis's port.
    pub redis: u16,
    /// The database every instance shares.
    pub pg_url: String,
    /// Each process's pid by name (`gateway-1`, `project-2`, `haproxy`, ...).
    pids: HashMap<String, i32>,
    /// Each sdsim process's HTTP port by name.
    pub http: HashMap<String, u16>,
    /// One cluster at a time per test binary: two would share two cores and their ports.
    _alone: MutexGuard<'static, ()>,
}

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

impl Cluster {
    /// `cluster.sh up` with `args` (e.g. `--gateways 2`), the debug binary and a state directory
    /// of its own. Panics with the script's output when it fails.
    pub fn up(args: &[&str]) -> Cluster {
        // A test that failed while holding it poisoned nothing this one relies on.
        let alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let state = sdsim_testing::temp_dir("cluster");
        let base = free_block(40);
        let out = Command::new("bash")
            .arg(SCRIPT)
            .arg("up")
            .args(["--bin", env!("CARGO_BIN_EXE_sdsim")])
            .args(["--base-port", &base.to_string()])
            .arg("--state")
            .arg(&state)
            .args(args)
            .output()
            .expect("bash runs deploy/cluster.sh");
        let mut cluster = Cluster {
            state,
            lb: base,
            stats: base + 1,
            redis: base + 2,
            pg_url: format!("postgres://postgres@127.0.0.1:{}/sdsim", base + 3),
            pids: HashMap::new(),
            http: HashMap::new(),
            _alone: alone,
        };
        cluster.read_state();
        assert!(
            out.status.success(),
            "cluster.sh up failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster
    }

    fn read_state(&mut self) {
        let read = |name: &str| std::fs::read_to_string(self.state.join(name)).unwrap_or_default();
        for line in read("pids").lines() {
            let mut fields = line.split_whitespace();
            if let (Some(pid), Some(name)) = (fields.next(), fields.next()) {
                self.pids.insert(name.to_string(), pid.parse().unwrap());
            }
        }
        for line in read("instances").lines() {
            let mut fields = line.split_whitespace();
            if let (Some(name), Some(http)) = (fields.next(), fields.next()) {
                let port = http.rsplit(':').next().unwrap().parse().unwrap();
                self.http.insert(name.to_string(), port);
            }
        }
    }

    /// The pid of process `name`.
    pub fn pid(&self, name: &str) -> i32 {
        *self
            .pids
            .get(name)
            .unwrap_or_else(|| panic!("no process {name}"))
    }

    /// Sends `signal` to process `name`.
    pub fn signal(&self, name: &str, signal: i32) {
        // SAFETY: kill(2) on a pid the script started and recorded.
        assert_eq!(
            unsafe { libc::kill(self.pid(name), signal) },
            0,
            "kill {name}"
        );
    }

    /// `cluster.sh restart name`: the process starts again with its config (after SIGTERM if
    /// it still runs) and is ready when this returns. Panics with the script's output when it
    /// fails.
    pub fn restart(&mut self, name: &str) {
        let out = Command::new("bash")
            .arg(SCRIPT)
            .args(["restart", name])
            .arg("--state")
            .arg(&self.state)
            .output()
            .expect("bash runs deploy/cluster.sh");
        assert!(
            out.status.success(),
            "cluster.sh restart {name} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.read_state();
    }

    /// The sum of the counter `name` in process `process`'s `/metrics`, over the series whose
    /// labels contain `labeled`.
    pub fn counter(&self, process: &str, name: &str, labeled: &str) -> f64 {
        let (_, text) =
            request(self.http[process], "GET", "/metrics", None, None).unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
            .filter(|l| l.contains(labeled))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// HAProxy's view of gateway `name`: `UP`, `DOWN`, `UP 1/2`, ... (stats CSV `status`).
    pub fn lb_status(&self, name: &str) -> Option<String> {
        let (status, body) = request(self.stats, "GET", "/stats;csv", None, None).ok()?;
        assert_eq!(status, 200, "HAProxy stats: {body}");
        body.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            (fields.first() == Some(&"gateways") && fields.get(1) == Some(&name))
                .then(|| fields.get(17).unwrap_or(&"").to_string())
        })
    }

    /// The last lines of process `name`'s log.
    pub fn log(&self, name: &str) -> String {
        let text =
            std::fs::read_to_string(self.state.join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(SCRIPT)
            .arg("down")
            .arg("--state")
            .arg(&self.state)
            .output();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// A port `p` such that `p..p + n` are all free on loopback now.
fn free_block(n: u16) -> u16 {
    use std::hash::{BuildHasher, Hasher};
    // Fresh random keys each time: a different start for every call and every test binary.
    let seed = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    for attempt in 0..200u64 {
        // Below the ephemeral range (32768 up), where outgoing connections take their ports.
        let base = 20_000 + (seed.wrapping_add(attempt * 7919) % 600) as u16 * 20;
        let free = (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no block of {n} free ports");
}

/// One HTTP/1.1 request on a fresh connection: status and body; `Err` when no answer came
/// (refused, reset, or nothing within 30 s).
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = body.unwrap_or("");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    // One write: written piece by piece (as `write!` on the socket does), the request's tail
    // would wait for the ACK of its head (Nagle), which loopback delays by up to 40 ms.
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: sdsim\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    s.write_all(head.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line in {:?}", &text[..text.len().min(80)]))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    Ok((status, body.unwrap_or_default()))
}

/// One request the load sent.
#[derive(Debug, Clone)]
pub struct Sent {
    /// `create` (POST /api/projects, the project service), `read` (GET /api/projects/{id},
    /// the project service) or `runs` (GET /api/simulations?project_id=, the simulation
    /// service).
    pub step: &'static str,
    /// When it was due, from the load's start (the open-loop schedule, so a stall shows as
    /// latency rather than as fewer requests).
    pub due: Duration,
    /// When its answer (or failure) came, from the load's start.
    pub done: Duration,
    /// The status; `None` when no answer came.
    pub status: Option<u16>,
    /// The created project's id, for `create` with 201.
    pub project: Option<String>,
    /// What failed, for failures.
    pub error: String,
}

impl Sent {
    /// Whether the request succeeded (2xx).
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Journeys (create a project, read it back, list its runs) through `port` at a fixed arrival
/// rate.
pub struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<Vec<Sent>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// When the load started.
    pub start: Instant,
}

impl Load {
    /// Starts `per_second` journeys a second over `tokens` (round robin), on `workers` threads.
    pub fn start(port: u16, tokens: Vec<String>, per_second: u32, workers: usize) -> Load {
        let start = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let (due_tx, due_rx) = mpsc::channel::<(usize, Duration)>();
        let due_rx = Arc::new(Mutex::new(due_rx));
        let mut threads = Vec::new();
        let scheduler_stop = Arc::clone(&stop);
        threads.push(std::thread::spawn(move || {
            let period = Duration::from_secs(1) / per_second;
            let mut n = 0usize;
            while !scheduler_stop.load(Ordering::SeqCst) {
                let due = period * n as u32;
                if let Some(wait) = (start + due).checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                if due_tx.send((n, due)).is_err() {
                    return;
                }
                n += 1;
            }
        }));
        let tokens = Arc::new(tokens);
        for _ in 0..workers {
            let (due_rx, sent, tokens) =
                (Arc::clone(&due_rx), Arc::clone(&sent), Arc::clone(&tokens));
            threads.push(std::thread::spawn(move || loop {
                let next = due_rx.lock().unwrap().recv();
                let Ok((n, due)) = next else { return };
                let token = &tokens[n % tokens.len()];
                let body = format!(r#"{{"name":"journey {n}","template_id":"three-tier"}}"#);
                let created = record(start, "create", due, || {
                    request(port, "POST", "/api/projects", Some(token), Some(&body))
                });
                let project = created.project.clone();
                sent.lock().unwrap().push(created);
                if let Some(id) = project {
                    for (step, path) in [
                        ("read", format!("/api/projects/{id}")),
                        ("runs", format!("/api/simulations?project_id={id}")),
                    ] {
                        let due = start.elapsed();
                        let answer = record(start, step, due, || {
                            request(port, "GET", &path, Some(token), None)
                        });
                        sent.lock().unwrap().push(answer);
                    }
                }
            }));
        }
        Load {
            stop,
            sent,
            threads,
            start,
        }
    }

    /// Time since the load started.
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Stops scheduling, waits for the requests in flight; everything sent.
    pub fn finish(self) -> Vec<Sent> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        let mut sent = std::mem::take(&mut *self.sent.lock().unwrap());
        sent.sort_by_key(|s| s.due);
        sent
    }
}

fn record(
    start: Instant,
    step: &'static str,
    due: Duration,
    send: impl FnOnce() -> Result<(u16, String), String>,
) -> Sent {
    let answer = send();
    let done = start.elapsed();
    match answer {
        Ok((status, body)) => {
            let project = (step == "create" && status == 201)
                .then(|| serde_json::from_str::<serde_json::Value>(&body).ok())
                .flatten()
                .and_then(|v| v["id"].as_str().map(str::to_string));
            let error = if (200..300).contains(&status) {
                String::new()
            } else {
                body.chars().take(200).collect()
            };
            Sent {
                step,
                due,
                done,
                status: Some(status),
                project,
                error,
            }
        }
        Err(error) => Sent {
            step,
            due,
            done,
            status: None,
            project: None,
            error,
        },
    }
}
