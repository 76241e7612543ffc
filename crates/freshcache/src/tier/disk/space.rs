//! Space: the size limit that drives eviction, and the free-disk watermark measured through
//! a [`FreeSpace`] probe (a seam: tests simulate a nearly full disk).

#[allow(clippy::wildcard_imports)]
use super::*;

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
pub(super) const FREE_CHECK_EVERY: Duration = Duration::from_millis(500);

impl DiskTier {
    /// Sets the byte limit for everything under the cache directory (values, index, WAL,
    /// reserve, directories); a write that crosses it evicts down to 90 %. The WAL and the
    /// reserve are sized to it.
    pub fn set_size_limit(&self, bytes: u64) {
        let bytes = bytes.max(1);
        self.max_bytes.store(bytes, Ordering::Relaxed);
        self.wal.set_limit(wal::wal_limit_for(bytes));
        let _ = self.with_writer(|c| {
            self.wal.apply_limit(c, 0);
            Ok(())
        });
        self.reserve.resize(reserve::reserve_for(bytes));
        // Measured again at the next write.
        unpoisoned(&self.fixed_part).measured_at = None;
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

    /// The target for eviction, in stored bytes (what [`Self::evict`] counts): the size limit
    /// less the footprint's fixed part (measured now) and the blocks' slack of blob files,
    /// lowered by any free-space deficit.
    ///
    /// # Errors
    /// [`Error::Index`] when the totals cannot be read.
    pub fn eviction_target(&self) -> Result<u64> {
        let (stored, cost) = self.with_reader(stored_and_cost)?;
        let slack = cost.saturating_sub(stored);
        let room = self.size_limit().saturating_sub(self.footprint()?.fixed());
        let target = room.saturating_sub(slack);
        let deficit = self.free_space_deficit();
        if deficit == 0 {
            return Ok(target);
        }
        Ok(target.min(stored.saturating_sub(deficit)))
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

    /// Whether to measure free space after writing `written` bytes at `now` (the writer's clock
    /// reading): every [`FREE_CHECK_EVERY`], or sooner once an eighth of the watermark has been
    /// written. A clock that stepped back counts as due.
    pub(super) fn free_check_due(&self, written: u64, now: Timestamp) -> bool {
        let min_free = self.min_free.load(Ordering::Relaxed);
        if min_free == 0 {
            return false;
        }
        let mut g = self
            .free_checked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.1 = g.1.saturating_add(written);
        let due =
            g.0.is_none_or(|t| now < t || now.duration_since(t) >= FREE_CHECK_EVERY)
                || g.1 >= (min_free / 8).clamp(1, 64 << 20);
        if due {
            *g = (Some(now), 0);
        }
        due
    }
}

/// What the tier takes on disk, in allocated bytes as `du` counts them (whole blocks), taken
/// from file and directory metadata and the index's totals: no walk of the blob files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    /// The index file with its WAL and shared-memory file.
    pub index: u64,
    /// Blob files, in whole blocks.
    pub blobs: u64,
    /// The reserve file.
    pub reserve: u64,
    /// The cache directory, `blobs/`, `tmp/` and the shard directories under `blobs/`.
    pub directories: u64,
    /// Bytes of values stored inline in the index (part of `index`).
    pub inline_values: u64,
    /// Free pages inside the index file, reused by later writes (part of `index`).
    pub index_free: u64,
}

impl Footprint {
    /// Everything under the cache directory.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.index + self.blobs + self.reserve + self.directories
    }

    /// What removing entries does not lower: the footprint less the values (inline and in
    /// blobs) and the index's free pages (space later writes reuse before the file grows).
    #[must_use]
    pub fn fixed(&self) -> u64 {
        self.total()
            .saturating_sub(self.blobs + self.inline_values + self.index_free)
    }
}

/// The footprint's fixed part is measured again at least this often on the write path.
pub(super) const FOOTPRINT_EVERY: Duration = Duration::from_millis(250);

/// When the footprint's fixed part was last measured, its value, and bytes written since.
#[derive(Default)]
pub(super) struct FixedPart {
    measured_at: Option<Timestamp>,
    fixed: u64,
    written: u64,
}

