//! The deployment files against the tools that read them: the systemd units through
//! `systemd-analyze verify` (any warning fails), the Kubernetes manifests through
//! `kubernetes-validate --strict` and `tests/deploy/check_k8s.py` (each Deployment's
//! configuration accepted by this binary with the pod's environment; probes, ports, the stop
//! sequence, Guaranteed QoS, a Service and a PodDisruptionBudget per Deployment), and the
//! sysctl file's keys against this kernel. Needs systemd-analyze and kubernetes-validate
//! (`./test.sh` installs them); without them the test fails rather than skipping.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_sdsim");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The drain's default bound, `server.shutdown_timeout`, in seconds.
fn default_drain_s() -> u64 {
    sdsim_server::config::Config::default()
        .server
        .shutdown_timeout
        .as_secs()
}

fn units() -> Vec<PathBuf> {
    let mut units: Vec<PathBuf> = std::fs::read_dir(root().join("deploy/systemd"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    units.push(root().join("config/sdsim.service"));
    units.sort();
    units
}

/// `Key=value` of a unit's [Service] section.
fn setting<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn the_systemd_units_verify_and_outlast_the_drain() {
    let dir = sdsim_testing::temp_dir("deploy-systemd");
    let drain = default_drain_s();
    let mut copies = Vec::new();
    for unit in units() {
        let text = std::fs::read_to_string(&unit).unwrap();
        let name = unit.file_name().unwrap().to_str().unwrap().to_string();
        let stop: u64 = setting(&text, "TimeoutStopSec")
            .unwrap_or_else(|| panic!("{name}: no TimeoutStopSec"))
            .parse()
            .unwrap();
        assert!(
            stop > drain,
            "{name}: TimeoutStopSec {stop} ≤ the drain's {drain} s"
        );
        let nofile: u64 = setting(&text, "LimitNOFILE").unwrap().parse().unwrap();
        assert!(nofile >= 200_000, "{name}: LimitNOFILE {nofile}");
        if name.starts_with("sdsim-") {
            assert!(
                setting(&text, "CPUAffinity").is_some(),
                "{name}: no CPUAffinity"
            );
        }
        // verify checks that ExecStart's program exists: this test's own binary stands in.
        let copy = dir.join(&name);
        std::fs::write(&copy, text.replace("/usr/local/bin/sdsim", BIN)).unwrap();
        copies.push(copy);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&copies)
        .output()
        .expect("systemd-analyze (Debian's systemd) is installed; ./test.sh installs it");
    let said =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "systemd-analyze verify: {said}");
    // An unknown or misspelt key is only a warning to systemd, but a unit that says nothing.
    assert_eq!(said.trim(), "", "systemd-analyze verify warned");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_kubernetes_manifests_validate_and_run_this_binary() {
    let k8s = root().join("deploy/k8s");
    let manifests: Vec<PathBuf> = std::fs::read_dir(&k8s)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    assert!(manifests.len() >= 4, "{manifests:?}");
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--quiet"])
        .args(&manifests)
        .output()
        .expect("kubernetes-validate (PyPI) is installed; ./test.sh installs it");
    assert!(
        out.status.success(),
        "kubernetes-validate --strict:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("python3")
        .arg(root().join("tests/deploy/check_k8s.py"))
        .arg(BIN)
        .arg(&k8s)
        .arg(default_drain_s().to_string())
        .output()
        .unwrap();
    let report =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "check_k8s.py:\n{report}");
    assert!(report.contains("all deployment checks passed"), "{report}");
}

#[test]
fn every_sysctl_of_the_tuning_file_exists_on_this_kernel() {
    let text = std::fs::read_to_string(root().join("deploy/sysctl.d/90-sdsim.conf")).unwrap();
    let keys: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split('=').next().unwrap().trim())
        .collect();
    assert!(keys.len() >= 10, "{keys:?}");
    for key in keys {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        assert!(path.exists(), "{key}: no {} on this kernel", path.display());
    }
}
