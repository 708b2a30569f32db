//! Where read models live: SQLite (embedded, `<data-dir>/read-models/current.sqlite`) or
//! PostgreSQL, both through `sqlx`. Projections write through a [`Tx`] with one SQL dialect
//! (`$1` placeholders, `BIGINT`/`TEXT` columns, `INSERT … ON CONFLICT … DO UPDATE`), which both
//! backends accept, so a projection is written once.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Row};

/// The NOLOGIN role tenant-scoped sessions switch to on PostgreSQL: it may only read, and
/// row-level security shows it the rows of `annals.tenant` only.
pub const READER_ROLE: &str = "annals_reader";

/// Failures of a read-model store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{context}: {source}")]
    Db {
        context: String,
        source: sqlx::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl StoreError {
    pub(crate) fn db(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> StoreError {
        let context = context.into();
        move |source| StoreError::Db { context, source }
    }

    /// The transaction was aborted by PostgreSQL to break a deadlock, or waited longer than its
    /// `lock_timeout`: trying it again can succeed.
    pub fn is_lock_conflict(&self) -> bool {
        let StoreError::Db { source, .. } = self else {
            return false;
        };
        source
            .as_database_error()
            .and_then(|e| e.code())
            .is_some_and(|code| code == "40P01" || code == "55P03")
    }

    /// The database could not be reached or went away (the caller may retry later).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Db {
                source: sqlx::Error::Io(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed,
                ..
            }
        )
    }
}

/// Which database a store is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Sqlite,
    Postgres,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Sqlite => "sqlite",
            BackendKind::Postgres => "postgres",
        }
    }
}

/// Where to open a store.
#[derive(Debug, Clone)]
pub enum Backend {
    /// An SQLite file (created if missing).
    Sqlite { path: PathBuf },
    /// A PostgreSQL URL, and optionally the schema to use (created if missing; default: the
    /// role's default `search_path`, normally `public`). Tests use one schema each.
    Postgres { url: String, schema: Option<String> },
}

impl Backend {
    /// The embedded default: `<data-dir>/read-models/current.sqlite`.
    pub fn embedded(data_dir: &Path) -> Backend {
        Backend::Sqlite {
            path: data_dir.join("read-models").join("current.sqlite"),
        }
    }

    /// Where the store is, without a password.
    pub fn describe(&self) -> String {
        match self {
            Backend::Sqlite { path } => path.display().to_string(),
            Backend::Postgres { url, schema } => {
                let shown = match (url.find("://"), url.rfind('@')) {
                    (Some(s), Some(at)) if at > s => {
                        let creds = &url[s + 3..at];
                        let user = creds.split(':').next().unwrap_or("");
                        format!("{}{}@{}", &url[..s + 3], user, &url[at + 1..])
                    }
                    _ => url.clone(),
                };
                match schema {
                    Some(s) => format!("{shown} (schema {s})"),
                    None => shown,
                }
            }
        }
    }
}

/// A typed SQL parameter (typed even when null, as PostgreSQL needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Int(Option<i64>),
    Text(Option<String>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(Some(v))
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Value {
        Value::Int(Some(i64::from(v)))
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Value {
        Value::Int(Some(i64::from(v)))
    }
}
impl From<u64> for Value {
    fn from(v: u64) -> Value {
        Value::Int(Some(i64::try_from(v).unwrap_or(i64::MAX)))
    }
}
impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Value {
        Value::Int(v)
    }
}
impl From<Option<i32>> for Value {
    fn from(v: Option<i32>) -> Value {
        Value::Int(v.map(i64::from))
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(Some(v.to_owned()))
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Value {
        Value::Text(Some(v.clone()))
    }
}
impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(Some(v))
    }
}
impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Value {
        Value::Text(v)
    }
}
impl From<Option<&str>> for Value {
    fn from(v: Option<&str>) -> Value {
        Value::Text(v.map(str::to_owned))
    }
}

/// Parameters for [`Tx::execute`]: `params![a, b, c]`.
#[macro_export]
macro_rules! params {
    ($($v:expr),* $(,)?) => { &[$($crate::store::Value::from($v)),*][..] };
}

#[derive(Clone)]
enum Pool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// An open read-model database.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    backend: Backend,
}

