//! History: versions, rollback, export and import.

use super::diff::{diff_components, Summary};
use super::{
    NewProject, Project, Projects, Role, Version, EXPORT_FORMAT, MAX_DESCRIPTION, MAX_NAME,
    MAX_SETTINGS,
};
use crate::{now_ms, Caller, Failure};
use serde::Serialize;
use sonic_rs::JsonValueTrait;

impl Projects {
    /// The version history, newest first.
    pub async fn versions(&self, who: &Caller, id: &str) -> Result<Vec<Version>, Failure> {
        self.role(who, id).await?;
        let rows = self
            .store
            .query(
                "SELECT version, author_id, created_at, summary FROM project_schema.project_versions WHERE project_id = $1 ORDER BY version DESC",
                vec![id.into()],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Version {
                    version: r.int(0)?,
                    author_id: r.text(1)?.to_string(),
                    created_at: r.int(2)?,
                    summary: sonic_rs::from_str(r.text(3)?).unwrap_or_default(),
                })
            })
            .collect::<Result<_, sdsim_store::StoreError>>()
            .map_err(Failure::from)
    }

    /// Makes version `version`'s content current again, as a new version (editor or owner).
    pub async fn rollback(&self, who: &Caller, id: &str, version: i64) -> Result<Project, Failure> {
        who.require("project:write")?;
        let role = self.require(who, id, Role::Editor).await?;
        let current = self.load(id, role).await?;
        let old = self
            .store
            .query_opt(
                "SELECT name, description, design, settings FROM project_schema.project_versions WHERE project_id = $1 AND version = $2",
                vec![id.into(), version.into()],
            )
            .await?
            .ok_or_else(|| Failure::NotFound(format!("project {id} has no version {version}")))?;
        let (name, description, design, settings) =
            (old.text(0)?, old.text(1)?, old.text(2)?, old.text(3)?);
        let summary = sonic_rs::to_string(&Summary {
            changed: vec!["rollback"],
            components: diff_components(&current.design.to_string(), design),
            rollback_of: Some(version),
        })
        .unwrap_or_default();
        let content = [name, description, design, settings];
        self.store_version(who, &current, role, content, &summary, "rolled_back")
            .await
    }

    /// The project as an export document.
    pub async fn export(&self, who: &Caller, id: &str) -> Result<sonic_rs::Value, Failure> {
        let p = self.get(who, id).await?;
        let doc = Export {
            format: EXPORT_FORMAT.into(),
            name: p.name,
            description: p.description,
            design: p.design,
            settings: p.settings,
            template_id: p.template_id,
            exported_at: now_ms(),
            source_version: p.version,
        };
        sonic_rs::to_value(&doc).map_err(|e| Failure::Unavailable(e.to_string()))
    }

    /// A new project from an export document (the same checks as [`Projects::create`]).
    pub async fn import(&self, who: &Caller, doc: &str) -> Result<Project, Failure> {
        // Checked before the document is parsed (on the shard): a design over the limit cannot
        // fit in a document this size with the longest name, description and settings.
        let max_doc =
            self.max_design_bytes + 4 * (MAX_NAME + MAX_DESCRIPTION) + MAX_SETTINGS + 4096;
        if doc.len() > max_doc {
            return Err(Failure::TooLarge(format!(
                "body: the export document of {} bytes is larger than any with a design within simulation.max_design_bytes = {} bytes",
                doc.len(),
                self.max_design_bytes
            )));
        }
        self.create(who, import_document(doc)?).await
    }
}

/// What an export document (`POST /api/projects/import`) asks to create: its name,
/// description, design and settings; the name and design are checked by [`Projects::create`].
pub fn import_document(doc: &str) -> Result<NewProject, Failure> {
    let v: sonic_rs::Value =
        sdsim_net::json::decode(doc.as_bytes()).map_err(|e| Failure::Invalid {
            field: "body".into(),
            message: format!("not JSON: {e}"),
        })?;
    if v.get("format").and_then(|f| f.as_str()) != Some(EXPORT_FORMAT) {
        return Err(Failure::Invalid {
            field: "format".into(),
            message: format!(
                "must be \"{EXPORT_FORMAT}\" (a file from GET /api/projects/{{id}}/export)"
            ),
        });
    }
    let text = |k: &'static str| -> Result<String, Failure> {
        match v.get(k) {
            None => Ok(String::new()),
            Some(x) => x.as_str().map(str::to_string).ok_or(Failure::Invalid {
                field: k.into(),
                message: "must be a string".into(),
            }),
        }
    };
    let design = v.get("design").ok_or(Failure::Invalid {
        field: "design".into(),
        message: "missing".into(),
    })?;
    Ok(NewProject {
        name: text("name")?,
        description: text("description")?,
        template_id: None,
        design: Some(design.to_string()),
        settings: v.get("settings").map(|s| s.to_string()),
    })
}

#[derive(Serialize)]
struct Export {
    format: String,
    name: String,
    description: String,
    design: sonic_rs::Value,
    settings: sonic_rs::Value,
    template_id: Option<String>,
    exported_at: i64,
    source_version: i64,
}
