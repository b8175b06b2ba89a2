//! Command line: `sdsim [--config FILE] [--set key=value]... <command>`.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use sdsim_core::config::Overrides;
use sdsim_core::runtime::RuntimeSpec;
use sdsim_net::middleware::access_log::{self, LineFormat};
use sdsim_net::middleware::log_writer::LogWriter;
use sdsim_net::otel::{ExportSettings, Exporter};
use sdsim_server::config::Config;
use sdsim_server::Server;
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
    Simulate(crate::simulate::SimulateArgs),
    /// Work with design documents.
    #[command(subcommand)]
    Design(DesignCommand),
    /// Apply pending storage migrations to `storage.url` and list what was applied.
    Migrate,
    /// Manage accounts.
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Subcommand, Debug)]
enum DesignCommand {
    /// Write a design from a real system's telemetry: a service per node, calls weighted by
    /// the observed counts, service times fitted to the latency histograms.
    Import {
        /// The telemetry's format: `otel-servicegraph`, the Prometheus text of the
        /// OpenTelemetry Collector's servicegraph connector metrics.
        #[arg(long = "from", value_parser = ["otel-servicegraph"])]
        from: String,
        /// The metrics (a scrape of the exporter's /metrics); `-` reads standard input.
        metrics: String,
        /// Seconds the counters cover: from the collector's start to the scrape, or from the
        /// --before scrape to this one.
        #[arg(long, value_name = "SECONDS")]
        window_s: f64,
        /// An earlier scrape: the design is what happened between the two, and --window-s
        /// is the time between them.
        #[arg(long, value_name = "FILE")]
        before: Option<String>,
        /// Write the design to this file instead of standard output.
        #[arg(short = 'o', long, value_name = "FILE")]
        output: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Create an account; the password is read from standard input (one line).
    Add {
        /// The account's email.
        #[arg(long)]
        email: String,
        /// Role (repeatable): admin, user.
        #[arg(long = "role", default_value = "user")]
        roles: Vec<String>,
    },
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
        Command::Simulate(args) => crate::simulate::run(args),
        Command::Design(DesignCommand::Import {
            from: _,
            metrics,
            window_s,
            before,
            output,
        }) => design_import(&metrics, before.as_deref(), window_s, output.as_deref()),
        Command::Migrate => migrate(&config),
        Command::User(UserCommand::Add { email, roles }) => user_add(&config, &email, &roles),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sdsim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `sdsim design import`: the design on standard output (or `output`), notes on standard error.
fn design_import(
    metrics: &str,
    before: Option<&str>,
    window_s: f64,
    output: Option<&str>,
) -> anyhow::Result<()> {
    use sdsim_engine::import::{otel_servicegraph, otel_servicegraph_between, ImportOptions};
    let read = |path: &str| {
        if path == "-" {
            std::io::read_to_string(std::io::stdin()).context("reading standard input")
        } else {
            std::fs::read_to_string(path).with_context(|| format!("reading {path}"))
        }
    };
    let text = read(metrics)?;
    let options = ImportOptions::new(window_s);
    let imported = match before {
        Some(path) => otel_servicegraph_between(&read(path)?, &text, &options)
            .with_context(|| format!("importing {metrics} since {path}"))?,
        None => {
            otel_servicegraph(&text, &options).with_context(|| format!("importing {metrics}"))?
        }
    };
    for note in &imported.notes {
        eprintln!("sdsim: note: {note}");
    }
    match output {
        Some(path) => {
            std::fs::write(path, &imported.document).with_context(|| format!("writing {path}"))
        }
        None => crate::simulate::emit(&imported.document),
    }
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut overrides = Overrides::default();
    overrides.from_env(std::env::vars())?;
    // OTEL_EXPORTER_OTLP_ENDPOINT and the like: over the file and SDSIM__ variables, under
    // --set.
    for text in sdsim_net::otel::config::env_overrides(std::env::vars()) {
        overrides.set(&text)?;
    }
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

/// Sets up `tracing` for every log line, and the access log's writer thread when access lines
/// are on: the shards format access lines into buffers of their own, the thread writes them
/// to standard output (see `sdsim_net::middleware::log_writer`). The writer must be
/// [finished](LogWriter::finish) after the shards stop, so that their last lines are written.
fn init_logging(config: &Config) -> anyhow::Result<Option<LogWriter>> {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    // RUST_LOG, when set, wins over log.level, as in every tracing-based program; a filter
    // that does not parse stops the start (log.level was checked with the configuration).
    let filter = match std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
    {
        Some(from_env) => EnvFilter::try_new(&from_env).map_err(|e| {
            anyhow::anyhow!("RUST_LOG = {from_env:?} is not a tracing filter ({e})")
        })?,
        None => EnvFilter::try_new(&config.log.level)
            .map_err(|e| anyhow::anyhow!("log.level = {:?}: {e}", config.log.level))?,
    };
    // Colours only for a person reading a terminal: escape codes in a file or a pipe are noise,
    // and the access lines, formatted without them, would differ from the rest.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_ansi(std::io::stdout().is_terminal());
    let format = if config.log.format == "json" {
        builder.json().init();
        LineFormat::Json
    } else {
        builder.init();
        LineFormat::Text
    };
    // The filter decides for access lines too (`sdsim::access=off` turns them off).
    let access_enabled = tracing::enabled!(target: access_log::TARGET, tracing::Level::INFO);
    if !(config.log.access && access_enabled) {
        return Ok(None);
    }
    let writer = LogWriter::start(
        "sdsim-access-log",
        Box::new(std::io::stdout()),
        config.log.access_buffer_bytes,
    )
    .context("starting the access log's writer thread")?;
    access_log::install(&writer, format);
    Ok(Some(writer))
}

/// Raises the soft descriptor limit to the hard limit; warns when it is below what the
/// configuration allows (docs/architecture.md: set LimitNOFILE in the service unit). With private
/// descriptor tables the limit holds per shard.
fn raise_fd_limit(config: &Config) {
    let max_connections = config.server.max_connections;
    let tables = if config.runtime.private_fd_tables {
        RuntimeSpec::from_config(&config.runtime).shards() as u128
    } else {
        1
    };
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
        if (lim.rlim_max as u128) * tables < max_connections as u128 + 64 * tables {
            tracing::warn!(
                hard_limit = lim.rlim_max,
                descriptor_tables = tables as u64,
                max_connections,
                "RLIMIT_NOFILE is below server.max_connections; raise LimitNOFILE or set runtime.private_fd_tables with more shards"
            );
        }
    }
}

/// Runs `f` on a one-off monoio runtime (CLI commands that talk to storage).
fn block_on<T>(f: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .context("starting a runtime")?;
    Ok(rt.block_on(f))
}

fn open_store(config: &Config) -> anyhow::Result<sdsim_store::Store> {
    create_data_dir(config)?;
    config.storage.open().map_err(|e| anyhow::anyhow!("{e}"))
}

fn migrate(config: &Config) -> anyhow::Result<()> {
    let store = open_store(config)?;
    block_on(async {
        let applied = sdsim_store::migrate::run(&store).await?;
        let all = sdsim_store::migrate::applied(&store).await?;
        for m in sdsim_store::migrate::MIGRATIONS {
            let state = if applied.contains(&m.version) {
                "applied now"
            } else if all.contains(&m.version) {
                "already applied"
            } else {
                "pending"
            };
            println!("{:>4}  {:<24} {state}", m.version, m.name);
        }
        Ok::<_, sdsim_store::StoreError>(())
    })?
    .map_err(|e| anyhow::anyhow!("migrations on {}: {e}", store.kind()))
}

fn user_add(config: &Config, email: &str, roles: &[String]) -> anyhow::Result<()> {
    let mut password = String::new();
    std::io::stdin()
        .read_line(&mut password)
        .context("reading the password from standard input")?;
    let password = password.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        bail!("no password on standard input (echo the password | sdsim user add ...)");
    }
    let store = open_store(config)?;
    let user = block_on(async {
        if config.storage.migrate_on_start {
            sdsim_store::migrate::run(&store)
                .await
                .map_err(|e| format!("migrations: {e}"))?;
        }
        let auth = sdsim_auth::Auth::open(&config.auth, store, 1)
            .await
            .map_err(|e| e.to_string())?;
        let email = sdsim_auth::service::normalise_email(email).map_err(|e| e.to_string())?;
        if let Some(why) =
            sdsim_auth::password::weakness(password, &email, config.auth.min_password_score)
        {
            return Err(format!("password: {why}"));
        }
        let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
        auth.create_user(&email, password, &roles)
            .await
            .map_err(|e| e.to_string())
    })?
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "created user {} <{}> with roles {}",
        user.id,
        user.email,
        user.roles.join(", ")
    );
    Ok(())
}

