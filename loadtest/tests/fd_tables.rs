//! Past the per-process descriptor limit: a gateway with `runtime.private_fd_tables` (a table
//! per shard) against the generator with a table per thread, under a lowered RLIMIT_NOFILE.
//! Its own test binary (process) because it lowers the limit for the whole process.

mod support;

use sdsim_loadtest::ws::{run_ws, Op, WsOptions};
use std::time::Duration;

/// Low enough that neither side fits its connections into one table.
const SOFT_LIMIT: u64 = 700;
const CONNECTIONS: usize = 800;

fn lower_limit() {
    // SAFETY: getrlimit/setrlimit on a zeroed struct; only the soft limit is lowered.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = SOFT_LIMIT;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
}

#[test]
fn both_sides_hold_more_connections_than_one_table_allows_and_the_listener_really_closes() {
    lower_limit();
    let server = support::gateway(&[
        "runtime.cpus=[0, 0]",
        "runtime.private_fd_tables=true",
        "auth.dev_open=true",
        "websocket.max_connections_per_user=0",
        "websocket.max_connections_per_ip=0",
    ]);
    let addr = server.local_addr();
    let load = WsOptions {
        url: format!("ws://{addr}/ws"),
        connections: CONNECTIONS,
        connect_rate: 2000.0,
        duration: Duration::from_secs(1),
        warmup: Duration::from_millis(200),
        token: Some("fd-{i}".into()),
        // Two generator threads: each takes half the connections into a table of its own.
        cpus: vec![0, 0],
        interval: Duration::from_millis(250),
        publish_rate: Some(10.0),
        publish_connections: 2,
        send_rate: Some(100.0),
        ..WsOptions::default()
    }
    .build()
    .unwrap();
    let report = run_ws(&load).unwrap();
    assert_eq!(
        report.errors_by_kind(),
        Default::default(),
        "{}",
        report.table()
    );
    assert_eq!(report.subscribed, CONNECTIONS);
    assert_eq!(report.held_at_end as usize, CONNECTIONS);
    // Events published through one shard reach the connections of both (a mesh hop between
    // shards whose tables differ).
    let publish = report.report(Op::Publish).counters.completed;
    assert!(publish > 0);
    assert_eq!(
        report.report(Op::Deliver).counters.completed,
        publish * CONNECTIONS as u64,
        "{}",
        report.table()
    );
    assert_eq!(
        report.report(Op::Ping).counters.completed,
        report.report(Op::Ping).counters.sent
    );

    support::stop(server);
    // Every table still holds a copy of the listening sockets made before the shards started;
    // a stopped server must refuse, not queue, new connections all the same.
    let refused = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2));
    assert!(
        refused.is_err(),
        "a connection to the stopped server's port was accepted into a backlog"
    );
}
