//! The services as the gateway's HTTP and WebSocket handlers reach them: an in-process call when
//! the role runs in this process, the gRPC client when it runs in another one.
//!
//! The remote side authenticates with a service token and forwards the user context (user id,
//! admin flag, permissions) that the gateway's shard-local verifier established; the service
//! then authorizes the user against the project exactly as in process. Failures come back with
//! their reason and fields (see [`crate::grpc`]), so an HTTP client sees the same status and
//! body either way.

use crate::grpc::{
    self, pb::project as pp, pb::simulation as ps, PROJECT_SERVICE, SIMULATION_SERVICE,
};
use crate::projects::{
    Change, Filter, Member, NewProject, Page, Project, Projects, Role, TemplateInfo, Version,
};
use crate::simulations::{Results, Run, Simulations, StartRequest, Validation};
use crate::{Caller, Failure};
use http::HeaderValue;
use sdsim_net::grpc::client::{CallOptions, Client};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// A service in another process, reached over gRPC from this shard.
pub struct Remote {
    client: Client,
    authorization: HeaderValue,
    timeout: Duration,
}

impl Remote {
    /// A client of the service at `addr` that authenticates with `service_token` and gives
    /// each call `timeout`.
    pub fn new(addr: SocketAddr, service_token: &str, timeout: Duration) -> Result<Remote, String> {
        let authorization = HeaderValue::from_str(&format!("Bearer {service_token}"))
            .map_err(|_| "the service token is not a valid header value".to_string())?;
        Ok(Remote {
            client: Client::new(addr),
            authorization,
            timeout,
        })
    }

    async fn call<Req, Resp>(
        &self,
        service: &str,
        method: &str,
        who: &Caller,
        req: &Req,
    ) -> Result<Resp, Failure>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let mut opts = CallOptions::timeout(self.timeout);
        opts.metadata
            .insert("authorization", self.authorization.clone());
        if let Ok(perms) = HeaderValue::from_str(&who.perms.join(",")) {
            opts.metadata.insert(grpc::USER_PERMISSIONS, perms);
        }
        if who.is_admin {
            opts.metadata
                .insert(grpc::USER_ADMIN, HeaderValue::from_static("true"));
        }
        self.client
            .unary(&format!("/{service}/{method}"), req, opts)
            .await
            .map_err(|s| grpc::failure_of(&s))
    }
}

/// The project service, here or there.
#[derive(Clone)]
pub enum ProjectsApi {
    /// In this process.
    Local(Arc<Projects>),
    /// In another process.
    Remote(Rc<Remote>),
}

fn missing(what: &str) -> Failure {
    Failure::Unavailable(format!("the project service answered without {what}"))
}

impl ProjectsApi {
    async fn remote<Req: prost::Message, Resp: prost::Message + Default>(
        r: &Remote,
        method: &str,
        who: &Caller,
        req: Req,
    ) -> Result<Resp, Failure> {
        r.call(PROJECT_SERVICE, method, who, &req).await
    }

    fn project(p: Option<pp::Project>) -> Result<Project, Failure> {
        grpc::project_of(p.ok_or_else(|| missing("the project"))?)
    }

    /// See [`Projects::create`].
    pub async fn create(&self, who: &Caller, new: NewProject) -> Result<Project, Failure> {
        match self {
            Self::Local(p) => p.create(who, new).await,
            Self::Remote(r) => {
                let req = pp::CreateProjectRequest {
                    user_id: who.user_id.to_string(),
                    name: new.name,
                    description: new.description,
                    template_id: new.template_id.unwrap_or_default(),
                    design_json: new.design.unwrap_or_default(),
                    settings_json: new.settings.unwrap_or_default(),
                    ..Default::default()
                };
                let resp: pp::CreateProjectResponse =
                    Self::remote(r, "CreateProject", who, req).await?;
                Self::project(resp.project)
            }
        }
    }

    /// See [`Projects::get`].
    pub async fn get(&self, who: &Caller, id: &str) -> Result<Project, Failure> {
        match self {
            Self::Local(p) => p.get(who, id).await,
            Self::Remote(r) => {
                let req = pp::GetProjectRequest {
                    user_id: who.user_id.to_string(),
                    project_id: id.into(),
                };
                let resp: pp::GetProjectResponse = Self::remote(r, "GetProject", who, req).await?;
                Self::project(resp.project)
            }
        }
    }

