//! `config/prometheus/` against the real tools (Debian's `prometheus` package, which `./test.sh`
//! installs; it provides `promtool`):
//! - `promtool check rules`, `promtool test rules` (each alert fires above its threshold and stays
//!   silent below) and `promtool check config` of the example scrape configuration;
//! - a real Prometheus scraping two `sdsim serve` processes (gateway + auth, project +
//!   simulation) on PostgreSQL and Redis under load, with the rules loaded: every expression of
//!   the Grafana dashboard returns data, and every rule is evaluated without error.
//!
//! Grafana's variables are replaced before querying: `$__rate_interval` and `$__range` by a
//! fixed `5m` window, `$instance` by `.*` (every instance).

use futures_util::{SinkExt, StreamExt};
use sdsim_testing::free_port;
use sdsim_testing::redis::Redis;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_sdsim");
const SERVICE_TOKEN: &str = "prometheus-test-service-token-0123";
const PASSWORD: &str = "correct horse battery staple 42!";
/// How long anything may take before the test calls it hung (never a pass/fail bound on speed).
const HANG: Duration = Duration::from_secs(120);
/// The window that replaces Grafana's `$__rate_interval` and `$__range`.
const WINDOW: &str = "5m";

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/prometheus")
}

fn promtool(args: &[&str]) -> Output {
    Command::new("promtool")
        .args(args)
        .current_dir(config_dir())
        .output()
        .expect("promtool must be installed (./test.sh installs Debian's prometheus)")
}

fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_rules_pass_promtool_and_the_example_config_is_valid() {
    assert_success(
        "promtool check rules",
        &promtool(&["check", "rules", "sdsim-rules.yml"]),
    );
    assert_success(
        "promtool test rules",
        &promtool(&["test", "rules", "sdsim-rules.test.yml"]),
    );
    assert_success(
        "promtool check config",
        &promtool(&["check", "config", "prometheus.yml"]),
    );
}

/// A child process, killed when dropped (also when the test fails).
struct Proc {
    child: Child,
    name: String,
    dir: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Keeps reading a child's output so it never blocks on a full pipe.
fn drain(child: &mut Child) {
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        std::thread::spawn(move || BufReader::new(stream).lines().map_while(Result::ok).count());
    }
}

