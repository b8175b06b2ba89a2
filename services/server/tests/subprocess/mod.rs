//! Real processes for the chaos test: `sdsim serve` on fixed loopback ports (so a replacement
//! started on the same data takes over the same addresses), a redis-server that can be killed
//! and started again on its port, and row queries against the test PostgreSQL through `psql`.
//! Needs Debian's `postgresql` and `redis-server` packages (`./test.sh` installs them).

pub mod ledger;

use sdsim_testing::free_port;
pub use sdsim_testing::postgres::column;
pub use sdsim_testing::redis::Redis;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long anything may take before the test calls it hung (never a pass/fail bound on speed).
pub const HANG: Duration = Duration::from_secs(120);

const BIN: &str = env!("CARGO_BIN_EXE_sdsim");

/// The addresses a journey needs from one instance.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// Gateway: HTTP and WebSocket.
    pub http: u16,
    /// `sdsim.auth.v1.AuthService`.
    pub auth_grpc: u16,
    /// `sdsim.project.v1.ProjectService`.
    pub project_grpc: u16,
}

impl Ports {
    /// Three free ports.
    pub fn free() -> Ports {
        Ports {
            http: free_port(),
            auth_grpc: free_port(),
            project_grpc: free_port(),
        }
    }
}

/// One `sdsim serve` process (every role), restartable on the same ports, data and
/// `instance.id`. Killed when dropped.
pub struct Sdsim {
    name: String,
    env: Vec<(String, String)>,
    dir: PathBuf,
    child: Option<Child>,
    /// Its addresses.
    pub ports: Ports,
    /// The last lines it printed (both streams), for failure messages.
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Sdsim {
    /// Starts `sdsim serve` with `env` (SDSIM__… variables) on `ports`; returns once
    /// `/health/ready` answers 200 (storage and Redis reachable).
    pub fn start(name: &str, ports: Ports, env: Vec<(String, String)>) -> Sdsim {
        let dir = std::env::temp_dir().join(format!("sdsim-chaos-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut sdsim = Sdsim {
            name: name.to_string(),
            env,
            dir,
            child: None,
            ports,
            log: Arc::new(Mutex::new(VecDeque::new())),
        };
        sdsim.launch();
        sdsim
    }

    /// Starts the process again with the same configuration (after [`Sdsim::sigterm`]).
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let any = "127.0.0.1:0".to_string();
        let local = |port: u16| format!("127.0.0.1:{port}");
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .current_dir(&self.dir)
            .env("NO_COLOR", "1")
            .env("SDSIM__GATEWAY__LISTEN", local(self.ports.http))
            .env("SDSIM__AUTH__GRPC_LISTEN", local(self.ports.auth_grpc))
            .env(
                "SDSIM__PROJECT__GRPC_LISTEN",
                local(self.ports.project_grpc),
            )
            .env("SDSIM__AUTH__HTTP_LISTEN", &any)
            .env("SDSIM__PROJECT__HTTP_LISTEN", &any)
            .env("SDSIM__SIMULATION__GRPC_LISTEN", &any)
            .env("SDSIM__SIMULATION__HTTP_LISTEN", &any)
            .env("SDSIM__LOG__ACCESS", "false")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = Arc::clone(&self.log);
            // Keeps draining the output so the child never blocks on a full pipe.
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut log = log.lock().unwrap();
                    if log.len() == 200 {
                        log.pop_front();
                    }
                    log.push_back(line);
                }
            });
        }
        self.child = Some(child);
        let deadline = Instant::now() + HANG;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!(
                    "{} exited at start ({status}):\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if get_status(self.ports.http, "/health/ready") == Some(200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} was not ready in {HANG:?}:\n{}",
                self.name,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        // The gRPC listeners are bound before the shards start serving; check anyway, since a
        // journey's gRPC steps would fail against a port nobody listens on.
        for port in [self.ports.auth_grpc, self.ports.project_grpc] {
            assert!(
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
                "{}: nothing listens on gRPC port {port}",
                self.name
            );
        }
    }

    /// Sends SIGTERM and waits for the process to exit; its exit status.
    pub fn sigterm(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + HANG;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not exit within {HANG:?} of SIGTERM:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Its last output lines.
    pub fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap();
        log.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Sdsim {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The status of `GET path` on a fresh connection, `None` when the server cannot be reached.
fn get_status(port: u16, path: &str) -> Option<u16> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    String::from_utf8_lossy(&raw)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
}
