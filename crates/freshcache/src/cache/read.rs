//! Reads: the memory fast path, then one short step per tier, each judging the copy it read.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Cache, Hit, Inspection, Lookup, Purpose, ReadOptions, Source, Stripe};
use crate::clock::{Stopwatch, Timestamp};
use crate::codec;
use crate::datatype::DataTypeSpec;
use crate::entry::Entry;
use crate::error::Result;
use crate::freshness::judge::{Allowance, Judgement, judge};
use crate::key::Key;
use crate::tier::TierKind;
use crate::tier::disk::BlobLocation;

/// One lookup below the memory tier: the key, its type, and the write epoch of its stripe
/// when the lookup began (a promotion is skipped if a write came in between).
pub(super) struct Read<'a> {
    pub(super) key: &'a Key,
    ty: &'a DataTypeSpec,
    stripe: &'a Stripe,
    pub(super) epoch: u64,
}

/// One in this many memory-tier fast-path lookups per thread is timed into the memory latency
/// histogram (the first one on each thread included). See the metric's HELP text.
pub(crate) const MEMORY_LATENCY_SAMPLE: u32 = 16;

thread_local! {
    static MEMORY_LOOKUPS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// True for the lookups whose latency is recorded: the 1st, 17th, 33rd ... on this thread.
#[inline]
fn sample_memory_latency() -> bool {
    MEMORY_LOOKUPS.with(|n| {
        let i = n.get();
        n.set(i.wrapping_add(1));
        i % MEMORY_LATENCY_SAMPLE == 0
    })
}

/// How far ahead of this clock a disk entry's stamp may be and still be taken for another
/// process's reading of the same clock (see the disk step): kept, not served yet.
const NEAR_FUTURE: std::time::Duration = std::time::Duration::from_millis(50);

impl Cache {
    /// Looks `key` up; never returns stale data.
    ///
    /// # Errors
    /// [`Error::UnknownDataType`](crate::Error::UnknownDataType) / [`Error::InvalidKey`](crate::Error::InvalidKey) for keys outside every type;
    /// [`Error::Index`](crate::Error::Index) / [`Error::Io`](crate::Error::Io) when the disk tier cannot be read.
    pub async fn get(&self, key: &Key) -> Result<Lookup> {
        self.get_with(key, ReadOptions::default()).await
    }

    /// Looks `key` up with per-call options.
    ///
    /// # Errors
    /// See [`Cache::get`].
    pub async fn get_with(&self, key: &Key, opts: ReadOptions) -> Result<Lookup> {
        let now = self.inner.clock.now();
        if let Some(hit) = self.memory_hit(key, now)? {
            return Ok(Lookup::Fresh(hit));
        }
        // Boxed so that this future stays a few words: the lower tiers' state machine is over
        // a kilobyte, and every memory hit would otherwise move and drop it for nothing.
        Box::pin(self.lookup(key, now, opts, Purpose::Serve)).await
    }

    /// A fresh copy from this process's memory tier, or `None`, without ever touching Redis or
    /// the disk: it never blocks, so a caller that must not block (the Python binding, holding
    /// the interpreter lock) can try it first. `None` says nothing about the lower tiers and
    /// counts no miss: follow it with [`Cache::get`].
    ///
    /// # Errors
    /// [`Error::UnknownDataType`](crate::Error::UnknownDataType) when no data type matches `key`.
    pub fn get_from_memory(&self, key: &Key) -> Result<Option<Hit>> {
        self.memory_hit(key, self.inner.clock.now())
    }

    /// The memory-tier hit path, without the machinery of the full lookup: a fresh copy in
    /// memory, or `None` (the full lookup then handles expiry, lower tiers and counters).
    #[inline]
    pub(super) fn memory_hit(&self, key: &Key, now: Timestamp) -> Result<Option<Hit>> {
        let ty = self.inner.config.data_types.resolve(key)?;
        Ok(self.memory_hit_of(ty, key, now))
    }

    /// [`Cache::memory_hit`] for a key whose data type is `ty`.
    #[inline]
    pub(super) fn memory_hit_of(
        &self,
        ty: &DataTypeSpec,
        key: &Key,
        now: Timestamp,
    ) -> Option<Hit> {
        // Timing costs two clock reads and two shared atomic adds, as much as the hit itself:
        // only sampled lookups are timed (hits are still counted exactly, below).
        let started = sample_memory_latency().then(Stopwatch::start);
        let inner = &*self.inner;
        if !self.memory_usable(ty) {
            return None;
        }
        let entry = inner.memory.get(key.as_str())?;
        let Judgement::Fresh { mut until } = judge(&entry.meta, ty, now, Allowance::NONE) else {
            return None;
        };
        if entry.meta.lineage.is_some() {
            // A derived value: served from here only on a lineage check that still stands;
            // otherwise the full lookup checks its inputs.
            match self.remembered_lineage(&entry.meta, now) {
                Some(inputs_until) => until = until.min(inputs_until),
                None => return None,
            }
        }
        inner
            .stats
            .tier(TierKind::Memory, ty.id)
            .hits
            .fetch_add(1, Ordering::Relaxed);
        if let Some(started) = started {
            inner.memory_latency.observe(started.elapsed());
        }
        Some(Hit {
            entry,
            source: Source::Tier(TierKind::Memory),
            now,
            deadline: until,
        })
    }

    pub(crate) async fn lookup(
        &self,
        key: &Key,
        now: Timestamp,
        opts: ReadOptions,
        purpose: Purpose,
    ) -> Result<Lookup> {
        self.lookup_at(key, now, opts, purpose, 0).await
    }

    /// [`Cache::lookup`] for a key `depth` steps up a chain of inputs (0: asked by a caller).
    /// A fresh derived value is then judged by its lineage (see `lineage`).
    pub(crate) async fn lookup_at(
        &self,
        key: &Key,
        now: Timestamp,
        opts: ReadOptions,
        purpose: Purpose,
        depth: u8,
    ) -> Result<Lookup> {
        let started = Stopwatch::start();
        let (found, answered_by) = self.lookup_tiers(key, now, opts, purpose).await?;
        let found = match found {
            Lookup::Fresh(hit) if hit.meta().lineage.is_some() => {
                self.judge_lineage(hit, purpose, depth).await
            }
            other => other,
        };
        let histogram = match answered_by {
            TierKind::Memory => &self.inner.memory_latency,
            TierKind::Redis => &self.inner.redis_latency,
            _ => &self.inner.disk_latency,
        };
        histogram.observe(started.elapsed());
        Ok(found)
    }

    /// The lookup itself, tier by tier, saying which tier answered (the last one asked, on a
    /// miss). Each step judges the copy it read with [`judge`] at a clock reading taken after
    /// the read.
    async fn lookup_tiers(
        &self,
        key: &Key,
        now: Timestamp,
        opts: ReadOptions,
        purpose: Purpose,
    ) -> Result<(Lookup, TierKind)> {
        let ty = self.inner.config.data_types.resolve(key)?;
        let mut seen_expired = false;
        let mut expired_kept = None;
        if let Some(hit) = self.read_memory(key, ty, now, &mut seen_expired, &mut expired_kept) {
            return Ok((Lookup::Fresh(hit), TierKind::Memory));
        }
        let stripe = self.stripe(key.as_str());
        let read = Read {
            key,
            ty,
            stripe,
            epoch: stripe.epoch.load(Ordering::Acquire),
        };
        if let Some(hit) = self.read_redis(&read, now, &mut seen_expired).await {
            return Ok((Lookup::Fresh(hit), TierKind::Redis));
        }
        let found = self
            .read_disk(&read, now, opts, purpose, seen_expired)
            .await?;
        // A type kept off disk has no sweep to wait for: its expired memory copy is what the
        // guard reports as stale (until it is evicted, deleted or rewritten).
        if let (Lookup::Miss, Purpose::Audit, Some(hit)) = (&found, purpose, expired_kept) {
            return Ok((Lookup::Stale(hit), TierKind::Memory));
        }
        Ok((found, TierKind::Disk))
    }

    /// Counts an expired copy found in `tier`; the type's expired reads once per lookup.
    fn note_expired(&self, ty: &DataTypeSpec, tier: TierKind, seen_expired: &mut bool) {
        let stats = &self.inner.stats;
        stats
            .tier(tier, ty.id)
            .expirations
            .fetch_add(1, Ordering::Relaxed);
        if !*seen_expired {
            stats
                .of_type(ty.id)
                .expired_reads
                .fetch_add(1, Ordering::Relaxed);
            *seen_expired = true;
        }
    }

    /// L1: a fresh copy, or `None` (an unusable copy is dropped: that copy, not a newer one —
    /// except an expired copy of a type kept off disk, which stays, as an expired disk row stays
    /// for the sweep, and is handed back in `expired_kept`).
    fn read_memory(
        &self,
        key: &Key,
        ty: &DataTypeSpec,
        now: Timestamp,
        seen_expired: &mut bool,
        expired_kept: &mut Option<Hit>,
    ) -> Option<Hit> {
        let inner = &*self.inner;
        let k = key.as_str();
        let found = self
            .memory_usable(ty)
            .then(|| inner.memory.get(k))
            .flatten();
        if let Some(entry) = found {
            let mut now = now;
            let mut judged = judge(&entry.meta, ty, now, Allowance::NONE);
            if judged == Judgement::FutureStamped {
                // Most often a write that finished after this lookup read its clock (a set
                // racing it on another thread): judged again on a new reading, it is fresh.
                now = inner.clock.now().max(now);
                judged = judge(&entry.meta, ty, now, Allowance::NONE);
            }
            match judged {
                Judgement::Fresh { until } => {
                    inner
                        .stats
                        .tier(TierKind::Memory, ty.id)
                        .hits
                        .fetch_add(1, Ordering::Relaxed);
                    return Some(Hit {
                        entry,
                        source: Source::Tier(TierKind::Memory),
                        now,
                        deadline: until,
                    });
                }
                // Stamped after now even so (the clock stepped back): not an expiry.
                Judgement::FutureStamped => {
                    inner.memory.remove_entry(k, &entry);
                    self.note_future_stamped(ty, TierKind::Memory, k);
                }
                // Past its stamped expiry, or past the type's current TTL within it.
                Judgement::Stale { until } | Judgement::Expired { until } => {
                    self.note_expired(ty, TierKind::Memory, seen_expired);
                    if ty.placement.in_disk() {
                        inner.memory.remove_entry(k, &entry);
                    } else {
                        *expired_kept = Some(Hit {
                            entry,
                            source: Source::Tier(TierKind::Memory),
                            now,
                            deadline: until,
                        });
                    }
                }
            }
        }
        inner
            .stats
            .tier(TierKind::Memory, ty.id)
            .misses
            .fetch_add(1, Ordering::Relaxed);
        None
    }

    /// L2: a fresh copy from Redis (promoted to memory), or `None`. Redis never serves stale.
    async fn read_redis(
        &self,
        read: &Read<'_>,
        now: Timestamp,
        seen_expired: &mut bool,
    ) -> Option<Hit> {
        let inner = &*self.inner;
        let (k, ty) = (read.key.as_str(), read.ty);
        let redis = self.redis_for(ty).filter(|_| !self.is_redis_dirty(k))?;
        let rstats = inner.stats.tier(TierKind::Redis, ty.id);
        if let Ok(Some(bytes)) = redis.get(k).await {
            // Judged against the clock after the round trip, not before it.
            let now = inner.clock.now().max(now);
            match codec::decode_bytes(k, bytes.into()) {
                Ok(entry) => match judge(&entry.meta, ty, now, Allowance::NONE) {
                    Judgement::Fresh { until } => {
                        rstats.hits.fetch_add(1, Ordering::Relaxed);
                        let entry = Arc::new(entry);
                        self.promote(read, &entry, None).await;
                        return Some(Hit {
                            entry,
                            source: Source::Tier(TierKind::Redis),
                            now,
                            deadline: until,
                        });
                    }
                    // Left in Redis: its own expiry there was set as a duration and runs in
                    // real time, whatever the writer's clock said.
                    Judgement::FutureStamped => self.note_future_stamped(ty, TierKind::Redis, k),
                    // Kept too long by Redis (clock skew, restored data): never served.
                    Judgement::Stale { .. } | Judgement::Expired { .. } => {
                        self.note_expired(ty, TierKind::Redis, seen_expired);
                    }
                },
                Err(e) => {
                    tracing::warn!(key = k, error = %e, "redis tier: damaged value ignored");
                    inner.redis_corrupt.fetch_add(1, Ordering::Relaxed);
                    let _ = redis.delete(k).await;
                }
            }
        }
        rstats.misses.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// L3: the durable copy. Fresh copies are promoted; an expired one comes back as stale only
    /// when the call allowed it, or to the guard (which reports its age and never serves it).
    async fn read_disk(
        &self,
        read: &Read<'_>,
        now: Timestamp,
        opts: ReadOptions,
        purpose: Purpose,
        mut seen_expired: bool,
    ) -> Result<Lookup> {
        let inner = &*self.inner;
        let (k, ty) = (read.key.as_str(), read.ty);
        if !ty.placement.in_disk() {
            return Ok(Lookup::Miss);
        }
        let dstats = inner.stats.tier(TierKind::Disk, ty.id);
        let found = match self.reread_disk(read, now) {
            Some(found) => Some(found),
            None => inner.disk.get_located(k, now)?,
        };
        let Some((entry, location)) = found else {
            dstats.misses.fetch_add(1, Ordering::Relaxed);
            return Ok(Lookup::Miss);
        };
        let location = location.filter(|_| self.locations_usable());
        let entry = Arc::new(entry);
        // Judged against the clock after the disk read, not before it.
        let now = inner.clock.now().max(now);
        let (until, serve_stale) =
            match judge(&entry.meta, ty, now, Allowance::stale(opts.max_stale)) {
                Judgement::Fresh { until } => {
                    dstats.hits.fetch_add(1, Ordering::Relaxed);
                    self.promote(read, &entry, location).await;
                    self.promote_to_redis(read, &entry, until.duration_since(now));
                    return Ok(Lookup::Fresh(Hit {
                        entry,
                        source: Source::Tier(TierKind::Disk),
                        now,
                        deadline: until,
                    }));
                }
                Judgement::FutureStamped => {
                    dstats.misses.fetch_add(1, Ordering::Relaxed);
                    inner.locations.forget(k);
                    // A stamp a moment ahead is another process of this host whose clock reads a
                    // hair ahead of this one (each keeps its own offset, and stamps are whole
                    // milliseconds): not served yet, and left for when this clock reaches it —
                    // removing it would drop a fresh write (and make a process waiting on a
                    // cross-process load call the loader again).
                    if entry.meta.stored_at <= now.saturating_add(NEAR_FUTURE) {
                        return Ok(Lookup::Miss);
                    }
                    self.note_future_stamped(ty, TierKind::Disk, k);
                    // Further ahead, a clock step: removed (with any copy stamped earlier, sparing a
                    // later one), or it would be served once this clock reaches its stamp, for
                    // longer than its real lifetime.
                    let at_or_before = entry
                        .meta
                        .stored_at
                        .saturating_add(std::time::Duration::from_millis(1));
                    if let Err(e) = inner.disk.remove_if_older(k, at_or_before) {
                        tracing::debug!(error = %e, "removal of a future-stamped entry failed");
                    }
                    return Ok(Lookup::Miss);
                }
                Judgement::Stale { until } => (until, true),
                Judgement::Expired { until } => (until, false),
            };
        inner.locations.forget(k);
        self.note_expired(ty, TierKind::Disk, &mut seen_expired);
        dstats.misses.fetch_add(1, Ordering::Relaxed);
        if serve_stale {
            inner
                .stats
                .of_type(ty.id)
                .stale_served
                .fetch_add(1, Ordering::Relaxed);
        }
        // An expired row is left for the sweep, not removed by the read: until then the guard
        // and `inspect` report it as stale, with its age, instead of missing — a stalled
        // producer shows as such on every later check.
        if serve_stale || purpose == Purpose::Audit {
            return Ok(Lookup::Stale(Hit {
                entry,
                source: Source::Tier(TierKind::Disk),
                now,
                deadline: until,
            }));
        }
        Ok(Lookup::Miss)
    }

    /// Counts a copy not served because it was stamped later than `now`.
    fn note_future_stamped(&self, ty: &DataTypeSpec, tier: TierKind, key: &str) {
        self.inner
            .stats
            .of_type(ty.id)
            .future_stamped
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            key,
            tier = tier.name(),
            "copy stamped after this clock's now (clock skew or a clock step): not served"
        );
    }

    /// Puts a copy read from a lower tier into memory, with the entry's own expiry, and keeps
    /// the blob file a disk read found it in (see `located`). Skipped if any write to this
    /// stripe happened since the read began: the copy may be outdated.
    async fn promote(&self, read: &Read<'_>, entry: &Arc<Entry>, location: Option<BlobLocation>) {
        let to_memory = self.memory_usable(read.ty);
        if !to_memory && location.is_none() {
            return;
        }
        let _g = Self::lock(read.stripe).await;
        if read.stripe.epoch.load(Ordering::Acquire) == read.epoch {
            if to_memory {
                self.inner
                    .memory
                    .insert(read.key.as_arc().clone(), entry.clone());
            }
            if let Some(at) = location {
                self.keep_location(read, at);
            }
        }
    }

    /// Copies a disk hit into Redis in the background with its remaining lifetime, only if
    /// Redis has no value for the key (`SET NX`: never over a newer write).
    fn promote_to_redis(&self, read: &Read<'_>, entry: &Arc<Entry>, redis_ttl: Duration) {
        let (key, ty, epoch) = (read.key, read.ty, read.epoch);
        if self.redis_for(ty).is_none()
            || entry.size() > self.inner.config.redis.max_value_size
            || redis_ttl.is_zero()
            || self.is_redis_dirty(key.as_str())
        {
            return;
        }
        let Ok(envelope) = codec::encode(key.as_str(), entry, ty.compress_above) else {
            return;
        };
        let cache = self.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let Some(redis) = &cache.inner.redis else {
                return;
            };
            // Under the key's stripe lock, and only if no write, delete or invalidation of the
            // stripe happened since the disk read: a promotion must never undo a delete.
            let stripe = cache.stripe(key.as_str());
            let _g = Self::lock(stripe).await;
            if stripe.epoch.load(Ordering::Acquire) == epoch && !cache.is_redis_dirty(key.as_str())
            {
                let _ = redis
                    .set_if_absent(key.as_str(), &envelope, redis_ttl)
                    .await;
            }
        });
    }

    /// Describes `key` in every tier without promoting it, removing it, or counting a read.
    ///
    /// # Errors
    /// Key errors; [`Error::Index`](crate::Error::Index) / [`Error::Io`](crate::Error::Io) when the disk tier cannot be read.
    pub fn inspect(&self, key: &Key) -> Result<Inspection> {
        let inner = &*self.inner;
        let ty = inner.config.data_types.resolve(key)?;
        let now = inner.clock.now();
        let mem = inner.memory.get(key.as_str());
        let disk = inner.disk.row_info(key.as_str())?;
        let entry = match &mem {
            Some(e) => Some(e.clone()),
            None if disk.is_some() => inner.disk.get(key.as_str(), now)?.map(Arc::new),
            None => None,
        };
        let judged = entry
            .as_ref()
            .map(|e| judge(&e.meta, ty, now, Allowance::NONE));
        let (inputs, sound) = match &entry {
            Some(e) => self.inspect_lineage(&e.meta, now),
            None => (Vec::new(), true),
        };
        let fresh = judged.is_some_and(Judgement::is_fresh) && sound;
        // An expired entry is reported stale, with its deadline, until the sweep removes it.
        let stale_since = match judged {
            Some(Judgement::Stale { until } | Judgement::Expired { until }) => Some(until),
            Some(Judgement::Fresh { .. }) if !sound => Some(now),
            _ => None,
        };
        Ok(Inspection {
            now,
            in_memory: mem.is_some(),
            entry,
            disk,
            fresh,
            stale_since,
            inputs,
            dependents: self.dependents(key.as_str())?,
        })
    }
}
