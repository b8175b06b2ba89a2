//! The PostgreSQL backend: tokio-postgres on monoio. Each shard owns one connection (opened on
//! first use with `connect_raw` over a monoio socket, its connection future spawned on the
//! shard), prepares each statement once, and reconnects after a failure — with backoff, during
//! which calls fail at once with `Unavailable` instead of waiting.

use crate::{Options, Row, Statement, StoreError, Value};
use monoio::io::IntoPollIo;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::error::Error as _;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{IsNull, ToSql, Type};
use tokio_postgres::{Client, NoTls};

pub(crate) struct Postgres {
    config: tokio_postgres::Config,
    host: String,
    port: u16,
    connect_timeout: Duration,
    /// Tells the shard-local caches apart when a process opens several stores.
    id: usize,
}

struct Conn {
    client: Rc<Client>,
    statements: RefCell<HashMap<String, tokio_postgres::Statement>>,
    /// Held for a whole transaction on the transaction connection.
    busy: Arc<tokio::sync::Mutex<()>>,
    /// Set when a transaction on this connection was abandoned between `BEGIN` and the end of
    /// `COMMIT`/`ROLLBACK` (its future was dropped: a deadline, a closed connection, shutdown).
    /// The server may still hold that transaction open, so nothing else may run on this
    /// connection: the next `BEGIN` would nest inside it and its `COMMIT` would save both. A
    /// poisoned connection is forgotten; when its last user lets go, the client closes and the
    /// server rolls the open transaction back.
    poisoned: Cell<bool>,
}

/// Marks a connection poisoned unless the transaction it guards reached its end. Dropping the
/// future of a transaction (the only way to leave one without an outcome) drops this guard
/// with `settled == false`.
struct Open<'a> {
    conn: &'a Conn,
    settled: bool,
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.conn.poisoned.set(true);
        }
    }
}

/// Autocommit statements share (and pipeline on) `shared`; a transaction takes `tx`
/// exclusively, so no other statement of the shard can land inside it.
#[derive(Default)]
struct Local {
    shared: Option<Rc<Conn>>,
    tx: Option<Rc<Conn>>,
    retry_at: Option<Instant>,
    backoff: Duration,
}

#[derive(Clone, Copy)]
enum Use {
    Shared,
    Transaction,
}

thread_local! {
    static LOCAL: RefCell<HashMap<usize, Local>> = RefCell::new(HashMap::new());
}

