//! Memory and CPU figures of a process and of the kernel, read from `/proc` (and `ss` for the
//! kernel memory of a server's sockets): what a benchmark samples before and after a load.

/// Memory and CPU figures of one process and of the kernel, from `/proc`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSample {
    /// The process's resident set (bytes), if a pid was given.
    pub rss: Option<u64>,
    /// The process's user + system CPU time (seconds), if a pid was given.
    pub cpu: Option<f64>,
    /// Kernel memory of TCP socket buffers (`/proc/net/sockstat` TCP mem, bytes).
    pub tcp_mem: u64,
    /// Kernel slab memory (`/proc/meminfo` Slab, bytes).
    pub slab: u64,
}

impl ProcSample {
    /// Samples now.
    pub fn take(pid: Option<u32>) -> ProcSample {
        let page = 4096u64;
        let tcp_mem = std::fs::read_to_string("/proc/net/sockstat")
            .ok()
            .and_then(|s| {
                let line = s.lines().find(|l| l.starts_with("TCP:"))?;
                let mut it = line.split_whitespace();
                while let Some(w) = it.next() {
                    if w == "mem" {
                        return it.next()?.parse::<u64>().ok();
                    }
                }
                None
            })
            .unwrap_or(0)
            * page;
        let slab = meminfo_kb("Slab:").unwrap_or(0) * 1024;
        let rss = pid.and_then(|p| {
            let s = std::fs::read_to_string(format!("/proc/{p}/status")).ok()?;
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
        });
        let cpu = pid.and_then(cpu_seconds);
        ProcSample {
            rss,
            cpu,
            tcp_mem,
            slab,
        }
    }
}

/// The 1-minute load average from /proc/loadavg (NaN if it cannot be read).
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// A process's user + system CPU time in seconds (all threads, exited ones included): from its
/// CPU-time clock, or from `/proc/PID/stat` at clock-tick resolution where that is refused.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    process_cpu_clock(pid).or_else(|| stat_cpu(pid))
}

/// A process's CPU time (all threads, exited ones included) in seconds, to the nanosecond,
/// from its CPU-time clock.
fn process_cpu_clock(pid: u32) -> Option<f64> {
    // SAFETY: out-parameters are valid locals.
    unsafe {
        let mut clock: libc::clockid_t = 0;
        if libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) != 0 {
            return None;
        }
        let mut ts: libc::timespec = std::mem::zeroed();
        if libc::clock_gettime(clock, &mut ts) != 0 {
            return None;
        }
        Some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
    }
}

/// A process's user + system time in seconds from `/proc/PID/stat` (clock-tick resolution).
fn stat_cpu(p: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
    // Fields after the command (which may hold spaces): state is field 3.
    let after = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(ticks as f64 / hz)
}

/// CPU `cpu`'s time from `/proc/stat`, in clock ticks: (busy, total), busy being everything
/// but idle and iowait — user, nice, system, irq and softirq (the loopback receive path runs
/// there) and steal — of every process on that CPU, not only a server's.
pub fn cpu_ticks(cpu: usize) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_cpu_ticks(&stat, cpu)
}

fn parse_cpu_ticks(stat: &str, cpu: usize) -> Option<(u64, u64)> {
    let name = format!("cpu{cpu}");
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = ticks.iter().sum();
    // user nice system idle iowait irq softirq steal
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some((total - idle, total))
}

/// Clock ticks per second (`/proc/stat`'s unit).
pub fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

/// Time the threads of process `pid` have spent runnable but waiting for a CPU, summed over
/// `/proc/PID/task/*/schedstat` (exited threads are not counted): how much other work on the
/// server's CPU held it back.
pub fn cpu_wait_seconds(pid: u32) -> Option<f64> {
    let mut waited = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).unwrap_or_default();
        waited += stat
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(waited as f64 * 1e-9)
}

/// Kernel memory charged to the established TCP sockets whose local port is `port` (the
/// server's end of each connection): (sockets, bytes), the bytes summing each socket's receive
/// queue, send queue, forward allocation and option memory (`ss -m`'s `r`, `w`, `f`, `o`).
/// `None` if `ss` (iproute2) is not available.
pub fn server_socket_memory(port: u16) -> Option<(usize, u64)> {
    let out = std::process::Command::new("ss")
        .args([
            "-tnmH",
            "state",
            "established",
            "sport",
            "=",
            &format!(":{port}"),
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(parse_skmem(&String::from_utf8_lossy(&out.stdout)))
}

fn parse_skmem(text: &str) -> (usize, u64) {
    let mut sockets = 0;
    let mut bytes = 0;
    for part in text.split("skmem:(").skip(1) {
        let Some(inner) = part.split(')').next() else {
            continue;
        };
        sockets += 1;
        for field in inner.split(',') {
            let key: String = field
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            if matches!(key.as_str(), "r" | "w" | "f" | "o") {
                bytes += field[key.len()..].parse::<u64>().unwrap_or(0);
            }
        }
    }
    (sockets, bytes)
}

fn meminfo_kb(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn cpu_time_of_a_process() {
        let me = std::process::id();
        let a = cpu_seconds(me).unwrap();
        // Work until the process's clock shows 20 ms more: it must advance with the work,
        // however busy the machine (a wall-clock wait would not be CPU time on a busy one).
        let started = Instant::now();
        let mut x = 0u64;
        while process_cpu_clock(me).unwrap() - a < 0.02 {
            for i in 0..10_000u64 {
                x = std::hint::black_box(x.rotate_left(5) ^ i);
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the CPU clock did not advance"
            );
        }
        assert!(stat_cpu(me).is_some_and(|s| s > 0.0));
    }

    #[test]
    fn busy_ticks_of_one_cpu() {
        let stat =
            "cpu  10 0 10 100 0 0 0 0 0 0\ncpu0 1 2 3 40 5 6 7 8 0 0\ncpu1 9 0 0 1 0 0 0 0 0 0\n";
        assert_eq!(parse_cpu_ticks(stat, 0), Some((1 + 2 + 3 + 6 + 7 + 8, 72)));
        assert_eq!(parse_cpu_ticks(stat, 1), Some((9, 10)));
        assert_eq!(parse_cpu_ticks(stat, 2), None);
        assert!(cpu_ticks(0).is_some_and(|(busy, total)| busy <= total));
    }

    #[test]
    fn skmem() {
        let text = "0 0 127.0.0.1:8102 127.0.0.1:55214\n\t skmem:(r10,rb131072,t5,tb2626560,f4096,w20,o1,bl0,d0)\n0 0 127.0.0.1:8102 127.0.0.1:55215\n\t skmem:(r0,rb131072,t0,tb2626560,f0,w0,o0,bl0,d0)\n";
        assert_eq!(parse_skmem(text), (2, 10 + 4096 + 20 + 1));
    }
}
