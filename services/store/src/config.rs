//! `[storage]`: the storage section, its defaults and validation; [`StorageConfig::open`]
//! opens the store it names.

use sdsim_core::config::{duration, Problems};
use serde::{Deserialize, Serialize};
use std::time::Duration;

use crate::{Options, Store, StoreError};

/// `[storage]`: where data lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `sqlite://data/sdsim.db` (relative to the working directory), `sqlite:///abs.db` or `postgres://...`.
    pub url: String,
    /// Apply pending migrations when the server starts (otherwise `sdsim migrate` does).
    pub migrate_on_start: bool,
    /// Time to establish a database connection.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// SQLite reader threads.
    pub sqlite_readers: usize,
    /// PostgreSQL: longest a statement may run before the server cancels it (the request then
    /// fails with 503 naming this key). `"0s"` turns the bound off.
    #[serde(with = "duration")]
    pub statement_timeout: Duration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            url: "sqlite://data/sdsim.db".into(),
            migrate_on_start: true,
            connect_timeout: Duration::from_secs(5),
            sqlite_readers: 2,
            statement_timeout: Duration::from_secs(10),
        }
    }
}

impl StorageConfig {
    /// Reports the problems of `[storage]` to `problems`.
    pub fn validate(&self, problems: &mut Problems) {
        problems.positive("storage.connect_timeout", self.connect_timeout);
        let url = &self.url;
        if !(url.starts_with("sqlite://")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            problems.bad_url(
                "storage.url",
                url,
                "must start with sqlite:// or postgres://",
            );
        }
    }

    /// Opens the store at `url`.
    pub fn open(&self) -> Result<Store, StoreError> {
        Store::open(
            &self.url,
            &Options {
                connect_timeout: self.connect_timeout,
                sqlite_readers: self.sqlite_readers,
                statement_timeout: self.statement_timeout,
            },
        )
    }
}
