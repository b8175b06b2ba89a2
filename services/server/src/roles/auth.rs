//! The auth role: accounts, sessions and tokens on the public listener and on its own HTTP
//! and gRPC listeners. The auth service's shard tasks (revocations, key refresh, mail) run
//! wherever the service was started, also for the project and simulation roles, which verify
//! tokens with its keys. A gateway that reaches the auth service in another process
//! (`gateway.auth_service`) serves `/api/auth/*` through it and, when no role of it started
//! the service, verifies tokens with the keys it fetches from it.

use crate::error::StartError;
use crate::role::{health_line, remote, remote_address, Parts, Role, RoleListeners};
use crate::role::{ShardContext, ShardRole};
use sdsim_auth::follower::KeyFollower;
use sdsim_auth::http::AfterLogout;
use sdsim_auth::{Auth, AuthContract, AuthService, RemoteAuth};
use sdsim_contract::Authenticate;
use sdsim_gateway::state::ServiceHealth;
use sdsim_mesh::Service;
use sdsim_net::grpc::Services;
use sdsim_net::http::router::Router;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

/// The auth role.
pub struct AuthRole {
    /// The service and its listeners, when this process runs the role.
    local: Option<(Arc<Auth>, RoleListeners)>,
    /// Where the gateway reaches the service, when this process does not run the role.
    remote: Option<String>,
    /// The keys fetched from the remote service.
    keys: Option<Arc<KeyFollower>>,
    config: Arc<crate::config::Config>,
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
        let remote = remote_address(config, &config.gateway.auth_service)
            .filter(|addrs| local.is_none() && !addrs.is_empty());
        // Made here, used only when no role of this process starts the auth service (the
        // project and simulation roles start it, later in the list, and verify with its keys).
        let keys = remote
            .as_ref()
            .map(|_| KeyFollower::new(&config.auth, parts.store.clone()));
        parts.auth_keys = keys.clone();
        let health = health_line(config, "auth", local.is_some(), remote.as_deref());
        Ok(Box::new(AuthRole {
            local,
            remote,
            keys,
            config: Arc::new(config.clone()),
            health,
        }))
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
        let local = self
            .local
            .as_ref()
            .map(|(a, _)| Rc::new(Arc::clone(a)) as Rc<dyn AuthService>);
        let client = local.clone().or_else(|| {
            self.remote.as_ref()?;
            remote(&self.config, Service::Auth, on)
                .map(|r| Rc::new(RemoteAuth(r)) as Rc<dyn AuthService>)
        });
        match (on.auth, &self.keys, &client) {
            (Some(auth), _, _) => sdsim_auth::install_shard(
                auth,
                on.shard,
                Rc::clone(&on.realtime.bus),
                Rc::clone(on.metrics),
            ),
            (None, Some(keys), Some(client)) => keys.install_shard(
                on.shard,
                Rc::clone(&on.realtime.bus),
                Rc::clone(on.metrics),
                Rc::clone(client),
            ),
            _ => {}
        }
        let remote_client = local.is_none() && client.is_some();
        let ttl = self.config.auth.access_ttl.as_secs() as i64;
        Box::new(AuthOnShard {
            local,
            client,
            authn: Arc::clone(&on.gateway.authenticator),
            // Every token of the session was issued before the logout: none outlives `ttl`.
            after_logout: remote_client.then(|| {
                Rc::new(move |session: String| {
                    let until = sdsim_auth::service::now() + ttl;
                    Box::pin(sdsim_auth::service::announce_revocation(
                        vec![session],
                        until,
                    )) as Pin<Box<dyn Future<Output = ()>>>
                }) as AfterLogout
            }),
        })
    }
}

struct AuthOnShard {
    /// The service in this process.
    local: Option<Rc<dyn AuthService>>,
    /// The service as the public listener reaches it: in process, else over gRPC.
    client: Option<Rc<dyn AuthService>>,
    authn: Arc<dyn Authenticate>,
    /// With a remote service: applies a logout's revocation on this process's shards at once.
    after_logout: Option<AfterLogout>,
}

impl ShardRole for AuthOnShard {
    fn public_routes(&self, router: &mut Router) {
        if let Some(auth) = &self.client {
            sdsim_auth::http::register(router, auth, &self.authn, self.after_logout.clone());
        }
    }

    fn own_routes(&self, router: &mut Router) {
        if let Some(auth) = &self.local {
            sdsim_auth::http::register(router, auth, &self.authn, None);
        }
    }

    fn grpc(&self, services: &mut Services) -> Option<&'static str> {
        let auth = self.local.as_ref()?;
        AuthContract::register(services, Rc::clone(auth), Arc::clone(&self.authn));
        Some(AuthContract::SERVICE)
    }
}
