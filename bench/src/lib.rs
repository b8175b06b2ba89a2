//! sdsim-bench: shared helpers of the benchmark binaries (`bench-mesh`, `bench-http`,
//! `bench-ws`, `bench-auth`, `bench-shedding`) and the peer servers they are compared with (`peer-axum`,
//! `peer-ws`, `peer-auth`).
//!
//! Layout:
//! - [`process`]: start a server pinned to a CPU, wait for its port, stop it.
//! - [`projects`]: the project and simulation services benchmark `bench-projects`.
//! - [`proc_sample`]: a process's RSS and CPU time and the kernel's socket memory, from `/proc`.
//! - [`sdsim_process`]: one pinned sdsim with its CPU time, `/metrics` counters and
//!   the API calls a benchmark sets itself up with (`bench-shedding`).
//! - [`split_load`]: open-loop HTTP load whose answers are split into admitted, shed (503) and
//!   other, each with its own latency (`bench-shedding`).
//! - [`token`]: Ed25519 JWTs shaped like sdsim's (minted with ring), JWKS, tampering.
//! - [`token_batch`]: many distinct tokens signed with an sdsim instance's own key (the
//!   cache-miss runs of `bench-auth`).
//! - [`token_checks`]: the answers a ValidateToken server must give before it is measured.
//! - [`token_login`]: `bench-auth`'s account on a fresh sdsim (register, log in).
//! - [`token_report`]: `bench-auth`'s tables (latency, server CPU per call, cache hits, ratios).
//! - [`verify_cost`]: ns per token check on one thread, ring against jsonwebtoken.
//! - [`ws`]: the WebSocket benchmark `bench-ws` (idle memory, fan-out), driving the load
//!   generator's WebSocket engine.
//! - [`proto`]: the tonic server and client of `sdsim.auth.v1.AuthService` (generated).
//! - [`project_proto`]: the tonic server and client of `sdsim.project.v1.ProjectService`
//!   (generated; the split peer of `bench-hop`).
//! - [`peer_projects`]: what `peer-projects` and its split version (`peer-projects-front`,
//!   `peer-projects-back`) share: token checks, the SQLite pool, the row read, the answers.
//! - [`bare`]: HTTP/1.1 framing and the fixed answers of the bare servers (`bare-answer`,
//!   `bare-hop`).
#![warn(missing_docs, unreachable_pub)]

pub mod bare;
pub mod peer_projects;
pub mod proc_sample;
pub mod projects;
pub mod sdsim_process;
pub mod split_load;
pub mod token;
pub mod token_batch;
pub mod token_checks;
pub mod token_login;
pub mod token_report;
pub mod verify_cost;
pub mod ws;

/// `sdsim.auth.v1`, generated from `proto/` by tonic-prost-build (see `build.rs`).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("sdsim.auth.v1");
}

/// `sdsim.project.v1`, generated from `proto/` by tonic-prost-build (see `build.rs`).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod project_proto {
    tonic::include_proto!("sdsim.project.v1");
}

/// Helpers that start, wait for and stop a pinned server process.
pub mod process {
    use std::net::TcpStream;
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    /// A command for `program` pinned to `cpu` (every thread it starts inherits the mask),
    /// with its output discarded.
    pub fn pinned(program: &str, cpu: usize) -> Command {
        let mut cmd = Command::new(program);
        // SAFETY: sched_setaffinity is async-signal-safe; it pins the child before exec, so
        // every thread the server starts inherits the single-CPU mask.
        unsafe {
            cmd.pre_exec(move || {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        cmd
    }

    /// A loopback port free right now.
    pub fn free_port() -> anyhow::Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    }

    /// Waits until `child` accepts connections on `port` (15 s at most).
    pub fn wait_ready(port: u16, child: &mut Child) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                anyhow::bail!("server exited early: {status}");
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        anyhow::bail!("server on port {port} did not come up")
    }

    /// SIGTERM, then SIGKILL after 5 s.
    pub fn stop(mut child: Child) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// CPU time used by the calling thread so far.
pub fn thread_cpu() -> std::time::Duration {
    // SAFETY: clock_gettime writes into the zeroed timespec it is given.
    unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
        std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }
}

/// Pins the calling thread to `cpu`.
pub fn pin_current(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one bit set, for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The current UTC time as `YYYYMMDDTHHMMSSZ`, the prefix of the files in `bench/results/`.
pub fn utc_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    stamp_of(secs)
}

fn stamp_of(unix_secs: u64) -> String {
    let c = sdsim_core::civil::Civil::from_unix(unix_secs);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// Prints `report` and writes it to `out`, or to `bench/results/<UTC stamp>-<name>.md`.
pub fn write_report(
    out: Option<&std::path::Path>,
    name: &str,
    report: &str,
) -> anyhow::Result<std::path::PathBuf> {
    use anyhow::Context;
    print!("{report}");
    let path = out.map_or_else(
        || std::path::PathBuf::from(format!("bench/results/{}-{name}.md", utc_stamp())),
        std::path::Path::to_path_buf,
    );
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&path, report).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(path)
}

/// One line describing the machine: CPUs, model, kernel.
pub fn machine_line() -> String {
    let m = sdsim_loadtest::report::Machine::current();
    format!("{} CPUs, {}, Linux {}", m.nproc, m.cpu_model, m.kernel)
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_odd_even() {
        assert_eq!(super::median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(super::median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn utc_stamps() {
        assert_eq!(super::stamp_of(0), "19700101T000000Z");
        // 2026-11-23 06:06:55 UTC.
        assert_eq!(super::stamp_of(1_795_414_015), "20261123T060655Z");
        assert_eq!(super::stamp_of(951_782_400), "20000229T000000Z");
    }
}
