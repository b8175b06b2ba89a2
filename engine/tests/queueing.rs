//! The engine against queueing theory. Each run simulates enough time that the estimate's
//! standard error is well inside the stated tolerance (long runs; warm-up excluded).

use sdsim_engine::design::parse;
use sdsim_engine::engine::stats::Report;
use sdsim_engine::engine::Simulation;

fn simulate(json: &str) -> Report {
    let design = parse(json).unwrap_or_else(|p| panic!("{p:?}"));
    let mut sim = Simulation::new(design);
    sim.run();
    sim.report()
}

fn close(what: &str, got: f64, want: f64, rel: f64) {
    let err = (got - want).abs() / want.abs();
    eprintln!(
        "| {what} | {want:.4} | {got:.4} | {:+.2}% | {:.0}% |",
        (got - want) / want * 100.0,
        rel * 100.0
    );
    assert!(
        err <= rel,
        "{what}: simulated {got:.5}, theory {want:.5}, off by {:.2}% (tolerance {:.1}%)",
        err * 100.0,
        rel * 100.0
    );
}

fn single(rate: f64, concurrency: u32, service: &str, extra: &str, duration: f64) -> String {
    format!(
        r#"{{"duration_s": {duration}, "warmup_s": 1000, "seed": 11, "components": [
            {{"id": "src", "kind": "source", "rate_per_s": {rate}, "to": "s"}},
            {{"id": "s", "kind": "service", "concurrency": {concurrency}, "service_time": {service} {extra}}}]}}"#
    )
}

/// Erlang C: probability an arrival waits in M/M/c with offered load a = λ/μ.
fn erlang_c(c: u32, a: f64) -> f64 {
    let rho = a / f64::from(c);
    let mut sum = 0.0;
    let mut term = 1.0;
    for k in 0..c {
        if k > 0 {
            term *= a / f64::from(k);
        }
        sum += term;
    }
    let last = term * a / f64::from(c);
    let top = last / (1.0 - rho);
    top / (sum + top)
}

/// Erlang B: blocking probability of M/M/c/c.
fn erlang_b(c: u32, a: f64) -> f64 {
    (1..=c).fold(1.0, |b, k| a * b / (f64::from(k) + a * b))
}

#[test]
fn mm1_matches_closed_forms() {
    // λ = 7/s, μ = 10/s: ρ = 0.7, W = 1/(μ-λ) = 333.3 ms, Wq = ρ/(μ-λ) = 233.3 ms, Lq = ρ²/(1-ρ).
    let r = simulate(&single(
        7.0,
        1,
        r#"{"dist": "exponential", "mean_ms": 100}"#,
        "",
        400_000.0,
    ));
    let s = &r.components["s"];
    close("utilisation", s.utilization, 0.7, 0.01);
    close("mean response", s.mean_response_ms, 1000.0 / 3.0, 0.03);
    close("mean wait", s.mean_wait_ms, 700.0 / 3.0, 0.04);
    close("mean queue length", s.mean_queue_length, 0.49 / 0.3, 0.04);
    // Response time in M/M/1 is exponential: the median is W·ln 2.
    close(
        "median response",
        s.p50_ms,
        1000.0 / 3.0 * std::f64::consts::LN_2,
        0.04,
    );
}

#[test]
fn mmc_matches_erlang_c() {
    // c = 3, μ = 10/s each, λ = 24/s: a = 2.4, ρ = 0.8.
    let r = simulate(&single(
        24.0,
        3,
        r#"{"dist": "exponential", "mean_ms": 100}"#,
        "",
        200_000.0,
    ));
    let s = &r.components["s"];
    let pw = erlang_c(3, 2.4);
    let wq = pw / (30.0 - 24.0);
    close("utilisation", s.utilization, 0.8, 0.01);
    close("mean wait (Erlang C)", s.mean_wait_ms, wq * 1e3, 0.05);
    close("mean queue length", s.mean_queue_length, 24.0 * wq, 0.05);
}

