//! Batches: many writes validated first and stored in one disk transaction (all or nothing),
//! and many reads answered together.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Cache, Lookup, Value};
use crate::entry::Entry;
use crate::error::{Error, RefusedItem, Result, clip};
use crate::key::Key;

impl Cache {
    /// Stores every `(key, value)` of `items`: each is validated first (key, size, TTL policy,
    /// expiry), and if any is refused nothing is written and [`Error::InvalidBatch`] names every
    /// refused item; otherwise the whole batch is written to disk in one transaction, then to
    /// memory and Redis. A key given twice keeps its last value. Returns the stored entries in
    /// batch order.
    ///
    /// # Errors
    /// [`Error::InvalidBatch`]; [`Error::Io`] / [`Error::Index`] when the disk write fails, in
    /// which case nothing of the batch is stored.
    pub async fn set_many(
        &self,
        items: impl IntoIterator<Item = (Key, Value)>,
    ) -> Result<Vec<Arc<Entry>>> {
        let now = self.inner.clock.now();
        let items: Vec<(Key, Value)> = items.into_iter().collect();
        let total = items.len();
        let mut prepared = Vec::with_capacity(total);
        let mut refused = Vec::new();
        for (index, (key, value)) in items.into_iter().enumerate() {
            let prepared_item = match self.resolve_lineage(&key, &value, now).await {
                Ok(resolved) => self.prepare(&key, value, now, resolved),
                Err(e) => Err(e),
            };
            match prepared_item {
                Ok((entry, ty)) => prepared.push((key, entry, ty)),
                Err(error) => refused.push(RefusedItem {
                    index,
                    key: clip(key.as_str()),
                    error,
                }),
            }
        }
        if !refused.is_empty() {
            return Err(Error::InvalidBatch { refused, total });
        }
        // Every stripe the batch touches, locked in one order (no deadlock with another batch).
        let mut stripes: Vec<usize> = prepared
            .iter()
            .map(|(k, _, _)| self.stripe_index(k.as_str()))
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for &i in &stripes {
            guards.push(self.inner.stripes[i].lock.lock().await);
        }
        // The last value of a key given twice is what the tiers keep (disk rows are written in
        // batch order, so the later one wins there too).
        let rows: Vec<(&str, &Entry, u64)> = prepared
            .iter()
            .filter(|(_, _, ty)| ty.placement.in_disk())
            .map(|(k, e, ty)| (k.as_str(), &**e, ty.compress_above))
            .collect();
        if !rows.is_empty() {
            // Derived entries' edges to their inputs (for `inspect`'s dependents) go with them.
            self.inner.disk.put_many_with(&rows, now, |tx| {
                for (key, entry, _) in &rows {
                    super::lineage::record_edges(tx, key, &entry.meta)?;
                }
                Ok(())
            })?;
        }
        let mut redis_fixed = Vec::with_capacity(prepared.len());
        for (key, entry, ty) in &prepared {
            self.hold_in_memory(key, ty, entry);
        }
        // Kept memory hits of these keys stop standing now, not after the Redis copies.
        self.note_change();
        for (key, entry, ty) in &prepared {
            redis_fixed.push(self.copy_to_redis(key, ty, entry, now).await);
        }
        for &i in &stripes {
            self.inner.stripes[i].epoch.fetch_add(1, Ordering::AcqRel);
        }
        self.note_change();
        drop(guards);
        for ((key, _, ty), fixed) in prepared.iter().zip(redis_fixed) {
            self.announce('s', now, key.as_str(), fixed).await;
            self.inner
                .stats
                .of_type(ty.id)
                .sets
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(prepared.into_iter().map(|(_, e, _)| e).collect())
    }

    /// Looks every key of `keys` up, in order; a key that cannot be looked up (a key of no
    /// data type) stops the batch.
    ///
    /// # Errors
    /// As [`Cache::get`], for the first key that fails.
    pub async fn get_many(&self, keys: &[Key]) -> Result<Vec<Lookup>> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(self.get(key).await?);
        }
        Ok(out)
    }
}
