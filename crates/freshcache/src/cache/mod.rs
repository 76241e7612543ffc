//! The orchestrator: read-through L1 → L3, write-through, promotion with the remaining
//! lifetime, prefix invalidation and coalesced loading.
//!
//! Freshness is decided here, on the entry actually read, against one clock reading per call.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::watch;

use crate::clock::{Clock, SharedClock, SystemClock, Timestamp};
use crate::codec;
use crate::config::Config;
use crate::datatype::{DataTypeSpec, TtlOverride};
use crate::entry::{Entry, Meta, checksum};
use crate::error::{Error, LoaderError, Result, clip};
use crate::key::{Key, KeyPrefix};
use crate::metrics::LatencyHistogram;
use crate::stats::Stats;
use crate::tier::TierKind;
use crate::tier::disk::{DiskTier, FreeSpace, StatvfsFreeSpace};
use crate::tier::memory::{MemoryLookup, MemoryTier};
use crate::tier::redis::RedisTier;

mod coherence;
mod fetch;
mod report;
mod types;

pub(crate) use types::Purpose;
pub use types::{Hit, Inspection, Lookup, ReadOptions, Source, Value};

/// Number of write stripes; writes to keys in one stripe are serialised.
const STRIPES: usize = 64;

type Outcome = Option<std::result::Result<Arc<Entry>, LoaderError>>;

/// Serialises writes to the keys that hash to it (across all tiers, Redis included, so the
/// tiers end in the same order), and counts them so a promotion can tell it raced a write.
#[derive(Debug, Default)]
struct Stripe {
    lock: tokio::sync::Mutex<()>,
    epoch: AtomicU64,
}

struct Inner {
    config: Config,
    clock: CacheClock,
    memory: MemoryTier,
    disk: DiskTier,
    /// L2, when `redis_url` is set.
    redis: Option<RedisTier>,
    /// Identifies this instance's announcements, so it ignores its own.
    instance_id: String,
    /// False while the invalidation subscription is down: memory copies may be outdated, so
    /// the memory tier is bypassed until the subscription is back.
    l1_trusted: std::sync::atomic::AtomicBool,
    /// Keys whose Redis copy may be outdated because a write or delete did not reach Redis;
    /// removed from Redis once it answers again, and never read from Redis meanwhile.
    redis_dirty: Mutex<std::collections::HashSet<String>>,
    /// Whether `redis_dirty` or `unsent` may be non-empty (read without the lock on lookups).
    redis_dirty_any: std::sync::atomic::AtomicBool,
    /// Announcements that could not be published, in order; retried with the dirty keys.
    unsent: Mutex<Vec<String>>,
    /// Prefixes whose invalidation did not reach Redis; retried before their announcement.
    redis_dirty_prefixes: Mutex<Vec<String>>,
    /// Damaged values found in Redis (ignored and deleted).
    redis_corrupt: AtomicU64,
    /// Dropped with the cache, which stops its background tasks.
    _closing: watch::Sender<()>,
    closed: watch::Receiver<()>,
    stats: Stats,
    stripes: Box<[Stripe]>,
    hasher: std::collections::hash_map::RandomState,
    inflight: Mutex<HashMap<Arc<str>, watch::Receiver<Outcome>>>,
    memory_latency: LatencyHistogram,
    redis_latency: LatencyHistogram,
    disk_latency: LatencyHistogram,
    upkeep: UpkeepCounters,
    opened_at: Timestamp,
}

/// Outcomes of cleanup passes run through this instance.
#[derive(Debug, Default)]
pub(crate) struct UpkeepCounters {
    pub ok: AtomicU64,
    pub errors: AtomicU64,
    pub last_duration_ms: AtomicU64,
}

/// The cache: a cheap, cloneable handle.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("cache_dir", &self.inner.config.cache_dir)
            .field("memory", &self.inner.memory)
            .finish_non_exhaustive()
    }
}

/// The cache's clock. The system clock is called directly rather than through a `dyn Clock`:
/// every lookup reads the clock first, and on a memory hit the indirect call is a visible
/// share of the whole lookup.
#[derive(Clone)]
enum CacheClock {
    System,
    Injected(SharedClock),
}

