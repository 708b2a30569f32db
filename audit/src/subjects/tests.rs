//! The key store's behaviour, the same on both stores; the PostgreSQL store also against
//! other processes sharing its table. PostgreSQL tests read `ANNALS_TEST_POSTGRES` (set by
//! `scripts/test`); with `ANNALS_SKIP_SERVERS=1` and no URL they are skipped with a note.

use super::*;

fn test_postgres(test: &str) -> Option<String> {
    match std::env::var("ANNALS_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("ANNALS_SKIP_SERVERS").as_deref() == Ok("1") => {
            eprintln!("note: {test} skipped: ANNALS_SKIP_SERVERS=1 and no ANNALS_TEST_POSTGRES");
            None
        }
        _ => panic!(
            "ANNALS_TEST_POSTGRES is not set: run `scripts/services up` and export `scripts/services url annals_test` (or run scripts/test), or set ANNALS_SKIP_SERVERS=1 to skip"
        ),
    }
}

/// A schema of its own for each test, dropped when the test ends.
struct Scratch {
    url: String,
    schema: String,
}

impl Scratch {
    fn new(url: String, tag: &str) -> Scratch {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros();
        Scratch {
            url,
            schema: format!("keys_{tag}_{}_{micros}", std::process::id()),
        }
    }

    fn store(&self) -> SubjectKeys {
        SubjectKeys::postgres(&self.url, Some(&self.schema)).unwrap()
    }

    /// Runs SQL against the test database (as a test, outside the store).
    fn query<T: Send + 'static>(
        &self,
        f: impl AsyncFnOnce(&sqlx::PgPool) -> T + Send + 'static,
    ) -> T {
        let url = self.url.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let pool = sqlx::PgPool::connect(&url).await.unwrap();
                let out = f(&pool).await;
                pool.close().await;
                out
            })
        })
        .join()
        .unwrap()
    }

    fn table(&self) -> String {
        format!("\"{}\".{POSTGRES_TABLE}", self.schema)
    }

    /// The file the table's rows are in (a rewrite gives it a new one).
    fn filenode(&self) -> i64 {
        let sql = format!("SELECT pg_relation_filenode('{}')::bigint", self.table());
        self.query(async move |pool| {
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
                .fetch_one(pool)
                .await
                .unwrap()
        })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema);
        self.query(async move |pool| {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(pool)
                .await
                .ok();
        });
    }
}

/// What every store must do: seal and open, bind a value to its tenant, subject and field,
/// catch a tampered value, erase for good.
fn seal_open_erase(keys: &SubjectKeys) {
    let sealed = keys
        .seal("acme", "c-1", "email", "ada@example.com")
        .unwrap();
    // (Hex digits include a–f, so only look for the characters hex cannot hold.)
    assert!(sealed.starts_with(SEALED_PREFIX) && !sealed.contains("@example"));
    let again = keys
        .seal("acme", "c-1", "email", "ada@example.com")
        .unwrap();
    assert_ne!(sealed, again, "a fresh nonce each time");
    assert_eq!(
        keys.open("acme", "c-1", "email", &sealed)
            .unwrap()
            .as_deref(),
        Some("ada@example.com")
    );
    // Bound to its tenant, subject and field.
    assert!(keys.open("acme", "c-1", "name", &sealed).is_err());
    assert!(
        keys.open("other", "c-1", "email", &sealed)
            .unwrap()
            .is_none()
    );
    let mut tampered = sealed.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'0' { b'1' } else { b'0' };
    assert!(
        keys.open(
            "acme",
            "c-1",
            "email",
            &String::from_utf8(tampered).unwrap()
        )
        .is_err()
    );
    // Another subject's key is another key.
    keys.seal("acme", "c-2", "email", "bob@example.com")
        .unwrap();
    assert!(keys.exists("acme", "c-1").unwrap());
    assert!(!keys.erased("acme", "c-1").unwrap());
    assert!(keys.erase("acme", "c-1").unwrap());
    assert!(!keys.erase("acme", "c-1").unwrap());
    assert_eq!(keys.open("acme", "c-1", "email", &sealed).unwrap(), None);
    assert!(keys.exists("acme", "c-2").unwrap());
    assert!(!keys.exists("acme", "c-1").unwrap());
    // An erased subject never gets a key again.
    assert!(keys.erased("acme", "c-1").unwrap());
    let again = keys.seal("acme", "c-1", "email", "ada@example.com");
    assert!(again.unwrap_err().contains("erased"));
    // Erasing a subject that never had a key still bars it.
    assert!(!keys.erase("acme", "c-3").unwrap());
    assert!(keys.seal("acme", "c-3", "name", "Cy").is_err());
}

#[test]
fn sealed_values_open_until_the_key_is_erased() {
    let dir = tempfile::tempdir().unwrap();
    let keys = SubjectKeys::open(dir.path());
    seal_open_erase(&keys);
    // No file of the store names the subject (keys and tombstones alike).
    for e in std::fs::read_dir(dir.path().join("keys/subjects")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.contains("c-2") && !name.contains("acme"), "{name}");
    }
}

