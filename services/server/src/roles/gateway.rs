//! The gateway role: health, metrics, monitoring and real time on the public listener. Every
//! process serves the public listener; `server.roles` naming `gateway` also lets it reach
//! the project and simulation services over gRPC when they run elsewhere.

use crate::error::StartError;
use crate::role::{Parts, Role, ShardContext, ShardRole};
use sdsim_gateway::state::ServiceHealth;
use sdsim_gateway::GatewayState;
use sdsim_net::http::router::Router;
use std::sync::Arc;

/// The gateway role.
pub struct GatewayRole {
    configured: bool,
}

impl GatewayRole {
    /// Its entry in the role list.
    pub fn start(parts: &mut Parts<'_>) -> Result<Box<dyn Role>, StartError> {
        Ok(Box::new(GatewayRole {
            configured: parts.config.has_role("gateway"),
        }))
    }
}

impl Role for GatewayRole {
    fn name(&self) -> &'static str {
        "gateway"
    }

    fn health(&self) -> ServiceHealth {
        let (status, detail) = if self.configured {
            ("up", "served in this process on every shard")
        } else {
            ("not_configured", "this process does not run the role")
        };
        ServiceHealth {
            name: "gateway",
            configured: self.configured,
            status,
            detail: detail.into(),
        }
    }

    fn on_shard(&self, on: &ShardContext<'_>) -> Box<dyn ShardRole> {
        Box::new(GatewayOnShard(Arc::clone(on.gateway)))
    }
}

struct GatewayOnShard(Arc<GatewayState>);

impl ShardRole for GatewayOnShard {
    fn public_routes(&self, router: &mut Router) {
        sdsim_gateway::register(router, &self.0);
    }
}
