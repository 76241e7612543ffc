//! Prometheus metrics, read from the cache's own counters at scrape time.
//!
//! The hot path increments plain atomics (the same ones `stats` reports); a [`Collector`]
//! registered on a caller's [`Registry`] turns them into families at scrape time, so metrics
//! cost nothing extra per lookup except the latency histogram. Labels come only from bounded
//! sets: tier names, configured data type names, fixed reasons — never keys or URLs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::stats::{COUNTER_STRIPES, TIERS, thread_stripe};
use crate::tier::TierKind;

/// Upper bounds of the lookup latency buckets, in seconds: 1 µs to 100 ms.
pub const LATENCY_BUCKETS: [f64; 16] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2,
    5e-2, 1e-1,
];

/// The buckets and sum of one stripe of a [`LatencyHistogram`], on cache lines of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct HistogramStripe {
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

/// A lock-free latency histogram with fixed buckets, striped like the hit counters: threads
/// observing memory hits at once would otherwise take turns owning the same cache lines.
#[derive(Debug, Default)]
pub(crate) struct LatencyHistogram([HistogramStripe; COUNTER_STRIPES]);

impl LatencyHistogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        let stripe = &self.0[thread_stripe()];
        stripe.buckets[i].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        stripe.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// (sum in seconds, count, per-bucket counts with their upper bounds).
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len() + 1);
        let mut count = 0u64;
        for (i, bound) in LATENCY_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .enumerate()
        {
            let n = self.0.iter().fold(0u64, |acc, s| {
                acc.wrapping_add(s.buckets[i].load(Ordering::Relaxed))
            });
            count = count.wrapping_add(n);
            buckets.push((bound, n));
        }
        let sum_ns = self.0.iter().fold(0u64, |acc, s| {
            acc.wrapping_add(s.sum_ns.load(Ordering::Relaxed))
        });
        (sum_ns as f64 / 1e9, count, buckets)
    }
}

/// Something that hands out snapshots of its counters (a [`crate::Cache`]): the metrics never
/// reach into what they describe.
pub trait MetricsSource: Clone + std::fmt::Debug + Send + Sync + 'static {
    /// The counters and gauges as they stand now.
    fn metrics_snapshot(&self) -> MetricsSnapshot;
}

/// Exposes a source's counters on a Prometheus registry, read at scrape time.
#[derive(Debug)]
struct CacheCollector<S> {
    source: S,
}

/// Registers the metrics of `source` (a cache) on `registry`.
pub fn register<S: MetricsSource>(registry: &mut Registry, source: &S) {
    registry.register_collector(Box::new(CacheCollector {
        source: source.clone(),
    }));
}

fn counter_family<'a, I>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &'static str,
    values: I,
) -> std::fmt::Result
where
    I: IntoIterator<Item = (&'a str, u64)>,
{
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (l, v) in values {
        ConstCounter::new(v).encode(family.encode_family(&[(label, l)])?)?;
    }
    Ok(())
}

fn gauge_family<'a, I>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &'static str,
    values: I,
) -> std::fmt::Result
where
    I: IntoIterator<Item = (&'a str, f64)>,
{
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (l, v) in values {
        ConstGauge::new(v).encode(family.encode_family(&[(label, l)])?)?;
    }
    Ok(())
}

impl<S: MetricsSource> Collector for CacheCollector<S> {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let m = self.source.metrics_snapshot();
        encode_reads(&mut enc, &m)?;
        encode_lineage(&mut enc, &m)?;
        encode_space(&mut enc, &m)?;
        encode_latency(&mut enc, &m)?;
        encode_upkeep(&mut enc, &m)
    }
}

