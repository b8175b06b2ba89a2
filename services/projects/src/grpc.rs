//! `sdsim.project.v1.ProjectService` and `sdsim.simulation.v1.SimulationService` over the sdsim
//! gRPC server, and the conversions between the services' types and the contracts' messages
//! (shared with [`crate::api`], the client side).
//!
//! Every call is authenticated from its `authorization: Bearer` metadata (see
//! [`crate::Principal`]); failures carry an `ErrorInfo` reason and, for bad input, a
//! `BadRequest` with every field or design path, so a remote caller rebuilds the same
//! [`Failure`] the service produced.

use crate::projects::{
    Change, Filter, Member, NewProject, Project, Projects, Role, TemplateInfo, Version,
};
use crate::simulations::{Results, Run, Simulations, StartRequest};
use crate::{Caller, DesignProblem, Failure, Principal, VerifyToken};
use sdsim_core::bus::{Bus, Event, Sink};
use sdsim_net::grpc::{Call, Code, Services, Status, Stream};
use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Generated contract types.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    /// `sdsim.project.v1`.
    pub mod project {
        include!(concat!(env!("OUT_DIR"), "/sdsim.project.v1.rs"));
    }
    /// `sdsim.simulation.v1`.
    pub mod simulation {
        include!(concat!(env!("OUT_DIR"), "/sdsim.simulation.v1.rs"));
    }
}

use pb::project as pp;
use pb::simulation as ps;

/// The project service's gRPC name.
pub const PROJECT_SERVICE: &str = "sdsim.project.v1.ProjectService";
/// The simulation service's gRPC name.
pub const SIMULATION_SERVICE: &str = "sdsim.simulation.v1.SimulationService";
/// `ErrorInfo.domain` of every failure.
pub const DOMAIN: &str = "sdsim";
/// Metadata a service principal sets to forward the user's permissions (comma-separated).
pub const USER_PERMISSIONS: &str = "sdsim-user-permissions";
/// Metadata a service principal sets (`true`) when the user is an administrator.
pub const USER_ADMIN: &str = "sdsim-user-admin";

// ---- failures ----

/// The gRPC status of a failure, with its reason and field violations.
pub fn status_of(f: &Failure) -> Status {
    let (code, reason) = match f {
        Failure::Invalid { .. } => (Code::InvalidArgument, "INVALID_ARGUMENT"),
        Failure::Design(_) => (Code::InvalidArgument, "INVALID_DESIGN"),
        Failure::Forbidden(_) => (Code::PermissionDenied, "FORBIDDEN"),
        Failure::NotFound(_) => (Code::NotFound, "NOT_FOUND"),
        Failure::Conflict(_) => (Code::FailedPrecondition, "CONFLICT"),
        Failure::QueueFull(_) => (Code::ResourceExhausted, "QUEUE_FULL"),
        Failure::TooMany(_) => (Code::ResourceExhausted, "TOO_MANY_RUNS"),
        Failure::Unavailable(_) => (Code::Unavailable, "UNAVAILABLE"),
        Failure::TooLarge(_) => (Code::ResourceExhausted, "TOO_LARGE"),
        Failure::Timeout(_) => (Code::DeadlineExceeded, "TIMEOUT"),
    };
    let status = Status::new(code, f.to_string()).with_reason(DOMAIN, reason);
    match f {
        Failure::Invalid { field, message } => {
            status.with_violations([(field.as_ref(), message.as_str())])
        }
        Failure::Design(problems) => status.with_violations(
            problems
                .iter()
                .map(|p| (p.path.as_str(), p.message.as_str())),
        ),
        _ => status,
    }
}

/// The failure a status stands for (the inverse of [`status_of`]; statuses from elsewhere —
/// a transport error, a deadline — become `Unavailable`).
pub fn failure_of(s: &Status) -> Failure {
    let violations = s.violations();
    let message = s.message.clone();
    match s.reason().as_deref() {
        Some("INVALID_DESIGN") => Failure::Design(
            violations
                .into_iter()
                .map(|v| DesignProblem {
                    path: v.field,
                    message: v.description,
                })
                .collect(),
        ),
        Some("INVALID_ARGUMENT") => match violations.into_iter().next() {
            Some(v) => Failure::Invalid {
                field: v.field.into(),
                message: v.description,
            },
            None => Failure::Invalid {
                field: "request".into(),
                message,
            },
        },
        Some("FORBIDDEN") => Failure::Forbidden(message),
        Some("NOT_FOUND") => Failure::NotFound(message),
        Some("CONFLICT") => Failure::Conflict(message),
        Some("QUEUE_FULL") => Failure::QueueFull(message),
        Some("TOO_MANY_RUNS") => Failure::TooMany(message),
        Some("UNAVAILABLE") => Failure::Unavailable(message),
        Some("TOO_LARGE") => Failure::TooLarge(message),
        Some("TIMEOUT") => Failure::Timeout(message),
        _ => match s.code {
            Code::InvalidArgument => Failure::Invalid {
                field: "request".into(),
                message,
            },
            Code::NotFound => Failure::NotFound(message),
            Code::PermissionDenied | Code::Unauthenticated => Failure::Forbidden(message),
            _ => Failure::Unavailable(format!("{:?}: {message}", s.code)),
        },
    }
}

