//! `get_or_fetch`: one loader per key at a time, shared results, uncached errors, and
//! recovery when the leader is cancelled.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use freshcache::{Cache, Error, Key, Source};

use crate::support::*;

/// Waits (in real time, for tasks to get scheduled) until `n` callers wait on a load.
async fn until_coalesced(cache: &Cache, data_type: &str, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let c = type_report(cache, data_type).coalesced;
        if c >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {c} of {n} callers started waiting"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn hundred_concurrent_get_or_fetch_call_the_loader_once_and_share_its_value() {
    let t = TestCache::new();
    let key = Key::odds("g42", 1_700_000_000).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));

    let mut tasks = Vec::new();
    for i in 0..100 {
        let (cache, key, calls) = (t.cache.clone(), key.clone(), calls.clone());
        tasks.push(tokio::spawn(async move {
            let probe = cache.clone();
            cache
                .get_or_fetch(&key, move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    // Hold the load until every other caller is waiting on it, then a bit more:
                    // deliberate real time for the last caller counted to park on the load (a
                    // step nothing observable marks).
                    until_coalesced(&probe, "odds_data", 99).await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok::<_, io::Error>(format!("odds from loader {i}"))
                })
                .await
        }));
    }
    let mut values = Vec::new();
    for task in tasks {
        let hit = task.await.unwrap().unwrap();
        assert_eq!(hit.source, Source::Loader);
        values.push(hit.value().clone());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "loader calls");
    assert_eq!(values.len(), 100);
    assert!(
        values.iter().all(|v| *v == values[0]),
        "callers saw different values"
    );
    assert!(values[0].starts_with(b"odds from loader "));

    let r = type_report(&t.cache, "odds_data");
    assert_eq!((r.loads, r.coalesced, r.sets), (1, 99, 1));

    // The value is now cached: the next call does not load.
    let hit = t
        .cache
        .get_or_fetch(&key, || async {
            Err::<String, _>(io::Error::other("must not be called"))
        })
        .await
        .unwrap();
    assert_eq!(hit.source, MEMORY);
    assert_eq!(hit.value(), &values[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn loader_error_reaches_every_waiter_and_is_not_cached() {
    let t = TestCache::new();
    let key = Key::news("espn", "a1").unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    const N: usize = 20;

    let mut tasks = Vec::new();
    for _ in 0..N {
        let (cache, key, calls) = (t.cache.clone(), key.clone(), calls.clone());
        tasks.push(tokio::spawn(async move {
            let probe = cache.clone();
            cache
                .get_or_fetch(&key, move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    until_coalesced(&probe, "news_articles", (N - 1) as u64).await;
                    Err::<String, _>(io::Error::other("upstream down"))
                })
                .await
        }));
    }
    for task in tasks {
        match task.await.unwrap() {
            Err(Error::Loader { key: k, source }) => {
                assert_eq!(k, "news:espn:a1");
                assert_eq!(source.to_string(), "upstream down");
            }
            other => panic!("expected Error::Loader, got {other:?}"),
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_miss(&t.cache.get(&key).await.unwrap());
    assert_eq!(disk_entries(&t.cache, "news_articles"), 0);
    assert_eq!(type_report(&t.cache, "news_articles").load_errors, 1);

    // Not cached: the next call loads again and this time succeeds.
    let c2 = calls.clone();
    let hit = t
        .cache
        .get_or_fetch(&key, move || async move {
            c2.fetch_add(1, Ordering::SeqCst);
            Ok::<_, io::Error>("recovered")
        })
        .await
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(hit.value(), &b"recovered"[..]);
    assert_eq!(
        fresh(t.cache.get(&key).await.unwrap()).value(),
        &b"recovered"[..]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aborting_the_leader_lets_a_waiter_become_leader_and_finish() {
    let t = TestCache::new();
    let key = Key::odds("g7", 1).unwrap();
    let started = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));

    let leader = {
        let (cache, key, started, calls) =
            (t.cache.clone(), key.clone(), started.clone(), calls.clone());
        tokio::spawn(async move {
            cache
                .get_or_fetch(&key, move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    started.store(true, Ordering::SeqCst);
                    std::future::pending::<()>().await;
                    Ok::<_, io::Error>("never")
                })
                .await
        })
    };
    freshcache_testkit::Poll::within(Duration::from_secs(10))
        .every(Duration::from_millis(1))
        .until_async("the leader's load never started", async || {
            started.load(Ordering::SeqCst)
        })
        .await;

    const WAITERS: usize = 5;
    let mut waiters = Vec::new();
    for i in 0..WAITERS {
        let (cache, key, calls) = (t.cache.clone(), key.clone(), calls.clone());
        waiters.push(tokio::spawn(async move {
            cache
                .get_or_fetch(&key, move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    // Deliberate: a slow loader, should a waiter ever run its own.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok::<_, io::Error>(format!("from waiter {i}"))
                })
                .await
        }));
    }
    until_coalesced(&t.cache, "odds_data", WAITERS as u64).await;

    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());

    let mut values = Vec::new();
    for w in waiters {
        let hit = tokio::time::timeout(Duration::from_secs(10), w)
            .await
            .expect("a waiter hung after its leader was cancelled")
            .unwrap()
            .unwrap();
        values.push(hit.value().clone());
    }
    assert!(values.iter().all(|v| *v == values[0]), "{values:?}");
    assert!(values[0].starts_with(b"from waiter "));
    // The cancelled leader and exactly one waiter that took over.
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(fresh(t.cache.get(&key).await.unwrap()).value(), &values[0]);
}

