//! The embedded analytics store: Parquet files under `<data-dir>/read-models/analytics/`,
//! queried with DataFusion.
//!
//! Layout: `CURRENT` names the live generation; a generation holds one folder per log
//! partition, and in it one folder per stored batch, named `<first>-<next>` (the batch's seq
//! range, zero-padded). A batch folder holds one file per table and month, `<table>.<YYYY-MM>
//! .parquet`, rows in the table's sort order, and `batch.json` (range, row counts). A batch is
//! written in a hidden `.tmp-…` folder, synced, and renamed into place: it is there whole or not
//! at all, and the partition's position is the highest `next` among its folders. A rebuild
//! fills a new generation and then replaces `CURRENT` in one rename. Compaction merges runs of
//! small batches into one folder; a folder whose range another covers is never read.
//! A retention run rewrites the folders holding rows it removes as new revisions of the same
//! range (`<first>-<next>.r<N>`, renamed in before the old one is removed); the highest revision
//! of a range is the one read.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Decimal128Builder, Float64Builder, Int64Builder,
    ListBuilder, MapBuilder, StringBuilder, StringDictionaryBuilder, TimestampMicrosecondBuilder,
    UInt32Builder, UInt64Builder,
};
use datafusion::arrow::datatypes::{
    DataType, Field, Int32Type, Schema, SchemaRef, TimestampMicrosecondType, UInt32Type, UInt64Type,
};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::empty::EmptyTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::context::SQLOptions;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::parquet::schema::types::ColumnPath;
use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};

use super::model::{Cell, ColumnType, TABLES, Table, column_index};
use super::retention::{Deletion, PredicateColumns};
use super::{AnalyticsError, Batch, Format, Position};

