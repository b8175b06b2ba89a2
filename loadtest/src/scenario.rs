//! Scenario files (TOML): a target, the load shape, and open-loop phases (constant rates and
//! linear ramps, back to back, with exact boundaries). Unknown keys are errors that name the key.
//!
//! `[target] protocol = "ws"` makes it a WebSocket run instead: the `[target]` keys are the
//! flags of `sdsim-loadtest ws` (`token`, `channel`, `channels`, `connect_rate`, ...), `[load]`
//! gives the connections, CPUs, warm-up, hold (`duration`) and interval; no phases.
//!
//! A `[flow]` instead of a `[target]` makes it a flow run ([`crate::flow`]): users arrive by
//! the phases (rate = users per second) and each runs `[[flow.steps]]`; `[load]` gives only the
//! CPUs and the interval (commented example: `loadtest/scenarios/journey.toml`).

use crate::flow::spec::Resolver;
use crate::flow::{FlowLoad, FlowSpec};
use crate::run::{build_request, HttpLoad, Phase};
use crate::ws::WsOptions;
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

/// A whole scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// What to load (every scenario but a flow).
    pub target: Option<Target>,
    /// Chained steps run by each arriving user (instead of a `[target]`).
    pub flow: Option<FlowSpec>,
    /// How many connections on which CPUs.
    #[serde(default)]
    pub load: LoadShape,
    /// Open-loop phases; none = a closed-loop run of `load.duration`.
    #[serde(default)]
    pub phases: Vec<PhaseSpec>,
    /// `[thresholds]`: pass/fail criteria per line of the table (`run` for a `[target]` run,
    /// `flow` and each step for a flow, the operations for a WebSocket run), e.g.
    /// `login = ["p99 < 200ms", "errors < 1%"]`; see [`crate::thresholds`].
    #[serde(default)]
    pub thresholds: std::collections::BTreeMap<String, Vec<String>>,
}

/// What a scenario loads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetProtocol {
    /// HTTP/1.1 requests (the default).
    #[default]
    Http,
    /// WebSocket connections held open (`sdsim-loadtest ws`).
    Ws,
}

/// `[target]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// `http://host:port/path`, or `ws://host:port/path` with `protocol = "ws"`.
    pub url: String,
    /// `"http"` (default) or `"ws"`.
    #[serde(default)]
    pub protocol: TargetProtocol,
    /// HTTP method (http; default GET).
    pub method: Option<String>,
    /// Extra headers, `"Name: value"` (http).
    pub headers: Option<Vec<String>>,
    /// Request body (http).
    pub body: Option<String>,
    /// Bearer token of the upgrade, `{i}` = connection number (ws).
    pub token: Option<String>,
    /// The channel, or the base name with `channels` (ws).
    pub channel: Option<String>,
    /// Spread the connections over this many channels (ws).
    pub channels: Option<usize>,
    /// New connections per second at most (ws; default 1000).
    pub connect_rate: Option<f64>,
    /// Limit on connect + upgrade + subscribe (ws; default "10s").
    pub connect_timeout: Option<String>,
    /// Events per second the generator publishes (ws).
    pub publish_rate: Option<f64>,
    /// Where to publish (ws; default the server's /api/publish).
    pub publish_url: Option<String>,
    /// Admin token of the publish requests (ws; default `token`).
    pub publish_token: Option<String>,
    /// Publishing connections (ws; default 4).
    pub publish_connections: Option<usize>,
    /// `{"op":"ping"}` per second over all connections (ws).
    pub send_rate: Option<f64>,
    /// Source addresses, e.g. "127.0.0.1-127.0.0.50" (ws).
    pub sources: Option<String>,
}

impl Target {
    /// The keys given that the target's protocol does not use.
    fn misplaced_keys(&self) -> Vec<&'static str> {
        let given = |set: bool, key: &'static str| set.then_some(key);
        match self.protocol {
            TargetProtocol::Http => [
                given(self.token.is_some(), "token"),
                given(self.channel.is_some(), "channel"),
                given(self.channels.is_some(), "channels"),
                given(self.connect_rate.is_some(), "connect_rate"),
                given(self.connect_timeout.is_some(), "connect_timeout"),
                given(self.publish_rate.is_some(), "publish_rate"),
                given(self.publish_url.is_some(), "publish_url"),
                given(self.publish_token.is_some(), "publish_token"),
                given(self.publish_connections.is_some(), "publish_connections"),
                given(self.send_rate.is_some(), "send_rate"),
                given(self.sources.is_some(), "sources"),
            ]
            .into_iter()
            .flatten()
            .collect(),
            TargetProtocol::Ws => [
                given(self.method.is_some(), "method"),
                given(self.headers.is_some(), "headers"),
                given(self.body.is_some(), "body"),
            ]
            .into_iter()
            .flatten()
            .collect(),
        }
    }
}

