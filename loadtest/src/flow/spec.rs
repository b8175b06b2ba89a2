//! The `[flow]` of a scenario file as written ([`FlowSpec`]) and as run ([`Flow`]): steps
//! checked one by one, their templates parsed against the names known at their point of the
//! flow, urls split and resolved, gRPC methods looked up. Every error names the step (index and
//! name) and the key, and for a template the variable.

use super::template::{self, Binding, Scope, Template, RUN_SLOT, USER_SLOT};
use crate::scenario::parse_duration;
use prost_reflect::{DescriptorPool, MessageDescriptor};
use sdsim_net::grpc::Code;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// `[flow]`, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowSpec {
    /// Constants usable as `{{name}}` in every step (substituted when the file is loaded).
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// Limit on one step unless it sets its own `timeout` (default 10s).
    pub timeout: Option<String>,
    /// How long users still running when the phases end may take to finish (default 10s).
    pub drain: Option<String>,
    /// Folder of the `.proto` files gRPC steps use (default `proto`).
    pub proto_dir: Option<String>,
    /// `[[flow.steps]]`, in order; each has `name`, `kind` and the keys of its kind.
    #[serde(default)]
    pub steps: Vec<toml::Table>,
}

/// A flow ready to run.
#[derive(Debug, Clone)]
pub struct Flow {
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// Names of the measured request types: the measured steps, `{ws step}.ping` for ws steps
    /// that ping, and last `flow` (a whole user).
    pub types: Vec<String>,
    /// Slots each user fills: `user`, `run`, then one per captured name.
    pub slots: usize,
    /// Grace time for users still running when the phases end.
    pub drain: Duration,
}

impl Flow {
    /// The type index of `flow` (a whole user).
    pub fn flow_type(&self) -> usize {
        self.types.len() - 1
    }
}

/// One step.
#[derive(Debug, Clone)]
pub struct Step {
    /// Its name in the report.
    pub name: String,
    /// Limit on the step (connect included).
    pub timeout: Duration,
    /// Its request type, `None` for a pause.
    pub measured: Option<usize>,
    /// What it does.
    pub action: Action,
}

/// What a step does.
#[derive(Debug, Clone)]
pub enum Action {
    /// An HTTP/1.1 request on the user's keep-alive connection.
    Http(HttpStep),
    /// A WebSocket connection, subscribed, held for the rest of the flow.
    Ws(WsStep),
    /// A gRPC unary call on the user's HTTP/2 connection.
    Grpc(GrpcStep),
    /// A pause.
    Think(Duration),
}

/// A value taken from a response into a slot.
#[derive(Debug, Clone)]
pub struct Capture {
    /// The variable.
    pub name: String,
    /// Where in the response (JSON pointer).
    pub pointer: String,
    /// The user's slot it goes to.
    pub slot: usize,
}

/// `kind = "http"`.
#[derive(Debug, Clone)]
pub struct HttpStep {
    /// The server.
    pub addr: SocketAddr,
    /// `Host`.
    pub authority: String,
    /// Method, upper case.
    pub method: String,
    /// Path and query.
    pub path: Template,
    /// Header lines, `Name: value`.
    pub headers: Vec<Template>,
    /// The body.
    pub body: Option<Template>,
    /// Statuses that pass (empty: any 2xx).
    pub expect: Vec<u16>,
    /// Values taken from the JSON body.
    pub captures: Vec<Capture>,
}

/// `kind = "ws"`.
#[derive(Debug, Clone)]
pub struct WsStep {
    /// The server.
    pub addr: SocketAddr,
    /// `Host` of the upgrade.
    pub host: String,
    /// Path of the upgrade.
    pub path: Template,
    /// `Authorization: Bearer` of the upgrade.
    pub bearer: Option<Template>,
    /// Channels to subscribe to.
    pub subscribe: Vec<Template>,
    /// How long the connection stays open after the user's last step.
    pub hold: Duration,
    /// Time between two `{"op":"ping"}` while open.
    pub ping_every: Option<Duration>,
    /// Request type of the pings.
    pub ping_type: Option<usize>,
    /// Events the connection must have received before it closes.
    pub min_events: u64,
}

