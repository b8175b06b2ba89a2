//! What-if changes to a running simulation, as a user writes them
//! (`{"op": "set", "component": "api", "field": "instances", "value": 3}`): read from JSON with
//! every problem at its JSON path, checked against the design they change, and written back in
//! the same form (the report's `changes`, which a replay reads again).

use crate::design::{parse_dist, Behavior, Checker, Design, Kind, Problem, MAX_USERS};
use crate::engine::dist::Dist;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sonic_rs::{JsonContainerTrait, JsonValueMutTrait, JsonValueTrait, Value};

/// Most instances a what-if may give a station (each one is a queue the engine keeps).
pub const MAX_INSTANCES: u32 = 1_000;
/// Most workers per instance a what-if may give a station.
pub const MAX_CONCURRENCY: u32 = 100_000;
/// Highest request rate a what-if may give a source (requests per simulated second).
pub const MAX_RATE_PER_S: f64 = 1_000_000.0;
/// Longest latency a what-if fault may add (milliseconds: an hour).
pub const MAX_ADDED_MS: f64 = 3_600_000.0;

/// One change to a running simulation.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A setting of a component takes a new value from now on.
    Set {
        /// The component's id.
        component: String,
        /// The setting and its value.
        setting: Setting,
    },
    /// A fault starts on a station and lasts until a [`Change::Clear`] of that station.
    Fault {
        /// The station's id.
        component: String,
        /// What goes wrong.
        fault: WhatIfFault,
    },
    /// Ends every what-if fault on a station.
    Clear {
        /// The station's id.
        component: String,
    },
}

/// A setting a what-if may change, with its new value.
#[derive(Debug, Clone, PartialEq)]
pub enum Setting {
    /// A station's instances (services, caches, databases).
    Instances(u32),
    /// A station's workers per instance (services, caches, databases, a queue's consumers).
    Concurrency(u32),
    /// A service's service time.
    ServiceTime(DistSpec),
    /// An open-loop source's rate.
    RatePerS(f64),
    /// A closed-loop source's population.
    Users(u32),
}

/// A distribution as the user wrote it (so the change reads back as given) and as parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct DistSpec {
    /// The JSON object, e.g. `{"dist": "exponential", "mean_ms": 50}`.
    pub json: Value,
    /// The distribution it describes.
    pub dist: Dist,
}

/// A fault a what-if may start.
#[derive(Debug, Clone, PartialEq)]
pub enum WhatIfFault {
    /// This many instances go down; their waiting requests fail.
    Crash {
        /// How many.
        instances: u32,
    },
    /// Every service at the station takes this much longer.
    AddLatency {
        /// Milliseconds.
        ms: f64,
    },
    /// The station fails this share of requests.
    ErrorRate {
        /// Probability.
        rate: f64,
    },
}

const SETTINGS: &str = "instances, concurrency, service_time, rate_per_s, users";

impl Change {
    /// The component the change concerns.
    pub fn component(&self) -> &str {
        match self {
            Change::Set { component, .. }
            | Change::Fault { component, .. }
            | Change::Clear { component } => component,
        }
    }

    /// Reads one change at `path` (its form and ranges only; [`Change::check`] then checks
    /// it against a design).
    pub fn from_json(v: &Value, path: &str) -> Result<Change, Vec<Problem>> {
        let mut c = Checker::new();
        let change = read(&mut c, v, path);
        match change {
            Some(change) if c.is_clean() => Ok(change),
            _ => Err(c.into_problems()),
        }
    }

