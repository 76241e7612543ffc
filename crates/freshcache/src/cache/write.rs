//! Writes: set, delete, prefix invalidation and the emergency flush, in one order across
//! tiers (disk, memory, Redis) under the key's stripe lock, then the announcement.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::{Serialize, de::DeserializeOwned};

use super::lineage::Resolved;
use super::{Cache, Lookup, Value};
use crate::clock::Timestamp;
use crate::codec;
use crate::datatype::DataTypeSpec;
use crate::entry::{Entry, Meta, checksum};
use crate::error::{Error, Result, clip};
use crate::key::{Key, KeyPrefix};

impl Cache {
    /// Stores `value` under `key` in every tier its type is placed in.
    ///
    /// Expiry is stamped once: `as_of` (or now) plus the type's TTL, or the per-call TTL the
    /// type's policy allows. Returns the stored entry.
    ///
    /// # Errors
    /// [`Error::TooLarge`], [`Error::TtlNotAllowed`], [`Error::AlreadyExpired`], key errors —
    /// nothing is written; [`Error::Io`] / [`Error::Index`] when the disk write fails, in which
    /// case the previous value (if any) is left as it was.
    pub async fn set(&self, key: &Key, value: impl Into<Value>) -> Result<Arc<Entry>> {
        let now = self.inner.clock.now();
        self.store(key, value.into(), now).await
    }

    pub(crate) async fn store(
        &self,
        key: &Key,
        value: Value,
        now: Timestamp,
    ) -> Result<Arc<Entry>> {
        let resolved = self.resolve_lineage(key, &value, now).await?;
        let (entry, ty) = self.prepare(key, value, now, resolved)?;
        // Write order: disk (durable) → memory → Redis, all under the key's stripe lock so the
        // tiers end in the same order as the writes; then the announcement.
        let stripe = self.stripe(key.as_str());
        let redis_fixed = {
            let _g = Self::lock(stripe).await;
            if ty.placement.in_disk() {
                let disk = &self.inner.disk;
                if entry.meta.lineage.is_none() {
                    // Committed now, or queued with write-behind.
                    disk.put_behind(key.as_str(), &entry, ty.compress_above, now)?;
                } else {
                    // A derived entry's edges to its inputs (for `inspect`'s dependents) are
                    // committed with it, at once.
                    disk.put_with(key.as_str(), &entry, ty.compress_above, now, |tx| {
                        super::lineage::record_edges(tx, key.as_str(), &entry.meta)
                    })?;
                }
            }
            self.hold_in_memory(key, ty, &entry);
            stripe.epoch.fetch_add(1, Ordering::AcqRel);
            self.note_change();
            self.copy_to_redis(key, ty, &entry, now).await
        };
        self.announce('s', now, key.as_str(), redis_fixed).await;
        self.inner
            .stats
            .of_type(ty.id)
            .sets
            .fetch_add(1, Ordering::Relaxed);
        Ok(entry)
    }

    /// Validates a write of `value` under `key` at `now` and stamps its entry: the type, the
    /// size limit, the TTL policy and an expiry that must lie ahead — no later than the
    /// deadline of its inputs, whose lineage `resolved` carries (from `resolve_lineage`).
    pub(super) fn prepare(
        &self,
        key: &Key,
        value: Value,
        now: Timestamp,
        resolved: Option<Resolved>,
    ) -> Result<(Arc<Entry>, &Arc<DataTypeSpec>)> {
        let ty = self.inner.config.data_types.resolve(key)?;
        let size = value.bytes.len() as u64;
        if size > ty.max_value_size {
            return Err(Error::TooLarge {
                key: clip(key.as_str()),
                data_type: ty.name.to_string(),
                size,
                max: ty.max_value_size,
            });
        }
        let ttl = ty.effective_ttl(key, value.ttl)?;
        // A producer clock ahead of ours cannot buy extra lifetime.
        let as_of = value.as_of.map(|t| t.min(now));
        let (lineage, inputs_until) = match resolved {
            Some(r) => (r.lineage, r.until),
            None => (None, Timestamp::from_millis(u64::MAX)),
        };
        let expires_at = as_of.unwrap_or(now).saturating_add(ttl).min(inputs_until);
        if expires_at <= now {
            return Err(Error::AlreadyExpired {
                key: clip(key.as_str()),
                age: now.duration_since(as_of.unwrap_or(now)),
                ttl,
            });
        }
        let entry = Arc::new(Entry {
            meta: Meta {
                data_type: ty.name.clone(),
                stored_at: now,
                expires_at,
                as_of,
                codec: value.codec,
                etag: value.etag,
                last_modified: value.last_modified,
                checksum: checksum(&value.bytes),
                lineage,
                lineage_check: Default::default(),
            },
            value: value.bytes,
        });
        Ok((entry, ty))
    }

