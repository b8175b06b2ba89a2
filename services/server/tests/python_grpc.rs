//! The `sdsim` binary's AuthService from another language: `tests/python/auth_client.py`, a
//! grpcio client with stubs generated at run time from `proto/`, runs against a real server;
//! `tests/python/reflection_client.py` finds the same service through server reflection alone.
//! Python with grpcio and grpcio-tools is required (`./test.sh` installs them); without them the
//! test fails rather than skipping, so a missing dependency never passes unnoticed.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sdsim");
const CLIENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/python/auth_client.py"
);
const REFLECTION_CLIENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/python/reflection_client.py"
);
const PIP_INSTALL: &str =
    r#"python3 -m pip install "grpcio==1.*" "grpcio-tools==1.*" "grpcio-reflection==1.*""#;

/// A running `sdsim serve`; killed on drop so a failed assertion leaves no server behind.
struct Server {
    child: Child,
    gateway: SocketAddr,
    grpc: SocketAddr,
    lines: mpsc::Receiver<String>,
}

impl Server {
    fn start(dir: &Path) -> Server {
        // The auth listeners' addresses are not logged, so they get ports chosen here. Another
        // process could take one between this drop and the server's bind; the server then
        // exits with the address in its error, which the wait below reports.
        let (grpc, http) = (free_port(), free_port());
        let db = dir.join("sdsim.db");
        let mut child = Command::new(BIN)
            .arg("serve")
            .args(["--set", "runtime.shards=2"])
            .args(["--set", &format!("auth.grpc_listen={grpc}")])
            .args(["--set", &format!("auth.http_listen={http}")])
            .args(["--set", &format!("storage.url=sqlite://{}", db.display())])
            .current_dir(dir)
            .env("SDSIM__GATEWAY__LISTEN", "127.0.0.1:0")
            // The other roles' default ports would collide between the tests of this file.
            .env("SDSIM__PROJECT__GRPC_LISTEN", "127.0.0.1:0")
            .env("SDSIM__PROJECT__HTTP_LISTEN", "127.0.0.1:0")
            .env("SDSIM__SIMULATION__GRPC_LISTEN", "127.0.0.1:0")
            .env("SDSIM__SIMULATION__HTTP_LISTEN", "127.0.0.1:0")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sdsim");
        let (tx, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let gateway = wait_for_gateway(&mut child, &lines);
        Server {
            child,
            gateway,
            grpc,
            lines,
        }
    }

    /// SIGTERM, then the exit code and everything the server logged.
    fn stop(mut self) -> (Option<i32>, String) {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        (status.code(), everything_logged(&self.lines))
    }

    fn log(&self) -> String {
        self.lines.try_iter().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads the log until the gateway's `local_addr=` line; the auth listeners are bound before it.
fn wait_for_gateway(child: &mut Child, lines: &mpsc::Receiver<String>) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) {
            if let Some(rest) = line.split("local_addr=").nth(1) {
                return rest.split_whitespace().next().unwrap().parse().unwrap();
            }
            seen.push(line);
        }
        if let Ok(Some(status)) = child.try_wait() {
            seen.extend(lines.try_iter());
            panic!(
                "sdsim exited ({status}) before listening:\n{}",
                seen.join("\n")
            );
        }
        assert!(
            Instant::now() < deadline,
            "sdsim did not log local_addr= within 20 s:\n{}",
            seen.join("\n")
        );
    }
}

/// Every line left in `lines` once the process has exited: the reader threads send the rest
/// of the output and end when the pipes close, which disconnects the channel.
fn everything_logged(lines: &mpsc::Receiver<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut all = Vec::new();
    loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => all.push(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => return all.join("\n"),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("output still open 10 s after exit:\n{}", all.join("\n"))
            }
        }
    }
}

/// A free loopback address.
fn free_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], sdsim_testing::free_port()))
}

/// Fails (never skips) when python3, grpcio, grpcio-tools or grpcio-reflection is missing.
fn require_python_grpc() {
    let probe = Command::new("python3")
        .args(["-c", "import grpc, grpc_tools, grpc_reflection"])
        .output();
    let why = match probe {
        Ok(out) if out.status.success() => return,
        Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
        Err(e) => format!("python3: {e}"),
    };
    panic!(
        "python3 with grpcio, grpcio-tools and grpcio-reflection is required ({why}); ./test.sh installs them, \
         or run: {PIP_INSTALL}"
    );
}

fn text(out: &Output) -> String {
    format!(
        "--- stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `script` with `args(server)` against a fresh server; panics with the client's output
/// and the server's log when the client fails, or when the server does not exit 0 on
/// SIGTERM. The client's output.
fn run_client(name: &str, script: &str, args: impl Fn(&Server) -> Vec<String>) -> String {
    require_python_grpc();
    let dir = sdsim_testing::temp_dir(name);
    let server = Server::start(&dir);
    let client = Command::new("python3")
        .arg(script)
        .args(args(&server))
        .output()
        .expect("run python3");
    let report = text(&client);
    println!("{report}");
    if !client.status.success() {
        let (_, log) = server.stop();
        panic!(
            "{script} exited with {}\n{report}--- server log\n{log}",
            client.status
        );
    }
    let (code, log) = server.stop();
    assert_eq!(code, Some(0), "sdsim exit code after SIGTERM:\n{log}");
    let _ = std::fs::remove_dir_all(&dir);
    report
}

#[test]
fn a_python_grpcio_client_calls_every_auth_service_method() {
    run_client("python-grpc", CLIENT, |server| {
        vec![
            "--grpc".into(),
            server.grpc.to_string(),
            "--http".into(),
            server.gateway.to_string(),
        ]
    });
}

#[test]
fn a_python_reflection_client_lists_the_services_and_calls_a_method_without_proto_files() {
    let report = run_client("python-reflection", REFLECTION_CLIENT, |server| {
        vec!["--grpc".into(), server.grpc.to_string()]
    });
    assert!(report.contains("all reflection checks passed"), "{report}");
}
