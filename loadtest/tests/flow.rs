//! Flows against a real sdsim gateway started in this process on 127.0.0.1 (2 shards, SQLite in
//! a temporary directory, rate limiting off): the example journey end to end, with what it
//! created checked through the API as each user; captures that do not match, statuses not
//! expected, refused connects; the arrival schedule; users stopped after the drain.
//! Assertions are on counts only (never on times), so a busy machine cannot fail them.

mod support;

use sdsim_loadtest::flow::{run_flow, FlowLoad, FlowReport};
use sdsim_loadtest::scenario::Scenario;
use sdsim_server::Server;
use serde_json::{json, Value};
use std::net::SocketAddr;
use support::{serial, stop};

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
/// The generator's CPUs: two threads where there are two CPUs (the merge across threads is
/// then part of every test).
fn generator_cpus() -> &'static str {
    if cpus() >= 2 {
        "[0, 1]"
    } else {
        "[0]"
    }
}

/// A flow scenario: `phases` and `steps` (TOML), `{{http}}` the gateway.
fn flow_scenario(server: &Server, phases: &str, flow: &str, steps: &str) -> FlowLoad {
    let text = format!(
        "[load]\ncpus = {}\ninterval = \"1s\"\n{phases}\n[flow]\n{flow}\nvars = {{ http = \"http://{}\" }}\n{steps}",
        generator_cpus(),
        server.local_addr()
    );
    Scenario::parse(&text)
        .and_then(|s| s.flow_load())
        .unwrap_or_else(|e| panic!("{e:#}\n{text}"))
        .unwrap()
}

fn counts(report: &FlowReport, name: &str) -> (u64, u64, u64) {
    let r = report
        .by_name(name)
        .unwrap_or_else(|| panic!("no type {name}"));
    (r.counters.sent, r.counters.completed, r.errors())
}

/// One request on a fresh connection: status and JSON body.
fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let (status, value, _) = sdsim_testing::http::call(addr, method, path, token, body);
    (status, value)
}

#[test]
fn the_journey_runs_every_step_once_per_user_and_its_values_reach_the_server() {
    let _one_at_a_time = serial();
    let server = support::gateway(&[]);
    let addr = server.local_addr();
    // The example file itself, pointed at this gateway: 3 users/s for 2 s.
    let proto = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto");
    let text = include_str!("../scenarios/journey.toml")
        .replace("127.0.0.1:8000", &addr.to_string())
        .replace(
            "127.0.0.1:9000",
            &server.auth_grpc_addr().unwrap().to_string(),
        )
        .replace(
            "127.0.0.1:10000",
            &server.project_grpc_addr().unwrap().to_string(),
        )
        .replace("proto_dir = \"proto\"", &format!("proto_dir = \"{proto}\""))
        .replace("cpus = [1]", &format!("cpus = {}", generator_cpus()))
        .replace(
            "duration = \"30s\"\nrate = 5",
            "duration = \"2s\"\nrate = 3",
        )
        // The run ends as soon as every user is done: a long drain costs nothing, and a busy
        // machine's slow journeys still count as finished.
        .replace("drain = \"10s\"", "drain = \"120s\"");
    let load = Scenario::parse(&text)
        .unwrap()
        .flow_load()
        .unwrap()
        .unwrap();
    assert_eq!(load.flow.drain, std::time::Duration::from_secs(120));
    let users = 6;
    let report = run_flow(&load).unwrap();
    let table = report.table();
    assert_eq!(report.tally.errors(), 0, "{table}");
    let u = report.tally.users;
    assert_eq!(
        (u.started, u.completed, u.failed, u.unfinished),
        (users, users, 0, 0),
        "{table}"
    );
    assert_eq!(report.tally.started_by_phase, vec![users]);
    for step in [
        "register",
        "login",
        "me",
        "ws",
        "templates",
        "create_project",
        "get_project",
        "start_simulation",
        "validate_token",
        "grpc_project",
        "flow",
    ] {
        assert_eq!(counts(&report, step), (users, users, 0), "{step}\n{table}");
        let histogram = &report.by_name(step).unwrap().histogram;
        assert_eq!(histogram.len(), users, "one latency per user: {step}");
    }
    assert!(report.by_name("pause").is_none(), "pauses are not measured");
    // Every user's connection got at least the notification of its run (min_events = 1), and
    // every ping was answered.
    let ws = report.type_index("ws").unwrap();
    assert!(report.tally.events[ws] >= users, "{table}");
    let (sent, completed, _) = counts(&report, "ws.ping");
    assert_eq!(sent, completed, "{table}");

    // What each user made, seen through the API with its own login: one project, made from the
    // template, owned by it, and one run of that project — so the captured token and ids went
    // where they belonged.
    for user in 0..users {
        let email = format!("lt-{}-{user}@example.com", load.run_id);
        let password = format!("correct horse battery staple {user}");
        let (status, tokens) = call(
            addr,
            "POST",
            "/api/auth/login",
            None,
            Some(json!({"email": email, "password": password})),
        );
        assert_eq!(status, 200, "{tokens}");
        let token = tokens["access_token"].as_str().unwrap();
        let id = tokens["user"]["id"].as_str().unwrap();
        let (status, list) = call(addr, "GET", "/api/projects", Some(token), None);
        assert_eq!(status, 200, "{list}");
        let projects = list["projects"].as_array().unwrap();
        assert_eq!(projects.len(), 1, "{list}");
        let project = &projects[0];
        assert_eq!(project["name"], format!("journey {} {user}", load.run_id));
        assert_eq!(project["owner_id"], id);
        assert_eq!(project["template_id"], "three-tier");
        let path = format!(
            "/api/simulations?project_id={}",
            project["id"].as_str().unwrap()
        );
        let (status, runs) = call(addr, "GET", &path, Some(token), None);
        assert_eq!(status, 200, "{runs}");
        let runs = runs["simulations"].as_array().unwrap();
        assert_eq!(runs.len(), 1, "{runs:?}");
        assert_eq!(runs[0]["user_id"], id);
    }
    stop(server);
}

