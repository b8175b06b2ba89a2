//! Load-test scenario files (`sdsim_loadtest::scenario`) with their flows
//! (`sdsim_loadtest::flow::spec`), resolved without DNS.

use sdsim_loadtest::flow::spec::ResolveError;
use sdsim_loadtest::scenario::{parse_duration, Scenario, TargetProtocol};
use std::net::{Ipv4Addr, SocketAddr};

/// Numeric addresses and `localhost` only: a fuzzer must not send its inputs to a resolver.
fn offline(authority: &str) -> Result<SocketAddr, ResolveError> {
    if let Ok(addr) = authority.parse() {
        return Ok(addr);
    }
    match authority.rsplit_once(':') {
        Some(("localhost", port)) => port
            .parse()
            .map(|port| SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .map_err(|_| ResolveError::BadPort(authority.to_string())),
        _ => Err(ResolveError::Offline(authority.to_string())),
    }
}

/// The sections an error may start with: `load.warmup: ...`, `flow.steps[2] ("login"): ...`.
const SECTIONS: [&str; 4] = ["load", "target", "phases", "flow"];

/// `loadtest_scenario`: a rejection either is the TOML parser's (with its position) or starts
/// with the key at fault; an accepted scenario can be run — its durations parse, its phases are
/// positive, and the run it describes (HTTP, WebSocket or flow) builds.
pub fn file(data: &[u8]) {
    let Some(text) = crate::text(data) else {
        return;
    };
    let scenario = match Scenario::parse_with(text, &offline) {
        Ok(s) => s,
        Err(e) => {
            let message = format!("{e:#}");
            let named = SECTIONS.iter().any(|s| {
                message
                    .strip_prefix(s)
                    .is_some_and(|rest| rest.starts_with(['.', '[', ':', ' ']))
            });
            assert!(
                named || message.starts_with("TOML parse error at line "),
                "the error does not start with a key: {message}"
            );
            return;
        }
    };
    for d in [
        &scenario.load.warmup,
        &scenario.load.duration,
        &scenario.load.interval,
        &scenario.load.timeout,
    ] {
        parse_duration(d).expect("an accepted duration parses");
    }
    for p in &scenario.phases {
        assert!(!parse_duration(&p.duration).expect("parses").is_zero());
        assert!(p.rate > 0.0 && p.rate.is_finite());
        assert!(p.ramp_to.is_none_or(|r| r > 0.0 && r.is_finite()));
    }
    match (&scenario.target, &scenario.flow) {
        (Some(target), None) => match target.protocol {
            TargetProtocol::Http => {
                let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 8000));
                let load = scenario
                    .load(addr, "localhost", "/")
                    .expect("the run builds");
                assert!(!load.interval.is_zero() && !load.timeout.is_zero());
            }
            TargetProtocol::Ws => {
                let options = scenario.ws_options().expect("the run builds");
                assert!(options.is_some());
            }
        },
        (None, Some(flow)) => {
            assert!(!scenario.phases.is_empty());
            let flow = flow
                .compile_with(None, &offline)
                .expect("an accepted flow compiles again");
            assert_eq!(flow.types.last().map(String::as_str), Some("flow"));
            let mut names: Vec<&str> = flow.steps.iter().map(|s| s.name.as_str()).collect();
            let all = names.len();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), all, "step names are distinct");
            assert!(flow.steps.iter().all(|s| !s.timeout.is_zero()));
        }
        _ => panic!("a scenario has a target or a flow, not both or neither"),
    }
}
