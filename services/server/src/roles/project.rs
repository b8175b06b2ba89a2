//! The project role: the project API (templates, projects, versions, sharing) on the public
//! listener and on its own HTTP and gRPC listeners. When it runs elsewhere, the gateway
//! serves the same routes through the service's gRPC client.

use crate::config::Config;
use crate::error::StartError;
use crate::role::{health_line, remote, remote_address, Parts, Role, RoleListeners};
use crate::role::{ShardContext, ShardRole};
use sdsim_contract::Authenticate;
use sdsim_gateway::state::ServiceHealth;
use sdsim_mesh::Service;
use sdsim_net::grpc::Services;
use sdsim_net::http::router::Router;
use sdsim_projects::projects::{ProjectContract, ProjectService, Projects, RemoteProjects};
use std::rc::Rc;
use std::sync::Arc;

/// The project role.
pub struct ProjectRole {
    /// The service and its listeners, when this process runs the role.
    local: Option<(Arc<Projects>, RoleListeners)>,
    config: Arc<Config>,
    health: ServiceHealth,
}

impl ProjectRole {
    /// Its entry in the role list.
    pub fn start(parts: &mut Parts<'_>) -> Result<Box<dyn Role>, StartError> {
        let config = parts.config;
        let local = if config.has_role("project") {
            // Tokens are verified with the auth service's keys, read from the shared storage,
            // even when the auth role runs elsewhere.
            parts.auth()?;
            let listeners = RoleListeners::bind(
                ("project.http_listen", &config.project.http_listen),
                ("project.grpc_listen", &config.project.grpc_listen),
                ("project-http-accept", "project-grpc-accept"),
                parts.shards,
            )?;
            Some((parts.projects(), listeners))
        } else {
            None
        };
        let remote = remote_address(config, &config.gateway.project_service);
        let health = health_line(config, "project", local.is_some(), remote.as_deref());
        Ok(Box::new(ProjectRole {
            local,
            config: Arc::new(config.clone()),
            health,
        }))
    }
}

impl Role for ProjectRole {
    fn name(&self) -> &'static str {
        "project"
    }

    fn listeners(&self) -> Option<&RoleListeners> {
        self.local.as_ref().map(|(_, l)| l)
    }

    fn health(&self) -> ServiceHealth {
        self.health.clone()
    }

    fn on_shard(&self, on: &ShardContext<'_>) -> Box<dyn ShardRole> {
        let local = self
            .local
            .as_ref()
            .map(|(p, _)| Rc::new(Arc::clone(p)) as Rc<dyn ProjectService>);
        let config = &self.config;
        let client = local.clone().or_else(|| {
            remote_address(config, &config.gateway.project_service)?;
            remote(config, Service::Project, on)
                .map(|r| Rc::new(RemoteProjects(r)) as Rc<dyn ProjectService>)
        });
        Box::new(ProjectOnShard {
            local,
            client,
            authn: Arc::clone(&on.gateway.authenticator),
        })
    }
}

struct ProjectOnShard {
    /// The service in this process.
    local: Option<Rc<dyn ProjectService>>,
    /// The service as the public listener reaches it: in process, else over gRPC.
    client: Option<Rc<dyn ProjectService>>,
    authn: Arc<dyn Authenticate>,
}

impl ShardRole for ProjectOnShard {
    fn public_routes(&self, router: &mut Router) {
        if let Some(p) = &self.client {
            sdsim_projects::http::register_projects(router, p, &self.authn);
        }
    }

    fn own_routes(&self, router: &mut Router) {
        if let Some(p) = &self.local {
            sdsim_projects::http::register_projects(router, p, &self.authn);
        }
    }

    fn grpc(&self, services: &mut Services) -> Option<&'static str> {
        let p = self.local.as_ref()?;
        ProjectContract::register(services, Rc::clone(p), Arc::clone(&self.authn));
        Some(ProjectContract::SERVICE)
    }
}
