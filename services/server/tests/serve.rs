//! The `sdsim` binary as a user runs it: start, shards pinned, one listener per shard, SIGTERM
//! exits 0, configuration errors name the key.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sdsim");

struct Running {
    child: Child,
    port: u16,
    lines: mpsc::Receiver<String>,
}

fn spawn(args: &[&str], dir: &std::path::Path) -> Running {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("SDSIM__GATEWAY__LISTEN", "127.0.0.1:0")
        .env("SDSIM__AUTH__HTTP_LISTEN", "127.0.0.1:0")
        .env("SDSIM__AUTH__GRPC_LISTEN", "127.0.0.1:0")
        .env("SDSIM__PROJECT__HTTP_LISTEN", "127.0.0.1:0")
        .env("SDSIM__PROJECT__GRPC_LISTEN", "127.0.0.1:0")
        .env("SDSIM__SIMULATION__HTTP_LISTEN", "127.0.0.1:0")
        .env("SDSIM__SIMULATION__GRPC_LISTEN", "127.0.0.1:0")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
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
    let deadline = Instant::now() + Duration::from_secs(20);
    let port = loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("server printed its address");
        if let Some(rest) = line.split("local_addr=").nth(1) {
            let addr = rest.split_whitespace().next().unwrap();
            break addr.rsplit(':').next().unwrap().parse().unwrap();
        }
    };
    Running { child, port, lines }
}

fn health(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

fn sigterm_and_wait(mut r: Running) -> (i32, Vec<String>) {
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(r.child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = r.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "server did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // The reader threads send the rest of the output and end when the pipes close, which
    // disconnects the channel.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lines = Vec::new();
    loop {
        match r
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(line) => lines.push(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("output still open 10 s after exit: {lines:?}")
            }
        }
    }
    (status.code().unwrap_or(-1), lines)
}

fn listening_sockets(pid: u32, port: u16) -> usize {
    let mut inodes = std::collections::HashSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        if let Ok(target) = std::fs::read_link(entry.path()) {
            let t = target.to_string_lossy().to_string();
            if let Some(inode) = t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
                inodes.insert(inode.to_string());
            }
        }
    }
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let local_port = u16::from_str_radix(cols[1].rsplit(':').next().unwrap(), 16).unwrap();
            local_port == port && cols[3] == "0A" && inodes.contains(cols[9])
        })
        .count()
}

fn shard_threads(pid: u32) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let comm = comm.trim().to_string();
        if !comm.starts_with("sdsim-shard-") {
            continue;
        }
        let tid: i32 = task.file_name().to_string_lossy().parse().unwrap();
        // SAFETY: reading another thread's affinity into a zeroed cpu_set_t of the right size.
        let cpus = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            assert_eq!(
                libc::sched_getaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &mut set),
                0
            );
            (0..libc::CPU_SETSIZE as usize)
                .filter(|c| libc::CPU_ISSET(*c, &set))
                .collect()
        };
        out.push((comm, cpus));
    }
    out.sort();
    out
}

