//! Size and TTL policy per data type.

use freshcache::{Error, Key, Value};

use crate::support::*;

const MIB: usize = 1024 * 1024;

#[tokio::test]
async fn odds_value_over_1mib_is_too_large_and_the_previous_value_stays() {
    let t = TestCache::new();
    let k = Key::odds("g1", 1).unwrap();
    t.cache.set(&k, "previous").await.unwrap();
    let blobs = blob_files(&t.dir());

    match t.cache.set(&k, Value::bytes(noise(1, MIB + 1))).await {
        Err(Error::TooLarge {
            size,
            max,
            data_type,
            ..
        }) => {
            assert_eq!((size, max), ((MIB + 1) as u64, MIB as u64));
            assert_eq!(data_type, "odds_data");
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(
        fresh(t.cache.get(&k).await.unwrap()).value(),
        &b"previous"[..]
    );
    assert_eq!(
        fresh(t.reopen().get(&k).await.unwrap()).value(),
        &b"previous"[..]
    );
    assert_eq!(blob_files(&t.dir()), blobs, "a refused value left a file");
    assert!(files_under(&t.dir().join("tmp")).is_empty());
    assert_eq!(type_report(&t.cache, "odds_data").sets, 1);
}

#[tokio::test]
async fn odds_value_of_exactly_1mib_is_accepted() {
    let t = TestCache::new();
    let k = Key::odds("g1", 1).unwrap();
    let v = noise(2, MIB);
    t.cache.set(&k, Value::bytes(v.clone())).await.unwrap();
    assert_eq!(fresh(t.reopen().get(&k).await.unwrap()).value(), &v[..]);
}

#[tokio::test]
async fn per_call_ttl_longer_than_the_type_ttl_is_refused_and_nothing_is_stored() {
    let t = TestCache::new();
    let k = Key::odds("g1", 1).unwrap();
    match t
        .cache
        .set(&k, Value::from("x").ttl(secs(60) + ms(1)))
        .await
    {
        Err(Error::TtlNotAllowed { requested, .. }) => assert_eq!(requested, secs(60) + ms(1)),
        other => panic!("expected TtlNotAllowed, got {other:?}"),
    }
    assert_miss(&t.cache.get(&k).await.unwrap());
    let news = Key::news("s", "a").unwrap();
    assert!(matches!(
        t.cache
            .set(&news, Value::from("x").ttl(secs(2 * 3600)))
            .await,
        Err(Error::TtlNotAllowed { .. })
    ));
    assert!(matches!(
        t.cache.set(&news, Value::from("x").ttl(ms(0))).await,
        Err(Error::TtlNotAllowed { .. })
    ));
    assert_eq!(disk_entries(&t.cache, "news_articles"), 0);
}

#[tokio::test]
async fn per_call_ttl_equal_to_or_shorter_than_the_type_ttl_is_honoured() {
    let t = TestCache::new();
    let (a, b) = (Key::odds("g1", 1).unwrap(), Key::odds("g2", 1).unwrap());
    t.cache
        .set(&a, Value::from("a").ttl(secs(60)))
        .await
        .unwrap();
    t.cache
        .set(&b, Value::from("b").ttl(secs(5)))
        .await
        .unwrap();
    t.advance(secs(5) - ms(1));
    assert!(t.cache.get(&b).await.unwrap().is_fresh());
    t.advance(ms(1));
    assert_miss(&t.cache.get(&b).await.unwrap());
    assert_eq!(fresh(t.cache.get(&a).await.unwrap()).remaining(), secs(55));
}

#[tokio::test]
async fn value_whose_as_of_is_older_than_its_ttl_is_already_expired() {
    let t = TestCache::new();
    let k = Key::odds("g1", 1).unwrap();
    for age in [secs(60), secs(61), secs(3600)] {
        match t
            .cache
            .set(&k, Value::from("old").as_of(T0.saturating_sub(age)))
            .await
        {
            Err(Error::AlreadyExpired { age: a, ttl, .. }) => {
                assert_eq!((a, ttl), (age, secs(60)));
            }
            other => panic!("age {age:?}: expected AlreadyExpired, got {other:?}"),
        }
    }
    // A shorter per-call ttl counts too.
    assert!(matches!(
        t.cache
            .set(
                &k,
                Value::from("old")
                    .as_of(T0.saturating_sub(secs(5)))
                    .ttl(secs(5))
            )
            .await,
        Err(Error::AlreadyExpired { .. })
    ));
    assert_miss(&t.cache.get(&k).await.unwrap());
    assert_eq!(disk_entries(&t.cache, "odds_data"), 0);

    // 1 ms younger than the TTL is stored, with 1 ms to live.
    let e = t
        .cache
        .set(
            &k,
            Value::from("young").as_of(T0.saturating_sub(secs(60) - ms(1))),
        )
        .await
        .unwrap();
    assert_eq!(e.meta.expires_at, T0.saturating_add(ms(1)));
    assert_eq!(fresh(t.cache.get(&k).await.unwrap()).remaining(), ms(1));
}

#[tokio::test]
async fn as_of_in_the_future_buys_no_extra_lifetime() {
    let t = TestCache::new();
    let k = Key::odds("g1", 1).unwrap();
    let e = t
        .cache
        .set(&k, Value::from("x").as_of(T0.saturating_add(secs(3600))))
        .await
        .unwrap();
    assert_eq!(e.meta.expires_at, T0.saturating_add(secs(60)));
    t.advance(secs(60));
    assert_miss(&t.cache.get(&k).await.unwrap());
}

#[tokio::test]
async fn keys_with_an_unknown_prefix_are_an_unknown_data_type() {
    let t = TestCache::new();
    for k in ["weather:nyc", "odd:g1:1", "llm:other:c1:d", "newsx:a:1"] {
        let key = Key::parse(k).unwrap();
        assert!(
            matches!(
                t.cache.set(&key, "v").await,
                Err(Error::UnknownDataType { .. })
            ),
            "set {k}"
        );
        assert!(
            matches!(t.cache.get(&key).await, Err(Error::UnknownDataType { .. })),
            "get {k}"
        );
        assert!(
            matches!(
                t.cache
                    .get_or_fetch(&key, || async { Ok::<_, std::io::Error>("v") })
                    .await,
                Err(Error::UnknownDataType { .. })
            ),
            "get_or_fetch {k}"
        );
    }
    let s = t.cache.stats().unwrap();
    assert_eq!(s.data_types.iter().map(|d| d.entries).sum::<u64>(), 0);
}