/// The embedded analytics store.
#[derive(Debug, Clone)]
pub struct ParquetStore {
    root: PathBuf,
    /// `None`: the live store, whose generation is whatever `CURRENT` names now (re-read on
    /// every use, so a rebuild swapped in by another process is followed at once). `Some`: a
    /// shadow generation being filled by a rebuild.
    pinned: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct BatchInfo {
    partition: u32,
    first: u64,
    next: u64,
    last_recorded_at: i64,
    rows: BTreeMap<String, u64>,
}

fn io(context: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> AnalyticsError {
    move |e| AnalyticsError::Store(format!("{context}: {e}"))
}

fn store_err(context: &str) -> impl FnOnce(datafusion::error::DataFusionError) -> AnalyticsError {
    move |e| AnalyticsError::Store(format!("{context}: {e}"))
}

fn arrow_err(context: &str) -> impl FnOnce(datafusion::arrow::error::ArrowError) -> AnalyticsError {
    move |e| AnalyticsError::Store(format!("{context}: {e}"))
}

/// `first-next` and revision of a committed batch folder: `<first>-<next>` (revision 0), or
/// `<first>-<next>.r<N>` once retention has rewritten it.
fn batch_range(name: &str) -> Option<(u64, u64, u32)> {
    let (range, revision) = match name.split_once(".r") {
        Some((range, n)) => (range, n.parse().ok()?),
        None => (name, 0),
    };
    let (a, b) = range.split_once('-')?;
    if a.len() != 12 || b.len() != 12 {
        return None;
    }
    Some((a.parse().ok()?, b.parse().ok()?, revision))
}

/// Whether the process that is writing the hidden folder `name` (`.tmp-<range>-<pid>-<n>`)
/// still runs: a live writer's folder is not removed from under it.
fn writer_alive(name: &str) -> bool {
    let mut parts = name.rsplit('-');
    let _n = parts.next();
    let Some(pid) = parts.next().and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists()
}

/// Writes a batch folder's `batch.json`, then makes the whole folder durable: the last step
/// before the folder is renamed into place. The Parquet files in it are written without a sync
/// of their own; here they are all synced side by side, which the file system commits together
/// (one flush for the folder instead of one per file).
fn write_info(dir: &Path, info: &BatchInfo) -> Result<(), AnalyticsError> {
    let path = dir.join("batch.json");
    fs::write(
        &path,
        serde_json::to_vec_pretty(info).expect("serialisable"),
    )
    .map_err(io(format!("cannot write {}", path.display())))?;
    let files = fs::read_dir(dir)
        .and_then(|entries| {
            entries
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(io(format!("cannot list {}", dir.display())))?;
    let sync = |f: &PathBuf| {
        fs::File::open(f)
            .and_then(|f| f.sync_all())
            .map_err(io(format!("cannot sync {}", f.display())))
    };
    std::thread::scope(|s| {
        // A file whose thread cannot be started is synced here, in turn.
        let syncs: Vec<_> = files
            .iter()
            .map(|f| {
                std::thread::Builder::new()
                    .spawn_scoped(s, move || sync(f))
                    .map_err(|_| f)
            })
            .collect();
        syncs.into_iter().try_for_each(|started| match started {
            Ok(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(AnalyticsError::Store("a sync thread failed".into()))),
            Err(f) => sync(f),
        })
    })?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), AnalyticsError> {
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io(format!("cannot sync {}", dir.display())))
}

impl ParquetStore {
    /// The store of `data_dir` (nothing is created until [`prepare`](Self::prepare)).
    pub fn open(data_dir: &Path) -> Result<ParquetStore, AnalyticsError> {
        let store = ParquetStore {
            root: data_dir.join("read-models").join("analytics"),
            pinned: None,
        };
        store.generation()?;
        Ok(store)
    }

    /// The generation this store reads and writes.
    fn generation(&self) -> Result<String, AnalyticsError> {
        if let Some(g) = &self.pinned {
            return Ok(g.clone());
        }
        let generation = match fs::read_to_string(self.root.join("CURRENT")) {
            Ok(s) => s.trim().to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "gen-000001".to_owned(),
            Err(e) => {
                return Err(io(format!("cannot read {}/CURRENT", self.root.display()))(
                    e,
                ));
            }
        };
        if !generation.starts_with("gen-") || generation.contains('/') {
            return Err(AnalyticsError::Store(format!(
                "{}/CURRENT names `{generation}`, not a generation: rebuild with `annals projections rebuild analytics`",
                self.root.display()
            )));
        }
        Ok(generation)
    }

    pub fn describe(&self) -> String {
        match self.dir() {
            Ok(d) => d.display().to_string(),
            Err(_) => self.root.display().to_string(),
        }
    }

    fn dir(&self) -> Result<PathBuf, AnalyticsError> {
        Ok(self.root.join(self.generation()?))
    }

    /// Holds the store's lock file: writers commit, and rebuilds swap, one at a time.
    fn lock(&self) -> Result<fs::File, AnalyticsError> {
        fs::create_dir_all(&self.root)
            .map_err(io(format!("cannot create {}", self.root.display())))?;
        let lock_path = self.root.join("LOCK");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(format!("cannot open {}", lock_path.display())))?;
        lock.lock()
            .map_err(io(format!("cannot lock {}", lock_path.display())))?;
        Ok(lock)
    }

    /// Creates the generation (and `CURRENT` the first time) and removes batches a crashed
    /// writer left half-written.
    pub fn prepare(&self) -> Result<(), AnalyticsError> {
        let generation = self.generation()?;
        let dir = self.root.join(&generation);
        fs::create_dir_all(&dir).map_err(io(format!("cannot create {}", dir.display())))?;
        let current = self.root.join("CURRENT");
        if self.pinned.is_none() && !current.exists() {
            self.write_current(&generation)?;
        }
        for p in self.partition_dirs()? {
            for entry in fs::read_dir(&p).map_err(io(format!("cannot list {}", p.display())))? {
                let entry = entry.map_err(io("cannot list a partition folder"))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(".tmp-") && !writer_alive(&name) {
                    fs::remove_dir_all(entry.path())
                        .map_err(io(format!("cannot remove {}", entry.path().display())))?;
                }
            }
        }
        Ok(())
    }

    fn write_current(&self, generation: &str) -> Result<(), AnalyticsError> {
        fs::create_dir_all(&self.root)
            .map_err(io(format!("cannot create {}", self.root.display())))?;
        let tmp = self.root.join(".CURRENT.tmp");
        fs::write(&tmp, format!("{generation}\n"))
            .and_then(|()| fs::File::open(&tmp)?.sync_all())
            .map_err(io(format!("cannot write {}", tmp.display())))?;
        fs::rename(&tmp, self.root.join("CURRENT"))
            .map_err(io("cannot replace analytics/CURRENT"))?;
        sync_dir(&self.root)
    }

    fn partition_dirs(&self) -> Result<Vec<PathBuf>, AnalyticsError> {
        let dir = self.dir()?;
        let mut out = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io(format!("cannot list {}", dir.display()))(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io("cannot list the analytics folder"))?;
            if entry.file_name().to_string_lossy().starts_with('p') && entry.path().is_dir() {
                out.push(entry.path());
            }
        }
        out.sort();
        Ok(out)
    }

    /// Committed batch folders, oldest first per partition. A folder whose range lies inside
    /// another's is left out: compaction renames the merged folder in before it removes the
    /// ones it merged, and a reader in between must count their rows once. Of two revisions of
    /// one range (a retention rewrite in progress), the higher is kept.
    fn batches(&self) -> Result<Vec<(PathBuf, u64, u64)>, AnalyticsError> {
        let mut out = Vec::new();
        for p in self.partition_dirs()? {
            out.extend(Self::partition_batches(&p)?);
        }
        Ok(out)
    }

    fn partition_batches(pdir: &Path) -> Result<Vec<(PathBuf, u64, u64)>, AnalyticsError> {
        let mut found = Vec::new();
        for entry in fs::read_dir(pdir).map_err(io(format!("cannot list {}", pdir.display())))? {
            let entry = entry.map_err(io("cannot list a partition folder"))?;
            if let Some((first, next, rev)) = batch_range(&entry.file_name().to_string_lossy()) {
                found.push((entry.path(), first, next, rev));
            }
        }
        // By start, the widest first, the newest revision first: a covered folder follows the
        // one covering it.
        found.sort_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)).then(b.3.cmp(&a.3)));
        let mut out: Vec<(PathBuf, u64, u64)> = Vec::with_capacity(found.len());
        for (path, first, next, _) in found {
            let b = (path, first, next);
            if out
                .last()
                .is_some_and(|last| b.1 >= last.1 && b.2 <= last.2)
            {
                continue;
            }
            out.push(b);
        }
        Ok(out)
    }

    /// Merges runs of small committed batches of each partition into one folder each (at most
    /// `target` events per merged folder), so a long `--follow` does not leave thousands of
    /// tiny files. The merged folder is renamed in under the lock, then the merged ones are
    /// removed. Returns how many folders were merged away.
    pub fn compact(&self, target: u64) -> Result<usize, AnalyticsError> {
        let mut merged_away = 0;
        for pdir in self.partition_dirs()? {
            let batches = Self::partition_batches(&pdir)?;
            let mut group: Vec<(PathBuf, u64, u64)> = Vec::new();
            let mut groups = Vec::new();
            for b in batches {
                let small = b.2 - b.1 < target / 4;
                let fits = group
                    .last()
                    .is_some_and(|l: &(PathBuf, u64, u64)| l.2 == b.1)
                    && b.2 - group.first().map_or(b.1, |f| f.1) <= target;
                if small && (group.is_empty() || fits) {
                    group.push(b);
                } else {
                    if group.len() >= 8 {
                        groups.push(std::mem::take(&mut group));
                    }
                    group.clear();
                    if small {
                        group.push(b);
                    }
                }
            }
            // The newest run is left to grow until it is worth merging.
            for g in groups {
                merged_away += g.len();
                self.merge(&pdir, &g)?;
            }
        }
        Ok(merged_away)
    }

    fn merge(&self, pdir: &Path, group: &[(PathBuf, u64, u64)]) -> Result<(), AnalyticsError> {
        use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let (first, next) = (group[0].1, group[group.len() - 1].2);
        let name = format!("{first:012}-{next:012}");
        let generation = self.generation()?;
        static MERGES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = MERGES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = pdir.join(format!(".tmp-{name}-{}-m{n}", std::process::id()));
        fs::create_dir_all(&tmp).map_err(io(format!("cannot create {}", tmp.display())))?;
        let result = (|| {
            // Every file name any folder of the group has: <table>.<month>.parquet.
            let mut files: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
            let mut rows: BTreeMap<String, u64> = BTreeMap::new();
            let mut last_recorded_at = 0;
            let mut partition = 0;
            for (dir, _, _) in group {
                let info = Self::info(dir)?;
                partition = info.partition;
                last_recorded_at = info.last_recorded_at;
                for (t, r) in info.rows {
                    *rows.entry(t).or_default() += r;
                }
                for entry in
                    fs::read_dir(dir).map_err(io(format!("cannot list {}", dir.display())))?
                {
                    let path = entry.map_err(io("cannot list a batch"))?.path();
                    let file = path.file_name().map(|f| f.to_string_lossy().into_owned());
                    if let Some(f) = file.filter(|f| f.ends_with(".parquet")) {
                        files.entry(f).or_default().push(path);
                    }
                }
            }
            for (file, parts) in &files {
                let table = file.split('.').next().unwrap_or_default();
                let Some(spec) = TABLES.iter().find(|t| t.name == table) else {
                    continue;
                };
                let schema = arrow_schema(spec);
                let out = tmp.join(file);
                let f = fs::File::create(&out)
                    .map_err(io(format!("cannot create {}", out.display())))?;
                let props = writer_properties(&schema);
                let parquet_err = |e: datafusion::parquet::errors::ParquetError| {
                    AnalyticsError::Store(format!("cannot merge {file}: {e}"))
                };
                let mut w =
                    ArrowWriter::try_new(f, schema.clone(), Some(props)).map_err(parquet_err)?;
                for part in parts {
                    let input = fs::File::open(part)
                        .map_err(io(format!("cannot open {}", part.display())))?;
                    let reader = ParquetRecordBatchReaderBuilder::try_new(input)
                        .and_then(|b| b.build())
                        .map_err(parquet_err)?;
                    for batch in reader {
                        let batch = batch.map_err(arrow_err("cannot read a batch file"))?;
                        w.write(&batch).map_err(parquet_err)?;
                    }
                }
                // Synced with the folder, by `write_info`.
                w.into_inner().map_err(parquet_err)?;
            }
            let info = BatchInfo {
                partition,
                first,
                next,
                last_recorded_at,
                rows,
            };
            write_info(&tmp, &info)?;
            let _lock = self.lock()?;
            if self.generation()? != generation || group.iter().any(|(d, _, _)| !d.is_dir()) {
                return Ok(()); // a rebuild or another compaction got there first
            }
            fs::rename(&tmp, pdir.join(&name))
                .map_err(io(format!("cannot rename {}", tmp.display())))?;
            sync_dir(pdir)?;
            for (dir, _, _) in group {
                fs::remove_dir_all(dir).map_err(io(format!("cannot remove {}", dir.display())))?;
            }
            sync_dir(pdir)
        })();
        if tmp.exists() {
            fs::remove_dir_all(&tmp).ok();
        }
        result
    }

    fn info(dir: &Path) -> Result<BatchInfo, AnalyticsError> {
        let path = dir.join("batch.json");
        let text = fs::read(&path).map_err(io(format!("cannot read {}", path.display())))?;
        serde_json::from_slice(&text).map_err(|e| {
            AnalyticsError::Store(format!(
                "{} is damaged ({e}): rebuild with `annals projections rebuild analytics`",
                path.display()
            ))
        })
    }

    /// Per partition, the highest committed range; only its `batch.json` is read (a long
    /// `--follow` leaves many small folders).
    pub fn positions(&self) -> Result<BTreeMap<u32, Position>, AnalyticsError> {
        let mut newest: BTreeMap<PathBuf, (u64, PathBuf)> = BTreeMap::new();
        for (dir, _, next) in self.batches()? {
            let parent = dir.parent().map(Path::to_path_buf).unwrap_or_default();
            let slot = newest.entry(parent).or_insert((0, PathBuf::new()));
            if next > slot.0 {
                *slot = (next, dir);
            }
        }
        let mut out = BTreeMap::new();
        for (next, dir) in newest.into_values() {
            let info = Self::info(&dir)?;
            out.insert(
                info.partition,
                Position {
                    next_seq: next,
                    last_recorded_at: Some(info.last_recorded_at),
                },
            );
        }
        Ok(out)
    }

    pub fn row_counts(&self) -> Result<BTreeMap<String, u64>, AnalyticsError> {
        let mut out: BTreeMap<String, u64> =
            TABLES.iter().map(|t| (t.name.to_owned(), 0)).collect();
        for (dir, _, _) in self.batches()? {
            for (t, n) in Self::info(&dir)?.rows {
                *out.entry(t).or_default() += n;
            }
        }
        Ok(out)
    }

    /// The partition's position: the highest `next` of its committed batch folders.
    fn partition_position(&self, pdir: &Path) -> Result<u64, AnalyticsError> {
        let entries = match fs::read_dir(pdir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io(format!("cannot list {}", pdir.display()))(e)),
        };
        let mut pos = 0;
        for entry in entries {
            let entry = entry.map_err(io("cannot list a partition folder"))?;
            if let Some((_, next, _)) = batch_range(&entry.file_name().to_string_lossy()) {
                pos = pos.max(next);
            }
        }
        Ok(pos)
    }

    /// Writes a batch's files in a hidden folder of its own, then — holding the store's lock —
    /// renames it into place. Writers of one store take turns only for that rename; a batch
    /// already stored is dropped, and one that does not start at the stored position is refused
    /// (it would leave a gap or overlap).
    pub fn write(&self, batch: Batch) -> Result<(), AnalyticsError> {
        let generation = self.generation()?;
        let pdir = self
            .root
            .join(&generation)
            .join(format!("p{:04}", batch.partition));
        let name = format!("{:012}-{:012}", batch.first, batch.next);
        let done = pdir.join(&name);
        if done.is_dir() {
            return Ok(());
        }
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = pdir.join(format!(".tmp-{name}-{}-{n}", std::process::id()));
        fs::create_dir_all(&tmp).map_err(io(format!("cannot create {}", tmp.display())))?;
        let written = self.write_files(&tmp, &batch);
        let committed = written.and_then(|()| self.commit(&generation, &tmp, &pdir, &done, &batch));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).ok();
        }
        committed
    }

    fn write_files(&self, tmp: &Path, batch: &Batch) -> Result<(), AnalyticsError> {
        let mut rows = BTreeMap::new();
        for (table, table_rows) in TABLES.iter().zip(batch.rows.tables.iter()) {
            rows.insert(table.name.to_owned(), table_rows.len() as u64);
            for (month, month_rows) in by_month(table, table_rows) {
                let path = tmp.join(format!("{}.{month}.parquet", table.name));
                write_parquet(&path, table, &month_rows)?;
            }
        }
        let info = BatchInfo {
            partition: batch.partition,
            first: batch.first,
            next: batch.next,
            last_recorded_at: batch.last_recorded_at,
            rows,
        };
        write_info(tmp, &info)
    }

    /// Renames a written batch into place under the store's lock, if it follows the position.
    fn commit(
        &self,
        generation: &str,
        tmp: &Path,
        pdir: &Path,
        done: &Path,
        batch: &Batch,
    ) -> Result<(), AnalyticsError> {
        let _lock = self.lock()?;
        if self.generation()? != generation {
            return Err(AnalyticsError::Store(format!(
                "the analytics files were rebuilt into a new generation while a batch was written to {generation}; it is applied again there"
            )));
        }
        let position = self.partition_position(pdir)?;
        if batch.next <= position {
            return Ok(());
        }
        if batch.first != position {
            return Err(AnalyticsError::Store(format!(
                "analytics partition {}: a batch starting at seq {} does not follow the stored position {position}",
                batch.partition, batch.first
            )));
        }
        if !batch.rows.deletions.is_empty() {
            self.remove_matching(pdir, &batch.rows.deletions)?;
        }
        crate::failpoint("analytics.parquet.before_commit");
        fs::rename(tmp, done).map_err(io(format!("cannot rename {}", tmp.display())))?;
        sync_dir(pdir)
    }

    /// A new, empty generation beside the live one.
    pub fn shadow(&self) -> Result<ParquetStore, AnalyticsError> {
        let n: u64 = self
            .generation()?
            .trim_start_matches("gen-")
            .parse()
            .unwrap_or(1);
        let generation = format!("gen-{:06}", n + 1);
        let dir = self.root.join(&generation);
        if dir.exists() {
            // Left by a rebuild that did not finish.
            fs::remove_dir_all(&dir).map_err(io(format!("cannot remove {}", dir.display())))?;
        }
        Ok(ParquetStore {
            root: self.root.clone(),
            pinned: Some(generation),
        })
    }

    /// Points `CURRENT` at `new` (one rename) and removes the old generation, holding the lock
    /// so no writer commits into the old one meanwhile (writers re-read `CURRENT`).
    pub fn swap_in(&self, new: ParquetStore) -> Result<(), AnalyticsError> {
        new.prepare()?;
        let new_generation = new.generation()?;
        let _lock = self.lock()?;
        let old = self.dir()?;
        self.write_current(&new_generation)?;
        if old.exists() && old != self.root.join(&new_generation) {
            fs::remove_dir_all(&old).map_err(io(format!("cannot remove {}", old.display())))?;
        }
        Ok(())
    }

    /// A DataFusion session with every table registered over the committed files.
    pub fn session(&self) -> Result<SessionContext, AnalyticsError> {
        let ctx = SessionContext::new();
        let batches = self.batches()?;
        for table in TABLES {
            let schema = arrow_schema(table);
            let mut urls = Vec::new();
            for (dir, _, _) in &batches {
                for f in table_files(dir, table.name)? {
                    urls.push(
                        ListingTableUrl::parse(f.to_string_lossy())
                            .map_err(store_err("bad file path"))?,
                    );
                }
            }
            let provider: Arc<dyn datafusion::catalog::TableProvider> = if urls.is_empty() {
                Arc::new(EmptyTable::new(schema))
            } else {
                let cfg = ListingTableConfig::new_with_multi_paths(urls)
                    .with_listing_options(
                        ListingOptions::new(Arc::new(ParquetFormat::default()))
                            .with_file_extension(".parquet"),
                    )
                    .with_schema(schema);
                Arc::new(ListingTable::try_new(cfg).map_err(store_err("cannot open a table"))?)
            };
            ctx.register_table(table.name, provider)
                .map_err(store_err("cannot register a table"))?;
        }
        Ok(ctx)
    }

    /// Runs a read-only query with DataFusion and renders the result.
    pub async fn query(&self, sql: &str, format: Format) -> Result<String, AnalyticsError> {
        let ctx = self.session()?;
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let df = ctx
            .sql_with_options(sql, options)
            .await
            .map_err(|e| AnalyticsError::Query(e.to_string()))?;
        let schema: SchemaRef = df.schema().inner().clone();
        let batches = df
            .collect()
            .await
            .map_err(|e| AnalyticsError::Query(e.to_string()))?;
        render(schema, &batches, format)
    }
}