impl CacheClock {
    #[inline]
    fn now(&self) -> Timestamp {
        match self {
            Self::System => SystemClock.now(),
            Self::Injected(clock) => clock.now(),
        }
    }

    /// The same clock as a [`SharedClock`], for the tiers that keep one.
    fn shared(&self) -> SharedClock {
        match self {
            Self::System => Arc::new(SystemClock),
            Self::Injected(clock) => clock.clone(),
        }
    }
}

/// Builds a [`Cache`] with a chosen clock.
#[must_use]
pub struct CacheBuilder {
    config: Config,
    clock: CacheClock,
    free_space: Option<Box<dyn FreeSpace>>,
}

impl CacheBuilder {
    /// Uses `clock` instead of the system clock.
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = CacheClock::Injected(Arc::new(clock));
        self
    }

    /// Uses a shared clock.
    pub fn shared_clock(mut self, clock: SharedClock) -> Self {
        self.clock = CacheClock::Injected(clock);
        self
    }

    /// Measures free disk space with `probe` instead of `statvfs` (tests simulate a full disk).
    pub fn free_space(mut self, probe: impl FreeSpace + 'static) -> Self {
        self.free_space = Some(Box::new(probe));
        self
    }

    /// Opens an embedded cache (memory + disk).
    ///
    /// # Errors
    /// [`Error::Io`] / [`Error::Index`] when the cache directory or index cannot be opened;
    /// [`Error::Config`] when `redis_url` is set (use [`CacheBuilder::connect`]).
    pub fn open(self) -> Result<Cache> {
        if let Some(url) = &self.config.redis_url {
            return Err(Error::Config(crate::error::ConfigError {
                file: self.config.source.clone(),
                line: None,
                field: "cache.redis_url".into(),
                reason: format!(
                    "{url} is set: open the cache with `connect().await`, which reaches Redis"
                ),
            }));
        }
        self.build(None)
    }

    /// Opens the cache, connecting to Redis when `redis_url` is set (authenticating, and
    /// starting the invalidation subscription), else embedded like [`CacheBuilder::open`].
    ///
    /// # Errors
    /// As [`CacheBuilder::open`]; [`Error::Redis`] when Redis is unreachable or refuses the
    /// credentials (the message names the problem, never the password).
    pub async fn connect(self) -> Result<Cache> {
        let redis = match &self.config.redis_url {
            Some(url) => {
                Some(RedisTier::connect(url, &self.config.redis, self.clock.shared()).await?)
            }
            None => None,
        };
        let with_redis = redis.is_some();
        let cache = self.build(redis)?;
        if with_redis {
            cache.inner.l1_trusted.store(false, Ordering::Release);
            tokio::spawn(coherence::run(Arc::downgrade(&cache.inner)));
            tokio::spawn(coherence::repair_loop(Arc::downgrade(&cache.inner)));
        }
        Ok(cache)
    }

    fn build(self, redis: Option<RedisTier>) -> Result<Cache> {
        let Self {
            config,
            clock,
            free_space,
        } = self;
        let mut disk = DiskTier::open(
            &config.cache_dir,
            &config.metadata_path,
            config.disk.inline_max,
        )?;
        disk.set_size_limit(config.cleanup.max_size_bytes);
        disk.set_free_space(
            config.cleanup.min_free_disk,
            free_space.unwrap_or_else(|| Box::new(StatvfsFreeSpace)),
        );
        let memory = MemoryTier::new(config.memory.max_bytes);
        let stats = Stats::new(
            config
                .data_types
                .types()
                .iter()
                .map(|t| t.name.to_string())
                .collect(),
        );
        let (closing, closed) = watch::channel(());
        let cache = Cache {
            inner: Arc::new(Inner {
                config,
                memory,
                disk,
                redis,
                instance_id: format!("{:016x}", fastrand::u64(..)),
                l1_trusted: std::sync::atomic::AtomicBool::new(true),
                redis_dirty: Mutex::new(std::collections::HashSet::new()),
                redis_dirty_any: std::sync::atomic::AtomicBool::new(false),
                unsent: Mutex::new(Vec::new()),
                redis_dirty_prefixes: Mutex::new(Vec::new()),
                redis_corrupt: AtomicU64::new(0),
                _closing: closing,
                closed,
                stats,
                stripes: (0..STRIPES).map(|_| Stripe::default()).collect(),
                hasher: Default::default(),
                inflight: Mutex::new(HashMap::new()),
                memory_latency: LatencyHistogram::default(),
                redis_latency: LatencyHistogram::default(),
                disk_latency: LatencyHistogram::default(),
                upkeep: UpkeepCounters::default(),
                opened_at: clock.now(),
                clock,
            }),
        };
        Ok(cache)
    }
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

