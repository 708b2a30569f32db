//! Subject keys in a PostgreSQL table, for deployments where several processes on several
//! machines seal and open personal data (`annals serve`, `annals process`, the CLI):
//!
//! ```sql
//! annals_subject_keys (
//!     tenant       TEXT NOT NULL,
//!     subject_hash TEXT NOT NULL,      -- key_name(tenant, subject): no subject id in clear
//!     key          BYTEA,              -- 32 bytes; NULL once erased
//!     created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
//!     erased_at    TIMESTAMPTZ,        -- set by the erasure: the row is the tombstone
//!     PRIMARY KEY (tenant, subject_hash))
//! ```
//!
//! created if missing (in `[privacy] postgres_schema` when set). A key is created with
//! `INSERT … ON CONFLICT DO NOTHING` and then read back, so when two processes race to seal a
//! new subject, both use the key that was stored first. Keys are read on every use (no cache):
//! an erasure is seen at once by every process.
//!
//! Erasure sets `key` to NULL and `erased_at`, keeping the row so the subject never gets a key
//! again. The old row version still holds the key's bytes until the table is rewritten (plain
//! `VACUUM` only marks the space free), and `VACUUM FULL` copies row versions that some open
//! transaction may still see. So the erasure then waits (up to [`SNAPSHOT_WAIT`]) until no
//! transaction in the database began before it, and rewrites the table with `VACUUM FULL`,
//! waiting at most a few seconds for its lock (seals and opens queue behind that lock). If
//! either wait runs out, the key is already gone for every reader, and the error says to run
//! the erasure again, which finishes the job. The wait sees other roles' sessions only if this
//! role may read all statistics (`pg_read_all_stats`). What PostgreSQL keeps outside the
//! table — write-ahead log segments until they are recycled, WAL archives, base backups,
//! replicas — is the operator's to expire.
//!
//! The [`Sealer`](annals_schemas::personal::Sealer) trait is synchronous and is called from
//! worker threads and decoders, some of them inside another async runtime. So the store owns
//! one thread running a small current-thread runtime with the connection pool; a call hands its
//! query to that runtime and waits on a channel for the answer. It never enters the caller's
//! runtime (no `block_on` there, which would panic) and cannot deadlock on it.

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rand_core::{OsRng, RngCore};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgPool, Row};

use super::{Key, erased_error, key_name};

/// The table's name (in the configured schema, else the role's `search_path`).
pub const TABLE: &str = "annals_subject_keys";
/// How long one call may take before it fails (connecting, waiting for a lock, the query).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an erasure waits for transactions older than it before it gives up the rewrite.
pub const SNAPSHOT_WAIT: Duration = Duration::from_secs(10);
/// How long the rewrite may wait for the table's lock (seals and opens queue behind it).
const VACUUM_LOCK_WAIT: Duration = Duration::from_secs(3);

/// The SQL of each operation, for this store's table.
struct Sql {
    read: Arc<str>,
    insert: Arc<str>,
    lock_row: Arc<str>,
    tombstone: Arc<str>,
    erase: Arc<str>,
    vacuum: Arc<str>,
    table: String,
}

impl Sql {
    fn new(schema: Option<&str>) -> Sql {
        let t = match schema {
            Some(s) => format!("\"{s}\".{TABLE}"),
            None => TABLE.to_owned(),
        };
        Sql {
            read: format!(
                "SELECT key, erased_at IS NOT NULL FROM {t} WHERE tenant = $1 AND subject_hash = $2"
            )
            .into(),
            insert: format!(
                "INSERT INTO {t} (tenant, subject_hash, key) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant, subject_hash) DO NOTHING"
            )
            .into(),
            lock_row: format!(
                "SELECT key IS NOT NULL FROM {t} WHERE tenant = $1 AND subject_hash = $2 FOR UPDATE"
            )
            .into(),
            tombstone: format!(
                "INSERT INTO {t} (tenant, subject_hash, key, erased_at) VALUES ($1, $2, NULL, now()) \
                 ON CONFLICT (tenant, subject_hash) DO NOTHING RETURNING true"
            )
            .into(),
            erase: format!(
                "UPDATE {t} SET key = NULL, erased_at = COALESCE(erased_at, now()) \
                 WHERE tenant = $1 AND subject_hash = $2"
            )
            .into(),
            vacuum: format!("VACUUM FULL {t}").into(),
            table: t,
        }
    }

