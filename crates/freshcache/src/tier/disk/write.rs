//! Single writes: the envelope staged (kept for the row, or written to its blob file), the
//! row upserted with its change-feed row, then the replaced blob removed and the tier settled
//! under its limits. [`batch`](super::batch) shares these steps for many entries at once.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Where a stored envelope lives.
#[derive(Debug)]
pub(super) enum Location {
    Inline(Vec<u8>),
    File(String),
}

/// An envelope ready for its row: kept for the row, or already written to its blob file.
#[derive(Debug)]
pub(super) struct Staged {
    pub(super) location: Location,
    /// Bytes as stored.
    pub(super) size: u64,
}

impl Staged {
    /// The blob file, when the envelope has one.
    pub(super) fn file(&self) -> Option<&str> {
        match &self.location {
            Location::File(n) => Some(n),
            Location::Inline(_) => None,
        }
    }

    pub(super) fn inline(&self) -> Option<&[u8]> {
        match &self.location {
            Location::Inline(b) => Some(b),
            Location::File(_) => None,
        }
    }
}

/// Writes the row of `key` and its totals; returns the blob file of the row it replaced.
pub(super) fn upsert(
    tx: &rusqlite::Transaction<'_>,
    key: &str,
    entry: &Entry,
    staged: &Staged,
    now: Timestamp,
) -> rusqlite::Result<Option<String>> {
    let mut totals = Totals::default();
    let old = Upsert::prepare(tx)?.row(key, entry, staged, now, &mut totals)?;
    totals.apply(tx)?;
    Ok(old)
}

/// The statements of a row write, prepared once for a whole batch.
pub(super) struct Upsert<'t> {
    old_row: rusqlite::CachedStatement<'t>,
    write: rusqlite::CachedStatement<'t>,
    touch: rusqlite::CachedStatement<'t>,
    rebucket: rusqlite::CachedStatement<'t>,
}

impl<'t> Upsert<'t> {
    pub(super) fn prepare(tx: &'t rusqlite::Transaction<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            old_row: tx.prepare_cached(
                "SELECT file, data_type, stored_size, access_at, expiry_bucket
                 FROM entries WHERE key = ?1",
            )?,
            write: tx.prepare_cached(UPSERT)?,
            touch: tx.prepare_cached("UPDATE entries SET access_at = ?2 WHERE key = ?1")?,
            rebucket: tx.prepare_cached("UPDATE entries SET expiry_bucket = ?2 WHERE key = ?1")?,
        })
    }

    /// Writes the row of `key`, counting the change in `totals`; returns the blob file of the
    /// row it replaced.
    pub(super) fn row(
        &mut self,
        key: &str,
        entry: &Entry,
        staged: &Staged,
        now: Timestamp,
        totals: &mut Totals,
    ) -> rusqlite::Result<Option<String>> {
        let old: Option<(Option<String>, String, i64, i64, i64)> = self
            .old_row
            .query_row([key], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .optional()?;
        let m = &entry.meta;
        let expires_at = i64_of(m.expires_at.as_millis());
        let bucket = schema::expiry_bucket(expires_at);
        self.write.execute(params![
            key,
            &*m.data_type,
            i64_of(m.stored_at.as_millis()),
            expires_at,
            m.as_of.map(|t| i64_of(t.as_millis())),
            i64_of(now.as_millis()),
            i64_of(entry.size()),
            i64_of(staged.size),
            m.codec.name(),
            m.checksum as i64,
            m.etag,
            m.last_modified,
            staged.file(),
            staged.inline(),
            bucket,
        ])?;
        // A rewrite keeps the access time a write less than the touch granularity ago
        // recorded, as reads do: the access-time index is then left as it is (one page fewer
        // in the commit; the upsert does not name the column, since naming it rewrites the
        // index entry even when the value is the same).
        if let Some((_, _, _, touched, _)) = &old
            && now.duration_since(Timestamp::from_millis((*touched).max(0) as u64))
                >= TOUCH_GRANULARITY
        {
            self.touch.execute(params![key, i64_of(now.as_millis())])?;
        }
        // Likewise the expiry bucket: the index of buckets is left as it is while a rewrite's
        // expiry stays in the same minute (a new row gets its bucket from the insert).
        if let Some((_, _, _, _, old_bucket)) = &old
            && *old_bucket != bucket
        {
            self.rebucket.execute(params![key, bucket])?;
        }
        let old = old.map(|(file, data_type, size, _, _)| {
            let size = size.max(0) as u64;
            totals.count(&data_type, file.is_some(), size, -1);
            file
        });
        totals.count(&m.data_type, staged.file().is_some(), staged.size, 1);
        Ok(old.flatten())
    }
}

