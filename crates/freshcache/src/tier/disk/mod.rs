//! L3: value envelopes as blob files (or inline for small ones), indexed by SQLite.
//!
//! Layout under the cache directory:
//!
//! ```text
//! metadata.db            the index (WAL mode; several processes may share it)
//! blobs/ab/ab12…ef.blob  envelopes named by random 128-bit ids, never by key
//! tmp/                   blobs being written
//! ```
//!
//! Write order: envelope written to `tmp/` → renamed into `blobs/` → index row committed →
//! the replaced blob removed. A crash at any point leaves either the old row (and maybe an
//! orphan blob that repair deletes) or the new row with its complete blob. Reads verify the
//! envelope checksum and the key inside it; a bad or missing blob is a miss that removes its
//! row and is counted.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::clock::Timestamp;
use crate::codec;
use crate::entry::Entry;
use crate::error::{Error, Result};

pub mod audit;
pub mod fault;
mod nofollow;
mod reserve;
pub mod upkeep;

/// How long a writer waits for another process's transaction before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Pending access-time updates are written once this many have accumulated.
const TOUCH_BATCH: usize = 256;
/// Reads closer together than this do not update a row's access time (LRU to the second).
const TOUCH_GRANULARITY: Duration = Duration::from_secs(1);
/// Pages of WAL after which a commit checkpoints (SQLite's default).
const WAL_AUTOCHECKPOINT: i64 = 1000;
/// Idle reader connections kept open.
const MAX_IDLE_READERS: usize = 8;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS entries (
    key           TEXT PRIMARY KEY NOT NULL,
    data_type     TEXT NOT NULL,
    stored_at     INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    as_of         INTEGER,
    access_at     INTEGER NOT NULL,
    access_count  INTEGER NOT NULL DEFAULT 0,
    size          INTEGER NOT NULL,
    stored_size   INTEGER NOT NULL,
    codec         TEXT NOT NULL,
    checksum      INTEGER NOT NULL,
    etag          TEXT,
    last_modified TEXT,
    file          TEXT,
    inline_value  BLOB
);
CREATE INDEX IF NOT EXISTS entries_expires_at ON entries(expires_at);
CREATE INDEX IF NOT EXISTS entries_access_at ON entries(access_at);
CREATE INDEX IF NOT EXISTS entries_file ON entries(file) WHERE file IS NOT NULL;
-- Stored bytes per data type, kept exact in the same transaction as every write, so every
-- process sees one total without scanning the table: inserts and rewrites by triggers, deletes
-- by the deleting statement itself (see `delete_rows`; a per-row delete trigger cost as much
-- as the delete on a bulk sweep).
CREATE TABLE IF NOT EXISTS type_totals (
    data_type TEXT PRIMARY KEY NOT NULL,
    entries   INTEGER NOT NULL,
    bytes     INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS entries_totals_insert AFTER INSERT ON entries BEGIN
    INSERT INTO type_totals (data_type, entries, bytes) VALUES (NEW.data_type, 1, NEW.stored_size)
    ON CONFLICT (data_type) DO UPDATE SET entries = entries + 1, bytes = bytes + excluded.bytes;
END;
CREATE TRIGGER IF NOT EXISTS entries_totals_update AFTER UPDATE OF stored_size, data_type ON entries BEGIN
    UPDATE type_totals SET entries = entries - 1, bytes = bytes - OLD.stored_size
    WHERE data_type = OLD.data_type;
    INSERT INTO type_totals (data_type, entries, bytes) VALUES (NEW.data_type, 1, NEW.stored_size)
    ON CONFLICT (data_type) DO UPDATE SET entries = entries + 1, bytes = bytes + excluded.bytes;
END;
-- One row per signal checked by the freshness guard: proof of what an inference run used.
CREATE TABLE IF NOT EXISTS freshness_audit (
    id         INTEGER PRIMARY KEY,
    run_id     TEXT NOT NULL,
    checked_at INTEGER NOT NULL,
    key        TEXT NOT NULL,
    data_type  TEXT NOT NULL,
    verdict    TEXT NOT NULL,
    age_ms     INTEGER,
    ttl_ms     INTEGER NOT NULL,
    checksum   TEXT,
    etag       TEXT
);
CREATE INDEX IF NOT EXISTS freshness_audit_run ON freshness_audit(run_id);
CREATE INDEX IF NOT EXISTS freshness_audit_time ON freshness_audit(checked_at);
CREATE TABLE IF NOT EXISTS maintenance (
    name  TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    tier      TEXT NOT NULL,
    data_type TEXT NOT NULL,
    name      TEXT NOT NULL,
    value     INTEGER NOT NULL,
    PRIMARY KEY (tier, data_type, name)
);
CREATE TABLE IF NOT EXISTS schema_info (name TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO schema_info VALUES ('version', '2');
";

/// Recomputes the per-type totals from the rows (schema upgrade, repair of drift).
const REBUILD_TOTALS: &str = "DELETE FROM type_totals;
     INSERT INTO type_totals (data_type, entries, bytes)
         SELECT data_type, COUNT(*), SUM(stored_size) FROM entries GROUP BY data_type;";

/// The schema this build writes. Version 1 kept the per-type totals of deletes with a per-row
/// trigger; version 2 has the deleting statements keep them (see [`delete_rows`]).
const SCHEMA_VERSION: &str = "2";

/// Brings an index of an earlier version up to [`SCHEMA_VERSION`], inside the caller's
/// transaction; returns the version found afterwards (another build's newer version is left
/// alone, and refused by the caller).
fn migrate(c: &Connection) -> rusqlite::Result<Option<String>> {
    let version = || {
        c.query_row(
            "SELECT value FROM schema_info WHERE name = 'version'",
            [],
            |r| r.get::<_, String>(0),
        )
        .optional()
    };
    let found = version()?;
    if !matches!(found.as_deref(), Some("1" | "2")) {
        return Ok(found);
    }
    // Version 1 counted deletes with a trigger on `entries` named `entries_totals_delete`.
    // Version 2 keeps a do-nothing trigger of that name on `schema_info`, so an older build
    // that merely opens this index (its schema says `CREATE TRIGGER IF NOT EXISTS`) cannot put
    // the counting one back and have every delete counted twice. A counting trigger found
    // anyway (version 1, or put back some other way) is replaced and the totals rebuilt.
    let counting: i64 = c.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger'
         AND name = 'entries_totals_delete' AND tbl_name = 'entries'",
        [],
        |r| r.get(0),
    )?;
    if counting > 0 || found.as_deref() == Some("1") {
        c.execute_batch("DROP TRIGGER IF EXISTS entries_totals_delete;")?;
        c.execute_batch(REBUILD_TOTALS)?;
        c.execute_batch("UPDATE schema_info SET value = '2' WHERE name = 'version';")?;
    }
    c.execute_batch(
        "CREATE TRIGGER IF NOT EXISTS entries_totals_delete AFTER DELETE ON schema_info
         BEGIN SELECT 1; END;",
    )?;
    version()
}

/// What one `DELETE FROM entries ... RETURNING file, data_type, stored_size[, key]` removed.
#[derive(Debug, Default)]
struct Deleted {
    /// Blob files of the removed rows, to remove once the transaction has committed.
    files: Vec<String>,
    /// Keys of the removed rows, when the statement returns them (a fourth column).
    keys: Vec<String>,
    /// Rows and stored bytes removed.
    removed: upkeep::Removed,
}

impl Deleted {
    fn absorb(&mut self, other: Self) {
        self.files.extend(other.files);
        self.keys.extend(other.keys);
        self.removed.absorb(other.removed);
    }
}

/// Runs `sql`, a `DELETE FROM entries ... RETURNING file, data_type, stored_size[, key]`, inside the
/// caller's transaction, and takes what it removed off `type_totals` in the same transaction:
/// one update per data type per statement (a per-row trigger cost as much as the delete itself
/// on a bulk sweep).
fn delete_rows(
    tx: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<Deleted> {
    let mut out = Deleted::default();
    let mut by_type: Vec<(String, i64, i64)> = Vec::new();
    {
        let mut st = tx.prepare_cached(sql)?;
        let mut rows = st.query(params)?;
        while let Some(row) = rows.next()? {
            let file: Option<String> = row.get(0)?;
            // A tampered type name that is not text must not stop every sweep that meets it.
            let data_type = String::from_utf8_lossy(row.get_ref(1)?.as_bytes()?);
            let size: i64 = row.get(2)?;
            if row.as_ref().column_count() > 3 {
                // Read as bytes: a key an older build stored as a blob or as invalid text must
                // not fail the whole delete.
                out.keys
                    .push(String::from_utf8_lossy(row.get_ref(3)?.as_bytes()?).into_owned());
            }
            out.files.extend(file);
            out.removed.add(size.max(0) as u64);
            match by_type.iter_mut().find(|t| t.0 == data_type) {
                Some(t) => {
                    t.1 += 1;
                    t.2 += size;
                }
                None => by_type.push((data_type.into_owned(), 1, size)),
            }
        }
    }
    let mut debit = tx.prepare_cached(
        "UPDATE type_totals SET entries = entries - ?2, bytes = bytes - ?3 WHERE data_type = ?1",
    )?;
    for (data_type, n, bytes) in &by_type {
        debit.execute(params![data_type, n, bytes])?;
    }
    Ok(out)
}

/// Per-data-type totals held on disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiskTypeStats {
    /// Rows.
    pub entries: u64,
    /// Value bytes (uncompressed).
    pub value_bytes: u64,
    /// Bytes as stored (envelopes, possibly compressed).
    pub stored_bytes: u64,
    /// Rows already past their expiry, awaiting cleanup.
    pub expired: u64,
    /// Earliest `stored_at`.
    pub oldest_stored_at: Option<Timestamp>,
}

/// Index facts about one stored entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowInfo {
    /// Blob file relative to the blob directory, or `None` when stored inline.
    pub file: Option<String>,
    /// Bytes as stored.
    pub stored_size: u64,
    /// Last read (as flushed to the index).
    pub access_at: Timestamp,
    /// Reads recorded.
    pub access_count: u64,
}

