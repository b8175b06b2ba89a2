//! The `sdsim` binary: command line, configuration, logging; [`sdsim_server`] composes the
//! roles of this process.

mod cli;
mod simulate;

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
