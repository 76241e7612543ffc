//! Prefix invalidation removes exactly the subtree, literally, in memory and on disk.

use freshcache::{Key, KeyPrefix, Value};

use crate::support::*;

const KEYS: [&str; 7] = [
    "news:a%:1",
    "news:ab:1",
    "news:a_:1",
    "news:a_:2",
    "news:aX:1",
    "news:a*:1",
    "news:a:1",
];

fn key(s: &str) -> Key {
    Key::parse(s).unwrap()
}

fn prefix(s: &str) -> KeyPrefix {
    KeyPrefix::parse(s).unwrap()
}

/// Keys that are fresh in `cache`, in `KEYS` order.
async fn present(cache: &freshcache::Cache) -> Vec<&'static str> {
    let mut out = Vec::new();
    for k in KEYS {
        if cache.get(&key(k)).await.unwrap().is_fresh() {
            out.push(k);
        }
    }
    out
}

#[tokio::test]
async fn prefix_invalidation_treats_percent_underscore_and_star_literally() {
    let t = TestCache::new();
    for (i, k) in KEYS.iter().enumerate() {
        // Half small (inline), half large (blob files).
        let v = if i % 2 == 0 {
            Value::bytes(k.as_bytes().to_vec())
        } else {
            Value::bytes(noise(i as u64, 12 * 1024))
        };
        t.cache.set(&key(k), v).await.unwrap();
    }
    let blobs_before = blob_files(&t.dir()).len();
    assert_eq!(blobs_before, 3);

    assert_eq!(
        t.cache
            .invalidate_prefix(&prefix("news:a_:"))
            .await
            .unwrap(),
        2
    );
    let want = [
        "news:a%:1",
        "news:ab:1",
        "news:aX:1",
        "news:a*:1",
        "news:a:1",
    ];
    assert_eq!(present(&t.cache).await, want, "memory view");
    // A second instance (empty memory) reads the disk: the same keys.
    assert_eq!(present(&t.reopen()).await, want, "disk view");
    // news:a_:2 (index 3) was a blob: its file is gone.
    assert_eq!(blob_files(&t.dir()).len(), blobs_before - 1);

    assert_eq!(
        t.cache.invalidate_prefix(&prefix("news:a%")).await.unwrap(),
        1
    );
    assert_eq!(
        t.cache.invalidate_prefix(&prefix("news:a*")).await.unwrap(),
        1
    );
    let want = ["news:ab:1", "news:aX:1", "news:a:1"];
    assert_eq!(present(&t.cache).await, want);
    assert_eq!(present(&t.reopen()).await, want);

    // Nothing matches any more: zero, and nothing else goes.
    assert_eq!(
        t.cache.invalidate_prefix(&prefix("news:a_")).await.unwrap(),
        0
    );
    assert_eq!(present(&t.reopen()).await, want);
}

#[tokio::test]
async fn prefix_invalidation_stops_at_the_prefix_boundary() {
    let t = TestCache::new();
    for k in [
        "news:espn:1",
        "news:espn:2",
        "news:espnx:1",
        "news:bbc:1",
        "odds:espn:1",
    ] {
        t.cache.set(&key(k), "v").await.unwrap();
    }
    assert_eq!(
        t.cache
            .invalidate_prefix(&prefix("news:espn:"))
            .await
            .unwrap(),
        2
    );
    let b = t.reopen();
    for (k, alive) in [
        ("news:espn:1", false),
        ("news:espn:2", false),
        ("news:espnx:1", true),
        ("news:bbc:1", true),
        ("odds:espn:1", true),
    ] {
        assert_eq!(
            t.cache.get(&key(k)).await.unwrap().is_fresh(),
            alive,
            "memory {k}"
        );
        assert_eq!(b.get(&key(k)).await.unwrap().is_fresh(), alive, "disk {k}");
    }
    // Without the colon the sibling goes too.
    assert_eq!(
        t.cache
            .invalidate_prefix(&prefix("news:espn"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(disk_entries(&t.cache, "news_articles"), 1);
    assert_eq!(disk_entries(&t.cache, "odds_data"), 1);
}

#[tokio::test]
async fn invalidation_count_is_distinct_keys_across_memory_and_disk() {
    let t = TestCache::new();
    let a = &t.cache;
    let b = t.reopen();
    // In A's memory and on disk.
    a.set(&key("news:x:both"), "1").await.unwrap();
    // On disk only, from A's point of view (written by B).
    b.set(&key("news:x:disk"), "2").await.unwrap();
    // In A's memory only: the disk row removed behind A's back.
    a.set(&key("news:x:mem"), "3").await.unwrap();
    remove_unannounced(&t, "news:x:mem");

    assert_eq!(a.invalidate_prefix(&prefix("news:x:")).await.unwrap(), 3);
    for k in ["news:x:both", "news:x:disk", "news:x:mem"] {
        assert_miss(&a.get(&key(k)).await.unwrap());
    }
    assert_eq!(disk_entries(a, "news_articles"), 0);
}

#[tokio::test]
async fn delete_removes_a_key_from_memory_and_disk_and_reports_whether_it_existed() {
    let t = TestCache::new();
    let k = key("odds:g1:1");
    t.cache
        .set(&k, Value::bytes(noise(1, 10_000)))
        .await
        .unwrap();
    assert_eq!(blob_files(&t.dir()).len(), 1);
    assert!(t.cache.delete(&k).await.unwrap());
    assert_miss(&t.cache.get(&k).await.unwrap());
    assert_miss(&t.reopen().get(&k).await.unwrap());
    assert!(blob_files(&t.dir()).is_empty());
    assert!(!t.cache.delete(&k).await.unwrap());
}

#[tokio::test]
async fn invalidate_all_counts_each_removed_key_once_across_memory_and_disk() {
    let t = TestCache::new();
    let a = &t.cache;
    let b = t.reopen();
    a.set(&key("news:x:both"), "1").await.unwrap();
    b.set(&key("news:x:disk"), "2").await.unwrap();
    a.set(&key("news:x:mem"), "3").await.unwrap();
    remove_unannounced(&t, "news:x:mem");

    // Three distinct keys go: one in both tiers, one only on disk, one only in A's memory.
    assert_eq!(a.invalidate_all().await.unwrap(), 3);
    for k in ["news:x:both", "news:x:disk", "news:x:mem"] {
        assert_miss(&a.get(&key(k)).await.unwrap());
    }
}

/// Removes `key`'s disk row with a bare disk tier, which writes no change-feed row: the
/// opened caches keep their memory copies (as while a follower has not yet read a change),
/// whenever their followers poll.
fn remove_unannounced(t: &TestCache, key: &str) {
    let dir = t.dir();
    let raw = freshcache::internals::DiskTier::open(&dir, &dir.join("metadata.db"), 8192).unwrap();
    assert!(raw.remove(key).unwrap());
}