impl DiskTier {
    /// Measures what the tier takes on disk now: metadata of the index files, the reserve and
    /// the directories (a few hundred `stat` calls at most), and the index's blob totals.
    ///
    /// # Errors
    /// [`Error::Index`] when the totals cannot be read.
    pub fn footprint(&self) -> Result<Footprint> {
        let (stored, blob_bytes, blob_alloc, free_pages, page_size) = self.with_reader(|c| {
            let (stored, blob_bytes, blob_alloc) = c
                .prepare_cached(
                    "SELECT (SELECT COALESCE(SUM(bytes), 0) FROM type_totals),
                            COALESCE((SELECT bytes FROM blob_totals WHERE id = 0), 0),
                            COALESCE((SELECT allocated FROM blob_totals WHERE id = 0), 0)",
                )?
                .query_row([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?.max(0) as u64,
                        r.get::<_, i64>(1)?.max(0) as u64,
                        r.get::<_, i64>(2)?.max(0) as u64,
                    ))
                })?;
            let free: i64 = c.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
            let page: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0))?;
            Ok((
                stored,
                blob_bytes,
                blob_alloc,
                free.max(0) as u64,
                page.max(0) as u64,
            ))
        })?;
        let db = self.db_path.as_os_str();
        let with = |suffix: &str| {
            let mut p = db.to_owned();
            p.push(suffix);
            PathBuf::from(p)
        };
        let index = wal::allocated(&self.db_path)
            + wal::allocated(&with("-wal"))
            + wal::allocated(&with("-shm"));
        let mut directories = wal::allocated(&self.blobs) + wal::allocated(&self.tmp);
        if let Some(dir) = self.blobs.parent() {
            directories += wal::allocated(dir);
        }
        if let Ok(shards) = fs::read_dir(&self.blobs) {
            for shard in shards.flatten() {
                if shard.file_type().is_ok_and(|t| t.is_dir()) {
                    directories += wal::allocated(&shard.path());
                }
            }
        }
        Ok(Footprint {
            index,
            blobs: blob_alloc,
            reserve: wal::allocated(self.reserve.path()),
            directories,
            inline_values: stored.saturating_sub(blob_bytes),
            index_free: free_pages.saturating_mul(page_size),
        })
    }

    /// What the values take, as eviction counts them: inline values' bytes and blob files in
    /// whole blocks. Eviction keeps this plus [`Footprint::fixed`] under the size limit.
    ///
    /// # Errors
    /// [`Error::Index`] when the totals cannot be read.
    pub fn value_cost(&self) -> Result<u64> {
        self.with_reader(|c| Ok(stored_and_cost(c)?.1))
    }

    /// The footprint's fixed part, measured again when due: every [`FOOTPRINT_EVERY`] of the
    /// writer's clock, or once a sixty-fourth of the limit has been written since (a clock
    /// that stepped back counts as due). Between measurements it is the last one's.
    pub(super) fn fixed_part(&self, written: u64, now: Timestamp) -> u64 {
        let limit = self.size_limit();
        let previous = {
            let mut g = unpoisoned(&self.fixed_part);
            g.written = g.written.saturating_add(written);
            let due = g
                .measured_at
                .is_none_or(|t| now < t || now.duration_since(t) >= FOOTPRINT_EVERY)
                || g.written >= (limit / 64).max(1);
            if !due {
                return g.fixed;
            }
            g.measured_at = Some(now);
            g.written = 0;
            g.fixed
        };
        match self.footprint() {
            Ok(f) => {
                let fixed = f.fixed();
                unpoisoned(&self.fixed_part).fixed = fixed;
                fixed
            }
            Err(_) => previous,
        }
    }
}

/// Stored bytes of every entry and what the values cost on disk (blob files at their
/// allocated size), on `c` (inside a transaction: the totals it has written); one statement,
/// run in every write's transaction.
pub(super) fn stored_and_cost(c: &Connection) -> rusqlite::Result<(u64, u64)> {
    c.prepare_cached(
        "SELECT t.total, t.total - COALESCE(b.bytes, 0) + COALESCE(b.allocated, 0)
         FROM (SELECT COALESCE(SUM(bytes), 0) AS total FROM type_totals) AS t
         LEFT JOIN blob_totals AS b ON b.id = 0",
    )?
    .query_row([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
    .map(|(t, c)| (t.max(0) as u64, c.max(0) as u64))
}