fn required(value: String, field: &'static str) -> Result<String, Status> {
    if value.is_empty() {
        Err(status_of(&Failure::Invalid {
            field: field.into(),
            message: "is required".into(),
        }))
    } else {
        Ok(value)
    }
}

// ---- authentication ----

/// The caller of a call: the token's user, or — for a service principal — the request's
/// `user_id` with the forwarded permissions.
pub fn caller_of(call: &Call, verify: &VerifyToken, user_id: &str) -> Result<Caller, Status> {
    let header = |name: &str| call.metadata.get(name).and_then(|v| v.to_str().ok());
    let token = header("authorization")
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Status::new(
                Code::Unauthenticated,
                "authorization: a Bearer token is required",
            )
        })?;
    let principal = verify(token)
        .map_err(|why| Status::new(Code::Unauthenticated, format!("authorization: {why}")))?;
    match principal {
        Principal::Service => {
            if user_id.is_empty() {
                return Err(status_of(&Failure::Invalid {
                    field: "user_id".into(),
                    message: "a service token acts for a user: user_id is required".into(),
                }));
            }
            let perms: Vec<String> = header(USER_PERMISSIONS)
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect();
            Ok(Caller {
                user_id: user_id.into(),
                is_admin: header(USER_ADMIN) == Some("true"),
                perms: perms.into(),
            })
        }
        Principal::User(caller) => {
            if !user_id.is_empty() && user_id != &*caller.user_id {
                return Err(Status::new(
                    Code::PermissionDenied,
                    "user_id: a user's token acts only for that user",
                ));
            }
            Ok(caller)
        }
    }
}

// ---- conversions ----

/// The contract's role.
pub fn role_pb(role: Role) -> pp::ProjectRole {
    match role {
        Role::Viewer => pp::ProjectRole::Viewer,
        Role::Editor => pp::ProjectRole::Editor,
        Role::Owner => pp::ProjectRole::Owner,
    }
}

/// The role of a contract value (`None` for UNSPECIFIED or unknown values).
pub fn role_of(value: i32) -> Option<Role> {
    match pp::ProjectRole::try_from(value).ok()? {
        pp::ProjectRole::Viewer => Some(Role::Viewer),
        pp::ProjectRole::Editor => Some(Role::Editor),
        pp::ProjectRole::Owner => Some(Role::Owner),
        pp::ProjectRole::Unspecified => None,
    }
}

/// JSON text of a value; empty for null (an absent document).
fn json_text(v: &Value) -> String {
    if v.is_null() {
        String::new()
    } else {
        v.to_string()
    }
}

/// The value of JSON text; null for empty text.
fn json_value(text: &str, field: &'static str) -> Result<Value, Failure> {
    if text.is_empty() {
        return Ok(Value::default());
    }
    sdsim_net::json::decode(text.as_bytes()).map_err(|e| Failure::Invalid {
        field: field.into(),
        message: format!("not JSON: {e}"),
    })
}

/// A project as a message.
pub fn project_pb(p: &Project) -> pp::Project {
    pp::Project {
        id: p.id.clone(),
        owner_id: p.owner_id.clone(),
        name: p.name.clone(),
        description: p.description.clone(),
        design_json: json_text(&p.design),
        version: p.version,
        created_at: p.created_at,
        updated_at: p.updated_at,
        my_role: role_pb(p.role) as i32,
        template_id: p.template_id.clone().unwrap_or_default(),
        settings_json: json_text(&p.settings),
    }
}

/// A project from a message.
pub fn project_of(p: pp::Project) -> Result<Project, Failure> {
    Ok(Project {
        design: json_value(&p.design_json, "design_json")?,
        settings: json_value(&p.settings_json, "settings_json")?,
        role: role_of(p.my_role).unwrap_or(Role::Viewer),
        template_id: (!p.template_id.is_empty()).then_some(p.template_id),
        id: p.id,
        name: p.name,
        description: p.description,
        owner_id: p.owner_id,
        version: p.version,
        created_at: p.created_at,
        updated_at: p.updated_at,
    })
}