/// Retention: listing and removing the rows a retention run matches.
impl ParquetStore {
    /// `(seq, time)` of every stored row `d` matches, in the live generation.
    pub fn matching(&self, d: &Deletion) -> Result<Vec<(u64, i64)>, AnalyticsError> {
        let pdir = self.dir()?.join(format!("p{:04}", d.partition));
        if !pdir.is_dir() {
            return Ok(Vec::new());
        }
        let c = PredicateColumns::of(&TABLES[d.table]);
        let mut out = Vec::new();
        for (dir, first, _) in Self::partition_batches(&pdir)? {
            if first >= d.before_seq {
                continue;
            }
            for path in table_files(&dir, d.table_name())? {
                for batch in read_parquet(&path)? {
                    let mask = mask(std::slice::from_ref(d), &batch)?;
                    let seq = batch.column(c.seq).as_primitive::<UInt64Type>();
                    let time = batch
                        .column(c.time)
                        .as_primitive::<TimestampMicrosecondType>();
                    for i in (0..batch.num_rows()).filter(|&i| mask.value(i)) {
                        out.push((seq.value(i), time.value(i)));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Removes the rows `deletions` match from the committed folders of one partition: each
    /// folder holding such rows is written again without them as the next revision of its
    /// range, renamed in, and then the old revision is removed. The caller holds the lock.
    /// Running it again finds nothing more to remove.
    fn remove_matching(&self, pdir: &Path, deletions: &[Deletion]) -> Result<(), AnalyticsError> {
        for (dir, first, next) in Self::partition_batches(pdir)? {
            let relevant: Vec<Deletion> = deletions
                .iter()
                .filter(|d| first < d.before_seq)
                .cloned()
                .collect();
            if relevant.is_empty() {
                continue;
            }
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let revision = batch_range(&name).map_or(0, |(_, _, r)| r);
            let new_name = format!("{first:012}-{next:012}.r{}", revision + 1);
            let tmp = pdir.join(format!(".tmp-{new_name}-{}-d0", std::process::id()));
            let result = self
                .rewrite_without(&dir, &tmp, &relevant)
                .and_then(|changed| {
                    if !changed {
                        return Ok(());
                    }
                    fs::rename(&tmp, pdir.join(&new_name))
                        .map_err(io(format!("cannot rename {}", tmp.display())))?;
                    sync_dir(pdir)?;
                    fs::remove_dir_all(&dir)
                        .map_err(io(format!("cannot remove {}", dir.display())))?;
                    sync_dir(pdir)
                });
            if tmp.exists() {
                fs::remove_dir_all(&tmp).ok();
            }
            result?;
        }
        Ok(())
    }

    /// Writes `dir` into `tmp` without the rows `deletions` match; false (and nothing in
    /// `tmp`) if it holds none.
    fn rewrite_without(
        &self,
        dir: &Path,
        tmp: &Path,
        deletions: &[Deletion],
    ) -> Result<bool, AnalyticsError> {
        let mut info = Self::info(dir)?;
        let mut kept: Vec<(PathBuf, Option<Vec<RecordBatch>>)> = Vec::new();
        let mut changed = false;
        for entry in fs::read_dir(dir).map_err(io(format!("cannot list {}", dir.display())))? {
            let path = entry.map_err(io("cannot list a batch"))?.path();
            let file = path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !file.ends_with(".parquet") {
                continue;
            }
            let table = file.split('.').next().unwrap_or_default();
            let mine: Vec<Deletion> = deletions
                .iter()
                .filter(|d| d.table_name() == table)
                .cloned()
                .collect();
            if mine.is_empty() {
                kept.push((path, None));
                continue;
            }
            let mut removed = 0u64;
            let mut batches = Vec::new();
            for batch in read_parquet(&path)? {
                let mask = mask(&mine, &batch)?;
                removed += mask.true_count() as u64;
                let keep = datafusion::arrow::compute::not(&mask)
                    .map_err(arrow_err("cannot filter a batch"))?;
                batches.push(
                    datafusion::arrow::compute::filter_record_batch(&batch, &keep)
                        .map_err(arrow_err("cannot filter a batch"))?,
                );
            }
            if removed == 0 {
                kept.push((path, None));
                continue;
            }
            changed = true;
            if let Some(n) = info.rows.get_mut(table) {
                *n = n.saturating_sub(removed);
            }
            kept.push((path, Some(batches)));
        }
        if !changed {
            return Ok(false);
        }
        fs::create_dir_all(tmp).map_err(io(format!("cannot create {}", tmp.display())))?;
        for (path, rewritten) in kept {
            let Some(file) = path.file_name() else {
                continue;
            };
            let out = tmp.join(file);
            match rewritten {
                // Untouched files are shared with the old revision, which is removed after.
                None => fs::hard_link(&path, &out)
                    .or_else(|_| fs::copy(&path, &out).map(|_| ()))
                    .map_err(io(format!("cannot copy {}", path.display())))?,
                Some(batches) if batches.iter().all(|b| b.num_rows() == 0) => {}
                Some(batches) => write_batches(&out, &batches)?,
            }
        }
        write_info(tmp, &info)?;
        Ok(true)
    }
}

/// The Parquet files of one table in a batch folder.
fn table_files(dir: &Path, table: &str) -> Result<Vec<PathBuf>, AnalyticsError> {
    let prefix = format!("{table}.");
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(io(format!("cannot list {}", dir.display())))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with(&prefix) && n.ends_with(".parquet")
            })
        })
        .collect();
    files.sort();
    Ok(files)
}

fn read_parquet(path: &Path) -> Result<Vec<RecordBatch>, AnalyticsError> {
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let input = fs::File::open(path).map_err(io(format!("cannot open {}", path.display())))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(input)
        .and_then(|b| b.build())
        .map_err(|e| AnalyticsError::Store(format!("cannot read {}: {e}", path.display())))?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(arrow_err(&format!("cannot read {}", path.display())))
}

/// Which rows of a batch of one table any of `deletions` (all of that table) matches.
fn mask(deletions: &[Deletion], batch: &RecordBatch) -> Result<BooleanArray, AnalyticsError> {
    let Some(first) = deletions.first() else {
        return Ok(BooleanArray::from(vec![false; batch.num_rows()]));
    };
    let c = PredicateColumns::of(&TABLES[first.table]);
    let tenant = datafusion::arrow::compute::cast(batch.column(c.tenant), &DataType::Utf8)
        .map_err(arrow_err("cannot read the tenant column"))?;
    let tenant = tenant.as_string::<i32>();
    let partition = batch.column(c.partition).as_primitive::<UInt32Type>();
    let seq = batch.column(c.seq).as_primitive::<UInt64Type>();
    let time = batch
        .column(c.time)
        .as_primitive::<TimestampMicrosecondType>();
    Ok((0..batch.num_rows())
        .map(|i| {
            let hit = !tenant.is_null(i)
                && !time.is_null(i)
                && deletions.iter().any(|d| {
                    d.holds(
                        tenant.value(i),
                        partition.value(i),
                        seq.value(i),
                        time.value(i),
                    )
                });
            Some(hit)
        })
        .collect())
}

fn write_batches(path: &Path, batches: &[RecordBatch]) -> Result<(), AnalyticsError> {
    let Some(schema) = batches.first().map(RecordBatch::schema) else {
        return Ok(());
    };
    let file = fs::File::create(path).map_err(io(format!("cannot create {}", path.display())))?;
    let props = writer_properties(&schema);
    let write = |file: fs::File| -> Result<fs::File, datafusion::parquet::errors::ParquetError> {
        let mut w = ArrowWriter::try_new(file, schema, Some(props))?;
        for b in batches {
            w.write(b)?;
        }
        w.into_inner()
    };
    // Synced with its folder, by `write_info`.
    write(file)
        .map(drop)
        .map_err(|e| AnalyticsError::Store(format!("cannot write {}: {e}", path.display())))
}

/// Renders query results as a table, CSV or JSON (one object per row, in an array).
pub fn render(
    schema: SchemaRef,
    batches: &[RecordBatch],
    format: Format,
) -> Result<String, AnalyticsError> {
    use datafusion::arrow::{csv, json, util::pretty};
    match format {
        Format::Table => Ok(pretty::pretty_format_batches_with_schema(schema, batches)
            .map_err(arrow_err("cannot render"))?
            .to_string()),
        Format::Csv => {
            let nested: Vec<&str> = schema
                .fields()
                .iter()
                .filter(|f| f.data_type().is_nested())
                .map(|f| f.name().as_str())
                .collect();
            if !nested.is_empty() {
                return Err(AnalyticsError::Query(format!(
                    "CSV cannot hold the map or list column(s) {}: select single values (e.g. attributes['region']) or use --format json",
                    nested.join(", ")
                )));
            }
            let mut out = Vec::new();
            {
                let mut w = csv::WriterBuilder::new().with_header(true).build(&mut out);
                if batches.is_empty() {
                    w.write(&RecordBatch::new_empty(schema))
                        .map_err(arrow_err("cannot write CSV"))?;
                }
                for b in batches {
                    w.write(b).map_err(arrow_err("cannot write CSV"))?;
                }
            }
            Ok(String::from_utf8_lossy(&out).into_owned())
        }
        Format::Json => {
            let mut w = json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, json::writer::JsonArray>(Vec::new());
            let refs: Vec<&RecordBatch> = batches.iter().collect();
            w.write_batches(&refs)
                .map_err(arrow_err("cannot write JSON"))?;
            w.finish().map_err(arrow_err("cannot write JSON"))?;
            Ok(String::from_utf8_lossy(&w.into_inner()).into_owned())
        }
    }
}

/// Splits rows by the month of the table's `month_of` column (`YYYY-MM`), keeping their order.
fn by_month<'a>(table: &Table, rows: &'a [Vec<Cell>]) -> BTreeMap<String, Vec<&'a Vec<Cell>>> {
    let i = column_index(table, table.month_of).expect("month_of names a column");
    // Grouped by (year, month) numbers; the names are made once per group.
    let mut groups: BTreeMap<Option<(i64, u32)>, Vec<&Vec<Cell>>> = BTreeMap::new();
    for row in rows {
        let month = match row[i] {
            Cell::Time(t) => Some(annals_events::time::year_month(t)),
            _ => None,
        };
        groups.entry(month).or_default().push(row);
    }
    groups
        .into_iter()
        .map(|(month, rows)| {
            let name =
                month.map_or_else(|| "unknown".to_owned(), |(y, m)| format!("{y:04}-{m:02}"));
            (name, rows)
        })
        .collect()
}