/// Polls `done` every 100 ms until it gives a value; panics with `what` after [`HANG`].
fn wait_for<T>(what: &str, mut done: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + HANG;
    loop {
        if let Some(v) = done() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {HANG:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts `sdsim serve` with its HTTP listener (`/health`, `/metrics`) on `port`; returns once
/// `/health/ready` answers 200.
fn sdsim(name: &str, port: u16, env: &[(String, String)]) -> Proc {
    let dir = std::env::temp_dir().join(format!("sdsim-prom-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .current_dir(&dir)
        .env("NO_COLOR", "1")
        .env("SDSIM__GATEWAY__LISTEN", format!("127.0.0.1:{port}"))
        .env("SDSIM__LOG__ACCESS", "false")
        .env("SDSIM__RATELIMIT__ENABLED", "false")
        .env("SDSIM__RUNTIME__SHARDS", "2")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    drain(&mut child);
    let mut proc = Proc {
        child,
        name: name.to_string(),
        dir,
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for(&format!("{name} ready"), || {
        if let Some(status) = proc.child.try_wait().unwrap() {
            panic!("{} exited at start: {status}", proc.name);
        }
        (status(addr, "/health/ready") == Some(200)).then_some(())
    });
    proc
}

/// The status of `GET path` on a fresh connection, `None` when nothing answers.
fn status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
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

/// A Prometheus on `port` scraping `targets` every second, evaluating the rules every second.
fn prometheus(port: u16, targets: &[u16]) -> Proc {
    let dir = std::env::temp_dir().join(format!("sdsim-prom-server-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rules = config_dir().join("sdsim-rules.yml").canonicalize().unwrap();
    let targets: Vec<String> = targets.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let config = json!({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [rules],
        "scrape_configs": [{"job_name": "sdsim", "static_configs": [{"targets": targets}]}],
    });
    // JSON is YAML: Prometheus reads it as its configuration file.
    let file = dir.join("prometheus.yml");
    std::fs::write(&file, config.to_string()).unwrap();
    let mut child = Command::new("prometheus")
        .arg(format!("--config.file={}", file.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("prometheus must be installed (./test.sh installs Debian's prometheus)");
    drain(&mut child);
    Proc {
        child,
        name: "prometheus".into(),
        dir,
    }
}

/// `GET /api/v1/{path}` of the Prometheus on `port` with `query`; its `data`, `None` while it
/// does not answer.
fn api(port: u16, path: &str, query: &[(&str, &str)]) -> Option<Value> {
    let mut req = ureq::get(&format!("http://127.0.0.1:{port}/api/v1/{path}"));
    for (k, v) in query {
        req = req.query(*k, *v);
    }
    let mut resp = req.call().ok()?;
    let body: Value = serde_json::from_str(&resp.body_mut().read_to_string().ok()?).unwrap();
    assert_eq!(body["status"], "success", "{path} {query:?}: {body}");
    Some(body["data"].clone())
}

/// Every panel's expressions (title, expr), Grafana's variables replaced.
fn dashboard_expressions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(config_dir().join("grafana-dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{panel}");
        for target in targets {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", WINDOW)
                .replace("$__range", WINDOW)
                .replace("$instance", ".*");
            assert!(!expr.contains('$'), "an unreplaced variable in {expr}");
            out.push((panel["title"].as_str().unwrap().to_string(), expr));
        }
    }
    out
}

fn call(port: u16, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Value {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let (status, value, _) = sdsim_testing::http::call(addr, method, path, token, body);
    json!({"status": status, "body": value})
}

fn expect(v: Value, status: u16) -> Value {
    assert_eq!(v["status"], status, "{v}");
    v["body"].clone()
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn subscribe(port: u16, token: &str, channel: &str) -> Ws {
    let mut req = format!("ws://127.0.0.1:{port}/ws")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(Message::text(
        json!({"op": "subscribe", "channel": channel, "since": 0}).to_string(),
    ))
    .await
    .unwrap();
    ws
}

/// The next text message; panics when none arrives within [`HANG`] (pings do not count).
async fn next_json(ws: &mut Ws) -> Value {
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("a WebSocket message")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

#[test]
fn every_dashboard_panel_has_data_and_every_rule_evaluates_against_a_real_prometheus() {
    let redis = Redis::start();
    let database = sdsim_testing::postgres::fresh_database_url();
    let shared = |extra: &[(&str, String)]| {
        let mut env = vec![
            ("SDSIM__STORAGE__URL".to_string(), database.clone()),
            ("SDSIM__REDIS__URL".to_string(), redis.url()),
            (
                "SDSIM__SIMULATION__METRICS_INTERVAL".to_string(),
                "100ms".to_string(),
            ),
            // The shards' queueing delay is measured while shedding is on; a target no debug
            // build on a busy machine reaches keeps it from refusing the test's requests.
            ("SDSIM__SHEDDING__ENABLED".to_string(), "true".to_string()),
            ("SDSIM__SHEDDING__TARGET".to_string(), "10s".to_string()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        env
    };
    let (gateway_http, services_http) = (free_port(), free_port());
    let (project_grpc, simulation_grpc) = (free_port(), free_port());
    let any = "127.0.0.1:0".to_string();
    let services_env = shared(&[
        ("SDSIM__ROLES", r#"["project", "simulation"]"#.into()),
        (
            "SDSIM__PROJECT__GRPC_LISTEN",
            format!("127.0.0.1:{project_grpc}"),
        ),
        (
            "SDSIM__SIMULATION__GRPC_LISTEN",
            format!("127.0.0.1:{simulation_grpc}"),
        ),
        ("SDSIM__PROJECT__HTTP_LISTEN", any.clone()),
        ("SDSIM__SIMULATION__HTTP_LISTEN", any.clone()),
        (
            "SDSIM__AUTH__TOKENS",
            format!(r#"[{{token="{SERVICE_TOKEN}",user="gateway",roles=["service"]}}]"#),
        ),
    ]);
    let services = sdsim("services", services_http, &services_env);
    let _gateway = sdsim(
        "gateway",
        gateway_http,
        &shared(&[
            ("SDSIM__ROLES", r#"["gateway", "auth"]"#.into()),
            ("SDSIM__AUTH__HTTP_LISTEN", any.clone()),
            ("SDSIM__AUTH__GRPC_LISTEN", any.clone()),
            ("SDSIM__GATEWAY__SERVICE_TOKEN", SERVICE_TOKEN.into()),
            (
                "SDSIM__GATEWAY__PROJECT_SERVICE",
                format!("127.0.0.1:{project_grpc}"),
            ),
            (
                "SDSIM__GATEWAY__SIMULATION_SERVICE",
                format!("127.0.0.1:{simulation_grpc}"),
            ),
        ]),
    );
    let prom_port = free_port();
    let _prometheus = prometheus(prom_port, &[gateway_http, services_http]);

    // Load: accounts, projects, a 404 and a 400, then 503s while the services' process is gone.
    let port = gateway_http;
    expect(
        call(
            port,
            "POST",
            "/api/auth/register",
            None,
            Some(json!({"email": "ada@example.com", "password": PASSWORD})),
        ),
        201,
    );
    let login = || {
        expect(
            call(
                port,
                "POST",
                "/api/auth/login",
                None,
                Some(json!({"email": "ada@example.com", "password": PASSWORD})),
            ),
            200,
        )["access_token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let token = login();
    expect(
        call(
            port,
            "POST",
            "/api/auth/login",
            None,
            Some(json!({"email": "ada@example.com", "password": "wrong password"})),
        ),
        401,
    );
    let project = expect(
        call(
            port,
            "POST",
            "/api/projects",
            Some(&token),
            Some(json!({"name": "Shop", "template_id": "three-tier"})),
        ),
        201,
    );
    let project_id = project["id"].as_str().unwrap().to_string();
    expect(call(port, "GET", "/api/projects", Some(&token), None), 200);
    let unknown = call(port, "GET", "/api/projects/nope", Some(&token), None);
    assert!(
        (400..500).contains(&unknown["status"].as_u64().unwrap()),
        "{unknown}"
    );
    expect(
        call(
            port,
            "PUT",
            &format!("/api/projects/{project_id}"),
            Some(&token),
            Some(json!({"name": ""})),
        ),
        400,
    );
    // The services' process goes away: the gateway answers 503 (the 5xx panels' data, and the
    // mesh's call failures), then it comes back on the same ports and data.
    drop(services);
    let unavailable = call(port, "GET", "/api/projects", Some(&token), None);
    assert_eq!(unavailable["status"], 503, "{unavailable}");
    let _services = sdsim("services", services_http, &services_env);
    wait_for("the gateway to reach the services again", || {
        let v = call(port, "GET", "/api/projects", Some(&token), None);
        (v["status"] == 200).then_some(())
    });

    // A simulation watched over WebSocket to its end, a second subscriber left open, a logout.
    let run = expect(
        call(
            port,
            "POST",
            "/api/simulations",
            Some(&token),
            Some(json!({"project_id": project_id, "duration_s": 20, "seed": 7, "speed": 40})),
        ),
        202,
    );
    let channel = run["websocket_channel"].as_str().unwrap().to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _open = rt.block_on(async {
        let open = subscribe(port, &token, "system:announcements").await;
        let mut ws = subscribe(port, &token, &channel).await;
        loop {
            let m = next_json(&mut ws).await;
            if m["op"] == "event" && m["data"]["type"] == "completed" {
                break;
            }
            assert_ne!(m["op"], "error", "{m}");
        }
        ws.close(None).await.unwrap();
        open
    });
    let sid = run["simulation_id"].as_str().unwrap();
    expect(
        call(
            port,
            "GET",
            &format!("/api/simulations/{sid}"),
            Some(&token),
            None,
        ),
        200,
    );
    expect(
        call(port, "POST", "/api/auth/logout", Some(&token), None),
        204,
    );
    let _second = login();

    // Both targets scraped and up.
    wait_for("both targets up", || {
        let targets = api(prom_port, "targets", &[])?;
        let active = targets["activeTargets"].as_array()?.clone();
        let scraped = |t: &Value| {
            t["health"] == "up"
                && t["lastScrape"]
                    .as_str()
                    .is_some_and(|at| !at.starts_with("0001"))
        };
        (active.len() == 2 && active.iter().all(scraped)).then_some(())
    });

    // Every panel expression returns data (polled: a rate needs two scrapes after the load).
    let expressions = dashboard_expressions();
    let mut empty: Vec<(String, String)> = expressions.clone();
    let deadline = Instant::now() + HANG;
    while !empty.is_empty() && Instant::now() < deadline {
        empty.retain(|(_, expr)| {
            let data = api(prom_port, "query", &[("query", expr)]);
            data.is_none_or(|d| d["result"].as_array().is_none_or(|r| r.is_empty()))
        });
        if !empty.is_empty() {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    assert!(
        empty.is_empty(),
        "{} of {} panel expressions returned no data within {HANG:?}:\n{:#?}",
        empty.len(),
        expressions.len(),
        empty
    );

    // Every rule of the file is loaded, has been evaluated, and is healthy.
    let file = std::fs::read_to_string(config_dir().join("sdsim-rules.yml")).unwrap();
    let in_file: BTreeSet<String> = file
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            l.strip_prefix("- record: ")
                .or_else(|| l.strip_prefix("- alert: "))
                .map(str::to_string)
        })
        .collect();
    let evaluated = wait_for("every rule evaluated", || {
        let data = api(prom_port, "rules", &[])?;
        let rules: Vec<Value> = data["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let done = rules.len() == in_file.len()
            && rules.iter().all(|r| {
                !r["lastEvaluation"]
                    .as_str()
                    .unwrap_or("0001")
                    .starts_with("0001")
            });
        done.then_some(rules)
    });
    let loaded: BTreeSet<String> = evaluated
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(loaded, in_file);
    for rule in &evaluated {
        assert_eq!(rule["health"], "ok", "{rule}");
    }
}
