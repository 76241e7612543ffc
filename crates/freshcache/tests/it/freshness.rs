//! The inference guard: all fresh or a typed refusal, with an audit row per signal.

use freshcache::freshness::Verdict;
use freshcache::maintenance::CleanupOptions;
use freshcache::{Error, Key, Value};

use crate::support::{T0, TestCache, secs};

fn odds(n: u32) -> Key {
    Key::odds(format!("g{n}"), 1_700_000_000).unwrap()
}

#[tokio::test]
async fn all_fresh_signals_are_returned_in_order_and_audited() {
    let t = TestCache::new();
    let keys = [odds(1), odds(2), Key::news("espn", "a1").unwrap()];
    for (i, k) in keys.iter().enumerate() {
        t.cache.set(k, format!("v{i}")).await.unwrap();
    }
    t.advance(secs(59));
    let got = t.cache.require_fresh("run-1", &keys).await.unwrap();
    let values: Vec<&[u8]> = got.values.iter().map(|h| h.value().as_ref()).collect();
    assert_eq!(values, [&b"v0"[..], b"v1", b"v2"]);
    assert!(got.report.all_fresh());
    let audit = t.cache.audit("run-1").unwrap();
    assert_eq!(audit.len(), 3);
    assert!(audit.iter().all(|r| r.verdict == "fresh"));
    assert_eq!(audit[0].key, "odds:g1:1700000000");
    assert_eq!(audit[0].age_ms, Some(59_000));
    assert_eq!(audit[0].ttl_ms, 60_000);
    let expected = format!("{:016x}", got.values[0].meta().checksum);
    assert_eq!(audit[0].checksum.as_deref(), Some(expected.as_str()));
}

#[tokio::test]
async fn one_stale_and_one_missing_signal_refuse_the_whole_run_and_say_why() {
    let t = TestCache::new();
    t.cache.set(&odds(1), "old").await.unwrap();
    t.advance(secs(30));
    t.cache
        .set(&Key::news("espn", "a1").unwrap(), "fine")
        .await
        .unwrap();
    t.advance(secs(31));
    let keys = [odds(1), Key::news("espn", "a1").unwrap(), odds(9)];
    let err = t.cache.require_fresh("run-2", &keys).await.unwrap_err();
    let Error::StaleSignals { report } = &err else {
        panic!("expected StaleSignals, got {err:?}");
    };
    let verdicts: Vec<Verdict> = report.signals.iter().map(|s| s.verdict).collect();
    assert_eq!(verdicts, [Verdict::Stale, Verdict::Fresh, Verdict::Missing]);
    assert_eq!(report.signals[0].age, Some(secs(61)));
    assert_eq!(report.signals[0].ttl, secs(60));
    let text = err.to_string();
    assert!(
        text.contains("odds:g1:1700000000 stale (age 61.0s, ttl 60.0s)"),
        "{text}"
    );
    assert!(text.contains("odds:g9:1700000000 missing"), "{text}");
    let audit = t.cache.audit("run-2").unwrap();
    let recorded: Vec<&str> = audit.iter().map(|r| r.verdict.as_str()).collect();
    assert_eq!(recorded, ["stale", "fresh", "missing"]);
    // The refused value is never handed out, and is gone from the cache afterwards.
    assert!(t.cache.get(&odds(1)).await.unwrap().is_miss());
}

#[tokio::test]
async fn age_counts_from_the_producers_as_of() {
    let t = TestCache::new();
    let produced = T0.saturating_sub(secs(50));
    t.cache
        .set(&odds(1), Value::from("1.91").as_of(produced))
        .await
        .unwrap();
    t.advance(secs(9));
    let (report, hits) = t.cache.check_freshness("r", &[odds(1)]).await.unwrap();
    assert!(report.all_fresh());
    assert_eq!(report.signals[0].age, Some(secs(59)));
    assert!(hits[0].is_some());
    t.advance(secs(1));
    let (report, hits) = t.cache.check_freshness("r2", &[odds(1)]).await.unwrap();
    assert_eq!(report.signals[0].verdict, Verdict::Stale);
    assert!(hits[0].is_none(), "a stale value must not be returned");
}

#[tokio::test]
async fn invalid_keys_and_run_ids_are_refused_before_anything_is_checked() {
    let t = TestCache::new();
    assert!(matches!(
        t.cache.check_freshness("run with spaces", &[odds(1)]).await,
        Err(Error::InvalidKey { .. })
    ));
    assert!(matches!(
        t.cache.check_freshness("", &[odds(1)]).await,
        Err(Error::InvalidKey { .. })
    ));
    let bad = Key::parse("weather:x").unwrap();
    assert!(matches!(
        t.cache.check_freshness("r", &[odds(1), bad]).await,
        Err(Error::UnknownDataType { .. })
    ));
    assert!(t.cache.audit("r").unwrap().is_empty());
}

