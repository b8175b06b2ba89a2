//! The simulation role: the queue and shard runners of simulation runs, their API on the
//! public listener and on its own HTTP and gRPC listeners, and who may watch a run's live
//! metrics over WebSocket. When it runs elsewhere, the gateway reaches it over gRPC.

use crate::config::Config;
use crate::error::StartError;
use crate::role::{
    client_connect, health_line, remote, remote_address, Parts, Role, RoleListeners,
};
use crate::role::{ShardContext, ShardRole};
use sdsim_contract::Authenticate;
use sdsim_contract::Remote;
use sdsim_gateway::state::ServiceHealth;
use sdsim_mesh::{Service, Target};
use sdsim_net::grpc::Services;
use sdsim_net::http::router::Router;
use sdsim_simulations::reports::ReportQueue;
use sdsim_simulations::{
    Failure, Owners, RemoteSimulations, SimulationContract, SimulationService, Simulations,
};
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

/// The simulation role.
pub struct SimulationRole {
    /// The service and its listeners, when this process runs the role.
    local: Option<(Arc<Simulations>, RoleListeners)>,
    config: Arc<Config>,
    health: ServiceHealth,
}

impl SimulationRole {
    /// Its entry in the role list.
    pub fn start(parts: &mut Parts<'_>) -> Result<Box<dyn Role>, StartError> {
        let config = parts.config;
        let local = if config.has_role("simulation") {
            parts.auth()?;
            let listeners = RoleListeners::bind(
                ("simulation.http_listen", &config.simulation.http_listen),
                ("simulation.grpc_listen", &config.simulation.grpc_listen),
                ("simulation-http-accept", "simulation-grpc-accept"),
                parts.shards,
            )?;
            // Designs and access are read through the project service's storage layer, in
            // process.
            let simulations = Simulations::new(
                parts.store.clone(),
                parts.projects(),
                config.simulation.clone(),
                parts.shards,
                config.instance.resolved_id(),
            );
            let simulations = match &config.redis.url {
                Some(url) => simulations.with_reports(
                    ReportQueue::start(url, &config.instance.resolved_id())
                        .map_err(|e| StartError::Redis(e.to_string()))?,
                ),
                None => simulations,
            };
            Some((Arc::new(simulations), listeners))
        } else {
            None
        };
        let remote = remote_address(config, &config.gateway.simulation_service);
        let health = health_line(config, "simulation", local.is_some(), remote.as_deref());
        Ok(Box::new(SimulationRole {
            local,
            config: Arc::new(config.clone()),
            health,
        }))
    }
}

impl Role for SimulationRole {
    fn name(&self) -> &'static str {
        "simulation"
    }

    fn listeners(&self) -> Option<&RoleListeners> {
        self.local.as_ref().map(|(_, l)| l)
    }

    fn health(&self) -> ServiceHealth {
        self.health.clone()
    }

    fn registration_expired(&self) -> Option<sdsim_mesh::registry::ExpiredFn> {
        let (simulations, _) = self.local.as_ref()?;
        let simulations = Arc::clone(simulations);
        Some(Arc::new(move |service, instance| {
            if service == sdsim_mesh::Service::Simulation {
                simulations.instance_expired(&instance.id);
            }
        }))
    }

    fn on_shard(&self, on: &ShardContext<'_>) -> Box<dyn ShardRole> {
        if let Some((simulations, _)) = &self.local {
            simulations.install_shard(on.shard);
            if let Some(owners) = owners(&self.config, on) {
                on.shard.insert(owners);
            }
        }
        let local = self
            .local
            .as_ref()
            .map(|(s, _)| Rc::new(Arc::clone(s)) as Rc<dyn SimulationService>);
        let config = &self.config;
        let client = local.clone().or_else(|| {
            remote_address(config, &config.gateway.simulation_service)?;
            remote(config, Service::Simulation, on)
                .map(|r| Rc::new(RemoteSimulations(r)) as Rc<dyn SimulationService>)
        });
        // Who may watch `simulation:data:{id}` is the simulation service's decision.
        on.realtime.set_runs(client.clone());
        Box::new(SimulationOnShard {
            local,
            client,
            authn: Arc::clone(&on.gateway.authenticator),
        })
    }
}

struct SimulationOnShard {
    /// The service in this process.
    local: Option<Rc<dyn SimulationService>>,
    /// The service as the public listener reaches it: in process, else over gRPC.
    client: Option<Rc<dyn SimulationService>>,
    authn: Arc<dyn Authenticate>,
}

impl ShardRole for SimulationOnShard {
    fn public_routes(&self, router: &mut Router) {
        if let Some(s) = &self.client {
            sdsim_simulations::http::register_simulations(router, s, &self.authn);
        }
    }

    fn own_routes(&self, router: &mut Router) {
        if let Some(s) = &self.local {
            sdsim_simulations::http::register_simulations(router, s, &self.authn);
        }
    }

    fn grpc(&self, services: &mut Services) -> Option<&'static str> {
        let s = self.local.as_ref()?;
        SimulationContract::register(services, Rc::clone(s), Arc::clone(&self.authn));
        Some(SimulationContract::SERVICE)
    }
}

/// An instance reached at an address, and its service there.
type Reached = (SocketAddr, Rc<dyn SimulationService>);

/// How this shard forwards a live change to the simulation instance holding the run: the
/// instance as the registry (or the static list) gives it, one connection pool per instance
/// kept while its address stays the same. None without `gateway.service_token`, the token the
/// other instances must accept.
fn owners(config: &Arc<Config>, on: &ShardContext<'_>) -> Option<Owners> {
    if config.gateway.service_token.is_empty() {
        return None;
    }
    let connect = match client_connect(config) {
        Ok(connect) => connect,
        Err(e) => {
            tracing::error!(error = %e, "internal gRPC client TLS");
            return None;
        }
    };
    let directory = Arc::clone(on.directory);
    let config = Arc::clone(config);
    let known: RefCell<HashMap<String, Reached>> = RefCell::default();
    Some(Owners(Rc::new(move |id: &str| {
        let instances = directory.instances(Service::Simulation);
        let found = instances.iter().find(|i| i.id == id);
        let Some((instance, addr)) = found.and_then(|i| Some((i, i.grpc?))) else {
            return Err(Failure::Unavailable(format!(
                "simulation instance {id} holds the run but is not in the registry with a gRPC address"
            )));
        };
        if let Some((at, service)) = known.borrow().get(id) {
            if *at == addr {
                return Ok(Rc::clone(service));
            }
        }
        let target = Target::one(Service::Simulation, instance.clone(), config.mesh.clone());
        target.set_connect(connect.clone());
        let gw = &config.gateway;
        let remote = Remote::over(target, &gw.service_token, gw.service_timeout)
            .map_err(|e| Failure::Unavailable(format!("gateway.service_token: {e}")))?;
        let service = Rc::new(RemoteSimulations(remote)) as Rc<dyn SimulationService>;
        known
            .borrow_mut()
            .insert(id.to_string(), (addr, Rc::clone(&service)));
        Ok(service)
    })))
}
