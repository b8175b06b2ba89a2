//! Closed-loop users against exact mean value analysis (MVA): N users thinking Z between
//! requests, FCFS exponential stations visited V_k times with service S_k (demand
//! D_k = V_k·S_k). MVA gives the exact throughput X(N) and response time R(N) of the product-
//! form network; the asymptotic bounds X ≤ min(N/(D+Z), 1/D_max) and R ≥ max(D, N·D_max − Z)
//! must hold too. Long runs with fixed seeds, so each row's error is well inside 3 %.

use sdsim_engine::design::parse;
use sdsim_engine::engine::stats::Report;
use sdsim_engine::engine::Simulation;

fn simulate(json: &str) -> Report {
    let design = parse(json).unwrap_or_else(|p| panic!("{p:?}"));
    let mut sim = Simulation::new(design);
    sim.run();
    sim.report()
}

/// Exact MVA for a closed network of single-server FCFS stations with demands `d` (seconds)
/// and think time `z`: (throughput, response time) with `n` users.
fn mva(n: u32, z: f64, d: &[f64]) -> (f64, f64) {
    let mut queue = vec![0.0; d.len()];
    let (mut x, mut r) = (0.0, 0.0);
    for users in 1..=n {
        let residence: Vec<f64> = d.iter().zip(&queue).map(|(d, q)| d * (1.0 + q)).collect();
        r = residence.iter().sum();
        x = f64::from(users) / (z + r);
        queue = residence.iter().map(|rk| x * rk).collect();
    }
    (x, r)
}

/// A design: `users` thinking `think_ms` (exponential), entering `s0`; stations `s0..` with
/// exponential services `service_ms` and the given routes.
fn network(users: u32, think_ms: f64, service_ms: &[f64], routes: &[&str]) -> String {
    let mut components = vec![format!(
        r#"{{"id": "users", "kind": "source", "users": {users},
            "think_time": {{"dist": "exponential", "mean_ms": {think_ms}}}, "to": "s0"}}"#
    )];
    for (k, (ms, routes)) in service_ms.iter().zip(routes).enumerate() {
        components.push(format!(
            r#"{{"id": "s{k}", "kind": "service",
                "service_time": {{"dist": "exponential", "mean_ms": {ms}}}, "routes": [{routes}]}}"#
        ));
    }
    format!(
        r#"{{"version": 2, "duration_s": 60000, "warmup_s": 1000, "seed": 5, "components": [{}]}}"#,
        components.join(",")
    )
}

struct Row {
    what: &'static str,
    users: u32,
    think_ms: f64,
    service_ms: &'static [f64],
    visits: &'static [f64],
    routes: &'static [&'static str],
}

