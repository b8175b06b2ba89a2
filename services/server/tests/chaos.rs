//! Chaos: the load generator's journey (`loadtest/scenarios/journey.toml`: register, log in,
//! WebSocket notifications, a project from a template, a run, gRPC) runs at a fixed rate against
//! two `sdsim serve` processes sharing one PostgreSQL and one Redis while, one at a time, Redis
//! is killed and restarted, PostgreSQL is stopped and restarted, and instance A gets SIGTERM
//! and is replaced by a new process on the same ports, data and `instance.id`.
//!
//! Each instance has its own users (the generator runs one flow per instance, as clients of a
//! load balancer that keeps a client on its gateway): there is no balancer in the test, so A's
//! users fail until A's replacement is up, and B's users show what the survivor does meanwhile.
//! One shard per instance, so the first success after a fault means the instance's only store
//! connection is back.
//!
//! Asserted: every write the client saw accepted (users registered, projects created, runs
//! started — their ids captured from the responses) is a row in PostgreSQL afterwards; no step
//! fails before the first fault, and every failure was in flight during a fault on its instance
//! (from the fault until the component was back and the instance had accepted a write issued
//! after the fault) and is a refusal (503, UNAVAILABLE) or a connection error, never a 500;
//! each instance recovers. Times are measured and printed, never asserted: only hangs (120 s)
//! fail the test.

mod subprocess;

use sdsim_loadtest::flow::{FlowLoad, FlowReport, StepOutcome};
use sdsim_loadtest::scenario::{PhaseSpec, Scenario};
use sdsim_testing::postgres::Postgres;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use subprocess::ledger::Ledger;
use subprocess::{column, Ports, Redis, Sdsim};

/// Users per second arriving at each instance (the journey makes 7 HTTP requests, a WebSocket
/// and 2 gRPC calls per user).
const RATE: f64 = 2.0;
/// How long a dependency stays down.
const DOWN: Duration = Duration::from_secs(2);
/// Successful writes every instance must show after a fault (and after its last failure)
/// before the next fault.
const QUIET_WRITES: usize = 3;

/// The writing steps, what they capture, and the table the row must be in.
const WRITES: [(&str, &str, &str); 3] = [
    ("register", "registered", "auth_schema.users"),
    ("create_project", "project", "project_schema.projects"),
    (
        "start_simulation",
        "simulation",
        "simulation_schema.simulations",
    ),
];

/// Error kinds a fault may cause: refusals while a dependency is down, and the connection
/// errors of a process going away. Anything else (a 500, a 4xx, a timeout) is a defect.
const EXPECTED_KINDS: [&str; 6] = [
    "status_503",
    "grpc_unavailable",
    "connect_refused",
    "connect",
    "io",
    "closed",
];

const INSTANCES: [&str; 2] = ["A", "B"];

/// One fault as it happened.
struct Fault {
    name: &'static str,
    /// Instances it can hurt.
    affects: Vec<usize>,
    /// The fault began (kill, stop or signal sent).
    injected: Instant,
    /// The component was gone (process exited).
    down: Instant,
    /// The component was back (ready again).
    restored: Instant,
    /// Per instance it affects: end of the first successful write issued after `down`.
    recovered: BTreeMap<usize, Instant>,
}

impl Fault {
    /// Until when a failure on `instance` belongs to this fault.
    fn window_end(&self, instance: usize) -> Instant {
        self.restored.max(self.recovered[&instance])
    }
}

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// The example journey pointed at `ports`, users arriving at [`RATE`] until `stop`, their
/// threads on `cpu`, every step's outcome sent to `outcomes`. The register step also captures
/// the new user's id, so the row can be checked.
fn journey(
    ports: Ports,
    cpu: usize,
    outcomes: mpsc::Sender<StepOutcome>,
    stop: Arc<AtomicBool>,
) -> FlowLoad {
    let path = root().join("loadtest/scenarios/journey.toml");
    let mut scenario = Scenario::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let flow = scenario.flow.as_mut().unwrap();
    for (name, value) in [
        ("http", format!("http://127.0.0.1:{}", ports.http)),
        ("ws", format!("ws://127.0.0.1:{}/ws", ports.http)),
        ("auth_grpc", format!("127.0.0.1:{}", ports.auth_grpc)),
        ("project_grpc", format!("127.0.0.1:{}", ports.project_grpc)),
    ] {
        *flow.vars.get_mut(name).expect("journey.toml's vars") = value;
    }
    flow.proto_dir = Some(root().join("proto").to_string_lossy().into_owned());
    let register = flow
        .steps
        .iter_mut()
        .find(|s| s.get("name").and_then(|n| n.as_str()) == Some("register"))
        .expect("a register step");
    let mut capture = toml::Table::new();
    capture.insert("registered".into(), "/user/id".into());
    register.insert("capture".into(), toml::Value::Table(capture));
    // Longer than the test will need: the test ends the arrivals itself.
    scenario.phases = vec![PhaseSpec {
        duration: "10m".into(),
        rate: RATE,
        ramp_to: None,
    }];
    scenario.load.cpus = vec![cpu];
    let mut load = scenario.flow_load().unwrap().unwrap();
    load.outcomes = Some(outcomes);
    load.stop_arrivals = Some(stop);
    load
}

