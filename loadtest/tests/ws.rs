//! The WebSocket load against a real sdsim gateway started in this process on 127.0.0.1
//! (2 shards, dev-open auth), and the generator binary itself for the descriptor check.
//! Assertions are on counts, and on times only where a lower bound is certain.

mod support;

use sdsim_loadtest::ws::{
    run_ws, run_ws_observed, run_ws_with, Op, WsClient, WsClientError, WsControl, WsEvent, WsLoad,
    WsOptions,
};
use sdsim_net::ws::frame::Message;
use sdsim_server::Server;
use std::time::{Duration, Instant};
use support::{serial, stop};

/// A gateway where any bearer token is accepted as an admin, with no per-user limit.
fn gateway_with(sets: &[&str]) -> Server {
    let mut all = vec!["auth.dev_open=true", "websocket.max_connections_per_user=0"];
    all.extend_from_slice(sets);
    support::gateway(&all)
}

fn options(server: &Server, connections: usize) -> WsOptions {
    WsOptions {
        url: format!("ws://{}/ws", server.local_addr()),
        connections,
        connect_rate: 1000.0,
        duration: Duration::from_secs(1),
        warmup: Duration::from_millis(200),
        token: Some("loadtest-{i}".into()),
        cpus: vec![0],
        interval: Duration::from_millis(250),
        ..WsOptions::default()
    }
}

#[test]
fn connections_open_at_the_connect_rate_from_every_source_and_all_hold() {
    let _one_at_a_time = serial();
    // 60 per client IP: the 200 connections only fit if they really come from 4 addresses.
    let server = gateway_with(&["websocket.max_connections_per_ip=60"]);
    let load = WsOptions {
        sources: Some("127.0.0.1-127.0.0.4".into()),
        ..options(&server, 200)
    }
    .build()
    .unwrap();
    let mut held_seen = Vec::new();
    let report = run_ws_with(&load, |_, held, _| held_seen.push(held)).unwrap();
    stop(server);
    assert_eq!(
        report.errors_by_kind(),
        Default::default(),
        "{}",
        report.table()
    );
    assert_eq!(report.subscribed, 200);
    assert_eq!(report.held_at_end, 200);
    let connect = report.report(Op::Connect);
    assert_eq!(connect.counters.sent, 200);
    assert_eq!(connect.counters.completed, 200);
    assert_eq!(connect.histogram.len(), 200, "one latency per connection");
    // Connection i may not start before i / 1000 s: the last one starts at 0.199 s at the
    // earliest, and is subscribed after that.
    assert!(
        report.ramp >= Duration::from_millis(199),
        "200 connections at 1000/s in {:?}",
        report.ramp
    );
    assert!(report.ramp < Duration::from_secs(10), "{:?}", report.ramp);
    assert_eq!(held_seen.iter().max(), Some(&200), "{held_seen:?}");
    assert!(report.rss_end > 0);
}

