//! Alerts in the product (`[alerts]`, `GET /api/monitoring/alerts`): a burst of 500s fires the
//! error-rate alerts, which the list shows with their since/value/threshold and an admin's
//! WebSocket subscription to `system:announcements` receives; once the errors stop, each is
//! announced resolved after the cooldown, and never announced firing twice in a row.

mod support;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const ADMIN: &str = "admin-token-0123456789";
const ALICE: &str = "alice-token-0123456789";
const TOKENS: &str = r#"auth.tokens=[{token="admin-token-0123456789",user="ops",roles=["admin"]},{token="alice-token-0123456789",user="alice",roles=["user"]}]"#;
/// How long anything may take before the test calls it hung (never a pass/fail bound on speed).
const HANG: Duration = Duration::from_secs(60);

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn announcements(addr: SocketAddr) -> Ws {
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {ADMIN}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(Message::text(
        json!({"op": "subscribe", "channel": "system:announcements"}).to_string(),
    ))
    .await
    .unwrap();
    let reply = next(&mut ws).await;
    assert_eq!(reply["op"], "subscribed", "{reply}");
    ws
}

/// The next text message; panics when none arrives within [`HANG`] (pings do not count).
async fn next(ws: &mut Ws) -> Value {
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

fn alerts(addr: SocketAddr, token: Option<&str>) -> (u16, Value) {
    let (status, body, _) = support::call(addr, "GET", "/api/monitoring/alerts", token, None);
    (status, body)
}

/// The alerts an error burst raises, by name.
const ERROR_ALERTS: [&str; 2] = ["SdsimCriticalErrorRate", "SdsimHighErrorRate"];

#[test]
fn an_error_burst_is_listed_and_announced_once_then_resolved_after_the_cooldown() {
    let server = support::start(&[
        TOKENS,
        "alerts.enabled=true",
        "alerts.interval=200ms",
        "alerts.cooldown=1s",
        "alerts.min_requests=5",
        "ratelimit.enabled=false",
    ]);
    let addr = server.local_addr();
    let rt = support::runtime();
    let mut ws = rt.block_on(announcements(addr));

    let (status, body) = alerts(addr, None);
    assert_eq!(status, 401, "{body}");
    let (status, body) = alerts(addr, Some(ALICE));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let (status, body) = alerts(addr, Some(ADMIN));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["enabled"].as_bool(), body["interval_s"].as_f64()),
        (Some(true), Some(0.2))
    );

    // 500s until an evaluation has seen them: both error-rate alerts are listed.
    let deadline = Instant::now() + HANG;
    let listed = loop {
        for _ in 0..10 {
            assert_eq!(support::get(addr, "/test/panic").status, 500);
        }
        let (_, body) = alerts(addr, Some(ADMIN));
        let list: Vec<Value> = body["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| ERROR_ALERTS.contains(&a["name"].as_str().unwrap_or_default()))
            .cloned()
            .collect();
        if list.len() == 2 {
            break list;
        }
        assert!(Instant::now() < deadline, "no alerts listed: {body}");
    };
    let by_name: BTreeMap<&str, &Value> = listed
        .iter()
        .map(|a| (a["name"].as_str().unwrap(), a))
        .collect();
    let warning = by_name["SdsimHighErrorRate"];
    let critical = by_name["SdsimCriticalErrorRate"];
    assert_eq!(
        (warning["severity"].as_str(), warning["threshold"].as_f64()),
        (Some("warning"), Some(0.05))
    );
    assert_eq!(
        (
            critical["severity"].as_str(),
            critical["threshold"].as_f64()
        ),
        (Some("critical"), Some(0.1))
    );
    for alert in [warning, critical] {
        assert!(alert["value"].as_f64().unwrap() > 0.1, "{alert}");
        let since = alert["since"].as_str().unwrap();
        assert!(since.ends_with('Z') && since.contains('T'), "{alert}");
    }

    // No more errors: each alert is announced firing, then resolved once quiet for the cooldown,
    // in that order and once each.
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    rt.block_on(async {
        while seen.len() < 2 || seen.values().any(|s| s.last().unwrap() != "resolved") {
            let m = next(&mut ws).await;
            assert_eq!(m["op"], "event", "{m}");
            let data = &m["data"];
            assert_eq!(data["type"], "alert", "{m}");
            let name = data["alert"]["name"].as_str().unwrap().to_string();
            // On a busy machine a debug server also stalls (SdsimShardStalls), rightly: only
            // the error-rate alerts are this test's.
            if !ERROR_ALERTS.contains(&name.as_str()) {
                continue;
            }
            let state = data["state"].as_str().unwrap().to_string();
            let states = seen.entry(name).or_default();
            let expected = if states.len().is_multiple_of(2) {
                "firing"
            } else {
                "resolved"
            };
            assert_eq!(state, expected, "{m} after {states:?}");
            states.push(state);
        }
    });
    assert_eq!(
        seen.keys().map(String::as_str).collect::<Vec<_>>(),
        ERROR_ALERTS
    );
    let (_, body) = alerts(addr, Some(ADMIN));
    let still: Vec<&str> = body["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["name"].as_str())
        .filter(|n| ERROR_ALERTS.contains(n))
        .collect();
    assert!(still.is_empty(), "{body}");
    support::stop(server);
}

#[test]
fn a_bad_threshold_is_refused_naming_its_key() {
    let config = sdsim_server::config::Config::from_toml(
        "[alerts]\nerror_ratio_warning = 5.0\ninterval = \"0s\"\n",
    )
    .unwrap();
    let problems: Vec<String> = config
        .validate()
        .unwrap_err()
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("alerts.error_ratio_warning")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("alerts.interval")),
        "{problems:?}"
    );
}
