//! L1: a bounded in-process map with per-entry expiry.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use quick_cache::sync::Cache as QuickCache;
use quick_cache::{DefaultHashBuilder, Lifecycle, Weighter};

use crate::entry::Entry;

/// Bytes charged per entry on top of key and value: metadata, `Arc` and table overhead.
const ENTRY_OVERHEAD: u64 = 160;

#[derive(Clone, Copy, Debug, Default)]
struct ByteWeighter;

impl Weighter<Arc<str>, Arc<Entry>> for ByteWeighter {
    fn weight(&self, key: &Arc<str>, val: &Arc<Entry>) -> u64 {
        key.len() as u64
            + val.size()
            + val.meta.etag.as_ref().map_or(0, |s| s.len() as u64)
            + ENTRY_OVERHEAD
    }
}

/// Counts capacity evictions.
#[derive(Clone, Debug, Default)]
struct EvictionCounter(Arc<AtomicU64>);

impl Lifecycle<Arc<str>, Arc<Entry>> for EvictionCounter {
    type RequestState = ();
    fn on_evict(&self, _state: &mut (), _key: Arc<str>, _val: Arc<Entry>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// The L1 tier.
pub struct MemoryTier {
    map: QuickCache<Arc<str>, Arc<Entry>, ByteWeighter, DefaultHashBuilder, EvictionCounter>,
    evictions: Arc<AtomicU64>,
    max_bytes: u64,
}

impl std::fmt::Debug for MemoryTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTier")
            .field("entries", &self.map.len())
            .field("bytes", &self.map.weight())
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

impl MemoryTier {
    /// A tier holding at most `max_bytes` (keys, values and per-entry overhead).
    #[must_use]
    pub fn new(max_bytes: u64) -> Self {
        let counter = EvictionCounter::default();
        let evictions = counter.0.clone();
        let estimated = usize::try_from(max_bytes / 512)
            .unwrap_or(usize::MAX)
            .max(64);
        let map = QuickCache::with(
            estimated,
            max_bytes,
            ByteWeighter,
            DefaultHashBuilder::default(),
            counter,
        );
        Self {
            map,
            evictions,
            max_bytes,
        }
    }

    /// The entry held for `key`, whatever its expiry: the cache judges it (and drops a copy
    /// it will not serve with [`MemoryTier::remove_entry`]).
    #[inline]
    #[must_use]
    pub fn get(&self, key: &str) -> Option<Arc<Entry>> {
        self.map.get(key)
    }

    /// Stores `entry`; entries larger than the whole budget are not kept.
    pub fn insert(&self, key: Arc<str>, entry: Arc<Entry>) {
        self.map.insert(key, entry);
    }

    /// Removes `key`; true when something was removed.
    pub fn remove(&self, key: &str) -> bool {
        self.map.remove(key).is_some()
    }

    /// Removes `key` only if it still holds `entry` (not a newer copy).
    pub fn remove_entry(&self, key: &str, entry: &Arc<Entry>) -> bool {
        self.map
            .remove_if(key, |cur| Arc::ptr_eq(cur, entry))
            .is_some()
    }

    /// Removes every key starting with `prefix`; returns the removed keys.
    pub fn remove_prefix(&self, prefix: &str) -> Vec<Arc<str>> {
        let victims: Vec<Arc<str>> = self
            .map
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k)
            .collect();
        victims
            .into_iter()
            .filter(|k| self.map.remove(k.as_ref()).is_some())
            .collect()
    }

    /// Removes every entry `pred` picks (an entry replaced meanwhile stays); returns how many.
    pub fn remove_where(&self, pred: impl Fn(&Entry) -> bool) -> usize {
        let victims: Vec<(Arc<str>, Arc<Entry>)> =
            self.map.iter().filter(|(_, e)| pred(e)).collect();
        victims
            .into_iter()
            .filter(|(k, e)| self.remove_entry(k, e))
            .count()
    }

    /// Removes every entry.
    pub fn clear(&self) {
        self.map.clear();
    }

    /// Number of entries held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// Bytes charged against the budget.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.map.weight()
    }

    /// The byte budget.
    #[must_use]
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Entries evicted for capacity since start.
    #[must_use]
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Snapshot of entries per data type name: (entries, value bytes).
    #[must_use]
    pub fn per_type(&self) -> std::collections::HashMap<Arc<str>, (u64, u64)> {
        let mut out: std::collections::HashMap<Arc<str>, (u64, u64)> = Default::default();
        for (_, e) in self.map.iter() {
            let slot = out.entry(e.meta.data_type.clone()).or_default();
            slot.0 += 1;
            slot.1 += e.size();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;
    use crate::entry::{Codec, Meta, checksum};
    use bytes::Bytes;

    fn entry(expires_ms: u64, size: usize) -> Arc<Entry> {
        let value = Bytes::from(vec![1u8; size]);
        Arc::new(Entry {
            meta: Meta {
                data_type: "odds_data".into(),
                stored_at: Timestamp::EPOCH,
                expires_at: Timestamp::from_millis(expires_ms),
                as_of: None,
                codec: Codec::Bytes,
                etag: None,
                last_modified: None,
                checksum: checksum(&value),
            },
            value,
        })
    }

    #[test]
    fn holds_copies_whatever_their_expiry_and_drops_only_the_named_one() {
        let t = MemoryTier::new(1 << 20);
        t.insert("odds:g:1".into(), entry(1000, 8));
        let held = t.get("odds:g:1").expect("held");
        // The tier keeps the copy whatever its expiry; only an explicit removal of that copy
        // drops it, and a newer copy is spared.
        let newer = entry(2000, 8);
        t.insert("odds:g:1".into(), newer.clone());
        assert!(!t.remove_entry("odds:g:1", &held));
        assert!(t.remove_entry("odds:g:1", &newer));
        assert!(t.get("odds:g:1").is_none());
    }

    #[test]
    fn stays_within_its_byte_budget() {
        let budget = 256 * 1024;
        let t = MemoryTier::new(budget);
        for i in 0..2000 {
            t.insert(format!("odds:g{i}:1").into(), entry(u64::MAX, 1024));
        }
        assert!(t.bytes() <= budget, "{} > {budget}", t.bytes());
        assert!(t.len() < 2000 && t.len() > 50);
        assert!(t.evictions() > 0);
    }

    #[test]
    fn prefix_removal_takes_exactly_the_subtree() {
        let t = MemoryTier::new(1 << 20);
        for k in ["news:espn:1", "news:espn:2", "news:espnx:1", "news:bbc:1"] {
            t.insert(k.into(), entry(u64::MAX, 4));
        }
        let mut removed: Vec<String> = t
            .remove_prefix("news:espn:")
            .iter()
            .map(|k| k.to_string())
            .collect();
        removed.sort();
        assert_eq!(removed, ["news:espn:1", "news:espn:2"]);
        assert_eq!(t.len(), 2);
        assert!(t.remove("news:bbc:1"));
        assert!(!t.remove("news:bbc:1"));
        t.clear();
        assert!(t.is_empty());
    }
}