/// Lookups, expiries, the guard's checks, stale serves and loader outcomes.
// A list of families, not logic: ~85 lines because each family is spelled out with its HELP.
fn encode_reads(enc: &mut DescriptorEncoder<'_>, m: &MetricsSnapshot) -> std::fmt::Result {
    let tier_sum = |f: fn(&TierSnapshot) -> u64| -> Vec<(&str, u64)> {
        TIERS
            .iter()
            .map(|t| {
                (
                    t.name(),
                    m.tiers.iter().filter(|s| s.tier == *t).map(f).sum(),
                )
            })
            .collect()
    };
    counter_family(
        enc,
        "cache_hit",
        "Lookups answered fresh, by tier.",
        "cache_type",
        tier_sum(|s| s.hits),
    )?;
    counter_family(
        enc,
        "cache_miss",
        "Lookups a tier could not answer fresh, by tier.",
        "cache_type",
        tier_sum(|s| s.misses),
    )?;
    counter_family(
        enc,
        "cache_expiration",
        "Entries found expired on read, by data type.",
        "data_type",
        m.types.iter().map(|t| (t.name.as_str(), t.expirations)),
    )?;
    counter_family(
        enc,
        "cache_future_stamped",
        "Copies not served because they were stamped later than this instance's clock \
         (a writer's clock ahead, or this clock stepped back), by data type.",
        "data_type",
        m.types.iter().map(|t| (t.name.as_str(), t.future_stamped)),
    )?;
    counter_family(
        enc,
        "ttl_violation",
        "Signals refused on the inference path for being older than their TTL, by data type.",
        "data_type",
        m.types.iter().map(|t| (t.name.as_str(), t.violations)),
    )?;
    counter_family(
        enc,
        "ttl_check",
        "Signals checked by the freshness guard, by data type.",
        "data_type",
        m.types.iter().map(|t| (t.name.as_str(), t.checks)),
    )?;
    counter_family(
        enc,
        "cache_stale_served",
        "Stale values returned because the call allowed it, by data type.",
        "data_type",
        m.types.iter().map(|t| (t.name.as_str(), t.stale_served)),
    )?;
    {
        let mut family = enc.encode_descriptor(
            "cache_load",
            "get_or_fetch loader outcomes, by data type.",
            None,
            MetricType::Counter,
        )?;
        for t in &m.types {
            for (outcome, v) in [
                ("ok", t.loads.saturating_sub(t.load_errors)),
                ("error", t.load_errors),
                ("coalesced", t.coalesced),
            ] {
                ConstCounter::new(v).encode(
                    family
                        .encode_family(&[("data_type", t.name.as_str()), ("outcome", outcome)])?,
                )?;
            }
        }
    }
    Ok(())
}

