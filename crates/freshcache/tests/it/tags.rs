//! Tags: one invalidation makes every entry carrying the tag not fresh — in memory, on disk,
//! after a restart, in another process on the directory and on another instance sharing Redis
//! — and cascades to what was derived from them.

use std::time::{Duration, Instant};

use freshcache::{Cache, Error, Key, Lookup, SystemClock, Value};
use freshcache_testkit::{Poll, RedisServer};

use crate::support::*;

fn news(n: u32) -> Key {
    Key::news("espn", format!("a{n}")).unwrap()
}

fn feat(c: u32) -> Key {
    Key::llm_features(format!("c{c}"), "2026-12-04").unwrap()
}

fn tagged(v: &'static str, tags: &[&str]) -> Value {
    Value::from(v).tags(tags.iter().copied())
}

#[tokio::test]
async fn a_tag_invalidation_stales_its_entries_in_memory_on_disk_and_after_a_restart() {
    let t = TestCache::new();
    t.cache.set(&news(1), tagged("a", &["espn"])).await.unwrap();
    t.cache
        .set(&news(2), tagged("b", &["espn", "nba"]))
        .await
        .unwrap();
    t.cache.set(&news(3), tagged("c", &["nba"])).await.unwrap();
    t.cache
        .set(&feat(1), Value::from("f").derived_from([news(3)]))
        .await
        .unwrap();
    t.cache
        .set(&feat(2), Value::from("f").derived_from([news(1)]))
        .await
        .unwrap();
    assert_eq!(fresh(t.cache.get(&news(1)).await.unwrap()).source, MEMORY);
    t.advance(secs(1));
    let at = t.cache.invalidate_tag("espn").await.unwrap();
    assert_eq!(at, T0.saturating_add(secs(1)));
    let disk = t.reopen();
    for k in [news(1), news(2), feat(2)] {
        assert_miss(&t.cache.get(&k).await.unwrap());
        assert_miss(&disk.get(&k).await.unwrap());
    }
    for k in [news(3), feat(1)] {
        assert!(t.cache.get(&k).await.unwrap().is_fresh(), "{k}");
        assert!(disk.get(&k).await.unwrap().is_fresh(), "{k}");
    }
    // The entries are still there (nothing was deleted), reported stale by the guard.
    let (report, _) = t.cache.check_freshness("r1", &[news(1)]).await.unwrap();
    assert_eq!(
        report.signals[0].verdict,
        freshcache::freshness::Verdict::Stale
    );
    // Written again after the invalidation: fresh.
    t.advance(ms(1));
    t.cache
        .set(&news(1), tagged("a2", &["espn"]))
        .await
        .unwrap();
    assert!(t.cache.get(&news(1)).await.unwrap().is_fresh());
    // The invalidation time survives a restart.
    drop(disk);
    let after = t.reopen();
    assert_miss(&after.get(&news(2)).await.unwrap());
    assert!(after.get(&news(1)).await.unwrap().is_fresh());
    assert_eq!(t.cache.tag_invalidations(), 1);
}

#[tokio::test]
async fn bad_tags_are_refused_and_nothing_is_written() {
    let t = TestCache::new();
    for bad in ["", "with space", "a,b", &"x".repeat(129)] {
        assert!(matches!(
            t.cache.set(&news(1), tagged("a", &[bad])).await,
            Err(Error::InvalidTag { .. })
        ));
        assert!(matches!(
            t.cache.invalidate_tag(bad).await,
            Err(Error::InvalidTag { .. })
        ));
    }
    assert!(t.cache.get(&news(1)).await.unwrap().is_miss());
}

#[test]
fn another_process_on_the_directory_honours_a_tag_invalidation() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cache");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let config = || freshcache::Config::default().with_cache_dir(&dir);
    let a = Cache::open(config()).unwrap();
    let b = Cache::open(config()).unwrap();
    rt.block_on(a.set(&news(1), tagged("a", &["espn"])))
        .unwrap();
    Poll::within(Duration::from_secs(5))
        .every(Duration::from_millis(1))
        .until("B holds a memory copy", || {
            matches!(rt.block_on(b.get(&news(1))).unwrap(),
                Lookup::Fresh(h) if h.source == MEMORY)
        });
    std::thread::sleep(Duration::from_millis(2)); // a later millisecond than the write
    rt.block_on(a.invalidate_tag("espn")).unwrap();
    let done = Instant::now();
    Poll::within(Duration::from_millis(100))
        .every(Duration::from_millis(1))
        .until("B honours the tag invalidation", || {
            rt.block_on(b.get(&news(1))).unwrap().is_miss()
        });
    eprintln!("tag invalidation honoured after {:?}", done.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_sharing_redis_honour_a_tag_invalidation_even_when_they_join_later() {
    let redis = RedisServer::start();
    let instance = || async {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!("cache:\n  redis_url: \"{}\"\n", redis.url());
        let cfg = freshcache::Config::from_yaml_str(&yaml, None, Vec::new())
            .unwrap()
            .with_cache_dir(dir.path());
        let cache = Cache::builder(cfg)
            .clock(SystemClock)
            .connect()
            .await
            .unwrap();
        wait_subscribed(&cache).await;
        (dir, cache)
    };
    let (_a_dir, a) = instance().await;
    let (_b_dir, b) = instance().await;
    a.set(&news(1), tagged("a", &["espn"])).await.unwrap();
    Poll::within(Duration::from_secs(5))
        .until_async("B holds a memory copy", async || {
            matches!(b.get(&news(1)).await.unwrap(), Lookup::Fresh(h) if h.source == MEMORY)
        })
        .await;
    tokio::time::sleep(Duration::from_millis(2)).await;
    a.invalidate_tag("espn").await.unwrap();
    let done = Instant::now();
    Poll::within(Duration::from_millis(100))
        .until_async("B honours the tag invalidation", async || {
            b.get(&news(1)).await.unwrap().is_miss()
        })
        .await;
    eprintln!("tag invalidation honoured after {:?}", done.elapsed());
    // An instance that joins afterwards reads the value from Redis and the time from Redis too.
    let (_c_dir, c) = instance().await;
    assert!(c.get(&news(1)).await.unwrap().is_miss());
}

#[tokio::test]
async fn an_index_of_the_previous_version_opens_keeps_its_entries_and_takes_tags() {
    let t = TestCache::new();
    t.cache.set(&news(1), "plain").await.unwrap();
    let db = t.dir().join("metadata.db");
    {
        // What the previous build made: version 2, no tag table.
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "DROP TABLE tag_invalidations;
             UPDATE schema_info SET value = '2' WHERE name = 'version';",
        )
        .unwrap();
    }
    let upgraded = t.reopen();
    let version: String = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT value FROM schema_info WHERE name = 'version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(version, "4");
    assert_eq!(
        fresh(upgraded.get(&news(1)).await.unwrap()).value(),
        &b"plain"[..]
    );
    upgraded
        .set(&news(2), tagged("t", &["espn"]))
        .await
        .unwrap();
    t.advance(ms(1));
    upgraded.invalidate_tag("espn").await.unwrap();
    assert_miss(&t.reopen().get(&news(2)).await.unwrap());
}
