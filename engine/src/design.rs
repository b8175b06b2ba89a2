//! Design documents: the JSON a user draws, parsed (sonic-rs) and validated into the model the
//! engine runs. Validation collects **every** problem, each with its JSON path
//! (`$.components[2].service_time.mean_ms`), instead of stopping at the first.

mod cache;
mod cost;
mod distribution;
mod dynamics;
mod overload;
mod source;
mod traffic;

pub use crate::engine::kinds::{Balancer, Behavior, Strategy};
pub use cache::{CacheModel, Eviction, Popularity, MAX_KEYS};
pub use cost::Cost;
pub use dynamics::{Autoscale, CallPolicy, Fault, FaultAction};
pub use overload::{Contention, Discipline};
pub use source::{Backoff, BackoffKind, ClientPolicy, ClosedLoop, RetryBudget, MAX_USERS};
pub use traffic::{Arrival, GoodputSettings, Schedule, Slo};

// What the parsers of the component kinds (`crate::engine::kinds`) share with this module.
pub(crate) use cache::parse as parse_cache_model;
pub(crate) use cost::{INSTANCE_FIELD as COST_INSTANCE_FIELD, REQUEST_FIELD as COST_REQUEST_FIELD};
pub(crate) use distribution::parse_dist;
pub(crate) use dynamics::parse_autoscale;
pub(crate) use overload::parse as parse_overload;

use crate::engine::dist::Dist;
use crate::engine::kinds;
use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};
use std::collections::HashMap;
use std::fmt;

/// The newest schema version this engine reads (it reads every version from 1 on; a version-1
/// document gives the same figures as before version 2 existed).
pub const SCHEMA_VERSION: u64 = 2;

/// A validated design.
#[derive(Debug, Clone, PartialEq)]
pub struct Design {
    /// The document's schema version.
    pub version: u64,
    /// Simulated seconds of the whole run, warm-up included.
    pub duration: f64,
    /// Simulated seconds run first and excluded from statistics.
    pub warmup: f64,
    /// Seed of every random stream.
    pub seed: u64,
    /// Stop after this many requests completed end to end (optional).
    pub max_requests: Option<u64>,
    /// Components, in document order; edges refer to indexes.
    pub components: Vec<Component>,
    /// Request class names declared by the sources.
    pub classes: Vec<String>,
    /// Service-level objectives to check.
    pub slos: Vec<Slo>,
    /// Scheduled faults.
    pub faults: Vec<Fault>,
    /// How goodput is measured over time and when a run is called metastable.
    pub goodput: GoodputSettings,
}

/// One component.
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    /// Its `id`.
    pub id: String,
    /// What it does.
    pub kind: Kind,
    /// Its prices (schema version 2), when it has any.
    pub cost: Option<Cost>,
}

/// Component kinds this engine version simulates.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Client traffic.
    Source(Source),
    /// Instances × concurrency workers with queues: a `service`, `api_gateway`, `external`,
    /// `cache`, `cdn`, `database`, `queue` (see [`Behavior`] for what each does).
    Station(Station),
    /// A `load_balancer`: no workers, forwards at once.
    Balancer(Balancer),
}

/// A `source`.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    /// Requests per simulated second.
    pub rate: f64,
    /// Arrival process.
    pub arrival: Arrival,
    /// The component its requests enter.
    pub to: usize,
    /// A rate that changes over time (replaces `rate` when present).
    pub schedule: Option<Schedule>,
    /// Request classes: (index in [`Design::classes`], probability).
    pub classes: Vec<(usize, f64)>,
    /// A closed-loop population instead of an arrival rate.
    pub closed: Option<ClosedLoop>,
    /// The client's timeout and retries; every version-2 source has one (version 1: `None`).
    pub client: Option<ClientPolicy>,
}