    /// See [`Projects::list`].
    pub async fn list(&self, who: &Caller, filter: &Filter) -> Result<Page, Failure> {
        match self {
            Self::Local(p) => p.list(who, filter).await,
            Self::Remote(r) => {
                let req = pp::ListProjectsRequest {
                    user_id: who.user_id.to_string(),
                    page_size: filter.per_page.clamp(1, 100) as i32,
                    page_token: filter.page.max(1).to_string(),
                    name_contains: filter.query.clone().unwrap_or_default(),
                    min_role: filter.role.map_or(0, |r| grpc::role_pb(r) as i32),
                };
                let resp: pp::ListProjectsResponse =
                    Self::remote(r, "ListProjects", who, req).await?;
                Ok(Page {
                    projects: resp
                        .projects
                        .into_iter()
                        .map(grpc::project_of)
                        .collect::<Result<_, _>>()?,
                    page: resp.page.into(),
                    per_page: resp.page_size.into(),
                    total: resp.total,
                })
            }
        }
    }

    /// See [`Projects::update`].
    pub async fn update(&self, who: &Caller, id: &str, change: Change) -> Result<Project, Failure> {
        match self {
            Self::Local(p) => p.update(who, id, change).await,
            Self::Remote(r) => {
                let req = pp::UpdateProjectRequest {
                    user_id: who.user_id.to_string(),
                    project_id: id.into(),
                    expected_version: change.expected_version.unwrap_or(0),
                    name: change.name,
                    description: change.description,
                    design_json: change.design,
                    settings_json: change.settings,
                    ..Default::default()
                };
                let resp: pp::UpdateProjectResponse =
                    Self::remote(r, "UpdateProject", who, req).await?;
                Self::project(resp.project)
            }
        }
    }

    /// See [`Projects::delete`].
    pub async fn delete(&self, who: &Caller, id: &str) -> Result<(), Failure> {
        match self {
            Self::Local(p) => p.delete(who, id).await,
            Self::Remote(r) => {
                let req = pp::DeleteProjectRequest {
                    user_id: who.user_id.to_string(),
                    project_id: id.into(),
                };
                let _: pp::DeleteProjectResponse =
                    Self::remote(r, "DeleteProject", who, req).await?;
                Ok(())
            }
        }
    }

    /// See [`Projects::share`].
    pub async fn share(
        &self,
        who: &Caller,
        id: &str,
        user: &str,
        role: Option<Role>,
    ) -> Result<Vec<Member>, Failure> {
        match self {
            Self::Local(p) => p.share(who, id, user, role).await,
            Self::Remote(r) => {
                let req = pp::ShareProjectRequest {
                    user_id: who.user_id.to_string(),
                    project_id: id.into(),
                    grantee: user.into(),
                    role: role.map_or(0, |r| grpc::role_pb(r) as i32),
                };
                let resp: pp::ShareProjectResponse =
                    Self::remote(r, "ShareProject", who, req).await?;
                Ok(resp.members.into_iter().map(grpc::member_of).collect())
            }
        }
    }

    /// See [`Projects::members`].
    pub async fn members(&self, who: &Caller, id: &str) -> Result<Vec<Member>, Failure> {
        match self {
            Self::Local(p) => p.members(who, id).await,
            Self::Remote(r) => {
                let req = pp::GetProjectPermissionsRequest {
                    user_id: who.user_id.to_string(),
                    project_id: id.into(),
                };
                let resp: pp::GetProjectPermissionsResponse =
                    Self::remote(r, "GetProjectPermissions", who, req).await?;
                Ok(resp.members.into_iter().map(grpc::member_of).collect())
            }
        }
    }

    /// See [`Projects::versions`].
    pub async fn versions(&self, who: &Caller, id: &str) -> Result<Vec<Version>, Failure> {
        match self {
            Self::Local(p) => p.versions(who, id).await,
            Self::Remote(r) => {
                let req = pp::ListVersionsRequest {
                    user_id: who.user_id.to_string(),
                    project_id: id.into(),
                };
                let resp: pp::ListVersionsResponse =
                    Self::remote(r, "ListVersions", who, req).await?;
                resp.versions.into_iter().map(grpc::version_of).collect()
            }
        }
    }