/// Where a stored envelope lives.
#[derive(Debug)]
enum Location {
    Inline(Vec<u8>),
    File(String),
}

/// The L3 tier.
pub struct DiskTier {
    db_path: PathBuf,
    blobs: PathBuf,
    tmp: PathBuf,
    inline_max: u64,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    touches: Arc<TouchQueue>,
    /// Writes batches of access times off the readers' path; `None` when no thread could be
    /// started (readers then write them themselves).
    flusher: Option<std::thread::JoinHandle<()>>,
    corrupt: AtomicU64,
    max_bytes: AtomicU64,
    evictions: AtomicU64,
    min_free: AtomicU64,
    free_space: Box<dyn FreeSpace>,
    /// When free space was last measured, and bytes written since.
    free_checked: Mutex<(Option<std::time::Instant>, u64)>,
    /// Headroom released when a delete fails on a full filesystem.
    reserve: reserve::Reserve,
    /// The blob directory held open for reads beneath it.
    blob_dir: nofollow::BlobDir,
    /// Injected filesystem faults on the blob write path; unset in production.
    faults: std::sync::OnceLock<std::sync::Arc<dyn fault::FsFaults>>,
}

/// How much space is left on the filesystem holding a path: a seam so tests can simulate a
/// nearly full disk, which cannot be made safely on a shared machine.
pub trait FreeSpace: Send + Sync {
    /// Bytes available to this process at `path`, or `None` when unknown.
    fn available(&self, path: &Path) -> Option<u64>;
}

