//! Command line: `sdsim [--config FILE] [--set key=value]... <command>`.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use sdsim_core::config::{Config, Overrides};
use sdsim_gateway::Server;
use std::process::ExitCode;

/// sdsim: the backend of the System Design Simulator.
#[derive(Parser, Debug)]
#[command(name = "sdsim", version, about, long_about = None)]
struct Cli {
    /// TOML configuration file (every key is listed in config/default.toml).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<String>,
    /// Override one key, e.g. --set runtime.shards=2 (repeatable; wins over the file and
    /// SDSIM__SECTION__KEY environment variables).
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    set: Vec<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (all roles on the embedded default unless configured otherwise).
    Serve,
    /// Print the effective configuration (after file, environment and --set) as TOML.
    Config,
    /// Simulate a system design document and print its report.
    Simulate(sdsim_simulation::cli::SimulateArgs),
}

/// Runs the command line; the exit code is 0 on success, 2 for configuration errors, 1 otherwise.
pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match load_config(&cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("sdsim: {e:#}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Serve => serve(config),
        Command::Config => toml::to_string_pretty(&config)
            .map(|text| print!("{text}"))
            .context("printing the configuration"),
        Command::Simulate(args) => sdsim_simulation::cli::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sdsim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut overrides = Overrides::default();
    overrides.from_env(std::env::vars())?;
    for set in &cli.set {
        overrides.set(set)?;
    }
    let config = Config::load(cli.config.as_deref(), &overrides)?;
    if let Err(problems) = config.validate() {
        let list: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
        bail!("invalid configuration:\n{}", list.join("\n"));
    }
    Ok(config)
}

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&config.log.level).unwrap_or_else(|e| {
        eprintln!(
            "sdsim: log.level = {:?} is not a valid filter ({e}); using info",
            config.log.level
        );
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    if config.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Raises the soft descriptor limit to the hard limit; warns when it is below what the
/// configuration allows (DESIGN.md: set LimitNOFILE in the service unit).
fn raise_fd_limit(max_connections: usize) {
    // SAFETY: getrlimit/setrlimit with a valid, initialised struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::warn!("could not raise RLIMIT_NOFILE to {}", lim.rlim_max);
            }
        }
        if (lim.rlim_max as u128) < max_connections as u128 + 64 {
            tracing::warn!(
                hard_limit = lim.rlim_max,
                max_connections,
                "RLIMIT_NOFILE is below server.max_connections; raise LimitNOFILE"
            );
        }
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    init_logging(&config);
    raise_fd_limit(config.server.max_connections);
    if let Some(path) = config.storage.url.strip_prefix("sqlite://") {
        if let Some(dir) = std::path::Path::new(path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the data directory {}", dir.display()))?;
        }
    }
    let timeout = config.server.shutdown_timeout;
    let server = Server::start(config).context("starting the server")?;
    server
        .shutdown()
        .install_signal_handler(timeout)
        .context("installing signal handlers")?;
    let shutdown = std::sync::Arc::clone(server.shutdown());
    server.join().context("running the shards")?;
    tracing::info!(
        phases = ?shutdown.history(),
        forced_closes = shutdown.forced_closes(),
        "stopped"
    );
    Ok(())
}