#[tokio::test]
async fn dropping_the_leader_future_leaves_no_registration_behind() {
    let t = TestCache::new();
    let key = Key::odds("g8", 1).unwrap();
    let timed_out = tokio::time::timeout(
        Duration::from_millis(20),
        t.cache.get_or_fetch(&key, || async {
            std::future::pending::<()>().await;
            Ok::<_, io::Error>("never")
        }),
    )
    .await;
    assert!(timed_out.is_err(), "the pending loader finished?");

    // The next caller is not stuck behind the dropped load: it loads itself.
    let hit = tokio::time::timeout(
        Duration::from_secs(5),
        t.cache
            .get_or_fetch(&key, || async { Ok::<_, io::Error>("second") }),
    )
    .await
    .expect("get_or_fetch hung after the previous leader was dropped")
    .unwrap();
    assert_eq!(hit.source, Source::Loader);
    assert_eq!(hit.value(), &b"second"[..]);
}

#[tokio::test]
async fn get_or_fetch_serves_a_fresh_value_without_loading_and_reloads_after_ttl() {
    let t = TestCache::new();
    let key = Key::odds("g9", 1).unwrap();
    t.cache.set(&key, "cached").await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let load = |calls: Arc<AtomicUsize>| {
        move || async move {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<_, io::Error>("loaded")
        }
    };

    t.advance(secs(59) + ms(999));
    let hit = t
        .cache
        .get_or_fetch(&key, load(calls.clone()))
        .await
        .unwrap();
    assert_eq!(hit.value(), &b"cached"[..]);
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    t.advance(ms(1));
    let hit = t
        .cache
        .get_or_fetch(&key, load(calls.clone()))
        .await
        .unwrap();
    assert_eq!(hit.value(), &b"loaded"[..]);
    assert_eq!(hit.source, Source::Loader);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // The loaded value gets a full TTL from the time it was loaded.
    assert_eq!(hit.remaining(), secs(60));
}

/// A waiter wakes after the leader stored a short-lived value; by the waiter's clock reading the
/// value has expired, so handing it out as a hit would serve it past its TTL.
#[tokio::test(flavor = "current_thread")]
async fn waiter_never_receives_a_loaded_value_that_expired_before_it_woke() {
    let t = TestCache::new();
    let key = Key::odds("g1", 1).unwrap();
    let waiter = {
        let (cache, key) = (t.cache.clone(), key.clone());
        tokio::spawn(async move {
            cache
                .get_or_fetch(&key, || async {
                    Ok::<_, io::Error>(freshcache::Value::from("waiter's own load"))
                })
                .await
        })
    };
    let probe = t.cache.clone();
    let leader = t
        .cache
        .get_or_fetch(&key, move || async move {
            until_coalesced(&probe, "odds_data", 1).await;
            Ok::<_, io::Error>(freshcache::Value::from("1 ms to live").ttl(ms(1)))
        })
        .await
        .unwrap();
    assert!(leader.meta().expires_at > leader.now);

    // The waiter task only runs once this task yields: move time past the value's expiry first.
    t.advance(secs(1));
    let hit = waiter.await.unwrap().unwrap();
    assert!(
        hit.meta().expires_at > hit.now,
        "waiter got {:?} expiring at {} though its clock read {}",
        hit.value(),
        hit.meta().expires_at,
        hit.now
    );
}
