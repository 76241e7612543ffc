//! Reports built from the counters and tiers: `stats` and the metrics snapshot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::Cache;
use crate::error::Result;
use crate::metrics::{MetricsSnapshot, TierSnapshot, TypeSnapshot};
use crate::stats::{StatsReport, TIERS, TierReport, TypeReport, ratio};
use crate::tier::disk::DiskTypeStats;

impl Cache {
    /// `disabled` (no Redis), `up`, or `degraded` while the circuit breaker is not closed.
    pub fn redis_state_name(&self) -> &'static str {
        match self.redis_state() {
            None => "disabled",
            Some(crate::tier::breaker::BreakerState::Closed) => "up",
            Some(_) => "degraded",
        }
    }

    /// Statistics per tier and data type: persisted totals plus this process's unflushed counts.
    ///
    /// # Errors
    /// [`crate::Error::Index`] when the index cannot be queried.
    pub fn stats(&self) -> Result<StatsReport> {
        let inner = &*self.inner;
        let now = inner.clock.now();
        let disk = inner.disk.stats(now)?;
        let mut counters = crate::stats::persisted::load(&inner.disk)?;
        for (t, y, n, v) in inner.stats.unflushed() {
            *counters.entry((t.to_owned(), y, n.to_owned())).or_default() += v;
        }
        let get = |t: &str, y: &str, n: &str| {
            counters
                .get(&(t.to_owned(), y.to_owned(), n.to_owned()))
                .copied()
                .unwrap_or(0)
        };
        let mem_types = inner.memory.per_type();
        let age = |t: crate::Timestamp| now.duration_since(t).as_secs_f64();
        let mut types = Vec::new();
        let mut tier_sums: HashMap<&str, (u64, u64, u64)> = HashMap::new();
        for ty in inner.config.data_types.types() {
            let name = &*ty.name;
            for t in ["memory", "redis", "disk"] {
                let s = tier_sums.entry(t).or_default();
                s.0 += get(t, name, "hits");
                s.1 += get(t, name, "misses");
                s.2 += get(t, name, "expirations");
            }
            let hits = get("memory", name, "hits")
                + get("redis", name, "hits")
                + get("disk", name, "hits");
            let misses = get("disk", name, "misses");
            let d = disk.get(name).cloned().unwrap_or_default();
            types.push(TypeReport {
                data_type: name.to_owned(),
                prefix: ty.prefix.clone(),
                ttl_seconds: ty.ttl.as_secs_f64(),
                entries: d.entries,
                memory_entries: mem_types.get(name).map_or(0, |m| m.0),
                bytes: d.value_bytes,
                hits,
                misses,
                hit_ratio: ratio(hits, misses),
                expirations: get("all", name, "expired_reads"),
                future_stamped: get("all", name, "future_stamped"),
                expired_on_disk: d.expired,
                oldest_entry_age_seconds: d.oldest_stored_at.map(age),
                newest_entry_age_seconds: d.newest_stored_at.map(age),
                sets: get("all", name, "sets"),
                loads: get("all", name, "loads"),
                load_errors: get("all", name, "load_errors"),
                coalesced: get("all", name, "coalesced"),
            });
        }
        let tiers = self.tier_reports(&tier_sums, &disk);
        Ok(StatsReport {
            schema_version: 1,
            generated_at: now.to_string(),
            cache_dir: inner.config.cache_dir.display().to_string(),
            tiers,
            data_types: types,
            corrupt_entries: inner.disk.corrupt_count()
                + inner.redis_corrupt.load(Ordering::Relaxed),
        })
    }

    /// One report per tier: its own sizes and limits, and the hit, miss and expiry sums over
    /// data types.
    fn tier_reports(
        &self,
        tier_sums: &HashMap<&str, (u64, u64, u64)>,
        disk: &HashMap<String, DiskTypeStats>,
    ) -> Vec<TierReport> {
        let inner = &*self.inner;
        let sum = |t: &str| tier_sums.get(t).copied().unwrap_or_default();
        let (mh, mm, me) = sum("memory");
        let (dh, dm, de) = sum("disk");
        let (rh, rm, re) = sum("redis");
        vec![
            TierReport {
                tier: "memory",
                state: "up",
                entries: inner.memory.len() as u64,
                bytes: inner.memory.bytes(),
                max_bytes: Some(inner.memory.max_bytes()),
                footprint_bytes: None,
                hits: mh,
                misses: mm,
                hit_ratio: ratio(mh, mm),
                expirations: me,
                evictions: inner.memory.evictions(),
            },
            TierReport {
                tier: "redis",
                state: self.redis_state_name(),
                entries: 0,
                bytes: 0,
                max_bytes: None,
                footprint_bytes: None,
                hits: rh,
                misses: rm,
                hit_ratio: ratio(rh, rm),
                expirations: re,
                evictions: 0,
            },
            TierReport {
                tier: "disk",
                state: "up",
                entries: disk.values().map(|d| d.entries).sum(),
                bytes: disk.values().map(|d| d.stored_bytes).sum(),
                max_bytes: Some(inner.config.cleanup.max_size_bytes),
                footprint_bytes: inner.disk.footprint().ok().map(|f| f.total()),
                hits: dh,
                misses: dm,
                hit_ratio: ratio(dh, dm),
                expirations: de,
                evictions: inner.disk.eviction_count(),
            },
        ]
    }
}

