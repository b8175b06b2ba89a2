//! `bench-projects`: sdsim's project and simulation services against an axum peer; see
//! [`sdsim_bench::projects`].

use clap::Parser;
use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() -> anyhow::Result<()> {
    sdsim_bench::projects::run(sdsim_bench::projects::Args::parse())
}