    /// Whether `design` has the component and it has the setting or can take the fault;
    /// the problem names the field at `path`.
    pub fn check(&self, design: &Design, path: &str) -> Result<(), Problem> {
        let id = self.component();
        let problem = |field: &str, message: String| Problem {
            path: format!("{path}.{field}"),
            message,
        };
        let Some(comp) = design.components.iter().find(|c| c.id == id) else {
            return Err(problem(
                "component",
                format!("no component `{id}` in the design"),
            ));
        };
        let settable = settable(&comp.kind);
        match self {
            Change::Set { setting, .. } => {
                let name = setting.name();
                if !settable.contains(&name) {
                    let there = if settable.is_empty() {
                        "nothing".to_string()
                    } else {
                        settable.join(", ")
                    };
                    return Err(problem(
                        "field",
                        format!("`{name}` cannot be set on `{id}` (settable there: {there})"),
                    ));
                }
            }
            Change::Fault { .. } | Change::Clear { .. } => {
                if !matches!(comp.kind, Kind::Station(_)) {
                    return Err(problem(
                        "component",
                        format!("`{id}` has no instances or workers: faults apply to stations"),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Setting {
    /// Its `field` name.
    pub fn name(&self) -> &'static str {
        match self {
            Setting::Instances(_) => "instances",
            Setting::Concurrency(_) => "concurrency",
            Setting::ServiceTime(_) => "service_time",
            Setting::RatePerS(_) => "rate_per_s",
            Setting::Users(_) => "users",
        }
    }
}

/// The settings a component of `kind` takes.
fn settable(kind: &Kind) -> &'static [&'static str] {
    match kind {
        Kind::Source(s) if s.closed.is_some() => &["users"],
        // A scheduled rate is the schedule's to decide.
        Kind::Source(s) if s.schedule.is_none() => &["rate_per_s"],
        Kind::Source(_) | Kind::Balancer(_) => &[],
        Kind::Station(s) => match s.behavior {
            Behavior::Service(_) => &["instances", "concurrency", "service_time"],
            Behavior::Cache(_) | Behavior::Database(_) => &["instances", "concurrency"],
            Behavior::Queue(_) => &["concurrency"],
            Behavior::RateLimiter(_) => &[],
        },
    }
}

/// Reads every change of `list` (the `changes` array at `path`) and checks each against
/// `design`: every problem, each at its JSON path.
pub fn parse_changes(
    list: &Value,
    design: &Design,
    path: &str,
) -> Result<Vec<Change>, Vec<Problem>> {
    let Some(items) = list.as_array() else {
        return Err(vec![Problem {
            path: path.into(),
            message: "must be an array of changes".into(),
        }]);
    };
    let (mut changes, mut problems) = (Vec::new(), Vec::new());
    for (i, item) in items.iter().enumerate() {
        let at = format!("{path}[{i}]");
        match Change::from_json(item, &at).and_then(|c| match c.check(design, &at) {
            Ok(()) => Ok(c),
            Err(p) => Err(vec![p]),
        }) {
            Ok(change) => changes.push(change),
            Err(mut p) => problems.append(&mut p),
        }
    }
    if problems.is_empty() {
        Ok(changes)
    } else {
        Err(problems)
    }
}

/// A required whole number in `lo..=hi` at `path.key`.
fn whole(c: &mut Checker, v: &Value, path: &str, key: &str, what: &str, hi: u32) -> u32 {
    match v.get(key).and_then(|n| n.as_u64()) {
        Some(n) if (1..=u64::from(hi)).contains(&n) => n as u32,
        _ => {
            c.problem(
                &format!("{path}.{key}"),
                format!("{what} must be an integer in 1..={hi}"),
            );
            0
        }
    }
}

/// A required number at `path.key` that `ok` accepts (`range` says which).
fn number(
    c: &mut Checker,
    v: &Value,
    path: &str,
    key: &str,
    what: &str,
    range: &str,
    ok: fn(f64) -> bool,
) -> f64 {
    match v.get(key).and_then(|n| n.as_f64()) {
        Some(n) if n.is_finite() && ok(n) => n,
        _ => {
            c.problem(
                &format!("{path}.{key}"),
                format!("{what} must be a number in {range}"),
            );
            0.0
        }
    }
}

/// A required string at `path.key`.
fn text<'a>(c: &mut Checker, v: &'a Value, path: &str, key: &str, what: &str) -> Option<&'a str> {
    let s = v.get(key).and_then(|s| s.as_str());
    if s.is_none() {
        c.problem(
            &format!("{path}.{key}"),
            format!("missing (required): {what}"),
        );
    }
    s
}

fn read(c: &mut Checker, v: &Value, path: &str) -> Option<Change> {
    if !v.is_object() {
        c.problem(path, "a change is an object with an `op`");
        return None;
    }
    let op = text(c, v, path, "op", "set, fault or clear")?;
    match op {
        "set" => {
            c.unknown_fields(v, path, &["op", "component", "field", "value"]);
            let component = text(c, v, path, "component", "a component id")?.to_string();
            let field = text(c, v, path, "field", SETTINGS)?;
            let at = format!("{path}.value");
            if v.get("value").is_none() {
                c.problem(&at, "missing (required): the new value");
                return None;
            }
            let setting = match field {
                "instances" => {
                    Setting::Instances(whole(c, v, path, "value", "instances", MAX_INSTANCES))
                }
                "concurrency" => {
                    Setting::Concurrency(whole(c, v, path, "value", "concurrency", MAX_CONCURRENCY))
                }
                "users" => Setting::Users(whole(c, v, path, "value", "users", MAX_USERS)),
                "rate_per_s" => Setting::RatePerS(number(
                    c,
                    v,
                    path,
                    "value",
                    "rate_per_s",
                    "(0, 1000000]",
                    |r| r > 0.0 && r <= MAX_RATE_PER_S,
                )),
                "service_time" => {
                    let json = v.get("value")?.clone();
                    let dist = parse_dist(c, &json, &at)?;
                    Setting::ServiceTime(DistSpec { json, dist })
                }
                other => {
                    c.problem(
                        &format!("{path}.field"),
                        format!("unknown field `{other}` (settable: {SETTINGS})"),
                    );
                    return None;
                }
            };
            Some(Change::Set { component, setting })
        }
        "fault" => {
            let action = text(c, v, path, "action", "crash, add_latency or error_rate")?;
            let (key, fault) = match action {
                "crash" => (
                    "instances",
                    WhatIfFault::Crash {
                        instances: whole(c, v, path, "instances", "instances", MAX_INSTANCES),
                    },
                ),
                "add_latency" => (
                    "ms",
                    WhatIfFault::AddLatency {
                        ms: number(c, v, path, "ms", "ms", "(0, 3600000]", |m| {
                            m > 0.0 && m <= MAX_ADDED_MS
                        }),
                    },
                ),
                "error_rate" => (
                    "rate",
                    WhatIfFault::ErrorRate {
                        rate: number(c, v, path, "rate", "rate", "[0, 1]", |r| {
                            (0.0..=1.0).contains(&r)
                        }),
                    },
                ),
                other => {
                    c.problem(
                        &format!("{path}.action"),
                        format!("unknown action `{other}` (crash, add_latency, error_rate)"),
                    );
                    return None;
                }
            };
            c.unknown_fields(v, path, &["op", "action", "component", key]);
            let component = text(c, v, path, "component", "a component id")?.to_string();
            Some(Change::Fault { component, fault })
        }
        "clear" => {
            c.unknown_fields(v, path, &["op", "component"]);
            let component = text(c, v, path, "component", "a component id")?.to_string();
            Some(Change::Clear { component })
        }
        other => {
            c.problem(
                &format!("{path}.op"),
                format!("unknown op `{other}` (set, fault, clear)"),
            );
            None
        }
    }
}

impl Change {
    /// Writes the change's fields in the order they are documented (`op` first), so that a
    /// change always reads back as the same text.
    fn write_fields<M: SerializeMap>(&self, m: &mut M) -> Result<(), M::Error> {
        match self {
            Change::Set { component, setting } => {
                m.serialize_entry("op", "set")?;
                m.serialize_entry("component", component)?;
                m.serialize_entry("field", setting.name())?;
                match setting {
                    Setting::Instances(n) | Setting::Concurrency(n) | Setting::Users(n) => {
                        m.serialize_entry("value", n)
                    }
                    Setting::RatePerS(r) => m.serialize_entry("value", r),
                    Setting::ServiceTime(spec) => m.serialize_entry("value", spec),
                }
            }
            Change::Fault { component, fault } => {
                m.serialize_entry("op", "fault")?;
                let action = match fault {
                    WhatIfFault::Crash { .. } => "crash",
                    WhatIfFault::AddLatency { .. } => "add_latency",
                    WhatIfFault::ErrorRate { .. } => "error_rate",
                };
                m.serialize_entry("action", action)?;
                m.serialize_entry("component", component)?;
                match fault {
                    WhatIfFault::Crash { instances } => m.serialize_entry("instances", instances),
                    WhatIfFault::AddLatency { ms } => m.serialize_entry("ms", ms),
                    WhatIfFault::ErrorRate { rate } => m.serialize_entry("rate", rate),
                }
            }
            Change::Clear { component } => {
                m.serialize_entry("op", "clear")?;
                m.serialize_entry("component", component)
            }
        }
    }
}

impl Serialize for Change {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        self.write_fields(&mut m)?;
        m.end()
    }
}

/// The keys of each distribution, in the order the documentation gives them.
fn dist_keys(name: &str) -> &'static [&'static str] {
    match name {
        "exponential" => &["mean_ms"],
        "constant" => &["ms"],
        "uniform" => &["min_ms", "max_ms"],
        "lognormal" => &["mean_ms", "stddev_ms"],
        "erlang" => &["k", "mean_ms"],
        "empirical" => &["points"],
        _ => &[],
    }
}

impl Serialize for DistSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let name = self.json.get("dist").and_then(|d| d.as_str()).unwrap_or("");
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("dist", name)?;
        for key in dist_keys(name) {
            match self.json.get(*key) {
                Some(points) if *key == "points" => {
                    let list: Vec<Point<'_>> = points
                        .as_array()
                        .map(|a| a.iter().map(Point).collect())
                        .unwrap_or_default();
                    m.serialize_entry(key, &list)?;
                }
                Some(v) => m.serialize_entry(key, v)?,
                None => {}
            }
        }
        m.end()
    }
}

