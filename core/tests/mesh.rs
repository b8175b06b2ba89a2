//! The mesh over real shard threads, on both drivers.

use sdsim_core::config::DriverKind;
use sdsim_core::mesh::{Mesh, MeshError};
use sdsim_core::runtime::{Runtime, RuntimeSpec, Shard};
use sdsim_core::shard::ShardId;
use sdsim_core::stall::StallStats;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn spec(shards: usize, driver: DriverKind, ring: usize) -> RuntimeSpec {
    RuntimeSpec {
        cpus: vec![0; shards],
        driver,
        stall_threshold: Duration::from_millis(500),
        ring_capacity: ring,
        pin: false,
        stalls: Arc::new(StallStats::default()),
        private_fd_tables: false,
        blocking_threads: 1,
        blocking_queue: 16,
    }
}

/// Runs `body` on shard 0 of a runtime; the other shards only answer.
fn on_shard0<F, Fut>(shards: usize, driver: DriverKind, ring: usize, body: F)
where
    F: Fn(Shard) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let done = Arc::new(AtomicUsize::new(0));
    let body = Arc::new(body);
    let finished = Arc::clone(&done);
    let rt = Runtime::start(spec(shards, driver, ring), move |shard| {
        let body = Arc::clone(&body);
        let finished = Arc::clone(&finished);
        async move {
            if shard.id() == ShardId(0) {
                body(shard).await;
                finished.store(1, Ordering::SeqCst);
            }
        }
    })
    .unwrap();
    rt.join().unwrap();
    assert_eq!(done.load(Ordering::SeqCst), 1, "the body ran to the end");
}

fn thread_name() -> String {
    std::thread::current().name().unwrap_or("").to_string()
}

#[test]
fn submit_to_runs_on_the_target_thread_on_both_drivers() {
    for driver in [DriverKind::Epoll, DriverKind::IoUring] {
        on_shard0(3, driver, 64, |shard| async move {
            for target in 0..3 {
                let name = shard
                    .mesh()
                    .submit_to(ShardId(target), thread_name)
                    .await
                    .unwrap();
                assert_eq!(name, format!("sdsim-shard-{target}"));
            }
            let all = shard
                .mesh()
                .broadcast(|| Shard::current().id().index())
                .await;
            let ids: Vec<usize> = all.into_iter().map(Result::unwrap).collect();
            assert_eq!(ids, vec![0, 1, 2]);
            assert_eq!(
                shard.mesh().submit_to(ShardId(9), || 1).await,
                Err(MeshError::NoSuchShard(ShardId(9)))
            );
        });
    }
}

#[test]
fn tiny_ring_backpressures_and_loses_nothing_in_order() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    on_shard0(2, DriverKind::Auto, 2, move |shard| {
        let sink = Arc::clone(&sink);
        async move {
            for i in 0..10_000u32 {
                let sink = Arc::clone(&sink);
                shard
                    .mesh()
                    .send_to(ShardId(1), move || sink.lock().unwrap().push(i))
                    .await
                    .unwrap();
            }
            // A round trip after the stream: FIFO per pair means everything before it has run.
            shard.mesh().submit_to(ShardId(1), || ()).await.unwrap();
            assert!(
                shard.mesh_all().stats().full_waits > 0,
                "a 2-slot ring must fill"
            );
        }
    });
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 10_000);
    assert!(
        seen.windows(2).all(|w| w[0] + 1 == w[1]),
        "FIFO, no loss, no duplicates"
    );
}

#[test]
fn a_parked_receiver_is_woken_and_a_panic_is_contained() {
    on_shard0(2, DriverKind::Auto, 16, |shard| async move {
        monoio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(shard.mesh().submit_to(ShardId(1), || 41 + 1).await, Ok(42));
        let r: Result<(), _> = shard
            .mesh()
            .submit_to(ShardId(1), || panic!("job panics"))
            .await;
        assert_eq!(r, Err(MeshError::Panicked));
        assert_eq!(
            shard.mesh().submit_to(ShardId(1), || 7).await,
            Ok(7),
            "receiver survived"
        );
        let r = shard
            .mesh()
            .submit_to_async(ShardId(1), || async { Shard::current().id().index() })
            .await;
        assert_eq!(r, Ok(1));
    });
}

#[test]
fn close_fails_later_sends() {
    let mesh = Mesh::new(2, 8);
    mesh.close();
    let endpoint = mesh.endpoint(ShardId(0));
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    let r = rt.block_on(endpoint.submit_to(ShardId(1), || 1));
    assert_eq!(r, Err(MeshError::Closed));
    assert!(mesh.is_closed());
    assert_eq!(mesh.queue_depths().len(), 2);
}

#[test]
fn yield_now_lets_every_other_ready_task_run() {
    use std::cell::RefCell;
    use std::rc::Rc;
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    let order = rt.block_on(async {
        let order = Rc::new(RefCell::new(Vec::new()));
        let tasks: Vec<_> = ['a', 'b', 'c']
            .into_iter()
            .map(|name| {
                let order = Rc::clone(&order);
                sdsim_core::runtime::spawn("test-task", async move {
                    for _ in 0..3 {
                        order.borrow_mut().push(name);
                        sdsim_core::mesh::yield_now().await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await;
        }
        let order = order.borrow().iter().collect::<String>();
        order
    });
    // A self-waking yield would run one task to completion first ("aaabbbccc").
    assert_eq!(order, "abcabcabc");
}

/// A task that works flat out and yields with `yield_to_driver` between 1 ms slices must not
/// hold up the shard's timers or answers from other threads until it ends (with a plain
/// `yield_now` monoio 0.2 would poll neither while the task keeps its run queue busy).
#[test]
fn yield_to_driver_lets_timers_and_other_threads_through_on_both_drivers() {
    use std::cell::Cell;
    use std::rc::Rc;
    use std::time::Instant;
    for driver in [DriverKind::Epoll, DriverKind::IoUring] {
        on_shard0(1, driver, 64, move |_shard| async move {
            let timer_fired = Rc::new(Cell::new(false));
            let answered = Rc::new(Cell::new(false));
            let fired = Rc::clone(&timer_fired);
            sdsim_core::runtime::spawn("test-task", async move {
                monoio::time::sleep(Duration::from_millis(3)).await;
                fired.set(true);
            });
            let (tx, rx) = tokio::sync::oneshot::channel();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(3));
                let _ = tx.send(());
            });
            let got = Rc::clone(&answered);
            sdsim_core::runtime::spawn("test-task", async move {
                if rx.await.is_ok() {
                    got.set(true);
                }
            });
            // The spinner: 1 ms of busy work per slice, for at most 3 s.
            let began = Instant::now();
            let mut slices = 0u32;
            while !(timer_fired.get() && answered.get()) && began.elapsed() < Duration::from_secs(3)
            {
                let slice = Instant::now();
                while slice.elapsed() < Duration::from_millis(1) {
                    std::hint::spin_loop();
                }
                slices += 1;
                sdsim_core::mesh::yield_to_driver().await;
            }
            assert!(
                timer_fired.get(),
                "{driver:?}: the timer did not fire during {slices} slices"
            );
            assert!(
                answered.get(),
                "{driver:?}: the other thread's answer did not arrive during {slices} slices"
            );
        });
    }
}