/// `kind = "grpc"`.
#[derive(Debug, Clone)]
pub struct GrpcStep {
    /// The server.
    pub addr: SocketAddr,
    /// `/package.Service/Method`.
    pub path: String,
    /// The request message, JSON.
    pub request: Template,
    /// Metadata, lower-case names.
    pub metadata: Vec<(String, Template)>,
    /// Codes that pass (default OK).
    pub expect: Vec<Code>,
    /// Values taken from the response (proto3 JSON).
    pub captures: Vec<Capture>,
    /// The request and response types, once the `.proto` files are compiled.
    pub messages: Option<(MessageDescriptor, MessageDescriptor)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpSpec {
    method: Option<String>,
    url: String,
    #[serde(default)]
    headers: Vec<String>,
    body: Option<String>,
    bearer: Option<String>,
    expect: Option<Vec<u16>>,
    #[serde(default)]
    capture: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WsSpec {
    url: String,
    bearer: Option<String>,
    #[serde(default)]
    subscribe: Vec<String>,
    hold: Option<String>,
    ping_rate: Option<f64>,
    #[serde(default)]
    min_events: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrpcSpec {
    addr: String,
    method: String,
    request: Option<String>,
    #[serde(default)]
    metadata: Vec<String>,
    bearer: Option<String>,
    expect: Option<Vec<String>>,
    #[serde(default)]
    capture: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ThinkSpec {
    duration: String,
}

/// Every gRPC status code, for `expect`.
const CODES: [Code; 17] = [
    Code::Ok,
    Code::Cancelled,
    Code::Unknown,
    Code::InvalidArgument,
    Code::DeadlineExceeded,
    Code::NotFound,
    Code::AlreadyExists,
    Code::PermissionDenied,
    Code::ResourceExhausted,
    Code::FailedPrecondition,
    Code::Aborted,
    Code::OutOfRange,
    Code::Unimplemented,
    Code::Internal,
    Code::Unavailable,
    Code::DataLoss,
    Code::Unauthenticated,
];

/// The step kinds, for the message of an unknown one.
const KINDS: &str = "http, ws, grpc, think";

impl FlowSpec {
    /// Whether a step is a gRPC call (the `.proto` files are then needed).
    pub fn has_grpc(&self) -> bool {
        self.steps
            .iter()
            .any(|s| s.get("kind").and_then(|k| k.as_str()) == Some("grpc"))
    }

    /// Checks every step and builds the flow; `pool` (the compiled `.proto` files) is needed
    /// only to look the gRPC methods up, and without it they are checked for form only.
    pub fn compile(&self, pool: Option<&DescriptorPool>) -> Result<Flow, FlowError> {
        self.compile_with(pool, &resolve)
    }

    /// [`FlowSpec::compile`] with `resolve` turning each step's `host:port` into an address
    /// (the fuzz targets resolve without DNS).
    pub fn compile_with(
        &self,
        pool: Option<&DescriptorPool>,
        resolve: &Resolver,
    ) -> Result<Flow, FlowError> {
        let invalid = |key: String, message: String| FlowError::Flow { key, message };
        let duration = |key: &str, text: &Option<String>, default: u64| match text {
            Some(t) => parse_duration(t).map_err(|e| invalid(format!("flow.{key}"), e.to_string())),
            None => Ok(Duration::from_secs(default)),
        };
        let timeout = duration("timeout", &self.timeout, 10)?;
        let drain = duration("drain", &self.drain, 10)?;
        if timeout.is_zero() {
            return Err(invalid("flow.timeout".into(), "must be positive".into()));
        }
        let mut scope = Scope::new();
        scope.insert("user".into(), Binding::Slot(USER_SLOT));
        scope.insert("run".into(), Binding::Slot(RUN_SLOT));
        for (name, value) in &self.vars {
            if !template::is_identifier(name) || scope.contains_key(name) {
                return Err(invalid(
                    format!("flow.vars.{name}"),
                    "not a usable name (letters, digits and _; `user` and `run` are built in)"
                        .into(),
                ));
            }
            scope.insert(name.clone(), Binding::Const(value.clone()));
        }
        if self.steps.is_empty() {
            return Err(invalid(
                "flow.steps".into(),
                "a flow needs at least one step".into(),
            ));
        }
        let mut compiler = Compiler {
            scope,
            slots: 2,
            types: Vec::new(),
            names: Vec::new(),
            pool,
            resolve,
        };
        let mut steps = Vec::new();
        for (i, table) in self.steps.iter().enumerate() {
            let step = compiler.step(i, table, timeout)?;
            steps.push(step);
        }
        compiler.types.push("flow".into());
        Ok(Flow {
            steps,
            types: compiler.types,
            slots: compiler.slots,
            drain,
        })
    }
}

/// Why a flow does not compile; the message starts with the key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    /// A key of `[flow]` itself: `flow.timeout`, `flow.drain`, `flow.vars.NAME`, `flow.steps`.
    #[error("{key}: {message}")]
    Flow {
        /// The full key.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// A step: `step` names it (`flow.steps[2] ("login")`), `message` starts with its key.
    #[error("{step}: {message}")]
    Step {
        /// Which step.
        step: String,
        /// The key at fault and what is wrong with it.
        message: String,
    },
}

/// Why a `host:port` was not turned into an address; each message quotes it.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The lookup failed.
    #[error("resolving `{authority}`: {source}")]
    Lookup {
        /// What was looked up.
        authority: String,
        /// The resolver's reason.
        source: std::io::Error,
    },
    /// The lookup found no address.
    #[error("`{0}` has no address")]
    NoAddress(String),
    /// The port is not a number from 0 to 65535.
    #[error("`{0}` has no valid port")]
    BadPort(String),
    /// A resolver that does not use DNS (the fuzz targets') was given a host name.
    #[error("`{0}` is not resolved offline")]
    Offline(String),
}

/// Turns a `host:port` into an address; the error says why not.
pub type Resolver = dyn Fn(&str) -> Result<SocketAddr, ResolveError>;

struct Compiler<'p> {
    scope: Scope,
    slots: usize,
    types: Vec<String>,
    names: Vec<String>,
    pool: Option<&'p DescriptorPool>,
    resolve: &'p Resolver,
}

/// Where an error is: `flow.steps[2] ("login")`.
fn at(i: usize, name: Option<&str>) -> String {
    match name {
        Some(n) => format!("flow.steps[{i}] (\"{n}\")"),
        None => format!("flow.steps[{i}]"),
    }
}

impl Compiler<'_> {
    fn step(
        &mut self,
        i: usize,
        table: &toml::Table,
        default_timeout: Duration,
    ) -> Result<Step, FlowError> {
        let mut rest = table.clone();
        let text = |rest: &mut toml::Table, key: &str| -> Result<Option<String>, String> {
            match rest.remove(key) {
                None => Ok(None),
                Some(toml::Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(format!("{key}: must be a string")),
            }
        };
        let unnamed = |message: String| FlowError::Step {
            step: at(i, None),
            message,
        };
        let name = text(&mut rest, "name").map_err(unnamed)?;
        let name = name.ok_or_else(|| unnamed("missing key `name`".into()))?;
        let here = at(i, Some(&name));
        let fail = |message: String| FlowError::Step {
            step: here.clone(),
            message,
        };
        if name.is_empty()
            || name == "flow"
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(fail(
                "name: letters, digits, `_` and `-` only, and not `flow`".into(),
            ));
        }
        if self.names.contains(&name) {
            return Err(fail("name: another step has this name".into()));
        }
        self.names.push(name.clone());
        let kind = text(&mut rest, "kind").map_err(fail)?;
        let kind = kind.ok_or_else(|| fail(format!("missing key `kind` ({KINDS})")))?;
        let timeout = match text(&mut rest, "timeout").map_err(fail)? {
            Some(t) => parse_duration(&t)
                .map_err(|e| fail(format!("timeout: {e}")))
                .and_then(|d| {
                    if d.is_zero() {
                        Err(fail("timeout: must be positive".into()))
                    } else {
                        Ok(d)
                    }
                })?,
            None => default_timeout,
        };
        let spec = |rest: toml::Table| toml::Value::Table(rest);
        let action = match kind.as_str() {
            "http" => {
                let s: HttpSpec = spec(rest).try_into().map_err(|e| fail(de_error(e)))?;
                Action::Http(self.http(s).map_err(fail)?)
            }
            "ws" => {
                let s: WsSpec = spec(rest).try_into().map_err(|e| fail(de_error(e)))?;
                Action::Ws(self.ws(s).map_err(fail)?)
            }
            "grpc" => {
                let s: GrpcSpec = spec(rest).try_into().map_err(|e| fail(de_error(e)))?;
                Action::Grpc(self.grpc(s).map_err(fail)?)
            }
            "think" => {
                let s: ThinkSpec = spec(rest).try_into().map_err(|e| fail(de_error(e)))?;
                let d = parse_duration(&s.duration).map_err(|e| fail(format!("duration: {e}")))?;
                Action::Think(d)
            }
            other => return Err(fail(format!("unknown kind `{other}` ({KINDS})"))),
        };
        let measured = if matches!(action, Action::Think(_)) {
            None
        } else {
            self.types.push(name.clone());
            Some(self.types.len() - 1)
        };
        // A ws step's ping type comes after its own.
        let action = match action {
            Action::Ws(mut ws) if ws.ping_every.is_some() => {
                self.types.push(format!("{name}.ping"));
                ws.ping_type = Some(self.types.len() - 1);
                Action::Ws(ws)
            }
            other => other,
        };
        Ok(Step {
            name,
            timeout,
            measured,
            action,
        })
    }

    fn template(&self, key: &str, text: &str) -> Result<Template, String> {
        Template::parse(text, &self.scope).map_err(|e| format!("{key}: {e}"))
    }

    /// A url's address and `Host`, and its path as a template. The host and port may use
    /// `[flow.vars]` but not captured values: they are resolved once, when the file is loaded.
    fn url(&self, text: &str, scheme: &str) -> Result<(SocketAddr, String, Template), String> {
        let t = self.template("url", text)?;
        let lead = t.leading_text();
        let Some(rest) = lead
            .strip_prefix(scheme)
            .and_then(|r| r.strip_prefix("://"))
        else {
            return Err(format!("url: `{text}` is not a {scheme}:// url"));
        };
        let authority_len = match rest.find('/') {
            Some(n) => n,
            None if t.is_constant() => rest.len(),
            None => {
                return Err(format!(
                    "url: the host:port of `{text}` must not use captured values (only [flow.vars])"
                ))
            }
        };
        let authority = &rest[..authority_len];
        let addr = (self.resolve)(authority).map_err(|e| format!("url: {e}"))?;
        let mut path = t.without_prefix(scheme.len() + 3 + authority_len);
        if path.render(&[]).is_empty() && path.is_constant() {
            path = Template::parse("/", &Scope::new()).map_err(|e| e.to_string())?;
        }
        Ok((addr, authority.to_string(), path))
    }

    /// Parses `capture = { name = "/pointer" }` and makes the names known to later steps.
    fn captures(&mut self, table: &BTreeMap<String, String>) -> Result<Vec<Capture>, String> {
        let mut out = Vec::new();
        for (name, pointer) in table {
            let key = format!("capture.{name}");
            template::check_pointer(pointer).map_err(|e| format!("{key}: {e}"))?;
            let slot = match self.scope.get(name) {
                Some(Binding::Slot(s)) if *s != USER_SLOT && *s != RUN_SLOT => *s,
                None if template::is_identifier(name) => {
                    self.slots += 1;
                    self.slots - 1
                }
                _ => {
                    return Err(format!(
                        "{key}: not a name a capture can take (letters, digits and _; not `user`, `run` or a [flow.vars] name)"
                    ))
                }
            };
            out.push(Capture {
                name: name.clone(),
                pointer: pointer.clone(),
                slot,
            });
        }
        // Known only after the step: a step cannot use what it captures itself.
        for c in &out {
            self.scope.insert(c.name.clone(), Binding::Slot(c.slot));
        }
        Ok(out)
    }

    fn http(&mut self, s: HttpSpec) -> Result<HttpStep, String> {
        let method = s
            .method
            .unwrap_or_else(|| "GET".into())
            .to_ascii_uppercase();
        if method.is_empty() || !method.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(format!("method: `{method}` is not an HTTP method"));
        }
        let (addr, authority, path) = self.url(&s.url, "http")?;
        let mut headers = Vec::new();
        for (n, h) in s.headers.iter().enumerate() {
            if !h.contains(':') {
                return Err(format!("headers[{n}]: `{h}` is not `Name: value`"));
            }
            headers.push(self.template(&format!("headers[{n}]"), h)?);
        }
        if let Some(b) = &s.bearer {
            headers.push(self.template("bearer", &format!("Authorization: Bearer {b}"))?);
        }
        let has_type = s
            .headers
            .iter()
            .any(|h| h.to_ascii_lowercase().starts_with("content-type:"));
        if s.body.is_some() && !has_type {
            headers.push(self.template("body", "Content-Type: application/json")?);
        }
        let body = s
            .body
            .as_deref()
            .map(|b| self.template("body", b))
            .transpose()?;
        let expect = s.expect.unwrap_or_default();
        if let Some(bad) = expect.iter().find(|c| !(100..=599).contains(*c)) {
            return Err(format!("expect: {bad} is not an HTTP status"));
        }
        let captures = self.captures(&s.capture)?;
        Ok(HttpStep {
            addr,
            authority,
            method,
            path,
            headers,
            body,
            expect,
            captures,
        })
    }

