//! What the project peers share: `peer-projects` (one process) and its split version
//! (`peer-projects-front` verifying the token and calling `peer-projects-back` over gRPC, which
//! checks the role and reads the row). Written the way a careful user of axum, tonic,
//! jsonwebtoken and rusqlite would; see `peer-projects` for the configuration and why.

use crate::project_proto;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

/// The tables sdsim keeps projects in (the columns the peers use).
pub const SCHEMA: &str = "
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

/// A connection to `path` with sdsim's pragmas.
pub fn open(path: &str) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON; PRAGMA busy_timeout=5000;",
    )?;
    Ok(conn)
}

/// A fixed set of SQLite connections; a job takes one on the blocking pool.
pub struct Pool {
    conns: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl Pool {
    /// A pool of `conns`.
    pub fn new(conns: Vec<Connection>) -> Pool {
        Pool {
            permits: Semaphore::new(conns.len()),
            conns: Mutex::new(conns),
        }
    }

    /// Runs `job` with a free connection on tokio's blocking pool.
    pub async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        job: impl FnOnce(&mut Connection) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let _permit = self.permits.acquire().await.map_err(|_| unavailable())?;
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            // A job that panicked left the list whole: a poisoned lock is still usable.
            let mut conn = pool
                .conns
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop()
                .expect("a permit means a free connection");
            let result = job(&mut conn);
            pool.conns
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(conn);
            result
        })
        .await
        .map_err(|_| unavailable())?
    }
}

/// An error answer: a status and `{"error": {...}}`.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// `{"error": {"code", "message", ...}}`.
    pub body: serde_json::Value,
}

/// An error answer with sdsim's body.
pub fn fail(status: StatusCode, code: &str, message: String) -> ApiError {
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

/// 503: the storage (or the service behind) cannot answer.
pub fn unavailable() -> ApiError {
    fail(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "storage".into(),
    )
}

/// 503 for a SQLite error.
pub fn db(e: rusqlite::Error) -> ApiError {
    fail(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        format!("storage: {e}"),
    )
}

/// 404 for project `id`.
pub fn not_found(id: &str) -> ApiError {
    fail(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("project {id} not found"),
    )
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    perms: Vec<String>,
    #[serde(default)]
    roles: Vec<String>,
}

/// Checks bearer tokens against sdsim's signing keys (jsonwebtoken, EdDSA, the key by `kid`,
/// `iss`/`aud` `"sdsim"`, `exp` with no leeway).
pub struct Verifier {
    keys: HashMap<String, DecodingKey>,
    validation: Validation,
}

impl Verifier {
    /// Keys from sdsim's JWKS: `http://HOST:PORT/.well-known/jwks.json` (fetched once) or
    /// `file:///PATH`.
    pub fn from_jwks(url: &str) -> anyhow::Result<Verifier> {
        let text = match url.strip_prefix("file://") {
            Some(path) => std::fs::read_to_string(path)?,
            None => ureq::get(url).call()?.body_mut().read_to_string()?,
        };
        let set: JwkSet = serde_json::from_str(&text)?;
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
        Ok(Verifier { keys, validation })
    }

    /// The caller (user id, admin) if the bearer token is valid and grants `perm`.
    pub fn caller(&self, headers: &HeaderMap, perm: &str) -> Result<(String, bool), ApiError> {
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
#[allow(missing_docs)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub description: String,
    pub owner_id: String,
    pub design: Box<RawValue>,
    pub settings: Box<RawValue>,
    pub template_id: Option<String>,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// The caller's role: `viewer`, `editor` or `owner`.
    pub role: String,
}

/// The columns of `projects` a read selects, in [`load`]'s order.
pub const COLUMNS: &str = "id, name, description, owner_id, design, settings, template_id, version, created_at, updated_at";

/// `text` as raw JSON (checked, not parsed into values).
pub fn raw(text: String) -> Result<Box<RawValue>, ApiError> {
    RawValue::from_string(text).map_err(|e| {
        fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        )
    })
}

/// The caller's role in `id` (admins own everything), and the project row, as sdsim's
/// message (design and settings as text, as stored).
pub fn load_message(
    conn: &Connection,
    id: &str,
    user: &str,
    admin: bool,
) -> Result<project_proto::Project, ApiError> {
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
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM projects WHERE id = ?1"))
        .and_then(|mut s| {
            s.query_row([id], |r| {
                Ok(project_proto::Project {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    description: r.get(2)?,
                    owner_id: r.get(3)?,
                    design_json: r.get(4)?,
                    settings_json: r.get(5)?,
                    template_id: r.get::<_, Option<String>>(6)?.unwrap_or_default(),
                    version: r.get(7)?,
                    created_at: r.get(8)?,
                    updated_at: r.get(9)?,
                    my_role: role_number(&role) as i32,
                })
            })
            .optional()
        })
        .map_err(db)?
        .ok_or_else(|| not_found(id))
}

/// The caller's role in `id` and the project row, as the JSON answer.
pub fn load(conn: &Connection, id: &str, user: &str, admin: bool) -> Result<Project, ApiError> {
    answer(load_message(conn, id, user, admin)?)
}

fn role_number(role: &str) -> project_proto::ProjectRole {
    use project_proto::ProjectRole;
    match role {
        "owner" => ProjectRole::Owner,
        "editor" => ProjectRole::Editor,
        "viewer" => ProjectRole::Viewer,
        _ => ProjectRole::Unspecified,
    }
}

/// The JSON answer of a project message (what the one-process peer answers for the same row).
pub fn answer(p: project_proto::Project) -> Result<Project, ApiError> {
    use project_proto::ProjectRole;
    let role = match ProjectRole::try_from(p.my_role) {
        Ok(ProjectRole::Owner) => "owner",
        Ok(ProjectRole::Editor) => "editor",
        Ok(ProjectRole::Viewer) => "viewer",
        _ => {
            return Err(fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("the project service answered role {}", p.my_role),
            ))
        }
    };
    Ok(Project {
        id: p.id,
        name: p.name,
        description: p.description,
        owner_id: p.owner_id,
        design: raw(p.design_json)?,
        settings: raw(p.settings_json)?,
        template_id: Some(p.template_id).filter(|t| !t.is_empty()),
        version: p.version,
        created_at: p.created_at,
        updated_at: p.updated_at,
        role: role.into(),
    })
}