    /// See [`Projects::rollback`].
    pub async fn rollback(&self, who: &Caller, id: &str, version: i64) -> Result<Project, Failure> {
        match self {
            Self::Local(p) => p.rollback(who, id, version).await,
            Self::Remote(r) => {
                let req = pp::RollbackProjectRequest {
                    user_id: who.user_id.to_string(),
                    project_id: id.into(),
                    version,
                };
                let resp: pp::UpdateProjectResponse =
                    Self::remote(r, "RollbackProject", who, req).await?;
                Self::project(resp.project)
            }
        }
    }

    /// See [`Projects::export`].
    pub async fn export(&self, who: &Caller, id: &str) -> Result<sonic_rs::Value, Failure> {
        match self {
            Self::Local(p) => p.export(who, id).await,
            Self::Remote(r) => {
                let req = pp::ExportProjectRequest {
                    user_id: who.user_id.to_string(),
                    project_id: id.into(),
                };
                let resp: pp::ExportProjectResponse =
                    Self::remote(r, "ExportProject", who, req).await?;
                sonic_rs::from_str(&resp.document_json)
                    .map_err(|_| missing("a JSON export document"))
            }
        }
    }

    /// See [`Projects::import`].
    pub async fn import(&self, who: &Caller, doc: &str) -> Result<Project, Failure> {
        match self {
            Self::Local(p) => p.import(who, doc).await,
            Self::Remote(r) => {
                let req = pp::ImportProjectRequest {
                    user_id: who.user_id.to_string(),
                    document_json: doc.into(),
                };
                let resp: pp::GetProjectResponse =
                    Self::remote(r, "ImportProject", who, req).await?;
                Self::project(resp.project)
            }
        }
    }

    /// See [`Projects::templates`].
    pub async fn templates(&self, who: &Caller) -> Result<Vec<TemplateInfo>, Failure> {
        match self {
            Self::Local(p) => p.templates(who).await,
            Self::Remote(r) => {
                let req = pp::ListTemplatesRequest {
                    user_id: who.user_id.to_string(),
                    kind: String::new(),
                };
                let resp: pp::ListTemplatesResponse =
                    Self::remote(r, "ListTemplates", who, req).await?;
                resp.templates.into_iter().map(grpc::template_of).collect()
            }
        }
    }

    /// See [`Projects::template`].
    pub async fn template(&self, who: &Caller, id: &str) -> Result<TemplateInfo, Failure> {
        match self {
            Self::Local(p) => p.template(who, id).await,
            Self::Remote(r) => {
                let req = pp::GetTemplateRequest {
                    user_id: who.user_id.to_string(),
                    template_id: id.into(),
                };
                let resp: pp::GetTemplateResponse =
                    Self::remote(r, "GetTemplate", who, req).await?;
                grpc::template_of(resp.template.ok_or_else(|| missing("the template"))?)
            }
        }
    }

    /// See [`Projects::save_template`].
    pub async fn save_template(
        &self,
        who: &Caller,
        name: &str,
        description: &str,
        design: &str,
    ) -> Result<TemplateInfo, Failure> {
        match self {
            Self::Local(p) => p.save_template(who, name, description, design).await,
            Self::Remote(r) => {
                let req = pp::CreateTemplateRequest {
                    user_id: who.user_id.to_string(),
                    name: name.into(),
                    description: description.into(),
                    design_json: design.into(),
                };
                let resp: pp::GetTemplateResponse =
                    Self::remote(r, "CreateTemplate", who, req).await?;
                grpc::template_of(resp.template.ok_or_else(|| missing("the template"))?)
            }
        }
    }
}

/// The simulation service, here or there.
#[derive(Clone)]
pub enum SimulationsApi {
    /// In this process.
    Local(Arc<Simulations>),
    /// In another process.
    Remote(Rc<Remote>),
}

