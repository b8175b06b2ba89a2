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

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use mimalloc::MiMalloc;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

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

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS projects (id TEXT PRIMARY KEY, owner_id TEXT NOT NULL, name TEXT NOT NULL,
  description TEXT NOT NULL DEFAULT '', design TEXT NOT NULL, settings TEXT NOT NULL DEFAULT '{}',
  template_id TEXT, version BIGINT NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS project_versions (project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
  version BIGINT NOT NULL, name TEXT NOT NULL, description TEXT NOT NULL, design TEXT NOT NULL,
  settings TEXT NOT NULL, author_id TEXT NOT NULL, summary TEXT NOT NULL, created_at BIGINT NOT NULL,
  PRIMARY KEY (project_id, version));
CREATE TABLE IF NOT EXISTS project_members (project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
  user_id TEXT NOT NULL, role TEXT NOT NULL, added_by TEXT NOT NULL, added_at BIGINT NOT NULL,
  PRIMARY KEY (project_id, user_id));
CREATE INDEX IF NOT EXISTS project_members_user ON project_members (user_id);";

fn open(path: &str) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON; PRAGMA busy_timeout=5000;",
    )?;
    Ok(conn)
}

/// A fixed set of SQLite connections; a job takes one on the blocking pool.
struct Pool {
    conns: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl Pool {
    fn new(conns: Vec<Connection>) -> Pool {
        Pool {
            permits: Semaphore::new(conns.len()),
            conns: Mutex::new(conns),
        }
    }

    async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        job: impl FnOnce(&mut Connection) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let _permit = self.permits.acquire().await.map_err(|_| unavailable())?;
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let mut conn = pool
                .conns
                .lock()
                .unwrap()
                .pop()
                .expect("a permit means a free connection");
            let result = job(&mut conn);
            pool.conns.lock().unwrap().push(conn);
            result
        })
        .await
        .map_err(|_| unavailable())?
    }
}

struct App {
    keys: HashMap<String, DecodingKey>,
    validation: Validation,
    readers: Arc<Pool>,
    writer: Arc<Pool>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    perms: Vec<String>,
    #[serde(default)]
    roles: Vec<String>,
}

/// An error answer: a status and `{"error": {...}}`.
struct ApiError {
    status: StatusCode,
    body: serde_json::Value,
}

fn fail(status: StatusCode, code: &str, message: String) -> ApiError {
    ApiError {
        status,
        body: serde_json::json!({"error": {"code": code, "message": message}}),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

fn unavailable() -> ApiError {
    fail(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "storage".into(),
    )
}

fn db(e: rusqlite::Error) -> ApiError {
    fail(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        format!("storage: {e}"),
    )
}

fn not_found(id: &str) -> ApiError {
    fail(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("project {id} not found"),
    )
}

impl App {
    /// The caller (user id, admin) if the bearer token is valid and grants `perm`.
    fn caller(&self, headers: &HeaderMap, perm: &str) -> Result<(String, bool), ApiError> {
        let unauthorized = || {
            fail(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid bearer token is required".into(),
            )
        };
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(unauthorized)?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| unauthorized())?;
        let key = header
            .kid
            .as_deref()
            .and_then(|k| self.keys.get(k))
            .ok_or_else(unauthorized)?;
        let claims = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map_err(|_| unauthorized())?
            .claims;
        let admin = claims.roles.iter().any(|r| r == "admin");
        if !admin && !claims.perms.iter().any(|p| p == perm) {
            return Err(fail(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("the token lacks the {perm} permission"),
            ));
        }
        Ok((claims.sub, admin))
    }
}

/// A project as sdsim returns it; `design` and `settings` pass through as raw JSON.
#[derive(Serialize)]
struct Project {
    id: String,
    name: String,
    description: String,
    owner_id: String,
    design: Box<RawValue>,
    settings: Box<RawValue>,
    template_id: Option<String>,
    version: i64,
    created_at: i64,
    updated_at: i64,
    role: String,
}

const COLUMNS: &str = "id, name, description, owner_id, design, settings, template_id, version, created_at, updated_at";

fn raw(text: String) -> Result<Box<RawValue>, ApiError> {
    RawValue::from_string(text).map_err(|e| {
        fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        )
    })
}

