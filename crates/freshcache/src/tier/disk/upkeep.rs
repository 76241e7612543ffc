//! Upkeep of the disk tier: expired sweeps, size eviction, repair and verification.
//!
//! Every removal is a conditional delete (the row must still be the one that was judged), made
//! in its own transaction, with blobs removed after commit — so several processes may clean
//! the same directory at once, alongside writers, without losing a live entry.

use std::collections::HashSet;
use std::fs;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::blobs::valid_blob_name;
use super::conn::Pace;
use super::schema::{self, REBUILD_TOTALS};
use super::{Deleted, DiskTier, delete_rows, i64_of};
use crate::clock::Timestamp;
use crate::codec;
use crate::error::Result;

/// Rows the first batch of a sweep removes; later batches are sized to [`BATCH_TIME`].
const BATCH_FIRST: usize = 256;

/// Bounds of a sweep batch, in rows.
const BATCH_MIN: usize = 128;
const BATCH_MAX: usize = 4_096;

/// How long one batch should hold the write lock: a writer waits at most about this long.
const BATCH_TIME: Duration = Duration::from_millis(5);

/// How long a sweep waits between batches, when the WAL has outgrown its limit, for a
/// checkpoint (outside the write lock), so the WAL stays short; writers never wait for it.
const CHECKPOINT_WAIT: Duration = Duration::from_millis(500);

/// Whether upkeep changes anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Remove and repair.
    Apply,
    /// Only count what would be removed.
    DryRun,
}

/// Entries and bytes removed (or that would be).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Removed {
    /// Entries.
    pub entries: u64,
    /// Stored bytes.
    pub bytes: u64,
}

impl Removed {
    pub(super) fn add(&mut self, bytes: u64) {
        self.entries += 1;
        self.bytes += bytes;
    }

    pub(super) fn absorb(&mut self, other: Self) {
        self.entries += other.entries;
        self.bytes += other.bytes;
    }
}

/// What a repair found and fixed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RepairReport {
    /// Rows whose blob file was missing or misnamed (removed).
    pub rows_without_blob: u64,
    /// Blob files no row refers to (removed once older than the grace period).
    pub orphan_blobs: u64,
    /// Bytes of orphan blobs.
    pub orphan_bytes: u64,
    /// Leftover temp files from interrupted writes (removed once older than the grace period).
    pub temp_files: u64,
    /// Whether the per-type totals disagreed with the rows (and were recomputed).
    pub totals_rebuilt: bool,
}

/// What a verification found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// SQLite's `quick_check` verdict (`ok` when sound).
    pub index_integrity: String,
    /// Rows checked.
    pub rows: u64,
    /// Rows whose stored envelope fails verification (first few keys in `corrupt_keys`).
    pub corrupt_entries: u64,
    /// Up to 20 keys of corrupt entries.
    pub corrupt_keys: Vec<String>,
    /// Orphans, missing blobs, temp files, totals drift.
    pub repair: RepairReport,
}

impl VerifyReport {
    /// True when index and blobs agree and every entry verifies.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.index_integrity == "ok"
            && self.corrupt_entries == 0
            && self.repair.rows_without_blob == 0
            && self.repair.orphan_blobs == 0
            && self.repair.temp_files == 0
            && !self.repair.totals_rebuilt
    }
}

fn older_than(path: &std::path::Path, grace: Duration) -> bool {
    if grace.is_zero() {
        return true;
    }
    // The entry's own time, not a link target's.
    fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(crate::clock::file_age)
        .is_some_and(|age| age >= grace)
}

/// The next batch size after one of `batch` rows took `took`: aimed at [`BATCH_TIME`].
fn next_batch(batch: usize, took: Duration) -> usize {
    let next = if took < BATCH_TIME / 2 {
        batch * 2
    } else if took > BATCH_TIME * 2 {
        batch / 2
    } else {
        batch
    };
    next.clamp(BATCH_MIN, BATCH_MAX)
}

