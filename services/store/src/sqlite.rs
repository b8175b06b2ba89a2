//! The SQLite backend: WAL-mode files owned by the store's threads — one writer (SQLite takes
//! one writer at a time anyway) and a few readers, each with its own connection. Shards send
//! jobs over bounded queues and await the answer; they never touch the file themselves.

use crate::{Options, Row, Statement, StoreError, Value};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// The schemas of seed 004, attached next to the main file.
pub(crate) const SCHEMAS: [&str; 3] = ["auth_schema", "project_schema", "simulation_schema"];
const QUEUE: usize = 4096;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

pub(crate) struct Sqlite {
    writer: SyncSender<Job>,
    readers: SyncSender<Job>,
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| StoreError::Unavailable(format!("{}: {e}", path.display())))?;
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("sdsim");
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut setup = String::from("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON; PRAGMA busy_timeout=5000;");
    for schema in SCHEMAS {
        let file = dir.join(format!("{stem}.{schema}.db"));
        let file = file.to_string_lossy().replace('\'', "''");
        setup.push_str(&format!(
            "ATTACH DATABASE '{file}' AS {schema}; PRAGMA {schema}.journal_mode=WAL; PRAGMA {schema}.synchronous=NORMAL;"
        ));
    }
    conn.execute_batch(&setup)
        .map_err(|e| StoreError::Unavailable(format!("{}: {e}", path.display())))?;
    Ok(conn)
}

fn spawn(name: String, path: PathBuf, jobs: Arc<Mutex<Receiver<Job>>>) -> Result<(), StoreError> {
    let mut conn = open_connection(&path)?;
    std::thread::Builder::new()
        .name(name)
        .spawn(move || loop {
            // Readers share one queue: whoever is free takes the next job.
            let job = match jobs.lock() {
                Ok(rx) => rx.recv(),
                Err(_) => return,
            };
            match job {
                Ok(job) => job(&mut conn),
                Err(_) => return, // The store was dropped.
            }
        })
        .map_err(|e| StoreError::Config(format!("cannot start a SQLite thread: {e}")))?;
    Ok(())
}

impl Sqlite {
    pub(crate) fn open(path: &str, options: &Options) -> Result<Sqlite, StoreError> {
        let path = PathBuf::from(path);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Config(format!("cannot create {}: {e}", dir.display())))?;
        }
        let (writer, rx) = sync_channel::<Job>(QUEUE);
        spawn(
            "sdsim-sqlite-w".into(),
            path.clone(),
            Arc::new(Mutex::new(rx)),
        )?;
        let (readers, rx) = sync_channel::<Job>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..options.sqlite_readers.max(1) {
            spawn(format!("sdsim-sqlite-r{i}"), path.clone(), Arc::clone(&rx))?;
        }
        Ok(Sqlite { writer, readers })
    }

    async fn run<T: Send + 'static>(
        queue: &SyncSender<Job>,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = tx.send(f(conn));
        });
        match queue.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(StoreError::Unavailable("the SQLite queue is full".into()))
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(StoreError::Unavailable("the SQLite threads stopped".into()))
            }
        }
        rx.await
            .map_err(|_| StoreError::Unavailable("the SQLite thread dropped the job".into()))?
    }

    pub(crate) async fn batch(&self, statements: Vec<Statement>) -> Result<Vec<u64>, StoreError> {
        Self::run(&self.writer, move |conn| {
            let tx = conn.transaction().map_err(map_error)?;
            let mut counts = Vec::with_capacity(statements.len());
            for s in &statements {
                let mut stmt = tx.prepare_cached(&numbered(&s.sql)).map_err(map_error)?;
                let n = stmt
                    .execute(rusqlite::params_from_iter(s.params.iter().map(Param)))
                    .map_err(map_error)?;
                counts.push(n as u64);
            }
            tx.commit().map_err(map_error)?;
            Ok(counts)
        })
        .await
    }

    pub(crate) async fn query(
        &self,
        sql: String,
        params: Vec<Value>,
    ) -> Result<Vec<Row>, StoreError> {
        // A query that writes (INSERT ... RETURNING) goes to the writer.
        let writes = !sql
            .trim_start()
            .get(..6)
            .is_some_and(|w| w.eq_ignore_ascii_case("select"));
        let queue = if writes { &self.writer } else { &self.readers };
        Self::run(queue, move |conn| {
            let mut stmt = conn.prepare_cached(&numbered(&sql)).map_err(map_error)?;
            let columns = stmt.column_count();
            let mut rows = stmt
                .query(rusqlite::params_from_iter(params.iter().map(Param)))
                .map_err(map_error)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(map_error)? {
                let mut values = Vec::with_capacity(columns);
                for i in 0..columns {
                    values.push(match row.get_ref(i).map_err(map_error)? {
                        ValueRef::Null => Value::Null,
                        ValueRef::Integer(v) => Value::Int(v),
                        ValueRef::Real(v) => Value::Text(v.to_string()),
                        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                        ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
                    });
                }
                out.push(Row(values));
            }
            Ok(out)
        })
        .await
    }

    pub(crate) async fn script(&self, script: String) -> Result<(), StoreError> {
        Self::run(&self.writer, move |conn| {
            let tx = conn.transaction().map_err(map_error)?;
            tx.execute_batch(&script).map_err(map_error)?;
            tx.commit().map_err(map_error)
        })
        .await
    }
}

struct Param<'a>(&'a Value);

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self.0 {
            Value::Null => ToSqlOutput::Owned(rusqlite::types::Value::Null),
            Value::Int(v) => ToSqlOutput::Owned(rusqlite::types::Value::Integer(*v)),
            Value::Bool(b) => ToSqlOutput::Owned(rusqlite::types::Value::Integer(*b as i64)),
            Value::Text(t) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
            Value::Bytes(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

fn map_error(e: rusqlite::Error) -> StoreError {
    use rusqlite::ffi::ErrorCode;
    match &e {
        rusqlite::Error::SqliteFailure(f, msg) if f.code == ErrorCode::ConstraintViolation => {
            let text = msg.clone().unwrap_or_else(|| e.to_string());
            // SQLITE_CONSTRAINT_UNIQUE (2067) and SQLITE_CONSTRAINT_PRIMARYKEY (1555).
            if f.extended_code == 2067 || f.extended_code == 1555 {
                StoreError::Conflict(text)
            } else {
                StoreError::Query(text)
            }
        }
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                ErrorCode::DatabaseBusy
                    | ErrorCode::DatabaseLocked
                    | ErrorCode::CannotOpen
                    | ErrorCode::DiskFull
                    | ErrorCode::SystemIoFailure
            ) =>
        {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Query(e.to_string()),
    }
}

/// PostgreSQL's `$N` placeholders as SQLite's `?N`: SQLite reads `$1` as a *named* parameter,
/// numbered by first appearance, so `SET a = $2 WHERE b = $1` would bind the values swapped.
fn numbered(sql: &str) -> std::borrow::Cow<'_, str> {
    if !sql.contains('$') {
        return std::borrow::Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
        }
        if c == '$' && !quoted && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_become_numbered() {
        assert_eq!(super::numbered("SELECT 1"), "SELECT 1");
        assert_eq!(
            super::numbered("UPDATE t SET a = $2 WHERE b = $1 AND c = '$1'"),
            "UPDATE t SET a = ?2 WHERE b = ?1 AND c = '$1'"
        );
    }
}
