//! Stale reads: only when asked, only within `max_stale`.

use freshcache::{Key, Lookup, ReadOptions};

use crate::support::*;

fn opts() -> ReadOptions {
    ReadOptions {
        max_stale: secs(30),
    }
}

#[tokio::test]
async fn entry_expired_10s_ago_is_stale_within_30s_max_stale_and_a_miss_for_plain_get() {
    let t = TestCache::new();
    let k = Key::odds("g1", 1).unwrap();
    t.cache.set(&k, "1.91").await.unwrap();
    t.advance(secs(70));

    let h = match t.cache.get_with(&k, opts()).await.unwrap() {
        Lookup::Stale(h) => h,
        other => panic!("expected stale, got {other:?}"),
    };
    assert_eq!(h.value(), &b"1.91"[..]);
    assert_eq!(h.remaining(), secs(0));
    assert_eq!(h.age(), secs(70));
    assert!(h.meta().expires_at <= h.now);

    assert_miss(&t.cache.get(&k).await.unwrap());
    assert!(t.cache.get_typed::<String>(&k).await.unwrap().is_none());
}

#[tokio::test]
async fn stale_read_from_a_second_instance_uses_the_disk_copy() {
    let t = TestCache::new();
    let k = Key::news("espn", "a1").unwrap();
    t.cache.set(&k, "body").await.unwrap();
    t.advance(secs(3600 + 10));
    let b = t.reopen();
    match b.get_with(&k, opts()).await.unwrap() {
        Lookup::Stale(h) => {
            assert_eq!(h.value(), &b"body"[..]);
            assert_eq!(h.source, DISK);
        }
        other => panic!("expected stale, got {other:?}"),
    }
}

#[tokio::test]
async fn entry_expired_31s_ago_is_a_miss_even_with_30s_max_stale() {
    let t = TestCache::new();
    let k = Key::odds("g1", 1).unwrap();
    t.cache.set(&k, "1.91").await.unwrap();
    t.advance(secs(60 + 31));
    assert_miss(&t.cache.get_with(&k, opts()).await.unwrap());
}

#[tokio::test]
async fn entry_expired_exactly_max_stale_ago_is_a_miss() {
    let t = TestCache::new();
    let k = Key::odds("g1", 1).unwrap();
    t.cache.set(&k, "1.91").await.unwrap();
    t.advance(secs(60 + 30));
    assert_miss(&t.cache.get_with(&k, opts()).await.unwrap());
}

#[tokio::test]
async fn max_stale_does_not_turn_a_fresh_entry_into_a_stale_one() {
    let t = TestCache::new();
    let k = Key::odds("g1", 1).unwrap();
    t.cache.set(&k, "1.91").await.unwrap();
    t.advance(secs(59));
    let h = fresh(t.cache.get_with(&k, opts()).await.unwrap());
    assert_eq!(h.source, MEMORY);
}
