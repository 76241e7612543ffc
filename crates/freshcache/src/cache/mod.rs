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
use crate::config::Config;
use crate::datatype::{DataTypeSpec, Placement, TtlOverride};
use crate::entry::{Entry, Meta, checksum};
use crate::error::{Error, LoaderError, Result, clip};
use crate::key::{Key, KeyPrefix};
use crate::metrics::LatencyHistogram;
use crate::stats::Stats;
use crate::tier::TierKind;
use crate::tier::disk::DiskTier;
use crate::tier::memory::{MemoryLookup, MemoryTier};

mod fetch;
mod report;
mod types;

pub(crate) use types::Purpose;
pub use types::{Hit, Inspection, Lookup, ReadOptions, Source, Value};

/// Number of write stripes; writes to keys in one stripe are serialised.
const STRIPES: usize = 64;

type Outcome = Option<std::result::Result<Arc<Entry>, LoaderError>>;

#[derive(Debug, Default)]
struct Stripe {
    lock: Mutex<()>,
    epoch: AtomicU64,
}

struct Inner {
    config: Config,
    clock: SharedClock,
    memory: MemoryTier,
    disk: DiskTier,
    stats: Stats,
    stripes: Box<[Stripe]>,
    hasher: std::collections::hash_map::RandomState,
    inflight: Mutex<HashMap<Arc<str>, watch::Receiver<Outcome>>>,
    memory_latency: LatencyHistogram,
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

/// Builds a [`Cache`] with a chosen clock.
#[must_use]
pub struct CacheBuilder {
    config: Config,
    clock: SharedClock,
}

impl CacheBuilder {
    /// Uses `clock` instead of the system clock.
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Uses a shared clock.
    pub fn shared_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Opens the tiers.
    ///
    /// # Errors
    /// [`Error::Io`] / [`Error::Index`] when the cache directory or index cannot be opened.
    pub fn open(self) -> Result<Cache> {
        let Self { config, clock } = self;
        if config.redis_url.is_some() {
            tracing::warn!(
                "cache.redis_url is set, but this build has no Redis tier yet; running on memory + disk"
            );
        }
        let disk = DiskTier::open(
            &config.cache_dir,
            &config.metadata_path,
            config.disk.inline_max,
        )?;
        disk.set_size_limit(config.cleanup.max_size_bytes);
        let memory = MemoryTier::new(config.memory.max_bytes);
        let stats = Stats::new(
            config
                .data_types
                .types()
                .iter()
                .map(|t| t.name.to_string())
                .collect(),
        );
        Ok(Cache {
            inner: Arc::new(Inner {
                config,
                memory,
                disk,
                stats,
                stripes: (0..STRIPES).map(|_| Stripe::default()).collect(),
                hasher: Default::default(),
                inflight: Mutex::new(HashMap::new()),
                memory_latency: LatencyHistogram::default(),
                disk_latency: LatencyHistogram::default(),
                upkeep: UpkeepCounters::default(),
                opened_at: clock.now(),
                clock,
            }),
        })
    }
}

/// The instant after which an entry of `ty` must not be served: its own `expires_at`, capped
/// by the type's current TTL unless the type lets callers choose any TTL (so shortening a TTL
/// in the config takes effect on entries already stored).
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
            clock: Arc::new(SystemClock),
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

