//! Projects: a design document and settings, owned by a user, shared with editors and viewers,
//! versioned on every change (history with what changed, rollback), importable and exportable.
//!
//! Access: the token must grant `project:read` to read and `project:write` to change; then the
//! caller's role in the project decides — viewer reads, editor also updates, owner also shares
//! and deletes. A project the caller has no role in is reported as not found (its existence is
//! not revealed). Admins act as owners of every project.

mod catalog;
pub mod contract;
mod diff;
mod history;
mod sharing;
pub mod wire;

pub use contract::{ProjectContract, ProjectService, RemoteProjects};

pub use self::diff::{diff_components, ComponentDiff};
use self::diff::{same_json, Summary};
pub use self::history::import_document;
use crate::design_limits::check_design_within;
use crate::{new_id, now_ms, publish, Caller, DesignProblem, Failure};
use sdsim_store::{Row, Statement, Store, Value};
use serde::Serialize;
use sonic_rs::JsonValueTrait;

/// A caller's role in a project, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads the project and its runs.
    Viewer,
    /// Also changes the design and starts runs.
    Editor,
    /// Also shares and deletes.
    Owner,
}

impl Role {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Owner => "owner",
        }
    }

    /// The role of a stored name.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "editor" => Some(Role::Editor),
            "owner" => Some(Role::Owner),
            _ => None,
        }
    }
}

/// A project as the API returns it.
#[derive(Debug, Clone, Serialize)]
pub struct Project {
    /// Its id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The owner's user id.
    pub owner_id: String,
    /// The design document.
    pub design: sonic_rs::Value,
    /// Settings (a JSON object).
    pub settings: sonic_rs::Value,
    /// The template it was made from.
    pub template_id: Option<String>,
    /// Current version (1 at creation, +1 per change).
    pub version: i64,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
    /// The caller's role.
    pub role: Role,
}

/// What a new project starts from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewProject {
    /// Display name (1–200 characters).
    pub name: String,
    /// Free text (up to 4,000 characters).
    pub description: String,
    /// A system template id or one of the caller's template ids.
    pub template_id: Option<String>,
    /// A design document (instead of, or overriding, the template's).
    pub design: Option<String>,
    /// Settings (a JSON object).
    pub settings: Option<String>,
}

/// A change; absent fields stay.
#[derive(Debug, Clone, Default)]
pub struct Change {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New design document.
    pub design: Option<String>,
    /// New settings.
    pub settings: Option<String>,
    /// When set, the change applies only if the project is still at this version (409
    /// otherwise: someone else changed it since the caller read it).
    pub expected_version: Option<i64>,
}

/// One stored version.
#[derive(Debug, Clone, Serialize)]
pub struct Version {
    /// Its number.
    pub version: i64,
    /// Who made it.
    pub author_id: String,
    /// Unix ms.
    pub created_at: i64,
    /// What changed against the previous version.
    pub summary: sonic_rs::Value,
}

/// A member of a project.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    /// The user id.
    pub user_id: String,
    /// The email, when the account exists.
    pub email: String,
    /// Their role.
    pub role: Role,
    /// Unix ms.
    pub added_at: i64,
}

/// A page of projects.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    /// The projects (designs omitted: `design` is null; fetch one to get it).
    pub projects: Vec<Project>,
    /// 1-based.
    pub page: i64,
    /// Page size.
    pub per_page: i64,
    /// Matching projects in all pages.
    pub total: i64,
}

/// List filters.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Case-insensitive substring of the name.
    pub query: Option<String>,
    /// Only projects where the caller has this role.
    pub role: Option<Role>,
    /// 1-based page.
    pub page: i64,
    /// Page size (1–100).
    pub per_page: i64,
}

/// A template as listed.
#[derive(Debug, Clone, Serialize)]
pub struct TemplateInfo {
    /// Id: a slug for system templates, a UUID for users'.
    pub id: String,
    /// `system` or `user`.
    pub kind: &'static str,
    /// Display name.
    pub name: String,
    /// What it models.
    pub description: String,
    /// Category (system templates).
    pub category: String,
    /// Components in the design.
    pub components: usize,
    /// The design, when one template is fetched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub design: Option<sonic_rs::Value>,
}

