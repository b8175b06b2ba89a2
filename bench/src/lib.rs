//! sdsim-bench: shared helpers of the benchmark binaries (`bench-mesh`, `bench-http`,
//! `bench-ws`) and the peer servers they are compared with (`peer-axum`, `peer-ws`).
#![warn(missing_docs, unreachable_pub)]

pub mod ws_client;

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
}
