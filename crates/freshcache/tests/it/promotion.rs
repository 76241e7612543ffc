//! A disk hit is promoted to memory with its remaining lifetime, never a fresh TTL.

use freshcache::{Key, Value};

use crate::support::*;

#[tokio::test]
async fn promotion_from_disk_keeps_the_remaining_lifetime_not_a_fresh_ttl() {
    let t = TestCache::new();
    let k = Key::odds("g1", 1_700_000_000).unwrap();
    t.cache.set(&k, "1.91").await.unwrap();

    t.advance(secs(50));
    let b = t.reopen();
    let h = fresh(b.get(&k).await.unwrap());
    assert_eq!(h.source, DISK);
    assert_eq!(h.remaining(), secs(10));
    assert_eq!(h.meta().expires_at, T0.saturating_add(secs(60)));
    assert_eq!(h.meta().stored_at, T0);

    // The next read is served by B's memory, with the same expiry.
    let h = fresh(b.get(&k).await.unwrap());
    assert_eq!(h.source, MEMORY);
    assert_eq!(h.remaining(), secs(10));

    t.advance(secs(9) + ms(999));
    let h = fresh(b.get(&k).await.unwrap());
    assert_eq!(h.source, MEMORY);
    assert_eq!(h.value(), &b"1.91"[..]);
    assert_eq!(h.remaining(), ms(1));

    t.advance(ms(1));
    assert_miss(&b.get(&k).await.unwrap());
}

#[tokio::test]
async fn promotion_keeps_a_lifetime_shortened_by_as_of() {
    let t = TestCache::new();
    let k = Key::news("espn", "a1").unwrap();
    // Produced 10 minutes before it was stored: 50 minutes left of the hour.
    t.cache
        .set(&k, Value::from("body").as_of(T0.saturating_sub(secs(600))))
        .await
        .unwrap();
    t.advance(secs(20 * 60));
    let b = t.reopen();
    let h = fresh(b.get(&k).await.unwrap());
    assert_eq!(h.source, DISK);
    assert_eq!(h.remaining(), secs(30 * 60));
    assert_eq!(h.age(), secs(30 * 60));

    t.advance(secs(30 * 60) - ms(1));
    let h = fresh(b.get(&k).await.unwrap());
    assert_eq!(h.source, MEMORY);
    assert_eq!(h.remaining(), ms(1));
    t.advance(ms(1));
    assert_miss(&b.get(&k).await.unwrap());
}

#[tokio::test]
async fn promotion_keeps_a_per_call_ttl() {
    let t = TestCache::new();
    let k = Key::odds("g2", 1).unwrap();
    t.cache
        .set(&k, Value::from("x").ttl(secs(5)))
        .await
        .unwrap();
    t.advance(secs(4));
    let b = t.reopen();
    assert_eq!(fresh(b.get(&k).await.unwrap()).remaining(), secs(1));
    t.advance(secs(1));
    assert_miss(&b.get(&k).await.unwrap());
}