/// The export format.
pub const EXPORT_FORMAT: &str = "sdsim.project.v1";

const MAX_NAME: usize = 200;
const MAX_DESCRIPTION: usize = 4000;
const MAX_SETTINGS: usize = 64 << 10;

/// The project service.
pub struct Projects {
    store: Store,
    /// `simulation.max_design_bytes`.
    max_design_bytes: usize,
}

const COLUMNS: &str = "p.id, p.name, p.description, p.owner_id, p.design, p.settings, COALESCE(p.template_id, ''), p.version, p.created_at, p.updated_at";

impl Projects {
    /// The service on `store` (migrated), accepting designs up to the default
    /// `simulation.max_design_bytes`.
    pub fn new(store: Store) -> Projects {
        Projects {
            store,
            max_design_bytes: crate::config::SimulationConfig::default().max_design_bytes,
        }
    }

    /// Accepts designs up to `max` bytes of JSON (`simulation.max_design_bytes`).
    pub fn with_max_design_bytes(mut self, max: usize) -> Projects {
        self.max_design_bytes = max;
        self
    }

    /// The largest design accepted, in bytes.
    pub fn max_design_bytes(&self) -> usize {
        self.max_design_bytes
    }

    /// The storage.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Creates a project owned by the caller.
    pub async fn create(&self, who: &Caller, new: NewProject) -> Result<Project, Failure> {
        who.require("project:write")?;
        let name = check_name(&new.name)?;
        let description = check_description(&new.description)?;
        let design = match (&new.design, &new.template_id) {
            (Some(d), _) => d.clone(),
            (None, Some(t)) => self.template_design(who, t).await?,
            (None, None) => {
                return Err(Failure::Invalid {
                    field: "design".into(),
                    message: "give a design or a template_id".into(),
                })
            }
        };
        let design = check_design_within(&design, self.max_design_bytes).await?;
        let settings = check_settings(new.settings.as_deref())?;
        let id = new_id();
        let now = now_ms();
        let summary = r#"{"created":true}"#.to_string();
        self.store
            .batch(vec![
                Statement::new(
                    "INSERT INTO project_schema.projects (id, owner_id, name, description, design, settings, template_id, version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $8)",
                    vec![
                        id.clone().into(),
                        who.user_id.as_ref().into(),
                        name.clone().into(),
                        description.clone().into(),
                        design.clone().into(),
                        settings.clone().into(),
                        new.template_id.clone().map_or(Value::Null, Value::from),
                        now.into(),
                    ],
                ),
                version_insert(&id, 1, &name, &description, &design, &settings, who, &summary, now),
                Statement::new(
                    "INSERT INTO project_schema.project_members (project_id, user_id, role, added_by, added_at) VALUES ($1, $2, 'owner', $2, $3)",
                    vec![id.clone().into(), who.user_id.as_ref().into(), now.into()],
                ),
            ])
            .await?;
        let project = self.get(who, &id).await?;
        publish(
            "project:events:created",
            &Event::of(&project, who, "created"),
        )
        .await;
        Ok(project)
    }

    /// The caller's role in project `id`; `NotFound` when they have none.
    pub async fn role(&self, who: &Caller, id: &str) -> Result<Role, Failure> {
        who.require("project:read")?;
        let not_found = || Failure::NotFound(format!("project {id} not found"));
        if who.is_admin() {
            let exists = self
                .store
                .query_opt(
                    "SELECT 1 FROM project_schema.projects WHERE id = $1",
                    vec![id.into()],
                )
                .await?;
            return exists.map(|_| Role::Owner).ok_or_else(not_found);
        }
        let row = self
            .store
            .query_opt(
                "SELECT role FROM project_schema.project_members WHERE project_id = $1 AND user_id = $2",
                vec![id.into(), who.user_id.as_ref().into()],
            )
            .await?
            .ok_or_else(not_found)?;
        Role::parse(row.text(0)?).ok_or_else(not_found)
    }