/// A station: workers with queues, and what its kind does ([`Behavior`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Station {
    /// Instances; requests are spread round robin, each instance has its own queue.
    pub instances: u32,
    /// Workers per instance sharing that instance's queue.
    pub concurrency: u32,
    /// Service time of one request.
    pub service_time: Dist,
    /// Waiting room per instance (requests beyond it are dropped); `None` = unbounded.
    pub queue_capacity: Option<usize>,
    /// Hand-off routes; the remaining probability completes the request.
    pub routes: Vec<Route>,
    /// Synchronous calls made after the service time, each with its own probability; the
    /// worker is held until the callee's chain answers.
    pub calls: Vec<Route>,
    /// Whether the calls run one after another or all at once.
    pub fanout: Fanout,
    /// What the station does besides serving.
    pub behavior: Behavior,
    /// Probability a request fails here (an error for the caller or the end-to-end count).
    pub error_rate: f64,
    /// A request that waited longer than this is abandoned when a worker frees up.
    pub timeout: Option<f64>,
    /// Instances follow utilisation, when set.
    pub autoscale: Option<Autoscale>,
    /// Service times grow with the requests in service, when set.
    pub contention: Option<Contention>,
    /// The order the waiting room is served in.
    pub discipline: Discipline,
}

/// How a service runs its synchronous calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fanout {
    /// One after another, in the listed order.
    Sequential,
    /// All at once; the worker waits for the last answer.
    Parallel,
}

/// An edge: a hand-off route or a synchronous call.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Target component index.
    pub to: usize,
    /// Probability.
    pub p: f64,
    /// Network latency of the edge, one way (a call pays it there and back).
    pub latency: Option<Dist>,
    /// Applies only to requests of this class (index in [`Design::classes`]).
    pub class: Option<usize>,
    /// Retries, timeout and circuit breaker (calls only).
    pub policy: CallPolicy,
}

/// One problem of a design, at a JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where, e.g. `$.components[1].routes[0].p`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

pub(crate) struct Checker {
    problems: Vec<Problem>,
    /// The document's schema version (fields of later versions are refused).
    version: u64,
}

impl Checker {
    /// A checker of a fragment read against the newest schema (a what-if change).
    pub(crate) fn new() -> Checker {
        Checker {
            problems: Vec::new(),
            version: SCHEMA_VERSION,
        }
    }

    /// The problems found so far.
    pub(crate) fn into_problems(self) -> Vec<Problem> {
        self.problems
    }

    /// Whether no problem was found.
    pub(crate) fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// Fields of schema version 2 in an older document: refused, so a version-1 document
    /// always means what it meant when it was written.
    fn needs_v2(&mut self, obj: &Value, path: &str, keys: &[&str]) {
        if self.version >= 2 {
            return;
        }
        for key in keys {
            if obj.get(*key).is_some() {
                self.problem(
                    &format!("{path}.{key}"),
                    "a schema version 2 field: set \"version\": 2",
                );
            }
        }
    }

