//! The peer server of the project API benchmark (`bench-projects`): `GET` and `PUT
//! /api/projects/{id}` written the way a careful user of axum, jsonwebtoken and rusqlite would,
//! doing the work sdsim does for the same requests.
//!
//! `peer-projects --listen 127.0.0.1:9200 --jwks http://127.0.0.1:8000/.well-known/jwks.json
//!  --db /tmp/peer.db --seed projects.json --cpus 0`
//!
//! Per request: the bearer token is verified with jsonwebtoken (EdDSA, the key by `kid` from
//! sdsim's JWKS, fetched once; `iss`/`aud` `"sdsim"`, `exp`), the permission checked
//! (`project:read` / `project:write`), then the caller's role is looked up in
//! `project_members` and the project row read, in one blocking job on a reader connection. A
//! `PUT` parses the body (serde_json; the design stays raw text), validates a new design with the
//! simulation engine's parser (sdsim does the same), and in one `BEGIN IMMEDIATE` transaction on
//! the writer connection checks the role (editor or owner) and `expected_version`, updates the
//! project with `version = version + 1 WHERE version = current` and inserts the version row (the
//! whole content and a summary: changed fields, components added/removed/changed by id).
//! Answers are sdsim's project JSON (the design passed through as raw JSON), errors
//! `{"error":{"code","message"}}` with sdsim's statuses.
//!
//! Configuration, as a careful user would choose it: tokio multi-thread runtime with one worker
//! per CPU the process may run on (the benchmark pins it to one); SQLite in WAL mode with
//! `synchronous=NORMAL`, `foreign_keys=ON`, `busy_timeout=5000` (sdsim's pragmas), prepared
//! statements cached per connection; a pool of `--readers` read connections (sdsim: 2 reader
//! threads) and one writer connection (SQLite has one writer at a time; a single writer
//! connection avoids SQLITE_BUSY retries), each job run with `spawn_blocking`; mimalloc (sdsim
//! uses it too). Not done (sdsim does it): publishing `project:events:updated`, and re-reading
//! the row after an update.
//!
//! The token check, the pool, the row read and the answer are `sdsim_bench::peer_projects`,
//! shared with the split version of this peer (`peer-projects-front` → `peer-projects-back`).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use mimalloc::MiMalloc;
use rusqlite::{Connection, TransactionBehavior};
use sdsim_bench::peer_projects::{
    db, fail, load, open_database, pin, runtime, ApiError, Pool, Project, Verifier,
};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9200")]
    listen: SocketAddr,
    /// sdsim's JWKS: http://HOST:PORT/.well-known/jwks.json (fetched once) or file:///PATH.
    #[arg(long)]
    jwks: String,
    /// The SQLite file (created with the schema when new).
    #[arg(long)]
    db: String,
    /// Projects to load at start: JSON `[{id, owner_id, name, description, design, settings,
    /// template_id, version, created_at, updated_at}]` (what sdsim's GET returns).
    #[arg(long)]
    seed: Option<String>,
    /// CPUs to pin the process to; tokio gets one worker per CPU. Default: inherited mask.
    #[arg(long, value_delimiter = ',')]
    cpus: Vec<usize>,
    /// Read connections in the pool.
    #[arg(long, default_value_t = 2)]
    readers: usize,
}

struct App {
    verifier: Verifier,
    readers: Arc<Pool>,
    writer: Arc<Pool>,
}

async fn get_project(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Project>, ApiError> {
    let (user, admin) = app.verifier.caller(&headers, "project:read")?;
    let project = app
        .readers
        .run(move |conn| load(conn, &id, &user, admin))
        .await?;
    Ok(Json(project))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    name: Option<String>,
    description: Option<String>,
    design: Option<Box<RawValue>>,
    settings: Option<Box<RawValue>>,
    expected_version: Option<i64>,
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    fail(
        StatusCode::BAD_REQUEST,
        "invalid_argument",
        format!("{field}: {}", message.into()),
    )
}

/// Components by id, for the version summary.
fn components(design: &str) -> BTreeMap<String, serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(design).unwrap_or_default();
    v["components"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| Some((c["id"].as_str()?.to_string(), c.clone())))
                .collect()
        })
        .unwrap_or_default()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn put_project(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<UpdateBody>,
) -> Result<Json<Project>, ApiError> {
    let (user, admin) = app.verifier.caller(&headers, "project:write")?;
    if let Some(name) = &body.name {
        let n = name.trim().chars().count();
        if n == 0 || n > 200 || name.chars().any(char::is_control) {
            return Err(invalid(
                "name",
                "1 to 200 characters, no control characters",
            ));
        }
    }
    if body
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 4000)
    {
        return Err(invalid("description", "at most 4000 characters"));
    }
    if let Some(design) = &body.design {
        if let Err(problems) = sdsim_engine::design::parse(design.get()) {
            let list: Vec<_> = problems
                .iter()
                .map(|p| serde_json::json!({"path": p.path, "message": p.message}))
                .collect();
            let body = serde_json::json!({"error": {"code": "invalid_design", "message": format!("the design has {} problem(s)", list.len()), "problems": list}});
            return Err(ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                body,
            });
        }
    }
    if body
        .settings
        .as_ref()
        .is_some_and(|s| !s.get().trim_start().starts_with('{'))
    {
        return Err(invalid("settings", "must be a JSON object"));
    }
    let project = app
        .writer
        .run(move |conn| update(conn, &id, &user, admin, body))
        .await?;
    Ok(Json(project))
}