/// Ends the arrivals when dropped, so a failing test does not leave load running.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs `load` on a thread; its outcomes reach `all` tagged with `instance`.
fn drive(
    instance: usize,
    ports: Ports,
    cpu: usize,
    all: mpsc::Sender<(usize, StepOutcome)>,
    stop: &Arc<AtomicBool>,
) -> (Vec<String>, JoinHandle<FlowReport>) {
    let (tx, rx) = mpsc::channel();
    let load = journey(ports, cpu, tx, Arc::clone(stop));
    let names = load.flow.steps.iter().map(|s| s.name.clone()).collect();
    std::thread::spawn(move || {
        for outcome in rx {
            let _ = all.send((instance, outcome));
        }
    });
    let handle = std::thread::spawn(move || sdsim_loadtest::flow::run_flow(&load).unwrap());
    (names, handle)
}

/// Injects a fault into `component` (`inject` returns once it is gone), keeps it down for
/// [`DOWN`], `restore`s it, then waits until every instance in `affects` has a successful write
/// issued after the component went, and every instance has [`QUIET_WRITES`] since its last
/// failure.
fn fault<C>(
    ledger: &mut Ledger,
    name: &'static str,
    affects: Vec<usize>,
    component: &mut C,
    inject: impl FnOnce(&mut C),
    restore: impl FnOnce(&mut C),
) -> Fault {
    let injected = Instant::now();
    inject(component);
    let down = Instant::now();
    std::thread::sleep(DOWN);
    restore(component);
    let restored = Instant::now();
    let recovered = ledger.wait_for(&format!("recovery from {name}"), |l| {
        affects
            .iter()
            .map(|&i| l.first_write_ok(i, down).map(|t| (i, t)))
            .collect::<Option<BTreeMap<_, _>>>()
    });
    ledger.wait_for(&format!("quiet after {name}"), |l| {
        (0..INSTANCES.len())
            .all(|i| l.quiet_writes(i, restored) >= QUIET_WRITES)
            .then_some(())
    });
    Fault {
        name,
        affects,
        injected,
        down,
        restored,
        recovered,
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

#[test]
fn the_journey_survives_redis_and_postgres_restarts_and_a_sigterm_with_no_accepted_write_lost() {
    let mut pg = Postgres::start();
    let mut redis = Redis::start();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let env = |id: &str, cpu: usize| {
        [
            ("SDSIM__STORAGE__URL", pg.url()),
            ("SDSIM__REDIS__URL", redis.url()),
            ("SDSIM__INSTANCE__ID", format!("chaos-{id}")),
            ("SDSIM__RUNTIME__SHARDS", "1".into()),
            ("SDSIM__RUNTIME__CPUS", format!("[{cpu}]")),
            ("SDSIM__RATELIMIT__ENABLED", "false".into()),
            ("SDSIM__SERVER__SHUTDOWN_TIMEOUT", "5s".into()),
        ]
        .map(|(k, v)| (k.to_string(), v))
        .to_vec()
    };
    // One after the other: both would apply the migrations to the empty database at once.
    let mut a = Sdsim::start("a", Ports::free(), env("a", 0));
    let b = Sdsim::start("b", Ports::free(), env("b", 1 % cpus));

    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_drop = StopOnDrop(Arc::clone(&stop));
    let (all, outcomes) = mpsc::channel();
    let (steps, load_a) = drive(0, a.ports, 0, all.clone(), &stop);
    let (_, load_b) = drive(1, b.ports, 1 % cpus, all, &stop);
    let writes = WRITES.map(|w| w.0);
    let mut ledger = Ledger::new(outcomes, steps, &writes, INSTANCES.len());

    // Before any fault: both instances serve the whole journey.
    let calm = Instant::now();
    ledger.wait_for("writes before the first fault", |l| {
        (0..INSTANCES.len())
            .all(|i| l.quiet_writes(i, calm) >= QUIET_WRITES)
            .then_some(())
    });
    let mut faults = Vec::new();
    faults.push(fault(
        &mut ledger,
        "Redis killed, restarted",
        vec![0, 1],
        &mut redis,
        Redis::kill,
        Redis::launch,
    ));
    faults.push(fault(
        &mut ledger,
        "PostgreSQL stopped, restarted",
        vec![0, 1],
        &mut pg,
        Postgres::stop,
        Postgres::launch,
    ));
    let mut exit = None;
    faults.push(fault(
        &mut ledger,
        "SIGTERM to A, new A",
        vec![0],
        &mut a,
        |a| exit = Some(a.sigterm()),
        Sdsim::launch,
    ));
    // A calm stretch after the last fault, then the users still running finish.
    let calm = Instant::now();
    ledger.wait_for("writes after the last fault", |l| {
        (0..INSTANCES.len())
            .all(|i| l.quiet_writes(i, calm) >= QUIET_WRITES)
            .then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    let reports = [load_a.join().unwrap(), load_b.join().unwrap()];
    ledger.drain();

    report_and_check(&ledger, &faults, &reports, &pg.url());
    let exit = exit.unwrap();
    assert!(exit.success(), "A exited with {exit} after SIGTERM");
    drop((a, b));
}

/// Prints the summary table and the rows found, then asserts.
fn report_and_check(ledger: &Ledger, faults: &[Fault], reports: &[FlowReport], url: &str) {
    // Where every failure happened.
    let mut by_fault = vec![BTreeMap::<String, u64>::new(); faults.len()];
    let mut stray = Vec::new();
    for (i, r) in ledger.failures() {
        let kind = r.error.unwrap();
        // The latest fault it overlaps: a slow step can span the end of one fault and the
        // start of the next, and it failed because of the one in effect when it ended.
        let hit = faults.iter().rposition(|f| {
            f.affects.contains(&i) && r.ended >= f.injected && r.issued <= f.window_end(i)
        });
        match hit {
            Some(k) => {
                *by_fault[k]
                    .entry(format!("{}:{kind}", ledger.steps[r.step]))
                    .or_default() += 1
            }
            None => stray.push(format!(
                "instance {} step {} failed ({kind}) outside every fault",
                INSTANCES[i], ledger.steps[r.step]
            )),
        }
    }
    let (baseline, baseline_failed) = ledger.before(faults[0].injected);

    println!("\nchaos: journey at {RATE} users/s per instance, {DOWN:?} down per fault");
    println!(
        "{:<31} {:>4} {:>7} {:>7} {:>16} {:>7}  failures by step:kind",
        "fault", "on", "gone s", "back s", "first write s", "failed"
    );
    println!(
        "{:<31} {:>4} {:>7} {:>7} {:>16} {:>7}",
        "(none: before the first fault)", "A,B", "-", "-", "-", baseline_failed
    );
    for (f, kinds) in faults.iter().zip(&by_fault) {
        let on: Vec<&str> = f.affects.iter().map(|&i| INSTANCES[i]).collect();
        let first_ok: Vec<String> = f
            .recovered
            .iter()
            .map(|(&i, &t)| format!("{}:{}", INSTANCES[i], secs(t - f.injected)))
            .collect();
        println!(
            "{:<31} {:>4} {:>7} {:>7} {:>16} {:>7}  {kinds:?}",
            f.name,
            on.join(","),
            secs(f.down - f.injected),
            secs(f.restored - f.injected),
            first_ok.join(" "),
            kinds.values().sum::<u64>(),
        );
    }
    for (name, r) in INSTANCES.iter().zip(reports) {
        let u = r.tally.users;
        println!(
            "users on {name}: started {} completed {} failed {} unfinished {}",
            u.started, u.completed, u.failed, u.unfinished
        );
    }

    // Every accepted write is a row.
    let mut lost = Vec::new();
    for (step, capture, table) in WRITES {
        let rows: std::collections::BTreeSet<String> =
            column(url, &format!("SELECT id FROM {table}"))
                .into_iter()
                .collect();
        let accepted = ledger.accepted.get(capture).cloned().unwrap_or_default();
        let missing: Vec<&String> = accepted.difference(&rows).collect();
        println!(
            "{step:<17} accepted {:>4}  rows found {:>4}  missing {}",
            accepted.len(),
            accepted.len() - missing.len(),
            missing.len()
        );
        assert!(!accepted.is_empty(), "no {step} was accepted");
        lost.extend(missing.into_iter().map(|id| format!("{table} {id}")));
    }
    let runs = column(
        url,
        "SELECT status || ' ' || COUNT(*) FROM simulation_schema.simulations GROUP BY status ORDER BY status",
    );
    println!("runs by status at the end: {}", runs.join(", "));
    // Nothing stuck: every run ends (its end recorded even if the database was down when it
    // finished). The runs are a few hundred milliseconds long; the bound only catches a hang.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let active = column(
            url,
            "SELECT id || ' ' || status || ' on ' || COALESCE(instance, '?') FROM simulation_schema.simulations WHERE status IN ('queued', 'running')",
        );
        if active.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "runs never recorded as ended: {active:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    assert!(lost.is_empty(), "accepted writes lost: {lost:?}");
    assert!(baseline > 0, "no step ran before the first fault");
    assert_eq!(baseline_failed, 0, "failures before the first fault");
    assert!(stray.is_empty(), "{}", stray.join("\n"));
    let unexpected: Vec<&String> = by_fault
        .iter()
        .flat_map(|k| k.keys())
        .filter(|k| !EXPECTED_KINDS.iter().any(|e| k.ends_with(&format!(":{e}"))))
        .collect();
    assert!(
        unexpected.is_empty(),
        "failures that are not refusals or connection errors: {unexpected:?}"
    );
}