fn create_data_dir(config: &Config) -> anyhow::Result<()> {
    if let Some(path) = config.storage.url.strip_prefix("sqlite://") {
        if let Some(dir) = std::path::Path::new(path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the data directory {}", dir.display()))?;
        }
    }
    Ok(())
}

/// Starts the span exporter when `[otel]` is on, and installs it for the shards' middleware.
/// It must be [finished](Exporter::finish) after the shards stop, so that their last spans
/// are sent.
fn start_tracing(config: &Config) -> anyhow::Result<Option<Exporter>> {
    let otel = &config.otel;
    if !otel.enabled {
        return Ok(None);
    }
    let settings = ExportSettings {
        url: otel.traces_url(),
        service_name: otel.service_name_for(&config.roles),
        instance_id: Some(config.instance.resolved_id()),
        queue_spans: otel.queue_spans,
        batch_spans: 512,
        interval: std::time::Duration::from_secs(1),
        attempts: 4,
        timeout: std::time::Duration::from_secs(5),
        sampler: otel.sampler(),
    };
    tracing::info!(
        url = settings.url,
        service_name = settings.service_name,
        sampler = otel.sampler,
        "exporting spans over OTLP/HTTP"
    );
    let exporter = Exporter::start(settings).context("starting the span exporter thread")?;
    sdsim_net::otel::install(&exporter);
    Ok(Some(exporter))
}

fn serve(config: Config) -> anyhow::Result<()> {
    let access_writer = init_logging(&config)?;
    let exporter = start_tracing(&config)?;
    raise_fd_limit(&config);
    create_data_dir(&config)?;
    let timeout = config.server.shutdown_timeout;
    let server = Server::start(config).context("starting the server")?;
    server
        .shutdown()
        .install_signal_handler(timeout)
        .context("installing signal handlers")?;
    let shutdown = std::sync::Arc::clone(server.shutdown());
    server.join().context("running the shards")?;
    if let Some(exporter) = exporter {
        let totals = exporter.finish();
        tracing::info!(
            exported = totals.exported,
            dropped = totals.dropped,
            failures = totals.failures,
            "span exporter finished"
        );
    }
    if let Some(writer) = access_writer {
        let totals = writer.finish();
        if totals.lost > 0 {
            tracing::warn!(lost = totals.lost, "access-log lines lost to failed writes");
        }
    }
    tracing::info!(
        phases = ?shutdown.history(),
        forced_closes = shutdown.forced_closes(),
        "stopped"
    );
    Ok(())
}