/// A member as a message.
pub fn member_pb(m: &Member) -> pp::ProjectMember {
    pp::ProjectMember {
        user_id: m.user_id.clone(),
        email: m.email.clone(),
        role: role_pb(m.role) as i32,
        added_at: m.added_at,
    }
}

/// A member from a message.
pub fn member_of(m: pp::ProjectMember) -> Member {
    Member {
        role: role_of(m.role).unwrap_or(Role::Viewer),
        user_id: m.user_id,
        email: m.email,
        added_at: m.added_at,
    }
}

/// A template as a message.
pub fn template_pb(t: &TemplateInfo) -> pp::Template {
    pp::Template {
        id: t.id.clone(),
        name: t.name.clone(),
        description: t.description.clone(),
        kind: t.kind.into(),
        design_json: t.design.as_ref().map(json_text).unwrap_or_default(),
        category: t.category.clone(),
        components: t.components as i32,
    }
}

/// A template from a message.
pub fn template_of(t: pp::Template) -> Result<TemplateInfo, Failure> {
    Ok(TemplateInfo {
        kind: if t.kind == "system" { "system" } else { "user" },
        design: if t.design_json.is_empty() {
            None
        } else {
            Some(json_value(&t.design_json, "design_json")?)
        },
        id: t.id,
        name: t.name,
        description: t.description,
        category: t.category,
        components: t.components.max(0) as usize,
    })
}

/// A version as a message.
pub fn version_pb(v: &Version) -> pp::Version {
    pp::Version {
        version: v.version,
        author_id: v.author_id.clone(),
        created_at: v.created_at,
        summary_json: json_text(&v.summary),
    }
}

/// A version from a message.
pub fn version_of(v: pp::Version) -> Result<Version, Failure> {
    Ok(Version {
        summary: json_value(&v.summary_json, "summary_json")?,
        version: v.version,
        author_id: v.author_id,
        created_at: v.created_at,
    })
}

/// The contract's state of a stored status.
pub fn state_pb(status: &str) -> ps::RunState {
    match status {
        "queued" => ps::RunState::Queued,
        "running" => ps::RunState::Running,
        "completed" => ps::RunState::Completed,
        "stopped" => ps::RunState::Stopped,
        "failed" => ps::RunState::Failed,
        _ => ps::RunState::Unspecified,
    }
}

fn status_name(state: i32) -> String {
    match ps::RunState::try_from(state) {
        Ok(ps::RunState::Queued) => "queued",
        Ok(ps::RunState::Running) => "running",
        Ok(ps::RunState::Completed) => "completed",
        Ok(ps::RunState::Stopped) => "stopped",
        Ok(ps::RunState::Failed) => "failed",
        _ => "unknown",
    }
    .into()
}

/// A run as a message.
pub fn run_pb(r: &Run) -> ps::GetSimulationStatusResponse {
    ps::GetSimulationStatusResponse {
        simulation_id: r.simulation_id.clone(),
        project_id: r.project_id.clone(),
        state: state_pb(&r.status) as i32,
        duration_s: r.duration_s,
        started_at: r.started_at.unwrap_or(0),
        finished_at: r.finished_at.unwrap_or(0),
        error: r.error.clone().unwrap_or_default(),
        project_version: r.project_version,
        user_id: r.user_id.clone(),
        seed: r.seed,
        created_at: r.created_at,
        websocket_channel: r.websocket_channel.clone(),
    }
}

/// A run from a message.
pub fn run_of(r: ps::GetSimulationStatusResponse) -> Run {
    Run {
        status: status_name(r.state),
        started_at: (r.started_at != 0).then_some(r.started_at),
        finished_at: (r.finished_at != 0).then_some(r.finished_at),
        error: (!r.error.is_empty()).then_some(r.error),
        simulation_id: r.simulation_id,
        project_id: r.project_id,
        project_version: r.project_version,
        user_id: r.user_id,
        duration_s: r.duration_s,
        seed: r.seed,
        created_at: r.created_at,
        websocket_channel: r.websocket_channel,
    }
}

fn f64_of(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(|x| x.as_f64()).unwrap_or(0.0)
}

fn u64_of(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(|x| x.as_u64()).unwrap_or(0)
}

