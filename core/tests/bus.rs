//! The sharded bus on real shard threads: owner sequencing, cross-shard fan-out in order,
//! history and recovery, and the forward-queue bound.

use bytes::Bytes;
use sdsim_core::bus::{owner_of, Bus, Event, Since, Sink, Subscription};
use sdsim_core::config::{BusConfig, DriverKind};
use sdsim_core::metrics::{Key, Metrics};
use sdsim_core::runtime::{Runtime, RuntimeSpec, Shard};
use sdsim_core::shard::ShardId;
use sdsim_core::stall::StallStats;
use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Recorder(RefCell<Vec<u64>>);

impl Sink for Recorder {
    fn push(&self, event: &Arc<Event>) -> bool {
        self.0.borrow_mut().push(event.seq);
        true
    }
}

/// Subscriptions and recorders kept on a shard between mesh calls.
#[derive(Default)]
struct Held(RefCell<Vec<(Subscription, Rc<Recorder>)>>);

fn channel_owned_by(shard: usize, shards: usize, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}:{i}"))
        .find(|c| owner_of(c, shards) == ShardId(shard))
        .unwrap()
}

fn run<F, Fut>(config: BusConfig, body: F)
where
    F: Fn(Shard) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let spec = RuntimeSpec {
        cpus: vec![0, 0],
        driver: DriverKind::Epoll,
        stall_threshold: Duration::from_millis(500),
        ring_capacity: 64,
        pin: false,
        stalls: Arc::new(StallStats::default()),
        private_fd_tables: false,
        blocking_threads: 1,
        blocking_queue: 16,
    };
    let done = Arc::new(AtomicUsize::new(0));
    let finished = Arc::clone(&done);
    let installed = Arc::new(AtomicUsize::new(0));
    let body = Arc::new(body);
    let rt = Runtime::start(spec, move |shard| {
        let body = Arc::clone(&body);
        let finished = Arc::clone(&finished);
        let installed = Arc::clone(&installed);
        let config = config.clone();
        async move {
            let metrics = shard.insert(Metrics::new());
            Bus::install(
                &shard,
                config,
                Arc::new(|_: &str, seq: u64, _: &[u8]| Bytes::from(seq.to_string())),
                7,
                metrics,
            );
            shard.insert(Held::default());
            installed.fetch_add(1, Ordering::SeqCst);
            if shard.id() == ShardId(0) {
                // Shard 1 must have its bus before the body asks it for anything.
                eventually("shard 1 installs its bus", || async {
                    installed.load(Ordering::SeqCst) == 2
                })
                .await;
                body(shard).await;
                finished.store(1, Ordering::SeqCst);
            }
        }
    })
    .unwrap();
    rt.join().unwrap();
    assert_eq!(done.load(Ordering::SeqCst), 1, "the body ran to the end");
}

/// Subscribes on shard `on` and keeps the subscription there.
async fn subscribe_on(on: usize, channel: &str, since: Option<Since>) -> (u64, bool, Vec<u64>) {
    let channel = channel.to_string();
    Shard::current()
        .mesh()
        .submit_to_async(ShardId(on), move || async move {
            let bus = Bus::local().unwrap();
            let rec = Rc::new(Recorder::default());
            let (sub, attached) = bus.subscribe(&channel, rec.clone(), since).await.unwrap();
            let missed = attached.missed.iter().map(|e| e.seq).collect();
            sub.activate(attached.seq);
            Shard::current()
                .get::<Held>()
                .unwrap()
                .0
                .borrow_mut()
                .push((sub, rec));
            (attached.seq, attached.recovered, missed)
        })
        .await
        .unwrap()
}

