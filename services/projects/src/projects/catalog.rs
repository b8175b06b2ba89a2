//! The template catalog: the system templates and the ones users save.

use super::{check_description, check_name, Projects, TemplateInfo};
use crate::design_limits::check_design_within;
use crate::{new_id, now_ms, templates, Caller, Failure};
use sonic_rs::{JsonContainerTrait, JsonValueMutTrait, JsonValueTrait};

impl Projects {
    /// System templates and the caller's own.
    pub async fn templates(&self, who: &Caller) -> Result<Vec<TemplateInfo>, Failure> {
        who.require("project:read")?;
        let mut out: Vec<TemplateInfo> = templates::SYSTEM
            .iter()
            .map(|t| template_info(t.id, "system", t.category, t.design, false))
            .collect();
        let rows = self
            .store
            .query(
                "SELECT id, design FROM project_schema.user_templates WHERE owner_id = $1 ORDER BY created_at",
                vec![who.user_id.as_ref().into()],
            )
            .await?;
        for row in &rows {
            out.push(template_info(row.text(0)?, "user", "", row.text(1)?, false));
        }
        Ok(out)
    }

    /// One template with its design.
    pub async fn template(&self, who: &Caller, id: &str) -> Result<TemplateInfo, Failure> {
        who.require("project:read")?;
        if let Some(t) = templates::system(id) {
            return Ok(template_info(t.id, "system", t.category, t.design, true));
        }
        let design = self.template_design(who, id).await?;
        Ok(template_info(id, "user", "", &design, true))
    }

    pub(super) async fn template_design(&self, who: &Caller, id: &str) -> Result<String, Failure> {
        if let Some(t) = templates::system(id) {
            return Ok(t.design.to_string());
        }
        let row = self
            .store
            .query_opt(
                "SELECT design FROM project_schema.user_templates WHERE id = $1 AND owner_id = $2",
                vec![id.into(), who.user_id.as_ref().into()],
            )
            .await?
            .ok_or_else(|| Failure::NotFound(format!("template {id} not found")))?;
        Ok(row.text(0)?.to_string())
    }

    /// Saves a design as one of the caller's templates (`name`/`description` go into it).
    pub async fn save_template(
        &self,
        who: &Caller,
        name: &str,
        description: &str,
        design: &str,
    ) -> Result<TemplateInfo, Failure> {
        who.require("project:write")?;
        let name = check_name(name)?;
        let description = check_description(description)?;
        check_design_within(design, self.max_design_bytes).await?;
        let mut v: sonic_rs::Value = sonic_rs::from_str(design).map_err(|e| Failure::Invalid {
            field: "design".into(),
            message: e.to_string(),
        })?;
        if let Some(obj) = v.as_object_mut() {
            obj.insert("name", sonic_rs::Value::from(name.as_str()));
            obj.insert("description", sonic_rs::Value::from(description.as_str()));
        }
        let design = v.to_string();
        let id = new_id();
        self.store
            .execute(
                "INSERT INTO project_schema.user_templates (id, owner_id, name, description, design, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                vec![
                    id.clone().into(),
                    who.user_id.as_ref().into(),
                    name.into(),
                    description.into(),
                    design.clone().into(),
                    now_ms().into(),
                ],
            )
            .await?;
        Ok(template_info(&id, "user", "", &design, true))
    }
}

fn template_info(
    id: &str,
    kind: &'static str,
    category: &str,
    design: &str,
    with_design: bool,
) -> TemplateInfo {
    let (name, description) = templates::title(design);
    let parsed: Option<sonic_rs::Value> = sonic_rs::from_str(design).ok();
    let components = parsed
        .as_ref()
        .and_then(|v| v.get("components"))
        .and_then(|c| c.as_array())
        .map_or(0, |a| a.len());
    TemplateInfo {
        id: id.to_string(),
        kind,
        name,
        description,
        category: category.to_string(),
        components,
        design: if with_design { parsed } else { None },
    }
}