/// Results as a message: the typed summary is read from the engine's report.
pub fn results_pb(r: &Results) -> ps::GetSimulationResultsResponse {
    let e2e = r.report.get("end_to_end").cloned().unwrap_or_default();
    let latency = |v: &Value, mean: &str, max: Option<&str>| ps::LatencySummary {
        mean_ms: f64_of(v, mean),
        p50_ms: f64_of(v, "p50_ms"),
        p95_ms: f64_of(v, "p95_ms"),
        p99_ms: f64_of(v, "p99_ms"),
        max_ms: max.map_or(0.0, |k| f64_of(v, k)),
    };
    let mut components = Vec::new();
    if let Some(map) = r.report.get("components").and_then(|c| c.as_object()) {
        for (id, c) in map.iter() {
            components.push(ps::ComponentMetrics {
                component: id.to_string(),
                kind: c
                    .get("kind")
                    .and_then(|k| k.as_str())
                    .unwrap_or_default()
                    .into(),
                arrivals_per_s: 0.0,
                throughput_per_s: f64_of(c, "throughput_per_s"),
                utilization: f64_of(c, "utilization"),
                mean_queue_length: f64_of(c, "mean_queue_length"),
                dropped: u64_of(c, "dropped"),
                errors: u64_of(c, "errors"),
                latency: Some(latency(c, "mean_response_ms", None)),
            });
        }
    }
    ps::GetSimulationResultsResponse {
        simulation_id: r.simulation.simulation_id.clone(),
        state: state_pb(&r.simulation.status) as i32,
        requests: u64_of(&e2e, "arrivals"),
        completed: u64_of(&e2e, "completed"),
        failed: u64_of(&e2e, "dropped") + u64_of(&e2e, "errors"),
        end_to_end: Some(latency(&e2e, "mean_ms", Some("max_ms"))),
        components,
        report_json: json_text(&r.report),
        simulation: Some(run_pb(&r.simulation)),
        analysis_json: json_text(&r.analysis),
    }
}

/// Results from a message.
pub fn results_of(r: ps::GetSimulationResultsResponse) -> Result<Results, Failure> {
    Ok(Results {
        simulation: run_of(r.simulation.unwrap_or_default()),
        report: json_value(&r.report_json, "report_json")?,
        analysis: json_value(&r.analysis_json, "analysis_json")?,
    })
}

/// The analysis findings as bottlenecks and recommendations.
fn analysis_pb(analysis: &Value) -> ps::GetPerformanceAnalysisResponse {
    let mut bottlenecks = Vec::new();
    let mut recommendations = Vec::new();
    if let Some(list) = analysis.as_array() {
        for f in list.iter() {
            let status = f.get("status").and_then(|s| s.as_str()).unwrap_or("ok");
            let explanation = f
                .get("explanation")
                .and_then(|s| s.as_str())
                .unwrap_or_default()
                .to_string();
            let component = f
                .get("component")
                .and_then(|s| s.as_str())
                .unwrap_or_default()
                .to_string();
            let recommendation = match f.get("recommendation").filter(|r| !r.is_null()) {
                Some(r) => format!(
                    "{component}: instances {} -> {} (predicted mean wait {:.1} ms)",
                    u64_of(r, "instances_now"),
                    u64_of(r, "instances"),
                    f64_of(r, "predicted_wait_ms")
                ),
                None => String::new(),
            };
            if !recommendation.is_empty() {
                recommendations.push(recommendation.clone());
            }
            if status != "ok" {
                bottlenecks.push(ps::Bottleneck {
                    component,
                    reason: explanation,
                    utilization: f64_of(f, "utilization"),
                    recommendation,
                });
            }
        }
    }
    ps::GetPerformanceAnalysisResponse {
        bottlenecks,
        recommendations,
        analysis_json: json_text(analysis),
    }
}

/// Settings JSON from a message's JSON text or, failing that, its string map.
fn settings_text(json: Option<String>, map: &HashMap<String, String>) -> Option<String> {
    match json.filter(|j| !j.is_empty()) {
        Some(j) => Some(j),
        None if !map.is_empty() => {
            let sorted: BTreeMap<&String, &String> = map.iter().collect();
            sonic_rs::to_string(&sorted).ok()
        }
        None => None,
    }
}

// ---- the services ----

/// A HealthCheck's status and dependencies: serving while storage answers.
async fn storage_health(store: &sdsim_store::Store) -> (String, HashMap<String, String>) {
    let up = store.ping().await.is_ok();
    (
        if up { "SERVING" } else { "NOT_SERVING" }.into(),
        HashMap::from([(
            "storage".to_string(),
            if up { "up" } else { "down" }.to_string(),
        )]),
    )
}