    /// `Forbidden` unless the caller's role in `id` is at least `needed`.
    pub async fn require(&self, who: &Caller, id: &str, needed: Role) -> Result<Role, Failure> {
        let role = self.role(who, id).await?;
        if role < needed {
            return Err(Failure::Forbidden(format!(
                "your role in this project is {}; this needs {}",
                role.as_str(),
                needed.as_str()
            )));
        }
        Ok(role)
    }

    /// One project.
    pub async fn get(&self, who: &Caller, id: &str) -> Result<Project, Failure> {
        let role = self.role(who, id).await?;
        self.load(id, role).await
    }

    /// Project `id` as seen by a caller whose `role` is already established.
    async fn load(&self, id: &str, role: Role) -> Result<Project, Failure> {
        let row = self
            .store
            .query_opt(
                &format!("SELECT {COLUMNS} FROM project_schema.projects p WHERE p.id = $1"),
                vec![id.into()],
            )
            .await?
            .ok_or_else(|| Failure::NotFound(format!("project {id} not found")))?;
        project_of(&row, role, true)
    }

    /// The caller's projects, newest change first.
    pub async fn list(&self, who: &Caller, filter: &Filter) -> Result<Page, Failure> {
        who.require("project:read")?;
        let per_page = filter.per_page.clamp(1, 100);
        let page = filter.page.max(1);
        let mut conditions = vec!["m.user_id = $1".to_string()];
        let mut params: Vec<Value> = vec![who.user_id.as_ref().into()];
        if let Some(q) = filter.query.as_deref().filter(|q| !q.is_empty()) {
            params.push(format!("%{}%", escape_like(&q.to_lowercase())).into());
            conditions.push(format!("LOWER(p.name) LIKE ${} ESCAPE '\\'", params.len()));
        }
        if let Some(role) = filter.role {
            params.push(role.as_str().into());
            conditions.push(format!("m.role = ${}", params.len()));
        }
        let from = format!(
            "FROM project_schema.projects p JOIN project_schema.project_members m ON m.project_id = p.id WHERE {}",
            conditions.join(" AND ")
        );
        let total = self
            .store
            .query_opt(&format!("SELECT COUNT(*) {from}"), params.clone())
            .await?
            .map(|r| r.int(0))
            .transpose()?
            .unwrap_or(0);
        let mut list_params = params;
        list_params.push(per_page.into());
        list_params.push(((page - 1) * per_page).into());
        let n = list_params.len();
        let rows = self
            .store
            .query(
                &format!(
                    "SELECT {COLUMNS}, m.role {from} ORDER BY p.updated_at DESC, p.id LIMIT ${} OFFSET ${}",
                    n - 1,
                    n
                ),
                list_params,
            )
            .await?;
        let mut projects = Vec::with_capacity(rows.len());
        for row in &rows {
            let role = Role::parse(row.text(10)?).unwrap_or(Role::Viewer);
            projects.push(project_of(row, role, false)?);
        }
        Ok(Page {
            projects,
            page,
            per_page,
            total,
        })
    }

    /// Applies a change (editor or owner), storing a new version.
    pub async fn update(&self, who: &Caller, id: &str, change: Change) -> Result<Project, Failure> {
        who.require("project:write")?;
        let role = self.require(who, id, Role::Editor).await?;
        let current = self.load(id, role).await?;
        if let Some(expected) = change.expected_version {
            if expected != current.version {
                return Err(Failure::Conflict(format!(
                    "the project is at version {}, not {expected}: reload it and apply the change again",
                    current.version
                )));
            }
        }
        let name = match &change.name {
            Some(n) => check_name(n)?,
            None => current.name.clone(),
        };
        let description = match &change.description {
            Some(d) => check_description(d)?,
            None => current.description.clone(),
        };
        let old_design = current.design.to_string();
        let design = match &change.design {
            Some(d) => check_design_within(d, self.max_design_bytes).await?,
            None => old_design.clone(),
        };
        let settings = match &change.settings {
            Some(s) => check_settings(Some(s))?,
            None => current.settings.to_string(),
        };
        let mut changed = Vec::new();
        if name != current.name {
            changed.push("name");
        }
        if description != current.description {
            changed.push("description");
        }
        if !same_json(&settings, &current.settings.to_string()) {
            changed.push("settings");
        }
        let components = diff_components(&old_design, &design);
        if !same_json(&design, &old_design) {
            changed.push("design");
        }
        if changed.is_empty() {
            return Ok(current);
        }
        let summary = sonic_rs::to_string(&Summary {
            changed,
            components,
            rollback_of: None,
        })
        .unwrap_or_default();
        let content = [name.as_str(), &description, &design, &settings];
        self.store_version(who, &current, role, content, &summary, "updated")
            .await
    }

