//! The HTTP API of the simulation service (`/api/simulations/*`, mounted on the gateway and on
//! the service's own listeners), over its contract: the same handlers serve whether the service
//! runs in this process or in another one. Errors are the project service's error bodies
//! (`sdsim_projects::http`).

use crate::contract::{HistoryQuery, SweepId};
use crate::{ChangeRequest, SimulationService, StartRequest};
use http::{Method, StatusCode};
use sdsim_contract::{http_caller, Authenticate};
use sdsim_net::http::router::Router;
use sdsim_net::http::types::{json_body as body, Request, Response};
use sdsim_projects::http::{int_query, param, query, respond};
use serde::{Deserialize, Serialize};
use std::rc::Rc;
use std::sync::Arc;

macro_rules! try_or {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(resp) => return *resp,
        }
    };
}

// The request bodies are public so that the fuzz targets decode them exactly as the handlers do.

/// The body of `POST /api/simulations`.
#[derive(Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StartBody {
    /// The project whose design runs.
    pub project_id: String,
    /// Simulated seconds.
    #[serde(default)]
    pub duration_s: Option<f64>,
    /// Seed of the random streams.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Simulated seconds per wall-clock second.
    #[serde(default)]
    pub speed: Option<f64>,
}

/// The body of `POST /api/simulations/validate`.
#[derive(Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateBody {
    /// The design document to check.
    pub design: sonic_rs::Value,
}

fn add<F, Fut>(router: &mut Router, method: Method, path: &str, handler: F)
where
    F: Fn(Request) -> Fut + 'static,
    Fut: std::future::Future<Output = Response> + 'static,
{
    router
        .route(method, path, handler)
        .expect("simulation routes are registered once");
}

/// Registers the simulation routes (`/api/simulations/*`).
pub fn register_simulations(
    router: &mut Router,
    sims: &Rc<dyn SimulationService>,
    auth: &Arc<dyn Authenticate>,
) {
    macro_rules! route {
        ($method:expr, $path:expr, |$s:ident, $who:ident, $req:ident| $body:expr) => {{
            let (s, a) = (Rc::clone(sims), Arc::clone(auth));
            add(router, $method, $path, move |$req: Request| {
                let ($s, a) = (Rc::clone(&s), Arc::clone(&a));
                async move {
                    let $who = try_or!(http_caller(&*a, &$req));
                    $body
                }
            });
        }};
    }
    route!(Method::POST, "/api/simulations", |s, who, req| {
        let b: StartBody = try_or!(body(
            &req,
            r#"{"project_id": string, "duration_s"?: number, "seed"?: integer, "speed"?: number}"#
        ));
        let start = StartRequest {
            project_id: b.project_id,
            duration_s: b.duration_s,
            seed: b.seed,
            speed: b.speed,
        };
        respond(StatusCode::ACCEPTED, s.start_simulation(&who, start).await)
    });
    route!(Method::GET, "/api/simulations", |s, who, req| {
        let limit = try_or!(int_query(&req, "limit", 50));
        let project = query(&req, "project_id");
        respond(
            StatusCode::OK,
            s.get_simulation_history(
                &who,
                HistoryQuery {
                    project_id: project,
                    limit,
                },
            )
            .await
            .map(|simulations| History { simulations }),
        )
    });
    route!(Method::POST, "/api/simulations/validate", |s, who, req| {
        let b: ValidateBody = try_or!(body(&req, r#"{"design": object}"#));
        respond(
            StatusCode::OK,
            s.validate_configuration(&who, b.design.to_string()).await,
        )
    });
    route!(Method::POST, "/api/simulations/sweeps", |s, who, req| {
        // The JSON types are checked here; what the fields mean, by the service.
        let sweep = match crate::sweeps::sweep_of_body(req.body()) {
            Ok(sweep) => sweep,
            Err(f) => return respond::<()>(StatusCode::BAD_REQUEST, Err(f)),
        };
        respond(StatusCode::ACCEPTED, s.start_sweep(&who, sweep).await)
    });
    route!(
        Method::GET,
        "/api/simulations/sweeps/{id}",
        |s, who, req| {
            let id = SweepId(param(&req, "id"));
            respond(StatusCode::OK, s.get_sweep(&who, id).await)
        }
    );
    route!(
        Method::DELETE,
        "/api/simulations/sweeps/{id}",
        |s, who, req| {
            let id = SweepId(param(&req, "id"));
            respond(StatusCode::OK, s.stop_sweep(&who, id).await)
        }
    );
    route!(Method::GET, "/api/simulations/{id}", |s, who, req| respond(
        StatusCode::OK,
        s.get_simulation_status(&who, param(&req, "id")).await
    ));
    route!(Method::PATCH, "/api/simulations/{id}", |s, who, req| {
        // Malformed bodies are refused here, before a trip to the run's shard.
        let changes = match crate::runs::changes_of_body(req.body()) {
            Ok(changes) => changes,
            Err(f) => return respond::<()>(StatusCode::BAD_REQUEST, Err(f)),
        };
        let change = ChangeRequest {
            simulation_id: param(&req, "id"),
            changes,
        };
        respond(
            StatusCode::ACCEPTED,
            s.change_simulation(&who, change).await,
        )
    });
    route!(Method::POST, "/api/simulations/{id}/stop", |s, who, req| {
        respond(
            StatusCode::OK,
            s.stop_simulation(&who, param(&req, "id")).await,
        )
    });
    route!(
        Method::GET,
        "/api/simulations/{id}/results",
        |s, who, req| respond(
            StatusCode::OK,
            s.get_simulation_results(&who, param(&req, "id")).await
        )
    );
}

#[derive(serde::Serialize)]
struct History {
    simulations: Vec<crate::Run>,
}