impl SimulationsApi {
    async fn remote<Req: prost::Message, Resp: prost::Message + Default>(
        r: &Remote,
        method: &str,
        who: &Caller,
        req: Req,
    ) -> Result<Resp, Failure> {
        r.call(SIMULATION_SERVICE, method, who, &req).await
    }

    fn run(run: Option<ps::GetSimulationStatusResponse>) -> Result<Run, Failure> {
        run.map(grpc::run_of).ok_or_else(|| {
            Failure::Unavailable("the simulation service answered without the run".into())
        })
    }

    /// See [`Simulations::validate`].
    pub async fn validate(&self, who: &Caller, design: &str) -> Result<Validation, Failure> {
        match self {
            Self::Local(s) => s.validate(design).await,
            Self::Remote(r) => {
                let req = ps::ValidateConfigurationRequest {
                    user_id: who.user_id.to_string(),
                    design_json: design.into(),
                };
                let resp: ps::ValidateConfigurationResponse =
                    Self::remote(r, "ValidateConfiguration", who, req).await?;
                Ok(Validation {
                    valid: resp.valid,
                    problems: resp
                        .problems
                        .into_iter()
                        .map(|p| crate::DesignProblem {
                            path: p.path,
                            message: p.message,
                        })
                        .collect(),
                })
            }
        }
    }

    /// See [`Simulations::start`].
    pub async fn start(&self, who: &Caller, start: StartRequest) -> Result<Run, Failure> {
        match self {
            Self::Local(s) => s.start(who, start).await,
            Self::Remote(r) => {
                let req = ps::StartSimulationRequest {
                    user_id: who.user_id.to_string(),
                    project_id: start.project_id,
                    duration_s: start.duration_s,
                    seed: start.seed,
                    speed: start.speed,
                };
                let resp: ps::StartSimulationResponse =
                    Self::remote(r, "StartSimulation", who, req).await?;
                Self::run(resp.simulation)
            }
        }
    }

    /// See [`Simulations::get`].
    pub async fn get(&self, who: &Caller, id: &str) -> Result<Run, Failure> {
        match self {
            Self::Local(s) => s.get(who, id).await,
            Self::Remote(r) => {
                let req = ps::GetSimulationStatusRequest {
                    user_id: who.user_id.to_string(),
                    simulation_id: id.into(),
                };
                let resp = Self::remote(r, "GetSimulationStatus", who, req).await?;
                Ok(grpc::run_of(resp))
            }
        }
    }

    /// See [`Simulations::stop`].
    pub async fn stop(&self, who: &Caller, id: &str) -> Result<Run, Failure> {
        match self {
            Self::Local(s) => s.stop(who, id).await,
            Self::Remote(r) => {
                let req = ps::StopSimulationRequest {
                    user_id: who.user_id.to_string(),
                    simulation_id: id.into(),
                };
                let resp: ps::StopSimulationResponse =
                    Self::remote(r, "StopSimulation", who, req).await?;
                Self::run(resp.simulation)
            }
        }
    }

    /// See [`Simulations::results`].
    pub async fn results(&self, who: &Caller, id: &str) -> Result<Results, Failure> {
        match self {
            Self::Local(s) => s.results(who, id).await,
            Self::Remote(r) => {
                let req = ps::GetSimulationResultsRequest {
                    user_id: who.user_id.to_string(),
                    simulation_id: id.into(),
                };
                let resp = Self::remote(r, "GetSimulationResults", who, req).await?;
                grpc::results_of(resp)
            }
        }
    }

    /// See [`Simulations::history`].
    pub async fn history(
        &self,
        who: &Caller,
        project_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Run>, Failure> {
        match self {
            Self::Local(s) => s.history(who, project_id, limit).await,
            Self::Remote(r) => {
                let req = ps::GetSimulationHistoryRequest {
                    user_id: who.user_id.to_string(),
                    project_id: project_id.unwrap_or_default().into(),
                    page_size: limit.clamp(1, 200) as i32,
                };
                let resp: ps::GetSimulationHistoryResponse =
                    Self::remote(r, "GetSimulationHistory", who, req).await?;
                Ok(resp.runs.into_iter().map(grpc::run_of).collect())
            }
        }
    }
}
