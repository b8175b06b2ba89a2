//! One shard of a server, top-down: install the gateway and every role, build the public
//! router, serve each role's own listeners, then the public listener until the server drains.

use crate::composition::Composition;
use crate::config::Config;
use crate::listen::{grpc_accept_loop, http_context};
use crate::role::{Role, ShardContext, ShardRole};
use sdsim_auth::authn::Authenticator;
use sdsim_contract::Authenticate;
use sdsim_core::metrics::Metrics;
use sdsim_core::runtime::Shard;
use sdsim_net::grpc::health::Health;
use sdsim_net::grpc::reflection::Reflection;
use sdsim_net::grpc::Services;
use sdsim_net::http::router::Router;
use sdsim_net::middleware::service_callers::IsServiceToken;
use sdsim_net::middleware::{App, Stack, StackConfig};
use sdsim_net::server::{accept_loop, drain_shard};
use std::rc::Rc;
use std::sync::Arc;

/// Routes an embedder adds to every shard's public router.
pub(crate) type ExtraRoutes = dyn Fn(&mut Router) + Send + Sync;

/// Runs shard `shard` until the server has drained.
pub(crate) async fn run(shard: Shard, c: Arc<Composition>, extra_routes: Arc<ExtraRoutes>) {
    let config = &c.config;
    let metrics = shard.insert(Metrics::new());
    let layers = StackFactory::new(config, &metrics);
    let realtime = sdsim_gateway::install_shard(&shard, &c.gateway, Rc::clone(&metrics));
    let on = ShardContext {
        shard: &shard,
        gateway: &c.gateway,
        realtime: &realtime,
        metrics: &metrics,
        auth: c.auth.as_ref(),
        directory: &c.directory,
    };
    let roles: Vec<(&dyn Role, Box<dyn ShardRole>)> = c
        .roles
        .iter()
        .map(|role| (role.as_ref(), role.on_shard(&on)))
        .collect();
    let mut router = Router::new();
    for (_, on_shard) in &roles {
        on_shard.public_routes(&mut router);
    }
    extra_routes(&mut router);
    let index = shard.id().index();
    let listener = match c.public.take(index) {
        Some(Ok(listener)) => listener,
        Some(Err(e)) => {
            tracing::error!(shard = index, error = %e, "cannot use the gateway listener");
            c.gateway.shutdown.close();
            return;
        }
        None => return,
    };
    tracing::info!(
        shard = index,
        cpu = shard.cpu(),
        driver = shard.driver(),
        "shard serving"
    );
    for (role, on_shard) in &roles {
        serve_role(&shard, &c, *role, on_shard.as_ref(), &layers);
    }
    let ctx = http_context(&c, App::new(router, layers.stack()));
    accept_loop(&shard, listener, ctx).await;
    drain_shard(&shard, &c.gateway.shutdown).await;
}

/// Spawns the accept loops of `role`'s own HTTP and gRPC listeners on this shard, when this
/// process runs it.
fn serve_role(
    shard: &Shard,
    c: &Arc<Composition>,
    role: &dyn Role,
    on_shard: &dyn ShardRole,
    layers: &StackFactory,
) {
    let Some(listeners) = role.listeners() else {
        return;
    };
    let (http_task, grpc_task) = listeners.tasks;
    let index = shard.id().index();
    if let Some(Ok(listener)) = listeners.http.take(index) {
        let mut router = Router::new();
        sdsim_gateway::health::register(&mut router, &c.gateway);
        sdsim_gateway::openapi::register(&mut router);
        on_shard.own_routes(&mut router);
        let ctx = http_context(c, App::new(router, layers.stack()));
        let s = shard.clone();
        shard.spawn(http_task, async move {
            accept_loop(&s, listener, ctx).await;
        });
    }
    if let Some(Ok(listener)) = listeners.grpc.take(index) {
        let mut services = Services::new();
        services.set_layers(layers.stack().layers());
        let Some(name) = on_shard.grpc(&mut services) else {
            return;
        };
        let phase = sdsim_net::server::shard_phase(shard, &c.gateway.shutdown);
        Health::new(&["", name], phase).register(&mut services);
        if c.config.grpc.reflection {
            reflection().register(&mut services);
        }
        let services = Rc::new(services);
        let (s, c) = (shard.clone(), Arc::clone(c));
        shard.spawn(grpc_task, async move {
            grpc_accept_loop(&s, listener, services, c).await;
        });
    }
}

/// Builds this shard's layer stack, once per listener (every listener has its own).
struct StackFactory {
    config: StackConfig,
    metrics: Rc<Metrics>,
    service_tokens: Option<IsServiceToken>,
}

impl StackFactory {
    fn new(config: &Config, metrics: &Rc<Metrics>) -> StackFactory {
        StackFactory {
            config: StackConfig {
                http: config.http.clone(),
                ratelimit: config.ratelimit.clone(),
                cors: config.cors.clone(),
                shedding: config.shedding.clone(),
                compression: config.compression.clone(),
                log: config.log.clone(),
            },
            metrics: Rc::clone(metrics),
            service_tokens: service_tokens(config),
        }
    }

    fn stack(&self) -> Stack {
        Stack::from_config(
            &self.config,
            Rc::clone(&self.metrics),
            self.service_tokens.clone(),
        )
    }
}

/// Recognises service tokens (`auth.tokens` with role `service`) for the rate limit, which
/// does not count them per IP: a gateway forwards all its users' calls from one address, each
/// already limited by the user's own. `None` when no such token is configured.
fn service_tokens(config: &Config) -> Option<IsServiceToken> {
    let lengths: Vec<usize> = config
        .auth
        .tokens
        .iter()
        .filter(|t| t.roles.iter().any(|r| r == "service"))
        .map(|t| t.token.len())
        .collect();
    // Under auth.dev_open no token names a service.
    if lengths.is_empty() || !config.ratelimit.enabled || config.auth.dev_open {
        return None;
    }
    // Static tokens only: an access token never names a service.
    let tokens = Authenticator::new(&config.auth, None);
    // Hashing every bearer token would tax user calls for nothing: few lengths match.
    Some(Rc::new(move |token: &str| {
        lengths.contains(&token.len())
            && tokens
                .authenticate(Some(token))
                .is_ok_and(|caller| caller.is_service())
    }))
}

/// The descriptors of every gRPC contract this binary can serve, for server reflection (each
/// listener lists only the services it has).
fn reflection() -> Reflection {
    Reflection::new(&[
        sdsim_net::grpc::FILE_DESCRIPTOR_SET,
        sdsim_auth::FILE_DESCRIPTOR_SET,
        sdsim_projects::FILE_DESCRIPTOR_SET,
        sdsim_simulations::FILE_DESCRIPTOR_SET,
    ])
    .expect("the descriptor sets built from proto/ decode and agree")
}
