//! The `sdsim-loadtest` binary as CI runs it: thresholds decide the exit code (99 when one
//! fails, after the outputs are written), a bad threshold or a CPU outside the affinity mask
//! is refused before any load is sent, and without `--cpus` the threads follow the affinity
//! mask the process was started with (as `taskset -c N` sets it).

mod support;

use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_sdsim-loadtest");

/// `sdsim-loadtest ARGS` started with its affinity mask set to `cpu` alone.
fn on_cpu(cpu: usize, args: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    command.args(args).arg("--quiet");
    // SAFETY: sched_setaffinity is async-signal-safe; the child sets its own mask before exec.
    unsafe {
        command.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn thresholds_decide_the_exit_code_and_threads_follow_the_affinity_mask() {
    let _serial = support::serial();
    let server = support::gateway(&[]);
    let url = format!("http://{}/health", server.local_addr());
    let mask = sdsim_loadtest::cpus::allowed();
    let cpu = *mask.last().unwrap();
    let dir = sdsim_testing::temp_dir("loadtest-cli");
    let json = dir.join("run.json");
    let json_arg = json.to_str().unwrap();
    let short = [
        "http",
        url.as_str(),
        "--duration",
        "1s",
        "--warmup",
        "0s",
        "--connections",
        "2",
        "--json",
        json_arg,
    ];

    let passed = on_cpu(
        cpu,
        &[
            &short[..],
            &["--threshold", "p99 < 3600s", "--threshold", "errors < 1%"],
        ]
        .concat(),
    );
    assert_eq!(passed.status.code(), Some(0), "{}", text(&passed));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(
        report["parameters"]["cpus"],
        format!("[{cpu}]"),
        "one thread, on the mask's CPU: {report}"
    );
    let verdicts = report["thresholds"].as_array().unwrap();
    assert_eq!(verdicts.len(), 2, "{report}");
    assert!(verdicts.iter().all(|v| v["passed"] == true), "{report}");
    assert!(String::from_utf8_lossy(&passed.stdout).contains("ok      p99 < 3600s"));

    std::fs::remove_file(&json).unwrap();
    let failed = on_cpu(
        cpu,
        &[&short[..], &["--threshold", "throughput > 1e12"]].concat(),
    );
    assert_eq!(failed.status.code(), Some(99), "{}", text(&failed));
    assert!(
        String::from_utf8_lossy(&failed.stdout).contains("FAILED  throughput > 1e12"),
        "{}",
        text(&failed)
    );
    // The outputs are written before the exit.
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["thresholds"][0]["passed"], false, "{report}");

    let bad = on_cpu(cpu, &[&short[..], &["--threshold", "p99 < soon"]].concat());
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("\"soon\" is not a value for p99"),
        "{}",
        text(&bad)
    );

    if let Some(&other) = mask.iter().find(|&&c| c != cpu) {
        let outside = on_cpu(cpu, &[&short[..], &["--cpus", &other.to_string()]].concat());
        assert_eq!(outside.status.code(), Some(1), "{}", text(&outside));
        assert!(
            String::from_utf8_lossy(&outside.stderr).contains(&format!(
                "--cpus: CPU {other} is outside the CPUs this process may use [{cpu}]"
            )),
            "{}",
            text(&outside)
        );
    }
    support::stop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_scenario_threshold_for_a_line_the_run_lacks_is_refused_before_the_run() {
    let dir = sdsim_testing::temp_dir("loadtest-cli-scenario");
    let scenario = dir.join("bad.toml");
    std::fs::write(
        &scenario,
        "[target]\nurl = \"http://127.0.0.1:9/health\"\n\
         [load]\nduration = \"1s\"\nwarmup = \"0s\"\n\
         [thresholds]\nlogin = [\"p99 < 1s\"]\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["run", scenario.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("this run has no line \"login\""),
        "{}",
        text(&out)
    );
    let _ = std::fs::remove_dir_all(dir);
}