#[test]
fn two_shards_each_pinned_with_its_own_listener_and_sigterm_exits_zero() {
    let dir = tempdir("two-shards");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let r = spawn(&["serve", "--set", "runtime.shards=2"], &dir);
    assert!(health(r.port).ends_with(r#"{"status":"ok"}"#));
    let pid = r.child.id();
    assert_eq!(
        listening_sockets(pid, r.port),
        2,
        "one SO_REUSEPORT listener per shard"
    );
    let threads = shard_threads(pid);
    assert_eq!(threads.len(), 2, "{threads:?}");
    for (name, set) in &threads {
        assert_eq!(set.len(), 1, "{name} pinned to one CPU: {set:?}");
    }
    if cpus >= 2 {
        assert_ne!(threads[0].1, threads[1].1, "shards on different CPUs");
    }
    assert!(
        dir.join("data").is_dir(),
        "the embedded default's data directory exists"
    );
    let (code, lines) = sigterm_and_wait(r);
    assert_eq!(code, 0, "{lines:?}");
    let all = lines.join("\n");
    assert!(all.contains("draining"), "{all}");
    assert!(all.contains("stopped"), "{all}");
}

#[test]
fn configuration_errors_name_the_key_and_exit_2() {
    let dir = tempdir("bad-config");
    let cases: [(&[&str], &str); 5] = [
        (&["serve", "--set", "ratelimit.burst=0"], "ratelimit.burst"),
        (&["serve", "--set", "log.level=sdsim=loud"], "log.level"),
        (&["serve", "--set", "ratelimit.brust=5"], "ratelimit.brust"),
        (&["serve", "--set", "runtime.shards=many"], "runtime.shards"),
        (
            &["serve", "--config", "/nonexistent/sdsim.toml"],
            "/nonexistent/sdsim.toml",
        ),
    ];
    for (args, key) in cases {
        let out = Command::new(BIN)
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{args:?}: {err}");
    }
    let out = Command::new(BIN)
        .args(["config", "--set", "runtime.shards=3"])
        .env("SDSIM__RATELIMIT__BURST", "77")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("shards = 3"), "{text}");
    assert!(text.contains("burst = 77"), "{text}");
}

#[test]
fn rust_log_wins_over_log_level_and_piped_output_has_no_colour() {
    let dir = tempdir("rust-log");
    // log.level shows one info line, RUST_LOG another: which one comes out says which won.
    let mut child = Command::new(BIN)
        .arg("serve")
        .current_dir(&dir)
        .env("SDSIM__GATEWAY__LISTEN", "127.0.0.1:0")
        .env("SDSIM__ROLES", r#"["gateway"]"#)
        .env("SDSIM__LOG__LEVEL", "warn,sdsim_server::server=info")
        .env("RUST_LOG", "warn,sdsim_server::shard=info")
        .env_remove("NO_COLOR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    // Bounds a hang only: without the line the server is stopped and the read below ends.
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(30));
        // SAFETY: a signal to the child this test started (gone already if it ended).
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    loop {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            panic!("no shard serving line: {seen:?}");
        }
        let serving = line.contains("shard serving");
        seen.push(line);
        if serving {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    drop(watchdog);
    let text = seen.concat();
    assert!(!text.contains('\x1b'), "escape codes in a pipe: {text:?}");
    assert!(!text.contains("gateway listening"), "log.level won: {text}");

    let out = Command::new(BIN)
        .arg("serve")
        .current_dir(&dir)
        .env("SDSIM__GATEWAY__LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "sdsim=loud")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("RUST_LOG") && err.contains("sdsim=loud"),
        "{err}"
    );
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--set",
            &format!("gateway.listen=127.0.0.1:{port}"),
        ])
        .env("SDSIM__AUTH__HTTP_LISTEN", "127.0.0.1:0")
        .env("SDSIM__AUTH__GRPC_LISTEN", "127.0.0.1:0")
        .env("SDSIM__PROJECT__HTTP_LISTEN", "127.0.0.1:0")
        .env("SDSIM__PROJECT__GRPC_LISTEN", "127.0.0.1:0")
        .env("SDSIM__SIMULATION__HTTP_LISTEN", "127.0.0.1:0")
        .env("SDSIM__SIMULATION__GRPC_LISTEN", "127.0.0.1:0")
        .current_dir(tempdir("in-use"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sdsim-serve-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn simulate_prints_a_report_and_json_fields() {
    let design = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../config/designs/minimal.json"
    );
    let out = Command::new(BIN)
        .args(["simulate", design])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("end to end:") && text.contains("api"),
        "{text}"
    );

    let series = std::env::temp_dir().join(format!("sdsim-series-{}.ndjson", std::process::id()));
    let out = Command::new(BIN)
        .args(["simulate", design, "--json", "--series"])
        .arg(&series)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "completed",
        "throughput_per_s",
        "mean_ms",
        "p50_ms",
        "p99_ms",
    ] {
        assert!(v["end_to_end"][key].is_number(), "end_to_end.{key}");
    }
    for key in [
        "arrivals",
        "completed",
        "dropped",
        "utilization",
        "mean_wait_ms",
        "mean_response_ms",
        "mean_queue_length",
    ] {
        assert!(
            v["components"]["api"][key].is_number(),
            "components.api.{key}"
        );
    }
    let lines = std::fs::read_to_string(&series).unwrap();
    assert_eq!(lines.lines().count(), 60, "one line per 10 s over 600 s");
    let _ = std::fs::remove_file(series);

    let bad = std::env::temp_dir().join(format!("sdsim-bad-{}.json", std::process::id()));
    std::fs::write(&bad, r#"{"duration_s": 0, "components": [{"id": "x", "kind": "source", "rate_per_s": 1, "to": "y"}]}"#).unwrap();
    let out = Command::new(BIN)
        .arg("simulate")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("$.duration_s") && err.contains("$.components[0].to"),
        "{err}"
    );
    let _ = std::fs::remove_file(bad);
}

#[test]
fn migrate_and_user_add_bootstrap_an_operator() {
    let dir = tempdir("bootstrap");
    let _ = std::fs::remove_dir_all(dir.join("data"));
    let run = |args: &[&str], stdin: &str| {
        let mut child = Command::new(BIN)
            .args(args)
            .current_dir(&dir)
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run(&["migrate"], "");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("auth") && text.contains("applied now"),
        "{text}"
    );
    let again = run(&["migrate"], "");
    assert!(String::from_utf8_lossy(&again.stdout).contains("already applied"));
    assert!(!String::from_utf8_lossy(&again.stdout).contains("applied now"));

    let out = run(
        &[
            "user",
            "add",
            "--email",
            "Ops@Example.com",
            "--role",
            "admin",
        ],
        "a long operator passphrase\n",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("<ops@example.com>") && text.contains("admin"),
        "{text}"
    );
    // The same email again, a weak password, an unknown role, no password: clear errors.
    for (args, stdin, says) in [
        (
            vec!["--email", "ops@example.com"],
            "another long passphrase\n",
            "already exists",
        ),
        (vec!["--email", "x@example.com"], "password\n", "password"),
        (
            vec!["--email", "y@example.com", "--role", "wizard"],
            "a long operator passphrase\n",
            "unknown role",
        ),
        (vec!["--email", "z@example.com"], "", "no password"),
    ] {
        let mut full = vec!["user", "add"];
        full.extend(args);
        let out = run(&full, stdin);
        assert_eq!(out.status.code(), Some(1), "{full:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{full:?}: {err}");
    }

    // The operator logs in on a server using the same data directory.
    let r = spawn(&["serve", "--set", "runtime.shards=1"], &dir);
    let body = r#"{"email":"ops@example.com","password":"a long operator passphrase"}"#;
    let resp = ureq::post(&format!("http://127.0.0.1:{}/api/auth/login", r.port))
        .header("content-type", "application/json")
        .send(body)
        .unwrap();
    let v: serde_json::Value = serde_json::from_reader(resp.into_body().into_reader()).unwrap();
    assert_eq!(v["user"]["roles"], serde_json::json!(["admin"]));
    let (code, _) = sigterm_and_wait(r);
    assert_eq!(code, 0);
}
