//! The memory hits `get` handed out lately, by key: a pipeline reads the same signals over and
//! over, and a hit that still stands (see [`MemoryRecall`]) is handed out again for one dict
//! probe, two atomic loads and a clock read, instead of a lookup and a new `Hit`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use freshcache::MemoryRecall;

use crate::hit::Hit;

/// The most hits kept; the map starts over when full.
const MAX_HITS: usize = 4096;
/// Bytes charged per kept hit on top of its value.
const PER_HIT: u64 = 256;
/// The most value bytes kept alive by kept hits (their entries may have left the memory tier).
const MAX_BYTES: u64 = 32 * 1024 * 1024;
/// Openings of the cache whose hits are kept: the first, then one after each fork (past the
/// last, lookups answer every `get`).
const OPENINGS: usize = 16;

/// Kept memory hits by their key's `str` (exact `str` only: a subclass may redefine equality).
pub(crate) struct RecentHits {
    map: Py<PyDict>,
    /// The check of each opening of the cache (the current one at `opening`): a cache closed
    /// for a fork and opened again has new counters.
    recalls: [OnceLock<MemoryRecall>; OPENINGS],
    opening: AtomicUsize,
    /// Bytes kept since the map last started over (an overestimate: replaced hits still count).
    bytes: AtomicU64,
    max_bytes: u64,
    /// Set while the cache is closed for a fork (and for good when it was opened again more
    /// than [`OPENINGS`] times): no hit is kept or served again.
    retired: AtomicBool,
}

impl RecentHits {
    /// Keeps at most an eighth of the memory tier's budget alive, and never more than 32 MiB.
    pub(crate) fn new(py: Python<'_>, recall: MemoryRecall, memory_budget: u64) -> Self {
        let recalls: [OnceLock<MemoryRecall>; OPENINGS] = Default::default();
        let _ = recalls[0].set(recall);
        Self {
            map: PyDict::new(py).unbind(),
            recalls,
            opening: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
            max_bytes: (memory_budget / 8).min(MAX_BYTES),
            retired: AtomicBool::new(false),
        }
    }

    /// The hit kept for `key` if serving it now is what a memory lookup would answer. Counted
    /// as a memory hit: in the kept hit until it is replaced, then in the library's counters.
    #[inline]
    pub(crate) fn find<'py>(&self, key: &Bound<'py, PyString>) -> Option<Bound<'py, Hit>> {
        if !key.is_exact_instance_of::<PyString>() {
            return None;
        }
        let recall = self.recall()?;
        let py = key.py();
        let map = self.map.bind(py);
        let found = map.get_item(key).ok()??;
        let hit = found.cast_into::<Hit>().ok()?;
        let h = hit.get();
        let stamp = h.stamp?;
        let seen = h.seen();
        let Some(now) = recall.recall_reading(seen, h.hit.deadline, stamp) else {
            self.settle(h, 0);
            let _ = map.del_item(key);
            return None;
        };
        // A later millisecond: the same entry, at the new reading (a Hit's age and remaining
        // time are those of the lookup that returned it). Held by the map and this lookup
        // only, the kept hit itself moves to it: nobody can see its age change. (A count read
        // too high only costs the new Hit below; CPython with the GIL never reads it low.)
        #[allow(deprecated)]
        let unshared = hit.get_refcnt() <= 2;
        if now == seen || unshared {
            if now != seen {
                h.move_to(now);
            }
            // Only ever changed with the GIL held: a load and a store, not a locked add.
            h.served
                .store(h.served.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            return Some(hit);
        }
        // Held elsewhere too: a new Hit.
        self.settle(h, 1);
        let later = freshcache::Hit {
            now,
            ..h.hit.clone()
        };
        let renewed = Bound::new(py, h.renewed(py, later)).ok()?;
        // Replaces the kept hit: no bytes added.
        let _ = map.set_item(key, &renewed);
        Some(renewed)
    }

    /// The check of the current opening; `None` while retired.
    #[inline]
    fn recall(&self) -> Option<&MemoryRecall> {
        if self.retired.load(Ordering::SeqCst) {
            return None;
        }
        self.current()
    }

    /// The check of the current opening, retired or not.
    #[inline]
    fn current(&self) -> Option<&MemoryRecall> {
        self.recalls[self.opening.load(Ordering::SeqCst)].get()
    }

    /// Hands `hit`'s uncounted hits (and `extra` more) to the library's counters (every kept
    /// hit is of the current opening: the others went at [`RecentHits::retire`]).
    fn settle(&self, hit: &Hit, extra: u64) {
        if let (Some(stamp), Some(recall)) = (hit.stamp, self.current()) {
            let n = hit.served.swap(0, Ordering::Relaxed) + extra;
            recall.count_hits(stamp, n);
        }
    }

    /// Hands every kept hit's uncounted hits to the library's counters (before statistics
    /// are read, and before the cache closes).
    pub(crate) fn settle_all(&self, py: Python<'_>) {
        for (_, v) in self.map.bind(py).iter() {
            if let Ok(hit) = v.cast::<Hit>() {
                self.settle(hit.get(), 0);
            }
        }
    }

    /// Keeps `hit` (a fresh memory hit with its stamp) for `key`.
    pub(crate) fn keep(&self, key: &Bound<'_, PyString>, hit: &Bound<'_, Hit>) {
        if !key.is_exact_instance_of::<PyString>()
            || hit.get().stamp.is_none()
            || self.retired.load(Ordering::Relaxed)
        {
            return;
        }
        let size = hit.get().hit.value().len() as u64 + PER_HIT;
        if size > self.max_bytes {
            return;
        }
        let py = key.py();
        let map = self.map.bind(py);
        if map.len() >= MAX_HITS
            || self.bytes.fetch_add(size, Ordering::Relaxed) + size > self.max_bytes
        {
            self.settle_all(py);
            map.clear();
            self.bytes.store(size, Ordering::Relaxed);
        } else if let Ok(Some(old)) = map.get_item(key)
            && let Ok(old) = old.cast::<Hit>()
        {
            self.settle(old.get(), 0);
        }
        // Setting an item on a dict of exact `str` keys fails only on memory exhaustion;
        // a hit not kept is only a lookup more next time.
        let _ = map.set_item(key, hit);
    }

    /// Counts and forgets every kept hit, and keeps none until [`RecentHits::reopened`] (the
    /// cache is closing for a fork, to be opened again).
    pub(crate) fn retire(&self, py: Python<'_>) {
        self.clear(py);
        self.retired.store(true, Ordering::SeqCst);
    }

    /// Keeps hits again, checked against the counters of the cache opened again (with the GIL
    /// held, after [`RecentHits::retire`]). Past [`OPENINGS`] openings, stays retired.
    pub(crate) fn reopened(&self, recall: MemoryRecall) {
        let next = self.opening.load(Ordering::SeqCst) + 1;
        if next < OPENINGS && self.recalls[next].set(recall).is_ok() {
            self.opening.store(next, Ordering::SeqCst);
            self.retired.store(false, Ordering::SeqCst);
        }
    }

    /// Counts and forgets every kept hit (the cache is closing).
    pub(crate) fn clear(&self, py: Python<'_>) {
        self.settle_all(py);
        self.map.bind(py).clear();
        self.bytes.store(0, Ordering::Relaxed);
    }
}