/// Changes to `type_totals` and `blob_totals` made by a transaction's writes, applied once at
/// its end (one statement per data type, one for the blobs).
#[derive(Debug, Default)]
pub(super) struct Totals {
    types: HashMap<String, (i64, i64)>,
    /// Files, stored bytes, allocated bytes.
    blobs: (i64, i64, i64),
}

impl Totals {
    /// Counts a row of `data_type` and `size` stored bytes added (`sign` 1) or removed (-1).
    fn count(&mut self, data_type: &str, has_file: bool, size: u64, sign: i64) {
        let bytes = i64_of(size) * sign;
        let t = match self.types.get_mut(data_type) {
            Some(t) => t,
            None => self.types.entry(data_type.to_owned()).or_default(),
        };
        t.0 += sign;
        t.1 += bytes;
        if has_file {
            self.blobs.0 += sign;
            self.blobs.1 += bytes;
            self.blobs.2 += i64_of(schema::allocated_for(size)) * sign;
        }
    }

    /// Writes the changes counted, inside the writes' transaction.
    pub(super) fn apply(&self, tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
        let mut types = tx.prepare_cached(
            "INSERT INTO type_totals (data_type, entries, bytes) VALUES (?1, ?2, ?3)
             ON CONFLICT (data_type) DO UPDATE SET entries = entries + excluded.entries,
                 bytes = bytes + excluded.bytes",
        )?;
        for (data_type, (entries, bytes)) in &self.types {
            if *entries != 0 || *bytes != 0 {
                types.execute(params![data_type, entries, bytes])?;
            }
        }
        let (files, bytes, allocated) = self.blobs;
        if (files, bytes, allocated) != (0, 0, 0) {
            tx.prepare_cached(
                "UPDATE blob_totals SET files = files + ?1, bytes = bytes + ?2,
                     allocated = allocated + ?3 WHERE id = 0",
            )?
            .execute(params![files, bytes, allocated])?;
        }
        Ok(())
    }
}

/// The row write: an upsert (one statement whether the key is new or not).
pub(super) const UPSERT: &str = "INSERT INTO entries (key, data_type, stored_at, expires_at, as_of,
             access_at, access_count, size, stored_size, codec, checksum, etag,
             last_modified, file, inline_value, expiry_bucket)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
         ON CONFLICT (key) DO UPDATE SET data_type = excluded.data_type,
             stored_at = excluded.stored_at, expires_at = excluded.expires_at,
             as_of = excluded.as_of, access_count = 0,
             size = excluded.size, stored_size = excluded.stored_size,
             codec = excluded.codec, checksum = excluded.checksum, etag = excluded.etag,
             last_modified = excluded.last_modified, file = excluded.file,
             inline_value = excluded.inline_value";

/// What a write transaction left stored, read inside it (the totals it has written).
#[derive(Debug, Clone, Copy)]
pub(super) struct Stored {
    /// Stored bytes of every entry.
    pub(super) total: u64,
    /// What the values cost on disk (blob files at their allocated size).
    pub(super) cost: u64,
}