/// The caller's role in `id` (admins own everything), and the project row.
fn load(conn: &Connection, id: &str, user: &str, admin: bool) -> Result<Project, ApiError> {
    let role: Option<String> = if admin {
        Some("owner".into())
    } else {
        conn.prepare_cached(
            "SELECT role FROM project_members WHERE project_id = ?1 AND user_id = ?2",
        )
        .and_then(|mut s| s.query_row((id, user), |r| r.get(0)).optional())
        .map_err(db)?
    };
    let role = role.ok_or_else(|| not_found(id))?;
    let row = conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM projects WHERE id = ?1"))
        .and_then(|mut s| {
            s.query_row([id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, i64>(7)?,
                    r.get::<_, i64>(8)?,
                    r.get::<_, i64>(9)?,
                ))
            })
            .optional()
        })
        .map_err(db)?
        .ok_or_else(|| not_found(id))?;
    Ok(Project {
        id: row.0,
        name: row.1,
        description: row.2,
        owner_id: row.3,
        design: raw(row.4)?,
        settings: raw(row.5)?,
        template_id: row.6,
        version: row.7,
        created_at: row.8,
        updated_at: row.9,
        role,
    })
}

async fn get_project(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Project>, ApiError> {
    let (user, admin) = app.caller(&headers, "project:read")?;
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
    let (user, admin) = app.caller(&headers, "project:write")?;
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

/// Inserts the seed projects (version 1 content as their first version, the owner as member).
fn seed(conn: &mut Connection, path: &str) -> anyhow::Result<usize> {
    let projects: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let tx = conn.transaction()?;
    for p in &projects {
        let text = |k: &str| p[k].as_str().unwrap_or_default().to_string();
        let (id, owner) = (text("id"), text("owner_id"));
        let (design, settings) = (p["design"].to_string(), p["settings"].to_string());
        let (version, created) = (
            p["version"].as_i64().unwrap_or(1),
            p["created_at"].as_i64().unwrap_or(0),
        );
        tx.execute(
            &format!(
                "INSERT INTO projects ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
            ),
            (
                &id,
                text("name"),
                text("description"),
                &owner,
                &design,
                &settings,
                p["template_id"].as_str(),
                version,
                created,
                p["updated_at"].as_i64().unwrap_or(created),
            ),
        )?;
        tx.execute(
            "INSERT INTO project_versions VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, '{\"created\":true}', ?8)",
            (&id, version, text("name"), text("description"), &design, &settings, &owner, created),
        )?;
        tx.execute(
            "INSERT INTO project_members VALUES (?1, ?2, 'owner', ?2, ?3)",
            (&id, &owner, created),
        )?;
    }
    tx.commit()?;
    Ok(projects.len())
}

fn fetch_jwks(url: &str) -> anyhow::Result<String> {
    if let Some(path) = url.strip_prefix("file://") {
        return Ok(std::fs::read_to_string(path)?);
    }
    Ok(ureq::get(url).call()?.body_mut().read_to_string()?)
}

/// Pins the process to `cpus` (threads started later inherit the mask).
fn pin(cpus: &[usize]) -> std::io::Result<()> {
    if cpus.is_empty() {
        return Ok(());
    }
    // SAFETY: a zeroed cpu_set_t with the given bits set, for the calling (main) thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    pin(&args.cpus)?;
    let workers = std::thread::available_parallelism()?.get();
    let set: JwkSet = serde_json::from_str(&fetch_jwks(&args.jwks)?)?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        if let Some(kid) = &jwk.common.key_id {
            keys.insert(kid.clone(), DecodingKey::from_jwk(jwk)?);
        }
    }
    anyhow::ensure!(!keys.is_empty(), "the JWKS has no key with a kid");
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&["sdsim"]);
    validation.set_audience(&["sdsim"]);
    validation.leeway = 0;

    let mut writer = open(&args.db)?;
    writer.execute_batch(SCHEMA)?;
    if let Some(path) = &args.seed {
        let n = seed(&mut writer, path)?;
        eprintln!("peer-projects: {n} projects loaded");
    }
    let readers = (0..args.readers.max(1))
        .map(|_| open(&args.db))
        .collect::<Result<Vec<_>, _>>()?;
    let app = Arc::new(App {
        keys,
        validation,
        readers: Arc::new(Pool::new(readers)),
        writer: Arc::new(Pool::new(vec![writer])),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let router = Router::new()
            .route("/api/projects/{id}", get(get_project).put(put_project))
            .route("/health", get(|| async { "ok" }))
            .with_state(app);
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        axum::serve(listener, router).await?;
        Ok(())
    })
}