/// True when the kept totals (per type, and of the blob files) disagree with the rows.
fn totals_drift(c: &rusqlite::Connection) -> rusqlite::Result<bool> {
    // Rows the entries say should be there and are not, and the reverse: a type left with no
    // entries but bytes (drift, then its last rows deleted) counts too, or its phantom bytes
    // would drive eviction of live entries for ever.
    let drift: i64 = c.query_row(
        "WITH actual AS (SELECT data_type, COUNT(*) AS n, SUM(stored_size) AS b
                         FROM entries GROUP BY data_type),
              kept AS (SELECT data_type, entries AS n, bytes AS b FROM type_totals
                       WHERE entries <> 0 OR bytes <> 0)
         SELECT (SELECT COUNT(*) FROM (SELECT * FROM actual EXCEPT SELECT * FROM kept))
              + (SELECT COUNT(*) FROM (SELECT * FROM kept EXCEPT SELECT * FROM actual))
              -- The blob files' totals too (a build that predates them deletes rows without
              -- taking their files off).
              + (SELECT COUNT(*) FROM (
                     SELECT COUNT(*), COALESCE(SUM(stored_size), 0),
                            COALESCE(SUM((stored_size + 4095) / 4096 * 4096), 0)
                     FROM entries WHERE file IS NOT NULL
                     EXCEPT SELECT files, bytes, allocated FROM blob_totals WHERE id = 0))",
        [],
        |r| r.get(0),
    )?;
    Ok(drift > 0)
}

impl DiskTier {
    /// Stored bytes of every entry, from the per-type totals kept with every write.
    ///
    /// # Errors
    /// [`crate::Error::Index`] when the query fails.
    pub fn total_bytes(&self) -> Result<u64> {
        self.totals().map(|(_, bytes)| bytes)
    }

    /// Entries and stored bytes of the whole tier, from the per-type totals kept with every write (no scan
    /// of the entries table, so cheap enough for every metrics scrape).
    ///
    /// # Errors
    /// [`crate::Error::Index`] when the query fails.
    pub fn totals(&self) -> Result<(u64, u64)> {
        self.with_reader(|c| {
            c.prepare_cached(
                "SELECT COALESCE(SUM(entries), 0), COALESCE(SUM(bytes), 0) FROM type_totals",
            )?
            .query_row([], |r| {
                Ok((
                    r.get::<_, i64>(0)?.max(0) as u64,
                    r.get::<_, i64>(1)?.max(0) as u64,
                ))
            })
        })
    }

    /// Removes rows already expired at `now`, with their blobs, in batches.
    ///
    /// # Errors
    /// [`crate::Error::Index`] when a batch cannot be committed (earlier batches stay done).
    pub fn sweep_expired(&self, now: Timestamp, mode: Mode) -> Result<Removed> {
        let now_ms = i64_of(now.as_millis());
        if mode == Mode::DryRun {
            return self.with_reader(|c| {
                c.query_row(
                    "SELECT COUNT(*), COALESCE(SUM(stored_size), 0) FROM entries
                     WHERE expiry_bucket <= ?2 AND expires_at <= ?1",
                    [now_ms, schema::expiry_bucket(now_ms)],
                    |r| {
                        Ok(Removed {
                            entries: r.get::<_, i64>(0)?.max(0) as u64,
                            bytes: r.get::<_, i64>(1)?.max(0) as u64,
                        })
                    },
                )
            });
        }
        self.sweep_batches(now_ms)
    }

