//! Disk hits without the index: where a disk read found a value (its blob file) is kept, and
//! the next read of the key takes the value straight from that file while the key's stripe
//! has seen no write, delete or invalidation made here or learnt of (the stripe epoch, as for a
//! promotion to memory). A change made by another process removes the old blob before it
//! returns and before any later write begins, so the file is gone and the read goes to the
//! index (see `DiskTier::reread`). This
//! matters for values the memory tier cannot hold: a row read costs as much as the file read.
//!
//! Only where a follower reads the index's change feed (no Redis, the directory shared on this
//! host) or nobody else writes the directory (exclusive): a writer that dies between committing
//! its row and removing the old blob leaves that blob behind, and only the feed still tells the
//! other processes — within the follower's period, as for their memory copies. With Redis, a
//! writer that dies before its announcement tells no one, so a location could be used until the
//! value's TTL: disk reads there always go through the index. Not while the follower cannot
//! follow either (memory copies are bypassed then too).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use quick_cache::sync::Cache as QuickCache;

use super::Cache;
use super::read::Read;
use crate::clock::Timestamp;
use crate::entry::Entry;
use crate::tier::disk::{BlobLocation, Reread};

/// Locations kept at most (about 100 bytes each).
const KEPT: usize = 8192;

/// Where recent disk reads found their values, each with the stripe epoch it was read under.
pub(super) struct Locations {
    map: QuickCache<Arc<str>, (u64, BlobLocation)>,
}

impl Default for Locations {
    fn default() -> Self {
        Self {
            map: QuickCache::new(KEPT),
        }
    }
}

impl Locations {
    /// Drops what is kept for `key`.
    pub(super) fn forget(&self, key: &str) {
        self.map.remove(key);
    }
}

impl Cache {
    /// `read.key`'s value read again from the blob file an earlier read found it in, when no
    /// change to its stripe came since; with the location to keep if it changed. `None`: read
    /// the index.
    pub(super) fn reread_disk(
        &self,
        read: &Read<'_>,
        now: Timestamp,
    ) -> Option<(Entry, Option<BlobLocation>)> {
        if !self.locations_usable() {
            return None;
        }
        let locations = &self.inner.locations;
        let k = read.key.as_str();
        let (epoch, at) = locations.map.get(k)?;
        if epoch == read.epoch {
            match self.inner.disk.reread(k, &at, now) {
                Reread::Found(entry, moved_on) => return Some((entry, moved_on)),
                Reread::Moved => {}
            }
        }
        locations.forget(k);
        None
    }

    /// Keeps where `read` found its value; called under the stripe lock, only when no change to
    /// the stripe came since the read began.
    pub(super) fn keep_location(&self, read: &Read<'_>, at: BlobLocation) {
        self.inner
            .locations
            .map
            .insert(read.key.as_arc().clone(), (read.epoch, at));
    }

    /// Whether kept locations may be used (see the module's documentation); a read keeps
    /// none when they may not.
    pub(super) fn locations_usable(&self) -> bool {
        self.inner.redis.is_none() && self.inner.l1_trusted.load(Ordering::Acquire)
    }
}