static NEXT_ID: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Postgres {
    pub(crate) fn new(url: &str, options: &Options) -> Result<Postgres, StoreError> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Config(format!("storage.url: {e}")))?;
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => {
                return Err(StoreError::Config(
                    "storage.url: a TCP host is required".into(),
                ))
            }
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let mut config = config;
        if !options.statement_timeout.is_zero() {
            // Sent in the startup packet, so it holds from the first statement on and needs no
            // round trip; a `statement_timeout` the URL sets itself in `options` comes after
            // and wins.
            let ours = format!(
                "-c statement_timeout={}",
                options.statement_timeout.as_millis()
            );
            let options = match config.get_options() {
                Some(theirs) => format!("{ours} {theirs}"),
                None => ours,
            };
            config.options(&options);
        }
        Ok(Postgres {
            config,
            host,
            port,
            connect_timeout: options.connect_timeout,
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }

    async fn connect(&self) -> Result<Rc<Conn>, StoreError> {
        let down =
            |why: String| StoreError::Unavailable(format!("{}:{}: {why}", self.host, self.port));
        let addr = (self.host.as_str(), self.port);
        let tcp =
            monoio::time::timeout(self.connect_timeout, monoio::net::TcpStream::connect(addr))
                .await
                .map_err(|_| down("connect timed out".into()))?
                .map_err(|e| down(format!("connect failed: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let io = tcp.into_poll_io().map_err(|e| down(e.to_string()))?;
        let (client, connection) =
            monoio::time::timeout(self.connect_timeout, self.config.connect_raw(io, NoTls))
                .await
                .map_err(|_| down("handshake timed out".into()))?
                .map_err(|e| down(describe(&e)))?;
        sdsim_core::runtime::spawn("postgres-connection", async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "PostgreSQL connection ended");
            }
        });
        Ok(Rc::new(Conn {
            client: Rc::new(client),
            statements: RefCell::new(HashMap::new()),
            busy: Arc::new(tokio::sync::Mutex::new(())),
            poisoned: Cell::new(false),
        }))
    }

    /// This shard's connection: cached, or opened now, or `Unavailable` during backoff.
    async fn conn(&self, usage: Use) -> Result<Rc<Conn>, StoreError> {
        let cached = LOCAL.with(|l| {
            let mut l = l.borrow_mut();
            let local = l.entry(self.id).or_default();
            let conn = match usage {
                Use::Shared => &mut local.shared,
                Use::Transaction => &mut local.tx,
            };
            if let Some(c) = conn.as_ref() {
                if !c.client.is_closed() && !c.poisoned.get() {
                    return Ok(Some(Rc::clone(c)));
                }
                *conn = None;
            }
            match local.retry_at {
                Some(at) if Instant::now() < at => Err(StoreError::Unavailable(format!(
                    "{}:{}: reconnecting (next attempt in {} ms)",
                    self.host,
                    self.port,
                    at.saturating_duration_since(Instant::now()).as_millis()
                ))),
                _ => Ok(None),
            }
        })?;
        if let Some(c) = cached {
            return Ok(c);
        }
        let result = self.connect().await;
        LOCAL.with(|l| {
            let mut l = l.borrow_mut();
            let local = l.entry(self.id).or_default();
            match &result {
                Ok(c) => {
                    match usage {
                        Use::Shared => local.shared = Some(Rc::clone(c)),
                        Use::Transaction => local.tx = Some(Rc::clone(c)),
                    }
                    local.retry_at = None;
                    local.backoff = Duration::ZERO;
                }
                Err(_) => {
                    local.backoff = (local.backoff * 2)
                        .clamp(Duration::from_millis(100), Duration::from_secs(5));
                    local.retry_at = Some(Instant::now() + local.backoff);
                }
            }
        });
        result
    }

    async fn prepare(conn: &Conn, sql: &str) -> Result<tokio_postgres::Statement, StoreError> {
        if let Some(s) = conn.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let stmt = conn.client.prepare(sql).await.map_err(map_error)?;
        conn.statements
            .borrow_mut()
            .insert(sql.to_string(), stmt.clone());
        Ok(stmt)
    }

    pub(crate) async fn query(
        &self,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<Vec<Row>, StoreError> {
        let conn = self.conn(Use::Shared).await?;
        let stmt = Self::prepare(&conn, sql).await?;
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let rows = conn.client.query(&stmt, &refs).await.map_err(map_error)?;
        rows.iter().map(convert_row).collect()
    }

    pub(crate) async fn batch(&self, statements: Vec<Statement>) -> Result<Vec<u64>, StoreError> {
        if statements.len() == 1 {
            // One statement commits by itself: no transaction connection needed.
            let conn = self.conn(Use::Shared).await?;
            let s = &statements[0];
            let stmt = Self::prepare(&conn, &s.sql).await?;
            let refs: Vec<&(dyn ToSql + Sync)> =
                s.params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            return conn
                .client
                .execute(&stmt, &refs)
                .await
                .map(|n| vec![n])
                .map_err(map_error);
        }
        let (conn, _exclusive) = self.transaction_conn().await?;
        let mut prepared = Vec::with_capacity(statements.len());
        for s in &statements {
            prepared.push(Self::prepare(&conn, &s.sql).await?);
        }
        let mut open = Open {
            conn: &conn,
            settled: false,
        };
        if let Err(e) = conn.client.batch_execute("BEGIN").await {
            // BEGIN may or may not have reached the server: do not reuse the connection.
            return Err(map_error(e));
        }
        let mut counts = Vec::with_capacity(statements.len());
        for (s, stmt) in statements.iter().zip(&prepared) {
            let refs: Vec<&(dyn ToSql + Sync)> =
                s.params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            match conn.client.execute(stmt, &refs).await {
                Ok(n) => counts.push(n),
                Err(e) => {
                    if conn.client.batch_execute("ROLLBACK").await.is_ok() {
                        open.settled = true;
                    }
                    return Err(map_error(e));
                }
            }
        }
        conn.client
            .batch_execute("COMMIT")
            .await
            .map_err(map_error)?;
        open.settled = true;
        Ok(counts)
    }

    pub(crate) async fn script(&self, script: &str) -> Result<(), StoreError> {
        let (conn, _exclusive) = self.transaction_conn().await?;
        let mut open = Open {
            conn: &conn,
            settled: false,
        };
        let wrapped = format!("BEGIN;\n{script}\nCOMMIT;");
        if let Err(e) = conn.client.batch_execute(&wrapped).await {
            if conn.client.batch_execute("ROLLBACK").await.is_ok() {
                open.settled = true;
            }
            return Err(map_error(e));
        }
        open.settled = true;
        Ok(())
    }

    /// The shard's transaction connection, held exclusively. A connection found poisoned once
    /// the lock is ours (the transaction we queued behind was abandoned) is skipped: `conn`
    /// never hands it out again.
    async fn transaction_conn(
        &self,
    ) -> Result<(Rc<Conn>, tokio::sync::OwnedMutexGuard<()>), StoreError> {
        loop {
            let conn = self.conn(Use::Transaction).await?;
            let exclusive = Arc::clone(&conn.busy).lock_owned().await;
            if !conn.poisoned.get() {
                return Ok((conn, exclusive));
            }
        }
    }
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) => match *ty {
                Type::INT2 => (i16::try_from(*v)?).to_sql(ty, out),
                Type::INT4 => (i32::try_from(*v)?).to_sql(ty, out),
                Type::BOOL => (*v != 0).to_sql(ty, out),
                _ => v.to_sql(ty, out),
            },
            Value::Text(t) => t.as_str().to_sql(ty, out),
            Value::Bytes(b) => b.as_slice().to_sql(ty, out),
            Value::Bool(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

fn convert_row(row: &tokio_postgres::Row) -> Result<Row, StoreError> {
    let bad = |e: tokio_postgres::Error| StoreError::Decode(e.to_string());
    let mut values = Vec::with_capacity(row.len());
    for (i, col) in row.columns().iter().enumerate() {
        let v = match *col.type_() {
            Type::INT8 => row
                .try_get::<_, Option<i64>>(i)
                .map_err(bad)?
                .map(Value::Int),
            Type::INT4 => row
                .try_get::<_, Option<i32>>(i)
                .map_err(bad)?
                .map(|v| Value::Int(v.into())),
            Type::INT2 => row
                .try_get::<_, Option<i16>>(i)
                .map_err(bad)?
                .map(|v| Value::Int(v.into())),
            Type::BOOL => row
                .try_get::<_, Option<bool>>(i)
                .map_err(bad)?
                .map(Value::Bool),
            Type::BYTEA => row
                .try_get::<_, Option<Vec<u8>>>(i)
                .map_err(bad)?
                .map(Value::Bytes),
            _ => row
                .try_get::<_, Option<String>>(i)
                .map_err(bad)?
                .map(Value::Text),
        };
        values.push(v.unwrap_or(Value::Null));
    }
    Ok(Row(values))
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.source() {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    }
}

fn map_error(e: tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        if *db.code() == SqlState::QUERY_CANCELED {
            return StoreError::Unavailable(format!(
                "the statement was cancelled by the database (storage.statement_timeout): {}",
                db.message()
            ));
        }
        if *db.code() == SqlState::UNIQUE_VIOLATION {
            return StoreError::Conflict(db.constraint().unwrap_or(db.message()).to_string());
        }
        return StoreError::Query(db.message().to_string());
    }
    if e.is_closed() || e.source().is_some_and(|s| s.is::<std::io::Error>()) {
        return StoreError::Unavailable(describe(&e));
    }
    StoreError::Query(describe(&e))
}
