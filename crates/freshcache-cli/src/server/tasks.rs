//! What `serve` runs beside the API: the alert-threshold watch, scheduled cleanup, and the
//! feeds kept fresh with conditional requests.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Logs a warning whenever a `monitoring:` threshold is crossed within a minute's traffic.
pub(super) async fn threshold_loop(cache: Cache) {
    let mut watch = ThresholdWatch::new(&cache);
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        for breach in watch.check(&cache, 100) {
            match breach {
                Breach::HitRatio {
                    ratio,
                    threshold,
                    lookups,
                } => tracing::warn!(
                    ratio,
                    threshold,
                    lookups,
                    "hit ratio below cache.monitoring.cache_hit_ratio_threshold"
                ),
                Breach::ViolationRate {
                    rate,
                    threshold,
                    checks,
                } => tracing::warn!(
                    rate,
                    threshold,
                    checks,
                    "TTL violation rate above cache.monitoring.ttl_violation_threshold"
                ),
                _ => {}
            }
        }
    }
}

/// Runs a cleanup pass at every time the schedule names, off the async workers.
pub(super) async fn cleanup_loop(cache: Cache, schedule: Schedule) {
    loop {
        let now = cache.now();
        let Some(next) = schedule.next_after(now) else {
            tracing::warn!(
                schedule = schedule.as_str(),
                "cleanup schedule has no next run"
            );
            return;
        };
        tokio::time::sleep(next.duration_since(now)).await;
        let c = cache.clone();
        match tokio::task::spawn_blocking(move || c.cleanup(CleanupOptions::default())).await {
            Ok(Ok(r)) => tracing::info!(
                expired = r.expired.entries,
                evicted = r.evicted.entries,
                orphans = r.repaired.orphan_blobs,
                bytes_freed = r.bytes_freed,
                duration_ms = r.duration_ms,
                "scheduled cleanup done"
            ),
            Ok(Err(e)) => tracing::warn!(error = %e, "scheduled cleanup failed"),
            Err(e) => tracing::warn!(error = %e, "scheduled cleanup panicked"),
        }
    }
}

/// Keeps one configured feed fresh: a fetch on start, then one every `refresh`, conditional
/// on the stored validators. Outcomes are logged (URL without credentials or query, never the
/// body) and recorded on `board` for the console; a failed fetch leaves the stored entry alone
/// and is retried on the next tick.
pub(super) async fn source_loop(
    cache: Cache,
    fetcher: Fetcher,
    source: SourceConfig,
    board: FeedBoard,
) {
    let url = freshcache::fetch::redact_url(&source.url);
    let mut tick = tokio::time::interval(source.refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let fetched = fetcher
            .fetch_with(&cache, &source.key, &source.url, source.cache_control)
            .await;
        board.record(
            &source,
            cache.now(),
            fetched
                .as_ref()
                .map(|o| (o.name(), o.status()))
                .map_err(ToString::to_string),
        );
        match fetched {
            Ok(o) => tracing::info!(
                key = %source.key,
                url,
                outcome = o.name(),
                status = o.status(),
                body_bytes = o.transfer().body_bytes,
                "source refreshed"
            ),
            Err(e) => tracing::warn!(
                key = %source.key,
                url,
                kind = e.fetch_kind().map_or("cache", |k| k.name()),
                error = %e,
                "source refresh failed"
            ),
        }
    }
}
