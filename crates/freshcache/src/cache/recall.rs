//! Serving a memory hit again without a lookup: for a binding that keeps the hits it handed
//! out (the Python package keeps one per key) and must tell, in a few nanoseconds, whether
//! one still stands.
//!
//! A memory hit read at change count `c` and clock reading `t` (milliseconds) is exactly what
//! a memory lookup would answer while the count is still `c`, the memory tier is trusted and
//! the clock still reads `t`; at a later reading before the hit's deadline, the lookup would
//! answer the same entry with the same deadline. Every write, delete, invalidation and change
//! learnt from another process or instance moves the count after it changes the memory tier,
//! and a memory tier that stops being trusted moves it too. A deadline (the entry's own, its
//! type's TTL, its inputs') only changes through such a change. A copy evicted for room
//! meanwhile is still the current value: serving it again is what the lower tier would
//! answer, except that the hit says `memory`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::{Cache, CacheClock, Hit};
use crate::clock::Timestamp;
use crate::error::Result;
use crate::key::Key;
use crate::stats::Stats;
use crate::tier::TierKind;

/// A memory hit with what it was read under (see the module docs).
#[derive(Clone, Debug)]
pub struct Recallable {
    /// The hit, as [`Cache::get_from_memory`] returned it.
    pub hit: Hit,
    /// What it was read under.
    pub stamp: RecallStamp,
}

/// The change count a memory hit was read under, and its data type (whose counter a hit
/// served again is counted in).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecallStamp {
    changes: u64,
    type_id: usize,
}

/// Checks kept memory hits and counts the ones served again. Holds no handle on the cache: it
/// does not keep the index open, and once the cache is dropped its checks simply keep failing
/// or passing on counters nobody moves (a binding stops asking when it closes the cache).
#[derive(Clone)]
pub struct MemoryRecall {
    clock: CacheClock,
    changes: Arc<AtomicU64>,
    trusted: Arc<AtomicBool>,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for MemoryRecall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRecall")
            .field("changes", &self.changes.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// What [`MemoryRecall::recall`] found of a kept hit.
#[derive(Debug)]
pub enum Recalled {
    /// The kept hit itself is the answer: same change count, same clock reading.
    Same,
    /// The same entry is the answer, read later: this hit (the kept one at the new reading).
    Later(Hit),
    /// It no longer stands: look the key up.
    Gone,
}

impl MemoryRecall {
    /// Whether serving `hit` (read under `stamp`) now is what a memory lookup of its key would
    /// answer. Counts nothing: every hit served again, as it is or at a later reading, must
    /// be counted with [`MemoryRecall::count_hits`] (the caller may add them up first, and
    /// must hand them over before it reports statistics or closes).
    #[inline]
    #[must_use]
    pub fn recall(&self, hit: &Hit, stamp: RecallStamp) -> Recalled {
        match self.recall_reading(hit.now, hit.deadline, stamp) {
            Some(now) if now == hit.now => Recalled::Same,
            Some(now) => Recalled::Later(Hit { now, ..hit.clone() }),
            None => Recalled::Gone,
        }
    }

    /// [`MemoryRecall::recall`] for a hit last served at the reading `seen` with `deadline`:
    /// the reading to serve it at now (`seen` itself when the clock still reads it), or
    /// `None` when it no longer stands. For a binding that moves a kept hit nobody else
    /// holds to the new reading rather than making a new one.
    #[inline]
    #[must_use]
    pub fn recall_reading(
        &self,
        seen: Timestamp,
        deadline: Timestamp,
        stamp: RecallStamp,
    ) -> Option<Timestamp> {
        if self.changes.load(Ordering::Acquire) != stamp.changes
            || !self.trusted.load(Ordering::Acquire)
        {
            return None;
        }
        let now = self.clock.now();
        // Later: nothing changed and the deadline (its own, its type's TTL, its inputs') is
        // still ahead, so a lookup would find this entry fresh, with the same deadline. An
        // expired hit, or a clock that went back, is judged afresh by a lookup.
        (now == seen || (now > seen && now < deadline)).then_some(now)
    }

    /// Counts `n` memory hits served again of the type `stamp` was read for, as lookups
    /// would have counted them.
    #[inline]
    pub fn count_hits(&self, stamp: RecallStamp, n: u64) {
        if n > 0 {
            self.stats
                .tier(TierKind::Memory, stamp.type_id)
                .hits
                .fetch_add(n, Ordering::Relaxed);
        }
    }
}

impl Cache {
    /// The handle that checks hits from [`Cache::get_from_memory_recallable`].
    #[must_use]
    pub fn memory_recall(&self) -> MemoryRecall {
        let inner = &*self.inner;
        MemoryRecall {
            clock: inner.clock.clone(),
            changes: Arc::clone(&inner.changes),
            trusted: Arc::clone(&inner.l1_trusted),
            stats: Arc::clone(&inner.stats),
        }
    }

    /// [`Cache::get_from_memory`], with what [`MemoryRecall::recall`] needs to tell later
    /// whether the hit still stands.
    ///
    /// # Errors
    /// As [`Cache::get_from_memory`].
    pub fn get_from_memory_recallable(&self, key: &Key) -> Result<Option<Recallable>> {
        // Read before the lookup: a change made during it moves the count past this reading.
        let changes = self.inner.changes.load(Ordering::Acquire);
        let ty = self.inner.config.data_types.resolve(key)?;
        let now = self.inner.clock.now();
        Ok(self.memory_hit_of(ty, key, now).map(|hit| Recallable {
            hit,
            stamp: RecallStamp {
                changes,
                type_id: ty.id,
            },
        }))
    }
}
