//! Disk hits without the index: where a disk read found a value (its blob file) is kept, and
//! the next read of the key takes the value straight from that file while the key's stripe
//! has seen no write, delete or invalidation made here or learnt of (the stripe epoch, as for a
//! promotion to memory). A change made by another process removes the old blob before it
//! returns, so the file is gone and the read goes to the index (see `DiskTier::reread`). This
//! matters for values the memory tier cannot hold: a row read costs as much as the file read.

use std::sync::Arc;

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
}