    /// Stores `[name, description, design, settings]` as the version after `current`, announces
    /// it as `event` on `project:events:updated`, and returns the project as it is now.
    async fn store_version(
        &self,
        who: &Caller,
        current: &Project,
        role: Role,
        [name, description, design, settings]: [&str; 4],
        summary: &str,
        event: &'static str,
    ) -> Result<Project, Failure> {
        let now = now_ms();
        let next = current.version + 1;
        let updated = self
            .store
            .batch(vec![
                Statement::new(
                    "UPDATE project_schema.projects SET name = $1, description = $2, design = $3, settings = $4, version = $5, updated_at = $6 WHERE id = $7 AND version = $8",
                    vec![
                        name.into(),
                        description.into(),
                        design.into(),
                        settings.into(),
                        next.into(),
                        now.into(),
                        current.id.clone().into(),
                        current.version.into(),
                    ],
                ),
                version_insert(&current.id, next, name, description, design, settings, who, summary, now),
            ])
            .await;
        match updated {
            Ok(counts) if counts.first() == Some(&1) => {}
            // The version row's primary key refuses a second writer of the same version.
            Ok(_) | Err(sdsim_store::StoreError::Conflict(_)) => {
                return Err(Failure::Conflict(
                    "the project changed at the same time: reload it and apply the change again"
                        .into(),
                ))
            }
            Err(e) => return Err(e.into()),
        }
        let project = self.load(&current.id, role).await?;
        publish("project:events:updated", &Event::of(&project, who, event)).await;
        Ok(project)
    }

    /// Deletes a project (owner), its versions and members.
    pub async fn delete(&self, who: &Caller, id: &str) -> Result<(), Failure> {
        who.require("project:write")?;
        self.require(who, id, Role::Owner).await?;
        let members = self.member_ids(id).await?;
        self.store
            .batch(vec![
                Statement::new(
                    "DELETE FROM project_schema.project_versions WHERE project_id = $1",
                    vec![id.into()],
                ),
                Statement::new(
                    "DELETE FROM project_schema.project_members WHERE project_id = $1",
                    vec![id.into()],
                ),
                Statement::new(
                    "DELETE FROM project_schema.projects WHERE id = $1",
                    vec![id.into()],
                ),
            ])
            .await?;
        publish(
            "project:events:deleted",
            &IdEvent {
                event: "deleted",
                project_id: id,
                by: &who.user_id,
                members: &members,
            },
        )
        .await;
        Ok(())
    }

    async fn member_ids(&self, id: &str) -> Result<Vec<String>, Failure> {
        let rows = self
            .store
            .query(
                "SELECT user_id FROM project_schema.project_members WHERE project_id = $1 ORDER BY added_at",
                vec![id.into()],
            )
            .await?;
        rows.iter()
            .map(|r| Ok(r.text(0)?.to_string()))
            .collect::<Result<_, sdsim_store::StoreError>>()
            .map_err(Failure::from)
    }

    /// The current design of a project where the caller's role is at least `needed`, and its
    /// version.
    pub async fn design_for(
        &self,
        who: &Caller,
        id: &str,
        needed: Role,
    ) -> Result<(String, i64), Failure> {
        self.require(who, id, needed).await?;
        let row = self
            .store
            .query_opt(
                "SELECT design, version FROM project_schema.projects WHERE id = $1",
                vec![id.into()],
            )
            .await?
            .ok_or_else(|| Failure::NotFound(format!("project {id} not found")))?;
        Ok((row.text(0)?.to_string(), row.int(1)?))
    }
}

