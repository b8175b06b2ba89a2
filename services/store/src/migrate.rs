//! Versioned migrations: each has a DDL text per dialect, applied in order inside a
//! transaction and recorded in `schema_migrations`. `sdsim migrate` runs them; `sdsim serve`
//! does too when `storage.migrate_on_start` is set.

use crate::{Store, StoreError};

/// One migration.
pub struct Migration {
    /// Version, increasing.
    pub version: i64,
    /// Short name.
    pub name: &'static str,
    /// PostgreSQL DDL.
    pub postgres: &'static str,
    /// SQLite DDL.
    pub sqlite: &'static str,
}

/// Every migration, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "auth",
        postgres: include_str!("../migrations/0001_auth.postgres.sql"),
        sqlite: include_str!("../migrations/0001_auth.sqlite.sql"),
    },
    Migration {
        version: 2,
        name: "signing keys",
        postgres: include_str!("../migrations/0002_signing_keys.postgres.sql"),
        sqlite: include_str!("../migrations/0002_signing_keys.sqlite.sql"),
    },
    Migration {
        version: 3,
        name: "projects and simulations",
        postgres: include_str!("../migrations/0003_projects.postgres.sql"),
        sqlite: include_str!("../migrations/0003_projects.sqlite.sql"),
    },
    Migration {
        version: 4,
        name: "active runs index",
        postgres: include_str!("../migrations/0004_active_runs.postgres.sql"),
        sqlite: include_str!("../migrations/0004_active_runs.sqlite.sql"),
    },
    Migration {
        version: 5,
        name: "run owner",
        postgres: include_str!("../migrations/0005_run_owner.postgres.sql"),
        sqlite: include_str!("../migrations/0005_run_owner.sqlite.sql"),
    },
    Migration {
        version: 6,
        name: "revoked sessions index",
        postgres: include_str!("../migrations/0006_revoked_sessions.postgres.sql"),
        sqlite: include_str!("../migrations/0006_revoked_sessions.sqlite.sql"),
    },
    Migration {
        version: 7,
        name: "outbox claims",
        postgres: include_str!("../migrations/0007_outbox_claims.postgres.sql"),
        sqlite: include_str!("../migrations/0007_outbox_claims.sqlite.sql"),
    },
    Migration {
        version: 8,
        name: "sweeps",
        postgres: include_str!("../migrations/0008_sweeps.postgres.sql"),
        sqlite: include_str!("../migrations/0008_sweeps.sqlite.sql"),
    },
];

/// The versions already applied.
pub async fn applied(store: &Store) -> Result<Vec<i64>, StoreError> {
    store
        .execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
            vec![],
        )
        .await?;
    let rows = store
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            vec![],
        )
        .await?;
    rows.iter().map(|r| r.int(0)).collect()
}

/// Applies the migrations not applied yet; returns the versions applied now.
pub async fn run(store: &Store) -> Result<Vec<i64>, StoreError> {
    let done = applied(store).await?;
    let mut now = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| !done.contains(&m.version)) {
        let ddl = match store.kind() {
            "postgres" => m.postgres,
            _ => m.sqlite,
        };
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let record = format!(
            "{ddl}\nINSERT INTO schema_migrations (version, name, applied_at) VALUES ({}, '{}', {at});",
            m.version, m.name
        );
        store.execute_script(&record).await.map_err(|e| match e {
            StoreError::Query(why) => {
                StoreError::Query(format!("migration {} ({}): {why}", m.version, m.name))
            }
            other => other,
        })?;
        tracing::info!(version = m.version, name = m.name, "migration applied");
        now.push(m.version);
    }
    Ok(now)
}