    fn create(&self, schema: Option<&str>) -> String {
        let t = &self.table;
        let mut s = String::new();
        if let Some(schema) = schema {
            s.push_str(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\";\n"));
        }
        s.push_str(&format!(
            "CREATE TABLE IF NOT EXISTS {t} (\n\
             \x20   tenant       TEXT NOT NULL,\n\
             \x20   subject_hash TEXT NOT NULL,\n\
             \x20   key          BYTEA CHECK (key IS NULL OR octet_length(key) = 32),\n\
             \x20   created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),\n\
             \x20   erased_at    TIMESTAMPTZ,\n\
             \x20   PRIMARY KEY (tenant, subject_hash),\n\
             \x20   CHECK ((key IS NULL) = (erased_at IS NOT NULL))\n\
             );\n\
             COMMENT ON TABLE {t} IS 'annals subject keys: personal data in the log is sealed under them. \
             A row with erased_at set is an erased subject: never restore its key from a backup.';\n"
        ));
        s
    }
}

/// The key table and the thread that talks to it.
pub(super) struct PgKeys {
    handle: tokio::runtime::Handle,
    pool: PgPool,
    sql: Arc<Sql>,
    location: String,
    /// How long an erasure waits for older transactions ([`SNAPSHOT_WAIT`]; shorter in tests).
    pub(super) snapshot_wait: Duration,
    /// Hands the pool back to the thread, which closes it and ends.
    stop: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<PgPool>>>,
}

impl std::fmt::Debug for PgKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgKeys({})", self.location)
    }
}

impl Drop for PgKeys {
    fn drop(&mut self) {
        let stop = match self.stop.get_mut() {
            Ok(s) => s.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(stop) = stop {
            stop.send(self.pool.clone()).ok();
        }
    }
}

/// Runs `fut` on the store's runtime and waits for it from this (non-async or async) thread.
fn call<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    fut: impl Future<Output = Result<T, String>> + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let answer = match tokio::time::timeout(CALL_TIMEOUT, fut).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "no answer within {} s (is the server overloaded, or a lock held?)",
                CALL_TIMEOUT.as_secs()
            )),
        };
        tx.send(answer).ok();
    });
    rx.recv()
        .map_err(|_| "the key store's connection thread has stopped".to_owned())?
}