/// A point of an empirical distribution, written `ms` then `weight`.
struct Point<'a>(&'a Value);

impl Serialize for Point<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        for key in ["ms", "weight"] {
            if let Some(v) = self.0.get(key) {
                m.serialize_entry(key, v)?;
            }
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Change {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Change, D::Error> {
        let v = any_value(d)?;
        Change::from_json(&v, "$").map_err(|p| serde::de::Error::custom(&p[0]))
    }
}

/// A JSON value from any deserializer (a sonic-rs value deserializes only from sonic-rs).
fn any_value<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    sonic_rs::to_value(&v).map_err(serde::de::Error::custom)
}

/// A change as it was applied: the simulated time it took effect, then the change's fields.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedChange {
    /// Simulated seconds.
    pub t_s: f64,
    /// The change.
    pub change: Change,
}

impl Serialize for AppliedChange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("t_s", &self.t_s)?;
        self.change.write_fields(&mut m)?;
        m.end()
    }
}

impl<'de> Deserialize<'de> for AppliedChange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<AppliedChange, D::Error> {
        let mut v = any_value(d)?;
        let t_s = v.get("t_s").and_then(|t| t.as_f64());
        let Some(t_s) = t_s.filter(|t| t.is_finite() && *t >= 0.0) else {
            return Err(serde::de::Error::custom(
                "$.t_s: missing (required): simulated seconds ≥ 0",
            ));
        };
        if let Some(o) = v.as_object_mut() {
            o.remove(&"t_s");
        }
        let change = Change::from_json(&v, "$").map_err(|p| serde::de::Error::custom(&p[0]))?;
        Ok(AppliedChange { t_s, change })
    }
}