#[test]
fn every_event_reaches_every_connection_and_pings_are_answered() {
    let _one_at_a_time = serial();
    let server = gateway_with(&[]);
    let load = WsOptions {
        publish_rate: Some(20.0),
        publish_connections: 2,
        send_rate: Some(200.0),
        ..options(&server, 100)
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
    let publish = report.report(Op::Publish);
    // Open loop: event k is due k / 20 s into the 1 s hold, so exactly 20 are published.
    let events = publish.counters.completed;
    assert_eq!(publish.counters.sent, 20);
    assert_eq!(events, 20);
    let deliver = report.report(Op::Deliver);
    assert_eq!(
        deliver.counters.completed,
        100 * events,
        "{}",
        report.table()
    );
    assert_eq!(deliver.counters.sent, 100 * events, "deliveries owed");
    assert_eq!(
        deliver.histogram.len(),
        100 * events,
        "one latency per delivery"
    );
    assert_eq!(report.tally.seq_gaps, 0);
    // 200 pings/s over 100 connections: each pings every 0.5 s, first at i / 200 s.
    let ping = report.report(Op::Ping);
    assert_eq!(ping.counters.sent, 200, "{:?}", ping.counters);
    assert_eq!(ping.counters.completed, 200);
    assert_eq!(ping.histogram.len(), 200);

    // Spread over 4 channels: each event reaches the quarter of the connections on its channel.
    let load = WsOptions {
        channels: Some(4),
        publish_rate: Some(20.0),
        ..options(&server, 100)
    }
    .build()
    .unwrap();
    let report = run_ws(&load).unwrap();
    stop(server);
    assert_eq!(
        report.errors_by_kind(),
        Default::default(),
        "{}",
        report.table()
    );
    let events = report.report(Op::Publish).counters.completed;
    let deliver = report.report(Op::Deliver);
    assert_eq!(events, 20);
    assert_eq!(
        deliver.counters.completed,
        25 * events,
        "{}",
        report.table()
    );
    assert_eq!(deliver.counters.sent, deliver.counters.completed);
}

#[test]
fn connections_the_server_closes_are_counted_with_their_close_code() {
    let _one_at_a_time = serial();
    let server = gateway_with(&[]);
    let load = WsLoad {
        duration: Duration::from_secs(30),
        ..options(&server, 20).build().unwrap()
    };
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let runner = std::thread::spawn(move || {
        run_ws_with(&load, |_, held, _| {
            let _ = held_tx.send(held);
        })
    });
    // Once all 20 are held, shut the server down: it closes each with 1001 (going away).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while held_rx.recv_timeout(Duration::from_secs(20)).unwrap() < 20 {
        assert!(std::time::Instant::now() < deadline, "never held 20");
    }
    stop(server);
    // With nothing left to hold, the run ends long before its 30 s.
    let report = runner.join().unwrap().unwrap();
    let errors = report.errors_by_kind();
    assert_eq!(errors.get("closed"), Some(&20), "{}", report.table());
    assert_eq!(report.tally.close_codes.get(&1001), Some(&20));
    assert_eq!(report.held_at_end, 0);
    assert_eq!(report.subscribed, 20);
}

#[test]
fn an_observed_run_reports_its_stages_in_order_and_its_hold_waits_for_the_observer() {
    let _one_at_a_time = serial();
    let server = gateway_with(&[]);
    let load = WsOptions {
        publish_rate: Some(20.0),
        publish_connections: 1,
        ..options(&server, 10)
    }
    .build()
    .unwrap();
    let control = WsControl::default();
    let (mut stages, mut measured_until) = (Vec::new(), None);
    let report = run_ws_observed(&load, &control, |event| match event {
        WsEvent::Connected { held } => {
            stages.push(("connected", held));
            // A caller measuring the idle connections: the hold must wait for it.
            std::thread::sleep(Duration::from_millis(300));
            measured_until = Some(Instant::now());
        }
        WsEvent::HoldStarted { at, held } => {
            assert!(Some(at) >= measured_until, "the hold began while measuring");
            stages.push(("hold started", held));
        }
        WsEvent::HoldEnded { held, .. } => stages.push(("hold ended", held)),
        WsEvent::Stopping { held, .. } => stages.push(("stopping", held)),
        WsEvent::Interval { .. } => {}
    })
    .unwrap();
    stop(server);
    assert_eq!(
        stages,
        [
            ("connected", 10),
            ("hold started", 10),
            ("hold ended", 10),
            ("stopping", 10)
        ]
    );
    assert_eq!(control.subscribed(), 10);
    assert_eq!(control.settled(), 10);
    // Event k is due k / 20 s into the 1 s hold: 20 events, on the one channel.
    assert_eq!(report.published, [20]);
    assert_eq!(report.report(Op::Deliver).counters.completed, 200);
    assert!(report
        .tally
        .last_delivery
        .is_some_and(|t| Some(t) > measured_until));
}

