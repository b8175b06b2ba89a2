//! How the project service's requests and responses travel in `sdsim.project.v1` messages
//! (both directions: the gRPC server decodes what the remote client encodes).

use super::contract::{NewTemplate, Permissions, Rollback, Share, TemplateKind, Update};
use super::{Change, Filter, Member, NewProject, Page, Project, Role, TemplateInfo, Version};
use crate::pb::project as pb;
use crate::Failure;
use sdsim_contract::{required, RequestWire, ResponseWire, ServiceHealth};
use sonic_rs::{JsonValueTrait, Value};
use std::collections::{BTreeMap, HashMap};

sdsim_contract::acts_for!(
    pb::CreateProjectRequest,
    pb::GetProjectRequest,
    pb::UpdateProjectRequest,
    pb::DeleteProjectRequest,
    pb::ListProjectsRequest,
    pb::ShareProjectRequest,
    pb::GetProjectPermissionsRequest,
    pb::GetTemplateRequest,
    pb::ListTemplatesRequest,
    pb::CreateTemplateRequest,
    pb::ListVersionsRequest,
    pb::RollbackProjectRequest,
    pb::ExportProjectRequest,
    pb::ImportProjectRequest,
);

/// The service answered a message without a part it always sends.
fn missing(what: &str) -> Failure {
    Failure::Unavailable(format!("the project service answered without {what}"))
}

/// `Some(text)` unless it is empty.
fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

/// The contract's role.
fn role_pb(role: Role) -> pb::ProjectRole {
    match role {
        Role::Viewer => pb::ProjectRole::Viewer,
        Role::Editor => pb::ProjectRole::Editor,
        Role::Owner => pb::ProjectRole::Owner,
    }
}

/// The role of a contract value (`None` for UNSPECIFIED or unknown values).
fn role_of(value: i32) -> Option<Role> {
    match pb::ProjectRole::try_from(value).ok()? {
        pb::ProjectRole::Viewer => Some(Role::Viewer),
        pb::ProjectRole::Editor => Some(Role::Editor),
        pb::ProjectRole::Owner => Some(Role::Owner),
        pb::ProjectRole::Unspecified => None,
    }
}

/// JSON text of a value; empty for null (an absent document).
pub fn json_text(v: &Value) -> String {
    if v.is_null() {
        String::new()
    } else {
        v.to_string()
    }
}

