//! Two sdsim instances sharing a real redis-server deliver each other's publishes, in order,
//! without echo; when Redis goes away each keeps serving its own subscribers, reports it, and
//! reconnects by itself when Redis is back.
//!
//! Needs `redis-server` on PATH (test.sh installs Debian's package).

mod support;

use sdsim_testing::redis::Redis;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const ADMIN: &str = "admin-token-0123456789";
const TOKENS: &str = r#"auth.tokens=[{token="admin-token-0123456789",user="ops",roles=["admin"]}]"#;

fn redis_health(addr: SocketAddr) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .get(&format!("http://{addr}/health/redis"))
        .call()
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    (status, body["status"].as_str().unwrap_or("").to_string())
}

fn wait_health(addr: SocketAddr, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, status) = redis_health(addr);
        if status == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/health/redis stayed {status}, wanted {want}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn publish(addr: SocketAddr, channel: &str, data: Value) {
    let body = json!({"channel": channel, "data": data}).to_string();
    let resp = ureq::post(&format!("http://{addr}/api/publish"))
        .header("authorization", &format!("Bearer {ADMIN}"))
        .send(&body)
        .unwrap();
    assert_eq!(resp.status(), 200);
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn subscriber(addr: SocketAddr, channel: &str) -> Ws {
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {ADMIN}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(Message::text(
        json!({"op": "subscribe", "channel": channel}).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(
        next(&mut ws, Duration::from_secs(5)).await.unwrap()["op"],
        "subscribed"
    );
    ws
}

async fn next(ws: &mut Ws, within: Duration) -> Option<Value> {
    loop {
        match tokio::time::timeout(within, ws.next()).await {
            Err(_) => return None,
            Ok(Some(Ok(Message::Text(t)))) => return Some(serde_json::from_str(&t).unwrap()),
            Ok(Some(Ok(_))) => continue,
            other => panic!("connection ended: {other:?}"),
        }
    }
}

/// The `data` of the next `n` events.
async fn take(ws: &mut Ws, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        let v = next(ws, Duration::from_secs(5))
            .await
            .expect("an event within 5 s");
        assert_eq!(v["op"], "event", "{v}");
        out.push(v["data"].clone());
    }
    out
}

#[test]
fn two_instances_share_events_through_redis_and_survive_its_outage() {
    let mut redis = Redis::start();
    let url = redis.url_setting();
    let one = support::start(&[TOKENS, &url, "ratelimit.enabled=false"]);
    let two = support::start(&[TOKENS, &url, "ratelimit.enabled=false"]);
    let (a1, a2) = (one.local_addr(), two.local_addr());
    wait_health(a1, "up");
    wait_health(a2, "up");
    let channel = "system:announcements";
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut on_one = subscriber(a1, channel).await;
        let mut on_two = subscriber(a2, channel).await;
        // Publishes on instance one reach both, in order, exactly once each.
        for i in 0..20 {
            publish(a1, channel, json!({"from": 1, "i": i}));
        }
        let want: Vec<Value> = (0..20).map(|i| json!({"from": 1, "i": i})).collect();
        assert_eq!(take(&mut on_one, 20).await, want);
        assert_eq!(take(&mut on_two, 20).await, want);
        // And the other way.
        publish(a2, channel, json!({"from": 2}));
        assert_eq!(take(&mut on_one, 1).await, vec![json!({"from": 2})]);
        assert_eq!(take(&mut on_two, 1).await, vec![json!({"from": 2})]);
        // No echo: nothing else arrives.
        assert_eq!(next(&mut on_one, Duration::from_millis(300)).await, None);
        assert_eq!(next(&mut on_two, Duration::from_millis(300)).await, None);

        // Redis goes away: both report it; each still serves its own subscribers.
        redis.kill();
        wait_health(a1, "down");
        wait_health(a2, "down");
        assert_eq!(redis_health(a1).0, 503);
        publish(a1, channel, json!({"during": "outage"}));
        assert_eq!(
            take(&mut on_one, 1).await,
            vec![json!({"during": "outage"})]
        );

        // Redis comes back on the same port: the bridges reconnect by themselves.
        redis.launch();
        wait_health(a1, "up");
        wait_health(a2, "up");
        publish(a1, channel, json!({"after": "outage"}));
        assert_eq!(take(&mut on_one, 1).await, vec![json!({"after": "outage"})]);
        let got = take(&mut on_two, 1).await;
        assert_eq!(
            got,
            vec![json!({"after": "outage"})],
            "the outage event must not arrive late"
        );
    });
    support::stop(one);
    support::stop(two);
}
