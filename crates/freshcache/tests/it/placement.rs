//! Placements without disk: `memory_only` (this process's memory) and `memory_redis` (shared
//! through Redis), for hot, short-lived signals.

use freshcache::{Cache, Config, Key, Lookup, ManualClock, SystemClock};
use freshcache_testkit::{Poll, RedisServer};

use crate::support::{MEMORY, T0, disk_entries, fresh, secs, wait_subscribed};

fn config(dir: &std::path::Path, placement: &str, redis: Option<&str>) -> Config {
    let url = redis.map_or(String::new(), |u| format!("  redis_url: \"{u}\"\n"));
    let yaml =
        format!("cache:\n{url}  data_types:\n    odds_data:\n      placement: {placement}\n");
    Config::from_yaml_str(&yaml, None, Vec::new())
        .unwrap()
        .with_cache_dir(dir)
}

fn odds(n: u32) -> Key {
    Key::odds(format!("g{n}"), 1_700_000_000).unwrap()
}

#[tokio::test]
async fn memory_only_entries_never_reach_disk_and_expire_on_time() {
    let root = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let open = || {
        Cache::builder(config(&root.path().join("c"), "memory_only", None))
            .clock(clock.clone())
            .open()
            .unwrap()
    };
    let cache = open();
    cache.set(&odds(1), "1.91").await.unwrap();
    cache
        .set_many(vec![(odds(2), "2.05".into()), (odds(3), "3.1".into())])
        .await
        .unwrap();
    let h = fresh(cache.get(&odds(1)).await.unwrap());
    assert_eq!((h.source, &h.value()[..]), (MEMORY, &b"1.91"[..]));
    assert!(cache.get(&odds(3)).await.unwrap().is_fresh());
    assert_eq!(disk_entries(&cache, "odds_data"), 0);
    // Another process on the directory has its own memory: it sees nothing.
    assert!(matches!(open().get(&odds(1)).await.unwrap(), Lookup::Miss));
    // One loader per key within the process, with no lease on disk to wait for.
    let loaded = cache
        .get_or_fetch(&odds(4), || async { Ok::<_, std::io::Error>("4.0") })
        .await
        .unwrap();
    assert_eq!(&loaded.value()[..], b"4.0");
    assert!(cache.delete(&odds(2)).await.unwrap());
    assert!(matches!(cache.get(&odds(2)).await.unwrap(), Lookup::Miss));
    clock.advance(secs(59));
    assert!(cache.get(&odds(1)).await.unwrap().is_fresh());
    clock.advance(secs(1));
    assert!(matches!(cache.get(&odds(1)).await.unwrap(), Lookup::Miss));
    assert_eq!(disk_entries(&cache, "odds_data"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_redis_entries_are_shared_through_redis_and_never_reach_disk() {
    let redis = RedisServer::start();
    let instance = || async {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::builder(config(dir.path(), "memory_redis", Some(&redis.url())))
            .clock(SystemClock)
            .connect()
            .await
            .unwrap();
        wait_subscribed(&cache).await;
        (dir, cache)
    };
    let (_a_dir, a) = instance().await;
    let (_b_dir, b) = instance().await;
    a.set(&odds(1), "1.91").await.unwrap();
    let h = fresh(b.get(&odds(1)).await.unwrap());
    assert_eq!(&h.value()[..], b"1.91");
    assert_eq!(h.source.name(), "redis");
    a.set(&odds(1), "2.00").await.unwrap();
    Poll::within(std::time::Duration::from_secs(5))
        .until_async("B follows A's overwrite", || async {
            matches!(b.get(&odds(1)).await.unwrap(), Lookup::Fresh(h) if &h.value()[..] == b"2.00")
        })
        .await;
    assert_eq!(disk_entries(&a, "odds_data"), 0);
    assert_eq!(disk_entries(&b, "odds_data"), 0);
}

#[tokio::test]
async fn an_expired_memory_only_signal_stays_stale_not_missing_on_every_check() {
    let root = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let cache = Cache::builder(config(&root.path().join("c"), "memory_only", None))
        .clock(clock.clone())
        .open()
        .unwrap();
    cache.set(&odds(1), "1.91").await.unwrap();
    clock.advance(secs(61));
    for run in ["r1", "r2", "r3"] {
        assert!(matches!(cache.get(&odds(1)).await.unwrap(), Lookup::Miss));
        let (report, _) = cache.check_freshness(run, &[odds(1)]).await.unwrap();
        assert_eq!(
            report.signals[0].verdict,
            freshcache::freshness::Verdict::Stale,
            "{run}"
        );
        assert_eq!(report.signals[0].age, Some(secs(61)));
        assert_eq!(
            cache.inspect(&odds(1)).unwrap().stale_since,
            Some(T0.saturating_add(secs(60)))
        );
    }
    // Rewritten: fresh again.
    cache.set(&odds(1), "1.95").await.unwrap();
    assert!(cache.get(&odds(1)).await.unwrap().is_fresh());
}
