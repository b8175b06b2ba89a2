//! Sharing: members of a project and their roles.

use super::{Member, Projects, Role};
use crate::{now_ms, publish, Caller, Failure};
use sdsim_store::Statement;
use serde::Serialize;

impl Projects {
    /// Gives `user` (an id or an email) `role` in the project, or removes them (`None`); owner
    /// only. The owner's own role cannot be changed.
    pub async fn share(
        &self,
        who: &Caller,
        id: &str,
        user: &str,
        role: Option<Role>,
    ) -> Result<Vec<Member>, Failure> {
        who.require("project:write")?;
        let own = self.require(who, id, Role::Owner).await?;
        if role == Some(Role::Owner) {
            return Err(Failure::Invalid {
                field: "role".into(),
                message: "share as editor or viewer (ownership does not transfer)".into(),
            });
        }
        let target = self
            .store
            .query_opt(
                "SELECT id FROM auth_schema.users WHERE id = $1 OR email = $2",
                vec![user.into(), user.trim().to_lowercase().into()],
            )
            .await?
            .ok_or_else(|| Failure::NotFound(format!("no user {user}")))?;
        let target = target.text(0)?.to_string();
        let owner = self
            .store
            .query_opt(
                "SELECT owner_id FROM project_schema.projects WHERE id = $1",
                vec![id.into()],
            )
            .await?
            .map(|r| r.text(0).map(str::to_string))
            .transpose()?;
        if owner.as_deref() == Some(target.as_str()) {
            return Err(Failure::Invalid {
                field: "user".into(),
                message: "the owner's role cannot be changed".into(),
            });
        }
        match role {
            Some(role) => {
                self.store
                    .batch(vec![
                        Statement::new(
                            "DELETE FROM project_schema.project_members WHERE project_id = $1 AND user_id = $2",
                            vec![id.into(), target.clone().into()],
                        ),
                        Statement::new(
                            "INSERT INTO project_schema.project_members (project_id, user_id, role, added_by, added_at) VALUES ($1, $2, $3, $4, $5)",
                            vec![
                                id.into(),
                                target.clone().into(),
                                role.as_str().into(),
                                who.user_id.as_ref().into(),
                                now_ms().into(),
                            ],
                        ),
                    ])
                    .await?;
            }
            None => {
                self.store
                    .execute(
                        "DELETE FROM project_schema.project_members WHERE project_id = $1 AND user_id = $2",
                        vec![id.into(), target.clone().into()],
                    )
                    .await?;
            }
        }
        let name = self.load(id, own).await?.name;
        let event = ShareEvent {
            event: "shared",
            project_id: id,
            project_name: &name,
            user_id: &target,
            role: role.map(Role::as_str),
            by: &who.user_id,
        };
        publish("project:events:shared", &event).await;
        publish(&format!("notifications:user:{target}"), &event).await;
        self.member_list(id).await
    }

    /// The project's members (any member may list them).
    pub async fn members(&self, who: &Caller, id: &str) -> Result<Vec<Member>, Failure> {
        self.role_and_members(who, id).await.map(|(_, m)| m)
    }

    /// The caller's role in project `id` and its members (one access check).
    pub async fn role_and_members(
        &self,
        who: &Caller,
        id: &str,
    ) -> Result<(Role, Vec<Member>), Failure> {
        let role = self.role(who, id).await?;
        Ok((role, self.member_list(id).await?))
    }

    async fn member_list(&self, id: &str) -> Result<Vec<Member>, Failure> {
        let rows = self
            .store
            .query(
                "SELECT m.user_id, COALESCE(u.email, ''), m.role, m.added_at FROM project_schema.project_members m LEFT JOIN auth_schema.users u ON u.id = m.user_id WHERE m.project_id = $1 ORDER BY m.added_at, m.user_id",
                vec![id.into()],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Member {
                    user_id: row.text(0)?.to_string(),
                    email: row.text(1)?.to_string(),
                    role: Role::parse(row.text(2)?).unwrap_or(Role::Viewer),
                    added_at: row.int(3)?,
                })
            })
            .collect::<Result<_, sdsim_store::StoreError>>()
            .map_err(Failure::from)
    }
}

#[derive(Serialize)]
struct ShareEvent<'a> {
    event: &'static str,
    project_id: &'a str,
    project_name: &'a str,
    user_id: &'a str,
    role: Option<&'static str>,
    by: &'a str,
}
