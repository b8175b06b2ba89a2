//! The `sdsim` binary's access log, written by its writer thread: every request's line
//! arrives, in order per connection, including the lines still buffered when SIGTERM comes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sdsim");

/// Reads one response of a keep-alive connection (headers and a Content-Length body).
fn read_response(stream: &mut BufReader<TcpStream>) -> String {
    let mut head = String::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).unwrap();
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    head
}

#[test]
fn every_access_line_arrives_in_order_even_when_the_server_stops_right_after() {
    let dir = std::env::temp_dir().join(format!("sdsim-access-writer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--set",
            "runtime.shards=2",
            "--set",
            "log.access=true",
        ])
        .args(["--set", "ratelimit.enabled=false"])
        .current_dir(&dir)
        .env("SDSIM__GATEWAY__LISTEN", "127.0.0.1:0")
        .env("SDSIM__AUTH__HTTP_LISTEN", "127.0.0.1:0")
        .env("SDSIM__AUTH__GRPC_LISTEN", "127.0.0.1:0")
        .env("SDSIM__PROJECT__HTTP_LISTEN", "127.0.0.1:0")
        .env("SDSIM__PROJECT__GRPC_LISTEN", "127.0.0.1:0")
        .env("SDSIM__SIMULATION__HTTP_LISTEN", "127.0.0.1:0")
        .env("SDSIM__SIMULATION__GRPC_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel::<String>();
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
    drop(tx);
    let deadline = Instant::now() + Duration::from_secs(30);
    let port: u16 = loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the server printed its address");
        if let Some(rest) = line.split("local_addr=").nth(1) {
            let addr = rest.split_whitespace().next().unwrap();
            break addr.rsplit(':').next().unwrap().parse().unwrap();
        }
    };

    // Eight keep-alive connections (spread over both shards), 250 requests each, every one
    // with an id that says which connection and which request it was.
    const CONNECTIONS: usize = 8;
    const REQUESTS: usize = 250;
    let mut connections: Vec<BufReader<TcpStream>> = (0..CONNECTIONS)
        .map(|_| BufReader::new(TcpStream::connect(("127.0.0.1", port)).unwrap()))
        .collect();
    for n in 0..REQUESTS {
        for (c, conn) in connections.iter_mut().enumerate() {
            let request =
                format!("GET /health HTTP/1.1\r\nHost: t\r\nX-Request-Id: al-{c}-{n}\r\n\r\n");
            conn.get_mut().write_all(request.as_bytes()).unwrap();
            let head = read_response(conn);
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        }
    }
    drop(connections);
    // At once: the last lines are still in the shards' buffers.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let output: Vec<String> = lines.iter().collect();

    let mut seen: Vec<Vec<usize>> = vec![Vec::new(); CONNECTIONS];
    for line in output.iter().filter(|l| l.contains("sdsim::access")) {
        assert!(
            line.contains(
                r#"sdsim::access: request method="GET" path="/health" status=200 bytes=15 duration_ms="#
            ),
            "{line}"
        );
        assert!(line.contains(" INFO trace{trace_id="), "{line}");
        let id = line
            .split("request_id=\"al-")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no request id in {line}"));
        let (c, n) = id.split_once('-').unwrap();
        seen[c.parse::<usize>().unwrap()].push(n.parse().unwrap());
    }
    for (c, numbers) in seen.iter().enumerate() {
        let expected: Vec<usize> = (0..REQUESTS).collect();
        assert_eq!(
            numbers, &expected,
            "connection {c}: every line, once, in order"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
