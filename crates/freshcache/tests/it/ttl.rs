//! Every data type is fresh until 1 ms before its TTL and a miss at exactly the TTL and after,
//! in the memory tier and in the disk tier.

use std::time::Duration;

use freshcache::{Config, Key, Value};

use crate::support::*;

fn llm_key(n: u32) -> Key {
    Key::llm_features(format!("c{n}"), "2026-11-24").unwrap()
}

fn news_key(n: u32) -> Key {
    Key::news("espn", format!("a{n}")).unwrap()
}

fn odds_key(n: u32) -> Key {
    Key::odds(format!("g{n}"), 1_700_000_000).unwrap()
}

#[test]
fn default_config_gives_llm_24h_news_1h_and_odds_60s() {
    let c = Config::default();
    let ttl = |name: &str| c.data_types.by_name(name).unwrap().ttl;
    assert_eq!(ttl("llm_features"), secs(24 * 3600));
    assert_eq!(ttl("news_articles"), secs(3600));
    assert_eq!(ttl("odds_data"), secs(60));
}

/// Two keys written at T0 and read back from the writing instance (memory tier).
async fn memory_tier_boundary(key: fn(u32) -> Key, ttl: Duration) {
    let t = TestCache::new();
    let (k1, k2) = (key(1), key(2));
    t.cache.set(&k1, Value::bytes(&b"one"[..])).await.unwrap();
    t.cache.set(&k2, Value::bytes(&b"two"[..])).await.unwrap();

    t.advance(ttl - ms(1));
    for (k, v) in [(&k1, &b"one"[..]), (&k2, &b"two"[..])] {
        let h = fresh(t.cache.get(k).await.unwrap());
        assert_eq!(h.source, MEMORY, "{k}");
        assert_eq!(h.value(), v);
        assert_eq!(h.now, T0.saturating_add(ttl - ms(1)));
        assert_eq!(h.meta().expires_at, T0.saturating_add(ttl));
        assert_eq!(h.remaining(), ms(1));
    }

    t.advance(ms(1));
    assert_miss(&t.cache.get(&k1).await.unwrap());

    // k2 is still held in memory (not read at the boundary); well past its TTL it is a miss.
    t.advance(ttl + secs(3600));
    assert_miss(&t.cache.get(&k2).await.unwrap());
}

/// Two keys written by one instance and read by fresh instances (empty memory, so disk).
async fn disk_tier_boundary(key: fn(u32) -> Key, ttl: Duration, data_type: &str) {
    let t = TestCache::new();
    let (k1, k2) = (key(1), key(2));
    t.cache.set(&k1, Value::bytes(&b"one"[..])).await.unwrap();
    t.cache.set(&k2, Value::bytes(&b"two"[..])).await.unwrap();

    t.advance(ttl - ms(1));
    let b = t.reopen();
    let h = fresh(b.get(&k1).await.unwrap());
    assert_eq!(h.source, DISK);
    assert_eq!(h.value(), &b"one"[..]);
    assert_eq!(h.remaining(), ms(1));
    assert_eq!(h.meta().expires_at, T0.saturating_add(ttl));

    t.advance(ms(1));
    let c = t.reopen();
    assert_eq!(disk_entries(&c, data_type), 2);
    assert_miss(&c.get(&k1).await.unwrap());
    assert_miss(&c.get(&k1).await.unwrap());
    // The expired row is left for the sweep (so the guard can still call it stale).
    assert_eq!(disk_entries(&c, data_type), 2);

    t.advance(ttl + secs(3600));
    assert_miss(&c.get(&k2).await.unwrap());
    c.cleanup(freshcache::maintenance::CleanupOptions::default())
        .unwrap();
    assert_eq!(disk_entries(&c, data_type), 0);
    // The instance that promoted k1 does not serve it either.
    assert_miss(&b.get(&k1).await.unwrap());
}

#[tokio::test]
async fn llm_features_fresh_in_memory_1ms_before_24h_and_a_miss_at_24h_and_after() {
    memory_tier_boundary(llm_key, secs(24 * 3600)).await;
}

#[tokio::test]
async fn news_articles_fresh_in_memory_1ms_before_1h_and_a_miss_at_1h_and_after() {
    memory_tier_boundary(news_key, secs(3600)).await;
}

#[tokio::test]
async fn odds_fresh_in_memory_1ms_before_60s_and_a_miss_at_60s_and_after() {
    memory_tier_boundary(odds_key, secs(60)).await;
}

#[tokio::test]
async fn llm_features_fresh_on_disk_1ms_before_24h_and_a_miss_at_24h_and_after() {
    disk_tier_boundary(llm_key, secs(24 * 3600), "llm_features").await;
}

#[tokio::test]
async fn news_articles_fresh_on_disk_1ms_before_1h_and_a_miss_at_1h_and_after() {
    disk_tier_boundary(news_key, secs(3600), "news_articles").await;
}

