//! Connection limits per instance, per client IP and per user (seed 003's per-tenant limit).
//!
//! The instance count is one atomic. Per-IP and per-user counts live on the key's owner shard
//! (a hash of the key), reached through the mesh, so no table is shared between threads.
//! A [`Slot`] holds one count and gives it back when dropped.

use sdsim_core::runtime::Shard;
use sdsim_core::shard::ShardId;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What a limit counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// A client IP.
    Ip(IpAddr),
    /// A user id.
    User(Arc<str>),
}

/// The counts this shard owns.
#[derive(Default)]
pub struct Counts(RefCell<HashMap<LimitKey, usize>>);

impl Counts {
    fn acquire(&self, key: LimitKey, max: usize) -> bool {
        let mut map = self.0.borrow_mut();
        let n = map.entry(key).or_insert(0);
        if *n >= max {
            return false;
        }
        *n += 1;
        true
    }

    fn release(&self, key: &LimitKey) {
        let mut map = self.0.borrow_mut();
        if let Some(n) = map.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                map.remove(key);
            }
        }
    }

    /// Keys counted on this shard (for tests).
    pub fn len(&self) -> usize {
        self.0.borrow().len()
    }

    /// Whether nothing is counted here.
    pub fn is_empty(&self) -> bool {
        self.0.borrow().is_empty()
    }
}

fn owner(key: &LimitKey, shards: usize) -> ShardId {
    let mut h = std::hash::DefaultHasher::new();
    key.hash(&mut h);
    ShardId((h.finish() % shards as u64) as usize)
}

/// One held count; dropping it gives the count back.
pub enum Slot {
    /// One of the instance's connections.
    Instance(Arc<AtomicUsize>),
    /// One of a key's connections, counted on its owner shard.
    Keyed(LimitKey),
}

impl Drop for Slot {
    fn drop(&mut self) {
        match self {
            Slot::Instance(open) => {
                open.fetch_sub(1, Ordering::Relaxed);
            }
            Slot::Keyed(key) => {
                let Some(shard) = Shard::try_current() else {
                    return;
                };
                let key = key.clone();
                let target = owner(&key, shard.count());
                sdsim_core::runtime::spawn("ws-slot-release", async move {
                    let _ = shard
                        .mesh()
                        .send_to(target, move || {
                            if let Some(counts) = Shard::current().get::<Counts>() {
                                counts.release(&key);
                            }
                        })
                        .await;
                });
            }
        }
    }
}

/// Takes one of the instance's `max` connections.
pub fn instance(open: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
    let taken = open
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok();
    taken.then(|| Slot::Instance(Arc::clone(open)))
}

/// Takes one of `key`'s `max` connections (0 = unlimited: no slot is needed).
pub async fn keyed(key: LimitKey, max: usize) -> Result<Option<Slot>, ()> {
    if max == 0 {
        return Ok(None);
    }
    let shard = Shard::current();
    let target = owner(&key, shard.count());
    let k = key.clone();
    let granted = shard
        .mesh()
        .submit_to(target, move || {
            Shard::current()
                .get::<Counts>()
                .is_some_and(|c| c.acquire(k, max))
        })
        .await
        .unwrap_or(false);
    if granted {
        Ok(Some(Slot::Keyed(key)))
    } else {
        Err(())
    }
}
