//! Adaptive load shedding end to end: a one-shard server whose handlers hold the shard (the
//! `/test/block` route blocks it for 40 ms, as CPU-bound work would) builds a standing queue;
//! once its queueing delay has stayed above `shedding.target` for `shedding.interval`, it
//! admits work only at the rate it managed and refuses the rest early — 503 `overloaded` with
//! `Retry-After`, the client's request id, on a connection that stays usable — while `/health`
//! still answers and `/metrics` counts what was shed. Every block lasts at least 40 ms of wall
//! time however busy the machine is, so the overload is certain, not timed.

mod support;

use serde_json::Value;
use support::{get, start, stop, Client, Resp};

/// What one client saw: its request's answer and, on the same connection, `/health`'s.
struct Seen {
    id: String,
    answer: Resp,
    health_after: u16,
}

#[test]
fn a_standing_queue_is_shed_early_and_health_still_answers() {
    let server = start(&[
        "ratelimit.enabled=false",
        "runtime.shards=1",
        "runtime.cpus=[0]",
        "shedding.enabled=true",
    ]);
    let addr = server.local_addr();
    let seen: Vec<Seen> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..30)
            .map(|i| {
                s.spawn(move || {
                    let id = format!("client-{i}");
                    let mut c = Client::connect(addr);
                    c.send(
                        format!(
                            "GET /test/block HTTP/1.1\r\nHost: t\r\nX-Request-Id: {id}\r\n\r\n"
                        )
                        .as_bytes(),
                    );
                    let answer = c.read_response(false);
                    // The refusal is framed like any answer: the connection carries on.
                    let health_after = c.get("/health").status;
                    Seen {
                        id,
                        answer,
                        health_after,
                    }
                })
            })
            .collect();
        // While the queue stands, health checks still pass.
        assert_eq!(get(addr, "/health").status, 200);
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let statuses: Vec<u16> = seen.iter().map(|s| s.answer.status).collect();
    let served = statuses.iter().filter(|s| **s == 200).count();
    let shed: Vec<&Seen> = seen.iter().filter(|s| s.answer.status == 503).collect();
    assert_eq!(served + shed.len(), 30, "only 200 or 503: {statuses:?}");
    assert!(served >= 1, "the first requests are admitted: {statuses:?}");
    assert!(
        !shed.is_empty(),
        "a standing queue must be shed: {statuses:?}"
    );
    for s in &seen {
        assert_eq!(s.health_after, 200, "{}: /health after its answer", s.id);
    }
    for s in &shed {
        let a = &s.answer;
        assert_eq!(a.header("retry-after"), Some("1"), "{}", s.id);
        assert_eq!(a.header("content-type"), Some("application/json"));
        assert_eq!(a.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(a.header("x-request-id"), Some(s.id.as_str()));
        let body: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
        assert_eq!(body["error"]["code"], "overloaded", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    }
    let metrics = get(addr, "/metrics").text();
    let counted: u64 = metrics
        .lines()
        .find(|l| l.starts_with("sdsim_shed_total{protocol=\"http\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sdsim_shed_total in:\n{metrics}"));
    assert_eq!(counted, shed.len() as u64);
    // The queue drained: the shard admits work again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while get(addr, "/test/slow/0").status != 200 {
        assert!(std::time::Instant::now() < deadline, "never admitted again");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    stop(server);
}
