//! The Redis bridge between two instances' bridges and a real redis-server: a burst arrives
//! complete and in per-channel order, and it travels in pipelined batches, not one `PUBLISH`
//! per round trip. (`services/server/tests/redis_bridge.rs` covers the whole path through
//! HTTP and WebSocket, and a Redis restart.)
//!
//! Needs `redis-server` on PATH (test.sh installs Debian's package).

use bytes::Bytes;
use sdsim_core::bus::owner_of;
use sdsim_gateway::redis_bridge::{Bridge, Remote, MAX_BATCH_EVENTS};
use sdsim_testing::redis::Redis;
use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A bound on a hang, not on speed.
const PATIENCE: Duration = Duration::from_secs(60);

fn started(redis: &Redis, shards: usize, instance: &str) -> Arc<Bridge> {
    let bridge = Bridge::start(&redis.url(), shards, instance.to_string()).unwrap();
    let deadline = Instant::now() + PATIENCE;
    while !bridge.stats.up.load(Ordering::Relaxed) {
        assert!(
            Instant::now() < deadline,
            "bridge {instance} never connected"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    bridge
}

/// Receives `n` events from one inbound queue.
fn receive(inbound: &mut mpsc::Receiver<Remote>, n: usize) -> Vec<Remote> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            let event = tokio::time::timeout(PATIENCE, inbound.recv())
                .await
                .unwrap_or_else(|_| panic!("only {} of {n} events arrived", got.len()))
                .expect("the bridge stopped");
            got.push(event);
        }
        got
    })
}

/// Sends one command on a plain connection and checks the answer is `+OK`.
fn redis_ok(redis: &Redis, command: &str) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(format!("{command}\r\n").as_bytes()).unwrap();
    let mut answer = [0u8; 5];
    s.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"+OK\r\n", "{command}");
}

#[test]
fn a_burst_from_two_shards_arrives_complete_and_in_order_per_channel() {
    const CHANNELS: usize = 50;
    const PER_CHANNEL: usize = 400;
    let redis = Redis::start();
    let from = started(&redis, 2, "instance-a");
    let to = started(&redis, 3, "instance-b");
    let channels: Vec<Arc<str>> = (0..CHANNELS)
        .map(|k| Arc::from(format!("simulation:data:{k}")))
        .collect();
    // Two publishing shards, each the owner of half the channels, interleaving them.
    let publishers: Vec<_> = (0..2)
        .map(|shard| {
            let outlet = from.outlet();
            let channels = channels.clone();
            std::thread::spawn(move || {
                for i in 0..PER_CHANNEL {
                    for channel in channels.iter().skip(shard).step_by(2) {
                        outlet(channel, &Bytes::from(format!("{{\"i\":{i}}}")));
                    }
                }
            })
        })
        .collect();
    let receivers: Vec<_> = (0..3)
        .map(|shard| {
            let mut inbound = to.take_inbound(shard).unwrap();
            let expected = channels
                .iter()
                .filter(|c| owner_of(c, 3).index() == shard)
                .count()
                * PER_CHANNEL;
            std::thread::spawn(move || (shard, receive(&mut inbound, expected)))
        })
        .collect();
    for p in publishers {
        p.join().unwrap();
    }
    let mut next = vec![0usize; CHANNELS];
    for r in receivers {
        let (shard, events) = r.join().unwrap();
        for (channel, data) in events {
            assert_eq!(
                owner_of(&channel, 3).index(),
                shard,
                "{channel} on shard {shard}"
            );
            let k: usize = channel.rsplit(':').next().unwrap().parse().unwrap();
            let want = format!("{{\"i\":{}}}", next[k]);
            assert_eq!(data, Bytes::from(want), "{channel}: out of order or a gap");
            next[k] += 1;
        }
    }
    assert!(next.iter().all(|&n| n == PER_CHANNEL), "{next:?}");
    let total = (CHANNELS * PER_CHANNEL) as u64;
    assert_eq!(from.stats.published.load(Ordering::Relaxed), total);
    assert_eq!(from.stats.publish_dropped.load(Ordering::Relaxed), 0);
    assert_eq!(to.stats.received.load(Ordering::Relaxed), total);
    assert_eq!(to.stats.receive_dropped.load(Ordering::Relaxed), 0);
    // Its own events come back through the pattern subscription and are skipped.
    assert_eq!(from.stats.received.load(Ordering::Relaxed), 0);
}

#[test]
fn events_queued_behind_a_slow_publish_leave_in_pipelined_batches() {
    const EVENTS: usize = 2_000;
    let redis = Redis::start();
    let from = started(&redis, 1, "instance-a");
    let to = started(&redis, 1, "instance-b");
    let mut inbound = to.take_inbound(0).unwrap();
    let outlet = from.outlet();
    let channel: Arc<str> = Arc::from("system:announcements");
    // Redis holds every PUBLISH until unpaused: the first batch stays in flight while the
    // rest of the burst queues behind it.
    redis_ok(&redis, "CLIENT PAUSE 600000 WRITE");
    for i in 0..EVENTS {
        outlet(&channel, &Bytes::from(i.to_string()));
    }
    redis_ok(&redis, "CLIENT UNPAUSE");
    let got = receive(&mut inbound, EVENTS);
    let want: Vec<Bytes> = (0..EVENTS).map(|i| Bytes::from(i.to_string())).collect();
    let got: Vec<Bytes> = got.into_iter().map(|(_, data)| data).collect();
    assert!(got == want, "events out of order or missing");
    assert_eq!(from.stats.published.load(Ordering::Relaxed), EVENTS as u64);
    // The first batch holds whatever was queued when the bridge woke (at least one event);
    // the remaining ones, at most EVENTS - 1, were all queued by then and leave in full batches.
    let most = 1 + (EVENTS - 1).div_ceil(MAX_BATCH_EVENTS) as u64;
    let batches = from.stats.batches.load(Ordering::Relaxed);
    assert!(
        (1..=most).contains(&batches),
        "{EVENTS} queued events took {batches} batches (at most {most})"
    );
    // Whatever the cap, a burst is not one round trip per event: 200 events a batch at least.
    assert!(
        batches <= (EVENTS / 200) as u64,
        "{EVENTS} queued events took {batches} batches"
    );
}