    /// Puts the new entry in memory when its type lives there, else drops any older copy.
    pub(super) fn hold_in_memory(&self, key: &Key, ty: &DataTypeSpec, entry: &Arc<Entry>) {
        if ty.placement.in_memory() {
            self.inner
                .memory
                .insert(key.as_arc().clone(), entry.clone());
        } else {
            self.inner.memory.remove(key.as_str());
        }
    }

    /// Writes the new entry to Redis when its type lives there (or removes an older copy too
    /// big for it); false when Redis missed the write — the key is then marked dirty and its
    /// Redis copy removed as soon as Redis answers again.
    pub(super) async fn copy_to_redis(
        &self,
        key: &Key,
        ty: &DataTypeSpec,
        entry: &Arc<Entry>,
        now: Timestamp,
    ) -> bool {
        let Some(redis) = self.redis_for(ty) else {
            return true;
        };
        let written = if entry.size() <= self.inner.config.redis.max_value_size {
            match codec::encode(key.as_str(), entry, ty.compress_above) {
                Ok(envelope) => redis
                    .set(
                        key.as_str(),
                        &envelope,
                        entry.meta.expires_at.duration_since(now),
                    )
                    .await
                    .is_ok(),
                Err(_) => false,
            }
        } else {
            // Too big for Redis: make sure no older copy is left there.
            redis.delete(key.as_str()).await.is_ok()
        };
        if !written {
            self.mark_redis_dirty(key.as_str());
        }
        written
    }

    /// Removes `key` from every tier; true when it was present.
    ///
    /// # Errors
    /// Key errors; [`Error::Index`] when the disk delete fails (the memory copy is dropped
    /// regardless, so the key is not served from this process).
    pub async fn delete(&self, key: &Key) -> Result<bool> {
        let inner = &*self.inner;
        let ty = inner.config.data_types.resolve(key)?;
        let stripe = self.stripe(key.as_str());
        let mut redis_fixed = true;
        let (in_memory, on_disk, in_redis) = {
            let _g = Self::lock(stripe).await;
            let in_memory = inner.memory.remove(key.as_str());
            stripe.epoch.fetch_add(1, Ordering::AcqRel);
            // A type kept off disk has no row to remove (nor a change to tell other processes
            // of: they never saw its entries).
            let on_disk = if ty.placement.in_disk() {
                inner.disk.remove(key.as_str())
            } else {
                Ok(false)
            };
            let in_redis = match &inner.redis {
                Some(redis) => match redis.delete(key.as_str()).await {
                    Ok(found) => found,
                    Err(_) => {
                        self.mark_redis_dirty(key.as_str());
                        redis_fixed = false;
                        false
                    }
                },
                None => false,
            };
            stripe.epoch.fetch_add(1, Ordering::AcqRel);
            self.note_change();
            (in_memory, on_disk, in_redis)
        };
        // Announced even when the disk delete failed: other instances must drop their copies.
        self.announce('d', self.now(), key.as_str(), redis_fixed)
            .await;
        let on_disk = on_disk?;
        inner
            .stats
            .of_type(ty.id)
            .deletes
            .fetch_add(1, Ordering::Relaxed);
        Ok(in_memory || on_disk || in_redis)
    }

    pub(super) async fn bump_all_epochs(&self) {
        for s in self.inner.stripes.iter() {
            let _g = Self::lock(s).await;
            s.epoch.fetch_add(1, Ordering::AcqRel);
        }
        self.note_change();
    }

    /// Drops this instance's memory copy of `key` (another instance changed it).
    pub(crate) async fn forget(&self, key: &str) {
        let stripe = self.stripe(key);
        let _g = Self::lock(stripe).await;
        self.inner.memory.remove(key);
        stripe.epoch.fetch_add(1, Ordering::AcqRel);
        self.note_change();
    }

    /// Drops the memory copies of values other processes or instances may have changed: every
    /// type's but those kept in this process's memory alone (no other copy to read again).
    /// After announcements or changes may have been missed.
    pub(crate) async fn forget_shared(&self) {
        self.bump_all_epochs().await;
        let types = &self.inner.config.data_types;
        self.inner.memory.remove_where(|e| {
            types
                .by_name(&e.meta.data_type)
                .is_none_or(|t| !self.memory_only_here(t))
        });
        self.bump_all_epochs().await;
    }

    /// Drops this instance's memory copies under `prefix` (empty: all).
    pub(crate) async fn forget_prefix(&self, prefix: &str) {
        self.bump_all_epochs().await;
        if prefix.is_empty() {
            self.inner.memory.clear();
        } else {
            self.inner.memory.remove_prefix(prefix);
        }
        self.bump_all_epochs().await;
    }