/// `[load]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoadShape {
    /// Connections in total.
    pub connections: usize,
    /// CPUs for the generator's threads, within the process's affinity mask; empty (the
    /// default): every CPU of that mask.
    pub cpus: Vec<usize>,
    /// Unmeasured warm-up.
    pub warmup: String,
    /// Measured duration of a closed-loop run (phases set their own).
    pub duration: String,
    /// Interval of the progress line and the series.
    pub interval: String,
    /// How long one request may take before it counts as a `timeout` error (HTTP load).
    pub timeout: String,
}

impl Default for LoadShape {
    fn default() -> Self {
        LoadShape {
            connections: 50,
            cpus: Vec::new(),
            warmup: "2s".into(),
            duration: "10s".into(),
            interval: "1s".into(),
            timeout: "10s".into(),
        }
    }
}

/// `[[phases]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseSpec {
    /// How long, e.g. `"30s"`.
    pub duration: String,
    /// Requests per second (at the start, for a ramp).
    pub rate: f64,
    /// Requests per second at the end: a linear ramp.
    pub ramp_to: Option<f64>,
}

/// Why a scenario's duration does not parse; each message quotes the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not a number followed by a unit.
    #[error("`{0}` is not a duration (500ms, 10s, 2m)")]
    Malformed(String),
    /// The unit is none of ms, s and m.
    #[error("unknown unit in `{0}` (ms, s, m)")]
    UnknownUnit(String),
    /// Negative, or too large to be a duration.
    #[error("`{0}` is out of range")]
    OutOfRange(String),
}