/// The instant after which an entry of `ty` must not be served: its own `expires_at`, capped
/// by the type's current TTL unless the type lets callers choose any TTL (so shortening a TTL
/// in the config takes effect on entries already stored).
#[inline]
fn deadline(meta: &Meta, ty: &DataTypeSpec) -> Timestamp {
    if ty.ttl_override == TtlOverride::Any {
        return meta.expires_at;
    }
    let cap = meta.as_of.unwrap_or(meta.stored_at).saturating_add(ty.ttl);
    meta.expires_at.min(cap)
}

impl Cache {
    /// Opens a cache on the system clock.
    ///
    /// # Errors
    /// See [`CacheBuilder::open`].
    pub fn open(config: Config) -> Result<Self> {
        Self::builder(config).open()
    }

    /// A builder for choosing the clock.
    pub fn builder(config: Config) -> CacheBuilder {
        CacheBuilder {
            config,
            clock: CacheClock::System,
            free_space: None,
        }
    }

    /// The configuration in use.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The current time on the cache's clock.
    #[must_use]
    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// The data type `key` belongs to.
    ///
    /// # Errors
    /// [`Error::UnknownDataType`] or [`Error::InvalidKey`] (segment count).
    pub fn data_type(&self, key: &Key) -> Result<&Arc<DataTypeSpec>> {
        self.inner.config.data_types.resolve(key)
    }

    fn stripe(&self, key: &str) -> &Stripe {
        let h = self.inner.hasher.hash_one(key);
        &self.inner.stripes[(h as usize) % STRIPES]
    }

