//! Part A: the project API under load on sdsim, sdsim with the token cache off, and the peer,
//! after checking that every target answers alike; the table and every run.

use super::api_load::{run_api, Load, ProjectRef};
use super::figures::{errors_text, fmt_pcts, fmt_ratios, median_pcts, merged, pcts, ratio};
use super::http::{account, agent, call, create_project, User};
use super::server::{spawn_server, start_sdsim, Server};
use super::Args;
use crate::median;
use crate::process::{free_port, pinned};
use anyhow::{ensure, Context};
use sdsim_loadtest::report::Report;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// The answers both implementations must give before they are measured.
fn api_checks(
    targets: &[Server],
    users: &[User],
    projects: &[ProjectRef],
    owner_of: &[usize],
) -> anyhow::Result<String> {
    let a = agent();
    let (p, owner) = (&projects[0], &users[owner_of[0]]);
    let stranger = &users[(owner_of[0] + 1) % users.len()];
    let mut out = String::from("\n### Checks (every target, before the load)\n\n");
    let mut first: Option<Value> = None;
    for t in targets {
        let url = format!("http://{}/api/projects/{}", t.addr, p.id);
        let (s, got) = call(&a, "GET", &url, Some(&owner.token), None)?;
        ensure!(
            s == 200 && got["id"] == json!(p.id) && got["role"] == "owner",
            "{}: GET answered {s}: {got}",
            t.name
        );
        let same = [
            "id",
            "name",
            "owner_id",
            "design",
            "settings",
            "template_id",
            "created_at",
        ];
        if let Some(f) = &first {
            for k in same {
                ensure!(
                    f[k] == got[k],
                    "{}: GET field {k} differs: {} vs {}",
                    t.name,
                    f[k],
                    got[k]
                );
            }
        } else {
            first = Some(got.clone());
        }
        let (s, put) = call(
            &a,
            "PUT",
            &url,
            Some(&owner.token),
            Some(&json!({"description": format!("check {}", t.name)})),
        )?;
        ensure!(
            s == 200 && put["version"].as_i64() > got["version"].as_i64(),
            "{}: PUT answered {s}: {put}",
            t.name
        );
        let mut bad = p.design.clone();
        bad["components"][0]["to"] = json!("nowhere");
        let (s422, _) = call(
            &a,
            "PUT",
            &url,
            Some(&owner.token),
            Some(&json!({ "design": bad })),
        )?;
        let (s404, _) = call(&a, "GET", &url, Some(&stranger.token), None)?;
        let (s401, _) = call(&a, "GET", &url, None, None)?;
        ensure!(
            (s422, s404, s401) == (422, 404, 401),
            "{}: invalid design / non-member / no token answered {s422} / {s404} / {s401}",
            t.name
        );
        writeln!(out, "- {}: GET 200 (same project JSON fields: {}), PUT 200 (version {} → {}), invalid design 422, non-member 404, no token 401", t.name, same.join(", "), got["version"], put["version"])?;
    }
    Ok(out)
}