    pub(crate) fn problem(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// Keys that are not `allowed`, and keys given twice: the engine reads the first value,
    /// other JSON readers often the last, so a repeated key would mean two different designs.
    pub(crate) fn unknown_fields(&mut self, obj: &Value, path: &str, allowed: &[&str]) {
        if let Some(o) = obj.as_object() {
            let mut seen = std::collections::BTreeSet::new();
            for (key, _) in o.iter() {
                if !allowed.contains(&key) {
                    self.problem(
                        &format!("{path}.{key}"),
                        format!("unknown field (allowed: {})", allowed.join(", ")),
                    );
                } else if !seen.insert(key) {
                    self.problem(&format!("{path}.{key}"), "given more than once");
                }
            }
        }
    }

    /// A number field: required unless `default` is given; must satisfy `ok`.
    pub(crate) fn number(
        &mut self,
        obj: &Value,
        path: &str,
        key: &str,
        default: Option<f64>,
        ok: (&str, fn(f64) -> bool),
    ) -> f64 {
        let at = format!("{path}.{key}");
        match obj.get(key) {
            None => match default {
                Some(d) => d,
                None => {
                    self.problem(&at, "missing (required)");
                    f64::NAN
                }
            },
            Some(v) => match v.as_f64() {
                Some(n) if ok.1(n) => n,
                Some(n) => {
                    self.problem(&at, format!("{n} is not {}", ok.0));
                    f64::NAN
                }
                None => {
                    self.problem(&at, "must be a number");
                    f64::NAN
                }
            },
        }
    }

    pub(crate) fn integer(
        &mut self,
        obj: &Value,
        path: &str,
        key: &str,
        default: u64,
        min: u64,
    ) -> u64 {
        let at = format!("{path}.{key}");
        match obj.get(key) {
            None => default,
            Some(v) => match v.as_u64() {
                Some(n) if n >= min => n,
                _ => {
                    self.problem(&at, format!("must be a whole number ≥ {min}"));
                    default
                }
            },
        }
    }
}

pub(crate) const POSITIVE: (&str, fn(f64) -> bool) =
    ("a positive number", |n| n > 0.0 && n.is_finite());
const NON_NEGATIVE: (&str, fn(f64) -> bool) = ("a number ≥ 0", |n| n >= 0.0 && n.is_finite());
const PROBABILITY: (&str, fn(f64) -> bool) = ("a probability in (0, 1]", |n| n > 0.0 && n <= 1.0);

/// Deepest nesting of arrays and objects in a design document (real designs use about five).
/// The JSON parser recurses once per level with no limit of its own: a deeper document could
/// overflow the stack of the thread parsing it and abort the process (the network layer's
/// limit, `sdsim_net::json::MAX_DEPTH`, is the same and says how deep is safe).
pub const MAX_DEPTH: usize = 32;

/// Where `text` nests arrays and objects deeper than `max` (brackets inside strings do not
/// count), if it does. The same one-pass scan as `sdsim_net::json::check_depth`: this crate
/// does not depend on the network layer.
fn too_deep(text: &[u8], max: usize) -> Option<usize> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (at, &b) in text.iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else if b == b'[' || b == b'{' {
            depth += 1;
            if depth > max {
                return Some(at);
            }
        } else if b == b']' || b == b'}' {
            depth = depth.saturating_sub(1);
        }
    }
    None
}

