//! Prometheus metrics read back as text, with exact values.

use std::collections::HashMap;

use freshcache::metrics::{Breach, ThresholdWatch, register};
use freshcache::{Key, Lookup};
use prometheus_client::encoding::prometheus_text::encode;
use prometheus_client::registry::Registry;

use crate::support::{TestCache, secs};

/// `name{labels}` -> value, for every sample line.
pub(crate) fn scrape(registry: &Registry) -> HashMap<String, f64> {
    let mut text = String::new();
    encode(&mut text, registry).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            (name.to_owned(), value.parse().unwrap())
        })
        .collect()
}

fn odds(n: u32) -> Key {
    Key::odds(format!("g{n}"), 1).unwrap()
}

#[tokio::test]
async fn hits_misses_an_expiry_and_a_violation_read_back_exactly() {
    let t = TestCache::new();
    let mut registry = Registry::default();
    register(&mut registry, &t.cache);

    t.cache.set(&odds(1), "1.9").await.unwrap();
    assert!(t.cache.get(&odds(1)).await.unwrap().is_fresh()); // memory hit
    assert!(t.cache.get(&odds(2)).await.unwrap().is_miss()); // miss in both tiers
    t.advance(secs(61));
    assert!(t.cache.get(&odds(1)).await.unwrap().is_miss()); // expired: one expiry, misses
    let (report, _) = t.cache.check_freshness("run", &[odds(1)]).await.unwrap();
    assert!(!report.all_fresh()); // one violation

    let m = scrape(&registry);
    let v = |k: &str| m.get(k).copied().unwrap_or_else(|| panic!("no series {k}"));
    assert_eq!(v(r#"cache_hit_total{cache_type="memory"}"#), 1.0);
    assert_eq!(v(r#"cache_hit_total{cache_type="disk"}"#), 0.0);
    assert_eq!(v(r#"cache_miss_total{cache_type="memory"}"#), 3.0);
    assert_eq!(v(r#"cache_miss_total{cache_type="disk"}"#), 3.0);
    // The get and the guard's check each found the expired row (left for the sweep).
    assert_eq!(v(r#"cache_expiration_total{data_type="odds_data"}"#), 2.0);
    assert_eq!(v(r#"ttl_violation_total{data_type="odds_data"}"#), 1.0);
    assert_eq!(v(r#"ttl_check_total{data_type="odds_data"}"#), 1.0);
    assert_eq!(v(r#"ttl_violation_total{data_type="news_articles"}"#), 0.0);
    assert_eq!(v(r#"cache_entries{cache_type="disk"}"#), 1.0);
    // Memory-tier hits are timed one in 16 per thread, the first included: this one hit is.
    assert_eq!(
        v(r#"cache_lookup_duration_seconds_count{cache_type="memory"}"#),
        1.0
    );
    assert_eq!(
        v(r#"cache_lookup_duration_seconds_count{cache_type="disk"}"#),
        3.0
    );
    assert_eq!(v(r#"cache_alert_threshold{name="hit_ratio"}"#), 0.8);
}

#[tokio::test]
async fn ten_thousand_distinct_keys_create_no_new_series() {
    let t = TestCache::new();
    let mut registry = Registry::default();
    register(&mut registry, &t.cache);
    t.cache.set(&odds(0), "x").await.unwrap();
    let _ = t.cache.get(&odds(0)).await.unwrap();
    let before: Vec<String> = scrape(&registry).into_keys().collect();
    for i in 0..10_000 {
        let k = Key::news(format!("src{}", i % 97), i).unwrap();
        t.cache.set(&k, "v").await.unwrap();
        let _ = t.cache.get(&k).await.unwrap();
        let _ = t
            .cache
            .get(&Key::odds(format!("miss{i}"), i).unwrap())
            .await
            .unwrap();
    }
    let mut after: Vec<String> = scrape(&registry).into_keys().collect();
    let mut before = before;
    before.sort();
    after.sort();
    assert_eq!(before, after);
    assert!(
        after
            .iter()
            .all(|s| !s.contains("news:") && !s.contains("odds:") && !s.contains("src"))
    );
}

#[tokio::test]
async fn threshold_watch_reports_a_low_hit_ratio_and_then_recovery() {
    let t = TestCache::new();
    let mut watch = ThresholdWatch::new(&t.cache);
    for i in 0..100 {
        let _ = t.cache.get(&odds(i)).await.unwrap();
    }
    let breaches = watch.check(&t.cache, 100);
    assert!(
        matches!(breaches.as_slice(), [Breach::HitRatio { ratio, lookups: 100, .. }] if *ratio == 0.0),
        "{breaches:?}"
    );
    t.cache.set(&odds(1), "v").await.unwrap();
    for _ in 0..100 {
        assert!(matches!(
            t.cache.get(&odds(1)).await.unwrap(),
            Lookup::Fresh(_)
        ));
    }
    assert!(watch.check(&t.cache, 100).is_empty());
    // Too few lookups in a window are not judged.
    let _ = t.cache.get(&odds(50)).await.unwrap();
    assert!(watch.check(&t.cache, 100).is_empty());
}

#[tokio::test]
async fn cascades_and_tag_invalidations_are_counted() {
    let t = TestCache::new();
    let mut registry = Registry::default();
    register(&mut registry, &t.cache);
    let news = Key::news("espn", "a1").unwrap();
    let features = Key::llm_features("c7", "2026-12-04").unwrap();
    t.cache
        .set(&news, freshcache::Value::from("a").tags(["espn"]))
        .await
        .unwrap();
    t.cache
        .set(
            &features,
            freshcache::Value::from("f").derived_from([news.clone()]),
        )
        .await
        .unwrap();
    let cascades = r#"cache_cascade_invalidations_total{data_type="llm_features"}"#;
    assert_eq!(scrape(&registry)[cascades], 0.0);
    t.cache.set(&news, "corrected").await.unwrap();
    assert!(t.cache.get(&features).await.unwrap().is_miss());
    assert!(t.cache.get(&features).await.unwrap().is_miss());
    let m = scrape(&registry);
    assert_eq!(m[cascades], 2.0);
    assert_eq!(
        m[r#"cache_cascade_invalidations_total{data_type="news_articles"}"#],
        0.0
    );
    assert_eq!(m["cache_tag_invalidations_total"], 0.0);
    t.cache.invalidate_tag("espn").await.unwrap();
    assert_eq!(scrape(&registry)["cache_tag_invalidations_total"], 1.0);
}