pub(super) fn part_api(args: &Args, dir: &Path) -> anyhow::Result<String> {
    let sdsim = start_sdsim(args, &dir.join("api"), "sdsim", &[])?;
    let mut targets = vec![];
    let gateway = sdsim.addr;
    targets.push(sdsim);
    if !args.no_uncached {
        // The same database, so the same signing keys: the same tokens verify on both.
        targets.push(start_sdsim(
            args,
            &dir.join("api"),
            "sdsim (no token cache)",
            &["auth.verify_cache_entries=0".into()],
        )?);
    }
    eprintln!("== api: {} users, {} projects", args.users, args.projects);
    let users: Vec<User> = (0..args.users)
        .map(|i| account(gateway, &format!("owner{i}@example.com")))
        .collect::<Result<_, _>>()?;
    let templates = [
        "three-tier",
        "url-shortener",
        "chat-notifications",
        "read-heavy-cache",
        "event-pipeline",
    ];
    let mut seed = Vec::new();
    let mut projects = Vec::new();
    let mut owner_of = Vec::new();
    let mut sizes = Vec::new();
    for i in 0..args.projects {
        let owner = i % users.len();
        let p = create_project(
            gateway,
            &users[owner],
            &json!({"name": format!("project {i}"), "description": "seed", "template_id": templates[i % templates.len()]}),
        )?;
        projects.push(ProjectRef {
            id: p["id"].as_str().context("project id")?.into(),
            token: users[owner].token.clone(),
            design: p["design"].clone(),
        });
        owner_of.push(owner);
        sizes.push(p["design"].to_string().len());
        seed.push(p);
    }
    let seed_file = dir.join("seed.json");
    std::fs::write(&seed_file, serde_json::to_string(&seed)?)?;
    let port = free_port()?;
    let mut cmd = pinned(&args.peer, args.server_cpu);
    let peer_args = vec![
        "--listen".to_string(),
        format!("127.0.0.1:{port}"),
        "--jwks".into(),
        format!("http://{gateway}/.well-known/jwks.json"),
        "--db".into(),
        dir.join("peer.db").display().to_string(),
        "--seed".into(),
        seed_file.display().to_string(),
        "--cpus".into(),
        args.server_cpu.to_string(),
    ];
    cmd.args(&peer_args);
    targets.push(spawn_server(
        "peer",
        cmd,
        port,
        peer_args,
        dir.join("peer.log"),
    )?);
    let checks = api_checks(&targets, &users, &projects, &owner_of)?;
    eprint!("{checks}");

    // Connection c owns projects c, c + C, c + 2C, ...: no two PUTs race on one project.
    let conns = args.connections.min(projects.len()).max(1);
    let plan: Vec<Vec<ProjectRef>> = (0..conns)
        .map(|c| projects.iter().skip(c).step_by(conns).cloned().collect())
        .collect();
    let loads: Vec<Load> = args
        .rates
        .iter()
        .map(|&r| Load::Open(r))
        .chain([Load::Closed])
        .collect();
    let mut results: Vec<Vec<Vec<[Report; 3]>>> =
        vec![vec![Vec::new(); targets.len()]; loads.len()];
    let mut per_run = String::new();
    for run in 1..=args.runs {
        for (l, &load) in loads.iter().enumerate() {
            let mut order: Vec<usize> = (0..targets.len()).collect();
            if run % 2 == 0 {
                order.reverse();
            }
            for t in order {
                let r = run_api(args, targets[t].addr, &plan, load)?;
                targets[t].check_alive()?;
                let all = merged(&r, &[0, 1, 2]);
                let line = format!(
                    "run {run} {:<22} {:<18} {:>8.0} req/s  GET {} ms  PUT {} ms  errors {}  late {}",
                    targets[t].name,
                    load.label(conns),
                    all.throughput(),
                    fmt_pcts(&pcts(&r[0])),
                    fmt_pcts(&pcts(&merged(&r, &[1, 2]))),
                    errors_text(&all),
                    all.counters.late
                );
                eprintln!("{line}");
                writeln!(per_run, "{line}")?;
                results[l][t].push(r);
            }
        }
    }
    let (fewest, most) = (
        plan.iter().map(Vec::len).min(),
        plan.iter().map(Vec::len).max(),
    );
    let per_conn = match (fewest, most) {
        (Some(a), Some(b)) if a != b => format!("{a}–{b}"),
        (_, b) => b.unwrap_or(0).to_string(),
    };
    let mut out = format!(
        "\n## A. Project API under load\n\nMix: {}% PUT (half `{{\"description\"}}`, half `{{\"design\"}}` with `duration_s` changed: the design is validated by the engine and a version row written), the rest `GET /api/projects/{{id}}`; {} projects ({} system templates in turn, designs of {}–{} bytes of JSON) owned by {} users, each of the {conns} connections requesting only its own {} projects (so no two PUTs race); every PUT changes something. Latency in ms from each request's intended send time (open loop: {} connections on a fixed schedule, wrk2 style; closed loop: next request when the answer arrives), {} s measured after {} s warm-up, medians of {} runs; errors and late sends are totals over the runs. The generator's timer has 1 ms resolution (monoio): an open-loop request goes out up to ~1 ms after its intended time and that delay is counted, for every target alike.\n\n",
        args.put_percent, args.projects, templates.len(), sizes.iter().min().unwrap_or(&0), sizes.iter().max().unwrap_or(&0), args.users, per_conn, conns, args.duration, args.warmup, args.runs
    );
    out.push_str("| load | target | req/s | GET p50 / p99 / p99.9 / max ms | PUT p50 / p99 / p99.9 / max ms | errors | late |\n|---|---|---|---|---|---|---|\n");
    for (l, load) in loads.iter().enumerate() {
        let rows: Vec<(f64, [f64; 4], [f64; 4])> = results[l]
            .iter()
            .map(|runs| {
                let gets: Vec<Report> = runs.iter().map(|r| r[0].clone()).collect();
                let puts: Vec<Report> = runs.iter().map(|r| merged(r, &[1, 2])).collect();
                (
                    median(
                        runs.iter()
                            .map(|r| merged(r, &[0, 1, 2]).throughput())
                            .collect(),
                    ),
                    median_pcts(&gets),
                    median_pcts(&puts),
                )
            })
            .collect();
        for (t, row) in rows.iter().enumerate() {
            let all: Vec<Report> = results[l][t]
                .iter()
                .map(|r| merged(r, &[0, 1, 2]))
                .collect();
            let mut total = Report::new(Duration::from_secs(1));
            for r in &all {
                total.merge(&r.histogram, &r.counters);
            }
            writeln!(
                out,
                "| {} | {} | {:.0} | {} | {} | {} | {} |",
                load.label(conns),
                targets[t].name,
                row.0,
                fmt_pcts(&row.1),
                fmt_pcts(&row.2),
                errors_text(&total),
                total.counters.late
            )?;
        }
        let peer = rows.last().context("no peer row")?;
        for (t, row) in rows.iter().enumerate().take(rows.len() - 1) {
            writeln!(
                out,
                "| {} | **{} / peer** | **{}** | {} | {} | | |",
                load.label(conns),
                targets[t].name,
                ratio(row.0, peer.0),
                fmt_ratios(&row.1, &peer.1),
                fmt_ratios(&row.2, &peer.2)
            )?;
        }
    }
    out.push_str(&checks);
    writeln!(out, "\n### Targets\n\n- sdsim: `{} serve` with `--set` {}; every listener on a free loopback port; the project and simulation roles in-process on the gateway.", args.sdsim, targets[0].sets.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(" "))?;
    if !args.no_uncached {
        writeln!(out, "- sdsim (no token cache): a second sdsim process on the same database (so the same signing keys and tokens), also `auth.verify_cache_entries=0`: every request verifies the token's Ed25519 signature, as the peer does. The two sdsim processes are never loaded at the same time.")?;
    }
    writeln!(out, "- peer: `{} {}` — axum 0.8 on a tokio multi-thread runtime with 1 worker (one per CPU of its affinity mask: CPU {}), jsonwebtoken 11 (EdDSA, aws-lc-rs) verifying every request's token against sdsim's JWKS (fetched once), rusqlite 0.37 (bundled SQLite, WAL, synchronous=NORMAL, foreign_keys, busy_timeout 5 s: sdsim's pragmas) with a pool of 2 read connections and 1 write connection used through `spawn_blocking`, cached prepared statements; GET = role lookup + project row in one blocking job; PUT = design validated with sdsim's engine parser, then role, version check, UPDATE ... WHERE version = current and the version row in one `BEGIN IMMEDIATE` transaction; mimalloc. It does not publish `project:events:updated` and does not re-read the row after the update (sdsim does both). Its database holds the same projects (loaded from sdsim's answers at start).", args.peer, targets.last().map_or(String::new(), |p| p.sets.join(" ")), args.server_cpu)?;
    out.push_str("\n### Every run\n\n```\n");
    out.push_str(&per_run);
    out.push_str("```\n");
    Ok(out)
}