impl crate::metrics::MetricsSource for Cache {
    /// Everything a metrics scrape reports.
    fn metrics_snapshot(&self) -> MetricsSnapshot {
        let inner = &*self.inner;
        // Before the reads below, which commit the queue first.
        let (queued_writes, queue_failures) = inner.disk.write_behind_counts();
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let types = inner.config.data_types.types();
        let mut tiers = Vec::new();
        for t in TIERS {
            for ty in types {
                let c = inner.stats.tier(t, ty.id);
                tiers.push(TierSnapshot {
                    tier: t,
                    hits: c.hits.load(Ordering::Relaxed),
                    misses: ld(&c.misses),
                });
            }
        }
        let type_snaps = types
            .iter()
            .map(|ty| {
                let c = inner.stats.of_type(ty.id);
                let expirations = ld(&c.expired_reads);
                TypeSnapshot {
                    name: ty.name.to_string(),
                    expirations,
                    future_stamped: ld(&c.future_stamped),
                    cascades: ld(&c.cascades),
                    violations: ld(&c.violations),
                    checks: ld(&c.checks),
                    stale_served: ld(&c.stale_served),
                    loads: ld(&c.loads),
                    load_errors: ld(&c.load_errors),
                    coalesced: ld(&c.coalesced),
                }
            })
            .collect();
        let (disk_entries, disk_bytes) = inner.disk.totals().unwrap_or((0, 0));
        MetricsSnapshot {
            tiers,
            types: type_snaps,
            memory_evictions: inner.memory.evictions(),
            disk_evictions: inner.disk.eviction_count(),
            corrupt: inner.disk.corrupt_count(),
            redis_corrupt: inner.redis_corrupt.load(Ordering::Relaxed),
            memory_bytes: inner.memory.bytes(),
            memory_limit: inner.memory.max_bytes(),
            memory_entries: inner.memory.len() as u64,
            disk_bytes,
            disk_footprint: inner.disk.footprint().map_or(0, |f| f.total()),
            disk_limit: inner.disk.size_limit(),
            disk_entries,
            tag_invalidations: ld(&inner.tag_invalidations),
            queued_writes,
            queue_failures,
            disk_rereads: inner.disk.reread_count(),
            memory_latency: inner.memory_latency.snapshot(),
            disk_latency: inner.disk_latency.snapshot(),
            cleanup_ok: ld(&inner.upkeep.ok),
            cleanup_errors: ld(&inner.upkeep.errors),
            cleanup_last_duration: Duration::from_millis(ld(&inner.upkeep.last_duration_ms)),
            cleanup_last_success: crate::maintenance::history::last_cleanup(&inner.disk)
                .ok()
                .flatten(),
            ttl_violation_threshold: inner.config.monitoring.ttl_violation_threshold,
            hit_ratio_threshold: inner.config.monitoring.cache_hit_ratio_threshold,
            opened_at: inner.opened_at,
            redis_circuit_open: matches!(
                self.redis_state(),
                Some(
                    crate::tier::breaker::BreakerState::Open
                        | crate::tier::breaker::BreakerState::HalfOpen
                )
            ),
            redis_latency: inner.redis_latency.snapshot(),
        }
    }
}