    fn lock(stripe: &Stripe) -> std::sync::MutexGuard<'_, ()> {
        stripe.lock.lock().unwrap_or_else(PoisonError::into_inner)
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
        self.lookup(key, now, opts, Purpose::Serve)
    }

    pub(crate) fn lookup(
        &self,
        key: &Key,
        now: Timestamp,
        opts: ReadOptions,
        purpose: Purpose,
    ) -> Result<Lookup> {
        let started = Instant::now();
        let (found, answered_by) = self.lookup_tiers(key, now, opts, purpose)?;
        match answered_by {
            TierKind::Memory => self.inner.memory_latency.observe(started.elapsed()),
            _ => self.inner.disk_latency.observe(started.elapsed()),
        }
        Ok(found)
    }

    /// The lookup itself, saying which tier answered (the last one asked, on a miss).
    fn lookup_tiers(
        &self,
        key: &Key,
        now: Timestamp,
        opts: ReadOptions,
        purpose: Purpose,
    ) -> Result<(Lookup, TierKind)> {
        let inner = &*self.inner;
        let ty = inner.config.data_types.resolve(key)?;
        let k = key.as_str();
        let stale_ok = |meta: &Meta| {
            !opts.max_stale.is_zero() && now < deadline(meta, ty).saturating_add(opts.max_stale)
        };

        let mut seen_expired = false;
        match inner.memory.get(k, now) {
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
        let Some(entry) = inner.disk.get(k, now)? else {
            inner
                .stats
                .tier(TierKind::Disk, ty.id)
                .misses
                .fetch_add(1, Ordering::Relaxed);
            return Ok((Lookup::Miss, TierKind::Disk));
        };
        let entry = Arc::new(entry);
        let until = deadline(&entry.meta, ty);
        if now < until {
            inner
                .stats
                .tier(TierKind::Disk, ty.id)
                .hits
                .fetch_add(1, Ordering::Relaxed);
            if ty.placement == Placement::MemoryAndDisk {
                // Promote with the entry's own expiry. Skip if any write to this stripe
                // happened since the disk read began: the copy may be outdated or deleted.
                let _g = Self::lock(stripe);
                if stripe.epoch.load(Ordering::Acquire) == epoch {
                    inner.memory.insert(key.as_arc().clone(), entry.clone());
                }
            }
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
        if stale_ok(&entry.meta) {
            inner
                .stats
                .of_type(ty.id)
                .stale_served
                .fetch_add(1, Ordering::Relaxed);
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
        if entry.meta.expires_at <= now {
            // Lazy removal; a failure here only delays cleanup.
            if let Err(e) = inner.disk.remove_expired(k, entry.meta.expires_at, now) {
                tracing::debug!(error = %e, "lazy removal of an expired entry failed");
            }
        }
        if purpose == Purpose::Audit {
            // The guard reports how stale the refused value was; it never serves it.
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
        self.store(key, value.into(), now)
    }

    fn store(&self, key: &Key, value: Value, now: Timestamp) -> Result<Arc<Entry>> {
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
        let stripe = self.stripe(key.as_str());
        {
            let _g = Self::lock(stripe);
            inner
                .disk
                .put(key.as_str(), &entry, ty.compress_above, now)?;
            match ty.placement {
                Placement::MemoryAndDisk => {
                    inner.memory.insert(key.as_arc().clone(), entry.clone());
                }
                Placement::DiskOnly => {
                    inner.memory.remove(key.as_str());
                }
            }
            stripe.epoch.fetch_add(1, Ordering::AcqRel);
        }
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
        let _g = Self::lock(stripe);
        let in_memory = inner.memory.remove(key.as_str());
        stripe.epoch.fetch_add(1, Ordering::AcqRel);
        let on_disk = inner.disk.remove(key.as_str())?;
        stripe.epoch.fetch_add(1, Ordering::AcqRel);
        inner
            .stats
            .of_type(ty.id)
            .deletes
            .fetch_add(1, Ordering::Relaxed);
        Ok(in_memory || on_disk)
    }

    fn bump_all_epochs(&self) {
        for s in self.inner.stripes.iter() {
            let _g = Self::lock(s);
            s.epoch.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Removes every key starting with `prefix` (matched literally) from every tier; returns
    /// how many distinct keys were removed.
    ///
    /// # Errors
    /// [`Error::Index`] when the disk delete fails (memory copies are dropped regardless).
    pub async fn invalidate_prefix(&self, prefix: &KeyPrefix) -> Result<u64> {
        self.invalidate_range(prefix.as_str(), prefix.upper_bound().as_deref())
    }

    /// Removes keys in `[prefix, upper)` (all keys starting with `prefix`) from every tier and
    /// counts distinct keys removed.
    fn invalidate_range(&self, prefix: &str, upper: Option<&str>) -> Result<u64> {
        let inner = &*self.inner;
        // Epochs move before and after, so a promotion racing with this call cannot put a
        // removed value back into memory.
        self.bump_all_epochs();
        let mem = inner.memory.remove_prefix(prefix);
        let disk = inner.disk.remove_prefix(prefix, upper);
        self.bump_all_epochs();
        let mem_after = inner.memory.remove_prefix(prefix);
        let disk = disk?;
        let mut all: std::collections::HashSet<&str> = disk.iter().map(String::as_str).collect();
        all.extend(mem.iter().chain(&mem_after).map(|k| &**k));
        Ok(all.len() as u64)
    }

    /// Removes everything from every tier (the emergency flush); returns the count.
    ///
    /// # Errors
    /// [`Error::Index`] when the disk delete fails.
    pub async fn invalidate_all(&self) -> Result<u64> {
        self.invalidate_range("", None)
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
        let fresh = entry.as_ref().is_some_and(|e| now < deadline(&e.meta, ty));
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
