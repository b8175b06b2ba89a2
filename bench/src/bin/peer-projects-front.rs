//! The front of the split project peer (`bench-hop`): `GET /api/projects/{id}` as
//! `peer-projects` serves it, but with the role check and row read in another process,
//! `peer-projects-back`, called over gRPC — the way a careful user of axum, jsonwebtoken and
//! tonic would split the service, as sdsim's gateway reaches a project-only process.
//!
//! `peer-projects-front --listen 127.0.0.1:9300 --back 127.0.0.1:9301
//!  --jwks http://127.0.0.1:8000/.well-known/jwks.json --service-token TOKEN --cpus 0`
//!
//! Per request: the bearer token is verified and the permission checked exactly as
//! `peer-projects` does (the same code, `sdsim_bench::peer_projects`), then one `GetProject`
//! call with sdsim's own messages (`sdsim.project.v1`): the user id in the request, the
//! service token as `authorization` metadata; the answer's message becomes the same JSON the
//! one-process peer answers (design and settings passed through as raw JSON). NOT_FOUND is a
//! 404, any other failure a 503.
//!
//! Configuration, as a careful user would choose it: `peer-projects`' runtime (tokio
//! multi-thread, one worker per CPU); one tonic `Channel` made at start and shared by every
//! request (cloning a client clones a handle to the same connection), TCP_NODELAY, connect
//! timeout 1 s and HTTP/2 keepalive pings every 1 s, unanswered for 10 s dropping the
//! connection, idle or not (sdsim's internal client: `connect_timeout`, `client_keepalive`,
//! `client_keepalive_timeout`), and a 15 s deadline per call (sdsim's `service_timeout`).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use mimalloc::MiMalloc;
use sdsim_bench::peer_projects::{
    answer, fail, not_found, pin, runtime, ApiError, Project, Verifier,
};
use sdsim_bench::project_proto::project_service_client::ProjectServiceClient;
use sdsim_bench::project_proto::GetProjectRequest;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

#[derive(Parser)]
struct Args {
    /// Address to listen on (HTTP).
    #[arg(long, default_value = "127.0.0.1:9300")]
    listen: SocketAddr,
    /// The back's gRPC address.
    #[arg(long)]
    back: SocketAddr,
    /// sdsim's JWKS: http://HOST:PORT/.well-known/jwks.json (fetched once) or file:///PATH.
    #[arg(long)]
    jwks: String,
    /// The token the back wants from its callers.
    #[arg(long)]
    service_token: String,
    /// CPUs to pin the process to; tokio gets one worker per CPU. Default: inherited mask.
    #[arg(long, value_delimiter = ',')]
    cpus: Vec<usize>,
}

struct Front {
    verifier: Verifier,
    back: ProjectServiceClient<Channel>,
    service_authorization: MetadataValue<tonic::metadata::Ascii>,
}

async fn get_project(
    State(front): State<Arc<Front>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Project>, ApiError> {
    let (user, admin) = front.verifier.caller(&headers, "project:read")?;
    let mut request = tonic::Request::new(GetProjectRequest {
        user_id: user,
        project_id: id.clone(),
    });
    let metadata = request.metadata_mut();
    metadata.insert("authorization", front.service_authorization.clone());
    if admin {
        metadata.insert("x-caller-admin", MetadataValue::from_static("1"));
    }
    let reply = front
        .back
        .clone()
        .get_project(request)
        .await
        .map_err(|status| match status.code() {
            Code::NotFound => not_found(&id),
            _ => fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("the project service: {}", status.message()),
            ),
        })?;
    let project = reply.into_inner().project.ok_or_else(|| {
        fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the project service answered no project".into(),
        )
    })?;
    Ok(Json(answer(project)?))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    pin(&args.cpus)?;
    let verifier = Verifier::from_jwks(&args.jwks)?;
    let service_authorization = format!("Bearer {}", args.service_token).parse()?;
    let endpoint = Endpoint::from_shared(format!("http://{}", args.back))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(1))
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .timeout(Duration::from_secs(15));
    runtime()?.block_on(async move {
        let front = Arc::new(Front {
            verifier,
            back: ProjectServiceClient::new(endpoint.connect().await?),
            service_authorization,
        });
        let router = Router::new()
            .route("/api/projects/{id}", get(get_project))
            .route("/health", get(|| async { "ok" }))
            .with_state(front);
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        axum::serve(listener, router).await?;
        Ok(())
    })
}
