//! Part C: simulation runs per second, users keeping runs in flight and learning of each end
//! from the WebSocket monitor.

use super::figures::{fmt_pcts, median_pcts, pcts};
use super::http::{account, agent, call, create_project, User};
use super::monitor::{ended, Monitor, SimEvent};
use super::server::Server;
use super::{Args, SimConfig};
use crate::{median, pin_current};
use sdsim_loadtest::report::Report;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Submits {
    /// (simulation id, when its POST was sent).
    accepted: Vec<(String, Instant)>,
    too_many: u64,
    queue_full: u64,
    other: Vec<String>,
}

/// One user's submitter: keeps `inflight` runs outstanding until `until`.
fn submitter(
    gateway: SocketAddr,
    token: String,
    body: Value,
    inflight: usize,
    until: Instant,
    ended: mpsc::Receiver<()>,
    submits: Arc<Mutex<Submits>>,
) -> anyhow::Result<()> {
    let (a, url) = (agent(), format!("http://{gateway}/api/simulations"));
    let mut outstanding = 0usize;
    while Instant::now() < until {
        while outstanding < inflight && Instant::now() < until {
            let sent = Instant::now();
            let (s, answer) = call(&a, "POST", &url, Some(&token), Some(&body))?;
            let mut sub = submits.lock().unwrap();
            match s {
                202 => {
                    sub.accepted
                        .push((answer["simulation_id"].as_str().unwrap_or("").into(), sent));
                    outstanding += 1;
                }
                429 | 503 => {
                    *if s == 429 {
                        &mut sub.too_many
                    } else {
                        &mut sub.queue_full
                    } += 1;
                    drop(sub);
                    std::thread::sleep(Duration::from_millis(10));
                    break;
                }
                _ => sub.other.push(format!("{s}: {answer}")),
            }
        }
        let left = until
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        if ended.recv_timeout(left).is_ok() {
            outstanding = outstanding.saturating_sub(1 + ended.try_iter().count());
        }
    }
    Ok(())
}