/// Parses and validates a design document.
pub fn parse(text: &str) -> Result<Design, Vec<Problem>> {
    if let Some(at) = too_deep(text.as_bytes(), MAX_DEPTH) {
        return Err(vec![Problem {
            path: "$".into(),
            message: format!(
                "arrays and objects nested deeper than {MAX_DEPTH} levels (byte {at})"
            ),
        }]);
    }
    let root: Value = sonic_rs::from_str(text).map_err(|e| {
        vec![Problem {
            path: "$".into(),
            message: format!("not valid JSON: {e}"),
        }]
    })?;
    let mut c = Checker {
        problems: Vec::new(),
        version: SCHEMA_VERSION,
    };
    if !root.is_object() {
        c.problem("$", "a design is a JSON object");
        return Err(c.problems);
    }
    c.unknown_fields(
        &root,
        "$",
        &[
            "version",
            "name",
            "description",
            "duration_s",
            "warmup_s",
            "seed",
            "max_requests",
            "components",
            "slos",
            "faults",
            "goodput",
        ],
    );
    // A document without a version is a version-1 document: that is how they were written.
    let version = c.integer(&root, "$", "version", 1, 1);
    if version > SCHEMA_VERSION {
        c.problem(
            "$.version",
            format!(
                "schema version {version} is not supported (this engine reads 1 to {SCHEMA_VERSION})"
            ),
        );
    }
    c.version = version.min(SCHEMA_VERSION);
    c.needs_v2(&root, "$", &["goodput"]);
    let goodput = traffic::parse_goodput(&mut c, &root);
    let duration = c.number(&root, "$", "duration_s", None, POSITIVE);
    let warmup = c.number(&root, "$", "warmup_s", Some(0.0), NON_NEGATIVE);
    let seed = c.integer(&root, "$", "seed", 1, 0);
    let max_requests = root
        .get("max_requests")
        .map(|_| c.integer(&root, "$", "max_requests", 0, 1));

    let Some(list) = root.get("components").and_then(|v| v.as_array()) else {
        c.problem("$.components", "missing (required): an array of components");
        return Err(c.problems);
    };
    if list.is_empty() {
        c.problem("$.components", "needs at least one source and one service");
    }
    // Ids first, so edges can refer to components later in the list.
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut kinds = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let path = format!("$.components[{i}]");
        let id = item
            .get("id")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        if id.is_empty() {
            c.problem(
                &format!("{path}.id"),
                "missing (required): a non-empty string",
            );
        } else if index.insert(id.clone(), i).is_some() {
            c.problem(&format!("{path}.id"), format!("duplicate id `{id}`"));
        }
        kinds.push(
            item.get("kind")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string(),
        );
    }
    // Class names, also before the edges that may be conditioned on them.
    let mut class_names: Vec<String> = Vec::new();
    for item in list.iter() {
        let names = item.get("classes").and_then(|v| v.as_array());
        for class in names.iter().flat_map(|l| l.iter()) {
            if let Some(name) = class.get("name").and_then(|n| n.as_str()) {
                if !class_names.iter().any(|n| n == name) {
                    class_names.push(name.to_string());
                }
            }
        }
    }
    let target = |c: &mut Checker, item: &Value, path: &str, key: &str| -> Option<usize> {
        let at = format!("{path}.{key}");
        match item.get(key).and_then(|v| v.as_str()) {
            None => {
                c.problem(&at, "missing (required): the id of a component");
                None
            }
            Some(name) => match index.get(name) {
                None => {
                    c.problem(&at, format!("unknown component id `{name}`"));
                    None
                }
                Some(&t) if kinds[t] == "source" => {
                    c.problem(
                        &at,
                        format!("`{name}` is a source; requests cannot be sent to it"),
                    );
                    None
                }
                Some(&t) => Some(t),
            },
        }
    };

    let mut components = Vec::new();
    let mut sources = 0;
    for (i, item) in list.iter().enumerate() {
        let path = format!("$.components[{i}]");
        let id = item
            .get("id")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let kind = kinds[i].as_str();
        let built = if kind == "source" {
            sources += 1;
            source::parse(&mut c, item, &path, &target, &class_names)
        } else if let Some(built) = kinds::parse(
            &mut c,
            &kinds::Entry {
                kind,
                item,
                path: &path,
                index: i,
                target: &target,
                classes: &class_names,
            },
        ) {
            built
        } else {
            c.problem(
                &format!("{path}.kind"),
                format!(
                    "unknown kind `{kind}` (source, {})",
                    kinds::NAMES.join(", ")
                ),
            );
            None
        };
        // Sources cost nothing here: their allowed fields refuse the price fields.
        let cost = if kind == "source" {
            None
        } else {
            cost::parse(&mut c, item, &path)
        };
        if let Some(kind) = built {
            components.push(Component { id, kind, cost });
        }
    }
    if sources == 0 && !list.is_empty() {
        c.problem("$.components", "no source: nothing sends requests");
    }
    if warmup.is_finite() && duration.is_finite() && warmup >= duration {
        c.problem(
            "$.warmup_s",
            format!("{warmup} must be shorter than duration_s ({duration})"),
        );
    }
    let ids: Vec<String> = components.iter().map(|c| c.id.clone()).collect();
    let slos = traffic::parse_slos(&mut c, &root, &ids, &class_names);
    let priced: Vec<&str> = components
        .iter()
        .filter(|comp| comp.cost.is_some())
        .map(|comp| comp.id.as_str())
        .collect();
    cost::check_slos(&mut c, &slos, &ids, &priced);
    let faults = dynamics::parse_faults(&mut c, &root, &index, &kinds);
    for (i, comp) in components.iter().enumerate() {
        let Kind::Station(st) = &comp.kind else {
            continue;
        };
        for (k, name) in class_names.iter().enumerate() {
            let total: f64 = st
                .routes
                .iter()
                .filter(|r| r.class.is_none_or(|rc| rc == k))
                .map(|r| r.p)
                .sum();
            if total > 1.0 + 1e-9 {
                c.problem(
                    &format!("$.components[{i}].routes"),
                    format!("probabilities for class `{name}` add up to {total}, more than 1"),
                );
            }
        }
    }
    if !c.problems.is_empty() {
        return Err(c.problems);
    }
    let design = Design {
        version,
        goodput,
        classes: class_names,
        slos,
        faults,
        duration,
        warmup,
        seed,
        max_requests,
        components,
    };
    let trapped = trapped_components(&design);
    if !trapped.is_empty() {
        let names: Vec<&str> = trapped
            .iter()
            .map(|&i| design.components[i].id.as_str())
            .collect();
        return Err(vec![Problem {
            path: format!("$.components[{}].routes", trapped[0]),
            message: format!(
                "requests entering {} can never complete: their routes or calls form a cycle with probability 1",
                names.join(", ")
            ),
        }]);
    }
    Ok(design)
}