const TANDEM_2: [&str; 2] = [r#"{"to": "s1", "p": 1}"#, ""];
const TANDEM_3: [&str; 3] = [r#"{"to": "s1", "p": 1}"#, r#"{"to": "s2", "p": 1}"#, ""];
/// s0 sends half its requests to s1 and half to s2.
const BRANCH_3: [&str; 3] = [r#"{"to": "s1", "p": 0.5}, {"to": "s2", "p": 0.5}"#, "", ""];
/// s1 sends a request back to s0 with probability 0.25: 4/3 visits to each.
const FEEDBACK_2: [&str; 2] = [r#"{"to": "s1", "p": 1}"#, r#"{"to": "s0", "p": 0.25}"#];

const ROWS: [Row; 5] = [
    Row {
        what: "N=5, Z=1 s, two stations (light load)",
        users: 5,
        think_ms: 1000.0,
        service_ms: &[50.0, 80.0],
        visits: &[1.0, 1.0],
        routes: &TANDEM_2,
    },
    Row {
        what: "N=20, Z=1 s, two stations (saturated)",
        users: 20,
        think_ms: 1000.0,
        service_ms: &[50.0, 80.0],
        visits: &[1.0, 1.0],
        routes: &TANDEM_2,
    },
    Row {
        what: "N=10, Z=2 s, three stations in tandem (near N*)",
        users: 10,
        think_ms: 2000.0,
        service_ms: &[100.0, 200.0, 60.0],
        visits: &[1.0, 1.0, 1.0],
        routes: &TANDEM_3,
    },
    Row {
        what: "N=15, Z=0.5 s, a branch to two stations",
        users: 15,
        think_ms: 500.0,
        service_ms: &[40.0, 120.0, 60.0],
        visits: &[1.0, 0.5, 0.5],
        routes: &BRANCH_3,
    },
    Row {
        what: "N=8, Z=1 s, two stations with feedback",
        users: 8,
        think_ms: 1000.0,
        service_ms: &[60.0, 90.0],
        visits: &[4.0 / 3.0, 4.0 / 3.0],
        routes: &FEEDBACK_2,
    },
];

#[test]
fn closed_networks_match_exact_mva_and_the_asymptotic_bounds() {
    let mut wrong = Vec::new();
    eprintln!(
        "| network | N* | MVA X/s | simulated X/s | diff | MVA R ms | simulated R ms | diff |"
    );
    for row in ROWS {
        let demands: Vec<f64> = row
            .service_ms
            .iter()
            .zip(row.visits)
            .map(|(s, v)| s / 1e3 * v)
            .collect();
        let z = row.think_ms / 1e3;
        let (x, r) = mva(row.users, z, &demands);
        let report = simulate(&network(
            row.users,
            row.think_ms,
            row.service_ms,
            row.routes,
        ));
        let e = &report.end_to_end;
        let (sim_x, sim_r) = (e.throughput_per_s, e.mean_ms / 1e3);
        let total: f64 = demands.iter().sum();
        let d_max = demands.iter().copied().fold(0.0, f64::max);
        let n_star = (total + z) / d_max;
        eprintln!(
            "| {} | {n_star:.2} | {x:.4} | {sim_x:.4} | {:+.2}% | {:.1} | {:.1} | {:+.2}% |",
            row.what,
            (sim_x - x) / x * 100.0,
            r * 1e3,
            sim_r * 1e3,
            (sim_r - r) / r * 100.0
        );
        if ((sim_x - x) / x).abs() > 0.03 {
            wrong.push(format!("{}: throughput {sim_x} vs MVA {x}", row.what));
        }
        if ((sim_r - r) / r).abs() > 0.03 {
            wrong.push(format!("{}: response {sim_r} vs MVA {r}", row.what));
        }
        // Bounds hold for the simulated figures, with the same 3 % allowance for noise.
        let x_bound = (f64::from(row.users) / (total + z)).min(1.0 / d_max);
        let r_bound = total.max(f64::from(row.users) * d_max - z);
        if sim_x > x_bound * 1.03 {
            wrong.push(format!("{}: X {sim_x} above its bound {x_bound}", row.what));
        }
        if sim_r < r_bound * 0.97 {
            wrong.push(format!("{}: R {sim_r} below its bound {r_bound}", row.what));
        }
        // Beyond N* the bottleneck is saturated: throughput is at 1/D_max within 3 %.
        if f64::from(row.users) > 2.0 * n_star && sim_x < 0.97 / d_max {
            wrong.push(format!("{}: saturated X {sim_x} below 1/D_max", row.what));
        }
        // A closed loop has no drops and every request is answered.
        assert_eq!((e.dropped, e.errors), (0, 0), "{}", row.what);
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn the_population_never_exceeds_its_users_and_open_and_closed_sources_mix() {
    // 3 users with no think time against a slow station: at most 3 requests are ever in the
    // system, so its queue never holds more than 2 of them; an open source adds its own load.
    let r = simulate(
        r#"{"version": 2, "duration_s": 2000, "seed": 9, "components": [
            {"id": "users", "kind": "source", "users": 3,
             "think_time": {"dist": "constant", "ms": 0}, "to": "api"},
            {"id": "api", "kind": "service", "service_time": {"dist": "constant", "ms": 100}},
            {"id": "web", "kind": "source", "rate_per_s": 2, "to": "shop"},
            {"id": "shop", "kind": "service", "service_time": {"dist": "exponential", "mean_ms": 50}}
        ]}"#,
    );
    let api = &r.components["api"];
    // Three users, 100 ms each, no think time: the station is always busy, 10 requests/s.
    assert!((api.throughput_per_s - 10.0).abs() < 0.01, "{api:?}");
    assert!((api.mean_queue_length - 2.0).abs() < 0.01, "{api:?}");
    assert!((api.mean_response_ms - 300.0).abs() < 0.5, "{api:?}");
    let shop = &r.components["shop"];
    assert!((shop.throughput_per_s - 2.0).abs() < 0.1, "{shop:?}");
    // Every request of a user is answered, except those still in flight at the end (≤ 3).
    let users = &r.clients["users"];
    assert!(users.first_tries - users.succeeded <= 3, "{users:?}");
    assert_eq!(users.failed, 0);
    assert!(r.clients["web"].first_tries > 3_800);
}