#[test]
fn a_control_ends_a_hold_early() {
    let _one_at_a_time = serial();
    let server = gateway_with(&[]);
    let load = WsLoad {
        duration: Duration::from_secs(600),
        ..options(&server, 10).build().unwrap()
    };
    let control = WsControl::default();
    let mut stages = Vec::new();
    let report = run_ws_observed(&load, &control, |event| match event {
        WsEvent::HoldStarted { held, .. } => {
            stages.push(("hold started", held));
            control.stop();
        }
        WsEvent::HoldEnded { held, .. } => stages.push(("hold ended", held)),
        WsEvent::Stopping { held, .. } => stages.push(("stopping", held)),
        _ => {}
    })
    .unwrap();
    stop(server);
    // Stopped, not drained: the 600 s hold never ended by itself.
    assert_eq!(stages, [("hold started", 10), ("stopping", 10)]);
    assert_eq!(report.held_at_end, 10);
    assert_eq!(report.errors_by_kind(), Default::default());
}

#[test]
fn a_single_client_subscribes_gets_answers_and_is_refused_a_wrong_token() {
    let _one_at_a_time = serial();
    let server = gateway_with(&[
        "auth.dev_open=false",
        r#"auth.tokens=[{token="admin-token-0123456789",user="ops",roles=["admin"]}]"#,
    ]);
    let addr = server.local_addr();
    let host = addr.to_string();
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    let (texts, refused) = rt.block_on(async {
        let mut client = WsClient::connect(addr, &host, "/ws", Some("admin-token-0123456789"))
            .await
            .unwrap();
        for channel in ["system:announcements", "simulation:events:started"] {
            let text = format!(r#"{{"op":"subscribe","channel":"{channel}"}}"#);
            client.send_text(&text).await.unwrap();
        }
        client.send_text(r#"{"op":"ping"}"#).await.unwrap();
        let mut texts = Vec::new();
        while texts.len() < 3 {
            match client.recv().await.unwrap() {
                Message::Text(t) => texts.push(String::from_utf8(t.to_vec()).unwrap()),
                other => panic!("{other:?}"),
            }
        }
        let refused = WsClient::connect(addr, &host, "/ws", Some("wrong-token")).await;
        (texts, refused.err())
    });
    stop(server);
    assert!(texts[0].contains(r#""op":"subscribed""#), "{texts:?}");
    assert!(texts[0].contains("system:announcements"), "{texts:?}");
    assert!(texts[1].contains("simulation:events:started"), "{texts:?}");
    assert_eq!(texts[2], r#"{"op":"pong"}"#);
    assert!(
        matches!(refused, Some(WsClientError::Status(401))),
        "{refused:?}"
    );
}

#[test]
fn refused_connects_and_refused_upgrades_are_errors_by_kind() {
    let _one_at_a_time = serial();
    // Nothing listens there, and nothing can while the test runs.
    let port = sdsim_testing::refused_addr().port();
    let load = WsOptions {
        url: format!("ws://127.0.0.1:{port}/ws"),
        connections: 10,
        duration: Duration::from_millis(100),
        warmup: Duration::ZERO,
        ..WsOptions::default()
    }
    .build()
    .unwrap();
    let report = run_ws(&load).unwrap();
    assert_eq!(report.errors_by_kind().get("connect_refused"), Some(&10));
    assert_eq!(report.subscribed, 0);

    // A server that knows one static token: any other is refused with 401 at the upgrade.
    let server = gateway_with(&[
        "auth.dev_open=false",
        r#"auth.tokens=[{token="admin-token-0123456789",user="ops",roles=["admin"]}]"#,
    ]);
    let load = WsOptions {
        token: Some("wrong-token".into()),
        ..options(&server, 10)
    }
    .build()
    .unwrap();
    let report = run_ws(&load).unwrap();
    stop(server);
    assert_eq!(report.errors_by_kind().get("handshake_status"), Some(&10));
    assert_eq!(report.tally.statuses.get(&401), Some(&10));
}

#[test]
fn asking_for_more_connections_than_the_fd_limit_is_a_clear_error() {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_sdsim-loadtest"));
    command.args([
        "ws",
        "ws://127.0.0.1:9/ws",
        "--connections",
        "500",
        "--quiet",
    ]);
    // SAFETY: setrlimit is async-signal-safe; the child lowers its own limits before exec.
    unsafe {
        command.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 128,
                rlim_max: 128,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("500 connections"), "{stderr}");
    assert!(stderr.contains("RLIMIT_NOFILE allows 128"), "{stderr}");
}