pub(crate) type Target<'a> = dyn Fn(&mut Checker, &Value, &str, &str) -> Option<usize> + 'a;

/// Parses `routes` or `calls`: `[{"to", "p", "latency"}]`; returns them and their total p.
pub(crate) fn edges(
    c: &mut Checker,
    item: &Value,
    path: &str,
    key: &str,
    target: &Target<'_>,
    classes: &[String],
) -> (Vec<Route>, f64) {
    let mut out = Vec::new();
    let mut total = 0.0;
    let Some(r) = item.get(key) else {
        return (out, total);
    };
    let Some(list) = r.as_array() else {
        c.problem(
            &format!("{path}.{key}"),
            "must be an array of {\"to\", \"p\"}",
        );
        return (out, total);
    };
    for (j, edge) in list.iter().enumerate() {
        let epath = format!("{path}.{key}[{j}]");
        let allowed: &[&str] = if key == "calls" {
            &[
                "to",
                "p",
                "latency",
                "class",
                "retries",
                "backoff_ms",
                "timeout_ms",
                "breaker",
            ]
        } else {
            &["to", "p", "latency", "class"]
        };
        c.unknown_fields(edge, &epath, allowed);
        let policy = dynamics::parse_policy(c, edge, &epath);
        let class = match edge.get("class").map(|v| v.as_str()) {
            None => None,
            Some(Some(name)) => match classes.iter().position(|n| n == name) {
                Some(k) => Some(k),
                None => {
                    c.problem(
                        &format!("{epath}.class"),
                        format!("unknown request class `{name}`"),
                    );
                    None
                }
            },
            Some(None) => {
                c.problem(&format!("{epath}.class"), "must be a class name");
                None
            }
        };
        let p = c.number(edge, &epath, "p", Some(1.0), PROBABILITY);
        if edge.get("class").is_none() {
            total += if p.is_nan() { 0.0 } else { p };
        }
        let latency = edge
            .get("latency")
            .and_then(|d| parse_dist(c, d, &format!("{epath}.latency")));
        if let Some(to) = target(c, edge, &epath, "to") {
            out.push(Route {
                to,
                p,
                latency,
                class,
                policy,
            });
        }
    }
    (out, total)
}

/// Components from which no request can ever complete (a closed cycle of probability 1).
fn trapped_components(design: &Design) -> Vec<usize> {
    let n = design.components.len();
    let mut can_finish = vec![false; n];
    loop {
        let mut changed = false;
        for (i, comp) in design.components.iter().enumerate() {
            if can_finish[i] {
                continue;
            }
            if let Kind::Station(s) = &comp.kind {
                let total: f64 = s.routes.iter().map(|r| r.p).sum();
                let leaves = total < 1.0 - 1e-9 || s.routes.iter().any(|r| can_finish[r.to]);
                let calls_return = s
                    .calls
                    .iter()
                    .all(|call| call.p < 1.0 || can_finish[call.to]);
                if leaves && calls_return {
                    can_finish[i] = true;
                    changed = true;
                }
            } else if let Kind::Balancer(b) = &comp.kind {
                if b.targets.iter().any(|&t| can_finish[t]) {
                    can_finish[i] = true;
                    changed = true;
                }
            } else {
                can_finish[i] = true;
            }
        }
        if !changed {
            break;
        }
    }
    (0..n).filter(|&i| !can_finish[i]).collect()
}
