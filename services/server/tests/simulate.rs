//! `sdsim simulate --sweep`: the grid from the command line, its table, JSON and knee.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_sdsim");
const DESIGN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../config/designs/three-tier.json"
);

fn simulate(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("simulate")
        .arg(DESIGN)
        .args(args)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// One app instance drops requests and misses a 300 ms p99; two hold it: the knee is two.
#[test]
fn a_sweep_prints_each_point_and_the_knee() {
    let sweep = [
        "--sweep",
        "components[app].instances=1..3",
        "--slo-p99",
        "300",
    ];
    let out = simulate(&[&sweep[..], &["--json"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["parameters"],
        serde_json::json!(["components[app].instances"])
    );
    let points = v["points"].as_array().unwrap();
    let values: Vec<&str> = points
        .iter()
        .map(|p| p["values"][0].as_str().unwrap())
        .collect();
    assert_eq!(values, ["1", "2", "3"]);
    assert!(
        points[0]["drop_rate"].as_f64().unwrap() > 0.05,
        "{}",
        points[0]
    );
    assert!(
        points[0]["p99_ms"].as_f64().unwrap() > 300.0,
        "{}",
        points[0]
    );
    for p in &points[1..] {
        assert_eq!(p["drop_rate"].as_f64(), Some(0.0), "{p}");
        assert!(p["p99_ms"].as_f64().unwrap() < 300.0, "{p}");
    }
    assert_eq!(points[0]["busiest"]["component"], "app");
    assert_eq!(points[0]["cost_per_hour"], serde_json::Value::Null);
    assert_eq!(v["knee"], 1);

    let out = simulate(&sweep);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("<- knee").count(), 1, "{text}");
    assert!(
        text.contains("knee: components[app].instances=2 "),
        "{text}"
    );
}

/// Bad sweeps are refused before anything runs, naming what is wrong.
#[test]
fn bad_sweeps_are_refused_with_the_reason() {
    for (args, says) in [
        (
            &["--sweep", "components[nope].instances=1..2"][..],
            "`components` has no `nope`",
        ),
        (
            &[
                "--sweep",
                "components[app].instances=1..300",
                "--sweep",
                "components[db].instances=1..2",
            ][..],
            "600 points, more than the limit of 256",
        ),
        (&["--slo-p99", "300"][..], "--slo-p99 applies to a sweep"),
        (
            &["--sweep", "components[app].instances=0..1"][..],
            "components[app].instances=0",
        ),
    ] {
        let out = simulate(args);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
}

/// A reader that has gone (`sdsim simulate ... | head -1`) is not a crash: `print!` panicked
/// with a backtrace there.
#[test]
fn a_closed_standard_output_is_not_a_panic() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(BIN)
        .arg("simulate")
        .arg(DESIGN)
        .stdout(writer)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}