    /// Removes every key starting with `prefix` (matched literally) from every tier; returns
    /// how many distinct keys were removed.
    ///
    /// # Errors
    /// [`Error::Index`] when the disk delete fails (memory copies are dropped regardless).
    pub async fn invalidate_prefix(&self, prefix: &KeyPrefix) -> Result<u64> {
        let (n, redis_fixed) = self
            .invalidate_range(prefix.as_str(), prefix.upper_bound().as_deref())
            .await;
        self.announce('p', self.now(), prefix.as_str(), redis_fixed)
            .await;
        n
    }

    /// Removes keys in `[prefix, upper)` (all keys starting with `prefix`) from every tier and
    /// counts distinct keys removed; says whether Redis was reached (if not, the prefix is
    /// marked dirty: never read from Redis until the invalidation is retried there).
    async fn invalidate_range(&self, prefix: &str, upper: Option<&str>) -> (Result<u64>, bool) {
        let inner = &*self.inner;
        // Epochs move before and after, so a promotion racing with this call cannot put a
        // removed value back into memory.
        self.bump_all_epochs().await;
        let mem = inner.memory.remove_prefix(prefix);
        let disk = inner.disk.remove_prefix(prefix, upper);
        let mut redis_fixed = true;
        let in_redis = match &inner.redis {
            Some(redis) => redis.delete_prefix(prefix).await.unwrap_or_else(|_| {
                tracing::warn!(
                    prefix,
                    "prefix invalidation did not reach redis; retrying later"
                );
                self.mark_redis_dirty_prefix(prefix);
                redis_fixed = false;
                0
            }),
            None => 0,
        };
        self.bump_all_epochs().await;
        let mem_after = inner.memory.remove_prefix(prefix);
        let disk = match disk {
            Ok(d) => d,
            Err(e) => return (Err(e), redis_fixed),
        };
        let mut all: std::collections::HashSet<&str> = disk.iter().map(String::as_str).collect();
        all.extend(mem.iter().chain(&mem_after).map(|k| &**k));
        (Ok((all.len() as u64).max(in_redis)), redis_fixed)
    }

    /// Removes everything from every tier (the emergency flush); returns the count.
    ///
    /// # Errors
    /// [`Error::Index`] when the disk delete fails.
    pub async fn invalidate_all(&self) -> Result<u64> {
        let (n, redis_fixed) = self.invalidate_range("", None).await;
        self.announce('a', self.now(), "", redis_fixed).await;
        n
    }

    /// Reads `key` and decodes it (JSON or MessagePack, per its stored codec).
    ///
    /// # Errors
    /// See [`Cache::get`]; [`Error::Codec`] when the value is not a `T`.
    pub async fn get_typed<T: DeserializeOwned>(&self, key: &Key) -> Result<Option<T>> {
        match self.get(key).await? {
            Lookup::Fresh(h) => h.entry.decode(key.as_str()).map(Some),
            _ => Ok(None),
        }
    }

    /// Stores `v` as JSON.
    ///
    /// # Errors
    /// See [`Cache::set`]; [`Error::Codec`] when `v` cannot be serialised.
    pub async fn set_json<T: Serialize + ?Sized>(&self, key: &Key, v: &T) -> Result<Arc<Entry>> {
        self.set(key, Value::json(v)?).await
    }

    /// Stores `v` as MessagePack.
    ///
    /// # Errors
    /// See [`Cache::set`]; [`Error::Codec`] when `v` cannot be serialised.
    pub async fn set_msgpack<T: Serialize + ?Sized>(&self, key: &Key, v: &T) -> Result<Arc<Entry>> {
        self.set(key, Value::msgpack(v)?).await
    }

    /// Writes queued disk writes (`cache.disk.write_behind`), buffered access times and
    /// counters to the index.
    ///
    /// # Errors
    /// [`Error::Index`] / [`Error::Io`] when the writes fail; queued writes and counters are
    /// kept for the next attempt.
    pub fn flush(&self) -> Result<()> {
        self.inner.disk.flush_behind()?;
        self.flush_rest()
    }

    /// Stops the write-behind committer thread (waiting for it), then [`Cache::flush`]es: for
    /// a caller about to drop its last handle that needs the index closed when that drop
    /// returns (the committer may otherwise hold the cache for the length of one commit).
    /// Writes queued afterwards are committed by the next use of the index or by the drop.
    ///
    /// # Errors
    /// As [`Cache::flush`].
    pub fn shut_down(&self) -> Result<()> {
        self.inner.stop_committer();
        self.flush()
    }

    fn flush_rest(&self) -> Result<()> {
        self.inner.disk.flush_touches()?;
        crate::stats::persisted::save(&self.inner.disk, &self.inner.stats)
    }
}