/// One column's Arrow builder; which one follows from the column's type.
enum Builder {
    Category(StringDictionaryBuilder<Int32Type>),
    Text(StringBuilder),
    List(ListBuilder<StringBuilder>),
    Int(Int64Builder),
    UInt32(UInt32Builder),
    UInt64(UInt64Builder),
    Float(Float64Builder),
    Time(TimestampMicrosecondBuilder),
    Money(Decimal128Builder),
    Labels(MapBuilder<StringBuilder, StringBuilder>),
    Shares(MapBuilder<StringBuilder, Int64Builder>),
}

impl Builder {
    fn new(ty: ColumnType) -> Builder {
        match ty {
            ColumnType::Category => Builder::Category(StringDictionaryBuilder::new()),
            ColumnType::Text | ColumnType::NullableText => Builder::Text(StringBuilder::new()),
            ColumnType::TextList => Builder::List(ListBuilder::new(StringBuilder::new())),
            ColumnType::Int64 | ColumnType::NullableInt64 => Builder::Int(Int64Builder::new()),
            ColumnType::UInt32 => Builder::UInt32(UInt32Builder::new()),
            ColumnType::UInt64 => Builder::UInt64(UInt64Builder::new()),
            ColumnType::NullableFloat64 => Builder::Float(Float64Builder::new()),
            ColumnType::Time => {
                Builder::Time(TimestampMicrosecondBuilder::new().with_timezone("UTC"))
            }
            ColumnType::Money => Builder::Money(
                Decimal128Builder::new()
                    .with_precision_and_scale(18, 3)
                    .expect("valid decimal"),
            ),
            ColumnType::Labels => Builder::Labels(MapBuilder::new(
                None,
                StringBuilder::new(),
                StringBuilder::new(),
            )),
            ColumnType::Shares => Builder::Shares(MapBuilder::new(
                None,
                StringBuilder::new(),
                Int64Builder::new(),
            )),
        }
    }

