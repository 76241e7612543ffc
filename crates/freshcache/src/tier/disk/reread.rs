//! Reading a value again from the blob file an earlier read found it in, without the index.
//!
//! A blob file is never written in place and its name (128 random bits) is never reused, and a
//! row's old blob is removed after the row stops naming it, before the write or delete that
//! replaced it returns and before any later write of any process begins (the directory's
//! writer lock, see `hostlock`). So a blob that still opens and verifies (checksum and the key
//! inside the envelope) is the value its row names, or the value a write or delete still under
//! way replaced — one a read overlapping that write may return. Its expiry and lineage the
//! caller judges as for any disk read. A process that dies between the commit and
//! the removal (or a removal that fails) leaves the old blob, so the caller decides how long a
//! location may be used: `Cache` drops it on any change to the key it makes or learns of, and
//! keeps locations only where the change feed tells it of every change (`cache/located.rs`).

#[allow(clippy::wildcard_imports)]
use super::*;

/// Where a disk read found its value: the blob file (see [`DiskTier::get_located`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    /// Relative to the blob directory, as the row named it.
    name: Arc<str>,
    /// The access time the row holds as far as this process knows: a read a second or more
    /// later records a new one (as [`DiskTier::get`] does).
    touched: Timestamp,
}

/// What [`DiskTier::reread`] found.
#[derive(Debug)]
pub enum Reread {
    /// The value, whole and verified; with the location to keep when it changed (an access
    /// time recorded).
    Found(Entry, Option<BlobLocation>),
    /// The blob is gone, damaged, or a newer write of the key is queued: read the key again
    /// with [`DiskTier::get_located`], which also deals with damage.
    Moved,
}

impl DiskTier {
    /// Reads `key`'s value again from the blob file `at`, without the index.
    #[must_use]
    pub fn reread(&self, key: &str, at: &BlobLocation, now: Timestamp) -> Reread {
        if self.in_opening_process().is_err()
            || self.queued(key).is_some()
            || !self.writer_lock.works()
        {
            return Reread::Moved;
        }
        let Ok(Some(bytes)) = self.blob_dir.read(&self.blobs, &at.name) else {
            return Reread::Moved;
        };
        let Ok(entry) = codec::decode_bytes(key, bytes.into()) else {
            return Reread::Moved;
        };
        self.rereads.fetch_add(1, Ordering::Relaxed);
        if now.duration_since(at.touched) < TOUCH_GRANULARITY {
            return Reread::Found(entry, None);
        }
        self.touch(key, now);
        let moved_on = BlobLocation {
            name: Arc::clone(&at.name),
            touched: now,
        };
        Reread::Found(entry, Some(moved_on))
    }

    /// Values read again from a known blob file since start (see [`DiskTier::reread`]).
    #[must_use]
    pub fn reread_count(&self) -> u64 {
        self.rereads.load(Ordering::Relaxed)
    }
}

impl BlobLocation {
    pub(super) fn new(name: String, touched: Timestamp) -> Self {
        Self {
            name: name.into(),
            touched,
        }
    }
}
