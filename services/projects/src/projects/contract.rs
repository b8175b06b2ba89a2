//! `sdsim.project.v1.ProjectService`: the project service's contract, and its implementation
//! in this process by [`Projects`].
//!
//! HTTP handlers and other services call [`ProjectService`]; [`ProjectContract::register`]
//! serves any implementation over gRPC and [`RemoteProjects`] implements it over gRPC, so a
//! caller never knows where the service runs. How each request and response travels is in
//! `wire.rs`.

use super::Version;
use super::{Change, Filter, Member, NewProject, Page, Project, Projects, Role, TemplateInfo};
use crate::pb::project as pb;
use crate::{Caller, Failure};
use sdsim_contract::{Pending, ServiceHealth};

sdsim_contract::contract! {
    /// The project service: projects with versions and sharing, and templates.
    pub trait ProjectService {
        service ProjectContract = "sdsim.project.v1.ProjectService";
        error Failure;
        remote RemoteProjects;
        /// Creates a project owned by the caller.
        caller fn create_project(NewProject) -> Project
            = CreateProject(pb::CreateProjectRequest) -> pb::CreateProjectResponse;
        /// One project (by id).
        caller fn get_project(String) -> Project
            = GetProject(pb::GetProjectRequest) -> pb::GetProjectResponse;
        /// Applies a change, storing a new version.
        caller fn update_project(Update) -> Project
            = UpdateProject(pb::UpdateProjectRequest) -> pb::UpdateProjectResponse;
        /// Deletes a project (by id).
        caller fn delete_project(String) -> ()
            = DeleteProject(pb::DeleteProjectRequest) -> pb::DeleteProjectResponse;
        /// The caller's projects, a page at a time.
        caller fn list_projects(Filter) -> Page
            = ListProjects(pb::ListProjectsRequest) -> pb::ListProjectsResponse;
        /// Gives a user a role in a project, or removes them; answers the members.
        caller fn share_project(Share) -> Vec<Member>
            = ShareProject(pb::ShareProjectRequest) -> pb::ShareProjectResponse;
        /// The caller's role in a project (by id), what it allows, and the members.
        caller fn get_project_permissions(String) -> Permissions
            = GetProjectPermissions(pb::GetProjectPermissionsRequest)
                -> pb::GetProjectPermissionsResponse;
        /// One template (by id), with its design.
        caller fn get_template(String) -> TemplateInfo
            = GetTemplate(pb::GetTemplateRequest) -> pb::GetTemplateResponse;
        /// System templates and the caller's own (`None`: both kinds).
        caller fn list_templates(Option<TemplateKind>) -> Vec<TemplateInfo>
            = ListTemplates(pb::ListTemplatesRequest) -> pb::ListTemplatesResponse;
        /// Saves a design as one of the caller's templates.
        caller fn create_template(NewTemplate) -> TemplateInfo
            = CreateTemplate(pb::CreateTemplateRequest) -> pb::GetTemplateResponse;
        /// The version history of a project (by id), newest first.
        caller fn list_versions(String) -> Vec<Version>
            = ListVersions(pb::ListVersionsRequest) -> pb::ListVersionsResponse;
        /// Makes an old version's content current again, as a new version.
        caller fn rollback_project(Rollback) -> Project
            = RollbackProject(pb::RollbackProjectRequest) -> pb::UpdateProjectResponse;
        /// A project (by id) as an export document.
        caller fn export_project(String) -> sonic_rs::Value
            = ExportProject(pb::ExportProjectRequest) -> pb::ExportProjectResponse;
        /// A new project from an export document (JSON text).
        caller fn import_project(String) -> Project
            = ImportProject(pb::ImportProjectRequest) -> pb::GetProjectResponse;
        /// Serving while storage answers.
        open fn health_check(()) -> ServiceHealth
            = HealthCheck(pb::HealthCheckRequest) -> pb::HealthCheckResponse;
    }
}

/// A change to a project.
#[derive(Debug, Clone, Default)]
pub struct Update {
    /// The project.
    pub project_id: String,
    /// What changes.
    pub change: Change,
}

/// A grant (or removal) of a role in a project.
#[derive(Debug, Clone)]
pub struct Share {
    /// The project.
    pub project_id: String,
    /// The user: an id or an email.
    pub grantee: String,
    /// Their role; `None` removes them.
    pub role: Option<Role>,
}

/// The caller's role in a project and what it allows.
#[derive(Debug, Clone)]
pub struct Permissions {
    /// The caller's role.
    pub role: Role,
    /// Every member.
    pub members: Vec<Member>,
    /// Whether the caller may read the project.
    pub can_read: bool,
    /// Whether the caller may change it.
    pub can_write: bool,
    /// Whether the caller may share it.
    pub can_share: bool,
    /// Whether the caller may delete it.
    pub can_delete: bool,
}