#[tokio::test]
async fn odds_fresh_on_disk_1ms_before_60s_and_a_miss_at_60s_and_after() {
    disk_tier_boundary(odds_key, secs(60), "odds_data").await;
}

#[tokio::test]
async fn an_expired_entry_stays_stale_not_missing_on_every_check_until_the_sweep() {
    let t = TestCache::new();
    for n in 0..3 {
        t.cache
            .set(&odds_key(n), Value::bytes(vec![n as u8; 16]))
            .await
            .unwrap();
    }
    // A large one too, so a blob file is involved.
    t.cache
        .set(&odds_key(9), Value::bytes(noise(9, 20 * 1024)))
        .await
        .unwrap();
    assert_eq!(blob_files(&t.dir()).len(), 1);

    t.advance(secs(61));
    let b = t.reopen();
    let keys = [odds_key(0), odds_key(9)];
    // Reads miss, and the guard says stale (with the age) on the first check and every later
    // one: a stalled producer is not hidden as a missing signal.
    for round in 0..3 {
        assert_miss(&b.get(&odds_key(0)).await.unwrap());
        assert_miss(&b.get(&odds_key(9)).await.unwrap());
        let (report, _) = b
            .check_freshness(&format!("r{round}"), &keys)
            .await
            .unwrap();
        for s in &report.signals {
            assert_eq!(
                s.verdict,
                freshcache::freshness::Verdict::Stale,
                "round {round}: {s:?}"
            );
            assert_eq!(s.age, Some(secs(61)));
        }
        let ins = b.inspect(&odds_key(0)).unwrap();
        assert!(!ins.fresh);
        assert_eq!(ins.stale_since, Some(T0.saturating_add(secs(60))));
    }
    let r = type_report(&b, "odds_data");
    assert_eq!((r.entries, r.expired_on_disk), (4, 4));
    assert!(r.expirations >= 2, "{r:?}");

    // The sweep removes them; only then are they missing.
    b.cleanup(freshcache::maintenance::CleanupOptions::default())
        .unwrap();
    assert!(
        blob_files(&t.dir()).is_empty(),
        "expired blob file left behind"
    );
    assert_eq!(type_report(&b, "odds_data").entries, 0);
    let (report, _) = b.check_freshness("after-sweep", &keys).await.unwrap();
    assert!(
        report
            .signals
            .iter()
            .all(|s| s.verdict == freshcache::freshness::Verdict::Missing)
    );
    assert!(b.inspect(&odds_key(0)).unwrap().entry.is_none());
}

#[tokio::test]
async fn a_write_renews_the_lifetime_from_the_time_of_the_write() {
    let t = TestCache::new();
    let k = odds_key(1);
    t.cache.set(&k, "v1").await.unwrap();
    t.advance(secs(50));
    t.cache.set(&k, "v2").await.unwrap();
    t.advance(secs(59) + ms(999));
    let h = fresh(t.reopen().get(&k).await.unwrap());
    assert_eq!(h.value(), &b"v2"[..]);
    assert_eq!(h.remaining(), ms(1));
    t.advance(ms(1));
    assert_miss(&t.cache.get(&k).await.unwrap());
}

/// Opens a cache on `dir` whose odds TTL was cut from 60 s to 30 s in the config.
fn open_with_odds_ttl_30s(
    dir: &std::path::Path,
    clock: &freshcache::ManualClock,
) -> freshcache::Cache {
    let cfg = Config::from_yaml_str("cache:\n  ttl:\n    odds_data: 30s\n", None, Vec::new())
        .unwrap()
        .with_cache_dir(dir);
    freshcache::Cache::builder(cfg)
        .clock(clock.clone())
        .open()
        .unwrap()
}

#[tokio::test]
async fn cutting_a_type_ttl_in_config_caps_entries_already_stored() {
    let t = TestCache::new();
    let k = odds_key(1);
    t.cache.set(&k, "stored under 60s").await.unwrap();
    let b = open_with_odds_ttl_30s(&t.dir(), &t.clock);
    t.advance(secs(30) - ms(1));
    assert_eq!(fresh(b.get(&k).await.unwrap()).source, DISK);
    assert_eq!(fresh(b.get(&k).await.unwrap()).source, MEMORY);
    t.advance(ms(1));
    assert_miss(&b.get(&k).await.unwrap());
}

#[tokio::test]
async fn hit_remaining_reports_the_capped_lifetime_after_a_config_ttl_cut() {
    let t = TestCache::new();
    let k = odds_key(1);
    t.cache.set(&k, "stored under 60s").await.unwrap();
    let b = open_with_odds_ttl_30s(&t.dir(), &t.clock);
    t.advance(secs(10));
    let h = fresh(b.get(&k).await.unwrap());
    // The entry is served only until T0 + 30 s, so 20 s are left, not the stamped 50 s.
    assert_eq!(h.remaining(), secs(20));
}