#[allow(clippy::too_many_arguments)]
fn version_insert(
    id: &str,
    version: i64,
    name: &str,
    description: &str,
    design: &str,
    settings: &str,
    who: &Caller,
    summary: &str,
    now: i64,
) -> Statement {
    Statement::new(
        "INSERT INTO project_schema.project_versions (project_id, version, name, description, design, settings, author_id, summary, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        vec![
            id.into(),
            version.into(),
            name.into(),
            description.into(),
            design.into(),
            settings.into(),
            who.user_id.as_ref().into(),
            summary.into(),
            now.into(),
        ],
    )
}

fn project_of(row: &Row, role: Role, with_design: bool) -> Result<Project, Failure> {
    let template = row.text(6)?;
    Ok(Project {
        id: row.text(0)?.to_string(),
        name: row.text(1)?.to_string(),
        description: row.text(2)?.to_string(),
        owner_id: row.text(3)?.to_string(),
        design: if with_design {
            sonic_rs::from_str(row.text(4)?).unwrap_or_default()
        } else {
            sonic_rs::Value::default()
        },
        settings: sonic_rs::from_str(row.text(5)?).unwrap_or_default(),
        template_id: (!template.is_empty()).then(|| template.to_string()),
        version: row.int(7)?,
        created_at: row.int(8)?,
        updated_at: row.int(9)?,
        role,
    })
}

fn check_name(name: &str) -> Result<String, Failure> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME {
        return Err(Failure::Invalid {
            field: "name".into(),
            message: format!("1 to {MAX_NAME} characters"),
        });
    }
    if name.chars().any(char::is_control) {
        return Err(Failure::Invalid {
            field: "name".into(),
            message: "no control characters".into(),
        });
    }
    Ok(name.to_string())
}

fn check_description(d: &str) -> Result<String, Failure> {
    if d.chars().count() > MAX_DESCRIPTION {
        return Err(Failure::Invalid {
            field: "description".into(),
            message: format!("at most {MAX_DESCRIPTION} characters"),
        });
    }
    Ok(d.to_string())
}

/// Validates a design with the engine on the calling thread; returns it as stored (compact
/// JSON).
pub fn check_design(design: &str) -> Result<String, Failure> {
    if let Err(problems) = sdsim_engine::design::parse(design) {
        return Err(Failure::Design(
            problems
                .into_iter()
                .map(|p| DesignProblem {
                    path: p.path,
                    message: p.message,
                })
                .collect(),
        ));
    }
    let v: sonic_rs::Value = sonic_rs::from_str(design).map_err(|e| Failure::Invalid {
        field: "design".into(),
        message: e.to_string(),
    })?;
    Ok(v.to_string())
}

fn check_settings(settings: Option<&str>) -> Result<String, Failure> {
    let Some(s) = settings else {
        return Ok("{}".into());
    };
    let invalid = |message: String| Failure::Invalid {
        field: "settings".into(),
        message,
    };
    if s.len() > MAX_SETTINGS {
        return Err(invalid(format!("at most {MAX_SETTINGS} bytes")));
    }
    let v: sonic_rs::Value =
        sdsim_net::json::decode(s.as_bytes()).map_err(|e| invalid(e.to_string()))?;
    if !v.is_object() {
        return Err(invalid("must be a JSON object".into()));
    }
    Ok(v.to_string())
}

fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[derive(Serialize)]
struct Event<'a> {
    event: &'static str,
    project_id: &'a str,
    name: &'a str,
    version: i64,
    by: &'a str,
}

impl<'a> Event<'a> {
    fn of(p: &'a Project, who: &'a Caller, event: &'static str) -> Event<'a> {
        Event {
            event,
            project_id: &p.id,
            name: &p.name,
            version: p.version,
            by: &who.user_id,
        }
    }
}

#[derive(Serialize)]
struct IdEvent<'a> {
    event: &'static str,
    project_id: &'a str,
    by: &'a str,
    members: &'a [String],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_settings_are_checked() {
        assert!(check_name("  ok  ").is_ok_and(|n| n == "ok"));
        assert!(check_name("").is_err());
        assert!(check_name(&"x".repeat(201)).is_err());
        assert!(check_name("a\u{7}b").is_err());
        assert!(check_settings(Some("[1]")).is_err());
        assert!(check_settings(Some("{\"a\":1}")).is_ok());
        assert_eq!(escape_like("50%_\\"), "50\\%\\_\\\\");
    }
}