macro_rules! unary {
    ($services:expr, $service:expr, $method:literal, $state:expr, $verify:expr,
     |$s:ident, $who:ident, $req:ident : $ty:ty| $body:expr) => {{
        let (state, verify) = (Arc::clone($state), Arc::clone($verify));
        $services.unary(
            &format!("/{}/{}", $service, $method),
            move |call: Call, $req: $ty| {
                let ($s, verify) = (Arc::clone(&state), Arc::clone(&verify));
                async move {
                    let $who = caller_of(&call, &verify, &$req.user_id)?;
                    let r: Result<_, Failure> = $body;
                    r.map_err(|f| status_of(&f))
                }
            },
        );
    }};
}

/// Registers every ProjectService method on `services`.
pub fn register_projects(services: &mut Services, projects: &Arc<Projects>, verify: &VerifyToken) {
    let svc = PROJECT_SERVICE;
    unary!(
        services,
        svc,
        "CreateProject",
        projects,
        verify,
        |p, who, req: pp::CreateProjectRequest| {
            let new = NewProject {
                settings: settings_text(Some(req.settings_json), &req.configuration),
                name: req.name,
                description: req.description,
                template_id: (!req.template_id.is_empty()).then_some(req.template_id),
                design: (!req.design_json.is_empty()).then_some(req.design_json),
            };
            p.create(&who, new)
                .await
                .map(|project| pp::CreateProjectResponse {
                    project_id: project.id.clone(),
                    name: project.name.clone(),
                    created_at: project.created_at,
                    project: Some(project_pb(&project)),
                })
        }
    );
    unary!(
        services,
        svc,
        "GetProject",
        projects,
        verify,
        |p, who, req: pp::GetProjectRequest| {
            p.get(&who, &req.project_id)
                .await
                .map(|project| pp::GetProjectResponse {
                    project: Some(project_pb(&project)),
                })
        }
    );
    unary!(
        services,
        svc,
        "UpdateProject",
        projects,
        verify,
        |p, who, req: pp::UpdateProjectRequest| {
            let change = Change {
                settings: settings_text(req.settings_json, &req.settings),
                name: req.name,
                description: req.description,
                design: req.design_json,
                expected_version: (req.expected_version != 0).then_some(req.expected_version),
            };
            p.update(&who, &req.project_id, change)
                .await
                .map(|project| pp::UpdateProjectResponse {
                    project: Some(project_pb(&project)),
                })
        }
    );
    unary!(
        services,
        svc,
        "DeleteProject",
        projects,
        verify,
        |p, who, req: pp::DeleteProjectRequest| {
            p.delete(&who, &req.project_id)
                .await
                .map(|()| pp::DeleteProjectResponse { deleted: true })
        }
    );
    unary!(
        services,
        svc,
        "ListProjects",
        projects,
        verify,
        |p, who, req: pp::ListProjectsRequest| {
            let page = match req.page_token.as_str() {
                "" => 1,
                t => match t.parse::<i64>() {
                    Ok(n) if n >= 1 => n,
                    _ => {
                        return Err(status_of(&Failure::Invalid {
                            field: "page_token".into(),
                            message: "not a token of a previous response".into(),
                        }))
                    }
                },
            };
            let filter = Filter {
                query: (!req.name_contains.is_empty()).then_some(req.name_contains),
                role: role_of(req.min_role),
                page,
                per_page: if req.page_size == 0 {
                    20
                } else {
                    req.page_size.into()
                },
            };
            p.list(&who, &filter).await.map(|list| {
                let more = list.page * list.per_page < list.total;
                pp::ListProjectsResponse {
                    projects: list.projects.iter().map(project_pb).collect(),
                    next_page_token: if more {
                        (list.page + 1).to_string()
                    } else {
                        String::new()
                    },
                    total: list.total,
                    page: list.page as i32,
                    page_size: list.per_page as i32,
                }
            })
        }
    );
    unary!(
        services,
        svc,
        "ShareProject",
        projects,
        verify,
        |p, who, req: pp::ShareProjectRequest| {
            let grantee = required(req.grantee, "grantee")?;
            if req.role == pp::ProjectRole::Owner as i32 {
                return Err(status_of(&Failure::Invalid {
                    field: "role".into(),
                    message: "VIEWER, EDITOR or UNSPECIFIED (removes); ownership is not shared"
                        .into(),
                }));
            }
            p.share(&who, &req.project_id, &grantee, role_of(req.role))
                .await
                .map(|members| pp::ShareProjectResponse {
                    members: members.iter().map(member_pb).collect(),
                })
        }
    );
    unary!(
        services,
        svc,
        "GetProjectPermissions",
        projects,
        verify,
        |p, who, req: pp::GetProjectPermissionsRequest| {
            p.role_and_members(&who, &req.project_id)
                .await
                .map(|(role, members)| pp::GetProjectPermissionsResponse {
                    my_role: role_pb(role) as i32,
                    members: members.iter().map(member_pb).collect(),
                    can_read: who.may("project:read"),
                    can_write: role >= Role::Editor && who.may("project:write"),
                    can_share: role == Role::Owner && who.may("project:write"),
                    can_delete: role == Role::Owner && who.may("project:delete"),
                })
        }
    );
    unary!(
        services,
        svc,
        "GetTemplate",
        projects,
        verify,
        |p, who, req: pp::GetTemplateRequest| {
            p.template(&who, &req.template_id)
                .await
                .map(|t| pp::GetTemplateResponse {
                    template: Some(template_pb(&t)),
                })
        }
    );
    unary!(
        services,
        svc,
        "ListTemplates",
        projects,
        verify,
        |p, who, req: pp::ListTemplatesRequest| {
            if !matches!(req.kind.as_str(), "" | "system" | "user") {
                return Err(status_of(&Failure::Invalid {
                    field: "kind".into(),
                    message: "\"system\", \"user\" or empty".into(),
                }));
            }
            p.templates(&who)
                .await
                .map(|list| pp::ListTemplatesResponse {
                    templates: list
                        .iter()
                        .filter(|t| req.kind.is_empty() || t.kind == req.kind)
                        .map(template_pb)
                        .collect(),
                })
        }
    );
    unary!(
        services,
        svc,
        "CreateTemplate",
        projects,
        verify,
        |p, who, req: pp::CreateTemplateRequest| {
            let design = required(req.design_json, "design_json")?;
            p.save_template(&who, &req.name, &req.description, &design)
                .await
                .map(|t| pp::GetTemplateResponse {
                    template: Some(template_pb(&t)),
                })
        }
    );
    unary!(
        services,
        svc,
        "ListVersions",
        projects,
        verify,
        |p, who, req: pp::ListVersionsRequest| {
            p.versions(&who, &req.project_id)
                .await
                .map(|list| pp::ListVersionsResponse {
                    versions: list.iter().map(version_pb).collect(),
                })
        }
    );
    unary!(
        services,
        svc,
        "RollbackProject",
        projects,
        verify,
        |p, who, req: pp::RollbackProjectRequest| {
            p.rollback(&who, &req.project_id, req.version)
                .await
                .map(|project| pp::UpdateProjectResponse {
                    project: Some(project_pb(&project)),
                })
        }
    );
    unary!(
        services,
        svc,
        "ExportProject",
        projects,
        verify,
        |p, who, req: pp::ExportProjectRequest| {
            p.export(&who, &req.project_id)
                .await
                .map(|doc| pp::ExportProjectResponse {
                    document_json: doc.to_string(),
                })
        }
    );
    unary!(
        services,
        svc,
        "ImportProject",
        projects,
        verify,
        |p, who, req: pp::ImportProjectRequest| {
            p.import(&who, &req.document_json)
                .await
                .map(|project| pp::GetProjectResponse {
                    project: Some(project_pb(&project)),
                })
        }
    );
    let p = Arc::clone(projects);
    services.unary(
        &format!("/{svc}/HealthCheck"),
        move |_call: Call, _req: pp::HealthCheckRequest| {
            let p = Arc::clone(&p);
            async move {
                let (status, dependencies) = storage_health(p.store()).await;
                Ok::<_, Status>(pp::HealthCheckResponse {
                    status,
                    dependencies,
                    version: env!("CARGO_PKG_VERSION").into(),
                })
            }
        },
    );
}

