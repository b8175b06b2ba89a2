//! sdsim-bench: benchmarks and peers.
