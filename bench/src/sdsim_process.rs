//! One sdsim server for a benchmark: started pinned, every listener on a free loopback port,
//! configured by `--set`s; its CPU time from `/proc/PID/stat`,
//! its `/metrics` counters, and the few API calls a benchmark needs to set itself up
//! (register, log in, create a project).

use crate::proc_sample::cpu_seconds;
use crate::process::{free_port, pinned, stop, wait_ready};
use anyhow::{bail, ensure, Context};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

/// The listeners of an sdsim process, each moved to a free loopback port (the defaults would
/// collide with anything else on the machine).
pub const LISTENERS: [&str; 7] = [
    "gateway.listen",
    "auth.grpc_listen",
    "auth.http_listen",
    "project.grpc_listen",
    "project.http_listen",
    "simulation.grpc_listen",
    "simulation.http_listen",
];

/// A running sdsim, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct SdsimProcess {
    /// The gateway's address.
    pub addr: SocketAddr,
    child: Option<Child>,
    log: PathBuf,
}

impl SdsimProcess {
    /// Starts `binary serve` pinned to `cpu` with `sets` (each a `--set KEY=VALUE`), the
    /// listeners on free ports, its standard error in `dir/<log_name>.log`.
    pub fn start(
        binary: &str,
        cpu: usize,
        sets: &[String],
        dir: &Path,
        log_name: &str,
    ) -> anyhow::Result<SdsimProcess> {
        let ports: Vec<u16> = (0..LISTENERS.len())
            .map(|_| free_port())
            .collect::<Result<_, _>>()?;
        let mut cmd = pinned(binary, cpu);
        cmd.arg("serve");
        let listeners = LISTENERS
            .iter()
            .zip(&ports)
            .map(|(key, port)| format!("{key}=127.0.0.1:{port}"));
        for set in sets.iter().cloned().chain(listeners) {
            cmd.arg("--set").arg(set);
        }
        std::fs::create_dir_all(dir)?;
        let log = dir.join(format!("{log_name}.log"));
        cmd.stderr(std::fs::File::create(&log)?);
        let mut child = cmd.spawn().with_context(|| format!("starting {binary}"))?;
        if let Err(e) = wait_ready(ports[0], &mut child) {
            stop(child);
            return Err(e.context(format!("{binary} did not come up (log: {})", log.display())));
        }
        Ok(SdsimProcess {
            addr: ([127, 0, 0, 1], ports[0]).into(),
            child: Some(child),
            log,
        })
    }

    /// An error with the end of its log if the process has exited: a dead server's connection
    /// errors must not pass for measurements.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        let Some(child) = self.child.as_mut() else {
            bail!("the server was stopped");
        };
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "sdsim exited during the benchmark ({status}); its log ends:\n{}",
                tail.join("\n")
            );
        }
        Ok(())
    }

    /// User + system CPU time of every thread of the process so far.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        let pid = self.child.as_ref().context("stopped")?.id();
        cpu_seconds(pid)
            .map(Duration::from_secs_f64)
            .context("no CPU time for the server process")
    }

    /// Time the process's threads have spent runnable but waiting for a CPU, summed
    /// (`/proc/PID/task/*/schedstat`): how much other work on the server's CPU held it back.
    pub fn cpu_wait(&self) -> anyhow::Result<Duration> {
        let pid = self.child.as_ref().context("stopped")?.id();
        let mut waited = 0u64;
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
            let stat = std::fs::read_to_string(task?.path().join("schedstat")).unwrap_or_default();
            waited += stat
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
        Ok(Duration::from_nanos(waited))
    }

    /// The value of the counter line that starts with `series` (e.g.
    /// `sdsim_shed_total{protocol="http"}`) in `/metrics`; 0 when the series is absent (a
    /// counter that never moved is not exported).
    pub fn counter(&self, series: &str) -> anyhow::Result<u64> {
        let (status, text) = get_text(&format!("http://{}/metrics", self.addr), None)?;
        ensure!(status == 200, "/metrics answered {status}");
        Ok(text
            .lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64))
    }
}

impl Drop for SdsimProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop(child);
        }
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .new_agent()
}

/// `GET url`, with a bearer token if given; the status and the body as text.
pub fn get_text(url: &str, token: Option<&str>) -> anyhow::Result<(u16, String)> {
    let mut req = agent().get(url);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let response = req.call().with_context(|| format!("GET {url}"))?;
    let status = response.status().as_u16();
    Ok((status, response.into_body().read_to_string()?))
}

/// `GET url` with a bearer token; the status and the JSON body.
pub fn get_json(url: &str, token: &str) -> anyhow::Result<(u16, Value)> {
    let (status, text) = get_text(url, Some(token))?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// `POST url` with a JSON body; the status and the JSON body.
pub fn post_json(url: &str, token: Option<&str>, body: &Value) -> anyhow::Result<(u16, Value)> {
    let mut req = agent().post(url).header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let response = req
        .send(body.to_string())
        .with_context(|| format!("POST {url}"))?;
    let status = response.status().as_u16();
    let text = response.into_body().read_to_string()?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// Registers `email` with a random strong password and logs in; the access token.
pub fn register_and_login(gateway: SocketAddr, email: &str) -> anyhow::Result<String> {
    let creds = json!({"email": email, "password": strong_password()?});
    let (status, body) = post_json(&format!("http://{gateway}/api/auth/register"), None, &creds)?;
    ensure!(status == 201, "register answered {status}: {body}");
    let (status, body) = post_json(&format!("http://{gateway}/api/auth/login"), None, &creds)?;
    ensure!(status == 200, "login answered {status}: {body}");
    body["access_token"]
        .as_str()
        .map(str::to_string)
        .context("login answer without access_token")
}

/// Creates a project from system template `template`; its id.
pub fn create_project_from_template(
    gateway: SocketAddr,
    token: &str,
    template: &str,
) -> anyhow::Result<String> {
    let (status, body) = post_json(
        &format!("http://{gateway}/api/projects"),
        Some(token),
        &json!({"name": "shedding bench", "description": "the project every request reads", "template_id": template}),
    )?;
    ensure!(status == 201, "create project answered {status}: {body}");
    body["id"]
        .as_str()
        .map(str::to_string)
        .context("project answer without id")
}

/// 144 random bits, base64url, and every character class a password policy may ask for.
fn strong_password() -> anyhow::Result<String> {
    use base64::Engine;
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 18];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("no randomness"))?;
    let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    Ok(format!("{text}-Aa9!"))
}