/// Polls `done` until it says yes; panics after 10 s, which only a hang takes.
async fn eventually<F, Fut>(what: &str, done: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done().await {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        monoio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// What every subscription held on shard `on` has received, once each has `n` events:
/// delivery to another shard is asynchronous.
async fn received_on(on: usize, n: usize) -> Vec<Vec<u64>> {
    eventually("every subscription receives its events", || async {
        received_now(on).await.iter().all(|got| got.len() >= n)
    })
    .await;
    received_now(on).await
}

/// What every subscription held on shard `on` has received so far.
async fn received_now(on: usize) -> Vec<Vec<u64>> {
    Shard::current()
        .mesh()
        .submit_to(ShardId(on), || {
            let held = Shard::current().get::<Held>().unwrap();
            let v = held
                .0
                .borrow()
                .iter()
                .map(|(_, r)| r.0.borrow().clone())
                .collect();
            v
        })
        .await
        .unwrap()
}

#[test]
fn events_reach_subscribers_on_every_shard_once_and_in_order() {
    run(BusConfig::default(), |_shard| async move {
        let channel = channel_owned_by(1, 2, "c");
        subscribe_on(0, &channel, None).await;
        subscribe_on(1, &channel, None).await;
        subscribe_on(0, &channel, None).await;
        let bus = Bus::local().unwrap();
        for i in 1..=200u64 {
            // Published on shard 0, sequenced on shard 1, fanned back to shard 0.
            assert_eq!(
                bus.publish(&channel, Bytes::from_static(b"{}"))
                    .await
                    .unwrap(),
                i
            );
        }
        let want: Vec<u64> = (1..=200).collect();
        for got in received_on(0, 200)
            .await
            .into_iter()
            .chain(received_on(1, 200).await)
        {
            assert_eq!(got, want);
        }
        let delivered = Shard::current().get::<Metrics>().unwrap().snapshot();
        assert!(
            delivered
                .counters
                .get(&Key::plain(sdsim_core::bus::DELIVERED))
                .copied()
                .unwrap_or(0)
                >= 400
        );
    });
}

#[test]
fn history_recovers_what_was_missed_or_says_it_cannot() {
    let config = BusConfig {
        history_size: 20,
        ..BusConfig::default()
    };
    run(config, |_shard| async move {
        let channel = channel_owned_by(1, 2, "h");
        let bus = Bus::local().unwrap();
        for _ in 0..30 {
            bus.publish(&channel, Bytes::from_static(b"1"))
                .await
                .unwrap();
        }
        let (seq, recovered, missed) = subscribe_on(
            0,
            &channel,
            Some(Since {
                seq: 25,
                epoch: None,
            }),
        )
        .await;
        assert_eq!(
            (seq, recovered, missed),
            (30, true, vec![26, 27, 28, 29, 30])
        );
        // History holds 11..=30: since 10 is just recoverable, since 9 is not.
        let (_, recovered, missed) = subscribe_on(
            0,
            &channel,
            Some(Since {
                seq: 10,
                epoch: None,
            }),
        )
        .await;
        assert!(recovered);
        assert_eq!(missed, (11..=30).collect::<Vec<_>>());
        let (_, recovered, missed) = subscribe_on(
            0,
            &channel,
            Some(Since {
                seq: 9,
                epoch: None,
            }),
        )
        .await;
        assert_eq!((recovered, missed.len()), (false, 0));
        // A position from the future or another epoch is not recoverable either.
        let (_, recovered, _) = subscribe_on(
            1,
            &channel,
            Some(Since {
                seq: 31,
                epoch: None,
            }),
        )
        .await;
        assert!(!recovered);
        let (_, recovered, _) = subscribe_on(
            1,
            &channel,
            Some(Since {
                seq: 29,
                epoch: Some("other".into()),
            }),
        )
        .await;
        assert!(!recovered);
    });
}

#[test]
fn a_full_forward_queue_drops_the_oldest_and_counts_them() {
    let config = BusConfig {
        max_forward_queue: 16,
        ..BusConfig::default()
    };
    run(config, |_shard| async move {
        // Owned by shard 0, a subscriber on shard 1: every event crosses.
        let channel = channel_owned_by(0, 2, "f");
        subscribe_on(1, &channel, None).await;
        let bus = Bus::local().unwrap();
        // The owner sequences 1,000 events without yielding: its forwarder cannot run, so the
        // queue for shard 1 keeps only the newest 16.
        for _ in 0..1000 {
            let fut = bus.publish(&channel, Bytes::from_static(b"1"));
            let mut fut = std::pin::pin!(fut);
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            assert!(
                fut.as_mut().poll(&mut cx).is_ready(),
                "owner publishes complete at once"
            );
        }
        let got = received_on(1, 16).await.remove(0);
        assert_eq!(got, (985..=1000).collect::<Vec<_>>());
        let snap = Shard::current().get::<Metrics>().unwrap().snapshot();
        assert_eq!(
            snap.counters
                .get(&Key::plain(sdsim_core::bus::FORWARD_DROPPED))
                .copied(),
            Some(984)
        );
    });
}
