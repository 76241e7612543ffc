//! The orchestrator: read-through L1 → L2 → L3, write-through, promotion with the remaining
//! lifetime, prefix invalidation and coalesced loading.
//!
//! Files: `builder` opens a cache, `read` looks up (one step per tier, each judged by
//! `freshness::judge` on the copy actually read), `write` stores, deletes and
//! invalidates, `pending` keeps what Redis and other instances still have to be told,
//! `coherence` follows other instances' announcements, `fetch` coalesces loaders, `report`
//! builds stats and metrics snapshots.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::clock::Timestamp;
use crate::config::Config;
use crate::datatype::DataTypeSpec;
use crate::entry::Entry;
use crate::error::{LoaderError, Result};
use crate::key::Key;
use crate::metrics::LatencyHistogram;
use crate::stats::Stats;
use crate::tier::disk::DiskTier;
use crate::tier::memory::MemoryTier;
use crate::tier::redis::RedisTier;

mod batch;
mod behind;
mod builder;
mod coherence;
mod fetch;
mod follow;
mod lineage;
mod located;
mod peek;
mod pending;
mod read;
mod recall;
mod report;
mod tags;
mod types;
mod write;

use builder::CacheClock;
pub use builder::{CacheBuilder, Sharing};
pub(crate) use lineage::prune_edges as prune_lineage_edges;
pub use recall::{MemoryRecall, RecallStamp, Recallable, Recalled};
pub(crate) use types::Purpose;
pub use types::{Hit, InputChecks, Inspection, Lookup, ReadOptions, Source, Value};

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
    /// Shared with the change follower thread (which holds no handle on the cache).
    memory: Arc<MemoryTier>,
    disk: DiskTier,
    /// Where recent disk reads found their values, to read them again without the index.
    locations: located::Locations,
    /// L2, when `redis_url` is set.
    redis: Option<RedisTier>,
    /// Identifies this instance's announcements, so it ignores its own.
    instance_id: String,
    /// False while the invalidation subscription is down: memory copies may be outdated, so
    /// the memory tier is bypassed until the subscription is back.
    l1_trusted: Arc<std::sync::atomic::AtomicBool>,
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
    /// Shared with [`MemoryRecall`] handles, which count the hits they serve again.
    stats: Arc<Stats>,
    stripes: Arc<[Stripe]>,
    /// Counts every change this process made or learnt of (writes, deletes, invalidations, other
    /// processes' and instances' changes): a lineage check remembered at one count stands only
    /// while the count is unchanged. Shared with the change follower thread.
    changes: Arc<AtomicU64>,
    /// The latest invalidation time of each tag invalidated.
    tags: Arc<lineage::TagTimes>,
    /// Tag invalidations made through this instance.
    tag_invalidations: AtomicU64,
    hasher: std::collections::hash_map::RandomState,
    inflight: Mutex<HashMap<Arc<str>, watch::Receiver<Outcome>>>,
    memory_latency: LatencyHistogram,
    redis_latency: LatencyHistogram,
    disk_latency: LatencyHistogram,
    upkeep: UpkeepCounters,
    opened_at: Timestamp,
    /// The change follower thread, stopped and joined when the cache is dropped (so the index
    /// is closed when the last handle's drop returns).
    follower: Mutex<Option<follow::Running>>,
    /// The write-behind committer thread, when `cache.disk.write_behind` is set.
    committer: Mutex<Option<behind::Committer>>,
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

impl Cache {
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
    /// [`Error::UnknownDataType`](crate::Error::UnknownDataType) or [`Error::InvalidKey`](crate::Error::InvalidKey) (segment count).
    pub fn data_type(&self, key: &Key) -> Result<&Arc<DataTypeSpec>> {
        self.inner.config.data_types.resolve(key)
    }

    fn stripe(&self, key: &str) -> &Stripe {
        &self.inner.stripes[self.stripe_index(key)]
    }

    fn stripe_index(&self, key: &str) -> usize {
        (self.inner.hasher.hash_one(key) as usize) % STRIPES
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

    /// Whether lookups of `ty` may use the memory tier: unless this process's memory is the
    /// only place its values live, not while the memory copies may be outdated (the change
    /// feed or the Redis subscription is down).
    fn memory_usable(&self, ty: &DataTypeSpec) -> bool {
        ty.placement.in_memory()
            && (self.memory_only_here(ty) || self.inner.l1_trusted.load(Ordering::Acquire))
    }

    /// True when values of `ty` live in this process's memory and nowhere else (no disk, and no
    /// Redis to share them): no other process has copies to keep them coherent with.
    fn memory_only_here(&self, ty: &DataTypeSpec) -> bool {
        !ty.placement.in_disk() && self.redis_for(ty).is_none()
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

    /// Routes every blob write of this cache's disk tier through `faults`: the seam fault
    /// tests use for failures that cannot be caused for real. Can be set once; false when
    /// faults were already injected.
    #[doc(hidden)]
    pub fn inject_fs_faults(&self, faults: Arc<dyn crate::tier::disk::fault::FsFaults>) -> bool {
        self.inner.disk.inject_faults(faults)
    }

    /// The Redis tier's circuit-breaker state, when Redis is configured.
    #[must_use]
    pub fn redis_state(&self) -> Option<crate::tier::breaker::BreakerState> {
        self.inner.redis.as_ref().map(RedisTier::breaker_state)
    }

    /// Checks that the disk tier answers (for readiness probes).
    ///
    /// # Errors
    /// [`Error::Index`](crate::Error::Index) when the index cannot be queried.
    pub fn ping(&self) -> Result<()> {
        self.inner.disk.len().map(|_| ())
    }
}

impl Inner {
    /// Stops the write-behind committer, if one runs, and waits for it.
    fn stop_committer(&self) {
        let committer = self
            .committer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(c) = committer {
            c.stop();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(follower) = self
            .follower
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            follower.stop();
        }
        self.stop_committer();
        // Commits queued writes first (every use of the index does).
        let _ = crate::stats::persisted::save(&self.disk, &self.stats);
    }
}