fn update(
    conn: &mut Connection,
    id: &str,
    user: &str,
    admin: bool,
    body: UpdateBody,
) -> Result<Project, ApiError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db)?;
    let mut p = load(&tx, id, user, admin)?;
    if p.role == "viewer" {
        return Err(fail(
            StatusCode::FORBIDDEN,
            "forbidden",
            "your role in this project is viewer; this needs editor".into(),
        ));
    }
    if let Some(expected) = body.expected_version.filter(|v| *v != p.version) {
        return Err(fail(
            StatusCode::CONFLICT,
            "conflict",
            format!("the project is at version {}, not {expected}", p.version),
        ));
    }
    let mut changed = Vec::new();
    let mut diff = serde_json::json!({"added": [], "removed": [], "changed": []});
    if let Some(name) = body
        .name
        .map(|n| n.trim().to_string())
        .filter(|n| *n != p.name)
    {
        p.name = name;
        changed.push("name");
    }
    if let Some(d) = body.description.filter(|d| *d != p.description) {
        p.description = d;
        changed.push("description");
    }
    if let Some(s) = body.settings.filter(|s| s.get() != p.settings.get()) {
        p.settings = s;
        changed.push("settings");
    }
    if let Some(design) = body.design.filter(|d| d.get() != p.design.get()) {
        let (old, new) = (components(p.design.get()), components(design.get()));
        diff = serde_json::json!({
            "added": new.keys().filter(|k| !old.contains_key(*k)).collect::<Vec<_>>(),
            "removed": old.keys().filter(|k| !new.contains_key(*k)).collect::<Vec<_>>(),
            "changed": old.iter().filter(|(k, v)| new.get(*k).is_some_and(|w| w != *v)).map(|(k, _)| k).collect::<Vec<_>>(),
        });
        p.design = design;
        changed.push("design");
    }
    if changed.is_empty() {
        return Ok(p);
    }
    let summary = serde_json::json!({"changed": changed, "components": diff}).to_string();
    let now = now_ms();
    let updated = tx
        .prepare_cached("UPDATE projects SET name = ?1, description = ?2, design = ?3, settings = ?4, version = ?5, updated_at = ?6 WHERE id = ?7 AND version = ?8")
        .and_then(|mut s| s.execute((&p.name, &p.description, p.design.get(), p.settings.get(), p.version + 1, now, id, p.version)))
        .map_err(db)?;
    if updated != 1 {
        return Err(fail(
            StatusCode::CONFLICT,
            "conflict",
            "the project changed at the same time".into(),
        ));
    }
    tx.prepare_cached("INSERT INTO project_versions (project_id, version, name, description, design, settings, author_id, summary, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)")
        .and_then(|mut s| s.execute((id, p.version + 1, &p.name, &p.description, p.design.get(), p.settings.get(), user, &summary, now)))
        .map_err(db)?;
    tx.commit().map_err(db)?;
    p.version += 1;
    p.updated_at = now;
    Ok(p)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    pin(&args.cpus)?;
    let verifier = Verifier::from_jwks(&args.jwks)?;
    let (writer, readers) = open_database(
        &args.db,
        args.seed.as_deref(),
        args.readers,
        "peer-projects",
    )?;
    let app = Arc::new(App {
        verifier,
        readers: Arc::new(Pool::new(readers)),
        writer: Arc::new(Pool::new(vec![writer])),
    });
    runtime()?.block_on(async move {
        let router = Router::new()
            .route("/api/projects/{id}", get(get_project).put(put_project))
            .route("/health", get(|| async { "ok" }))
            .with_state(app);
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        axum::serve(listener, router).await?;
        Ok(())
    })
}
