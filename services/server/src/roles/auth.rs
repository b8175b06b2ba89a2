//! The auth role: accounts, sessions and tokens on the public listener and on its own HTTP
//! and gRPC listeners. The auth service's shard tasks (revocations, key refresh, mail) run
//! wherever the service was started, also for the project and simulation roles, which verify
//! tokens with its keys.

use crate::error::StartError;
use crate::role::{health_line, Parts, Role, RoleListeners, ShardContext, ShardRole};
use sdsim_auth::{Auth, AuthContract};
use sdsim_contract::Authenticate;
use sdsim_gateway::state::ServiceHealth;
use sdsim_net::grpc::Services;
use sdsim_net::http::router::Router;
use std::rc::Rc;
use std::sync::Arc;

/// The auth role.
pub struct AuthRole {
    /// The service and its listeners, when this process runs the role.
    local: Option<(Arc<Auth>, RoleListeners)>,
    health: ServiceHealth,
}

impl AuthRole {
    /// Its entry in the role list.
    pub fn start(parts: &mut Parts<'_>) -> Result<Box<dyn Role>, StartError> {
        let config = parts.config;
        let local = if config.has_role("auth") {
            let auth = parts.auth()?;
            let listeners = RoleListeners::bind(
                ("auth.http_listen", &config.auth.http_listen),
                ("auth.grpc_listen", &config.auth.grpc_listen),
                ("auth-http-accept", "auth-grpc-accept"),
                parts.shards,
            )?;
            Some((auth, listeners))
        } else {
            None
        };
        let health = health_line(config, "auth", local.is_some(), None);
        Ok(Box::new(AuthRole { local, health }))
    }
}

impl Role for AuthRole {
    fn name(&self) -> &'static str {
        "auth"
    }

    fn listeners(&self) -> Option<&RoleListeners> {
        self.local.as_ref().map(|(_, l)| l)
    }

    fn health(&self) -> ServiceHealth {
        self.health.clone()
    }

    fn on_shard(&self, on: &ShardContext<'_>) -> Box<dyn ShardRole> {
        if let Some(auth) = on.auth {
            sdsim_auth::install_shard(
                auth,
                on.shard,
                Rc::clone(&on.realtime.bus),
                Rc::clone(on.metrics),
            );
        }
        Box::new(AuthOnShard {
            auth: self.local.as_ref().map(|(a, _)| Arc::clone(a)),
            authn: Arc::clone(&on.gateway.authenticator),
        })
    }
}

struct AuthOnShard {
    auth: Option<Arc<Auth>>,
    authn: Arc<dyn Authenticate>,
}

impl ShardRole for AuthOnShard {
    fn public_routes(&self, router: &mut Router) {
        self.own_routes(router);
    }

    fn own_routes(&self, router: &mut Router) {
        if let Some(auth) = &self.auth {
            sdsim_auth::http::register(router, auth, &self.authn);
        }
    }

    fn grpc(&self, services: &mut Services) -> Option<&'static str> {
        let auth = self.auth.as_ref()?;
        AuthContract::register(services, Rc::new(Arc::clone(auth)), Arc::clone(&self.authn));
        Some(AuthContract::SERVICE)
    }
}
