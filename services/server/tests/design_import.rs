//! `sdsim design import --from otel-servicegraph` and `sdsim simulate --plot-goodput` from the
//! command line: the files they write, and their errors.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_sdsim");
const DESIGNS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/designs/");
const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/examples/servicegraph.prom"
);

fn sdsim(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sdsim-design-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn the_example_scrape_imports_to_a_design_that_simulates() {
    let out_path = temp("imported.json");
    let out = sdsim(&[
        "design",
        "import",
        "--from",
        "otel-servicegraph",
        EXAMPLE,
        "--window-s",
        "600",
        "-o",
        out_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The API calls the database 1.5 times per request: said on standard error.
    assert!(
        stderr(&out).contains("note: api calls db 1.5"),
        "{}",
        stderr(&out)
    );
    let design: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out_path).unwrap()).unwrap();
    assert_eq!(design["version"], 2);
    let ids: Vec<&str> = design["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["batch", "users", "api", "auth", "db", "frontend"]);
    let run = sdsim(&["simulate", out_path.to_str().unwrap(), "--json"]);
    assert!(run.status.success(), "{}", stderr(&run));
}

#[test]
fn a_bad_scrape_is_refused_with_its_line() {
    let path = temp("bad.prom");
    std::fs::write(
        &path,
        "# TYPE traces_service_graph_request_total counter\n\
         traces_service_graph_request_total{client=\"user\",server=\"api\"} -1\n",
    )
    .unwrap();
    let out = sdsim(&[
        "design",
        "import",
        "--from",
        "otel-servicegraph",
        path.to_str().unwrap(),
        "--window-s",
        "60",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("bad.prom: line 2: `traces_service_graph_request_total` is -1"),
        "{err}"
    );
    let no_window = sdsim(&[
        "design",
        "import",
        "--from",
        "otel-servicegraph",
        path.to_str().unwrap(),
    ]);
    assert!(stderr(&no_window).contains("--window-s"));
    // The same scrape twice: nothing happened between them.
    let same = sdsim(&[
        "design",
        "import",
        "--from",
        "otel-servicegraph",
        EXAMPLE,
        "--before",
        EXAMPLE,
        "--window-s",
        "60",
    ]);
    assert!(!same.status.success());
    assert!(
        stderr(&same).contains("no requests in the window"),
        "{}",
        stderr(&same)
    );
}

#[test]
fn the_goodput_plot_of_a_retry_storm_says_metastable() {
    let svg_path = temp("storm.svg");
    let out = sdsim(&[
        "simulate",
        &format!("{DESIGNS}retry-storm.json"),
        "--plot-goodput",
        svg_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(svg.starts_with("<svg "), "{svg}");
    assert!(svg.contains("retry-storm.json — metastable"), "{svg}");
    let v1 = sdsim(&[
        "simulate",
        &format!("{DESIGNS}minimal.json"),
        "--plot-goodput",
        svg_path.to_str().unwrap(),
    ]);
    assert!(!v1.status.success());
    assert!(stderr(&v1).contains("version-2 design"), "{}", stderr(&v1));
}
