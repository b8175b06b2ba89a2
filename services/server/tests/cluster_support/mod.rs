//! Processes for the multi-process tests: [`Node`], one `sdsim serve` subprocess of the debug
//! binary with its own roles, and [`Pki`], a certificate authority for TLS between them
//! (`split_tls.rs`); [`cluster`], the whole cluster through `deploy/cluster.sh` and a load
//! generator (`cluster.rs`). Everything started here is stopped when its handle drops, a
//! panicking test included.
#![allow(dead_code)]

pub mod cluster;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long anything may take before the test calls it hung (never a pass/fail bound on speed).
pub const HANG: Duration = Duration::from_secs(120);

const BIN: &str = env!("CARGO_BIN_EXE_sdsim");

/// One `sdsim serve` subprocess. Killed (SIGKILL, after SIGCONT) when dropped.
pub struct Node {
    /// Its name in failure messages.
    pub name: String,
    child: Option<Child>,
    /// The HTTP port (`gateway.listen`: the API with the gateway role, `/health` always).
    pub http: u16,
    log: Arc<Mutex<VecDeque<String>>>,
    dir: PathBuf,
}

impl Node {
    /// Starts `sdsim serve` with `env` (SDSIM__… variables) and one shard, its HTTP listener
    /// on `http`; returns once `/health/ready` answers 200 (with `tls.cert` set, which puts the
    /// HTTP listener behind TLS too, once every shard logged that it serves).
    pub fn start(name: &str, http: u16, env: &[(String, String)]) -> Node {
        let dir = sdsim_testing::temp_dir(&format!("node-{name}"));
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .current_dir(&dir)
            .env("NO_COLOR", "1")
            .env("SDSIM__LOG__ACCESS", "false")
            .env("SDSIM__RATELIMIT__ENABLED", "false")
            .env("SDSIM__RUNTIME__SHARDS", "1")
            .env("SDSIM__INSTANCE__ID", name)
            .env("SDSIM__GATEWAY__LISTEN", format!("127.0.0.1:{http}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("the sdsim binary starts");
        let log = Arc::new(Mutex::new(VecDeque::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = Arc::clone(&log);
            // Keeps draining the output so the child never blocks on a full pipe.
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut log = log.lock().unwrap();
                    if log.len() == 300 {
                        log.pop_front();
                    }
                    log.push_back(line);
                }
            });
        }
        let tls = env.iter().any(|(k, _)| k == "SDSIM__TLS__CERT");
        let mut node = Node {
            name: name.to_string(),
            child: Some(child),
            http,
            log,
            dir,
        };
        node.wait_ready(tls);
        node
    }

    fn wait_ready(&mut self, tls: bool) {
        let deadline = Instant::now() + HANG;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!("{} exited at start ({status}):\n{}", self.name, self.log());
            }
            let ready = if tls {
                self.log
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|l| l.contains("shard serving"))
            } else {
                get_status(self.http, "/health/ready") == Some(200)
            };
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} was not ready in {HANG:?}:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// Sends `signal` (SIGSTOP, SIGCONT, ...).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid(), signal) };
    }

    /// SIGKILL, then reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Its last output lines.
    pub fn log(&self) -> String {
        self.log
            .lock()
            .unwrap()
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A stopped process cannot die until continued on some kernels' ptrace paths;
            // continuing first is harmless otherwise.
            unsafe { libc::kill(child.id() as i32, libc::SIGCONT) };
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The status of `GET path` on a fresh connection, `None` when the server cannot be reached.
pub fn get_status(port: u16, path: &str) -> Option<u16> {
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

/// A certificate authority and what it signed, as PEM files in a directory.
pub struct Pki {
    /// The CA certificate.
    pub ca: String,
    /// A server certificate naming `127.0.0.1` (IP SAN) and `localhost`, and its key.
    pub server: (String, String),
    /// A client certificate (client-auth usage) and its key.
    pub client: (String, String),
}

impl Pki {
    /// Generates a CA, a server and a client certificate into `dir` (`tag` prefixes the names).
    pub fn generate(dir: &Path, tag: &str) -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, format!("sdsim {tag} CA"));
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.join(format!("{tag}-{name}"));
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let leaf = |names: &[&str], usage: ExtendedKeyUsagePurpose, file: &str| {
            let key = KeyPair::generate().unwrap();
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            let mut params = CertificateParams::new(names).unwrap();
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
            (
                write(&format!("{file}.pem"), &cert.pem()),
                write(&format!("{file}.key"), &key.serialize_pem()),
            )
        };
        Pki {
            ca: write("ca.pem", &ca_cert.pem()),
            server: leaf(
                &["127.0.0.1", "localhost"],
                ExtendedKeyUsagePurpose::ServerAuth,
                "server",
            ),
            client: leaf(
                &["gateway.internal"],
                ExtendedKeyUsagePurpose::ClientAuth,
                "client",
            ),
        }
    }
}

/// `(key, value)` pairs as owned strings.
pub fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