    async fn lock(stripe: &Stripe) -> tokio::sync::MutexGuard<'_, ()> {
        stripe.lock.lock().await
    }

    /// The Redis tier if configured and used by `ty`.
    fn redis_for(&self, ty: &DataTypeSpec) -> Option<&RedisTier> {
        self.inner
            .redis
            .as_ref()
            .filter(|_| ty.placement.in_redis())
    }

    fn memory_usable(&self, ty: &DataTypeSpec) -> bool {
        ty.placement.in_memory() && self.inner.l1_trusted.load(Ordering::Acquire)
    }

    /// Whether Redis may hold an outdated copy of `key` (a write, delete or prefix
    /// invalidation did not reach it): such keys are never read from Redis.
    fn is_redis_dirty(&self, key: &str) -> bool {
        if !self.inner.redis_dirty_any.load(Ordering::Acquire) {
            return false;
        }
        let dirty_prefix = self
            .inner
            .redis_dirty_prefixes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|p| key.starts_with(p.as_str()));
        dirty_prefix
            || self
                .inner
                .redis_dirty
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(key)
    }

    /// Records something Redis still has to be told (under `pending`'s lock), then raises the
    /// flag readers and the repair loop check without locking.
    fn note_pending<T>(&self, pending: &Mutex<T>, add: impl FnOnce(&mut T)) {
        add(&mut pending.lock().unwrap_or_else(PoisonError::into_inner));
        self.inner.redis_dirty_any.store(true, Ordering::Release);
    }

    fn mark_redis_dirty(&self, key: &str) {
        self.note_pending(&self.inner.redis_dirty, |d| {
            d.insert(key.to_owned());
        });
    }

    fn mark_redis_dirty_prefix(&self, prefix: &str) {
        self.note_pending(&self.inner.redis_dirty_prefixes, |p| {
            p.push(prefix.to_owned());
        });
    }

    fn queue_announcement(&self, msg: String) {
        self.note_pending(&self.inner.unsent, |u| u.push(msg));
    }

    /// Announces a change to the other instances. When Redis may still hold the old value
    /// (`redis_fixed` is false) or the publish fails, the announcement is queued and sent once
    /// the Redis copy is fixed — otherwise other instances would drop their memory copy and
    /// re-read the old value from Redis.
    async fn announce(&self, kind: char, stored_at: Timestamp, subject: &str, redis_fixed: bool) {
        if let Some(redis) = &self.inner.redis {
            let msg = coherence::encode(&self.inner.instance_id, kind, stored_at, subject);
            if !redis_fixed {
                self.queue_announcement(msg);
            } else if redis.publish(&msg).await.is_err() {
                tracing::debug!(kind = %kind, "announcement not delivered; queued for retry");
                self.queue_announcement(msg);
            }
        }
    }

    /// Looks `key` up; never returns stale data.
    ///
    /// # Errors
    /// [`Error::UnknownDataType`] / [`Error::InvalidKey`] for keys outside every type;
    /// [`Error::Index`] / [`Error::Io`] when the disk tier cannot be read.
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

    /// The fresh value for `key` when this process's memory tier holds one, without asking
    /// Redis or the disk: it never blocks, so a caller that must not block (the Python
    /// binding, holding the interpreter lock) can try it first. `None` says nothing about
    /// the lower tiers and counts no miss: follow it with [`Cache::get`].
    ///
    /// # Errors
    /// [`Error::UnknownDataType`] when no data type matches `key`.
    pub fn get_from_memory(&self, key: &Key) -> Result<Option<Hit>> {
        self.memory_hit(key, self.inner.clock.now())
    }

    /// The memory-tier hit path, without the machinery of the full lookup: a fresh copy in
    /// memory, or `None` (the full lookup then handles expiry, lower tiers and counters).
    #[inline]
    fn memory_hit(&self, key: &Key, now: Timestamp) -> Result<Option<Hit>> {
        // Timing costs two clock reads and two shared atomic adds, as much as the hit itself:
        // only sampled lookups are timed (hits are still counted exactly, below).
        let started = sample_memory_latency().then(Instant::now);
        let inner = &*self.inner;
        let ty = inner.config.data_types.resolve(key)?;
        if !self.memory_usable(ty) {
            return Ok(None);
        }
        let Some(entry) = inner.memory.get_if_fresh(key.as_str(), now) else {
            return Ok(None);
        };
        let until = deadline(&entry.meta, ty);
        if now >= until {
            return Ok(None);
        }
        inner
            .stats
            .tier(TierKind::Memory, ty.id)
            .hits
            .fetch_add(1, Ordering::Relaxed);
        if let Some(started) = started {
            inner.memory_latency.observe(started.elapsed());
        }
        Ok(Some(Hit {
            entry,
            source: Source::Tier(TierKind::Memory),
            now,
            deadline: until,
        }))
    }

    pub(crate) async fn lookup(
        &self,
        key: &Key,
        now: Timestamp,
        opts: ReadOptions,
        purpose: Purpose,
    ) -> Result<Lookup> {
        let started = Instant::now();
        let (found, answered_by) = self.lookup_tiers(key, now, opts, purpose).await?;
        let histogram = match answered_by {
            TierKind::Memory => &self.inner.memory_latency,
            TierKind::Redis => &self.inner.redis_latency,
            _ => &self.inner.disk_latency,
        };
        histogram.observe(started.elapsed());
        Ok(found)
    }

    /// The lookup itself, saying which tier answered (the last one asked, on a miss).
    async fn lookup_tiers(
        &self,
        key: &Key,
        now: Timestamp,
        opts: ReadOptions,
        purpose: Purpose,
    ) -> Result<(Lookup, TierKind)> {
        let inner = &*self.inner;
        let ty = inner.config.data_types.resolve(key)?;
        let k = key.as_str();
        let stale_ok = |meta: &Meta, now: Timestamp| {
            !opts.max_stale.is_zero() && now < deadline(meta, ty).saturating_add(opts.max_stale)
        };

        let mut seen_expired = false;
        let memory = if self.memory_usable(ty) {
            inner.memory.get(k, now)
        } else {
            MemoryLookup::Miss
        };
        match memory {
            MemoryLookup::Fresh(e) if now < deadline(&e.meta, ty) => {
                inner
                    .stats
                    .tier(TierKind::Memory, ty.id)
                    .hits
                    .fetch_add(1, Ordering::Relaxed);
                let deadline = deadline(&e.meta, ty);
                return Ok((
                    Lookup::Fresh(Hit {
                        entry: e,
                        source: Source::Tier(TierKind::Memory),
                        now,
                        deadline,
                    }),
                    TierKind::Memory,
                ));
            }
            // Stamped after now (the clock stepped back): dropped by the tier, not an expiry.
            MemoryLookup::Expired(e) if e.meta.is_future_stamped_at(now) => {
                self.note_future_stamped(ty, TierKind::Memory, k);
            }
            found @ (MemoryLookup::Fresh(_) | MemoryLookup::Expired(_)) => {
                // Expired (already dropped by the tier), or past the type's current TTL though
                // within its stamped expiry: drop that copy, not a newer one.
                if let MemoryLookup::Fresh(e) = found {
                    inner.memory.remove_entry(k, &e);
                }
                inner
                    .stats
                    .tier(TierKind::Memory, ty.id)
                    .expirations
                    .fetch_add(1, Ordering::Relaxed);
                inner
                    .stats
                    .of_type(ty.id)
                    .expired_reads
                    .fetch_add(1, Ordering::Relaxed);
                seen_expired = true;
            }
            MemoryLookup::Miss => {}
        }
        inner
            .stats
            .tier(TierKind::Memory, ty.id)
            .misses
            .fetch_add(1, Ordering::Relaxed);

        let stripe = self.stripe(k);
        let epoch = stripe.epoch.load(Ordering::Acquire);

        if let Some(redis) = self.redis_for(ty).filter(|_| !self.is_redis_dirty(k)) {
            let rstats = inner.stats.tier(TierKind::Redis, ty.id);
            if let Ok(Some(bytes)) = redis.get(k).await {
                // Judged against the clock after the round trip, not before it.
                let now = inner.clock.now().max(now);
                match codec::decode_bytes(k, bytes.into()) {
                    // Left in Redis: its own expiry there was set as a duration and runs in
                    // real time, whatever the writer's clock said.
                    Ok(entry) if entry.meta.is_future_stamped_at(now) => {
                        self.note_future_stamped(ty, TierKind::Redis, k);
                    }
                    Ok(entry) => {
                        let entry = Arc::new(entry);
                        let until = deadline(&entry.meta, ty);
                        if now < until {
                            rstats.hits.fetch_add(1, Ordering::Relaxed);
                            self.promote_to_memory(key, ty, stripe, epoch, &entry).await;
                            return Ok((
                                Lookup::Fresh(Hit {
                                    entry,
                                    source: Source::Tier(TierKind::Redis),
                                    now,
                                    deadline: until,
                                }),
                                TierKind::Redis,
                            ));
                        }
                        // Kept too long by Redis (clock skew, restored data): never served.
                        rstats.expirations.fetch_add(1, Ordering::Relaxed);
                        if !seen_expired {
                            inner
                                .stats
                                .of_type(ty.id)
                                .expired_reads
                                .fetch_add(1, Ordering::Relaxed);
                            seen_expired = true;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(key = k, error = %e, "redis tier: damaged value ignored");
                        inner.redis_corrupt.fetch_add(1, Ordering::Relaxed);
                        let _ = redis.delete(k).await;
                    }
                }
            }
            rstats.misses.fetch_add(1, Ordering::Relaxed);
        }

        let Some(entry) = inner.disk.get(k, now)? else {
            inner
                .stats
                .tier(TierKind::Disk, ty.id)
                .misses
                .fetch_add(1, Ordering::Relaxed);
            return Ok((Lookup::Miss, TierKind::Disk));
        };
        let entry = Arc::new(entry);
        // Judged against the clock after the disk read, not before it.
        let now = inner.clock.now().max(now);
        if entry.meta.is_future_stamped_at(now) {
            self.note_future_stamped(ty, TierKind::Disk, k);
            inner
                .stats
                .tier(TierKind::Disk, ty.id)
                .misses
                .fetch_add(1, Ordering::Relaxed);
            // Removed (with any copy stamped earlier, sparing a later one), or it would be
            // served once this clock reaches its stamp, for longer than its real lifetime.
            let at_or_before = entry
                .meta
                .stored_at
                .saturating_add(std::time::Duration::from_millis(1));
            if let Err(e) = inner.disk.remove_if_older(k, at_or_before) {
                tracing::debug!(error = %e, "removal of a future-stamped entry failed");
            }
            return Ok((Lookup::Miss, TierKind::Disk));
        }
        let until = deadline(&entry.meta, ty);
        if now < until {
            inner
                .stats
                .tier(TierKind::Disk, ty.id)
                .hits
                .fetch_add(1, Ordering::Relaxed);
            self.promote_to_memory(key, ty, stripe, epoch, &entry).await;
            self.promote_to_redis(key, ty, &entry, now, epoch);
            return Ok((
                Lookup::Fresh(Hit {
                    entry,
                    source: Source::Tier(TierKind::Disk),
                    now,
                    deadline: until,
                }),
                TierKind::Disk,
            ));
        }
        let disk_stats = inner.stats.tier(TierKind::Disk, ty.id);
        disk_stats.expirations.fetch_add(1, Ordering::Relaxed);
        if !seen_expired {
            inner
                .stats
                .of_type(ty.id)
                .expired_reads
                .fetch_add(1, Ordering::Relaxed);
        }
        disk_stats.misses.fetch_add(1, Ordering::Relaxed);
        let serve_stale = stale_ok(&entry.meta, now);
        if serve_stale {
            inner
                .stats
                .of_type(ty.id)
                .stale_served
                .fetch_add(1, Ordering::Relaxed);
        } else if entry.meta.expires_at.saturating_add(ty.stale.window()) <= now {
            // Lazy removal once past any stale window; a failure here only delays cleanup.
            if let Err(e) = inner.disk.remove_expired(k, entry.meta.expires_at, now) {
                tracing::debug!(error = %e, "lazy removal of an expired entry failed");
            }
        }
        // A stale value goes back only when the call allowed it, or to the guard, which
        // reports how stale the refused value was and never serves it.
        if serve_stale || purpose == Purpose::Audit {
            return Ok((
                Lookup::Stale(Hit {
                    entry,
                    source: Source::Tier(TierKind::Disk),
                    now,
                    deadline: until,
                }),
                TierKind::Disk,
            ));
        }
        Ok((Lookup::Miss, TierKind::Disk))
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

    /// Puts a copy read from a lower tier into memory, with the entry's own expiry. Skipped if
    /// any write to this stripe happened since the read began: the copy may be outdated.
    async fn promote_to_memory(
        &self,
        key: &Key,
        ty: &DataTypeSpec,
        stripe: &Stripe,
        epoch: u64,
        entry: &Arc<Entry>,
    ) {
        if !self.memory_usable(ty) {
            return;
        }
        let _g = Self::lock(stripe).await;
        if stripe.epoch.load(Ordering::Acquire) == epoch {
            self.inner
                .memory
                .insert(key.as_arc().clone(), entry.clone());
        }
    }

    /// Copies a disk hit into Redis in the background with its remaining lifetime, only if
    /// Redis has no value for the key (`SET NX`: never over a newer write).
    fn promote_to_redis(
        &self,
        key: &Key,
        ty: &DataTypeSpec,
        entry: &Arc<Entry>,
        now: Timestamp,
        epoch: u64,
    ) {
        let redis_ttl = deadline(&entry.meta, ty).duration_since(now);
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
        let inner = &*self.inner;
        let ty = inner.config.data_types.resolve(key)?;
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
        let expires_at = as_of.unwrap_or(now).saturating_add(ttl);
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
            },
            value: value.bytes,
        });
        // Write order: disk (durable) → memory → Redis, all under the key's stripe lock so the
        // tiers end in the same order as the writes; then the announcement. If Redis misses the
        // write, its old copy is marked dirty and removed as soon as Redis answers again.
        let stripe = self.stripe(key.as_str());
        let mut redis_fixed = true;
        {
            let _g = Self::lock(stripe).await;
            inner
                .disk
                .put(key.as_str(), &entry, ty.compress_above, now)?;
            if ty.placement.in_memory() {
                inner.memory.insert(key.as_arc().clone(), entry.clone());
            } else {
                inner.memory.remove(key.as_str());
            }
            stripe.epoch.fetch_add(1, Ordering::AcqRel);
            if let Some(redis) = self.redis_for(ty) {
                let written = if size <= inner.config.redis.max_value_size {
                    match codec::encode(key.as_str(), &entry, ty.compress_above) {
                        Ok(envelope) => redis
                            .set(key.as_str(), &envelope, expires_at.duration_since(now))
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
                    redis_fixed = false;
                }
            }
        }
        self.announce('s', now, key.as_str(), redis_fixed).await;
        inner
            .stats
            .of_type(ty.id)
            .sets
            .fetch_add(1, Ordering::Relaxed);
        Ok(entry)
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
            let on_disk = inner.disk.remove(key.as_str());
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

    async fn bump_all_epochs(&self) {
        for s in self.inner.stripes.iter() {
            let _g = Self::lock(s).await;
            s.epoch.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Drops this instance's memory copy of `key` (another instance changed it).
    pub(crate) async fn forget(&self, key: &str) {
        let stripe = self.stripe(key);
        let _g = Self::lock(stripe).await;
        self.inner.memory.remove(key);
        stripe.epoch.fetch_add(1, Ordering::AcqRel);
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

    /// Writes buffered access times and counters to the index.
    ///
    /// # Errors
    /// [`Error::Index`] when the writes fail; counters are kept for the next attempt.
    pub fn flush(&self) -> Result<()> {
        self.inner.disk.flush_touches()?;
        let deltas = self.inner.stats.take_deltas();
        let rows: Vec<(&str, &str, &str, u64)> = deltas
            .iter()
            .map(|(t, y, n, v)| (*t, y.as_str(), *n, *v))
            .collect();
        if let Err(e) = self.inner.disk.add_counters(&rows) {
            self.inner.stats.restore_deltas(&deltas);
            return Err(e);
        }
        Ok(())
    }

    /// Describes `key` in every tier without promoting it, removing it, or counting a read.
    ///
    /// # Errors
    /// Key errors; [`Error::Index`] / [`Error::Io`] when the disk tier cannot be read.
    pub fn inspect(&self, key: &Key) -> Result<Inspection> {
        let inner = &*self.inner;
        let ty = inner.config.data_types.resolve(key)?;
        let now = inner.clock.now();
        let mem = inner.memory.peek(key.as_str());
        let disk = inner.disk.row_info(key.as_str())?;
        let entry = match &mem {
            Some(e) => Some(e.clone()),
            None if disk.is_some() => inner.disk.get(key.as_str(), now)?.map(Arc::new),
            None => None,
        };
        let fresh = entry
            .as_ref()
            .is_some_and(|e| now < deadline(&e.meta, ty) && !e.meta.is_future_stamped_at(now));
        Ok(Inspection {
            now,
            in_memory: mem.is_some(),
            entry,
            disk,
            fresh,
        })
    }

    /// Per-type write and guard counters.
    pub(crate) fn type_counters(&self, type_id: usize) -> &crate::stats::TypeCounters {
        self.inner.stats.of_type(type_id)
    }

    /// Counters of cleanup passes, for maintenance.
    pub(crate) fn upkeep_counters(&self) -> &UpkeepCounters {
        &self.inner.upkeep
    }

    /// The disk tier, for maintenance.
    pub(crate) fn disk(&self) -> &DiskTier {
        &self.inner.disk
    }

    /// The Redis tier's circuit-breaker state, when Redis is configured.
    #[must_use]
    pub fn redis_state(&self) -> Option<crate::tier::breaker::BreakerState> {
        self.inner.redis.as_ref().map(RedisTier::breaker_state)
    }

    /// Checks that the disk tier answers (for readiness probes).
    ///
    /// # Errors
    /// [`Error::Index`] when the index cannot be queried.
    pub fn ping(&self) -> Result<()> {
        self.inner.disk.len().map(|_| ())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let deltas = self.stats.take_deltas();
        let rows: Vec<(&str, &str, &str, u64)> = deltas
            .iter()
            .map(|(t, y, n, v)| (*t, y.as_str(), *n, *v))
            .collect();
        let _ = self.disk.add_counters(&rows);
    }
}
