//! The stall detector sees every task: jobs other shards send through the mesh (run by the
//! receiver task), tasks `submit_to_async` starts, tasks started with `runtime::spawn`, and the
//! shard's main future. Before, only `Shard::spawn` tasks were timed, and a job that held its
//! shard through the mesh went unseen.

use sdsim_core::config::DriverKind;
use sdsim_core::runtime::{Runtime, RuntimeSpec, Shard};
use sdsim_core::shard::ShardId;
use sdsim_core::stall::StallStats;
use std::sync::Arc;
use std::time::Duration;

/// Longer than the threshold by a wide margin: `thread::sleep` never returns early, so every
/// such poll is a stall however busy the machine is.
const HOLD: Duration = Duration::from_millis(40);

fn hold_the_shard() {
    std::thread::sleep(HOLD);
}

fn run_on_shard0<F, Fut>(body: F) -> Arc<StallStats>
where
    F: Fn(Shard) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let stalls = Arc::new(StallStats::default());
    let spec = RuntimeSpec {
        cpus: vec![0, 0],
        driver: DriverKind::Epoll,
        stall_threshold: Duration::from_millis(10),
        ring_capacity: 64,
        pin: false,
        stalls: Arc::clone(&stalls),
        private_fd_tables: false,
        blocking_threads: 1,
        blocking_queue: 16,
    };
    let body = Arc::new(body);
    let rt = Runtime::start(spec, move |shard| {
        let body = Arc::clone(&body);
        async move {
            if shard.id() == ShardId(0) {
                body(shard).await;
            }
        }
    })
    .unwrap();
    rt.join().unwrap();
    stalls
}

#[test]
fn a_mesh_job_that_holds_its_shard_is_counted_under_the_receiver() {
    let stalls = run_on_shard0(|shard| async move {
        shard
            .mesh()
            .submit_to(ShardId(1), hold_the_shard)
            .await
            .unwrap();
    });
    assert!(stalls.count_for("mesh-receiver") >= 1, "{stalls:?}");
    assert!(stalls.worst() >= HOLD);
}

#[test]
fn tasks_started_by_submit_to_async_and_runtime_spawn_are_timed() {
    let stalls = run_on_shard0(|shard| async move {
        shard
            .mesh()
            .submit_to_async(ShardId(1), || async { hold_the_shard() })
            .await
            .unwrap();
        sdsim_core::runtime::spawn("held-by-test", async { hold_the_shard() }).await;
    });
    assert!(stalls.count_for("mesh-submitted-task") >= 1, "{stalls:?}");
    assert!(stalls.count_for("held-by-test") >= 1, "{stalls:?}");
}

#[test]
fn the_shard_main_future_is_timed() {
    let stalls = run_on_shard0(|_shard| async move { hold_the_shard() });
    assert!(stalls.count_for("shard-main") >= 1, "{stalls:?}");
}
