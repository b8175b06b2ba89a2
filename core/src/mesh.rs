//! Cross-shard mesh (being written).