impl Store {
    /// Opens (creating if needed) the store.
    pub async fn open(backend: &Backend) -> Result<Store, StoreError> {
        let pool = match backend {
            Backend::Sqlite { path } => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        StoreError::Invalid(format!("cannot create {}: {e}", dir.display()))
                    })?;
                }
                // WAL: readers keep reading the last committed state while the projector
                // writes. NORMAL sync: a power cut may lose the last commits, never split one —
                // rows and position go together, and the projector catches up again.
                let opts = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    // Erased personal data must not linger in free pages.
                    .pragma("secure_delete", "on")
                    .busy_timeout(Duration::from_secs(30));
                let pool = SqlitePoolOptions::new()
                    .max_connections(4)
                    .connect_with(opts)
                    .await
                    .map_err(StoreError::db(format!("cannot open {}", path.display())))?;
                Pool::Sqlite(pool)
            }
            Backend::Postgres { url, schema } => {
                let mut opts = PgConnectOptions::from_str(url).map_err(|e| {
                    StoreError::Invalid(format!("[read_models] postgres is not a valid URL: {e}"))
                })?;
                let where_ = backend.describe();
                if let Some(schema) = schema {
                    check_ident(schema)?;
                    let pool = PgPoolOptions::new()
                        .max_connections(1)
                        .acquire_timeout(Duration::from_secs(10))
                        .connect_with(opts.clone())
                        .await
                        .map_err(StoreError::db(format!("cannot connect to {where_}")))?;
                    sqlx::raw_sql(AssertSqlSafe(format!(
                        "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
                    )))
                    .execute(&pool)
                    .await
                    .map_err(StoreError::db(format!("cannot create schema {schema}")))?;
                    pool.close().await;
                    opts = opts.options([("search_path", schema.as_str())]);
                }
                let pool = PgPoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(opts)
                    .await
                    .map_err(StoreError::db(format!("cannot connect to {where_}")))?;
                Pool::Postgres(pool)
            }
        };
        Ok(Store {
            pool,
            backend: backend.clone(),
        })
    }

    pub fn kind(&self) -> BackendKind {
        match self.pool {
            Pool::Sqlite(_) => BackendKind::Sqlite,
            Pool::Postgres(_) => BackendKind::Postgres,
        }
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Starts a transaction (the unit a projection writes a batch and its position in).
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(match &self.pool {
            Pool::Sqlite(p) => Tx::new(Conn::Sqlite(
                p.begin().await.map_err(StoreError::db("begin"))?,
            )),
            Pool::Postgres(p) => Tx::new(Conn::Postgres(
                p.begin().await.map_err(StoreError::db("begin"))?,
            )),
        })
    }

    /// Starts a transaction that will write: on SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`, waiting for another writer's commit as any write does), so a
    /// transaction that reads before it writes cannot fail because another connection committed
    /// in between. On PostgreSQL the same as [`begin`](Self::begin).
    pub async fn begin_write(&self) -> Result<Tx, StoreError> {
        Ok(match &self.pool {
            Pool::Sqlite(p) => Tx::new(Conn::Sqlite(
                p.begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(StoreError::db("begin"))?,
            )),
            Pool::Postgres(_) => self.begin().await?,
        })
    }

    /// A read-only session that sees one tenant's rows only: on PostgreSQL a transaction that
    /// switched to the [`READER_ROLE`] with `annals.tenant` set, so row-level security filters
    /// every table. SQLite has no row-level security: there the embedded model is the one
    /// user's, and this is refused.
    pub async fn tenant_session(&self, tenant: &str) -> Result<Tx, StoreError> {
        match &self.pool {
            Pool::Sqlite(_) => Err(StoreError::Invalid(
                "tenant-scoped sessions need PostgreSQL (row-level security); the embedded SQLite read model has no tenant isolation".into(),
            )),
            Pool::Postgres(_) => {
                let mut tx = self.begin().await?;
                tx.execute(
                    "SELECT set_config('annals.tenant', $1, true)",
                    params![tenant],
                )
                .await?;
                tx.execute(&format!("SET LOCAL ROLE {READER_ROLE}"), &[])
                    .await?;
                tx.execute("SET TRANSACTION READ ONLY", &[]).await?;
                Ok(tx)
            }
        }
    }

    /// Drops a PostgreSQL schema and everything in it (scratch schemas of benchmarks and
    /// tests); a no-op on SQLite.
    pub async fn drop_schema(backend: &Backend) -> Result<(), StoreError> {
        let Backend::Postgres {
            url,
            schema: Some(schema),
        } = backend
        else {
            return Ok(());
        };
        check_ident(schema)?;
        let admin = Store::open(&Backend::Postgres {
            url: url.clone(),
            schema: None,
        })
        .await?;
        let mut tx = admin.begin().await?;
        let dropped = tx
            .execute_script(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await;
        let committed = match dropped {
            Ok(()) => tx.commit().await,
            Err(e) => Err(e),
        };
        admin.close().await;
        committed
    }

    /// After personal data was erased from `table`: makes sure no old copy of its rows is left
    /// in the database's files — SQLite: the write-ahead log is checkpointed and truncated (freed
    /// pages are zeroed, `secure_delete`); PostgreSQL: the table is rewritten (`VACUUM FULL`).
    pub async fn purge(&self, table: &str) -> Result<(), StoreError> {
        check_ident(table)?;
        match &self.pool {
            Pool::Sqlite(p) => {
                // The checkpoint reports "busy" in its row, not as an error: retry while a
                // reader holds an old snapshot, and fail if the log is not truncated.
                for _ in 0..50 {
                    let row = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                        .fetch_one(p)
                        .await
                        .map_err(StoreError::db(format!("purging {table}")))?;
                    let busy: i64 = row.try_get(0).unwrap_or(1);
                    if busy == 0 {
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                return Err(StoreError::Invalid(format!(
                    "purging {table}: readers kept the SQLite write-ahead log busy; stop them and run it again"
                )));
            }
            Pool::Postgres(p) => sqlx::raw_sql(AssertSqlSafe(format!("VACUUM FULL {table}")))
                .execute(p)
                .await
                .map(|_| ()),
        }
        .map_err(StoreError::db(format!("purging {table}")))
    }

    /// Closes the pool (waits for connections to be returned).
    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }
}

/// A transaction on either backend. Dropped without [`Tx::commit`], it rolls back.
///
/// A transaction can pipeline its writes ([`Tx::pipeline`]): statements are then collected,
/// with their parameters written as literals, and sent together as one script when the
/// transaction next reads, runs a script or commits — one round trip (PostgreSQL) or one call
/// into SQLite's thread per batch instead of one per statement.
///
/// A transaction can also be redirected to other tables ([`Tx::redirect_tables`]): a rebuild
/// runs a projection's own statements, which name its live tables, against shadow tables.
pub struct Tx {
    conn: Conn,
    pipeline: Option<String>,
    redirect: Option<BTreeMap<String, String>>,
}

enum Conn {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

macro_rules! bind_all {
    ($q:expr, $params:expr) => {{
        let mut q = $q;
        for p in $params {
            q = match p {
                Value::Int(v) => q.bind(*v),
                Value::Text(v) => q.bind(v.clone()),
            };
        }
        q
    }};
}

impl Tx {
    fn new(conn: Conn) -> Tx {
        Tx {
            conn,
            pipeline: None,
            redirect: None,
        }
    }

    /// From now on, every statement given to [`execute`](Self::execute),
    /// [`fetch_ints`](Self::fetch_ints) and [`fetch_texts`](Self::fetch_texts) has each table
    /// named in `tables` (live name → name to use) replaced before it runs; `None` ends that.
    /// Only identifiers are replaced (see [`rename_identifiers`]), never parameters or string
    /// literals, so a table's name must not also be a column's name.
    pub fn redirect_tables(&mut self, tables: Option<BTreeMap<String, String>>) {
        self.redirect = tables;
    }

    /// `sql` as it runs: with the tables redirected, if they are.
    fn redirected<'a>(&self, sql: &'a str) -> Cow<'a, str> {
        match &self.redirect {
            Some(names) => Cow::Owned(rename_identifiers(sql, names)),
            None => Cow::Borrowed(sql),
        }
    }

    pub fn kind(&self) -> BackendKind {
        match &self.conn {
            Conn::Sqlite(_) => BackendKind::Sqlite,
            Conn::Postgres(_) => BackendKind::Postgres,
        }
    }

    /// From now on, collects writes instead of sending each; they go as one script when the
    /// transaction next reads, runs a script or commits. [`execute`](Self::execute) then
    /// answers 0 rows affected.
    pub fn pipeline(&mut self) {
        if self.pipeline.is_none() {
            self.pipeline = Some(match self.conn {
                // The literals quote by doubling `'` only: make sure backslashes are plain. And
                // no wait for the WAL flush at commit: a crash may lose the last batches, rows
                // and position together, and the projection re-applies them from the log.
                Conn::Postgres(_) => "SET LOCAL standard_conforming_strings = on;\n\
                     SET LOCAL synchronous_commit = off;\n"
                    .to_owned(),
                // SQLite's string literals have no escapes at all.
                Conn::Sqlite(_) => String::new(),
            });
        }
    }

    /// Sends the collected statements, if any.
    async fn flush(&mut self) -> Result<(), StoreError> {
        let Some(script) = self.pipeline.as_mut().filter(|s| !s.is_empty()) else {
            return Ok(());
        };
        let script = std::mem::take(script);
        let done = match &mut self.conn {
            Conn::Postgres(tx) => sqlx::raw_sql(AssertSqlSafe(script))
                .execute(&mut **tx)
                .await
                .map(|_| ()),
            Conn::Sqlite(tx) => sqlx::raw_sql(AssertSqlSafe(script))
                .execute(&mut **tx)
                .await
                .map(|_| ()),
        };
        done.map_err(StoreError::db("a pipelined batch of writes"))
    }

    /// Runs one statement; returns the rows it affected (0 while pipelining).
    pub async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, StoreError> {
        let redirected = self.redirected(sql);
        let sql = redirected.as_ref();
        if let Some(script) = &mut self.pipeline {
            inline_params(script, sql, params)?;
            script.push_str(";\n");
            if script.len() > 1 << 20 {
                self.flush().await?;
            }
            return Ok(0);
        }
        let q = sqlx::query(AssertSqlSafe(sql));
        let n = match &mut self.conn {
            Conn::Sqlite(tx) => bind_all!(q, params)
                .execute(&mut **tx)
                .await
                .map(|r| r.rows_affected()),
            Conn::Postgres(tx) => bind_all!(sqlx::query(AssertSqlSafe(sql)), params)
                .execute(&mut **tx)
                .await
                .map(|r| r.rows_affected()),
        };
        n.map_err(|e| StoreError::Db {
            context: format!("`{}`", one_line(sql)),
            source: e,
        })
    }

    /// Runs one or more statements without parameters (DDL).
    pub async fn execute_script(&mut self, sql: &str) -> Result<(), StoreError> {
        self.flush().await?;
        let r = match &mut self.conn {
            Conn::Sqlite(tx) => sqlx::raw_sql(AssertSqlSafe(sql))
                .execute(&mut **tx)
                .await
                .map(|_| ()),
            Conn::Postgres(tx) => sqlx::raw_sql(AssertSqlSafe(sql))
                .execute(&mut **tx)
                .await
                .map(|_| ()),
        };
        r.map_err(StoreError::db("running a migration script"))
    }

    /// Runs a query whose columns are all `BIGINT` (or null).
    pub async fn fetch_ints(
        &mut self,
        sql: &str,
        params: &[Value],
    ) -> Result<Vec<Vec<Option<i64>>>, StoreError> {
        self.flush().await?;
        let redirected = self.redirected(sql);
        let sql = redirected.as_ref();
        let ctx = || format!("`{}`", one_line(sql));
        match &mut self.conn {
            Conn::Sqlite(tx) => {
                let rows = bind_all!(sqlx::query(AssertSqlSafe(sql)), params)
                    .fetch_all(&mut **tx)
                    .await
                    .map_err(StoreError::db(ctx()))?;
                rows.iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| r.try_get::<Option<i64>, _>(i))
                            .collect()
                    })
                    .collect::<Result<_, _>>()
                    .map_err(StoreError::db(ctx()))
            }
            Conn::Postgres(tx) => {
                let rows = bind_all!(sqlx::query(AssertSqlSafe(sql)), params)
                    .fetch_all(&mut **tx)
                    .await
                    .map_err(StoreError::db(ctx()))?;
                rows.iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| r.try_get::<Option<i64>, _>(i))
                            .collect()
                    })
                    .collect::<Result<_, _>>()
                    .map_err(StoreError::db(ctx()))
            }
        }
    }

    /// Runs a query whose columns are all text (cast them: `CAST(x AS TEXT)`).
    pub async fn fetch_texts(
        &mut self,
        sql: &str,
        params: &[Value],
    ) -> Result<Vec<Vec<Option<String>>>, StoreError> {
        self.flush().await?;
        let redirected = self.redirected(sql);
        let sql = redirected.as_ref();
        let ctx = || format!("`{}`", one_line(sql));
        match &mut self.conn {
            Conn::Sqlite(tx) => {
                let rows = bind_all!(sqlx::query(AssertSqlSafe(sql)), params)
                    .fetch_all(&mut **tx)
                    .await
                    .map_err(StoreError::db(ctx()))?;
                rows.iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| r.try_get::<Option<String>, _>(i))
                            .collect()
                    })
                    .collect::<Result<_, _>>()
                    .map_err(StoreError::db(ctx()))
            }
            Conn::Postgres(tx) => {
                let rows = bind_all!(sqlx::query(AssertSqlSafe(sql)), params)
                    .fetch_all(&mut **tx)
                    .await
                    .map_err(StoreError::db(ctx()))?;
                rows.iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| r.try_get::<Option<String>, _>(i))
                            .collect()
                    })
                    .collect::<Result<_, _>>()
                    .map_err(StoreError::db(ctx()))
            }
        }
    }

    pub async fn commit(mut self) -> Result<(), StoreError> {
        self.flush().await?;
        match self.conn {
            Conn::Sqlite(tx) => tx.commit().await,
            Conn::Postgres(tx) => tx.commit().await,
        }
        .map_err(StoreError::db("commit"))
    }

    pub async fn rollback(self) -> Result<(), StoreError> {
        match self.conn {
            Conn::Sqlite(tx) => tx.rollback().await,
            Conn::Postgres(tx) => tx.rollback().await,
        }
        .map_err(StoreError::db("rollback"))
    }
}