impl Stored {
    pub(super) fn read(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<Self> {
        let (total, cost) = space::stored_and_cost(tx)?;
        Ok(Self { total, cost })
    }
}

impl DiskTier {
    /// Stores `entry` under `key`, compressing values above `compress_above` bytes.
    ///
    /// Write order: the envelope is written (to a blob file, or kept for the row), then the row
    /// is committed (with its change-feed row), then the replaced blob is removed (before the
    /// directory's writer lock is released), then the tier evicts if the write took it over a
    /// limit.
    ///
    /// # Errors
    /// [`Error::Io`] when the blob cannot be written (disk full, read-only) and
    /// [`Error::Index`] when the row cannot be committed; nothing changes in either case.
    pub fn put(&self, key: &str, entry: &Entry, compress_above: u64, now: Timestamp) -> Result<()> {
        self.put_with(key, entry, compress_above, now, |_| Ok(()))
    }

    /// [`DiskTier::put`], also running `also` in the same transaction (other features' rows
    /// that must be committed with the entry, or not at all).
    ///
    /// # Errors
    /// As [`DiskTier::put`].
    pub(crate) fn put_with(
        &self,
        key: &str,
        entry: &Entry,
        compress_above: u64,
        now: Timestamp,
        also: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<()>,
    ) -> Result<()> {
        let staged = self.stage(key, entry, compress_above)?;
        let committed = self.with_writer(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let old = upsert(&tx, key, entry, &staged, now)?;
            also(&tx)?;
            if let Some(origin) = self.change_origin() {
                changes::record(&tx, origin, ChangeOp::Set, key)?;
            }
            let stored = Stored::read(&tx)?;
            tx.commit()?;
            // Still holding the writer lock (see `hostlock`).
            self.reached(fault::WritePoint::Committed);
            self.remove_blob(old.as_deref().filter(|o| Some(*o) != staged.file()));
            Ok(stored)
        });
        self.note_inline(std::slice::from_ref(&staged));
        match committed {
            Ok(stored) => {
                self.settle(stored, staged.size, now);
                Ok(())
            }
            Err(e) => {
                self.remove_blob(staged.file());
                Err(e)
            }
        }
    }

    /// Encodes `entry` and writes its blob file when it is too large to live in the row.
    pub(super) fn stage(&self, key: &str, entry: &Entry, compress_above: u64) -> Result<Staged> {
        let envelope = codec::encode(key, entry, compress_above)?;
        let size = envelope.len() as u64;
        let location = if size <= self.inline_max {
            Location::Inline(envelope)
        } else {
            let name = new_blob_name();
            self.write_blob(&name, &envelope)?;
            Location::File(name)
        };
        Ok(Staged { location, size })
    }

    /// Counts the pages inline values put through the WAL (the checkpoint thread's measure).
    pub(super) fn note_inline(&self, staged: &[Staged]) {
        let inline: u64 = staged
            .iter()
            .filter(|s| s.file().is_none())
            .map(|s| s.size)
            .sum();
        if inline > 0 {
            self.wal.note_pages(inline / 4096);
        }
    }

    /// After a committed write of `written` bytes that left `stored`: evicts now rather than
    /// at the next scheduled cleanup when a limit is passed (a nightly run alone would let the
    /// disk fill). A failure here does not undo the write.
    ///
    /// The limit bounds the whole footprint: the values, and what removing entries does not
    /// lower (index, WAL, reserve, directories). Eviction goes down to 90 % of the room the
    /// values have, so the next writes do not evict; it counts stored bytes, so the blocks'
    /// slack comes off the target.
    pub(super) fn settle(&self, stored: Stored, written: u64, now: Timestamp) {
        let Stored { total, cost } = stored;
        let limit = self.max_bytes.load(Ordering::Relaxed);
        let fixed = self.fixed_part(written, now);
        let slack = cost.saturating_sub(total);
        let mut target = (cost.saturating_add(fixed) > limit)
            .then(|| (limit.saturating_sub(fixed) / 10 * 9).saturating_sub(slack));
        if self.free_check_due(written, now) {
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
    }
}
