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
//! - [`config`]: the raw `runtime.yml` and the validated [`Config`].
//! - [`key`]: validated hierarchical [`Key`]s and [`KeyPrefix`]es.
//! - [`datatype`]: data types resolved from key prefixes (TTL, size, placement).
//! - [`clock`]: the [`Clock`] trait, [`SystemClock`] and [`ManualClock`].
//! - [`entry`]: [`Entry`] = value bytes + [`Meta`]; serde codecs.
//! - [`codec`]: the versioned, checksummed on-disk envelope.
//! - [`tier`]: the memory and disk tiers.
//! - [`cache`]: the orchestrator ([`Cache`]).
//! - [`maintenance`]: cleanup passes (expired sweep, size limit, repair), `doctor`, the
//!   cron [`maintenance::Schedule`].
//! - [`metrics`]: Prometheus families read from the counters at scrape time.
//! - [`stats`]: counters and the stats report.
//! - [`freshness`]: the inference guard ([`Cache::require_fresh`]) and its audit trail.
//! - [`fetch`]: conditional HTTP fetch into the cache ([`fetch::Fetcher`]: ETag /
//!   Last-Modified, 304 re-validation, bounded bodies, `Cache-Control` that may shorten TTLs).
//! - [`warm`]: preloading listed keys from URLs or files; readiness of critical ones.
//! - [`error`]: the [`Error`] type.

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
mod report;
pub mod stats;
pub(crate) mod tier;
pub mod warm;

pub use cache::{Cache, CacheBuilder, Hit, Inspection, Lookup, ReadOptions, Source, Value};
pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use config::Config;
pub use datatype::{DataTypeSpec, Placement, StalePolicy, TtlOverride};
pub use entry::{Codec, Entry, Meta};
pub use error::{ConfigError, Error, FetchErrorKind, Result, StorageFault};
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

/// The README's Rust examples, compiled as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeExamples;