/// Appends `sql` with `$N` replaced by `params[N-1]` as SQL literals (strings quoted with `'`
/// doubled — PostgreSQL's standard-conforming strings — integers as digits, NULL).
fn inline_params(out: &mut String, sql: &str, params: &[Value]) -> Result<(), StoreError> {
    let mut rest = sql;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let digits = rest[i + 1..].bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            out.push('$');
            rest = &rest[i + 1..];
            continue;
        }
        let n: usize = rest[i + 1..i + 1 + digits].parse().unwrap_or(0);
        let value = n
            .checked_sub(1)
            .and_then(|k| params.get(k))
            .ok_or_else(|| {
                StoreError::Invalid(format!("`{}` has no parameter ${n}", one_line(sql)))
            })?;
        match value {
            // Parenthesised: `x - $1` must not become the comment `x --1`.
            Value::Int(Some(v)) => out.push_str(&format!("({v})")),
            Value::Text(Some(t)) => {
                // NUL cannot be stored in PostgreSQL text (nor pass through a script): it is
                // shown as U+FFFD rather than stopping the read model at this event.
                out.push('\'');
                out.push_str(&t.replace('\'', "''").replace('\0', "\u{FFFD}"));
                out.push('\'');
            }
            Value::Int(None) | Value::Text(None) => out.push_str("NULL"),
        }
        rest = &rest[i + 1 + digits..];
    }
    out.push_str(rest);
    Ok(())
}