/// `postgres://user@host/db` without the password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let user = url[s + 3..at].split(':').next().unwrap_or("");
            format!("{}{}@{}", &url[..s + 3], user, &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// Whether `name` may be used as a schema name unquoted-safe (`[a-zA-Z0-9_]`, 1 to 63).
pub fn valid_schema(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl PgKeys {
    /// Connects, creating the schema and table if missing.
    pub(super) fn connect(url: &str, schema: Option<&str>) -> Result<PgKeys, String> {
        let shown = redact(url);
        let location = match schema {
            Some(s) => format!("{shown} (schema {s}, table {TABLE})"),
            None => format!("{shown} (table {TABLE})"),
        };
        if let Some(s) = schema
            && !valid_schema(s)
        {
            return Err(format!(
                "subject key store: schema {s:?} is not a valid name: use 1-63 characters among a-z A-Z 0-9 _"
            ));
        }
        let opts = PgConnectOptions::from_str(url).map_err(|e| {
            format!("subject key store: {shown} is not a valid PostgreSQL URL: {e}")
        })?;
        let (handle_tx, handle_rx) = std::sync::mpsc::sync_channel(1);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<PgPool>();
        std::thread::Builder::new()
            .name("annals-subject-keys".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        handle_tx.send(Err(e.to_string())).ok();
                        return;
                    }
                };
                handle_tx.send(Ok(rt.handle().clone())).ok();
                rt.block_on(async {
                    if let Ok(pool) = stop_rx.await {
                        tokio::time::timeout(Duration::from_secs(5), pool.close())
                            .await
                            .ok();
                    }
                });
            })
            .map_err(|e| format!("subject key store: cannot start its thread: {e}"))?;
        let handle = handle_rx
            .recv()
            .map_err(|_| "subject key store: its thread did not start".to_owned())?
            .map_err(|e| format!("subject key store: cannot start its runtime: {e}"))?;
        let sql = Arc::new(Sql::new(schema));
        let create = sql.create(schema);
        let pool = call(&handle, async move {
            // One connection first: a refused connection fails now, not after the pool's
            // acquire timeout.
            let mut conn = PgConnection::connect_with(&opts)
                .await
                .map_err(|e| format!("cannot connect: {e}"))?;
            // Concurrent `CREATE … IF NOT EXISTS` can still collide in the catalog: one
            // creator at a time.
            let mut tx = conn.begin().await.map_err(|e| e.to_string())?;
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('annals_subject_keys'))")
                .execute(&mut *tx)
                .await
                .map_err(|e| e.to_string())?;
            sqlx::raw_sql(AssertSqlSafe(create))
                .execute(&mut *tx)
                .await
                .map_err(|e| format!("cannot create the table: {e}"))?;
            tx.commit().await.map_err(|e| e.to_string())?;
            conn.close().await.ok();
            PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await
                .map_err(|e| format!("cannot connect: {e}"))
        });
        let pool = match pool {
            Ok(p) => p,
            Err(e) => {
                return Err(format!(
                    "subject key store {location}: {e}; check [privacy] postgres (or [read_models] postgres) and that the server runs"
                ));
            }
        };
        Ok(PgKeys {
            handle,
            pool,
            sql,
            location,
            snapshot_wait: SNAPSHOT_WAIT,
            stop: std::sync::Mutex::new(Some(stop_tx)),
        })
    }

    pub(super) fn describe(&self) -> String {
        self.location.clone()
    }

    /// Runs `job` with the pool and the SQL on the store's thread; errors say where and what.
    fn call<T, F>(&self, what: &str, job: impl FnOnce(PgPool, Arc<Sql>) -> F) -> Result<T, String>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, String>> + Send + 'static,
    {
        call(&self.handle, job(self.pool.clone(), self.sql.clone()))
            .map_err(|e| format!("subject key store {}: {what}: {e}", self.location))
    }

    /// `None`: no row; else the key (if not erased) and whether it was erased.
    fn row(&self, tenant: &str, subject: &str) -> Result<Option<(Option<Key>, bool)>, String> {
        let (tenant, name) = (tenant.to_owned(), key_name(tenant, subject));
        let row = self.call("cannot read a key", |pool, sql| async move {
            read_row(&pool, &sql, &tenant, &name).await
        })?;
        Ok(row)
    }

    pub(super) fn erased(&self, tenant: &str, subject: &str) -> Result<bool, String> {
        Ok(self.row(tenant, subject)?.is_some_and(|(_, erased)| erased))
    }

    pub(super) fn exists(&self, tenant: &str, subject: &str) -> Result<bool, String> {
        Ok(self.read(tenant, subject)?.is_some())
    }

    pub(super) fn read(&self, tenant: &str, subject: &str) -> Result<Option<Key>, String> {
        Ok(self.row(tenant, subject)?.and_then(|(key, _)| key))
    }

    pub(super) fn get_or_create(&self, tenant: &str, subject: &str) -> Result<Key, String> {
        match self.row(tenant, subject)? {
            Some((Some(key), _)) => return Ok(key),
            Some((None, _)) => return Err(erased_error(tenant, subject)),
            None => {}
        }
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        let (t, name) = (tenant.to_owned(), key_name(tenant, subject));
        let stored = self.call("cannot create a key", |pool, sql| async move {
            sqlx::query(AssertSqlSafe(sql.insert.clone()))
                .bind(&t)
                .bind(&name)
                .bind(key.as_slice())
                .execute(&pool)
                .await
                .map_err(|e| e.to_string())?;
            // Read back: whoever inserted first (or erased meanwhile) decides.
            read_row(&pool, &sql, &t, &name).await
        })?;
        match stored {
            Some((Some(key), _)) => Ok(key),
            Some((None, _)) => Err(erased_error(tenant, subject)),
            None => Err(format!(
                "subject key store {}: the key just stored is not there",
                self.location
            )),
        }
    }

    pub(super) fn erase(&self, tenant: &str, subject: &str) -> Result<bool, String> {
        let (t, name) = (tenant.to_owned(), key_name(tenant, subject));
        let wait = self.snapshot_wait;
        self.call("cannot erase a key", |pool, sql| async move {
            let had = erase_row(&pool, &sql, &t, &name).await?;
            purge(&pool, &sql, wait).await?;
            Ok(had)
        })
    }
}

async fn read_row(
    pool: &PgPool,
    sql: &Sql,
    tenant: &str,
    name: &str,
) -> Result<Option<(Option<Key>, bool)>, String> {
    let row = sqlx::query(AssertSqlSafe(sql.read.clone()))
        .bind(tenant)
        .bind(name)
        .fetch_optional(pool)
        .await
        .map_err(|e| e.to_string())?;
    let Some(row) = row else {
        return Ok(None);
    };
    let key: Option<Vec<u8>> = row.try_get(0).map_err(|e| e.to_string())?;
    let erased: bool = row.try_get(1).map_err(|e| e.to_string())?;
    let key = key
        .map(|k| {
            <Key>::try_from(k.as_slice())
                .map_err(|_| format!("the key of {name} is damaged (not 32 bytes)"))
        })
        .transpose()?;
    Ok(Some((key, erased)))
}

