//! sdsim-store: one async repository API over two backends.
//!
//! - **SQLite** (the embedded default, `sqlite://data/sdsim.db`): WAL mode; the schemas of seed
//!   004 (`auth_schema`, `project_schema`, `simulation_schema`) are attached databases next to
//!   the main file, so the same schema-qualified SQL runs on both backends. Every statement runs
//!   on the store's own threads (one writer, readers beside it), never on a shard.
//! - **PostgreSQL** (`postgres://...`): tokio-postgres on monoio (`connect_raw` over the shard's
//!   own socket), one connection per shard, statements prepared once per connection, connect
//!   timeout, reconnect with backoff. While the database is down, calls fail fast with
//!   [`StoreError::Unavailable`] (HTTP 503) and the store recovers by itself.
//!
//! SQL is written once with `$1, $2, ...` parameters (SQLite reads them as numbered names);
//! migrations carry a DDL text per dialect ([`migrate`]).
//!
//! Modules: `sqlite` and `postgres` (the two backends behind [`Store`]), [`migrate`] (versioned
//! migrations). Tests get their PostgreSQL servers from the `sdsim-testing` dev-dependency.

pub mod config;
pub mod migrate;
mod postgres;
mod sqlite;

pub use config::StorageConfig;

use std::sync::Arc;
use std::time::Duration;

/// A parameter or column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// An integer (BIGINT).
    Int(i64),
    /// Text.
    Text(String),
    /// Bytes (BYTEA / BLOB).
    Bytes(Vec<u8>),
    /// A boolean (SQLite stores 0/1).
    Bool(bool),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Bytes(v)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// One result row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(pub Vec<Value>);

impl Row {
    fn at(&self, i: usize) -> Result<&Value, StoreError> {
        self.0
            .get(i)
            .ok_or_else(|| StoreError::Decode(format!("no column {i}")))
    }

    /// Column `i` as an integer.
    pub fn int(&self, i: usize) -> Result<i64, StoreError> {
        match self.at(i)? {
            Value::Int(v) => Ok(*v),
            Value::Bool(b) => Ok(*b as i64),
            other => Err(StoreError::Decode(format!(
                "column {i} is {other:?}, not an integer"
            ))),
        }
    }

    /// Column `i` as an integer or NULL.
    pub fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            _ => self.int(i).map(Some),
        }
    }

    /// Column `i` as text.
    pub fn text(&self, i: usize) -> Result<&str, StoreError> {
        match self.at(i)? {
            Value::Text(v) => Ok(v),
            other => Err(StoreError::Decode(format!(
                "column {i} is {other:?}, not text"
            ))),
        }
    }

    /// Column `i` as a boolean (SQLite's 0/1 included).
    pub fn bool(&self, i: usize) -> Result<bool, StoreError> {
        match self.at(i)? {
            Value::Bool(b) => Ok(*b),
            Value::Int(v) => Ok(*v != 0),
            other => Err(StoreError::Decode(format!(
                "column {i} is {other:?}, not a boolean"
            ))),
        }
    }

    /// Column `i` as bytes.
    pub fn bytes(&self, i: usize) -> Result<&[u8], StoreError> {
        match self.at(i)? {
            Value::Bytes(v) => Ok(v),
            other => Err(StoreError::Decode(format!(
                "column {i} is {other:?}, not bytes"
            ))),
        }
    }
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached (down, restarting, connection lost): retry later; HTTP
    /// surfaces answer 503.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// A unique or primary-key constraint rejected the write (names the constraint when known).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The statement failed (bad SQL, a constraint other than uniqueness).
    #[error("query failed: {0}")]
    Query(String),
    /// A column did not have the expected type.
    #[error("unexpected column value: {0}")]
    Decode(String),
    /// The store URL is not usable.
    #[error("{0}")]
    Config(String),
}

/// One statement with its parameters (for batches).
#[derive(Debug, Clone)]
pub struct Statement {
    /// SQL with `$1, $2, ...` parameters.
    pub sql: String,
    /// The parameters in order.
    pub params: Vec<Value>,
}