#[test]
fn loss_system_matches_erlang_b_and_finite_capacity() {
    // M/M/2/2 (no waiting room): a = 1.5 Erlang.
    let r = simulate(&single(
        15.0,
        2,
        r#"{"dist": "exponential", "mean_ms": 100}"#,
        r#", "queue_capacity": 0"#,
        100_000.0,
    ));
    let s = &r.components["s"];
    let blocked = s.dropped as f64 / s.arrivals as f64;
    close("blocking (Erlang B)", blocked, erlang_b(2, 1.5), 0.02);
    assert_eq!(s.mean_queue_length, 0.0);
    // M/M/1/K with K = 4 in the system (1 serving + 3 waiting), ρ = 0.9.
    let r = simulate(&single(
        9.0,
        1,
        r#"{"dist": "exponential", "mean_ms": 100}"#,
        r#", "queue_capacity": 3"#,
        100_000.0,
    ));
    let s = &r.components["s"];
    let (rho, k) = (0.9f64, 4);
    let p_block = (1.0 - rho) * rho.powi(k) / (1.0 - rho.powi(k + 1));
    close(
        "blocking (M/M/1/K)",
        s.dropped as f64 / s.arrivals as f64,
        p_block,
        0.03,
    );
}

#[test]
fn md1_and_mg1_match_pollaczek_khinchine() {
    // Wq = λ E[S²] / (2 (1 - ρ)).
    let cases = [
        (r#"{"dist": "constant", "ms": 100}"#, 0.01),
        (
            r#"{"dist": "uniform", "min_ms": 50, "max_ms": 150}"#,
            (0.05f64 * 0.05 + 0.05 * 0.15 + 0.15 * 0.15) / 3.0,
        ),
        (r#"{"dist": "erlang", "k": 4, "mean_ms": 100}"#, 0.01 * 1.25),
    ];
    for (service, es2) in cases {
        let r = simulate(&single(7.0, 1, service, "", 200_000.0));
        let wq = 7.0 * es2 / (2.0 * 0.3);
        close(
            &format!("mean wait of {service}"),
            r.components["s"].mean_wait_ms,
            wq * 1e3,
            0.04,
        );
    }
}

#[test]
fn jackson_networks_tandem_and_feedback() {
    // Tandem: λ = 5, μ1 = 10, μ2 = 8: end-to-end W = 1/5 + 1/3 s.
    let tandem = r#"{"duration_s": 200000, "warmup_s": 1000, "seed": 3, "components": [
        {"id": "src", "kind": "source", "rate_per_s": 5, "to": "a"},
        {"id": "a", "kind": "service", "service_time": {"dist": "exponential", "mean_ms": 100}, "routes": [{"to": "b", "p": 1}]},
        {"id": "b", "kind": "service", "service_time": {"dist": "exponential", "mean_ms": 125}}]}"#;
    let r = simulate(tandem);
    close(
        "tandem end-to-end mean",
        r.end_to_end.mean_ms,
        (0.2 + 1.0 / 3.0) * 1e3,
        0.03,
    );
    // Feedback: λ = 3 external, half of the served requests return: effective λ = 6, μ = 10;
    // per visit W = 1/(10-6) = 250 ms, 2 visits on average: 500 ms end to end.
    let feedback = r#"{"duration_s": 200000, "warmup_s": 1000, "seed": 5, "components": [
        {"id": "src", "kind": "source", "rate_per_s": 3, "to": "s"},
        {"id": "s", "kind": "service", "service_time": {"dist": "exponential", "mean_ms": 100}, "routes": [{"to": "s", "p": 0.5}]}]}"#;
    let r = simulate(feedback);
    close(
        "feedback utilisation",
        r.components["s"].utilization,
        0.6,
        0.01,
    );
    close(
        "feedback per-visit response",
        r.components["s"].mean_response_ms,
        250.0,
        0.03,
    );
    close(
        "feedback end-to-end mean",
        r.end_to_end.mean_ms,
        500.0,
        0.04,
    );
}

#[test]
fn littles_law_holds_on_every_component() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/designs/three-tier.json"
    ))
    .unwrap();
    let r = simulate(&text);
    let design = parse(&text).unwrap();
    for comp in &design.components {
        let c = &r.components[&comp.id];
        if c.kind == "source" {
            continue;
        }
        let workers = match &comp.kind {
            sdsim_engine::design::Kind::Station(s) => f64::from(s.instances * s.concurrency),
            _ => unreachable!(),
        };
        let in_system = c.mean_queue_length + c.utilization * workers;
        let lambda_w = c.throughput_per_s * c.mean_response_ms / 1e3;
        close(
            &format!("Little's law at {}", comp.id),
            in_system,
            lambda_w,
            0.02,
        );
        // Waiting part alone: Lq = λ Wq.
        if c.mean_queue_length > 0.01 {
            close(
                &format!("Lq = λWq at {}", comp.id),
                c.mean_queue_length,
                c.throughput_per_s * c.mean_wait_ms / 1e3,
                0.03,
            );
        }
    }
}