/// Registers every SimulationService method on `services`.
pub fn register_simulations(
    services: &mut Services,
    sims: &Arc<Simulations>,
    verify: &VerifyToken,
) {
    let svc = SIMULATION_SERVICE;
    unary!(
        services,
        svc,
        "StartSimulation",
        sims,
        verify,
        |s, who, req: ps::StartSimulationRequest| {
            let start = StartRequest {
                project_id: req.project_id,
                duration_s: req.duration_s,
                seed: req.seed,
                speed: req.speed,
            };
            s.start(&who, start)
                .await
                .map(|run| ps::StartSimulationResponse {
                    simulation_id: run.simulation_id.clone(),
                    state: state_pb(&run.status) as i32,
                    websocket_channel: run.websocket_channel.clone(),
                    simulation: Some(run_pb(&run)),
                })
        }
    );
    unary!(
        services,
        svc,
        "StopSimulation",
        sims,
        verify,
        |s, who, req: ps::StopSimulationRequest| {
            s.stop(&who, &req.simulation_id)
                .await
                .map(|run| ps::StopSimulationResponse {
                    state: state_pb(&run.status) as i32,
                    simulation: Some(run_pb(&run)),
                })
        }
    );
    unary!(
        services,
        svc,
        "GetSimulationStatus",
        sims,
        verify,
        |s, who, req: ps::GetSimulationStatusRequest| {
            s.get(&who, &req.simulation_id)
                .await
                .map(|run| run_pb(&run))
        }
    );
    unary!(
        services,
        svc,
        "GetSimulationResults",
        sims,
        verify,
        |s, who, req: ps::GetSimulationResultsRequest| {
            s.results(&who, &req.simulation_id)
                .await
                .map(|r| results_pb(&r))
        }
    );
    unary!(
        services,
        svc,
        "GetPerformanceAnalysis",
        sims,
        verify,
        |s, who, req: ps::GetPerformanceAnalysisRequest| {
            s.results(&who, &req.simulation_id)
                .await
                .map(|r| analysis_pb(&r.analysis))
        }
    );
    unary!(
        services,
        svc,
        "ValidateConfiguration",
        sims,
        verify,
        |s, _who, req: ps::ValidateConfigurationRequest| {
            let design = required(req.design_json, "design_json")?;
            let v = s.validate(&design).await.map_err(|f| status_of(&f))?;
            Ok(ps::ValidateConfigurationResponse {
                valid: v.valid,
                problems: v
                    .problems
                    .into_iter()
                    .map(|p| ps::DesignProblem {
                        path: p.path,
                        message: p.message,
                    })
                    .collect(),
            })
        }
    );
    unary!(
        services,
        svc,
        "GetSimulationHistory",
        sims,
        verify,
        |s, who, req: ps::GetSimulationHistoryRequest| {
            let project = (!req.project_id.is_empty()).then_some(req.project_id.as_str());
            let limit = if req.page_size == 0 {
                50
            } else {
                req.page_size.into()
            };
            s.history(&who, project, limit)
                .await
                .map(|runs| ps::GetSimulationHistoryResponse {
                    runs: runs.iter().map(run_pb).collect(),
                })
        }
    );
    let s = Arc::clone(sims);
    services.unary(
        &format!("/{svc}/HealthCheck"),
        move |_call: Call, _req: ps::HealthCheckRequest| {
            let s = Arc::clone(&s);
            async move {
                let (status, dependencies) = storage_health(s.store()).await;
                let (queued, running) = s.load();
                Ok::<_, Status>(ps::HealthCheckResponse {
                    status,
                    dependencies,
                    version: env!("CARGO_PKG_VERSION").into(),
                    queued: queued as i32,
                    running: running as i32,
                })
            }
        },
    );
    let (s, verify) = (Arc::clone(sims), Arc::clone(verify));
    services.server_streaming(
        &format!("/{svc}/GetLiveMetrics"),
        move |call: Call,
              req: ps::GetLiveMetricsRequest,
              out: Stream<ps::GetLiveMetricsResponse>| {
            let (s, verify) = (Arc::clone(&s), Arc::clone(&verify));
            async move {
                let who = caller_of(&call, &verify, &req.user_id)?;
                live_metrics(&s, &who, &req.simulation_id, out).await
            }
        },
    );
}