    fn ws(&mut self, s: WsSpec) -> Result<WsStep, String> {
        let (addr, host, path) = self.url(&s.url, "ws")?;
        let subscribe = s
            .subscribe
            .iter()
            .enumerate()
            .map(|(n, c)| self.template(&format!("subscribe[{n}]"), c))
            .collect::<Result<Vec<_>, _>>()?;
        let hold = match &s.hold {
            Some(h) => parse_duration(h).map_err(|e| format!("hold: {e}"))?,
            None => Duration::ZERO,
        };
        let ping_every = match s.ping_rate {
            Some(r) if r > 0.0 && r.is_finite() => Some(Duration::from_secs_f64(1.0 / r)),
            Some(_) => return Err("ping_rate: must be positive".into()),
            None => None,
        };
        Ok(WsStep {
            addr,
            host,
            path,
            bearer: s
                .bearer
                .as_deref()
                .map(|b| self.template("bearer", b))
                .transpose()?,
            subscribe,
            hold,
            ping_every,
            ping_type: None,
            min_events: s.min_events,
        })
    }

    fn grpc(&mut self, s: GrpcSpec) -> Result<GrpcStep, String> {
        let addr_template = self.template("addr", &s.addr)?;
        if !addr_template.is_constant() {
            return Err("addr: must not use captured values (only [flow.vars])".into());
        }
        let addr = (self.resolve)(&addr_template.render(&[])).map_err(|e| format!("addr: {e}"))?;
        let path = format!("/{}", s.method.trim_start_matches('/'));
        if path[1..].split('/').count() != 2 || path.ends_with('/') {
            return Err(format!(
                "method: `{}` is not /package.Service/Method",
                s.method
            ));
        }
        let mut metadata = Vec::new();
        for (n, m) in s.metadata.iter().enumerate() {
            let key = format!("metadata[{n}]");
            let (name, value) = m
                .split_once(':')
                .ok_or_else(|| format!("{key}: `{m}` is not `name: value`"))?;
            let name = name.trim().to_ascii_lowercase();
            http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("{key}: `{name}` is not a metadata name"))?;
            metadata.push((name, self.template(&key, value.trim())?));
        }
        if let Some(b) = &s.bearer {
            metadata.push((
                "authorization".into(),
                self.template("bearer", &format!("Bearer {b}"))?,
            ));
        }
        let mut expect = Vec::new();
        for name in s.expect.unwrap_or_else(|| vec!["OK".into()]) {
            let code = CODES
                .iter()
                .find(|c| code_name(**c).eq_ignore_ascii_case(&name))
                .ok_or_else(|| format!("expect: `{name}` is not a gRPC status (OK, NOT_FOUND, UNAUTHENTICATED, ...)"))?;
            expect.push(*code);
        }
        let request = self.template("request", s.request.as_deref().unwrap_or("{}"))?;
        let messages = match self.pool {
            Some(pool) => {
                let method =
                    crate::grpc::unary_method(pool, &path).map_err(|e| format!("method: {e:#}"))?;
                if request.is_constant() {
                    crate::grpc::encode_json(&method.input(), &request.render(&[]))
                        .map_err(|e| format!("request: {e:#}"))?;
                }
                Some((method.input(), method.output()))
            }
            None => None,
        };
        let captures = self.captures(&s.capture)?;
        Ok(GrpcStep {
            addr,
            path,
            request,
            metadata,
            expect,
            captures,
            messages,
        })
    }
}

/// The status's name as gRPC writes it (`OK`, `NOT_FOUND`, ...).
pub fn code_name(code: Code) -> String {
    crate::run::grpc_error_kind(code)
        .trim_start_matches("grpc_")
        .to_ascii_uppercase()
}

/// The system resolver (DNS): the first address of `authority`.
pub fn resolve(authority: &str) -> Result<SocketAddr, ResolveError> {
    authority
        .to_socket_addrs()
        .map_err(|source| ResolveError::Lookup {
            authority: authority.to_string(),
            source,
        })?
        .next()
        .ok_or_else(|| ResolveError::NoAddress(authority.to_string()))
}

/// A deserialisation error of a step's keys, without the position (the step is named instead).
fn de_error(e: toml::de::Error) -> String {
    e.message().trim().to_string()
}