#[test]
fn a_capture_that_does_not_match_ends_the_user_at_its_step() {
    let _one_at_a_time = serial();
    let server = support::gateway(&[]);
    let load = flow_scenario(
        &server,
        "[[phases]]\nduration = \"1s\"\nrate = 4",
        "",
        r#"
        [[flow.steps]]
        name = "health"
        kind = "http"
        url = "{{http}}/health"
        [[flow.steps]]
        name = "lookup"
        kind = "http"
        url = "{{http}}/health"
        capture = { id = "/no/such/field" }
        [[flow.steps]]
        name = "use"
        kind = "http"
        url = "{{http}}/health?id={{id}}"
        "#,
    );
    let report = run_flow(&load).unwrap();
    stop(server);
    let table = report.table();
    assert_eq!(counts(&report, "health"), (4, 4, 0), "{table}");
    assert_eq!(counts(&report, "lookup"), (4, 0, 4), "{table}");
    let lookup = report.by_name("lookup").unwrap();
    assert_eq!(lookup.counters.errors.get("capture_missing"), Some(&4));
    assert_eq!(counts(&report, "use"), (0, 0, 0), "never run: {table}");
    assert_eq!(report.tally.users.failed, 4);
    assert_eq!(report.tally.users.completed, 0);
    assert_eq!(report.tally.failed_by_step, vec![0, 4, 0]);
    assert_eq!(counts(&report, "flow"), (4, 0, 0), "none finished the flow");
}