    /// The batches of [`Self::sweep_expired`]: each a short transaction (sized to take about
    /// [`BATCH_TIME`]), the write lock handed back between them (see [`Self::with_batch`]),
    /// and the WAL checkpointed by the checkpoint thread as the sweep goes.
    fn sweep_batches(&self, now_ms: i64) -> Result<Removed> {
        let mut total = Removed::default();
        let mut batch = BATCH_FIRST;
        let mut pace = Pace::new(BATCH_TIME);
        loop {
            // One statement per batch: the rows are judged and deleted in the same step, so a
            // row rewritten with a later expiry by another process is never taken.
            let (Deleted { removed, .. }, took) = self.with_batch(&mut pace, |c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let d = delete_rows(
                    &tx,
                    // Every row of an earlier bucket has expired; of the current one, only
                    // some.
                    "DELETE FROM entries WHERE rowid IN (
                         SELECT rowid FROM entries
                         WHERE expiry_bucket <= ?3 AND expires_at <= ?1
                         ORDER BY expiry_bucket LIMIT ?2)
                     RETURNING file, data_type, stored_size",
                    params![now_ms, batch as i64, schema::expiry_bucket(now_ms)],
                )?;
                tx.commit()?;
                // Still holding the writer lock (see `hostlock`).
                self.remove_blobs(&d.files);
                Ok(d)
            })?;
            total.absorb(removed);
            if removed.entries < batch as u64 {
                return Ok(total);
            }
            self.wal.after_batch(CHECKPOINT_WAIT);
            batch = next_batch(batch, took);
        }
    }

    /// Evicts entries until stored bytes are at most `target`: expired ones first, then the
    /// least recently used. (Callers bounding the footprint take the blocks' slack and the
    /// fixed part off the limit first: see [`Self::eviction_target`].)
    ///
    /// # Errors
    /// [`crate::Error::Index`] when the index cannot be read or a batch committed.
    pub fn evict(&self, target: u64, now: Timestamp, mode: Mode) -> Result<Removed> {
        // Recent reads decide what is least recently used.
        let _ = self.flush_touches();
        let mut total = self.total_bytes()?;
        if total <= target {
            return Ok(Removed::default());
        }
        let expired = self.sweep_expired(now, mode)?;
        total = total.saturating_sub(expired.bytes);
        let mut evicted = Removed::default();
        if mode == Mode::DryRun {
            self.with_reader(|c| {
                let mut st = c.prepare_cached(
                    "SELECT stored_size FROM entries WHERE expires_at > ?1 ORDER BY access_at",
                )?;
                let mut rows = st.query([i64_of(now.as_millis())])?;
                while total > target {
                    let Some(row) = rows.next()? else { break };
                    let size = row.get::<_, i64>(0)?.max(0) as u64;
                    evicted.add(size);
                    total = total.saturating_sub(size);
                }
                Ok(())
            })?;
        } else {
            let mut pace = Pace::new(BATCH_TIME);
            while total > target {
                let (Deleted { removed, .. }, _) = self.with_batch(&mut pace, |c| {
                    let tx =
                        c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                    let rows: Vec<(String, i64)> = tx
                        .prepare_cached(
                            "SELECT key, access_at FROM entries ORDER BY access_at LIMIT ?1",
                        )?
                        .query_map([64i64], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect::<rusqlite::Result<_>>()?;
                    let mut batch = Deleted::default();
                    for (key, at) in rows {
                        if total.saturating_sub(batch.removed.bytes) <= target {
                            break;
                        }
                        batch.absorb(delete_rows(
                            &tx,
                            "DELETE FROM entries WHERE key = ?1 AND access_at = ?2
                             RETURNING file, data_type, stored_size",
                            params![key, at],
                        )?);
                    }
                    tx.commit()?;
                    // Still holding the writer lock (see `hostlock`).
                    self.remove_blobs(&batch.files);
                    Ok(batch)
                })?;
                if removed.entries == 0 {
                    // Nothing left to evict, or others are evicting the same rows.
                    total = self.total_bytes()?;
                    if total > target && self.len()? == 0 {
                        break;
                    }
                    if total > target {
                        continue;
                    }
                    break;
                }
                self.evictions.fetch_add(removed.entries, Ordering::Relaxed);
                evicted.absorb(removed);
                total = total.saturating_sub(removed.bytes);
            }
        }
        evicted.absorb(expired);
        Ok(evicted)
    }

    /// Every file under the blob directory, named as the index names blobs. A link planted in
    /// place of a shard directory is listed itself (as an orphan to remove), never walked.
    fn blob_files(&self) -> Vec<(String, PathBuf)> {
        let mut out = Vec::new();
        if !super::nofollow::is_real_dir(&self.blobs) {
            return out;
        }
        let Ok(shards) = fs::read_dir(&self.blobs) else {
            return out;
        };
        for shard in shards.flatten() {
            if !shard.file_type().is_ok_and(|t| t.is_dir()) {
                out.push((
                    shard.file_name().to_string_lossy().into_owned(),
                    shard.path(),
                ));
                continue;
            }
            let Ok(files) = fs::read_dir(shard.path()) else {
                continue;
            };
            for f in files.flatten() {
                let name = format!(
                    "{}/{}",
                    shard.file_name().to_string_lossy(),
                    f.file_name().to_string_lossy()
                );
                out.push((name, f.path()));
            }
        }
        out
    }

    /// Finds (and with [`Mode::Apply`] fixes) disagreements between rows and files: rows whose
    /// blob is gone, blobs no row refers to, temp files left by interrupted writes, and drift in
    /// the per-type totals. Files younger than `grace` are left alone: they may belong to a
    /// write that has not committed yet.
    ///
    /// # Errors
    /// [`crate::Error::Index`] when the index cannot be read or fixed.
    pub fn repair(&self, grace: Duration, mode: Mode) -> Result<RepairReport> {
        let mut report = RepairReport::default();
        let rows: Vec<(String, String)> = self.with_reader(|c| {
            c.prepare_cached("SELECT key, file FROM entries WHERE file IS NOT NULL")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })?;
        let mut referenced = HashSet::with_capacity(rows.len());
        for (key, file) in rows {
            if valid_blob_name(&file) && super::nofollow::is_real_file(&self.blobs, &file) {
                referenced.insert(file);
                continue;
            }
            report.rows_without_blob += 1;
            if mode == Mode::Apply {
                self.delete_where(
                    "DELETE FROM entries WHERE key = ?1 AND file = ?2
                     RETURNING file, data_type, stored_size",
                    params![key, file],
                )?;
            }
        }
        for (name, path) in self.blob_files() {
            if referenced.contains(&name) || !older_than(&path, grace) {
                continue;
            }
            // Re-check against the index: a writer may have committed since the scan.
            let still_orphan = self
                .with_reader(|c| {
                    c.prepare_cached("SELECT 1 FROM entries WHERE file = ?1")?
                        .query_row([&name], |_| Ok(()))
                        .optional()
                })?
                .is_none();
            if still_orphan {
                report.orphan_blobs += 1;
                report.orphan_bytes += fs::symlink_metadata(&path).map_or(0, |m| m.len());
                if mode == Mode::Apply {
                    let _ = fs::remove_file(&path);
                }
            }
        }
        // Never walked through a link planted in place of tmp/.
        let tmp = super::nofollow::is_real_dir(&self.tmp).then(|| fs::read_dir(&self.tmp));
        if let Some(Ok(tmp)) = tmp {
            for f in tmp.flatten() {
                let path = f.path();
                if older_than(&path, grace) {
                    report.temp_files += 1;
                    if mode == Mode::Apply {
                        let _ = fs::remove_file(&path);
                    }
                }
            }
        }
        // Judged on a reader's snapshot (the totals change in the same transactions as the
        // rows, so any one snapshot agrees with itself when nothing drifted): the scans take no
        // lock a writer needs. Only a rebuild, when there is drift, takes the write lock, and
        // judges again under it.
        report.totals_rebuilt = self.with_reader(totals_drift)?;
        if report.totals_rebuilt && mode == Mode::Apply {
            self.with_writer(|c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                if totals_drift(&tx)? {
                    tx.execute_batch(REBUILD_TOTALS)?;
                }
                tx.commit()
            })?;
        }
        Ok(report)
    }

    /// Checks SQLite integrity, decodes every stored entry (checksums and keys), and looks for
    /// disagreements between rows and files. With [`Mode::Apply`], corrupt entries are removed
    /// and disagreements repaired.
    ///
    /// # Errors
    /// [`crate::Error::Index`] when the index cannot be read.
    pub fn verify(&self, grace: Duration, mode: Mode) -> Result<VerifyReport> {
        let index_integrity: String =
            self.with_reader(|c| c.query_row("PRAGMA quick_check", [], |r| r.get(0)))?;
        let mut report = VerifyReport {
            index_integrity,
            ..VerifyReport::default()
        };
        let keys: Vec<String> = self.with_reader(|c| {
            c.prepare_cached("SELECT key FROM entries")?
                .query_map([], |r| r.get(0))?
                .collect()
        })?;
        for key in keys {
            report.rows += 1;
            let row = self.with_reader(|c| {
                c.prepare_cached("SELECT file, inline_value FROM entries WHERE key = ?1")?
                    .query_row([&key], |r| {
                        Ok((
                            r.get::<_, Option<String>>(0)?,
                            r.get::<_, Option<Vec<u8>>>(1)?,
                        ))
                    })
                    .optional()
            })?;
            let bytes = match row {
                None => continue,
                Some((Some(file), _)) => {
                    if !valid_blob_name(&file) {
                        continue; // counted by repair as a row without blob
                    }
                    match super::nofollow::read_blob(&self.blobs, &file) {
                        Ok(Some(b)) => b,
                        // A link or a missing file: counted (and fixed) by repair.
                        Ok(None) | Err(_) => continue,
                    }
                }
                Some((None, inline)) => inline.unwrap_or_default(),
            };
            if codec::decode_bytes(&key, bytes.into()).is_err() {
                report.corrupt_entries += 1;
                if report.corrupt_keys.len() < 20 {
                    report.corrupt_keys.push(key.clone());
                }
                if mode == Mode::Apply {
                    self.remove(&key)?;
                }
            }
        }
        report.repair = self.repair(grace, mode)?;
        Ok(report)
    }
}