impl Statement {
    /// A statement.
    pub fn new(sql: impl Into<String>, params: Vec<Value>) -> Statement {
        Statement {
            sql: sql.into(),
            params,
        }
    }
}

/// The backend behind a [`Store`].
#[derive(Clone)]
enum Backend {
    Sqlite(Arc<sqlite::Sqlite>),
    Postgres(Arc<postgres::Postgres>),
}

/// A handle to the store; cheap to clone and shared by every shard.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

/// Options for opening a store.
#[derive(Debug, Clone)]
pub struct Options {
    /// Time to establish a database connection.
    pub connect_timeout: Duration,
    /// SQLite reader threads beside the writer.
    pub sqlite_readers: usize,
    /// PostgreSQL: the server cancels a statement that runs longer (`statement_timeout`), and
    /// the call fails with [`StoreError::Unavailable`] naming the bound. Zero: no bound.
    pub statement_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connect_timeout: Duration::from_secs(3),
            sqlite_readers: 2,
            statement_timeout: Duration::from_secs(10),
        }
    }
}

impl Store {
    /// Opens the store `url` names (`sqlite://...` or `postgres://...`). SQLite files are
    /// created (with their directory); PostgreSQL connections open lazily, per shard.
    pub fn open(url: &str, options: &Options) -> Result<Store, StoreError> {
        let backend = if let Some(path) = url.strip_prefix("sqlite://") {
            Backend::Sqlite(Arc::new(sqlite::Sqlite::open(path, options)?))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres(Arc::new(postgres::Postgres::new(url, options)?))
        } else {
            return Err(StoreError::Config(format!(
                "storage.url = {url}: expected sqlite://PATH or postgres://..."
            )));
        };
        Ok(Store { backend })
    }

    /// `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Runs a statement; returns the rows it changed.
    pub async fn execute(&self, sql: &str, params: Vec<Value>) -> Result<u64, StoreError> {
        let mut counts = self.batch(vec![Statement::new(sql, params)]).await?;
        Ok(counts.pop().unwrap_or(0))
    }

    /// Runs statements in one transaction: all or none. Returns each one's changed rows.
    pub async fn batch(&self, statements: Vec<Statement>) -> Result<Vec<u64>, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.batch(statements).await,
            Backend::Postgres(db) => db.batch(statements).await,
        }
    }

    /// Runs statements in one transaction, serialised against every other `batch_exclusive` with
    /// the same `key` on any connection of any instance: for check-then-write statements (an
    /// `INSERT … SELECT … WHERE (SELECT COUNT(*) …) < n`) that would otherwise race under READ
    /// COMMITTED. PostgreSQL takes a transaction-scoped advisory lock on a hash of `key` first;
    /// SQLite's single writer serialises every write already. Returns each statement's changed
    /// rows.
    pub async fn batch_exclusive(
        &self,
        key: &str,
        statements: Vec<Statement>,
    ) -> Result<Vec<u64>, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.batch(statements).await,
            Backend::Postgres(db) => {
                let mut locked = Vec::with_capacity(statements.len() + 1);
                locked.push(Statement::new(
                    "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                    vec![Value::Text(key.to_string())],
                ));
                locked.extend(statements);
                let mut counts = db.batch(locked).await?;
                counts.remove(0);
                Ok(counts)
            }
        }
    }

    /// Runs a query and returns its rows.
    pub async fn query(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.query(sql.to_string(), params).await,
            Backend::Postgres(db) => db.query(sql, params).await,
        }
    }

    /// The first row of a query, if any.
    pub async fn query_opt(
        &self,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    /// Runs DDL text (several statements) in one transaction; used by migrations.
    pub async fn execute_script(&self, script: &str) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.script(script.to_string()).await,
            Backend::Postgres(db) => db.script(script).await,
        }
    }

    /// A cheap round trip (`SELECT 1`) for health checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.query("SELECT 1", vec![]).await.map(|_| ())
    }
}
