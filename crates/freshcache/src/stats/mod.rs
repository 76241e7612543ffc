//! Counters per tier and data type, and the report built from them.
//!
//! Counters live in memory (atomics on the hot path) and are periodically added to the index's
//! `counters` table, so `freshcache stats` in another process sees totals across runs.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::tier::TierKind;

pub(crate) mod persisted;

/// Tiers that keep per-type lookup counters.
pub(crate) const TIERS: [TierKind; 3] = [TierKind::Memory, TierKind::Redis, TierKind::Disk];

/// Stripes of a [`StripedCounter`] (and of the latency histograms).
pub(crate) const COUNTER_STRIPES: usize = 8;

/// This thread's stripe, below [`COUNTER_STRIPES`]: threads take them in turn, so a few busy
/// threads add to different cache lines.
#[inline]
pub(crate) fn thread_stripe() -> usize {
    thread_local! {
        static STRIPE: usize = {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            (NEXT.fetch_add(1, Ordering::Relaxed) % COUNTER_STRIPES as u64) as usize
        };
    }
    STRIPE.with(|s| *s) % COUNTER_STRIPES
}

/// One stripe on a cache line of its own (two lines: adjacent-line prefetch pairs them).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe(AtomicU64);

/// A counter spread over stripes, each thread adding to its own: hits are counted on every
/// memory lookup, and threads adding to one shared atomic would take turns owning its cache
/// line. Reads sum the stripes. The method names follow [`AtomicU64`]'s.
#[derive(Debug, Default)]
pub(crate) struct StripedCounter([Stripe; COUNTER_STRIPES]);

impl StripedCounter {
    /// Adds `n` to this thread's stripe.
    #[inline]
    pub fn fetch_add(&self, n: u64, order: Ordering) {
        self.0[thread_stripe()].0.fetch_add(n, order);
    }

    /// The total over every stripe.
    pub fn load(&self, order: Ordering) -> u64 {
        self.0
            .iter()
            .fold(0u64, |acc, s| acc.wrapping_add(s.0.load(order)))
    }
}

/// Lookup counters of one tier for one data type.
#[derive(Debug, Default)]
pub(crate) struct TierCounters {
    pub hits: StripedCounter,
    pub misses: AtomicU64,
    pub expirations: AtomicU64,
}

/// Write and loader counters of one data type.
#[derive(Debug, Default)]
pub(crate) struct TypeCounters {
    pub sets: AtomicU64,
    pub deletes: AtomicU64,
    pub loads: AtomicU64,
    pub load_errors: AtomicU64,
    pub coalesced: AtomicU64,
    pub stale_served: AtomicU64,
    /// Lookups that found an expired value (once per lookup, whichever tier held it).
    pub expired_reads: AtomicU64,
    /// Copies not served because they were stamped later than the reader's clock.
    pub future_stamped: AtomicU64,
    /// Signals the freshness guard checked.
    pub checks: AtomicU64,
    /// Signals the freshness guard refused as stale or missing.
    pub violations: AtomicU64,
}

/// All counters of one cache instance.
#[derive(Debug)]
pub(crate) struct Stats {
    pub type_names: Vec<String>,
    tiers: Vec<TierCounters>,
    types: Vec<TypeCounters>,
    flushed: Mutex<Vec<u64>>,
}

fn tier_index(t: TierKind) -> usize {
    match t {
        TierKind::Memory => 0,
        TierKind::Redis => 1,
        TierKind::Disk => 2,
    }
}

impl Stats {
    pub fn new(type_names: Vec<String>) -> Self {
        let n = type_names.len();
        let s = Self {
            tiers: (0..n * TIERS.len())
                .map(|_| TierCounters::default())
                .collect(),
            types: (0..n).map(|_| TypeCounters::default()).collect(),
            flushed: Mutex::new(Vec::new()),
            type_names,
        };
        let len = s.flat().len();
        *s.flushed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = vec![0; len];
        s
    }

    pub fn tier(&self, tier: TierKind, type_id: usize) -> &TierCounters {
        &self.tiers[type_id * TIERS.len() + tier_index(tier)]
    }

    pub fn of_type(&self, type_id: usize) -> &TypeCounters {
        &self.types[type_id]
    }

    /// Every counter as `(tier, type, name, value)`, in a stable order.
    fn flat(&self) -> Vec<(&'static str, &str, &'static str, u64)> {
        let mut out = Vec::new();
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        for (id, name) in self.type_names.iter().enumerate() {
            for t in TIERS {
                let c = self.tier(t, id);
                out.push((
                    t.name(),
                    name.as_str(),
                    "hits",
                    c.hits.load(Ordering::Relaxed),
                ));
                out.push((t.name(), name.as_str(), "misses", ld(&c.misses)));
                out.push((t.name(), name.as_str(), "expirations", ld(&c.expirations)));
            }
            let c = self.of_type(id);
            for (n, v) in [
                ("sets", &c.sets),
                ("deletes", &c.deletes),
                ("loads", &c.loads),
                ("load_errors", &c.load_errors),
                ("coalesced", &c.coalesced),
                ("stale_served", &c.stale_served),
                ("expired_reads", &c.expired_reads),
                ("future_stamped", &c.future_stamped),
                ("checks", &c.checks),
                ("violations", &c.violations),
            ] {
                out.push(("all", name.as_str(), n, ld(v)));
            }
        }
        out
    }

