//! Adaptive load shedding end to end: a one-shard server whose handlers hold the shard (the
//! `/test/block` route blocks it for 40 ms, as CPU-bound work would) builds a standing queue;
//! once its queueing delay has stayed above `shedding.target` for `shedding.interval`, new
//! requests are refused early with 503 `overloaded` and `Retry-After`, `/health` still answers,
//! and `/metrics` counts what was shed. Every block lasts at least 40 ms of wall time however
//! busy the machine is, so the overload is certain, not timed.

mod support;

use serde_json::Value;
use support::{get, start, stop};

#[test]
fn a_standing_queue_is_shed_early_and_health_still_answers() {
    let server = start(&[
        "ratelimit.enabled=false",
        "runtime.shards=1",
        "runtime.cpus=[0]",
        "shedding.enabled=true",
    ]);
    let addr = server.local_addr();
    let answers: Vec<(u16, Option<String>, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..30)
            .map(|_| {
                s.spawn(move || {
                    let r = get(addr, "/test/block");
                    let body = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
                    (r.status, r.header("retry-after").map(str::to_string), body)
                })
            })
            .collect();
        // While the queue stands, health checks still pass.
        assert_eq!(get(addr, "/health").status, 200);
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let served = answers.iter().filter(|(status, ..)| *status == 200).count();
    let shed: Vec<_> = answers
        .iter()
        .filter(|(status, ..)| *status == 503)
        .collect();
    assert_eq!(served + shed.len(), 30, "only 200 or 503: {answers:?}");
    assert!(served >= 1, "the first requests are admitted: {answers:?}");
    assert!(
        !shed.is_empty(),
        "a standing queue must be shed: {answers:?}"
    );
    for (_, retry_after, body) in &shed {
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert_eq!(body["error"]["code"], "overloaded", "{body}");
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