/// Inserts the seed projects (version 1 content as their first version, the owner as member).
pub fn seed(conn: &mut Connection, path: &str) -> anyhow::Result<usize> {
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

/// The writer connection of `db` (with the schema, and `seed`'s projects loaded) and
/// `readers` read connections.
pub fn open_database(
    db: &str,
    seed_file: Option<&str>,
    readers: usize,
    name: &str,
) -> anyhow::Result<(Connection, Vec<Connection>)> {
    let mut writer = open(db)?;
    writer.execute_batch(SCHEMA)?;
    if let Some(path) = seed_file {
        let n = seed(&mut writer, path)?;
        eprintln!("{name}: {n} projects loaded");
    }
    let readers = (0..readers.max(1))
        .map(|_| open(db))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((writer, readers))
}

/// Pins the process to `cpus` (threads started later inherit the mask).
pub fn pin(cpus: &[usize]) -> std::io::Result<()> {
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

/// A tokio multi-thread runtime with one worker per CPU the process may run on.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let workers = std::thread::available_parallelism()?.get();
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn.execute(
            &format!("INSERT INTO projects ({COLUMNS}) VALUES ('p1', 'Shop', 'd', 'u1', '{{\"components\":[]}}', '{{}}', NULL, 3, 10, 20)"),
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO project_members VALUES ('p1', 'u2', 'viewer', 'u1', 11)",
            [],
        )
        .unwrap();
        conn
    }

    /// The split peer's answer (the back's message, encoded, decoded, turned into JSON by the
    /// front) is byte for byte the one-process peer's answer.
    #[test]
    fn the_message_through_the_wire_gives_the_same_json_as_the_row() {
        use prost::Message;
        let conn = database();
        let direct = serde_json::to_string(&load(&conn, "p1", "u2", false).unwrap()).unwrap();
        let message = load_message(&conn, "p1", "u2", false).unwrap();
        let wire = project_proto::Project::decode(message.encode_to_vec().as_slice()).unwrap();
        let split = serde_json::to_string(&answer(wire).unwrap()).unwrap();
        assert_eq!(split, direct);
        assert!(direct.contains(r#""template_id":null"#), "{direct}");
        assert!(direct.contains(r#""role":"viewer""#), "{direct}");
        assert!(direct.contains(r#""design":{"components":[]}"#), "{direct}");
    }

    #[test]
    fn a_non_member_and_a_missing_project_are_not_found_and_an_admin_owns_all() {
        let conn = database();
        assert_eq!(
            load(&conn, "p1", "u3", false).err().unwrap().status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            load(&conn, "p2", "u2", false).err().unwrap().status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(load(&conn, "p1", "u3", true).ok().unwrap().role, "owner");
    }
}