/// Where a template comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateKind {
    /// Shipped with sdsim.
    System,
    /// Saved by a user.
    User,
}

impl TemplateKind {
    /// `system` or `user`, as in [`TemplateInfo::kind`].
    pub fn as_str(self) -> &'static str {
        match self {
            TemplateKind::System => "system",
            TemplateKind::User => "user",
        }
    }
}

/// A design to save as a template.
#[derive(Debug, Clone)]
pub struct NewTemplate {
    /// Its name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// The design (JSON).
    pub design: String,
}

/// A rollback to an earlier version.
#[derive(Debug, Clone)]
pub struct Rollback {
    /// The project.
    pub project_id: String,
    /// The version whose content becomes current again.
    pub version: i64,
}

impl ProjectService for Projects {
    fn create_project<'a>(
        &'a self,
        who: &'a Caller,
        new: NewProject,
    ) -> Pending<'a, Project, Failure> {
        Box::pin(self.create(who, new))
    }

    fn get_project<'a>(&'a self, who: &'a Caller, id: String) -> Pending<'a, Project, Failure> {
        Box::pin(async move { self.get(who, &id).await })
    }

    fn update_project<'a>(&'a self, who: &'a Caller, u: Update) -> Pending<'a, Project, Failure> {
        Box::pin(async move { self.update(who, &u.project_id, u.change).await })
    }

    fn delete_project<'a>(&'a self, who: &'a Caller, id: String) -> Pending<'a, (), Failure> {
        Box::pin(async move { self.delete(who, &id).await })
    }

    fn list_projects<'a>(&'a self, who: &'a Caller, filter: Filter) -> Pending<'a, Page, Failure> {
        Box::pin(async move { self.list(who, &filter).await })
    }

    fn share_project<'a>(&'a self, who: &'a Caller, s: Share) -> Pending<'a, Vec<Member>, Failure> {
        Box::pin(async move { self.share(who, &s.project_id, &s.grantee, s.role).await })
    }

    fn get_project_permissions<'a>(
        &'a self,
        who: &'a Caller,
        id: String,
    ) -> Pending<'a, Permissions, Failure> {
        Box::pin(async move {
            let (role, members) = self.role_and_members(who, &id).await?;
            Ok(Permissions {
                role,
                members,
                can_read: who.may("project:read"),
                can_write: role >= Role::Editor && who.may("project:write"),
                can_share: role == Role::Owner && who.may("project:write"),
                can_delete: role == Role::Owner && who.may("project:delete"),
            })
        })
    }

    fn get_template<'a>(
        &'a self,
        who: &'a Caller,
        id: String,
    ) -> Pending<'a, TemplateInfo, Failure> {
        Box::pin(async move { self.template(who, &id).await })
    }

    fn list_templates<'a>(
        &'a self,
        who: &'a Caller,
        kind: Option<TemplateKind>,
    ) -> Pending<'a, Vec<TemplateInfo>, Failure> {
        Box::pin(async move {
            let mut list = self.templates(who).await?;
            if let Some(kind) = kind {
                list.retain(|t| t.kind == kind.as_str());
            }
            Ok(list)
        })
    }

    fn create_template<'a>(
        &'a self,
        who: &'a Caller,
        t: NewTemplate,
    ) -> Pending<'a, TemplateInfo, Failure> {
        Box::pin(async move {
            self.save_template(who, &t.name, &t.description, &t.design)
                .await
        })
    }

    fn list_versions<'a>(
        &'a self,
        who: &'a Caller,
        id: String,
    ) -> Pending<'a, Vec<Version>, Failure> {
        Box::pin(async move { self.versions(who, &id).await })
    }

    fn rollback_project<'a>(
        &'a self,
        who: &'a Caller,
        r: Rollback,
    ) -> Pending<'a, Project, Failure> {
        Box::pin(async move { self.rollback(who, &r.project_id, r.version).await })
    }

    fn export_project<'a>(
        &'a self,
        who: &'a Caller,
        id: String,
    ) -> Pending<'a, sonic_rs::Value, Failure> {
        Box::pin(async move { self.export(who, &id).await })
    }

    fn import_project<'a>(&'a self, who: &'a Caller, doc: String) -> Pending<'a, Project, Failure> {
        Box::pin(async move { self.import(who, &doc).await })
    }

    fn health_check<'a>(&'a self, (): ()) -> Pending<'a, ServiceHealth, Failure> {
        Box::pin(async move {
            let up = self.store().ping().await.is_ok();
            Ok(ServiceHealth::of_storage(up, env!("CARGO_PKG_VERSION")))
        })
    }
}