/// Part C on one server: (table row, every-run lines).
pub(super) fn part_runs(
    args: &Args,
    config: &SimConfig,
    server: &Server,
    monitor: &Monitor,
    fresh: bool,
) -> anyhow::Result<(String, String)> {
    let mode = if fresh { "fresh" } else { "same" };
    let label = format!(
        "{}; {}",
        config.label,
        if fresh {
            "new users every run"
        } else {
            "same users every run"
        }
    );
    let new_users = |round: usize| -> anyhow::Result<Vec<(User, Value)>> {
        let mut users = Vec::new();
        for u in 0..args.run_users {
            let user = account(
                server.addr,
                &format!("runner{u}-{mode}-{round}@example.com"),
            )?;
            let project = create_project(
                server.addr,
                &user,
                &json!({"name": "short runs", "template_id": "three-tier"}),
            )?;
            let body =
                json!({"project_id": project["id"], "duration_s": args.run_seconds, "speed": 0});
            users.push((user, body));
        }
        Ok(users)
    };
    let mut users = new_users(0)?;
    let window = Duration::from_secs_f64(args.run_window);
    let (mut rows, mut per_run) = (Vec::new(), String::new());
    // Runs already stored for these users (all of them ended).
    let mut history = 0;
    for run in 1..=args.runs {
        if fresh && run > 1 {
            users = new_users(run)?;
            history = 0;
        }
        let before = monitor.events().len();
        let from = Instant::now() + Duration::from_secs(2);
        let until = from + window;
        let submits = Arc::new(Mutex::new(Submits::default()));
        let mut threads = Vec::new();
        for (user, body) in &users {
            let (tx, rx) = mpsc::channel();
            monitor
                .state
                .lock()
                .unwrap()
                .routes
                .insert(user.id.clone(), tx);
            let (token, body, submits) = (user.token.clone(), body.clone(), Arc::clone(&submits));
            let (gateway, inflight, cpu) = (server.addr, args.run_inflight, args.client_cpu);
            threads.push(std::thread::spawn(move || {
                pin_current(cpu);
                submitter(gateway, token, body, inflight, until, rx, submits)
            }));
        }
        for t in threads {
            t.join()
                .map_err(|_| anyhow::anyhow!("a submitter panicked"))??;
        }
        let submits = std::mem::take(&mut *submits.lock().unwrap());
        let accepted: HashMap<&str, Instant> = submits
            .accepted
            .iter()
            .map(|(id, t)| (id.as_str(), *t))
            .collect();
        let mine = |e: &SimEvent| ended(e) && accepted.contains_key(e.id.as_str());
        let all_ended = monitor.wait(Duration::from_secs(120), |e| {
            e[before..].iter().filter(|e| mine(e)).count() >= accepted.len()
        });
        monitor.state.lock().unwrap().routes.clear();
        let events = monitor.events()[before..].to_vec();
        let starts: HashMap<&str, Instant> = events
            .iter()
            .filter(|e| e.event == "started")
            .map(|e| (e.id.as_str(), e.at))
            .collect();
        let ends: Vec<&SimEvent> = events.iter().filter(|e| mine(e)).collect();
        let done = ends
            .iter()
            .filter(|e| e.event == "completed" && e.at >= from && e.at < until)
            .count();
        let failed = ends.iter().filter(|e| e.event != "completed").count();
        let (mut total, mut exec) = (Report::new(window), Report::new(window));
        let micros = |d: Duration| (d.as_micros() as u64).clamp(1, Report::MAX_US);
        for e in ends
            .iter()
            .filter(|e| (from..until).contains(&accepted[e.id.as_str()]))
        {
            let _ = total
                .histogram
                .record(micros(e.at - accepted[e.id.as_str()]));
            if let Some(s) = starts.get(e.id.as_str()) {
                let _ = exec
                    .histogram
                    .record(micros(e.at.saturating_duration_since(*s)));
            }
        }
        let per_s = done as f64 / window.as_secs_f64();
        let line = format!(
            "{} run {run}: {per_s:.1} runs/s completed in the window ({history} runs of these users stored before it); accepted {} (all ended: {all_ended}), failed or stopped {failed}, 429 {}, 503 {}, other answers {:?}; submit → completed {} ms; started → completed {} ms",
            label, accepted.len(), submits.too_many, submits.queue_full, submits.other.iter().take(3).collect::<Vec<_>>(), fmt_pcts(&pcts(&total)), fmt_pcts(&pcts(&exec))
        );
        eprintln!("{line}");
        writeln!(per_run, "{line}")?;
        history += accepted.len();
        rows.push((
            per_s,
            submits.too_many,
            submits.queue_full,
            failed,
            total,
            exec,
        ));
    }
    let totals: Vec<Report> = rows.iter().map(|r| r.4.clone()).collect();
    let execs: Vec<Report> = rows.iter().map(|r| r.5.clone()).collect();
    let each: Vec<String> = rows.iter().map(|r| format!("{:.1}", r.0)).collect();
    let row = format!(
        "| {} | **{:.1}** | {} | {} | {} | {} | {} | {} |\n",
        label,
        median(rows.iter().map(|r| r.0).collect()),
        each.join(", "),
        rows.iter().map(|r| r.1).sum::<u64>(),
        rows.iter().map(|r| r.2).sum::<u64>(),
        rows.iter().map(|r| r.3).sum::<usize>(),
        fmt_pcts(&median_pcts(&totals)),
        fmt_pcts(&median_pcts(&execs))
    );
    Ok((row, per_run))
}

pub(super) const RUNS_NOTE: &str = "`POST /api/simulations` checks `simulation.max_runs_per_user` inside its INSERT with `SELECT COUNT(*) FROM simulation_schema.simulations WHERE user_id = $4 AND status IN ('queued', 'running')`, on the one SQLite writer thread. Migration 4 added the partial index `simulations_active` on `(user_id) WHERE status IN ('queued', 'running')`, so the count reads only the user's active runs (a unit test checks SQLite's plan); before it, the count read the user's whole history and runs/s fell as the table grew. The rows \"new users every run\" give every run new accounts, so each run starts with no history of its own (the database still holds the earlier runs): equal figures in both rows mean history does not slow starting a run.";

pub(super) fn runs_header(args: &Args) -> String {
    format!(
        "\n## C. Simulation runs per second (no peer: no other server runs these designs)\n\n{} users, each keeping {} runs queued or running (a new one as soon as the WebSocket reports one of theirs ended; 429 / 503 answers retried after 10 ms), runs of the three-tier template for {} simulated seconds at speed 0, {} s measured after 2 s, on the part B servers (`simulation.max_runs_per_user=1000` and `simulation.max_queued=4096`, so neither limit binds: the counts show it). Completion is seen on `simulation:events:completed` by a WebSocket client of an admin account (made with `sdsim user add --role admin`: the instance-wide feeds are for admins); submit latency from the POST's send time; runs/s counts completions inside the measured window. Medians of {} runs; counts are totals. The same users submit in every run, so each run starts with the runs of the runs before it stored (see the note under the table).\n\n| slice, driver; users | completed runs/s | each run, in order | 429 | 503 | failed or stopped | submit → completed p50 / p99 / p99.9 / max ms | started → completed p50 / p99 / p99.9 / max ms |\n|---|---|---|---|---|---|---|---|\n",
        args.run_users, args.run_inflight, args.run_seconds, args.run_window, args.runs
    )
}