#[tokio::test]
async fn cleanup_prunes_audit_rows_past_their_retention() {
    let t = TestCache::new();
    t.cache.set(&odds(1), "v").await.unwrap();
    t.cache
        .check_freshness("old-run", &[odds(1)])
        .await
        .unwrap();
    t.advance(secs(31 * 86_400));
    t.cache
        .check_freshness("new-run", &[odds(1)])
        .await
        .unwrap();
    let report = t.cache.cleanup(CleanupOptions::default()).unwrap();
    assert_eq!(report.audit_rows_pruned, 1);
    assert!(t.cache.audit("old-run").unwrap().is_empty());
    assert_eq!(t.cache.audit("new-run").unwrap().len(), 1);
}

fn violations(registry: &prometheus_client::registry::Registry, data_type: &str) -> f64 {
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, registry).unwrap();
    let series = format!("ttl_violation_total{{data_type=\"{data_type}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn the_guard_accepts_at_ttl_minus_1ms_refuses_at_ttl_and_counts_exactly_the_refusals() {
    let t = TestCache::new();
    let mut registry = prometheus_client::registry::Registry::default();
    freshcache::metrics::register(&mut registry, &t.cache);
    let keys = [odds(1), odds(2), Key::news("espn", "a1").unwrap()];
    for k in &keys {
        t.cache.set(k, "v").await.unwrap();
    }
    t.advance(secs(60) - std::time::Duration::from_millis(1));
    let ok = t
        .cache
        .require_fresh("at-ttl-minus-1ms", &keys)
        .await
        .unwrap();
    assert_eq!(ok.values.len(), 3);
    assert_eq!(violations(&registry, "odds_data"), 0.0);

    t.advance(std::time::Duration::from_millis(1));
    let err = t.cache.require_fresh("at-ttl", &keys).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("odds:g1:1700000000 stale") && text.contains("odds:g2:1700000000 stale"),
        "{text}"
    );
    assert!(!text.contains("news:espn:a1 stale"), "{text}");
    assert_eq!(violations(&registry, "odds_data"), 2.0);
    assert_eq!(violations(&registry, "news_articles"), 0.0);

    let first: Vec<String> = t
        .cache
        .audit("at-ttl-minus-1ms")
        .unwrap()
        .into_iter()
        .map(|r| r.verdict.to_string())
        .collect();
    assert_eq!(first, ["fresh", "fresh", "fresh"]);
    let second: Vec<String> = t
        .cache
        .audit("at-ttl")
        .unwrap()
        .into_iter()
        .map(|r| r.verdict.to_string())
        .collect();
    assert_eq!(second, ["stale", "stale", "fresh"]);
}

#[tokio::test]
async fn a_configured_clock_skew_tolerance_accepts_that_much_lateness_and_no_more() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "cache:\n  freshness:\n    clock_skew_tolerance: 2s\n";
    let config = freshcache::Config::from_yaml_str(yaml, None, Vec::new())
        .unwrap()
        .with_cache_dir(dir.path());
    let clock = freshcache::ManualClock::new(T0);
    let cache = freshcache::Cache::builder(config)
        .clock(clock.clone())
        .open()
        .unwrap();
    cache.set(&odds(1), "v").await.unwrap();
    cache.set(&odds(2), "v").await.unwrap();
    clock.advance(secs(61));
    assert!(cache.require_fresh("late-1s", &[odds(1)]).await.is_ok());
    clock.advance(secs(1));
    assert!(matches!(
        cache.require_fresh("late-2s", &[odds(2)]).await,
        Err(Error::StaleSignals { .. })
    ));
}

#[tokio::test]
async fn recent_runs_are_newest_first_with_their_verdict_counts() {
    let t = TestCache::new();
    t.cache.set(&odds(1), "v").await.unwrap();
    t.cache.check_freshness("first", &[odds(1)]).await.unwrap();
    t.advance(secs(61));
    t.cache.set(&odds(2), "v").await.unwrap();
    t.cache
        .check_freshness("second", &[odds(1), odds(2), odds(3)])
        .await
        .unwrap();
    let runs = t.cache.recent_runs(10).unwrap();
    let ids: Vec<&str> = runs.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids, ["second", "first"]);
    let s = &runs[0];
    assert_eq!((s.signals, s.fresh, s.stale, s.missing), (3, 1, 1, 1));
    assert_eq!((runs[1].signals, runs[1].fresh), (1, 1));
    assert_eq!(t.cache.recent_runs(1).unwrap().len(), 1);
}
