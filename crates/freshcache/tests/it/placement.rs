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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falling_behind_the_change_feed_drops_shared_copies_but_keeps_memory_only_values() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("c");
    let a = Cache::open(config(&dir, "memory_only", None)).unwrap();
    let b = Cache::open(config(&dir, "memory_only", None)).unwrap();
    let news = |n: u32| Key::parse(&format!("news:wire:a{n}")).unwrap();
    a.set(&odds(1), "1.91").await.unwrap();
    a.set(&news(1), "headline").await.unwrap();
    assert_eq!(fresh(a.get(&news(1)).await.unwrap()).source, MEMORY);
    // A hole in the feed, as pruning leaves one for a follower that fell behind: a committed
    // row removed before anyone read it (pruning removes the oldest rows, never the newest).
    let db = rusqlite::Connection::open(dir.join("metadata.db")).unwrap();
    db.execute_batch(
        "BEGIN IMMEDIATE;
         INSERT INTO changes (op, subject, origin) VALUES ('set', 'news:wire:zz', 'test');
         INSERT INTO changes (op, subject, origin) VALUES ('set', 'news:wire:zy', 'test');
         DELETE FROM changes WHERE subject = 'news:wire:zz';
         COMMIT;",
    )
    .unwrap();
    b.set(&news(2), "other").await.unwrap();
    // A drops its memory copies of values other processes may have changed (read again from
    // disk) ...
    Poll::within(secs(5))
        .every(std::time::Duration::from_millis(1))
        .until("A never dropped its memory copy of news:wire:a1", || {
            !a.inspect(&news(1)).unwrap().in_memory
        });
    let h = fresh(a.get(&news(1)).await.unwrap());
    assert_eq!(&h.value()[..], b"headline");
    // ... and keeps what lives in its memory only (there is no other copy to read again).
    let h = fresh(a.get(&odds(1)).await.unwrap());
    assert_eq!((h.source, &h.value()[..]), (MEMORY, &b"1.91"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_redis_subscription_drops_shared_copies_but_keeps_memory_only_values() {
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::builder(config(dir.path(), "memory_only", Some(&redis.url())))
        .clock(SystemClock)
        .connect()
        .await
        .unwrap();
    let news = Key::parse("news:wire:a1").unwrap();
    cache.set(&news, "headline").await.unwrap();
    // Subscribed once a news read is answered from memory.
    Poll::within(secs(10))
        .until_async("coherence subscription never came up", async || {
            matches!(cache.get(&news).await.unwrap(), Lookup::Fresh(h) if h.source == MEMORY)
        })
        .await;
    cache.set(&odds(1), "1.91").await.unwrap();
    redis.kill9();
    // Announcements may now be missed: the news copy (kept in Redis and on disk too) is
    // dropped ...
    Poll::within(secs(10))
        .every(std::time::Duration::from_millis(5))
        .until("the news copy outlived the subscription", || {
            !cache.inspect(&news).unwrap().in_memory
        });
    // ... and memory-only odds, which live nowhere else, stay and are served from memory.
    let h = fresh(cache.get(&odds(1)).await.unwrap());
    assert_eq!((h.source, &h.value()[..]), (MEMORY, &b"1.91"[..]));
}

/// A clock that answers from a script, then stays at its last answer: a lookup can read it
/// "before" a write that finished first, as a lookup racing a set on another thread does.
#[derive(Clone, Debug)]
struct Scripted(
    std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<freshcache::Timestamp>>>,
);

impl freshcache::Clock for Scripted {
    fn now(&self) -> freshcache::Timestamp {
        let mut q = self.0.lock().unwrap();
        if q.len() > 1 {
            q.pop_front().unwrap()
        } else {
            q[0]
        }
    }
}

#[tokio::test]
async fn a_value_written_after_a_lookup_read_its_clock_is_served_not_dropped() {
    let root = tempfile::tempdir().unwrap();
    let later = T0.saturating_add(secs(1));
    let clock = Scripted(std::sync::Arc::new(std::sync::Mutex::new([T0].into())));
    let cache = Cache::builder(config(&root.path().join("c"), "memory_only", None))
        .clock(clock.clone())
        .open()
        .unwrap();
    // The set stamps `later`; the lookup's first reading is `T0` (taken before the set
    // finished); every reading after that is `later`.
    *clock.0.lock().unwrap() = [later, T0, later].into();
    cache.set(&odds(1), "1.91").await.unwrap();
    assert_eq!(
        clock.0.lock().unwrap().len(),
        2,
        "the set read the clock once"
    );
    // The copy looks stamped after the lookup's clock reading: judged on a new reading, it is
    // served (a memory-only value dropped here would be lost: there is no other copy).
    let h = fresh(cache.get(&odds(1)).await.unwrap());
    assert_eq!((h.source, &h.value()[..]), (MEMORY, &b"1.91"[..]));
    let h = fresh(cache.get(&odds(1)).await.unwrap());
    assert_eq!(&h.value()[..], b"1.91");
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