/// The real filesystem, via `statvfs`.
#[derive(Clone, Copy, Debug, Default)]
pub struct StatvfsFreeSpace;

impl FreeSpace for StatvfsFreeSpace {
    fn available(&self, path: &Path) -> Option<u64> {
        let s = rustix::fs::statvfs(path).ok()?;
        Some(s.f_bavail.saturating_mul(s.f_frsize))
    }
}

/// Free space is measured at most this often on the write path.
const FREE_CHECK_EVERY: Duration = Duration::from_millis(500);

impl std::fmt::Debug for DiskTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskTier")
            .field("db_path", &self.db_path)
            .field("blobs", &self.blobs)
            .finish_non_exhaustive()
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// A blob name as stored in the index: `ab/<32 hex>.blob`. Anything else is refused before it
/// is joined to a path, so a tampered row cannot point outside the cache directory.
fn valid_blob_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 2 + 1 + 32 + 5
        && b[2] == b'/'
        && name.ends_with(".blob")
        && b[..2] == b[3..5]
        && b[..2]
            .iter()
            .chain(&b[3..35])
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

fn new_blob_name() -> String {
    let id = format!("{:032x}", fastrand::u128(..));
    format!("{}/{id}.blob", &id[..2])
}

/// Locks `m`, carrying on after a panic elsewhere held it (the data stays usable: a pool of
/// connections, pending access times).
fn unpoisoned<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl DiskTier {
    /// Opens (creating if needed) the tier in `dir` with its index at `db_path`.
    ///
    /// Safe to call from several processes at once on the same directory.
    ///
    /// # Errors
    /// [`Error::Io`] when the directories cannot be created; [`Error::Index`] when the index
    /// cannot be opened or is not a freshcache index.
    pub fn open(dir: &Path, db_path: &Path, inline_max: u64) -> Result<Self> {
        let blobs = dir.join("blobs");
        let tmp = dir.join("tmp");
        for d in [&blobs, &tmp] {
            // The tier's own directories are never links: one planted there is removed (the
            // link, not its target) and the directory made.
            if fs::symlink_metadata(d).is_ok_and(|m| m.file_type().is_symlink()) {
                tracing::warn!(path = %d.display(), "disk tier: symbolic link in place of a directory removed");
                fs::remove_file(d).map_err(|e| Error::io(d, e))?;
            }
        }
        for d in [dir, &blobs, &tmp] {
            fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
        if let Some(parent) = db_path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let writer = Self::connect(db_path)?;
        let db = |source| Error::Index {
            path: db_path.to_path_buf(),
            source,
        };
        // Several processes may race to create the schema; IMMEDIATE serialises them and
        // the busy timeout makes the losers wait instead of failing.
        let mut attempts = 0;
        let version = loop {
            let r = writer
                .execute_batch(&format!("BEGIN IMMEDIATE;{SCHEMA}"))
                .and_then(|()| migrate(&writer))
                .and_then(|v| writer.execute_batch("COMMIT").map(|()| v));
            match r {
                Ok(v) => break v,
                Err(e) if is_busy(&e) && attempts < 50 => {
                    let _ = writer.execute_batch("ROLLBACK");
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    let _ = writer.execute_batch("ROLLBACK");
                    return Err(db(e));
                }
            }
        };
        if version.as_deref() != Some(SCHEMA_VERSION) {
            return Err(db(rusqlite::Error::InvalidQuery));
        }
        let reserve = reserve::Reserve::open(dir, &tmp);
        let blob_dir = nofollow::BlobDir::open(&blobs);
        let touches = Arc::new(TouchQueue::default());
        let flusher = TouchQueue::spawn_flusher(&touches, db_path);
        Ok(Self {
            db_path: db_path.to_path_buf(),
            blobs,
            tmp,
            inline_max,
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
            touches,
            flusher,
            corrupt: AtomicU64::new(0),
            max_bytes: AtomicU64::new(u64::MAX),
            evictions: AtomicU64::new(0),
            min_free: AtomicU64::new(0),
            free_space: Box::new(StatvfsFreeSpace),
            free_checked: Mutex::new((None, 0)),
            reserve,
            blob_dir,
            faults: std::sync::OnceLock::new(),
        })
    }

    fn connect(db_path: &Path) -> Result<Connection> {
        let db = |source| Error::Index {
            path: db_path.to_path_buf(),
            source,
        };
        let conn = Connection::open_with_flags(
            db_path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(db)?;
        // Switching to WAL needs a moment of exclusive access; retry while another opener has it.
        let mut attempts = 0;
        loop {
            match conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0)) {
                Ok(_) => break,
                Err(e) if is_busy(&e) && attempts < 100 => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(db(e)),
            }
        }
        // The WAL is cut back to this size once checkpointed (a bulk sweep can grow it to the
        // size of the index).
        conn.execute_batch(
            "PRAGMA synchronous=NORMAL; PRAGMA temp_store=MEMORY;
             PRAGMA journal_size_limit=67108864;",
        )
        .map_err(db)?;
        Ok(conn)
    }

    fn db_err(&self, source: rusqlite::Error) -> Error {
        // SQLite reports a write refused by a read-only filesystem as a plain I/O error (and
        // keeps the errno to itself), and a filesystem that went read-only on an error of its
        // own (ext4 `errors=remount-ro` aborting its journal) can leave SQLite reading pages it
        // calls malformed: ask the filesystem, so callers can tell a read-only disk from damage.
        if matches!(
            source.sqlite_error_code(),
            Some(rusqlite::ErrorCode::SystemIoFailure | rusqlite::ErrorCode::DatabaseCorrupt)
        ) {
            let probe = self
                .tmp
                .join(format!("probe-{:016x}.tmp", fastrand::u64(..)));
            match fs::File::create_new(&probe) {
                Ok(_) => {
                    let _ = fs::remove_file(&probe);
                }
                Err(e) if e.kind() == io::ErrorKind::ReadOnlyFilesystem => {
                    let reason = format!("{source}: {e}");
                    return Error::io(&self.db_path, io::Error::new(e.kind(), reason));
                }
                Err(_) => {}
            }
        }
        Error::Index {
            path: self.db_path.clone(),
            source,
        }
    }

    fn with_reader<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let conn = unpoisoned(&self.readers).pop();
        let conn = match conn {
            Some(c) => c,
            None => Self::connect(&self.db_path)?,
        };
        let out = f(&conn).map_err(|e| self.db_err(e));
        let mut pool = unpoisoned(&self.readers);
        if pool.len() < MAX_IDLE_READERS {
            pool.push(conn);
        }
        out
    }

    fn with_writer<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T> {
        let mut conn = unpoisoned(&self.writer);
        f(&mut conn).map_err(|e| self.db_err(e))
    }

    /// [`Self::with_writer`] for deletes: when one fails for lack of space, the reserve is
    /// released and it runs once more; after one succeeds, a released reserve is put back if
    /// there is room.
    fn with_deleter<T>(&self, f: impl Fn(&mut Connection) -> rusqlite::Result<T>) -> Result<T> {
        let out = match self.with_writer(&f) {
            Err(e) if e.is_disk_full() && self.reserve.release() => self.with_writer(&f),
            other => other,
        };
        if out.is_ok() {
            self.reserve.restore();
        }
        out
    }

    /// The index file.
    #[must_use]
    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// Sets the byte limit for stored entries; a write that crosses it evicts down to 90 %.
    pub fn set_size_limit(&self, bytes: u64) {
        self.max_bytes.store(bytes.max(1), Ordering::Relaxed);
    }

    /// Sets the free-space watermark and how to measure free space.
    pub fn set_free_space(&mut self, min_free: u64, probe: Box<dyn FreeSpace>) {
        self.min_free.store(min_free, Ordering::Relaxed);
        self.free_space = probe;
    }

    /// How far stored bytes must shrink to leave the watermark free: 0 when there is room.
    #[must_use]
    pub fn free_space_deficit(&self) -> u64 {
        let min_free = self.min_free.load(Ordering::Relaxed);
        if min_free == 0 {
            return 0;
        }
        self.free_space
            .available(&self.blobs)
            .map_or(0, |free| min_free.saturating_sub(free))
    }

    /// The byte target for eviction: the size limit, lowered by any free-space deficit.
    ///
    /// # Errors
    /// [`Error::Index`] when the stored total cannot be read.
    pub fn eviction_target(&self) -> Result<u64> {
        let limit = self.size_limit();
        let deficit = self.free_space_deficit();
        if deficit == 0 {
            return Ok(limit);
        }
        Ok(limit.min(self.total_bytes()?.saturating_sub(deficit)))
    }

    /// The byte limit.
    #[must_use]
    pub fn size_limit(&self) -> u64 {
        self.max_bytes.load(Ordering::Relaxed)
    }

    /// Entries evicted for size by this process.
    #[must_use]
    pub fn eviction_count(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Whether to measure free space after writing `written` bytes: every
    /// [`FREE_CHECK_EVERY`], or sooner once an eighth of the watermark has been written.
    fn free_check_due(&self, written: u64) -> bool {
        let min_free = self.min_free.load(Ordering::Relaxed);
        if min_free == 0 {
            return false;
        }
        let mut g = self
            .free_checked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.1 = g.1.saturating_add(written);
        let due = g.0.is_none_or(|t| t.elapsed() >= FREE_CHECK_EVERY)
            || g.1 >= (min_free / 8).clamp(1, 64 << 20);
        if due {
            *g = (Some(std::time::Instant::now()), 0);
        }
        due
    }

    /// The blob directory.
    #[must_use]
    pub fn blob_dir(&self) -> &Path {
        &self.blobs
    }

    /// Corrupt or missing blobs found (and removed) since start.
    #[must_use]
    pub fn corrupt_count(&self) -> u64 {
        self.corrupt.load(Ordering::Relaxed)
    }

    fn blob_path(&self, name: &str) -> PathBuf {
        self.blobs.join(name)
    }

    /// [`Self::remove_blob`] for the files of rows a committed delete removed.
    fn remove_blobs(&self, names: &[String]) {
        for name in names {
            self.remove_blob(Some(name));
        }
    }

    /// Deletes a blob whose row is gone. Best effort: a leftover file is an orphan that repair
    /// removes, never a value that could be served.
    fn remove_blob(&self, name: Option<&str>) {
        if let Some(name) = name.filter(|n| valid_blob_name(n)) {
            // Never through a blob or shard directory replaced by a link (the blob itself may
            // be one: removing it removes the link, not its target).
            if nofollow::in_real_dirs(&self.blobs, name) {
                let _ = fs::remove_file(self.blob_path(name));
            }
        }
    }

    /// Reads and verifies the entry for `key`, whatever its expiry; `None` when absent.
    /// A damaged or missing blob is removed, counted, and reported as `None`.
    ///
    /// # Errors
    /// [`Error::Index`] or [`Error::Io`] when the index or a blob cannot be read at all.
    pub fn get(&self, key: &str, now: Timestamp) -> Result<Option<Entry>> {
        // A concurrent overwrite can remove the blob a just-read row named; the row then names
        // a new blob. Only a row that still names a missing file is damaged.
        let mut attempts = 0;
        let mut access_at = 0i64;
        let (bytes, file) = loop {
            attempts += 1;
            let row = self.with_reader(|c| {
                c.prepare_cached(
                    "SELECT file, inline_value, access_at FROM entries WHERE key = ?1",
                )?
                .query_row([key], |r| {
                    Ok((
                        r.get::<_, Option<String>>(0)?,
                        r.get::<_, Option<Vec<u8>>>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })
                .optional()
            })?;
            let row = row.map(|(file, inline, at)| {
                access_at = at;
                (file, inline)
            });
            match row {
                None => return Ok(None),
                Some((None, Some(inline))) => break (inline, None),
                Some((None, None)) => {
                    self.drop_damaged(key, None, "row has neither file nor inline value");
                    return Ok(None);
                }
                Some((Some(name), _)) => {
                    if !valid_blob_name(&name) {
                        self.drop_damaged(key, Some(&name), "index names an invalid blob path");
                        return Ok(None);
                    }
                    match self.blob_dir.read(&self.blobs, &name) {
                        Ok(Some(b)) => break (b, Some(name)),
                        Ok(None) => {
                            let why = "blob path is a symbolic link or not a regular file";
                            self.drop_damaged(key, Some(&name), why);
                            return Ok(None);
                        }
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            if attempts < 4 && self.row_file_changed(key, &name)? {
                                continue;
                            }
                            self.drop_damaged(key, Some(&name), "blob file is missing");
                            return Ok(None);
                        }
                        Err(e) => return Err(Error::io(self.blob_path(&name), e)),
                    }
                }
            }
        };
        match codec::decode_bytes(key, bytes.into()) {
            Ok(entry) => {
                // LRU needs access times to the second, not a write per read.
                let last = Timestamp::from_millis(access_at.max(0) as u64);
                if now.duration_since(last) >= TOUCH_GRANULARITY {
                    self.touch(key, now);
                }
                Ok(Some(entry))
            }
            Err(e) => {
                self.drop_damaged(key, file.as_deref(), &e.to_string());
                Ok(None)
            }
        }
    }

    /// True when the row for `key` no longer names blob `name` (rewritten or removed).
    fn row_file_changed(&self, key: &str, name: &str) -> Result<bool> {
        let current: Option<Option<String>> = self.with_reader(|c| {
            c.prepare_cached("SELECT file FROM entries WHERE key = ?1")?
                .query_row([key], |r| r.get(0))
                .optional()
        })?;
        Ok(current.flatten().as_deref() != Some(name))
    }

    /// Removes a damaged row (only if it still names `file`) and counts it. The process that
    /// removes the row counts it, so a row replaced or removed meanwhile is not counted twice.
    fn drop_damaged(&self, key: &str, file: Option<&str>, why: &str) {
        // The blob goes with the row, after commit.
        let removed = self.delete_where(
            "DELETE FROM entries WHERE key = ?1 AND file IS ?2
             RETURNING file, data_type, stored_size",
            params![key, file],
        );
        if matches!(removed, Ok(d) if d.removed.entries > 0) {
            self.corrupt.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(key, why, "disk tier: damaged entry removed");
        }
    }

    fn touch(&self, key: &str, now: Timestamp) {
        let full = {
            let mut t = self.touches.lock();
            t.insert(key.to_owned(), now.as_millis());
            t.len() >= TOUCH_BATCH
        };
        if full {
            if self.flusher.is_some() {
                self.touches.wake.notify_one();
            } else {
                let _ = self.flush_touches();
            }
        }
    }

    /// Writes pending access times to the index now (they feed LRU eviction).
    ///
    /// # Errors
    /// [`Error::Index`] when the update fails; the pending times are dropped either way.
    pub fn flush_touches(&self) -> Result<()> {
        // Waits for a batch the flusher has taken but not yet committed.
        let _writing = self.touches.writing();
        let pending = std::mem::take(&mut *self.touches.lock());
        if pending.is_empty() {
            return Ok(());
        }
        self.with_writer(|c| write_touches(c, pending))
    }

    /// Stores `entry` under `key`, compressing values above `compress_above` bytes.
    ///
    /// # Errors
    /// [`Error::Io`] when the blob cannot be written (disk full, read-only) and
    /// [`Error::Index`] when the row cannot be committed; nothing changes in either case.
    pub fn put(&self, key: &str, entry: &Entry, compress_above: u64, now: Timestamp) -> Result<()> {
        let envelope = codec::encode(key, entry, compress_above)?;
        let stored_size = envelope.len() as u64;
        let loc = if stored_size <= self.inline_max {
            Location::Inline(envelope)
        } else {
            let name = new_blob_name();
            self.write_blob(&name, &envelope)?;
            Location::File(name)
        };
        let (file, inline) = match &loc {
            Location::Inline(b) => (None, Some(b.as_slice())),
            Location::File(n) => (Some(n.as_str()), None),
        };
        let m = &entry.meta;
        let committed = self.with_writer(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let old: Option<Option<String>> = tx
                .prepare_cached("SELECT file FROM entries WHERE key = ?1")?
                .query_row([key], |r| r.get(0))
                .optional()?;
            // An upsert (not INSERT OR REPLACE) so the totals triggers see an update.
            tx.prepare_cached(
                "INSERT INTO entries (key, data_type, stored_at, expires_at, as_of,
                     access_at, access_count, size, stored_size, codec, checksum, etag,
                     last_modified, file, inline_value)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
                 ON CONFLICT (key) DO UPDATE SET data_type = excluded.data_type,
                     stored_at = excluded.stored_at, expires_at = excluded.expires_at,
                     as_of = excluded.as_of, access_at = excluded.access_at, access_count = 0,
                     size = excluded.size, stored_size = excluded.stored_size,
                     codec = excluded.codec, checksum = excluded.checksum, etag = excluded.etag,
                     last_modified = excluded.last_modified, file = excluded.file,
                     inline_value = excluded.inline_value",
            )?
            .execute(params![
                key,
                &*m.data_type,
                i64_of(m.stored_at.as_millis()),
                i64_of(m.expires_at.as_millis()),
                m.as_of.map(|t| i64_of(t.as_millis())),
                i64_of(now.as_millis()),
                i64_of(entry.size()),
                i64_of(stored_size),
                m.codec.name(),
                m.checksum as i64,
                m.etag,
                m.last_modified,
                file,
                inline,
            ])?;
            let total: i64 = tx
                .prepare_cached("SELECT COALESCE(SUM(bytes), 0) FROM type_totals")?
                .query_row([], |r| r.get(0))?;
            tx.commit()?;
            Ok((old.flatten(), total.max(0) as u64))
        });
        match committed {
            Ok((old, total)) => {
                self.reached(fault::WritePoint::Committed);
                self.remove_blob(old.as_deref().filter(|o| Some(*o) != file));
                let limit = self.max_bytes.load(Ordering::Relaxed);
                // Evict now rather than at the next scheduled cleanup: a nightly run alone
                // would let the disk fill. Failure here does not undo the write.
                let mut target = (total > limit).then_some(limit / 10 * 9);
                if self.free_check_due(stored_size) {
                    let deficit = self.free_space_deficit();
                    if deficit > 0 {
                        let want = total.saturating_sub(deficit);
                        target = Some(target.map_or(want, |t| t.min(want)));
                        tracing::warn!(
                            deficit,
                            "disk tier: below the free-space watermark; evicting"
                        );
                    }
                }
                if let Some(target) = target
                    && let Err(e) = self.evict(target, now, upkeep::Mode::Apply)
                {
                    tracing::warn!(error = %e, "disk tier: eviction after write failed");
                }
                Ok(())
            }
            Err(e) => {
                self.remove_blob(file);
                Err(e)
            }
        }
    }

    fn write_blob(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let tmp_path = self.tmp.join(format!("{}.tmp", &name[3..35]));
        let final_path = self.blob_path(name);
        let fault = |step| {
            self.faults
                .get()
                .map_or(Ok(()), |f| f.check(step, &tmp_path))
        };
        // A link planted in place of tmp/ would take the write outside the cache directory.
        nofollow::check_dir(&self.tmp).map_err(|e| Error::io(&self.tmp, e))?;
        let write = || -> io::Result<()> {
            fault(fault::BlobStep::Create)?;
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp_path)?;
            fault(fault::BlobStep::Write(bytes.len() as u64))?;
            f.write_all(bytes)?;
            self.reached(fault::WritePoint::TempWritten);
            Ok(())
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp_path);
            return Err(Error::io(&tmp_path, e));
        }
        let rename = || -> io::Result<()> {
            nofollow::check_dir(&self.blobs)?;
            if let Some(shard) = final_path.parent() {
                nofollow::check_dir(shard)?;
            }
            match fs::rename(&tmp_path, &final_path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if let Some(parent) = final_path.parent() {
                        fs::create_dir_all(parent)?;
                    }
                    fs::rename(&tmp_path, &final_path)
                }
                other => other,
            }
        };
        rename().map_err(|e| {
            let _ = fs::remove_file(&tmp_path);
            Error::io(&final_path, e)
        })?;
        self.reached(fault::WritePoint::Renamed);
        Ok(())
    }

    /// Tells injected faults that a write reached `point`.
    fn reached(&self, point: fault::WritePoint) {
        if let Some(f) = self.faults.get() {
            f.reached(point);
        }
    }

    /// Removes `key`; true when a row was removed.
    ///
    /// # Errors
    /// [`Error::Index`] when the delete cannot be committed.
    pub fn remove(&self, key: &str) -> Result<bool> {
        self.delete_where(
            "DELETE FROM entries WHERE key = ?1 RETURNING file, data_type, stored_size",
            params![key],
        )
        .map(|d| d.removed.entries > 0)
    }

    /// Runs one `DELETE ... RETURNING file, data_type, stored_size[, key]` in its own
    /// transaction (see [`delete_rows`]) and removes the blobs after commit.
    fn delete_where(&self, sql: &str, params: impl rusqlite::Params + Copy) -> Result<Deleted> {
        let d = self.with_deleter(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let d = delete_rows(&tx, sql, params)?;
            tx.commit()?;
            Ok(d)
        })?;
        self.remove_blobs(&d.files);
        Ok(d)
    }

    /// Removes `key` if its stored copy was written before `stored_at` (another instance wrote
    /// a newer value); true when removed.
    ///
    /// # Errors
    /// [`Error::Index`] when the delete cannot be committed.
    pub fn remove_if_older(&self, key: &str, stored_at: Timestamp) -> Result<bool> {
        self.delete_where(
            "DELETE FROM entries WHERE key = ?1 AND stored_at < ?2
             RETURNING file, data_type, stored_size",
            params![key, i64_of(stored_at.as_millis())],
        )
        .map(|d| d.removed.entries > 0)
    }

    /// Removes `key` only if the stored entry still expires at `expires_at` and that is not
    /// after `now` (so a concurrent newer write survives). True when removed.
    ///
    /// # Errors
    /// [`Error::Index`] when the delete cannot be committed.
    pub fn remove_expired(&self, key: &str, expires_at: Timestamp, now: Timestamp) -> Result<bool> {
        if expires_at > now {
            return Ok(false);
        }
        self.delete_where(
            "DELETE FROM entries WHERE key = ?1 AND expires_at = ?2
             RETURNING file, data_type, stored_size",
            params![key, i64_of(expires_at.as_millis())],
        )
        .map(|d| d.removed.entries > 0)
    }

    /// Removes every key that starts with `prefix` (a literal byte range, so `%`, `_` and `*`
    /// match only themselves); returns the removed keys.
    ///
    /// # Errors
    /// [`Error::Index`] when the delete cannot be committed.
    pub fn remove_prefix(&self, prefix: &str, upper: Option<&str>) -> Result<Vec<String>> {
        // One statement, whatever the number of keys: the range bounds use the key index, and
        // the prefix test keeps the rule exact for anything else an older index might hold.
        let deleted = match upper {
            Some(up) => self.delete_where(
                "DELETE FROM entries
                 WHERE key >= ?1 AND key < ?2 AND substr(key, 1, length(?1)) = ?1
                 RETURNING file, data_type, stored_size, key",
                params![prefix, up],
            ),
            // Everything, whatever type the stored keys have.
            None if prefix.is_empty() => self.delete_where(
                "DELETE FROM entries RETURNING file, data_type, stored_size, key",
                params![],
            ),
            None => self.delete_where(
                "DELETE FROM entries WHERE key >= ?1 AND substr(key, 1, length(?1)) = ?1
                 RETURNING file, data_type, stored_size, key",
                params![prefix],
            ),
        }?;
        Ok(deleted.keys)
    }

    /// Index facts about `key`, without reading its value.
    ///
    /// # Errors
    /// [`Error::Index`] when the query fails.
    pub fn row_info(&self, key: &str) -> Result<Option<RowInfo>> {
        let _ = self.flush_touches();
        self.with_reader(|c| {
            c.prepare_cached(
                "SELECT file, stored_size, access_at, access_count FROM entries WHERE key = ?1",
            )?
            .query_row([key], |r| {
                Ok(RowInfo {
                    file: r.get(0)?,
                    stored_size: r.get::<_, i64>(1)?.max(0) as u64,
                    access_at: Timestamp::from_millis(r.get::<_, i64>(2)?.max(0) as u64),
                    access_count: r.get::<_, i64>(3)?.max(0) as u64,
                })
            })
            .optional()
        })
    }

    /// Per-data-type totals at `now`.
    ///
    /// # Errors
    /// [`Error::Index`] when the query fails.
    pub fn stats(&self, now: Timestamp) -> Result<HashMap<String, DiskTypeStats>> {
        self.with_reader(|c| {
            let mut st = c.prepare_cached(
                "SELECT data_type, COUNT(*), COALESCE(SUM(size),0), COALESCE(SUM(stored_size),0),
                        SUM(expires_at <= ?1), MIN(stored_at)
                 FROM entries GROUP BY data_type",
            )?;
            let rows = st.query_map([i64_of(now.as_millis())], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    DiskTypeStats {
                        entries: r.get::<_, i64>(1)?.max(0) as u64,
                        value_bytes: r.get::<_, i64>(2)?.max(0) as u64,
                        stored_bytes: r.get::<_, i64>(3)?.max(0) as u64,
                        expired: r.get::<_, Option<i64>>(4)?.unwrap_or(0).max(0) as u64,
                        oldest_stored_at: r
                            .get::<_, Option<i64>>(5)?
                            .map(|t| Timestamp::from_millis(t.max(0) as u64)),
                    },
                ))
            })?;
            rows.collect()
        })
    }

    /// Adds deltas to the persisted counters: `(tier, data_type, name, delta)`.
    ///
    /// # Errors
    /// [`Error::Index`] when the update fails.
    pub fn add_counters(&self, deltas: &[(&str, &str, &str, u64)]) -> Result<()> {
        if deltas.is_empty() {
            return Ok(());
        }
        self.with_writer(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT INTO counters (tier, data_type, name, value) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (tier, data_type, name) DO UPDATE SET value = value + excluded.value",
                )?;
                for (tier, ty, name, d) in deltas {
                    st.execute(params![tier, ty, name, i64_of(*d)])?;
                }
            }
            tx.commit()
        })
    }

    /// Every persisted counter: `((tier, data_type, name), value)`.
    ///
    /// # Errors
    /// [`Error::Index`] when the query fails.
    pub fn counters(&self) -> Result<HashMap<(String, String, String), u64>> {
        self.with_reader(|c| {
            let mut st = c.prepare_cached("SELECT tier, data_type, name, value FROM counters")?;
            let rows = st.query_map([], |r| {
                Ok((
                    (r.get(0)?, r.get(1)?, r.get(2)?),
                    r.get::<_, i64>(3)?.max(0) as u64,
                ))
            })?;
            rows.collect()
        })
    }

    /// Number of rows in the index.
    ///
    /// # Errors
    /// [`Error::Index`] when the query fails.
    pub fn len(&self) -> Result<u64> {
        self.with_reader(|c| {
            c.query_row("SELECT COUNT(*) FROM entries", [], |r| r.get::<_, i64>(0))
                .map(|n| n.max(0) as u64)
        })
    }

    /// True when the index holds no rows.
    ///
    /// # Errors
    /// [`Error::Index`] when the query fails.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
}

