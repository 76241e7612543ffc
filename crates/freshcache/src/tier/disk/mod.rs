//! L3: value envelopes as blob files (or inline for small ones), indexed by SQLite.
//!
//! Layout under the cache directory:
//!
//! ```text
//! metadata.db            the index (WAL mode; several processes may share it)
//! blobs/ab/ab12…ef.blob  envelopes named by random 128-bit ids, never by key
//! tmp/                   blobs being written
//! reserve                headroom for deletes on a full filesystem
//! writer.lock            held by a writer until the blobs its commit retired are removed
//! metadata.db-presence   locked by every process that has the index open
//! ```
//!
//! The size limit bounds all of it (see `space::Footprint`): blob files in whole blocks, the index
//! with its WAL, the reserve and the directories.
//!
//! Write order: envelope written to `tmp/` → renamed into `blobs/` → index row committed →
//! the replaced blob removed, before the next writer of any process begins (see `hostlock`).
//! A crash at any point leaves either the old row (and maybe an orphan blob that repair
//! deletes) or the new row with its complete blob. Reads verify the envelope checksum and the
//! key inside it; a bad or missing blob is a miss that removes its row and is counted.

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

mod batch;
mod behind;
mod blobs;
mod changes;
mod conn;
mod delete;
pub mod fault;
mod hostlock;
mod lease;
mod nofollow;
mod presence;
mod reread;
mod reserve;
mod schema;
mod space;
mod touch;
pub mod upkeep;
mod wal;
mod write;

pub(crate) use behind::BehindSignal;
use blobs::{new_blob_name, valid_blob_name};
pub use changes::{ChangeFollower, ChangeOp, Poll};
pub(crate) use conn::i64_of;
use conn::{WriterTurns, is_busy, unpoisoned};
use delete::{Deleted, delete_rows};
pub use reread::{BlobLocation, Reread};
use schema::{SCHEMA, SCHEMA_VERSION, migrate};
pub use space::{FreeSpace, StatvfsFreeSpace};
use touch::{TOUCH_GRANULARITY, TouchQueue};
use write::{Staged, Stored, Totals, Upsert};

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
    /// Latest `stored_at`.
    pub newest_stored_at: Option<Timestamp>,
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

/// The L3 tier.
pub struct DiskTier {
    db_path: PathBuf,
    blobs: PathBuf,
    tmp: PathBuf,
    inline_max: u64,
    writer: Mutex<Connection>,
    /// Turns at `writer`, first come first served (a sweep's next batch waits for writers
    /// that asked during the last one).
    turns: Arc<WriterTurns>,
    /// Taken with a turn: serialises the writers of every process until the blobs their
    /// commits retired are removed (see `hostlock`).
    writer_lock: hostlock::WriterLock,
    /// This process's presence on the index (see `presence`).
    presence: presence::Presence,
    /// Set while the writer holding the turn found nobody else on the index: its changes
    /// are not recorded in the feed.
    alone_now: std::sync::atomic::AtomicBool,
    /// [`crate::forks`] when opened: another count means this is a forked child, where the
    /// connections, their locks and the threads belong to the parent.
    forks: u64,
    readers: Mutex<Vec<Connection>>,
    /// Checkpoints and the WAL's size limit, shared with the checkpoint thread.
    wal: Arc<wal::WalUpkeep>,
    /// Runs the checkpoints off the writers' path; `None` when no thread could be started
    /// (the writer then checkpoints as SQLite does by default).
    checkpointer: Option<std::thread::JoinHandle<()>>,
    /// The footprint's fixed part as last measured (see [`Footprint::fixed`]).
    fixed_part: Mutex<space::FixedPart>,
    touches: Arc<TouchQueue>,
    /// Writes batches of access times off the readers' path; `None` when no thread could be
    /// started (readers then write them themselves).
    flusher: Option<std::thread::JoinHandle<()>>,
    corrupt: AtomicU64,
    /// Values read again from a known blob file, without the index (see [`DiskTier::reread`]).
    rereads: AtomicU64,
    max_bytes: AtomicU64,
    evictions: AtomicU64,
    min_free: AtomicU64,
    free_space: Box<dyn FreeSpace>,
    /// When free space was last measured, and bytes written since.
    free_checked: Mutex<(Option<Timestamp>, u64)>,
    /// Headroom released when a delete fails on a full filesystem.
    reserve: reserve::Reserve,
    /// The blob directory held open for reads beneath it.
    blob_dir: nofollow::BlobDir,
    /// The label sets, deletes and prefix removals are recorded under in the change feed;
    /// unset: not recorded.
    origin: std::sync::OnceLock<String>,
    /// Injected filesystem faults on the blob write path; unset in production.
    faults: std::sync::OnceLock<std::sync::Arc<dyn fault::FsFaults>>,
    /// Writes queued for one commit together (`cache.disk.write_behind`).
    behind: behind::Behind,
}