/// Forwards bus events to a stream task; a full queue drops the point (the next one carries
/// the cumulative figures), a closed one ends the subscription.
struct Forward(tokio::sync::mpsc::Sender<Arc<Event>>);

impl Sink for Forward {
    fn push(&self, event: &Arc<Event>) -> bool {
        !matches!(
            self.0.try_send(Arc::clone(event)),
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_))
        )
    }
}

#[derive(serde::Deserialize)]
struct LivePoint {
    r#type: String,
    progress: f64,
    events: u64,
    metrics: LiveSeries,
}

#[derive(serde::Deserialize)]
struct LiveSeries {
    t_s: f64,
    completed: u64,
    mean_ms: f64,
    utilization: BTreeMap<String, f64>,
    mean_queue_length: BTreeMap<String, f64>,
}

/// How often a live stream re-reads the run's state (a failed run publishes no final point).
const LIVE_RECHECK: Duration = Duration::from_secs(2);

/// Streams the points of run `id` until it ends: subscribe first, then read the run's state,
/// so no point falls between the two.
async fn live_metrics(
    sims: &Simulations,
    who: &Caller,
    id: &str,
    mut out: Stream<ps::GetLiveMetricsResponse>,
) -> Result<(), Status> {
    if id.is_empty() {
        return Err(status_of(&Failure::Invalid {
            field: "simulation_id".into(),
            message: "is required".into(),
        }));
    }
    let bus = Bus::local().ok_or_else(|| Status::new(Code::Unavailable, "no bus on this shard"))?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let channel = format!("simulation:data:{id}");
    let (subscription, attached) = bus
        .subscribe(&channel, Rc::new(Forward(tx)), None)
        .await
        .map_err(|e| Status::new(Code::Unavailable, e.to_string()))?;
    subscription.activate(attached.seq);
    let run = sims.get(who, id).await.map_err(|f| status_of(&f))?;
    let message =
        |state: ps::RunState, point: Option<ps::MetricsPoint>| ps::GetLiveMetricsResponse {
            simulation_id: id.to_string(),
            state: state as i32,
            point,
        };
    if matches!(run.status.as_str(), "completed" | "stopped" | "failed") {
        return out.send(&message(state_pb(&run.status), None)).await;
    }
    let mut last: Option<(f64, u64)> = None;
    loop {
        let event = monoio::select! {
            e = rx.recv() => e,
            _ = monoio::time::sleep(LIVE_RECHECK) => {
                let run = sims.get(who, id).await.map_err(|f| status_of(&f))?;
                if matches!(run.status.as_str(), "failed") {
                    return out.send(&message(ps::RunState::Failed, None)).await;
                }
                continue;
            }
        };
        let Some(event) = event else {
            return Err(Status::new(
                Code::Unavailable,
                "the bus closed the subscription",
            ));
        };
        let Ok(p) = sonic_rs::from_slice::<LivePoint>(&event.data) else {
            continue;
        };
        let m = &p.metrics;
        let throughput = match last {
            Some((t, done)) if m.t_s > t => (m.completed.saturating_sub(done)) as f64 / (m.t_s - t),
            Some(_) => 0.0,
            None if m.t_s > 0.0 => m.completed as f64 / m.t_s,
            None => 0.0,
        };
        last = Some((m.t_s, m.completed));
        let components = m
            .utilization
            .iter()
            .map(|(id, u)| ps::ComponentMetrics {
                component: id.clone(),
                utilization: *u,
                mean_queue_length: m.mean_queue_length.get(id).copied().unwrap_or(0.0),
                ..Default::default()
            })
            .collect();
        let state = match p.r#type.as_str() {
            "completed" => ps::RunState::Completed,
            "stopped" => ps::RunState::Stopped,
            _ => ps::RunState::Running,
        };
        let point = ps::MetricsPoint {
            t_s: m.t_s,
            throughput_per_s: throughput,
            latency: Some(ps::LatencySummary {
                mean_ms: m.mean_ms,
                ..Default::default()
            }),
            components,
            completed: m.completed,
            progress: p.progress,
            events: p.events,
        };
        out.send(&message(state, Some(point))).await?;
        if state != ps::RunState::Running {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_survives_the_wire() {
        let failures = [
            Failure::Invalid {
                field: "name".into(),
                message: "1 to 200 characters".into(),
            },
            Failure::Design(vec![
                DesignProblem {
                    path: "$.components[0].instances".into(),
                    message: "must be at least 1".into(),
                },
                DesignProblem {
                    path: "$.entry".into(),
                    message: "unknown component \"x\"".into(),
                },
            ]),
            Failure::Forbidden("the token lacks the project:write permission".into()),
            Failure::NotFound("project p not found".into()),
            Failure::Conflict("version 3 is not the latest (4)".into()),
            Failure::QueueFull("the simulation queue is full".into()),
            Failure::TooMany("you have 3 runs".into()),
            Failure::Unavailable("storage: down".into()),
        ];
        for f in failures {
            let status = status_of(&f);
            let mut trailers = http::HeaderMap::new();
            status.write(&mut trailers);
            let mut received = Status::new(status.code, status.message.clone());
            received.details = Status::details_from(trailers.get("grpc-status-details-bin"));
            assert_eq!(failure_of(&received), f);
        }
    }

    #[test]
    fn statuses_from_elsewhere_become_failures_with_their_message() {
        let cases = [
            (Code::DeadlineExceeded, "slow", "DeadlineExceeded: slow"),
            (
                Code::Unavailable,
                "connect refused",
                "Unavailable: connect refused",
            ),
            (Code::Internal, "bug", "Internal: bug"),
        ];
        for (code, message, want) in cases {
            assert_eq!(
                failure_of(&Status::new(code, message)),
                Failure::Unavailable(want.into())
            );
        }
        assert_eq!(
            failure_of(&Status::new(Code::NotFound, "gone")),
            Failure::NotFound("gone".into())
        );
        assert!(matches!(
            failure_of(&Status::new(Code::InvalidArgument, "bad")),
            Failure::Invalid { .. }
        ));
        assert!(matches!(
            failure_of(&Status::new(Code::Unauthenticated, "who")),
            Failure::Forbidden(_)
        ));
    }
}
