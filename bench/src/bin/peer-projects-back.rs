//! The back of the split project peer (`bench-hop`): a tonic 0.14 server of sdsim's
//! `ProjectService` answering `GetProject` (the other methods: UNIMPLEMENTED) with what
//! `peer-projects` does after the token check: the caller's role looked up in
//! `project_members` and the project row read, in one blocking job on a reader connection
//! (the same code, `sdsim_bench::peer_projects`). The caller is `peer-projects-front`, which
//! has verified the user's token: it sends the user id in the request and the service token as
//! `authorization: Bearer …` metadata (sdsim's gateway does the same), and
//! `x-caller-admin` when the user is an admin.
//!
//! `peer-projects-back --listen 127.0.0.1:9301 --db /tmp/peer.db --seed projects.json
//!  --service-token TOKEN --cpus 0`
//!
//! Configuration, as a careful user would choose it: `peer-projects`' runtime and SQLite pool
//! (tokio multi-thread, one worker per CPU; 2 reader connections); tonic's server with
//! TCP_NODELAY and HTTP/2 keepalive pings every 30 s, unanswered for 10 s dropping the
//! connection (sdsim's server defaults).

use clap::Parser;
use mimalloc::MiMalloc;
use sdsim_bench::peer_projects::{load_message, open_database, pin, runtime, ApiError, Pool};
use sdsim_bench::project_proto::project_service_server::{ProjectService, ProjectServiceServer};
use sdsim_bench::project_proto::{GetProjectRequest, GetProjectResponse};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Code, Request, Response, Status};

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

#[derive(Parser)]
struct Args {
    /// Address to listen on (gRPC).
    #[arg(long, default_value = "127.0.0.1:9301")]
    listen: SocketAddr,
    /// The SQLite file (created with the schema when new).
    #[arg(long)]
    db: String,
    /// Projects to load at start (as for `peer-projects --seed`).
    #[arg(long)]
    seed: Option<String>,
    /// The token a caller must present (`authorization: Bearer TOKEN`).
    #[arg(long)]
    service_token: String,
    /// CPUs to pin the process to; tokio gets one worker per CPU. Default: inherited mask.
    #[arg(long, value_delimiter = ',')]
    cpus: Vec<usize>,
    /// Read connections in the pool.
    #[arg(long, default_value_t = 2)]
    readers: usize,
}

struct Back {
    readers: Arc<Pool>,
    service_token: String,
}

/// The gRPC status of an answer the one-process peer gives as HTTP (the front maps it back).
fn status(e: ApiError) -> Status {
    let code = match e.status.as_u16() {
        404 => Code::NotFound,
        _ => Code::Unavailable,
    };
    Status::new(
        code,
        e.body["error"]["message"].as_str().unwrap_or_default(),
    )
}

#[tonic::async_trait]
impl ProjectService for Back {
    async fn get_project(
        &self,
        request: Request<GetProjectRequest>,
    ) -> Result<Response<GetProjectResponse>, Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if token != Some(self.service_token.as_str()) {
            return Err(Status::unauthenticated("a service token is required"));
        }
        let admin = request.metadata().get("x-caller-admin").is_some();
        let GetProjectRequest {
            user_id,
            project_id,
        } = request.into_inner();
        if user_id.is_empty() {
            return Err(Status::invalid_argument("user_id: required"));
        }
        let project = self
            .readers
            .run(move |conn| load_message(conn, &project_id, &user_id, admin))
            .await
            .map_err(status)?;
        Ok(Response::new(GetProjectResponse {
            project: Some(project),
        }))
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    pin(&args.cpus)?;
    let (_writer, readers) = open_database(
        &args.db,
        args.seed.as_deref(),
        args.readers,
        "peer-projects-back",
    )?;
    let back = Back {
        readers: Arc::new(Pool::new(readers)),
        service_token: args.service_token,
    };
    runtime()?.block_on(async move {
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_service(ProjectServiceServer::new(back))
            .serve(args.listen)
            .await
    })?;
    Ok(())
}
