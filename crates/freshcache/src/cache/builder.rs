//! Opening a cache: the clock, the tiers, the background tasks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::{Cache, Inner, STRIPES, Stripe, UpkeepCounters, coherence, follow};
use crate::clock::{Clock, SharedClock, SystemClock, Timestamp};
use crate::config::Config;
use crate::config::{RedisConfig, RedisUrl};
use crate::error::{Error, Result};
use crate::metrics::LatencyHistogram;
use crate::stats::Stats;
use crate::tier::disk::{ChangeFollower, DiskTier, FreeSpace, StatvfsFreeSpace};
use crate::tier::memory::MemoryTier;
use crate::tier::redis::{RedisOptions, RedisTier};

/// The cache's clock. The system clock is called directly rather than through a `dyn Clock`:
/// every lookup reads the clock first, and on a memory hit the indirect call is a visible
/// share of the whole lookup.
#[derive(Clone)]
pub(super) enum CacheClock {
    System,
    Injected(SharedClock),
}

impl CacheClock {
    #[inline]
    pub(super) fn now(&self) -> Timestamp {
        match self {
            Self::System => SystemClock.now(),
            Self::Injected(clock) => clock.now(),
        }
    }

    /// The clock's monotonic reading (see [`Clock::monotonic`]).
    pub(super) fn monotonic(&self) -> Duration {
        match self {
            Self::System => SystemClock.monotonic(),
            Self::Injected(clock) => clock.monotonic(),
        }
    }

    /// The same clock as a [`SharedClock`], for the tiers that keep one.
    pub(super) fn shared(&self) -> SharedClock {
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
    sharing: Sharing,
}

/// Who else uses the cache directory, and so what the cache must follow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Sharing {
    /// Other processes on this host may use the directory (the default): without Redis, a
    /// follower thread reads the index's change feed and drops memory copies others replaced.
    #[default]
    Host,
    /// Only this process uses the directory: no follower. Another process writing to it
    /// anyway would not be heard of until the values' TTL ran out.
    Exclusive,
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

    /// Declares who else uses the cache directory (see [`Sharing`]); [`Sharing::Host`] unless
    /// told otherwise.
    pub fn sharing(mut self, sharing: Sharing) -> Self {
        self.sharing = sharing;
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
            Some(url) => Some(
                RedisTier::connect(&redis_options(url, &self.config.redis), self.clock.shared())
                    .await?,
            ),
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
            sharing,
        } = self;
        let mut disk = open_disk(&config)?;
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
        let instance_id = format!("{:016x}", crate::random::u64());
        // Without Redis, processes sharing the directory hear of each other's changes through
        // the index's change feed (with Redis, through its channel).
        disk.record_changes_as(&instance_id);
        let follower = match (&redis, sharing) {
            (None, Sharing::Host) => Some(ChangeFollower::open_for_tier(&config.metadata_path)?),
            _ => None,
        };
        let cache = Cache {
            inner: Arc::new(Inner {
                config,
                memory: Arc::new(memory),
                disk,
                locations: super::located::Locations::default(),
                redis,
                instance_id: instance_id.clone(),
                l1_trusted: Arc::new(AtomicBool::new(true)),
                redis_dirty: Mutex::new(Default::default()),
                redis_dirty_any: AtomicBool::new(false),
                unsent: Mutex::new(Vec::new()),
                redis_dirty_prefixes: Mutex::new(Vec::new()),
                redis_corrupt: AtomicU64::new(0),
                _closing: closing,
                closed,
                stats: Arc::new(stats),
                stripes: (0..STRIPES).map(|_| Stripe::default()).collect(),
                changes: Arc::new(AtomicU64::new(0)),
                tags: Arc::new(super::lineage::TagTimes::default()),
                tag_invalidations: AtomicU64::new(0),
                hasher: Default::default(),
                inflight: Mutex::new(HashMap::new()),
                memory_latency: LatencyHistogram::default(),
                redis_latency: LatencyHistogram::default(),
                disk_latency: LatencyHistogram::default(),
                upkeep: UpkeepCounters::default(),
                opened_at: clock.now(),
                clock,
                follower: Mutex::new(None),
                committer: Mutex::new(None),
            }),
        };
        super::tags::load(&cache.inner.disk, &cache.inner.tags)?;
        let delay = cache.inner.config.disk.write_behind;
        if !delay.is_zero() {
            let committer = super::behind::spawn(&cache, delay);
            *cache
                .inner
                .committer
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = committer;
        }
        if let Some(follower) = follower {
            let running = follow::spawn(&cache, follower, instance_id);
            *cache
                .inner
                .follower
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = running;
        }
        Ok(cache)
    }
}

/// Opens the disk tier of `config`. The index also keeps the audit, the persisted counters,
/// the cleanup history, tag invalidation times and the lineage's reverse index, each in a table
/// its own module defines.
fn open_disk(config: &Config) -> Result<DiskTier> {
    DiskTier::open_with_tables(
        &config.cache_dir,
        &config.metadata_path,
        config.disk.inline_max,
        &[
            crate::freshness::audit::SCHEMA,
            crate::stats::persisted::SCHEMA,
            crate::maintenance::history::SCHEMA,
            super::tags::SCHEMA,
            super::lineage::EDGES_SCHEMA,
        ],
    )
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
            sharing: Sharing::Host,
        }
    }
}

/// The Redis tier's options, from the configured URL and `redis:` section.
fn redis_options(url: &RedisUrl, cfg: &RedisConfig) -> RedisOptions {
    RedisOptions {
        url: url.expose().to_owned(),
        redacted_url: url.redacted(),
        cluster: url.is_cluster(),
        namespace: cfg.namespace.clone(),
        timeout: cfg.timeout,
        connect_timeout: cfg.connect_timeout,
        breaker_failures: cfg.breaker_failures,
        breaker_open_for: cfg.breaker_open_for,
        password: cfg.password.clone(),
        username: cfg.username.clone(),
        tls_ca_file: cfg.tls_ca_file.clone(),
    }
}