impl Drop for DiskTier {
    fn drop(&mut self) {
        {
            // Under the lock: the flusher checks the flag under it before it waits.
            let _pending = self.touches.lock();
            self.touches.stop.store(true, Ordering::Release);
        }
        self.touches.wake.notify_one();
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
        let _ = self.flush_touches();
    }
}

/// Access times read but not yet written, by key, shared by the readers and the flusher.
#[derive(Default)]
struct TouchQueue {
    pending: Mutex<HashMap<String, u64>>,
    /// Signalled when a batch is full, and at shutdown.
    wake: std::sync::Condvar,
    /// Held from taking a batch until it is committed, so a flush on demand finds every
    /// earlier read written when it returns.
    writing: Mutex<()>,
    stop: std::sync::atomic::AtomicBool,
}

impl TouchQueue {
    fn writing(&self) -> std::sync::MutexGuard<'_, ()> {
        unpoisoned(&self.writing)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        unpoisoned(&self.pending)
    }

    /// A thread with a connection of its own that writes each full batch, so the reader that
    /// fills a batch does not pay for a write transaction of [`TOUCH_BATCH`] updates (it
    /// halved disk-hit throughput on a 20 000-key pass). What is pending at shutdown is
    /// written before the thread ends.
    fn spawn_flusher(queue: &Arc<Self>, db_path: &Path) -> Option<std::thread::JoinHandle<()>> {
        let queue = Arc::clone(queue);
        let db_path = db_path.to_path_buf();
        std::thread::Builder::new()
            .name("freshcache-touch".into())
            .spawn(move || {
                let mut conn = None;
                loop {
                    {
                        let mut t = queue.lock();
                        while t.len() < TOUCH_BATCH && !queue.stop.load(Ordering::Acquire) {
                            t = queue
                                .wake
                                .wait(t)
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                        }
                    }
                    let _writing = queue.writing();
                    let pending = std::mem::take(&mut *queue.lock());
                    if !pending.is_empty() {
                        if conn.is_none() {
                            conn = DiskTier::connect(&db_path).ok();
                        }
                        match conn.as_mut().map(|c| write_touches(c, pending)) {
                            Some(Ok(())) => {}
                            Some(Err(e)) => {
                                tracing::debug!(error = %e, "disk tier: access times not written");
                            }
                            None => tracing::debug!("disk tier: no connection for access times"),
                        }
                    }
                    if queue.stop.load(Ordering::Acquire) {
                        return;
                    }
                }
            })
            .ok()
    }
}

/// Writes access times in one transaction, in key order (neighbouring keys share index pages).
fn write_touches(c: &mut Connection, pending: HashMap<String, u64>) -> rusqlite::Result<()> {
    let mut pending: Vec<(String, u64)> = pending.into_iter().collect();
    pending.sort_unstable();
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut st = tx.prepare_cached(
            "UPDATE entries SET access_at = max(access_at, ?2),
                 access_count = access_count + 1 WHERE key = ?1",
        )?;
        for (k, t) in &pending {
            st.execute(params![k, i64_of(*t)])?;
        }
    }
    tx.commit()
}

#[cfg(test)]
mod tests;