#[test]
fn the_postgres_store_seals_opens_and_erases_alike() {
    let Some(url) = test_postgres("the_postgres_store_seals_opens_and_erases_alike") else {
        return;
    };
    let scratch = Scratch::new(url, "same");
    let keys = scratch.store();
    assert!(
        keys.describe().contains(POSTGRES_TABLE),
        "{}",
        keys.describe()
    );
    assert!(!keys.describe().contains("annals-dev"), "no password shown");
    seal_open_erase(&keys);
    // The table holds no subject id in clear, and erased rows no key.
    let table = scratch.table();
    let rows: Vec<(String, String, Option<Vec<u8>>, bool)> = scratch.query(async move |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT tenant, subject_hash, key, erased_at IS NOT NULL FROM {table} ORDER BY 2"
        )))
        .fetch_all(pool)
        .await
        .unwrap()
    });
    assert_eq!(rows.len(), 3, "{rows:?}");
    for (tenant, hash, key, erased) in &rows {
        assert_eq!(tenant, "acme");
        assert!(!hash.contains("c-"), "{hash}");
        assert_eq!(key.is_none(), *erased, "{hash}");
    }
    assert_eq!(rows.iter().filter(|r| r.3).count(), 2);
    // A second connection to the same table (in this process: it is one the key store opens)
    // creates nothing new: `CREATE … IF NOT EXISTS`, the keys kept.
    let again = scratch.store();
    assert!(again.exists("acme", "c-2").unwrap());
    // Called from inside an async runtime (as decoders in a projection task are), and dropped
    // there: no panic, no deadlock, even on a single-threaded runtime.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let sealed = again.seal("acme", "c-4", "name", "Dee").unwrap();
        assert_eq!(
            again
                .open("acme", "c-4", "name", &sealed)
                .unwrap()
                .as_deref(),
            Some("Dee")
        );
        drop(again);
    });
}

#[test]
fn processes_sharing_the_table_agree_on_keys_and_erasures() {
    let Some(url) = test_postgres("processes_sharing_the_table_agree_on_keys_and_erasures") else {
        return;
    };
    let scratch = Scratch::new(url, "shared");
    // Eight "processes" (each its own store, connections and thread) seal one new subject at
    // once: all must have used one key, so each value opens in every other store.
    let stores: Vec<SubjectKeys> = (0..8).map(|_| scratch.store()).collect();
    let barrier = Arc::new(std::sync::Barrier::new(stores.len()));
    let sealed: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(i, keys)| {
                let barrier = barrier.clone();
                s.spawn(move || {
                    barrier.wait();
                    keys.seal("acme", "race", "name", &format!("name {i}"))
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, value) in sealed.iter().enumerate() {
        for keys in &stores {
            assert_eq!(
                keys.open("acme", "race", "name", value).unwrap(),
                Some(format!("name {i}"))
            );
        }
    }
    // The erasure one process makes is seen by all at once, and none can seal again.
    let before = scratch.filenode();
    assert!(stores[3].erase("acme", "race").unwrap());
    for keys in &stores {
        assert_eq!(keys.open("acme", "race", "name", &sealed[0]).unwrap(), None);
        assert!(keys.erased("acme", "race").unwrap());
        assert!(keys.seal("acme", "race", "name", "back").is_err());
    }
    // The table was rewritten (VACUUM FULL): the old row version with the key is not in the
    // table's files any more.
    let after = scratch.filenode();
    assert_ne!(before, after, "the erasure rewrites the table");
}

#[test]
fn an_erasure_names_older_transactions_that_could_keep_the_old_key() {
    let Some(url) =
        test_postgres("an_erasure_names_older_transactions_that_could_keep_the_old_key")
    else {
        return;
    };
    let scratch = Scratch::new(url.clone(), "older");
    let keys =
        SubjectKeys::postgres_waiting(&url, &scratch.schema, std::time::Duration::from_millis(300));
    let sealed = keys
        .seal("acme", "c-1", "email", "ada@example.com")
        .unwrap();
    // Another session holds a snapshot from before the erasure (REPEATABLE READ) ...
    let (opened, open) = std::sync::mpsc::channel();
    let (finish, finished) = std::sync::mpsc::channel::<()>();
    let table = scratch.table();
    let url2 = url.clone();
    let holder = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url2)
                .await
                .unwrap();
            sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ")
                .execute(&mut conn)
                .await
                .unwrap();
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT count(key) FROM {table}"
            )))
            .fetch_one(&mut conn)
            .await
            .unwrap();
            opened.send(n).unwrap();
            finished.recv().ok();
            sqlx::raw_sql("COMMIT").execute(&mut conn).await.unwrap();
        });
    });
    assert_eq!(open.recv().unwrap(), 1);
    // ... so the erasure nulls the key but says the rewrite may have kept it, and what to do.
    let err = keys.erase("acme", "c-1").unwrap_err();
    assert!(
        err.contains("began before the erasure") && err.contains("run the erasure again"),
        "{err}"
    );
    assert_eq!(keys.open("acme", "c-1", "email", &sealed).unwrap(), None);
    finish.send(()).unwrap();
    holder.join().unwrap();
    // Once it ended, erasing again finishes the job.
    assert!(!keys.erase("acme", "c-1").unwrap());
}

#[test]
fn a_wrong_url_or_schema_is_a_clear_error() {
    let err = SubjectKeys::postgres("not a url", None).unwrap_err();
    assert!(err.contains("not a valid PostgreSQL URL"), "{err}");
    let err =
        SubjectKeys::postgres("postgres://u:secret@127.0.0.1:1/db", Some("bad-name")).unwrap_err();
    assert!(err.contains("bad-name") && !err.contains("secret"), "{err}");
    let err = SubjectKeys::postgres("postgres://u:secret@127.0.0.1:1/db", None).unwrap_err();
    assert!(
        err.contains("cannot connect") && !err.contains("secret"),
        "{err}"
    );
}