/// `sql` with each identifier that `names` maps replaced by its new name: unquoted ones matched
/// without regard to case (the keys are lower case), double-quoted ones exactly and replaced
/// double-quoted. String literals
/// (standard-conforming: `'` doubled), dollar-quoted strings, comments and `$N` parameters are
/// copied as they are, so values never change. Identifiers are the same wherever they stand —
/// after a `.` too — which is why a renamed table must not share its name with a column.
pub fn rename_identifiers(sql: &str, names: &BTreeMap<String, String>) -> String {
    let b = sql.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80;
    // Index after the closing `quote` of a quoted run starting at `i` (`None`: unterminated).
    let closing = |i: usize, quote: u8| {
        let mut j = i + 1;
        while j < b.len() {
            if b[j] == quote {
                if b.get(j + 1) == Some(&quote) {
                    j += 2;
                    continue;
                }
                return Some(j + 1);
            }
            j += 1;
        }
        None
    };
    let mut out = String::with_capacity(sql.len() + 64);
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == b'\'' {
            i = closing(i, b'\'').unwrap_or(b.len());
        } else if c == b'-' && next == Some(b'-') {
            i = sql[i..].find('\n').map_or(b.len(), |n| i + n + 1);
        } else if c == b'/' && next == Some(b'*') {
            i = sql[i + 2..].find("*/").map_or(b.len(), |n| i + 2 + n + 2);
        } else if c == b'$' {
            // `$N` (a parameter) or `$tag$ … $tag$` (a dollar-quoted string).
            let tag_len = b[i + 1..]
                .iter()
                .take_while(|&&c| ident(c) && c != b'$')
                .count();
            let is_quote = b.get(i + 1 + tag_len) == Some(&b'$')
                && !b.get(i + 1).is_some_and(u8::is_ascii_digit);
            if is_quote {
                let tag = &sql[i..i + tag_len + 2];
                let body = i + tag.len();
                i = sql[body..]
                    .find(tag)
                    .map_or(b.len(), |n| body + n + tag.len());
            } else {
                i += 1 + tag_len;
            }
        } else if c == b'"' {
            let Some(end) = closing(i, b'"') else { break };
            let name = sql[i + 1..end - 1].replace("\"\"", "\"");
            if let Some(to) = names.get(&name) {
                out.push_str(&sql[copied..i]);
                out.push('"');
                out.push_str(&to.replace('"', "\"\""));
                out.push('"');
                copied = end;
            }
            i = end;
        } else if ident(c) && !c.is_ascii_digit() {
            let end = i + b[i..].iter().take_while(|&&c| ident(c)).count();
            if let Some(to) = names.get(&sql[i..end].to_ascii_lowercase()) {
                out.push_str(&sql[copied..i]);
                out.push_str(to);
                copied = end;
            }
            i = end;
        } else if c.is_ascii_digit() {
            // A number, with whatever letters follow it (`1e5`): never a name.
            i += b[i..]
                .iter()
                .take_while(|&&c| ident(c) || c == b'.')
                .count();
        } else {
            i += 1;
        }
    }
    out.push_str(&sql[copied..]);
    out
}

