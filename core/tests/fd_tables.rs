//! `runtime.private_fd_tables`: each shard gets its own descriptor table, so RLIMIT_NOFILE
//! counts per shard. This file is its own test binary (process) because it lowers the limit.

use sdsim_core::config::DriverKind;
use sdsim_core::mesh::MeshError;
use sdsim_core::runtime::{Runtime, RuntimeSpec, Shard};
use sdsim_core::shard::ShardId;
use sdsim_core::stall::StallStats;
use std::fs::File;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SOFT_LIMIT: u64 = 512;
/// Each shard tries to hold this many more files: together more than the limit, each alone
/// well under it.
const PER_SHARD: usize = 400;

fn lower_limit() {
    // SAFETY: getrlimit/setrlimit on a zeroed struct; only the soft limit is lowered.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = SOFT_LIMIT;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
}

/// Runs 2 shards; each opens up to PER_SHARD files, then asks the other shard (a mesh hop,
/// which needs cross-thread wake-ups to work) how many it holds. Returns (opened, answered).
fn hold_files(private: bool, driver: DriverKind) -> Vec<(usize, Result<usize, MeshError>)> {
    let spec = RuntimeSpec {
        cpus: vec![0, 0],
        driver,
        stall_threshold: Duration::from_secs(5),
        ring_capacity: 64,
        pin: false,
        stalls: Arc::new(StallStats::default()),
        private_fd_tables: private,
        blocking_threads: 1,
        blocking_queue: 16,
    };
    let results = Arc::new(Mutex::new(Vec::new()));
    let out = Arc::clone(&results);
    // How many shards have opened their files, and how many have asked the other.
    let opened_by = Arc::new(AtomicUsize::new(0));
    let asked_by = Arc::new(AtomicUsize::new(0));
    let rt = Runtime::start(spec, move |shard: Shard| {
        let out = Arc::clone(&out);
        let (opened_by, asked_by) = (Arc::clone(&opened_by), Arc::clone(&asked_by));
        async move {
            let mut files = Vec::new();
            for _ in 0..PER_SHARD {
                match File::open("/dev/null") {
                    Ok(f) => files.push(f),
                    Err(_) => break,
                }
            }
            let opened = files.len();
            thread_local!(static HELD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) });
            HELD.with(|h| h.set(opened));
            // The other shard opens its files before it is asked.
            opened_by.fetch_add(1, Ordering::SeqCst);
            both(&opened_by, "open their files").await;
            let other = ShardId(1 - shard.id().index());
            let answered = shard
                .mesh()
                .submit_to(other, || HELD.with(|h| h.get()))
                .await;
            out.lock().unwrap().push((opened, answered));
            // Stay until the other shard has asked too.
            asked_by.fetch_add(1, Ordering::SeqCst);
            both(&asked_by, "ask each other").await;
            drop(files);
        }
    })
    .unwrap();
    rt.join().unwrap();
    let r = results.lock().unwrap().clone();
    r
}

/// Waits until both shards have counted themselves in `count`; panics after 10 s, which only
/// a hang takes.
async fn both(count: &AtomicUsize, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count.load(Ordering::SeqCst) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the shards did not {what} within 10 s"
        );
        monoio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[test]
fn private_tables_hold_the_limit_per_shard_and_shards_still_wake_each_other() {
    lower_limit();
    for driver in [DriverKind::Epoll, DriverKind::IoUring] {
        let shared = hold_files(false, driver);
        let total: usize = shared.iter().map(|(n, _)| n).sum();
        assert!(
            total < 2 * PER_SHARD,
            "{driver:?}: one shared table cannot hold {} files under a limit of {SOFT_LIMIT}",
            2 * PER_SHARD
        );

        let private = hold_files(true, driver);
        assert_eq!(private.len(), 2, "{driver:?}: both shards reported");
        for (opened, answered) in &private {
            assert_eq!(*opened, PER_SHARD, "{driver:?}: a shard with its own table");
            assert_eq!(
                *answered,
                Ok(PER_SHARD),
                "{driver:?}: the other shard answered the mesh hop"
            );
        }
    }
}
