//! Refresh-ahead and the explicit stale policies of `get_or_load`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use freshcache::{Cache, Clock, Config, Error, Key, Lookup, ManualClock};

use crate::support::{T0, secs};

fn cache_with(odds_yaml: &str) -> (tempfile::TempDir, ManualClock, Cache) {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!("cache:\n  data_types:\n    odds_data:\n{odds_yaml}");
    let config = Config::from_yaml_str(&yaml, None, Vec::new())
        .unwrap()
        .with_cache_dir(dir.path());
    let clock = ManualClock::new(T0);
    let cache = Cache::builder(config).clock(clock.clone()).open().unwrap();
    (dir, clock, cache)
}

fn key() -> Key {
    Key::odds("g1", 1).unwrap()
}

/// A loader that counts its calls and returns `v<n>`, or fails while `fail` is set.
fn counting_loader(
    calls: Arc<AtomicUsize>,
    fail: Arc<std::sync::atomic::AtomicBool>,
) -> impl Fn() -> std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<String, std::io::Error>> + Send>,
> + Send
+ Sync
+ 'static {
    move || {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        let failing = fail.load(Ordering::SeqCst);
        Box::pin(async move {
            if failing {
                Err(std::io::Error::other("feed down"))
            } else {
                Ok(format!("v{n}"))
            }
        })
    }
}

/// Waits (briefly, in real time) for a background refresh to store a value at `at`.
async fn wait_refreshed(cache: &Cache, at: freshcache::Timestamp) {
    freshcache_testkit::Poll::within(Duration::from_secs(10))
        .every(Duration::from_millis(1))
        .until_async("background refresh did not finish", async || {
            let ins = cache.inspect(&key()).unwrap();
            ins.entry.is_some_and(|e| e.meta.stored_at == at)
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_ahead_keeps_a_key_fresh_for_ten_ttl_periods_with_one_load_per_refresh() {
    let (_dir, clock, cache) = cache_with("      refresh_ahead: 0.1\n");
    let calls = Arc::new(AtomicUsize::new(0));
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = counting_loader(calls.clone(), fail);
    let load = Arc::new(load);
    for second in 0..=600u64 {
        let l = load.clone();
        let got = cache.get_or_load(&key(), move || l()).await.unwrap();
        let hit = match got {
            Lookup::Fresh(h) => h,
            other => panic!("at {second}s: {other:?}"),
        };
        if hit.remaining() < secs(6) {
            // Inside the last 10 % of its lifetime: a refresh started; let it land.
            wait_refreshed(&cache, clock.now()).await;
        }
        clock.advance(secs(1));
    }
    // One initial load, then one refresh per 55 s period (at 55, 110, ..., 550).
    assert_eq!(calls.load(Ordering::SeqCst), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_revalidate_serves_stale_marked_once_and_refreshes_in_the_background() {
    let (_dir, clock, cache) = cache_with("      stale: {policy: while_revalidate, max: 30s}\n");
    let calls = Arc::new(AtomicUsize::new(0));
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = Arc::new(counting_loader(calls.clone(), fail));
    let l = load.clone();
    assert!(
        cache
            .get_or_load(&key(), move || l())
            .await
            .unwrap()
            .is_fresh()
    );
    clock.advance(secs(70));
    // Plain reads never see it, and do not delete it: the type may still serve it stale.
    assert!(cache.get(&key()).await.unwrap().is_miss());
    let l = load.clone();
    match cache.get_or_load(&key(), move || l()).await.unwrap() {
        Lookup::Stale(h) => assert_eq!(h.value(), &b"v1"[..]),
        other => panic!("expected a stale hit, got {other:?}"),
    }
    wait_refreshed(&cache, clock.now()).await;
    let h = cache.get(&key()).await.unwrap().fresh().unwrap();
    assert_eq!(h.value(), &b"v2"[..]);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // Beyond the window, nothing stale is served: the caller waits for a load.
    clock.advance(secs(100));
    let l = load.clone();
    let h = cache
        .get_or_load(&key(), move || l())
        .await
        .unwrap()
        .fresh()
        .unwrap();
    assert_eq!(h.value(), &b"v3"[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_error_serves_stale_only_when_the_loader_fails_and_only_within_its_window() {
    let (_dir, clock, cache) = cache_with("      stale: {policy: if_error, max: 30s}\n");
    let calls = Arc::new(AtomicUsize::new(0));
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = Arc::new(counting_loader(calls.clone(), fail.clone()));
    let l = load.clone();
    let _ = cache.get_or_load(&key(), move || l()).await.unwrap();
    clock.advance(secs(70));
    fail.store(true, Ordering::SeqCst);
    let l = load.clone();
    match cache.get_or_load(&key(), move || l()).await.unwrap() {
        Lookup::Stale(h) => assert_eq!(h.value(), &b"v1"[..]),
        other => panic!("expected stale on loader error, got {other:?}"),
    }
    clock.advance(secs(21)); // 31 s past expiry
    let l = load.clone();
    let err = cache.get_or_load(&key(), move || l()).await.unwrap_err();
    assert!(matches!(err, Error::Loader { .. }), "{err:?}");
    // The guard never accepts it, policy or not.
    let (report, _) = cache.check_freshness("run", &[key()]).await.unwrap();
    assert!(!report.all_fresh());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_policy_never_serves_stale() {
    let (_dir, clock, cache) = cache_with("      ttl: 60s\n");
    let calls = Arc::new(AtomicUsize::new(0));
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = Arc::new(counting_loader(calls, fail.clone()));
    let l = load.clone();
    let _ = cache.get_or_load(&key(), move || l()).await.unwrap();
    clock.advance(secs(61));
    fail.store(true, Ordering::SeqCst);
    let l = load.clone();
    assert!(matches!(
        cache.get_or_load(&key(), move || l()).await,
        Err(Error::Loader { .. })
    ));
}
