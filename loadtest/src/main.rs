//! `sdsim-loadtest http URL [--rate R] --duration 30s --connections 50 [--cpus 1] [--json FILE]`

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use mimalloc::MiMalloc;
use sdsim_loadtest::run::{build_request, run_http, HttpLoad};
use std::collections::BTreeMap;
use std::net::ToSocketAddrs;
use std::time::Duration;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

#[derive(Parser)]
#[command(
    name = "sdsim-loadtest",
    version,
    about = "Load generator with HDR latency and no coordinated omission"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// HTTP/1.1 keep-alive load against URL (http:// only, loopback for tests).
    Http {
        /// e.g. http://127.0.0.1:8000/health
        url: String,
        /// Total requests per second (open loop, wrk2-style); without it: closed loop.
        #[arg(long)]
        rate: Option<f64>,
        /// Measured duration, e.g. 30s.
        #[arg(long, default_value = "10s")]
        duration: String,
        /// Unmeasured warm-up before it.
        #[arg(long, default_value = "2s")]
        warmup: String,
        /// Connections in total.
        #[arg(long, default_value_t = 50)]
        connections: usize,
        /// CPUs to pin the generator's threads to, e.g. 1 or 2,3.
        #[arg(long, default_value = "0")]
        cpus: String,
        /// HTTP method.
        #[arg(long, default_value = "GET")]
        method: String,
        /// Extra header, "Name: value" (repeatable).
        #[arg(long = "header")]
        headers: Vec<String>,
        /// Request body.
        #[arg(long, default_value = "")]
        body: String,
        /// Write the JSON report here.
        #[arg(long)]
        json: Option<String>,
    },
}

fn duration(text: &str) -> anyhow::Result<Duration> {
    let (num, unit) = text.split_at(
        text.find(|c: char| c.is_ascii_alphabetic())
            .unwrap_or(text.len()),
    );
    let v: f64 = num
        .parse()
        .with_context(|| format!("bad duration {text:?}"))?;
    Ok(Duration::from_secs_f64(match unit {
        "" | "s" => v,
        "ms" => v / 1e3,
        "m" => v * 60.0,
        _ => bail!("bad duration unit in {text:?} (ms, s, m)"),
    }))
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Http {
            url,
            rate,
            duration: d,
            warmup,
            connections,
            cpus,
            method,
            headers,
            body,
            json,
        } => {
            let rest = url
                .strip_prefix("http://")
                .context("only http:// URLs are supported")?;
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let path = if path.is_empty() { "/" } else { path };
            let addr = authority
                .to_socket_addrs()
                .with_context(|| format!("resolving {authority}"))?
                .next()
                .context("no address")?;
            let cpus: Vec<usize> = cpus
                .split(',')
                .map(|c| c.trim().parse())
                .collect::<Result<_, _>>()
                .context("--cpus")?;
            if rate.is_some_and(|r| r <= 0.0) || connections == 0 {
                bail!("--rate and --connections must be positive");
            }
            let load = HttpLoad {
                addr,
                request: build_request(&method, authority, path, &headers, body.as_bytes()),
                connections,
                rate,
                duration: duration(&d)?,
                warmup: duration(&warmup)?,
                cpus: cpus.clone(),
            };
            let report = run_http(&load)?;
            print!("{}", report.table());
            if let Some(path) = json {
                let params: BTreeMap<String, String> = [
                    ("url", url.clone()),
                    ("rate", rate.map_or("closed-loop".into(), |r| r.to_string())),
                    ("connections", connections.to_string()),
                    ("duration", d),
                    ("warmup", warmup),
                    ("cpus", format!("{cpus:?}")),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
                std::fs::write(&path, report.to_json(&params))
                    .with_context(|| format!("writing {path}"))?;
            }
            Ok(())
        }
    }
}
