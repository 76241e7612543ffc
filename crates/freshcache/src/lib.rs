//! freshcache: a multi-tier cache for time-sensitive signals that never serves a value past
//! its TTL.
//!
//! Values live in memory (L1) and on disk (L3: blob files indexed by SQLite). Every entry
//! carries its own expiry, stamped once when written and checked on every read at every tier
//! against an injected clock. A hit in a lower tier is promoted upward with its remaining
//! lifetime, never a fresh one.
//!
//! ```no_run
//! # async fn demo() -> freshcache::Result<()> {
//! use freshcache::{Cache, Config, Key, Lookup};
//!
//! let cache = Cache::open(Config::default())?;
//! let key = Key::odds("g42", 1_700_000_000)?;
//! cache.set(&key, "1.91").await?;
//! if let Lookup::Fresh(hit) = cache.get(&key).await? {
//!     println!("{:?} from {}, {:?} left", hit.value(), hit.source.name(), hit.remaining());
//! }
//! # Ok(()) }
//! ```
//!
//! # Layout
//! Imports run one way: configuration and plain data at the bottom, the tiers above them,
//! the cache over the tiers, features (guard, fetch, warm, maintenance) over the cache, and
//! metrics reading snapshots.
//!
//! - [`config`]: the raw `runtime.yml` and the validated [`Config`] (imports no behaviour).
//! - [`key`]: validated hierarchical [`Key`]s and [`KeyPrefix`]es.
//! - [`datatype`]: data types resolved from key prefixes (TTL, size, placement, stale policy).
//! - [`clock`]: the [`Clock`] trait (a wall-clock [`Timestamp`] and a monotonic reading),
//!   [`SystemClock`], [`ManualClock`], and a [`clock::Stopwatch`] for latency only.
//! - [`entry`]: [`Entry`] = value bytes + [`Meta`]; serde codecs.
//! - [`codec`]: the versioned, checksummed envelope every tier stores.
//! - `tier` (crate-private): the stores — `memory` (L1), `redis` (L2: connection, failures
//!   with their kind, options built by the cache, circuit breaker) and `disk` (L3: blob files
//!   and the SQLite index: schema, connections, blobs, free space, the access-time queue,
//!   deletes, upkeep). A tier stores bytes and metadata and judges nothing.
//! - [`cache`]: the orchestrator ([`Cache`]): `builder`, `read` (one step per tier), `write`,
//!   `pending` (what Redis and other instances still have to be told), `coherence`, `fetch`
//!   (coalesced loaders), `report` (stats and metric snapshots).
//! - [`freshness`]: the one judge of fresh / stale / expired / future-stamped that every read
//!   path and the guard call; the inference guard ([`Cache::require_fresh`]); its audit table.
//! - [`fetch`]: conditional HTTP fetch into the cache ([`fetch::Fetcher`]: ETag /
//!   Last-Modified, 304 re-validation, bounded bodies, `Cache-Control` that may shorten TTLs).
//! - [`warm`]: preloading listed keys from URLs or files; readiness of critical ones.
//! - [`maintenance`]: cleanup passes (expired sweep, size limit, repair), `doctor`, the cron
//!   [`maintenance::Schedule`], and the cleanup history table.
//! - [`stats`]: counters, the persisted-counters table and the stats report.
//! - [`metrics`]: Prometheus families read from a [`metrics::MetricsSource`] at scrape time.
//! - [`error`]: the [`Error`] type and its one classification ([`ErrorClass`]) behind HTTP
//!   statuses, exit codes and Python exception classes.

pub mod cache;
pub mod clock;
pub mod codec;
pub mod config;
pub mod datatype;
pub mod entry;
pub mod error;
pub mod fetch;
pub mod freshness;
pub mod key;
pub mod maintenance;
pub mod metrics;
mod random;
mod report;
pub mod stats;
pub(crate) mod tier;
mod url;
pub mod warm;

/// Call in a child process right after `fork()`, before it opens a cache (the Python package
/// does, from `os.register_at_fork`). The child has only the thread that forked: its
/// per-thread generator, which draws blob names, is reseeded from the operating system, so
/// children forked from one parent do not draw the same names; and the system clock stops
/// relying on the parent's wall-clock watcher thread, which the child does not have.
///
/// A cache opened before the fork cannot be used in the child (its index connections and
/// threads belong to the parent): from this call on, its disk tier refuses every read and
/// write of the index with [`Error::Index`] (a child that returned into a call of such a cache,
/// from a loader that forked, gets that error rather than writing through the parent's
/// connections). No index connection may be open in the parent at the fork
/// for the child to open the same directory safely (the Python package closes them before
/// each fork and opens them again after it).
pub fn after_fork_in_child() {
    FORKS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    fastrand::seed(random::u64());
    clock::forget_watcher();
}

/// Forks this process's copy of the library was told of ([`after_fork_in_child`]): a disk
/// tier opened at another count belongs to a parent, and refuses to touch its index.
static FORKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub(crate) fn forks() -> u64 {
    FORKS.load(std::sync::atomic::Ordering::Relaxed)
}

pub use cache::{
    Cache, CacheBuilder, Hit, InputChecks, Inspection, Lookup, MemoryRecall, ReadOptions,
    RecallStamp, Recallable, Recalled, Sharing, Source, Value,
};
pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use config::Config;
pub use datatype::{DataTypeSpec, Placement, StalePolicy, TtlOverride};
pub use entry::{Codec, Entry, Input, Lineage, LineageCheck, Meta};
pub use error::{
    ConfigError, Error, ErrorClass, FetchErrorKind, InputProblem, RedisErrorKind, RefusedItem,
    Result, StorageFault,
};
pub use key::{Key, KeyPrefix};
pub use stats::StatsReport;
pub use tier::TierKind;
pub use tier::breaker::BreakerState;
pub use tier::disk::{FreeSpace, RowInfo};

/// Internals reached by this crate's own integration tests and benchmarks: the fault seams of
/// the disk tier and the bare tiers. Not part of the API; no stability promise.
#[doc(hidden)]
pub mod internals {
    pub use crate::tier::disk::DiskTier;
    pub use crate::tier::disk::fault::{BlobStep, FsFaults, WritePoint};
    pub use crate::tier::memory::MemoryTier;
}

#[cfg(test)]
mod layering;

/// The README's Rust examples, compiled as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeExamples;
