//! Passwords and tokens never reach the logs or error messages: a register / login / refresh /
//! logout flow (and its failures: a wrong password, malformed bodies carrying the password and
//! the refresh token, a revoked token) runs with every log line captured at debug level and the
//! access log on; then the logs and every answer are searched for the secrets and the bodies.
//! This test binary installs the process-wide log subscriber, so it holds this one test.

mod support;

use serde_json::{json, Value};
use std::io::Write;
use std::sync::{Arc, Mutex};
use support::{call, start, stop};

/// The password registered (strong enough for zxcvbn, and no run of it occurs in logs by chance).
const PASSWORD: &str = "Quartz-Falcon-Meridian-7491";

/// Every log line written, as text.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// A raw request with `body` as it is (malformed on purpose); the whole answer as text.
fn raw(addr: std::net::SocketAddr, path: &str, body: &str) -> String {
    let mut c = support::Client::connect(addr);
    c.send(
        format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    let r = c.read_response(false);
    format!("{} {:?} {}", r.status, r.headers, r.text())
}

#[test]
fn an_auth_flow_leaves_no_password_or_token_in_logs_or_errors() {
    let logs = Captured::default();
    tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_writer(logs.clone())
        .with_ansi(false)
        .init();
    let server = start(&["log.access=true", "ratelimit.enabled=false"]);
    let addr = server.local_addr();
    let wrong = "Wrong-Battery-Horse-Staple-9";
    let mut answers = Vec::new();
    let mut ask = |method: &str, path: &str, token: Option<&str>, body: Option<Value>| {
        let (status, v, resp) = call(addr, method, path, token, body);
        answers.push(format!("{status} {:?} {v}", resp.headers));
        (status, v)
    };

    let (status, v) = ask(
        "POST",
        "/api/auth/register",
        None,
        Some(json!({"email": "ada@example.com", "password": PASSWORD})),
    );
    assert_eq!(status, 201, "{v}");
    let (status, _) = ask(
        "POST",
        "/api/auth/login",
        None,
        Some(json!({"email": "ada@example.com", "password": wrong})),
    );
    assert_eq!(status, 401);
    let (status, tokens) = ask(
        "POST",
        "/api/auth/login",
        None,
        Some(json!({"email": "ada@example.com", "password": PASSWORD})),
    );
    assert_eq!(status, 200, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    let (status, me) = ask("GET", "/api/auth/me", Some(&access), None);
    assert_eq!(status, 200, "{me}");
    let (status, renewed) = ask(
        "POST",
        "/api/auth/refresh",
        None,
        Some(json!({"refresh_token": refresh})),
    );
    assert_eq!(status, 200, "{renewed}");
    let access2 = renewed["access_token"].as_str().unwrap().to_string();
    let refresh2 = renewed["refresh_token"].as_str().unwrap().to_string();
    let (status, _) = ask("POST", "/api/auth/logout", Some(&access2), None);
    assert_eq!(status, 204);
    let (status, _) = ask("GET", "/api/auth/me", Some(&access2), None);
    assert_eq!(status, 401, "a revoked token");
    // Reusing the first refresh token (already rotated) is refused.
    let (status, _) = ask(
        "POST",
        "/api/auth/refresh",
        None,
        Some(json!({"refresh_token": refresh})),
    );
    assert_eq!(status, 401);
    // Malformed bodies whose syntax error sits right next to a secret.
    answers.push(raw(
        addr,
        "/api/auth/login",
        &format!(r#"{{"email":"ada@example.com","password":"{PASSWORD}"#),
    ));
    answers.push(raw(
        addr,
        "/api/auth/login",
        &format!(r#"{{"email":"ada@example.com","password":"{PASSWORD}\q"}}"#),
    ));
    answers.push(raw(
        addr,
        "/api/auth/refresh",
        &format!(r#"{{"refresh_token": {refresh2}}}"#),
    ));
    answers.push(raw(
        addr,
        "/api/auth/refresh",
        &format!(r#"{{"refresh_token": 7, "x": "{refresh2}"}}"#),
    ));
    stop(server);

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("/api/auth/login") && logs.contains("sdsim::access"),
        "the access log was captured:\n{logs}"
    );
    let secrets = [
        ("the password", PASSWORD),
        ("the wrong password", wrong),
        ("the access token", access.as_str()),
        ("the refresh token", refresh.as_str()),
        ("the renewed access token", access2.as_str()),
        ("the renewed refresh token", refresh2.as_str()),
    ];
    for (what, secret) in secrets {
        // Any 8 characters of a secret count: a parser's excerpt around an error is that short;
        // of an access token, its signature part (the rest is the same base64 for every token
        // of a user).
        let distinctive = secret.rsplit('.').next().unwrap();
        let pieces: Vec<&str> = (0..=distinctive.len() - 8)
            .map(|i| &distinctive[i..i + 8])
            .collect();
        for piece in &pieces {
            assert!(
                !logs.contains(piece),
                "{what} ({piece:?}) is in the logs:\n{logs}"
            );
            for answer in &answers {
                if !answer.starts_with("200") {
                    assert!(
                        !answer.contains(piece),
                        "{what} ({piece:?}) is in an error: {answer}"
                    );
                }
            }
        }
    }
}