/// Parses "500ms", "10s", "2m" or bare seconds.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let v: f64 = number
        .trim()
        .parse()
        .map_err(|_| DurationError::Malformed(text.to_string()))?;
    let secs = match unit {
        "" | "s" => v,
        "ms" => v / 1e3,
        "m" => v * 60.0,
        _ => return Err(DurationError::UnknownUnit(text.to_string())),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(DurationError::OutOfRange(text.to_string()));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl Scenario {
    /// Parses and checks a scenario; errors name the key (and for a flow, the step and the
    /// variable).
    pub fn parse(text: &str) -> anyhow::Result<Scenario> {
        Self::parse_with(text, &crate::flow::spec::resolve)
    }

    /// [`Scenario::parse`] with `resolve` turning the flow steps' `host:port` into addresses.
    pub fn parse_with(text: &str, resolve: &Resolver) -> anyhow::Result<Scenario> {
        let scenario: Scenario = toml::from_str(text)?;
        for (line, list) in &scenario.thresholds {
            for t in list {
                crate::thresholds::Threshold::parse(t)
                    .map_err(|e| anyhow::anyhow!("thresholds.{line}: {e}"))?;
            }
        }
        for (key, value) in [
            ("load.warmup", &scenario.load.warmup),
            ("load.duration", &scenario.load.duration),
            ("load.interval", &scenario.load.interval),
            ("load.timeout", &scenario.load.timeout),
        ] {
            parse_duration(value).map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
        }
        if scenario.load.connections == 0 {
            anyhow::bail!("load.connections: must be at least 1");
        }
        if parse_duration(&scenario.load.interval).is_ok_and(|d| d.is_zero()) {
            anyhow::bail!("load.interval: must be positive");
        }
        if parse_duration(&scenario.load.timeout).is_ok_and(|d| d.is_zero()) {
            anyhow::bail!("load.timeout: must be positive");
        }
        match (&scenario.target, &scenario.flow) {
            (Some(_), Some(_)) => anyhow::bail!(
                "target: a flow scenario names its servers in its steps (no [target])"
            ),
            (None, None) => anyhow::bail!("target: missing ([target], or a [flow])"),
            (None, Some(flow)) => {
                let raw: toml::Table = toml::from_str(text)?;
                let load = raw.get("load").and_then(|l| l.as_table());
                for key in ["connections", "warmup", "duration"] {
                    if load.is_some_and(|l| l.contains_key(key)) {
                        anyhow::bail!(
                            "load.{key}: not used by a flow scenario (users arrive by the phases, \
                             and every one is measured)"
                        );
                    }
                }
                if scenario.phases.is_empty() {
                    anyhow::bail!(
                        "phases: a flow scenario needs [[phases]] (rate = users per second)"
                    );
                }
                flow.compile_with(None, resolve)
                    .map_err(|e| anyhow::anyhow!(e))?;
            }
            (Some(t), None) => scenario.check_target(t)?,
        }
        for (i, p) in scenario.phases.iter().enumerate() {
            let d = parse_duration(&p.duration)
                .map_err(|e| anyhow::anyhow!("phases[{i}].duration: {e}"))?;
            if d.is_zero() {
                anyhow::bail!("phases[{i}].duration: must be positive");
            }
            if !(p.rate > 0.0 && p.rate.is_finite())
                || p.ramp_to.is_some_and(|r| !(r > 0.0 && r.is_finite()))
            {
                anyhow::bail!("phases[{i}]: rate and ramp_to must be positive");
            }
        }
        Ok(scenario)
    }

    fn check_target(&self, t: &Target) -> anyhow::Result<()> {
        if let Some(key) = t.misplaced_keys().first() {
            let protocol = match t.protocol {
                TargetProtocol::Http => "http",
                TargetProtocol::Ws => "ws",
            };
            anyhow::bail!("target.{key}: not used with protocol = \"{protocol}\"");
        }
        if t.protocol == TargetProtocol::Ws {
            if !self.phases.is_empty() {
                anyhow::bail!(
                    "phases: a ws scenario holds its connections for load.duration (no phases)"
                );
            }
            if let Some(d) = &t.connect_timeout {
                parse_duration(d).map_err(|e| anyhow::anyhow!("target.connect_timeout: {e}"))?;
            }
            for (key, value) in [
                ("target.connect_rate", t.connect_rate),
                ("target.publish_rate", t.publish_rate),
                ("target.send_rate", t.send_rate),
            ] {
                if value.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
                    anyhow::bail!("{key}: must be positive");
                }
            }
            if t.channels == Some(0) || t.publish_connections == Some(0) {
                anyhow::bail!("target.channels and target.publish_connections: at least 1");
            }
        }
        Ok(())
    }

    /// The `[target]` (an error for a flow scenario).
    pub fn target(&self) -> anyhow::Result<&Target> {
        self.target
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("a flow scenario has no [target]"))
    }

    /// The flow run of a `[flow]` scenario (`None` for the others): the `.proto` files are
    /// compiled (for gRPC steps) and the servers resolved.
    pub fn flow_load(&self) -> anyhow::Result<Option<FlowLoad>> {
        let Some(spec) = &self.flow else {
            return Ok(None);
        };
        let pool = if spec.has_grpc() {
            let dir = spec.proto_dir.as_deref().unwrap_or("proto");
            Some(crate::grpc::load_pool(std::path::Path::new(dir))?)
        } else {
            None
        };
        let flow = spec
            .compile(pool.as_ref())
            .map_err(|e| anyhow::anyhow!(e))?;
        let interval = parse_duration(&self.load.interval).map_err(|e| anyhow::anyhow!(e))?;
        Ok(Some(FlowLoad::new(
            flow,
            self.phase_list()?,
            crate::cpus::resolve(&self.load.cpus, "load.cpus")?,
            interval,
        )))
    }

    fn phase_list(&self) -> anyhow::Result<Vec<Phase>> {
        let d = |s: &str| parse_duration(s).map_err(|e| anyhow::anyhow!(e));
        self.phases
            .iter()
            .map(|p| {
                Ok(Phase {
                    duration: d(&p.duration)?,
                    rate: p.rate,
                    ramp_to: p.ramp_to,
                })
            })
            .collect()
    }

    /// The WebSocket run of a `protocol = "ws"` scenario (`None` for http).
    pub fn ws_options(&self) -> anyhow::Result<Option<WsOptions>> {
        let Some(t) = &self.target else {
            return Ok(None);
        };
        if t.protocol != TargetProtocol::Ws {
            return Ok(None);
        }
        let d = |s: &str| parse_duration(s).map_err(|e| anyhow::anyhow!(e));
        let defaults = WsOptions::default();
        Ok(Some(WsOptions {
            url: t.url.clone(),
            connections: self.load.connections,
            connect_rate: t.connect_rate.unwrap_or(defaults.connect_rate),
            connect_timeout: match &t.connect_timeout {
                Some(text) => d(text)?,
                None => defaults.connect_timeout,
            },
            duration: d(&self.load.duration)?,
            warmup: d(&self.load.warmup)?,
            channel: t.channel.clone().unwrap_or(defaults.channel),
            channels: t.channels,
            token: t.token.clone(),
            publish_rate: t.publish_rate,
            publish_url: t.publish_url.clone(),
            publish_token: t.publish_token.clone(),
            publish_connections: t
                .publish_connections
                .unwrap_or(defaults.publish_connections),
            send_rate: t.send_rate,
            cpus: crate::cpus::resolve(&self.load.cpus, "load.cpus")?,
            sources: t.sources.clone(),
            interval: d(&self.load.interval)?,
        }))
    }

    /// The run this scenario describes against `addr`.
    pub fn load(&self, addr: SocketAddr, authority: &str, path: &str) -> anyhow::Result<HttpLoad> {
        let d = |s: &str| parse_duration(s).map_err(|e| anyhow::anyhow!(e));
        let phases = self.phase_list()?;
        let duration = if phases.is_empty() {
            d(&self.load.duration)?
        } else {
            phases.iter().map(|p| p.duration).sum()
        };
        let t = self.target()?;
        let method = t.method.as_deref().unwrap_or("GET");
        let headers = t.headers.as_deref().unwrap_or_default();
        let body = t.body.as_deref().unwrap_or_default();
        Ok(HttpLoad {
            addr,
            request: build_request(method, authority, path, headers, body.as_bytes()),
            connections: self.load.connections,
            rate: None,
            duration,
            warmup: d(&self.load.warmup)?,
            cpus: crate::cpus::resolve(&self.load.cpus, "load.cpus")?,
            interval: d(&self.load.interval)?,
            phases,
            protocol: Default::default(),
            timeout: d(&self.load.timeout)?,
        })
    }
}

