//! A logout on one instance reaches every other instance even when the broadcast is lost: with
//! Redis down while the session is revoked, the other instance refuses the token once Redis is
//! back (it reads storage when the link returns), and without Redis at all it refuses it after
//! its next periodic read of storage (`auth.revocation_sync`). Two in-process instances share
//! a real PostgreSQL and a real redis-server, both started here on loopback ports.

mod support;

use sdsim_testing::redis::Redis;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::{call, login, register, start, stop, STRONG};

/// `/api/auth/me`'s status for `token` on `addr`.
fn me(addr: SocketAddr, token: &str) -> u16 {
    call(addr, "GET", "/api/auth/me", Some(token), None).0
}

/// Waits until `addr` refuses `token` (401). The deadline only catches a revocation that never
/// arrives; how fast it arrives is not what this asserts.
fn until_refused(addr: SocketAddr, token: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match me(addr, token) {
            401 => return,
            200 => {}
            other => panic!("unexpected status {other}"),
        }
        assert!(
            Instant::now() < deadline,
            "the revoked token still works on the other instance"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Logs in on `one`, proves the token works on `two`, logs out on `one`.
fn log_in_then_out(one: SocketAddr, two: SocketAddr, email: &str) -> String {
    register(one, email);
    let (status, tokens) = login(one, email, STRONG);
    assert_eq!(status, 200, "{tokens}");
    let token = tokens["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        me(two, &token),
        200,
        "the other instance accepts the live token"
    );
    let (status, v, _) = call(one, "POST", "/api/auth/logout", Some(&token), None);
    assert!(status == 200 || status == 204, "{status} {v}");
    assert_eq!(
        me(one, &token),
        401,
        "the instance that logged out refuses at once"
    );
    token
}

#[test]
fn a_logout_while_redis_is_down_reaches_the_other_instance_when_redis_returns() {
    let database = sdsim_testing::postgres::fresh_database_url();
    let mut redis = Redis::start();
    let storage = format!("storage.url={}", database);
    let link = redis.url_setting();
    // Periodic reads effectively off: only the read on reconnect can deliver the revocation.
    let sets = [
        storage.as_str(),
        link.as_str(),
        "ratelimit.enabled=false",
        "auth.revocation_sync=1h",
    ];
    let one = start(&sets);
    // The second instance starts once the first has made the signing key, and shares it.
    let two = start(&sets);
    let (a1, a2) = (one.local_addr(), two.local_addr());

    redis.kill();
    let token = log_in_then_out(a1, a2, "ada@example.com");
    // Redis is down: the broadcast was lost, and nothing else tells instance two yet.
    assert_eq!(
        me(a2, &token),
        200,
        "no path to instance two while Redis is down"
    );
    redis.launch();
    until_refused(a2, &token);
    stop(one);
    stop(two);
}

#[test]
fn without_any_broadcast_a_logout_reaches_the_other_instance_by_the_periodic_read() {
    let database = sdsim_testing::postgres::fresh_database_url();
    let storage = format!("storage.url={}", database);
    // No Redis: instances share only the database.
    let sets = [
        storage.as_str(),
        "ratelimit.enabled=false",
        "auth.revocation_sync=500ms",
    ];
    let one = start(&sets);
    let two = start(&sets);
    let token = log_in_then_out(one.local_addr(), two.local_addr(), "bob@example.com");
    until_refused(two.local_addr(), &token);
    stop(one);
    stop(two);
}