    fn append(&mut self, cell: &Cell) -> Result<(), String> {
        match (self, cell) {
            (Builder::Category(b), Cell::Text(s)) => {
                b.append_value(s);
            }
            (Builder::Category(b), Cell::Null) => b.append_null(),
            (Builder::Text(b), Cell::Text(s)) => b.append_value(s),
            (Builder::Text(b), Cell::Null) => b.append_null(),
            (Builder::List(b), Cell::List(items)) => {
                for i in items {
                    b.values().append_value(i);
                }
                b.append(true);
            }
            (Builder::Int(b), Cell::Int(v)) => b.append_value(*v),
            (Builder::Int(b), Cell::Null) => b.append_null(),
            (Builder::UInt32(b), Cell::UInt(v)) => {
                b.append_value(u32::try_from(*v).map_err(|_| format!("{v} exceeds UInt32"))?)
            }
            (Builder::UInt64(b), Cell::UInt(v)) => b.append_value(*v),
            (Builder::Float(b), Cell::Float(v)) => b.append_value(*v),
            (Builder::Float(b), Cell::Null) => b.append_null(),
            (Builder::Time(b), Cell::Time(v)) => b.append_value(*v),
            (Builder::Money(b), Cell::Money(v)) => b.append_value(i128::from(*v)),
            (Builder::Labels(b), Cell::Labels(kv)) => {
                for (k, v) in kv {
                    b.keys().append_value(k);
                    b.values().append_value(v);
                }
                b.append(true).map_err(|e| e.to_string())?;
            }
            (Builder::Shares(b), Cell::Shares(kv)) => {
                for (k, v) in kv {
                    b.keys().append_value(k);
                    b.values().append_value(*v);
                }
                b.append(true).map_err(|e| e.to_string())?;
            }
            (_, cell) => return Err(format!("a {cell:?} does not fit this column")),
        }
        Ok(())
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Category(b) => Arc::new(b.finish()),
            Builder::Text(b) => Arc::new(b.finish()),
            Builder::List(b) => Arc::new(b.finish()),
            Builder::Int(b) => Arc::new(b.finish()),
            Builder::UInt32(b) => Arc::new(b.finish()),
            Builder::UInt64(b) => Arc::new(b.finish()),
            Builder::Float(b) => Arc::new(b.finish()),
            Builder::Time(b) => Arc::new(b.finish()),
            Builder::Money(b) => Arc::new(b.finish()),
            Builder::Labels(b) => Arc::new(b.finish()),
            Builder::Shares(b) => Arc::new(b.finish()),
        }
    }
}