impl Scenario {
    /// The `[thresholds]` as `--threshold` expressions (`line: criterion`).
    pub fn threshold_texts(&self) -> Vec<String> {
        self.thresholds
            .iter()
            .flat_map(|(line, list)| list.iter().map(move |t| format!("{line}: {t}")))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_phases_and_names_bad_keys() {
        let s = Scenario::parse(
            r#"
            [target]
            url = "http://127.0.0.1:8000/health"
            [load]
            connections = 10
            cpus = [1]
            [[phases]]
            duration = "10s"
            rate = 100
            [[phases]]
            duration = "20s"
            rate = 100
            ramp_to = 500
            "#,
        )
        .unwrap();
        let load = s
            .load(
                "127.0.0.1:8000".parse().unwrap(),
                "127.0.0.1:8000",
                "/health",
            )
            .unwrap();
        assert_eq!(load.duration, Duration::from_secs(30));
        assert_eq!(load.rate_at(5.0), Some(100.0));
        assert_eq!(load.rate_at(20.0), Some(300.0));
        assert_eq!(load.rate_at(99.0), Some(500.0));
        let err =
            Scenario::parse("[target]\nurl = \"http://x\"\n[load]\nconections = 3\n").unwrap_err();
        assert!(err.to_string().contains("conections"), "{err}");
        let err = Scenario::parse(
            "[target]\nurl = \"http://x\"\n[[phases]]\nduration = \"1h\"\nrate = 5\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("phases[0].duration"), "{err}");
        assert_eq!(load.timeout, Duration::from_secs(10), "the default timeout");
        for (timeout, expected) in [
            ("0s", "load.timeout: must be positive"),
            ("soon", "load.timeout: `soon` is not a duration"),
            ("3h", "load.timeout: unknown unit"),
        ] {
            let text = format!("[target]\nurl = \"http://x\"\n[load]\ntimeout = \"{timeout}\"\n");
            let err = Scenario::parse(&text).unwrap_err().to_string();
            assert!(err.contains(expected), "{timeout}: {err}");
        }
    }

    #[test]
    fn ws_scenarios_take_the_ws_flags_and_refuse_http_keys() {
        let s = Scenario::parse(
            r#"
            [target]
            protocol = "ws"
            url = "ws://127.0.0.1:8000/ws"
            token = "user-{i}"
            channels = 4
            connect_rate = 500
            publish_rate = 10
            publish_token = "admin"
            send_rate = 20
            sources = "127.0.0.1-127.0.0.4"
            [load]
            connections = 40
            cpus = [1]
            duration = "5s"
            "#,
        )
        .unwrap();
        let load = s.ws_options().unwrap().unwrap().build().unwrap();
        assert_eq!(load.connections, 40);
        assert_eq!(load.channels.len(), 4);
        assert_eq!(load.channels[3], "simulation:events:loadtest-3");
        assert_eq!(load.sources.len(), 4);
        assert_eq!(load.duration, Duration::from_secs(5));
        let publish = load.publish.unwrap();
        assert_eq!(publish.path, "/api/publish");
        assert_eq!(publish.token.as_deref(), Some("admin"));
        assert_eq!(load.ping_rate, Some(20.0));
        let err =
            Scenario::parse("[target]\nprotocol = \"ws\"\nurl = \"ws://x\"\nmethod = \"POST\"\n")
                .unwrap_err();
        assert!(err.to_string().contains("target.method"), "{err}");
        let err = Scenario::parse("[target]\nurl = \"http://x\"\nsend_rate = 5\n").unwrap_err();
        assert!(err.to_string().contains("target.send_rate"), "{err}");
        let err = Scenario::parse(
            "[target]\nprotocol = \"ws\"\nurl = \"ws://x\"\n[[phases]]\nduration = \"1s\"\nrate = 1\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("phases"), "{err}");
    }

    /// A flow scenario around `steps` (TOML of `[[flow.steps]]`).
    fn flow_file(steps: &str) -> String {
        format!(
            "[load]\ncpus = [0]\n[[phases]]\nduration = \"1s\"\nrate = 2\n\
             [flow]\nvars = {{ base = \"http://127.0.0.1:8000\" }}\n{steps}"
        )
    }

    const LOGIN: &str = r#"
        [[flow.steps]]
        name = "login"
        kind = "http"
        method = "POST"
        url = "{{base}}/api/auth/login"
        body = '{"email":"u{{user}}@example.com"}'
        capture = { token = "/access_token" }
    "#;

    #[test]
    fn flow_scenarios_parse_and_bad_ones_name_the_step_key_and_variable() {
        let good = flow_file(&format!(
            "{LOGIN}
            [[flow.steps]]
            name = \"me\"
            kind = \"http\"
            url = \"{{{{base}}}}/api/auth/me?u={{{{user}}}}\"
            bearer = \"{{{{token}}}}\"
            [[flow.steps]]
            name = \"wait\"
            kind = \"think\"
            duration = \"100ms\""
        ));
        let scenario = Scenario::parse(&good).unwrap();
        let load = scenario.flow_load().unwrap().unwrap();
        assert_eq!(load.flow.types, ["login", "me", "flow"]);
        assert_eq!(load.phases.len(), 1);
        assert!(scenario.ws_options().unwrap().is_none());

        // (what is wrong, the steps that show it, what the error must name)
        let step = |name: &str, kind: &str, keys: &str| {
            format!("[[flow.steps]]\nname = \"{name}\"\nkind = \"{kind}\"\n{keys}\n")
        };
        let cases: Vec<(&str, String, Vec<&str>)> = vec![
            (
                "unknown key",
                step("me", "http", "urll = \"http://127.0.0.1:8000/\""),
                vec!["flow.steps[0] (\"me\")", "urll"],
            ),
            (
                "unknown step kind",
                step("me", "htp", "url = \"http://127.0.0.1:8000/\""),
                vec!["flow.steps[0] (\"me\")", "unknown kind `htp`"],
            ),
            (
                "unknown variable",
                format!(
                    "{LOGIN}{}",
                    step("me", "http", "url = \"{{base}}/x\"\nbearer = \"{{tokn}}\"")
                ),
                vec!["flow.steps[1] (\"me\")", "bearer", "`tokn`"],
            ),
            (
                "a capture used by its own step",
                step(
                    "me",
                    "http",
                    "url = \"{{base}}/{{id}}\"\ncapture = { id = \"/id\" }",
                ),
                vec!["flow.steps[0] (\"me\")", "url", "`id`"],
            ),
            (
                "bad pointer",
                step(
                    "me",
                    "http",
                    "url = \"{{base}}/\"\ncapture = { id = \"user/id\" }",
                ),
                vec!["flow.steps[0] (\"me\")", "capture.id", "JSON pointer"],
            ),
            (
                "bad duration",
                step("wait", "think", "duration = \"5 parsecs\""),
                vec!["flow.steps[0] (\"wait\")", "duration"],
            ),
            (
                "missing url",
                step("me", "http", "method = \"GET\""),
                vec!["flow.steps[0] (\"me\")", "url"],
            ),
            (
                "captured values in a host",
                format!(
                    "{LOGIN}{}",
                    step("me", "http", "url = \"http://{{token}}/\"")
                ),
                vec!["flow.steps[1] (\"me\")", "url", "host:port"],
            ),
            (
                "missing name",
                "[[flow.steps]]\nkind = \"think\"\nduration = \"1s\"\n".to_string(),
                vec!["flow.steps[0]", "name"],
            ),
            (
                "same name twice",
                format!("{LOGIN}{LOGIN}"),
                vec!["flow.steps[1] (\"login\")", "name"],
            ),
            (
                "unknown gRPC status",
                step(
                    "check",
                    "grpc",
                    "addr = \"127.0.0.1:9000\"\nmethod = \"/a.B/C\"\nexpect = [\"FINE\"]",
                ),
                vec!["flow.steps[0] (\"check\")", "expect", "FINE"],
            ),
            (
                "bad ping rate",
                step(
                    "ws",
                    "ws",
                    "url = \"ws://127.0.0.1:8000/ws\"\nping_rate = 0",
                ),
                vec!["flow.steps[0] (\"ws\")", "ping_rate"],
            ),
        ];
        for (what, steps, names) in cases {
            let err = Scenario::parse(&flow_file(&steps))
                .map(|_| ())
                .expect_err(what);
            let text = format!("{err:#}");
            for name in names {
                assert!(text.contains(name), "{what}: `{text}` does not name {name}");
            }
        }
        // Flow-level mistakes name the key.
        let with_target = format!("[target]\nurl = \"http://x\"\n{}", flow_file(LOGIN));
        let err = Scenario::parse(&with_target).unwrap_err();
        assert!(err.to_string().contains("target"), "{err}");
        let err = Scenario::parse(&good.replace("cpus = [0]", "cpus = [0]\nwarmup = \"1s\""))
            .unwrap_err();
        assert!(err.to_string().contains("load.warmup"), "{err}");
        let err = Scenario::parse(&good.replace("rate = 2", "rate = 0")).unwrap_err();
        assert!(err.to_string().contains("phases[0]"), "{err}");
        let err = Scenario::parse("[flow]\nsteps = []\n[[phases]]\nduration = \"1s\"\nrate = 1\n")
            .unwrap_err();
        assert!(err.to_string().contains("flow.steps"), "{err}");
        let err = Scenario::parse(&good.replace("[flow]", "[flow]\ndrian = \"1s\"")).unwrap_err();
        assert!(format!("{err:#}").contains("drian"), "{err:#}");
    }

    #[test]
    fn the_example_scenarios_are_valid() {
        let http = Scenario::parse(include_str!("../scenarios/health-ramp.toml")).unwrap();
        assert!(http.ws_options().unwrap().is_none());
        let ws = Scenario::parse(include_str!("../scenarios/ws-fanout.toml")).unwrap();
        let options = ws.ws_options().unwrap().unwrap();
        assert_eq!(options.connections, 10_000);
        assert_eq!(options.channels, Some(10));
        assert_eq!(options.duration, Duration::from_secs(30));
        let journey = Scenario::parse(include_str!("../scenarios/journey.toml")).unwrap();
        let flow = journey.flow.as_ref().unwrap().compile(None).unwrap();
        assert_eq!(flow.steps.len(), 11);
        assert_eq!(flow.types.last().map(String::as_str), Some("flow"));
        assert!(flow.types.iter().any(|t| t == "ws.ping"));
    }
}