#[test]
fn statuses_not_expected_and_refused_connects_are_errors_by_kind() {
    let _one_at_a_time = serial();
    let server = support::gateway(&[]);
    let grpc = server.project_grpc_addr().unwrap();
    let proto = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let load = flow_scenario(
        &server,
        "[[phases]]\nduration = \"1s\"\nrate = 3",
        &format!("proto_dir = \"{proto}\""),
        &format!(
            r#"
        [[flow.steps]]
        name = "anonymous"
        kind = "http"
        url = "{{{{http}}}}/api/auth/me"
        expect = [401]
        [[flow.steps]]
        name = "anonymous_grpc"
        kind = "grpc"
        addr = "{grpc}"
        method = "/sdsim.project.v1.ProjectService/ListProjects"
        expect = ["UNAUTHENTICATED"]
        [[flow.steps]]
        name = "me"
        kind = "http"
        url = "{{{{http}}}}/api/auth/me"
        "#
        ),
    );
    let report = run_flow(&load).unwrap();
    let table = report.table();
    assert_eq!(counts(&report, "anonymous"), (3, 3, 0), "{table}");
    assert_eq!(counts(&report, "anonymous_grpc"), (3, 3, 0), "{table}");
    assert_eq!(counts(&report, "me"), (3, 0, 3), "{table}");
    let me = report.by_name("me").unwrap();
    assert_eq!(me.counters.errors.get("status_401"), Some(&3), "{table}");
    assert_eq!(report.tally.failed_by_step, vec![0, 0, 3]);

    // A gRPC status not expected, and a server that is not there.
    let load = flow_scenario(
        &server,
        "[[phases]]\nduration = \"1s\"\nrate = 2",
        &format!("proto_dir = \"{proto}\""),
        &format!(
            r#"
        [[flow.steps]]
        name = "list"
        kind = "grpc"
        addr = "{grpc}"
        method = "/sdsim.project.v1.ProjectService/ListProjects"
        "#
        ),
    );
    let report = run_flow(&load).unwrap();
    let list = report.by_name("list").unwrap();
    assert_eq!(
        list.counters.errors.get("grpc_unauthenticated"),
        Some(&2),
        "{}",
        report.table()
    );
    stop(server);
    let text = format!(
        "[load]\ncpus = [0]\n[[phases]]\nduration = \"1s\"\nrate = 2\n[flow]\n\
         [[flow.steps]]\nname = \"gone\"\nkind = \"http\"\nurl = \"http://{closed}/\"\n"
    );
    let load = Scenario::parse(&text)
        .unwrap()
        .flow_load()
        .unwrap()
        .unwrap();
    let report = run_flow(&load).unwrap();
    let gone = report.by_name("gone").unwrap();
    assert_eq!(
        gone.counters.errors.get("connect_refused"),
        Some(&2),
        "{}",
        report.table()
    );
}

#[test]
fn users_start_exactly_as_the_phases_say_across_threads() {
    let _one_at_a_time = serial();
    let server = support::gateway(&[]);
    // 4 users in the first second, then a ramp from 4/s to 12/s: (4 + 12) / 2 = 8 more.
    let load = flow_scenario(
        &server,
        "[[phases]]\nduration = \"1s\"\nrate = 4\n[[phases]]\nduration = \"1s\"\nrate = 4\nramp_to = 12",
        "",
        r#"
        [[flow.steps]]
        name = "health"
        kind = "http"
        url = "{{http}}/health"
        [[flow.steps]]
        name = "again"
        kind = "http"
        url = "{{http}}/health?u={{user}}&r={{run}}"
        "#,
    );
    let report = run_flow(&load).unwrap();
    stop(server);
    let table = report.table();
    assert_eq!(report.tally.started_by_phase, vec![4, 8], "{table}");
    assert_eq!(report.tally.users.started, 12);
    assert_eq!(report.tally.users.completed, 12, "{table}");
    assert_eq!(counts(&report, "health"), (12, 12, 0));
    assert_eq!(counts(&report, "again"), (12, 12, 0));
    assert_eq!(counts(&report, "flow"), (12, 12, 0));
    assert_eq!(report.threads, load.cpus.len());
}

#[test]
fn users_still_running_after_the_drain_are_counted_unfinished() {
    let _one_at_a_time = serial();
    let server = support::gateway(&[]);
    let load = flow_scenario(
        &server,
        "[[phases]]\nduration = \"1s\"\nrate = 3",
        // Long enough for every user's health request on a busy machine; the think step
        // outlasts any drain.
        "drain = \"2s\"",
        r#"
        [[flow.steps]]
        name = "health"
        kind = "http"
        url = "{{http}}/health"
        [[flow.steps]]
        name = "wait"
        kind = "think"
        duration = "60m"
        "#,
    );
    let report = run_flow(&load).unwrap();
    stop(server);
    let table = report.table();
    let u = report.tally.users;
    assert_eq!((u.started, u.completed, u.unfinished), (3, 0, 3), "{table}");
    assert_eq!(report.tally.unfinished_by_step, vec![0, 3]);
    assert_eq!(counts(&report, "health"), (3, 3, 0));
    assert_eq!(counts(&report, "flow"), (3, 0, 0));
    assert_eq!(
        report.tally.errors(),
        0,
        "unfinished is not an error: {table}"
    );
}
