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