/// Lineage: derived values refused by their inputs, tag invalidations.
fn encode_lineage(enc: &mut DescriptorEncoder<'_>, m: &MetricsSnapshot) -> std::fmt::Result {
    counter_family(
        enc,
        "cache_cascade_invalidations",
        "Reads of derived or tagged values found not fresh because an input changed, went \
         stale or away, or a tag was invalidated, by data type of the derived value.",
        "data_type",
        m.types.iter().map(|t| (t.name.as_str(), t.cascades)),
    )?;
    {
        let family = enc.encode_descriptor(
            "cache_tag_invalidations",
            "Tag invalidations made through this instance.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(m.tag_invalidations).encode(family)?;
    }
    Ok(())
}

/// Evictions, damaged entries, sizes, limits and entry counts.
fn encode_space(enc: &mut DescriptorEncoder<'_>, m: &MetricsSnapshot) -> std::fmt::Result {
    {
        let mut family = enc.encode_descriptor(
            "cache_eviction",
            "Entries removed to respect a size limit, by tier.",
            None,
            MetricType::Counter,
        )?;
        for (tier, v) in [("memory", m.memory_evictions), ("disk", m.disk_evictions)] {
            ConstCounter::new(v)
                .encode(family.encode_family(&[("cache_type", tier), ("reason", "size")])?)?;
        }
    }
    counter_family(
        enc,
        "cache_corrupt_entries",
        "Stored entries that failed verification and were removed.",
        "cache_type",
        [("redis", m.redis_corrupt), ("disk", m.corrupt)],
    )?;
    gauge_family(
        enc,
        "cache_size_bytes",
        "Bytes held, by tier.",
        "cache_type",
        [
            ("memory", m.memory_bytes as f64),
            ("disk", m.disk_bytes as f64),
        ],
    )?;
    gauge_family(
        enc,
        "cache_queued_writes",
        "Writes queued for the disk tier and not yet committed (cache.disk.write_behind; 0 when off).",
        "cache_type",
        [("disk", m.queued_writes as f64)],
    )?;
    counter_family(
        enc,
        "cache_queue_commit_failures",
        "Commits of queued disk writes that failed (the writes stay queued and the next write reports the error).",
        "cache_type",
        [("disk", m.queue_failures)],
    )?;
    counter_family(
        enc,
        "cache_index_skipped_reads",
        "Disk hits read again from the blob file an earlier read of the key found, without an index lookup (no change to the key since).",
        "cache_type",
        [("disk", m.disk_rereads)],
    )?;
    gauge_family(
        enc,
        "cache_footprint_bytes",
        "Bytes the tier takes on its filesystem (allocated blocks: values, index, WAL, reserve, directories); the disk limit bounds this.",
        "cache_type",
        [("disk", m.disk_footprint as f64)],
    )?;
    gauge_family(
        enc,
        "cache_limit_bytes",
        "Configured byte limit, by tier.",
        "cache_type",
        [
            ("memory", m.memory_limit as f64),
            ("disk", m.disk_limit as f64),
        ],
    )?;
    gauge_family(
        enc,
        "cache_entries",
        "Entries held, by tier.",
        "cache_type",
        [
            ("memory", m.memory_entries as f64),
            ("disk", m.disk_entries as f64),
        ],
    )?;
    Ok(())
}

/// Lookup latency histograms by the tier that answered.
fn encode_latency(enc: &mut DescriptorEncoder<'_>, m: &MetricsSnapshot) -> std::fmt::Result {
    {
        let mut family = enc.encode_descriptor(
            "cache_lookup_duration_seconds",
            "Lookup latency, by the tier that answered (disk includes misses). Memory-tier hits are sampled: one lookup in 16 per thread (the first included) is timed, so the memory series' _count is about 1/16 of its hits; cache_hit_total counts every hit.",
            None,
            MetricType::Histogram,
        )?;
        for (tier, h) in [
            ("memory", &m.memory_latency),
            ("redis", &m.redis_latency),
            ("disk", &m.disk_latency),
        ] {
            let labels = [("cache_type", tier)];
            let mut e = family.encode_family(&labels)?;
            e.encode_histogram::<prometheus_client::encoding::NoLabelSet>(h.0, h.1, &h.2, None)?;
        }
    }
    Ok(())
}

/// Cleanup, the circuit breaker, alert thresholds and build facts.
fn encode_upkeep(enc: &mut DescriptorEncoder<'_>, m: &MetricsSnapshot) -> std::fmt::Result {
    counter_family(
        enc,
        "cache_cleanup_runs",
        "Cleanup passes, by outcome.",
        "outcome",
        [("ok", m.cleanup_ok), ("error", m.cleanup_errors)],
    )?;
    gauge_family(
        enc,
        "cache_cleanup_duration_seconds",
        "Duration of the last cleanup pass.",
        "cache_type",
        [("disk", m.cleanup_last_duration.as_secs_f64())],
    )?;
    gauge_family(
        enc,
        "cache_cleanup_last_success_timestamp_seconds",
        "When the last cleanup pass completed (any process), Unix seconds; 0 if never.",
        "cache_type",
        [(
            "disk",
            m.cleanup_last_success
                .map_or(0.0, |t| t.as_millis() as f64 / 1000.0),
        )],
    )?;
    gauge_family(
        enc,
        "cache_circuit_open",
        "1 while a tier's circuit breaker is open.",
        "cache_type",
        [("redis", if m.redis_circuit_open { 1.0 } else { 0.0 })],
    )?;
    gauge_family(
        enc,
        "cache_alert_threshold",
        "Alert thresholds from the `monitoring:` config, for alert rules to compare against.",
        "name",
        [
            ("ttl_violation_ratio", m.ttl_violation_threshold),
            ("hit_ratio", m.hit_ratio_threshold),
            ("disk_usage_ratio", 0.9),
        ],
    )?;
    {
        let family = enc.encode_descriptor(
            "freshcache_start_time_seconds",
            "When this cache instance opened, Unix seconds.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(m.opened_at.as_millis() as f64 / 1000.0).encode(family)?;
    }
    gauge_family(
        enc,
        "freshcache_build_info",
        "Build information; the value is always 1.",
        "version",
        [(env!("CARGO_PKG_VERSION"), 1.0)],
    )?;
    Ok(())
}

/// An alert threshold from `monitoring:` crossed during a watch window.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Breach {
    /// Fresh hits over lookups fell below `cache_hit_ratio_threshold`.
    HitRatio {
        /// Observed ratio in the window.
        ratio: f64,
        /// Configured minimum.
        threshold: f64,
        /// Lookups in the window.
        lookups: u64,
    },
    /// Refused signals over checked signals rose above `ttl_violation_threshold`.
    ViolationRate {
        /// Observed rate in the window.
        rate: f64,
        /// Configured maximum.
        threshold: f64,
        /// Signals checked in the window.
        checks: u64,
    },
}

/// Compares the counters' movement since the last call with the `monitoring:` thresholds,
/// for users without Alertmanager (`serve` logs each breach as a warning).
#[derive(Clone, Debug, Default)]
pub struct ThresholdWatch {
    hits: u64,
    misses: u64,
    checks: u64,
    violations: u64,
}

impl ThresholdWatch {
    /// A watch whose first window starts now.
    #[must_use]
    pub fn new(source: &impl MetricsSource) -> Self {
        let mut w = Self::default();
        let _ = w.check(source, u64::MAX);
        w
    }

    /// Breaches in the window since the previous call; windows with fewer than `min_samples`
    /// lookups (or checks) are not judged.
    pub fn check(&mut self, source: &impl MetricsSource, min_samples: u64) -> Vec<Breach> {
        let m = source.metrics_snapshot();
        let hits: u64 = m.tiers.iter().map(|t| t.hits).sum();
        let misses: u64 = m
            .tiers
            .iter()
            .filter(|t| t.tier == TierKind::Disk)
            .map(|t| t.misses)
            .sum();
        let checks: u64 = m.types.iter().map(|t| t.checks).sum();
        let violations: u64 = m.types.iter().map(|t| t.violations).sum();
        let (dh, dm) = (hits - self.hits.min(hits), misses - self.misses.min(misses));
        let (dc, dv) = (
            checks - self.checks.min(checks),
            violations - self.violations.min(violations),
        );
        *self = Self {
            hits,
            misses,
            checks,
            violations,
        };
        let mut out = Vec::new();
        let lookups = dh + dm;
        if lookups >= min_samples && lookups > 0 {
            let ratio = dh as f64 / lookups as f64;
            if ratio < m.hit_ratio_threshold {
                out.push(Breach::HitRatio {
                    ratio,
                    threshold: m.hit_ratio_threshold,
                    lookups,
                });
            }
        }
        if dc >= min_samples && dc > 0 {
            let rate = dv as f64 / dc as f64;
            if rate > m.ttl_violation_threshold {
                out.push(Breach::ViolationRate {
                    rate,
                    threshold: m.ttl_violation_threshold,
                    checks: dc,
                });
            }
        }
        out
    }
}

/// One tier's counters for one data type.
#[derive(Clone, Debug)]
pub struct TierSnapshot {
    pub(crate) tier: TierKind,
    pub(crate) hits: u64,
    pub(crate) misses: u64,
}

/// One data type's counters.
#[derive(Clone, Debug)]
pub struct TypeSnapshot {
    pub(crate) name: String,
    pub(crate) expirations: u64,
    pub(crate) future_stamped: u64,
    pub(crate) cascades: u64,
    pub(crate) violations: u64,
    pub(crate) checks: u64,
    pub(crate) stale_served: u64,
    pub(crate) loads: u64,
    pub(crate) load_errors: u64,
    pub(crate) coalesced: u64,
}

/// Everything a scrape reports, read at once.
#[derive(Clone, Debug)]
pub struct MetricsSnapshot {
    pub(crate) tiers: Vec<TierSnapshot>,
    pub(crate) types: Vec<TypeSnapshot>,
    pub(crate) memory_evictions: u64,
    pub(crate) disk_evictions: u64,
    pub(crate) corrupt: u64,
    pub(crate) redis_corrupt: u64,
    pub(crate) memory_bytes: u64,
    pub(crate) memory_limit: u64,
    pub(crate) memory_entries: u64,
    pub(crate) disk_bytes: u64,
    pub(crate) disk_footprint: u64,
    pub(crate) disk_limit: u64,
    pub(crate) disk_entries: u64,
    pub(crate) memory_latency: (f64, u64, Vec<(f64, u64)>),
    pub(crate) disk_latency: (f64, u64, Vec<(f64, u64)>),
    pub(crate) cleanup_ok: u64,
    pub(crate) cleanup_errors: u64,
    pub(crate) cleanup_last_duration: Duration,
    pub(crate) cleanup_last_success: Option<crate::clock::Timestamp>,
    pub(crate) ttl_violation_threshold: f64,
    pub(crate) hit_ratio_threshold: f64,
    pub(crate) opened_at: crate::clock::Timestamp,
    pub(crate) redis_circuit_open: bool,
    pub(crate) redis_latency: (f64, u64, Vec<(f64, u64)>),
    pub(crate) tag_invalidations: u64,
    /// Disk writes queued (write-behind) when the snapshot began, and failed commits of them.
    pub(crate) queued_writes: u64,
    pub(crate) queue_failures: u64,
    /// Disk hits read without the index (see `DiskTier::reread`).
    pub(crate) disk_rereads: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_puts_observations_in_the_first_bucket_that_holds_them() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_nanos(800));
        h.observe(Duration::from_micros(3));
        h.observe(Duration::from_secs(2));
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 3);
        assert!((sum - 2.0000038).abs() < 1e-9);
        assert_eq!(buckets[0], (1e-6, 1));
        assert_eq!(buckets[2], (5e-6, 1));
        assert_eq!(buckets.last().copied(), Some((f64::INFINITY, 1)));
    }

    #[test]
    fn histogram_counts_every_thread_whatever_stripe_it_adds_to() {
        let h = LatencyHistogram::default();
        std::thread::scope(|s| {
            for t in 1..=12u64 {
                let h = &h;
                s.spawn(move || {
                    for _ in 0..1000 {
                        h.observe(Duration::from_micros(t));
                    }
                });
            }
        });
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 12_000);
        assert!((sum - 0.078).abs() < 1e-9, "sum {sum}");
        // 1 µs, then 2 µs, then 3..=5 µs, then 6..=10 µs, then 11 and 12 µs.
        let counts: Vec<u64> = buckets.iter().map(|b| b.1).collect();
        assert_eq!(&counts[..5], &[1000, 1000, 3000, 5000, 2000]);
        assert_eq!(counts[5..].iter().sum::<u64>(), 0);
    }
}
