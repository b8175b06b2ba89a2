//! Shards: one pinned monoio runtime per CPU.

use std::fmt;

/// The index of a shard, `0..shards`. Shard `k` runs on one thread pinned to one CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub usize);

impl ShardId {
    /// The index as a `usize`, for indexing per-shard tables.
    pub fn index(self) -> usize {
        self.0
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard-{}", self.0)
    }
}