/// How every Parquet file is written: Snappy; dictionary pages only for the columns kept as
/// dictionaries (the low-cardinality `Category` columns), as for ids and hashes a dictionary is
/// pure cost; min/max statistics per column chunk (what DataFusion prunes row groups by), not
/// per page.
fn writer_properties(schema: &Schema) -> WriterProperties {
    let mut props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_dictionary_enabled(false)
        .set_statistics_enabled(EnabledStatistics::Chunk);
    for f in schema.fields() {
        if matches!(f.data_type(), DataType::Dictionary(..)) {
            props = props.set_column_dictionary_enabled(ColumnPath::from(f.name().as_str()), true);
        }
    }
    props.build()
}

/// The Arrow schema of a table (the types the builders produce).
pub fn arrow_schema(table: &Table) -> SchemaRef {
    let fields: Vec<Field> = table
        .columns
        .iter()
        .map(|c| {
            let ty = Builder::new(c.ty).finish().data_type().clone();
            Field::new(c.name, ty, true)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

fn write_parquet(path: &Path, table: &Table, rows: &[&Vec<Cell>]) -> Result<(), AnalyticsError> {
    let schema = arrow_schema(table);
    let mut builders: Vec<Builder> = table.columns.iter().map(|c| Builder::new(c.ty)).collect();
    for row in rows {
        for ((b, cell), c) in builders.iter_mut().zip(row.iter()).zip(table.columns) {
            b.append(cell)
                .map_err(|e| AnalyticsError::Store(format!("{}.{}: {e}", table.name, c.name)))?;
        }
    }
    let arrays: Vec<ArrayRef> = builders.iter_mut().map(Builder::finish).collect();
    let batch = RecordBatch::try_new(schema.clone(), arrays)
        .map_err(arrow_err(&format!("cannot build {}", table.name)))?;
    let file = fs::File::create(path).map_err(io(format!("cannot create {}", path.display())))?;
    let props = writer_properties(&schema);
    let write = |file: fs::File| -> Result<fs::File, datafusion::parquet::errors::ParquetError> {
        let mut w = ArrowWriter::try_new(file, schema.clone(), Some(props))?;
        w.write(&batch)?;
        w.into_inner()
    };
    // Synced with its folder, by `write_info`.
    write(file)
        .map(drop)
        .map_err(|e| AnalyticsError::Store(format!("cannot write {}: {e}", path.display())))
}