    /// Counter increases since the previous call, for persisting; marks them as taken.
    pub fn take_deltas(&self) -> Vec<(&'static str, String, &'static str, u64)> {
        let now = self.flat();
        let mut flushed = self
            .flushed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = Vec::new();
        for (i, (tier, ty, name, v)) in now.into_iter().enumerate() {
            let before = flushed.get(i).copied().unwrap_or(0);
            if v > before {
                out.push((tier, ty.to_owned(), name, v - before));
            }
            if let Some(slot) = flushed.get_mut(i) {
                *slot = v;
            }
        }
        out
    }

    /// Puts deltas back after a failed persist, so they are retried next time.
    pub fn restore_deltas(&self, deltas: &[(&'static str, String, &'static str, u64)]) {
        let keys = self.flat();
        let mut flushed = self
            .flushed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (tier, ty, name, d) in deltas {
            if let Some(slot) = keys
                .iter()
                .position(|(t, y, n, _)| t == tier && y == ty && n == name)
                .and_then(|i| flushed.get_mut(i))
            {
                *slot = slot.saturating_sub(*d);
            }
        }
    }

    /// Counters not yet persisted, as `(tier, type, name) -> value`.
    pub fn unflushed(&self) -> Vec<(&'static str, String, &'static str, u64)> {
        let flushed = self
            .flushed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        self.flat()
            .into_iter()
            .enumerate()
            .map(|(i, (t, y, n, v))| {
                (
                    t,
                    y.to_owned(),
                    n,
                    v - flushed.get(i).copied().unwrap_or(0).min(v),
                )
            })
            .collect()
    }
}

/// Hits over lookups; `None` before the first lookup.
#[must_use]
pub fn ratio(hits: u64, misses: u64) -> Option<f64> {
    let total = hits + misses;
    (total > 0).then(|| hits as f64 / total as f64)
}

/// One tier in a [`StatsReport`].
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TierReport {
    /// `memory`, `redis` or `disk`.
    pub tier: &'static str,
    /// Whether the tier is in use.
    pub state: &'static str,
    /// Entries held (this process's view for memory).
    pub entries: u64,
    /// Bytes held.
    pub bytes: u64,
    /// Byte budget, when bounded. For the disk tier it bounds [`Self::footprint_bytes`].
    pub max_bytes: Option<u64>,
    /// What the tier takes on its filesystem, in allocated bytes as `du` counts them: for
    /// the disk tier, the blob files, the index with its WAL, the reserve and the
    /// directories. `None` for tiers that keep nothing on disk (or when it could not be read).
    pub footprint_bytes: Option<u64>,
    /// Lookups served fresh from this tier.
    pub hits: u64,
    /// Lookups that reached this tier and found nothing fresh.
    pub misses: u64,
    /// `hits / (hits + misses)`.
    pub hit_ratio: Option<f64>,
    /// Entries found expired on read.
    pub expirations: u64,
    /// Entries evicted for capacity.
    pub evictions: u64,
}

/// One data type in a [`StatsReport`].
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TypeReport {
    /// Data type name.
    pub data_type: String,
    /// Key prefix.
    pub prefix: String,
    /// Configured TTL in seconds.
    pub ttl_seconds: f64,
    /// Entries on disk.
    pub entries: u64,
    /// Entries in this process's memory tier.
    pub memory_entries: u64,
    /// Value bytes on disk.
    pub bytes: u64,
    /// Lookups answered fresh by any tier.
    pub hits: u64,
    /// Lookups no tier could answer fresh.
    pub misses: u64,
    /// `hits / (hits + misses)`.
    pub hit_ratio: Option<f64>,
    /// Lookups that found an expired value (counted once per lookup).
    pub expirations: u64,
    /// Copies not served because they were stamped later than the reader's clock (a writer
    /// with a clock ahead, or a wall clock that stepped back).
    pub future_stamped: u64,
    /// Rows on disk past their expiry, awaiting cleanup.
    pub expired_on_disk: u64,
    /// Age in seconds of the oldest entry on disk.
    pub oldest_entry_age_seconds: Option<f64>,
    /// Age in seconds of the newest (freshest) entry on disk.
    pub newest_entry_age_seconds: Option<f64>,
    /// Writes.
    pub sets: u64,
    /// Loader calls made by `get_or_fetch`.
    pub loads: u64,
    /// Loader calls that failed.
    pub load_errors: u64,
    /// Callers that waited on another caller's load instead of loading.
    pub coalesced: u64,
}

/// The `stats` report: per tier and per data type.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct StatsReport {
    /// Report format version.
    pub schema_version: u32,
    /// When the report was made (RFC 3339).
    pub generated_at: String,
    /// The cache directory.
    pub cache_dir: String,
    /// Per tier.
    pub tiers: Vec<TierReport>,
    /// Per data type.
    pub data_types: Vec<TypeReport>,
    /// Damaged entries found and removed by this process.
    pub corrupt_entries: u64,
}
