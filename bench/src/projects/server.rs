//! The servers of the benchmark: sdsim (one shard, every listener on a free loopback port) and
//! the peer, pinned, with their standard error kept; stopped when dropped.

use super::http::strong_password;
use super::Args;
use crate::process::{free_port, pinned, stop, wait_ready};
use anyhow::{bail, ensure, Context};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// A server process, stopped when dropped.
pub(super) struct Server {
    pub(super) name: String,
    pub(super) addr: SocketAddr,
    pub(super) sets: Vec<String>,
    child: Option<Child>,
    /// Its standard error.
    log: PathBuf,
}

impl Server {
    /// An error (with the end of its log) if the process has exited: a dead server's
    /// connection errors must not pass for measurements.
    pub(super) fn check_alive(&mut self) -> anyhow::Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "{} exited during the benchmark ({status}); its log ends:\n{}",
                self.name,
                tail.join("\n")
            );
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop(child);
        }
    }
}

pub(super) fn spawn_server(
    name: &str,
    mut cmd: Command,
    port: u16,
    sets: Vec<String>,
    log: PathBuf,
) -> anyhow::Result<Server> {
    cmd.stderr(std::fs::File::create(&log)?);
    let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    if let Err(e) = wait_ready(port, &mut child) {
        stop(child);
        return Err(e.context(format!("{name} did not come up")));
    }
    Ok(Server {
        name: name.into(),
        addr: ([127, 0, 0, 1], port).into(),
        sets,
        child: Some(child),
        log,
    })
}

/// sdsim, 1 shard, on the database in `dir`, every listener on a free loopback port.
pub(super) fn start_sdsim(
    args: &Args,
    dir: &Path,
    name: &str,
    extra: &[String],
) -> anyhow::Result<Server> {
    let ports: Vec<u16> = (0..7).map(|_| free_port()).collect::<Result<_, _>>()?;
    let listeners = [
        "gateway.listen",
        "auth.grpc_listen",
        "auth.http_listen",
        "project.grpc_listen",
        "project.http_listen",
        "simulation.grpc_listen",
        "simulation.http_listen",
    ];
    let mut sets: Vec<String> = vec![
        "runtime.shards=1".into(),
        format!("runtime.cpus=[{}]", args.server_cpu),
        format!("storage.url=sqlite://{}/sdsim.db", dir.display()),
        "ratelimit.enabled=false".into(),
        "log.access=false".into(),
        "log.level=warn".into(),
        "auth.access_ttl=1h".into(),
    ];
    sets.extend(args.sdsim_set.iter().chain(extra).cloned());
    let mut cmd = pinned(&args.sdsim, args.server_cpu);
    cmd.arg("serve");
    for s in sets.iter().cloned().chain(
        listeners
            .iter()
            .zip(&ports)
            .map(|(k, p)| format!("{k}=127.0.0.1:{p}")),
    ) {
        cmd.arg("--set").arg(s);
    }
    std::fs::create_dir_all(dir)?;
    let log = dir.join(format!(
        "{}.log",
        name.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
    ));
    spawn_server(name, cmd, ports[0], sets, log)
}

/// An admin account in the database of `dir`, made with `sdsim user add` before the server
/// starts (the instance-wide `simulation:events:*` feeds are for admins); its credentials.
pub(super) fn add_admin(args: &Args, dir: &Path) -> anyhow::Result<Value> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let (email, password) = ("bench-admin@example.com", strong_password()?);
    let storage = format!("storage.url=sqlite://{}/sdsim.db", dir.display());
    let mut child = Command::new(&args.sdsim)
        .args([
            "user", "add", "--email", email, "--role", "admin", "--set", &storage,
        ])
        .args(["--set", "log.level=warn"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("sdsim user add")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(format!("{password}\n").as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "sdsim user add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(json!({"email": email, "password": password}))
}