/// Nulls the key and sets `erased_at` (inserting a tombstone if the subject had no row);
/// whether there was a key. Committed when it returns.
async fn erase_row(pool: &PgPool, sql: &Sql, tenant: &str, name: &str) -> Result<bool, String> {
    let e = |e: sqlx::Error| e.to_string();
    // A subject with no row gets a tombstone; if a creator inserts a row between the lookup
    // and the tombstone, the tombstone yields and the lookup runs again (it then finds the row).
    for _ in 0..3 {
        let mut tx = pool.begin().await.map_err(e)?;
        let had: Option<bool> = sqlx::query_scalar(AssertSqlSafe(sql.lock_row.clone()))
            .bind(tenant)
            .bind(name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(e)?;
        match had {
            Some(had) => {
                sqlx::query(AssertSqlSafe(sql.erase.clone()))
                    .bind(tenant)
                    .bind(name)
                    .execute(&mut *tx)
                    .await
                    .map_err(e)?;
                tx.commit().await.map_err(e)?;
                return Ok(had);
            }
            None => {
                let inserted: Option<bool> =
                    sqlx::query_scalar(AssertSqlSafe(sql.tombstone.clone()))
                        .bind(tenant)
                        .bind(name)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(e)?;
                if inserted.is_some() {
                    tx.commit().await.map_err(e)?;
                    return Ok(false);
                }
                tx.rollback().await.map_err(e)?;
            }
        }
    }
    Err("the subject's row kept changing while it was erased; run the erasure again".into())
}

/// Leaves no copy of an erased key in the table's files: waits for transactions older than the
/// erasure (they could still see the old row version, and `VACUUM FULL` copies what some
/// snapshot may see), then rewrites the table.
async fn purge(pool: &PgPool, sql: &Sql, wait: Duration) -> Result<(), String> {
    let e = |e: sqlx::Error| e.to_string();
    let owner: Option<bool> = sqlx::query_scalar(
        "SELECT pg_has_role(c.relowner, 'USAGE') FROM pg_class c WHERE c.oid = to_regclass($1)",
    )
    .bind(&sql.table)
    .fetch_optional(pool)
    .await
    .map_err(e)?;
    if owner != Some(true) {
        return Err(format!(
            "the key is erased, but this role does not own {} and so cannot rewrite it (VACUUM FULL): old copies of the key may remain in the table's files; run `VACUUM FULL {}` as its owner",
            sql.table, sql.table
        ));
    }
    // Microseconds since the Unix epoch, on the server's clock, after the erasure committed.
    let erased_at: i64 =
        sqlx::query_scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint")
            .fetch_one(pool)
            .await
            .map_err(e)?;
    let deadline = tokio::time::Instant::now() + wait;
    let older = loop {
        // Sessions of other roles show no snapshot here unless this role may read all
        // statistics (pg_read_all_stats).
        let older: Vec<String> = sqlx::query_scalar(
            "SELECT pid::text || coalesce(' (' || nullif(application_name, '') || ')', '') \
             FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() \
             AND backend_type = 'client backend' AND backend_xmin IS NOT NULL \
             AND (extract(epoch FROM xact_start) * 1000000)::bigint <= $1",
        )
        .bind(erased_at)
        .fetch_all(pool)
        .await
        .map_err(e)?;
        if older.is_empty() || tokio::time::Instant::now() >= deadline {
            break older;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if !older.is_empty() {
        // A rewrite now would copy the old row version for them: leave it to the next try.
        return Err(format!(
            "the key is erased, but transaction(s) of session(s) {} began before the erasure and were still open after {:.1} s: they may still see the old row version, so the table was not rewritten yet; run the erasure again once they have finished",
            older.join(", "),
            wait.as_secs_f32(),
        ));
    }
    // `VACUUM FULL` needs the table to itself; while it waits for that lock, every seal and
    // open waits behind it. So it waits briefly, and on a busy table gives up and says so.
    let mut conn = pool.acquire().await.map_err(e)?;
    sqlx::query(AssertSqlSafe(format!(
        "SET lock_timeout = '{}ms'",
        VACUUM_LOCK_WAIT.as_millis()
    )))
    .execute(&mut *conn)
    .await
    .map_err(e)?;
    let vacuumed = sqlx::raw_sql(AssertSqlSafe(sql.vacuum.clone()))
        .execute(&mut *conn)
        .await;
    sqlx::query("RESET lock_timeout")
        .execute(&mut *conn)
        .await
        .map_err(e)?;
    vacuumed.map_err(|err| {
        let busy = err
            .as_database_error()
            .and_then(|d| d.code())
            .is_some_and(|c| c == "55P03");
        if busy {
            format!(
                "the key is erased, but {} was in use for more than {} s, so it was not rewritten yet (old copies of the key may remain in its files); run the erasure again",
                sql.table,
                VACUUM_LOCK_WAIT.as_secs()
            )
        } else {
            format!(
                "the key is erased, but rewriting {} failed: {err}; run the erasure again",
                sql.table
            )
        }
    })?;
    Ok(())
}
