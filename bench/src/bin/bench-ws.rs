//! `bench-ws`: sdsim's WebSocket gateway against an axum peer; see [`sdsim_bench::ws`].

use clap::Parser;
use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() -> anyhow::Result<()> {
    sdsim_bench::ws::run(sdsim_bench::ws::Args::parse())
}