impl std::fmt::Debug for DiskTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskTier")
            .field("db_path", &self.db_path)
            .field("blobs", &self.blobs)
            .finish_non_exhaustive()
    }
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
        Self::open_with_tables(dir, db_path, inline_max, &[])
    }

    /// [`DiskTier::open`], also creating other features' tables in the index (`CREATE ... IF
    /// NOT EXISTS` statements) in the same transaction as the tier's own schema.
    ///
    /// # Errors
    /// As [`DiskTier::open`].
    pub fn open_with_tables(
        dir: &Path,
        db_path: &Path,
        inline_max: u64,
        tables: &[&str],
    ) -> Result<Self> {
        let (blobs, tmp) = prepare_dirs(dir, db_path)?;
        let writer = Self::connect(db_path)?;
        create_schema(&writer, db_path, tables)?;
        let db = |source| Error::Index {
            path: db_path.to_path_buf(),
            source,
        };
        let reserve = reserve::Reserve::open(dir, &tmp);
        let blob_dir = nofollow::BlobDir::open(&blobs);
        let turns = Arc::new(WriterTurns::default());
        let wal = Arc::new(wal::WalUpkeep::new(db_path, Arc::clone(&turns)));
        let checkpointer = wal::WalUpkeep::spawn(&wal);
        if checkpointer.is_none() {
            writer
                .pragma_update(None, "wal_autocheckpoint", conn::WAL_AUTOCHECKPOINT)
                .map_err(db)?;
        }
        let touches = Arc::new(TouchQueue::default());
        let flusher = TouchQueue::spawn_flusher(&touches, db_path, &wal);
        // Present before anything is read, then past any write under way that found this
        // process absent (see `presence`): never past it without the lock.
        let writer_lock = hostlock::WriterLock::open(dir)?;
        let presence = presence::Presence::register(db_path)?;
        drop(writer_lock.acquire().map_err(db)?);
        Ok(Self {
            db_path: db_path.to_path_buf(),
            blobs,
            tmp,
            inline_max,
            writer: Mutex::new(writer),
            turns,
            writer_lock,
            presence,
            alone_now: std::sync::atomic::AtomicBool::new(false),
            forks: crate::forks(),
            readers: Mutex::new(Vec::new()),
            wal,
            checkpointer,
            fixed_part: Mutex::new(space::FixedPart::default()),
            touches,
            flusher,
            corrupt: AtomicU64::new(0),
            rereads: AtomicU64::new(0),
            max_bytes: AtomicU64::new(u64::MAX),
            evictions: AtomicU64::new(0),
            min_free: AtomicU64::new(0),
            free_space: Box::new(StatvfsFreeSpace),
            free_checked: Mutex::new((None, 0)),
            reserve,
            blob_dir,
            origin: std::sync::OnceLock::new(),
            faults: std::sync::OnceLock::new(),
            behind: behind::Behind::default(),
        })
    }

    /// Routes every blob write through `faults` (a seam for fault tests). Can be set once;
    /// false when faults were already injected.
    pub fn inject_faults(&self, faults: Arc<dyn fault::FsFaults>) -> bool {
        self.faults.set(faults).is_ok()
    }

    /// The index file.
    #[must_use]
    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// Corrupt or missing blobs found (and removed) since start.
    #[must_use]
    pub fn corrupt_count(&self) -> u64 {
        self.corrupt.load(Ordering::Relaxed)
    }

    /// Reads and verifies the entry for `key`, whatever its expiry; `None` when absent.
    /// A damaged or missing blob is removed, counted, and reported as `None`.
    ///
    /// # Errors
    /// [`Error::Index`] or [`Error::Io`] when the index or a blob cannot be read at all.
    pub fn get(&self, key: &str, now: Timestamp) -> Result<Option<Entry>> {
        Ok(self.get_located(key, now)?.map(|(entry, _)| entry))
    }

    /// [`DiskTier::get`], also saying where the value was found: its blob file (`None` for an
    /// inline value or a queued write), for reading it again with [`DiskTier::reread`].
    ///
    /// # Errors
    /// As [`DiskTier::get`].
    pub fn get_located(
        &self,
        key: &str,
        now: Timestamp,
    ) -> Result<Option<(Entry, Option<BlobLocation>)>> {
        self.in_opening_process()?;
        if let Some(queued) = self.queued(key) {
            return Ok(Some((Entry::clone(&queued), None)));
        }
        // A concurrent overwrite can remove the blob a just-read row named; the row then names
        // a new blob. Only a row that still names a missing file is damaged.
        let mut attempts = 0;
        let mut access_at = 0i64;
        let (bytes, file) = loop {
            attempts += 1;
            let row = self.read_now(|c| {
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
                let mut touched = Timestamp::from_millis(access_at.max(0) as u64);
                if now.duration_since(touched) >= TOUCH_GRANULARITY {
                    self.touch(key, now);
                    touched = now;
                }
                let location = file.map(|name| BlobLocation::new(name, touched));
                Ok(Some((entry, location)))
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
                        SUM(expires_at <= ?1), MIN(stored_at), MAX(stored_at)
                 FROM entries GROUP BY data_type",
            )?;
            let at = |t: Option<i64>| t.map(|t| Timestamp::from_millis(t.max(0) as u64));
            let rows = st.query_map([i64_of(now.as_millis())], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    DiskTypeStats {
                        entries: r.get::<_, i64>(1)?.max(0) as u64,
                        value_bytes: r.get::<_, i64>(2)?.max(0) as u64,
                        stored_bytes: r.get::<_, i64>(3)?.max(0) as u64,
                        expired: r.get::<_, Option<i64>>(4)?.unwrap_or(0).max(0) as u64,
                        oldest_stored_at: at(r.get(5)?),
                        newest_stored_at: at(r.get(6)?),
                    },
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

/// Makes the tier's directories (`blobs`, `tmp`, the index's parent); returns `blobs` and
/// `tmp`. The tier's own directories are never links: one planted there is removed (the link,
/// not its target) and the directory made.
fn prepare_dirs(dir: &Path, db_path: &Path) -> Result<(PathBuf, PathBuf)> {
    let blobs = dir.join("blobs");
    let tmp = dir.join("tmp");
    for d in [&blobs, &tmp] {
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
    Ok((blobs, tmp))
}

/// Creates the schema (the tier's, the change feed's, the leases', and `tables`) and migrates
/// an earlier version, in one transaction; refuses an index of another build's newer version.
fn create_schema(writer: &Connection, db_path: &Path, tables: &[&str]) -> Result<()> {
    let db = |source| Error::Index {
        path: db_path.to_path_buf(),
        source,
    };
    // Several processes may race to create the schema; IMMEDIATE serialises them and the busy
    // timeout makes the losers wait instead of failing.
    let mut attempts = 0;
    let version = loop {
        let r = writer
            .execute_batch(&format!(
                "BEGIN IMMEDIATE;{SCHEMA}{}{}{}",
                changes::SCHEMA,
                lease::SCHEMA,
                tables.concat()
            ))
            .and_then(|()| migrate(writer))
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
    Ok(())
}

impl Drop for DiskTier {
    fn drop(&mut self) {
        if let Err(e) = self.flush_behind() {
            tracing::error!(error = %e, "disk tier: queued writes lost at close");
        }
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
        self.wal.stop();
        if let Some(checkpointer) = self.checkpointer.take() {
            let _ = checkpointer.join();
        }
    }
}

#[cfg(test)]
mod tests;