/// A plain SQL identifier (schema names come from configuration and tests).
pub fn check_ident(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "`{name}` is not a plain identifier: use a-z, 0-9 and _ (not first a digit), at most 63"
        )))
    }
}

fn one_line(s: &str) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.len() > 120 {
        format!("{}…", &s[..s.floor_char_boundary(120)])
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn renamed(sql: &str) -> String {
        let names = BTreeMap::from([
            ("tenants".to_owned(), "tenants__rebuild".to_owned()),
            ("budgets".to_owned(), "budgets__rebuild".to_owned()),
        ]);
        rename_identifiers(sql, &names)
    }

    #[test]
    fn renames_table_names_wherever_they_stand() {
        assert_eq!(
            renamed(
                "INSERT INTO tenants (tenant) VALUES ($1) ON CONFLICT (tenant) DO UPDATE SET name = excluded.name"
            ),
            "INSERT INTO tenants__rebuild (tenant) VALUES ($1) ON CONFLICT (tenant) DO UPDATE SET name = excluded.name"
        );
        assert_eq!(
            renamed("UPDATE Budgets SET x = 1 FROM TENANTS, s.tenants WHERE budgets.t = 1"),
            "UPDATE budgets__rebuild SET x = 1 FROM tenants__rebuild, s.tenants__rebuild WHERE budgets__rebuild.t = 1"
        );
        assert_eq!(
            renamed("CREATE TABLE \"tenants\" (tenant TEXT)"),
            "CREATE TABLE \"tenants__rebuild\" (tenant TEXT)"
        );
    }

    #[test]
    fn leaves_values_comments_and_other_names_alone() {
        for sql in [
            "SELECT 'tenants', 'it''s tenants' FROM t",
            "SELECT tenants_x, x_tenants, tenant, \"Tenants\" FROM t",
            "SELECT 1 -- from tenants\nFROM t",
            "SELECT 1 /* tenants */ FROM t",
            "SELECT $$ tenants $$, $q$ tenants $q$, $1, 1e5 FROM t",
            "SELECT ünïcødé_tenants, tenantsé FROM t",
        ] {
            assert_eq!(renamed(sql), sql);
        }
        // Unterminated quotes and comments end the statement, as the database would read it.
        for sql in ["SELECT 'tenants", "SELECT /* tenants", "SELECT \"tenants"] {
            assert_eq!(renamed(sql), sql);
        }
    }
}