/// The value of JSON text; null for empty text.
pub fn json_value(text: &str, field: &'static str) -> Result<Value, Failure> {
    if text.is_empty() {
        return Ok(Value::default());
    }
    sdsim_net::json::decode(text.as_bytes()).map_err(|e| Failure::Invalid {
        field: field.into(),
        message: format!("not JSON: {e}"),
    })
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

fn project_pb(p: &Project) -> pb::Project {
    pb::Project {
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

fn project_of(p: pb::Project) -> Result<Project, Failure> {
    Ok(Project {
        design: json_value(&p.design_json, "design_json")?,
        settings: json_value(&p.settings_json, "settings_json")?,
        role: role_of(p.my_role).unwrap_or(Role::Viewer),
        template_id: non_empty(p.template_id),
        id: p.id,
        name: p.name,
        description: p.description,
        owner_id: p.owner_id,
        version: p.version,
        created_at: p.created_at,
        updated_at: p.updated_at,
    })
}

fn the_project(p: Option<pb::Project>) -> Result<Project, Failure> {
    project_of(p.ok_or_else(|| missing("the project"))?)
}

fn member_pb(m: &Member) -> pb::ProjectMember {
    pb::ProjectMember {
        user_id: m.user_id.clone(),
        email: m.email.clone(),
        role: role_pb(m.role) as i32,
        added_at: m.added_at,
    }
}

fn member_of(m: pb::ProjectMember) -> Member {
    Member {
        role: role_of(m.role).unwrap_or(Role::Viewer),
        user_id: m.user_id,
        email: m.email,
        added_at: m.added_at,
    }
}

fn template_pb(t: &TemplateInfo) -> pb::Template {
    pb::Template {
        id: t.id.clone(),
        name: t.name.clone(),
        description: t.description.clone(),
        kind: t.kind.into(),
        design_json: t.design.as_ref().map(json_text).unwrap_or_default(),
        category: t.category.clone(),
        components: t.components as i32,
    }
}

fn template_of(t: pb::Template) -> Result<TemplateInfo, Failure> {
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

/// Implements [`RequestWire`] for requests whose one field besides `user_id` is an id (or a
/// document), carried as a `String`.
macro_rules! one_field_request {
    ($($message:path => $field:ident),* $(,)?) => {
        $(impl RequestWire<$message> for String {
            type Error = Failure;
            fn into_message(self, user_id: &str) -> $message {
                $message { user_id: user_id.into(), $field: self }
            }
            fn from_message(m: $message) -> Result<String, Failure> {
                Ok(m.$field)
            }
        })*
    };
}

one_field_request!(
    pb::GetProjectRequest => project_id,
    pb::DeleteProjectRequest => project_id,
    pb::GetProjectPermissionsRequest => project_id,
    pb::GetTemplateRequest => template_id,
    pb::ListVersionsRequest => project_id,
    pb::ExportProjectRequest => project_id,
    pb::ImportProjectRequest => document_json,
);

/// Implements [`ResponseWire`] for responses whose one field is the project.
macro_rules! project_response {
    ($($message:path),* $(,)?) => {
        $(impl ResponseWire<$message> for Project {
            type Error = Failure;
            fn into_message(self) -> $message {
                $message { project: Some(project_pb(&self)) }
            }
            fn from_message(m: $message) -> Result<Project, Failure> {
                the_project(m.project)
            }
        })*
    };
}

project_response!(pb::GetProjectResponse, pb::UpdateProjectResponse);

impl RequestWire<pb::CreateProjectRequest> for NewProject {
    type Error = Failure;
    fn into_message(self, user_id: &str) -> pb::CreateProjectRequest {
        pb::CreateProjectRequest {
            user_id: user_id.into(),
            name: self.name,
            description: self.description,
            template_id: self.template_id.unwrap_or_default(),
            design_json: self.design.unwrap_or_default(),
            settings_json: self.settings.unwrap_or_default(),
            ..Default::default()
        }
    }
    fn from_message(m: pb::CreateProjectRequest) -> Result<NewProject, Failure> {
        Ok(NewProject {
            settings: settings_text(Some(m.settings_json), &m.configuration),
            name: m.name,
            description: m.description,
            template_id: non_empty(m.template_id),
            design: non_empty(m.design_json),
        })
    }
}

impl ResponseWire<pb::CreateProjectResponse> for Project {
    type Error = Failure;
    fn into_message(self) -> pb::CreateProjectResponse {
        pb::CreateProjectResponse {
            project_id: self.id.clone(),
            name: self.name.clone(),
            created_at: self.created_at,
            project: Some(project_pb(&self)),
        }
    }
    fn from_message(m: pb::CreateProjectResponse) -> Result<Project, Failure> {
        the_project(m.project)
    }
}

impl RequestWire<pb::UpdateProjectRequest> for Update {
    type Error = Failure;
    fn into_message(self, user_id: &str) -> pb::UpdateProjectRequest {
        let c = self.change;
        pb::UpdateProjectRequest {
            user_id: user_id.into(),
            project_id: self.project_id,
            expected_version: c.expected_version.unwrap_or(0),
            name: c.name,
            description: c.description,
            design_json: c.design,
            settings_json: c.settings,
            ..Default::default()
        }
    }
    fn from_message(m: pb::UpdateProjectRequest) -> Result<Update, Failure> {
        Ok(Update {
            project_id: m.project_id,
            change: Change {
                settings: settings_text(m.settings_json, &m.settings),
                name: m.name,
                description: m.description,
                design: m.design_json,
                expected_version: (m.expected_version != 0).then_some(m.expected_version),
            },
        })
    }
}

impl ResponseWire<pb::DeleteProjectResponse> for () {
    type Error = Failure;
    fn into_message(self) -> pb::DeleteProjectResponse {
        pb::DeleteProjectResponse { deleted: true }
    }
    fn from_message(_: pb::DeleteProjectResponse) -> Result<(), Failure> {
        Ok(())
    }
}

impl RequestWire<pb::ListProjectsRequest> for Filter {
    type Error = Failure;
    fn into_message(self, user_id: &str) -> pb::ListProjectsRequest {
        pb::ListProjectsRequest {
            user_id: user_id.into(),
            page_size: self.per_page.clamp(1, 100) as i32,
            page_token: self.page.max(1).to_string(),
            name_contains: self.query.unwrap_or_default(),
            min_role: self.role.map_or(0, |r| role_pb(r) as i32),
        }
    }
    fn from_message(m: pb::ListProjectsRequest) -> Result<Filter, Failure> {
        let page = match m.page_token.as_str() {
            "" => 1,
            t => match t.parse::<i64>() {
                Ok(n) if n >= 1 => n,
                _ => {
                    return Err(Failure::Invalid {
                        field: "page_token".into(),
                        message: "not a token of a previous response".into(),
                    })
                }
            },
        };
        Ok(Filter {
            query: non_empty(m.name_contains),
            role: role_of(m.min_role),
            page,
            per_page: if m.page_size == 0 {
                20
            } else {
                m.page_size.into()
            },
        })
    }
}

impl ResponseWire<pb::ListProjectsResponse> for Page {
    type Error = Failure;
    fn into_message(self) -> pb::ListProjectsResponse {
        let more = self.page * self.per_page < self.total;
        pb::ListProjectsResponse {
            projects: self.projects.iter().map(project_pb).collect(),
            next_page_token: if more {
                (self.page + 1).to_string()
            } else {
                String::new()
            },
            total: self.total,
            page: self.page as i32,
            page_size: self.per_page as i32,
        }
    }
    fn from_message(m: pb::ListProjectsResponse) -> Result<Page, Failure> {
        Ok(Page {
            projects: m
                .projects
                .into_iter()
                .map(project_of)
                .collect::<Result<_, _>>()?,
            page: m.page.into(),
            per_page: m.page_size.into(),
            total: m.total,
        })
    }
}

impl RequestWire<pb::ShareProjectRequest> for Share {
    type Error = Failure;
    fn into_message(self, user_id: &str) -> pb::ShareProjectRequest {
        pb::ShareProjectRequest {
            user_id: user_id.into(),
            project_id: self.project_id,
            grantee: self.grantee,
            role: self.role.map_or(0, |r| role_pb(r) as i32),
        }
    }
    fn from_message(m: pb::ShareProjectRequest) -> Result<Share, Failure> {
        let grantee = required(m.grantee, "grantee")?;
        if m.role == pb::ProjectRole::Owner as i32 {
            return Err(Failure::Invalid {
                field: "role".into(),
                message: "VIEWER, EDITOR or UNSPECIFIED (removes); ownership is not shared".into(),
            });
        }
        Ok(Share {
            project_id: m.project_id,
            grantee,
            role: role_of(m.role),
        })
    }
}

impl ResponseWire<pb::ShareProjectResponse> for Vec<Member> {
    type Error = Failure;
    fn into_message(self) -> pb::ShareProjectResponse {
        pb::ShareProjectResponse {
            members: self.iter().map(member_pb).collect(),
        }
    }
    fn from_message(m: pb::ShareProjectResponse) -> Result<Vec<Member>, Failure> {
        Ok(m.members.into_iter().map(member_of).collect())
    }
}

impl ResponseWire<pb::GetProjectPermissionsResponse> for Permissions {
    type Error = Failure;
    fn into_message(self) -> pb::GetProjectPermissionsResponse {
        pb::GetProjectPermissionsResponse {
            my_role: role_pb(self.role) as i32,
            members: self.members.iter().map(member_pb).collect(),
            can_read: self.can_read,
            can_write: self.can_write,
            can_share: self.can_share,
            can_delete: self.can_delete,
        }
    }
    fn from_message(m: pb::GetProjectPermissionsResponse) -> Result<Permissions, Failure> {
        Ok(Permissions {
            role: role_of(m.my_role).unwrap_or(Role::Viewer),
            members: m.members.into_iter().map(member_of).collect(),
            can_read: m.can_read,
            can_write: m.can_write,
            can_share: m.can_share,
            can_delete: m.can_delete,
        })
    }
}

impl ResponseWire<pb::GetTemplateResponse> for TemplateInfo {
    type Error = Failure;
    fn into_message(self) -> pb::GetTemplateResponse {
        pb::GetTemplateResponse {
            template: Some(template_pb(&self)),
        }
    }
    fn from_message(m: pb::GetTemplateResponse) -> Result<TemplateInfo, Failure> {
        template_of(m.template.ok_or_else(|| missing("the template"))?)
    }
}

impl RequestWire<pb::ListTemplatesRequest> for Option<TemplateKind> {
    type Error = Failure;
    fn into_message(self, user_id: &str) -> pb::ListTemplatesRequest {
        pb::ListTemplatesRequest {
            user_id: user_id.into(),
            kind: self.map_or("", TemplateKind::as_str).into(),
        }
    }
    fn from_message(m: pb::ListTemplatesRequest) -> Result<Option<TemplateKind>, Failure> {
        match m.kind.as_str() {
            "" => Ok(None),
            "system" => Ok(Some(TemplateKind::System)),
            "user" => Ok(Some(TemplateKind::User)),
            _ => Err(Failure::Invalid {
                field: "kind".into(),
                message: "\"system\", \"user\" or empty".into(),
            }),
        }
    }
}

impl ResponseWire<pb::ListTemplatesResponse> for Vec<TemplateInfo> {
    type Error = Failure;
    fn into_message(self) -> pb::ListTemplatesResponse {
        pb::ListTemplatesResponse {
            templates: self.iter().map(template_pb).collect(),
        }
    }
    fn from_message(m: pb::ListTemplatesResponse) -> Result<Vec<TemplateInfo>, Failure> {
        m.templates.into_iter().map(template_of).collect()
    }
}

impl RequestWire<pb::CreateTemplateRequest> for NewTemplate {
    type Error = Failure;
    fn into_message(self, user_id: &str) -> pb::CreateTemplateRequest {
        pb::CreateTemplateRequest {
            user_id: user_id.into(),
            name: self.name,
            description: self.description,
            design_json: self.design,
        }
    }
    fn from_message(m: pb::CreateTemplateRequest) -> Result<NewTemplate, Failure> {
        Ok(NewTemplate {
            design: required(m.design_json, "design_json")?,
            name: m.name,
            description: m.description,
        })
    }
}

impl ResponseWire<pb::ListVersionsResponse> for Vec<Version> {
    type Error = Failure;
    fn into_message(self) -> pb::ListVersionsResponse {
        pb::ListVersionsResponse {
            versions: self
                .iter()
                .map(|v| pb::Version {
                    version: v.version,
                    author_id: v.author_id.clone(),
                    created_at: v.created_at,
                    summary_json: json_text(&v.summary),
                })
                .collect(),
        }
    }
    fn from_message(m: pb::ListVersionsResponse) -> Result<Vec<Version>, Failure> {
        m.versions
            .into_iter()
            .map(|v| {
                Ok(Version {
                    summary: json_value(&v.summary_json, "summary_json")?,
                    version: v.version,
                    author_id: v.author_id,
                    created_at: v.created_at,
                })
            })
            .collect()
    }
}

impl RequestWire<pb::RollbackProjectRequest> for Rollback {
    type Error = Failure;
    fn into_message(self, user_id: &str) -> pb::RollbackProjectRequest {
        pb::RollbackProjectRequest {
            user_id: user_id.into(),
            project_id: self.project_id,
            version: self.version,
        }
    }
    fn from_message(m: pb::RollbackProjectRequest) -> Result<Rollback, Failure> {
        Ok(Rollback {
            project_id: m.project_id,
            version: m.version,
        })
    }
}

impl ResponseWire<pb::ExportProjectResponse> for Value {
    type Error = Failure;
    fn into_message(self) -> pb::ExportProjectResponse {
        pb::ExportProjectResponse {
            document_json: self.to_string(),
        }
    }
    fn from_message(m: pb::ExportProjectResponse) -> Result<Value, Failure> {
        sonic_rs::from_str(&m.document_json).map_err(|_| missing("a JSON export document"))
    }
}

impl RequestWire<pb::HealthCheckRequest> for () {
    type Error = Failure;
    fn into_message(self, _user_id: &str) -> pb::HealthCheckRequest {
        pb::HealthCheckRequest {}
    }
    fn from_message(_: pb::HealthCheckRequest) -> Result<(), Failure> {
        Ok(())
    }
}

impl ResponseWire<pb::HealthCheckResponse> for ServiceHealth {
    type Error = Failure;
    fn into_message(self) -> pb::HealthCheckResponse {
        pb::HealthCheckResponse {
            status: self.status,
            dependencies: self.dependencies,
            version: self.version,
        }
    }
    fn from_message(m: pb::HealthCheckResponse) -> Result<ServiceHealth, Failure> {
        Ok(ServiceHealth {
            status: m.status,
            dependencies: m.dependencies,
            version: m.version,
        })
    }
}
