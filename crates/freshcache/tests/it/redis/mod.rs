//! The Redis tier against real `redis-server` processes of the tests' own.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use freshcache::BreakerState;
use freshcache::{
    Cache, Config, Error, Key, KeyPrefix, ManualClock, Source, SystemClock, TierKind, Value,
};

use freshcache_testkit::{Poll, RedisCluster, RedisServer};

use crate::support::{T0, secs, wait_subscribed};

mod connect;

const REDIS: Source = Source::Tier(TierKind::Redis);

fn config(dir: &std::path::Path, url: &str, extra: &str) -> Config {
    let yaml = format!(
        "cache:\n  redis_url: \"{url}\"\n  redis:\n    timeout: 50ms\n    breaker_open_for: 500ms\n{extra}"
    );
    Config::from_yaml_str(&yaml, None, Vec::new())
        .unwrap()
        .with_cache_dir(dir)
}

/// An instance with its own cache directory (another host, as far as disk goes).
async fn instance(url: &str) -> (tempfile::TempDir, Cache) {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::builder(config(dir.path(), url, ""))
        .clock(SystemClock)
        .connect()
        .await
        .unwrap();
    wait_subscribed(&cache).await;
    (dir, cache)
}

fn odds(n: u32) -> Key {
    Key::odds(format!("g{n}"), 1_700_000_000).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_are_served_from_redis_across_two_instances() {
    let redis = RedisServer::start();
    let (_a_dir, a) = instance(&redis.url()).await;
    let (_b_dir, b) = instance(&redis.url()).await;
    a.set(&odds(1), "1.91").await.unwrap();
    let hit = b.get(&odds(1)).await.unwrap().fresh().unwrap();
    assert_eq!(hit.source, REDIS);
    assert_eq!(hit.value(), &b"1.91"[..]);
    // Promoted to memory (a read racing A's own announcement may skip one promotion).
    let mut sources = Vec::new();
    for _ in 0..3 {
        sources.push(b.get(&odds(1)).await.unwrap().fresh().unwrap().source);
    }
    assert!(
        sources.contains(&Source::Tier(TierKind::Memory)),
        "never promoted: {sources:?}"
    );
    // Redis holds the remaining lifetime, never more than the TTL.
    let pttl: i64 = redis
        .cli(&["PTTL", "freshcache:v/odds:g1:1700000000"])
        .parse()
        .unwrap();
    assert!(pttl > 55_000 && pttl <= 60_000, "{pttl}");
    let stats = b.stats().unwrap();
    let r = stats.tiers.iter().find(|t| t.tier == "redis").unwrap();
    assert_eq!(r.state, "up");
    assert!(r.hits >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_on_one_instance_is_honoured_by_another_within_100ms() {
    let redis = RedisServer::start();
    let (_a_dir, a) = instance(&redis.url()).await;
    let (_b_dir, b) = instance(&redis.url()).await;
    a.set(&odds(1), "v1").await.unwrap();
    // B holds v1 in memory (a read racing A's own announcement may skip one promotion).
    Poll::within(Duration::from_secs(1))
        .every(Duration::ZERO)
        .until_async("v1 never reached B's memory", async || {
            b.get(&odds(1)).await.unwrap().fresh().unwrap().source == Source::Tier(TierKind::Memory)
        })
        .await;
    let within = |started: Instant| {
        let took = started.elapsed();
        assert!(took <= Duration::from_millis(100), "took {took:?}");
    };
    // Overwrite: B must stop serving v1.
    let started = Instant::now();
    a.set(&odds(1), "v2").await.unwrap();
    Poll::within(Duration::from_secs(1))
        .every(Duration::from_millis(2))
        .until_async("B still serves v1", async || {
            b.get(&odds(1)).await.unwrap().fresh().unwrap().value() == &b"v2"[..]
        })
        .await;
    within(started);
    // Delete.
    let started = Instant::now();
    assert!(a.delete(&odds(1)).await.unwrap());
    Poll::within(Duration::from_secs(1))
        .every(Duration::from_millis(2))
        .until_async("B still serves a deleted key", async || {
            b.get(&odds(1)).await.unwrap().is_miss()
        })
        .await;
    within(started);
    // Prefix, with glob characters that must match only themselves.
    let star = Key::news("a*", "1").unwrap();
    let other = Key::news("ab", "1").unwrap();
    a.set(&star, "s").await.unwrap();
    a.set(&other, "o").await.unwrap();
    assert!(b.get(&star).await.unwrap().is_fresh());
    assert!(b.get(&other).await.unwrap().is_fresh());
    let started = Instant::now();
    a.invalidate_prefix(&KeyPrefix::parse("news:a*:").unwrap())
        .await
        .unwrap();
    Poll::within(Duration::from_secs(1))
        .every(Duration::from_millis(2))
        .until_async(
            "B still serves a key under the invalidated prefix",
            async || b.get(&star).await.unwrap().is_miss(),
        )
        .await;
    within(started);
    assert!(
        b.get(&other).await.unwrap().is_fresh(),
        "news:ab:1 is outside news:a*:"
    );
    assert_eq!(redis.cli(&["EXISTS", "freshcache:v/news:ab:1"]), "1");
    assert_eq!(redis.cli(&["EXISTS", "freshcache:v/news:a*:1"]), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_load_gives_no_errors_no_stale_values_and_the_breaker_recovers() {
    let mut redis = RedisServer::start();
    let (_dir, cache) = instance(&redis.url()).await;
    let cache = Arc::new(cache);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (cache, stop) = (cache.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let k = odds((n % 20) as u32);
                let v = format!("value-{n}");
                cache
                    .set(&k, v.clone())
                    .await
                    .expect("set must not fail while redis is down");
                let got = cache
                    .get(&k)
                    .await
                    .expect("get must not fail while redis is down");
                let hit = got.fresh().expect("a value just written is fresh");
                assert_eq!(hit.value(), v.as_bytes(), "a read returned an older value");
            }
            n
        })
    };
    // Deliberate real time: the load runs against a healthy Redis before the kill.
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.kill9();
    Poll::within(Duration::from_secs(5))
        .until_async("breaker never opened", async || {
            cache.redis_state() != Some(BreakerState::Closed)
        })
        .await;
    // Deliberate real time: the load keeps running while Redis stays down, for one breaker
    // period (500 ms).
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart();
    Poll::within(Duration::from_secs(5))
        .every(Duration::from_millis(20))
        .until_async("breaker not closed 5 s after redis returned", async || {
            cache.redis_state() == Some(BreakerState::Closed)
        })
        .await;
    // Deliberate real time: the load runs on the recovered Redis before it stops.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let ops = load.await.unwrap();
    assert!(ops > 100, "only {ops} operations");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_redis_makes_calls_return_within_the_timeout() {
    let redis = RedisServer::start();
    let (_dir, cache) = instance(&redis.url()).await;
    cache.set(&odds(1), "v").await.unwrap();
    redis.pause();
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let started = Instant::now();
        cache.set(&odds(i), "w").await.unwrap();
        let _ = cache.get(&odds(100 + i)).await.unwrap();
        slowest = slowest.max(started.elapsed());
    }
    // The breaker opened while Redis was stopped (checked before it can answer again).
    assert_ne!(cache.redis_state(), Some(BreakerState::Closed));
    redis.resume();
    // Each call waits at most the 50 ms deadline per Redis round trip; a set and a get make a
    // few of them before the breaker opens.
    assert!(
        slowest < Duration::from_millis(400),
        "slowest set+get took {slowest:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_from_an_older_snapshot_never_serves_the_older_value() {
    let mut redis = RedisServer::start();
    let (_a_dir, a) = instance(&redis.url()).await;
    a.set(&odds(1), "old").await.unwrap();
    assert_eq!(redis.cli(&["SAVE"]), "OK");
    let snapshot = redis.dir().join("old.rdb");
    std::fs::copy(redis.dump_path(), &snapshot).unwrap();
    a.set(&odds(1), "new").await.unwrap();
    redis.restart_with_dump(&snapshot);
    assert!(
        redis.cli(&["EXISTS", "freshcache:v/odds:g1:1700000000"]) == "1",
        "the snapshot holds the old copy"
    );

    // A fresh instance elsewhere (empty memory and disk) must not be handed "old".
    let (_c_dir, c) = instance(&redis.url()).await;
    assert!(c.get(&odds(1)).await.unwrap().is_miss());
    // The writer, whose connection broke, never serves "old" either.
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Some(h) = a.get(&odds(1)).await.unwrap().fresh() {
            assert_eq!(h.value(), &b"new"[..]);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_a_clear_start_up_error_that_never_shows_the_password() {
    let redis = RedisServer::start_with(&["--requirepass", "right-horse"]);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("redis://:wrong-battery@127.0.0.1:{}", redis.port);
    let err = Cache::builder(config(dir.path(), &url, ""))
        .connect()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Redis { .. }), "{err:?}");
    assert!(
        !text.contains("wrong-battery") && !text.contains("right-horse"),
        "{text}"
    );
    assert!(
        text.to_lowercase().contains("pass") || text.contains("auth"),
        "{text}"
    );
    assert!(text.contains("***"), "{text}");
    // The right password from the config (or the env) works.
    let ok = Cache::builder(config(
        dir.path(),
        &redis.url(),
        "    password: right-horse\n",
    ))
    .connect()
    .await;
    assert!(ok.is_ok(), "{ok:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_get_or_fetch_across_two_instances_call_the_loader_once() {
    let redis = RedisServer::start();
    let (_a_dir, a) = instance(&redis.url()).await;
    let (_b_dir, b) = instance(&redis.url()).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..50 {
        let cache = if i % 2 == 0 { a.clone() } else { b.clone() };
        let calls = calls.clone();
        tasks.push(tokio::spawn(async move {
            let hit = cache
                .get_or_fetch(&odds(7), || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    // A slow loader: every other caller arrives while it runs.
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    Ok::<_, std::io::Error>("loaded once")
                })
                .await
                .unwrap();
            hit.value().clone()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), &b"loaded once"[..]);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_hit_promoted_to_redis_carries_its_remaining_lifetime() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let a = Cache::builder(config(dir.path(), &redis.url(), ""))
        .clock(clock.clone())
        .connect()
        .await
        .unwrap();
    a.set(&odds(1), "v").await.unwrap();
    redis.cli(&["DEL", "freshcache:v/odds:g1:1700000000"]);
    clock.advance(secs(20));
    // A second instance on the same directory: empty memory, finds it on disk, promotes. (A
    // promotion racing the instance's own start-up — its subscription clears memory and moves
    // every epoch — is skipped by design; a fresh instance then tries again.)
    let deadline = Instant::now() + Duration::from_secs(5);
    let pttl = 'promoted: loop {
        let b = Cache::builder(config(dir.path(), &redis.url(), ""))
            .clock(clock.clone())
            .connect()
            .await
            .unwrap();
        let hit = b.get(&odds(1)).await.unwrap().fresh().unwrap();
        assert_eq!(hit.source, Source::Tier(TierKind::Disk));
        for _ in 0..20 {
            let p: i64 = redis
                .cli(&["PTTL", "freshcache:v/odds:g1:1700000000"])
                .parse()
                .unwrap();
            if p > 0 {
                break 'promoted p;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(Instant::now() < deadline, "never promoted to redis");
    };
    assert!(
        pttl <= 40_000 && pttl > 38_000,
        "promoted with {pttl} ms, not the 40 s left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_redis_is_a_miss_not_a_wrong_value() {
    let redis = RedisServer::start();
    let (_dir, a) = instance(&redis.url()).await;
    redis.cli(&[
        "SET",
        "freshcache:v/odds:g1:1700000000",
        "definitely not an envelope",
    ]);
    assert!(a.get(&odds(1)).await.unwrap().is_miss());
    a.set(&odds(1), Value::from("real")).await.unwrap();
    assert_eq!(
        a.get(&odds(1)).await.unwrap().fresh().unwrap().value(),
        &b"real"[..]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_master_cluster_serves_hits_and_invalidates_a_prefix_on_every_master() {
    let cluster = RedisCluster::start();
    let (_a_dir, a) = instance(&cluster.url()).await;
    let (_b_dir, b) = instance(&cluster.url()).await;
    for i in 0..60 {
        a.set(&Key::news("espn", i).unwrap(), format!("article {i}"))
            .await
            .unwrap();
    }
    a.set(&Key::news("bbc", 1).unwrap(), "keep").await.unwrap();
    let per_node: Vec<usize> = cluster
        .nodes
        .iter()
        .map(|n| {
            n.cli(&["--scan", "--pattern", "freshcache:v/news:espn:*"])
                .lines()
                .count()
        })
        .collect();
    assert_eq!(per_node.iter().sum::<usize>(), 60);
    assert!(
        per_node.iter().filter(|c| **c > 0).count() >= 2,
        "keys on one shard only: {per_node:?}"
    );
    let hit = b
        .get(&Key::news("espn", 7).unwrap())
        .await
        .unwrap()
        .fresh()
        .unwrap();
    assert_eq!(hit.source, REDIS);
    a.invalidate_prefix(&KeyPrefix::parse("news:espn:").unwrap())
        .await
        .unwrap();
    let left: usize = cluster
        .nodes
        .iter()
        .map(|n| {
            n.cli(&["--scan", "--pattern", "freshcache:v/news:espn:*"])
                .lines()
                .count()
        })
        .sum();
    assert_eq!(left, 0);
    assert!(
        b.get(&Key::news("bbc", 1).unwrap())
            .await
            .unwrap()
            .is_fresh()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_redis_kept_past_its_expiry_is_never_served() {
    // Clock skew between hosts, or a Redis expiry that lagged: the reader judges freshness from
    // the envelope, not from Redis having the key.
    let redis = RedisServer::start();
    let clock = ManualClock::new(T0);
    let dir_a = tempfile::tempdir().unwrap();
    let a = Cache::builder(config(dir_a.path(), &redis.url(), ""))
        .clock(clock.clone())
        .connect()
        .await
        .unwrap();
    a.set(&odds(1), "v").await.unwrap();
    clock.advance(secs(61));
    let dir_b = tempfile::tempdir().unwrap();
    let b = Cache::builder(config(dir_b.path(), &redis.url(), ""))
        .clock(clock.clone())
        .connect()
        .await
        .unwrap();
    assert_eq!(
        redis.cli(&["EXISTS", "freshcache:v/odds:g1:1700000000"]),
        "1"
    );
    assert!(b.get(&odds(1)).await.unwrap().is_miss());
    let r = b.stats().unwrap();
    let t = r.tiers.iter().find(|t| t.tier == "redis").unwrap();
    assert_eq!((t.hits, t.expirations), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_over_the_redis_size_limit_stay_out_of_redis() {
    let redis = RedisServer::start();
    let (_dir, a) = instance(&redis.url()).await;
    let k = Key::news("espn", "long").unwrap();
    a.set(&k, Value::bytes(crate::support::noise(1, 2 << 20)))
        .await
        .unwrap();
    assert_eq!(redis.cli(&["EXISTS", "freshcache:v/news:espn:long"]), "0");
    assert_eq!(
        a.get(&k).await.unwrap().fresh().unwrap().value().len(),
        2 << 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_that_missed_redis_is_applied_when_redis_answers_again() {
    let redis = RedisServer::start();
    let (_a_dir, a) = instance(&redis.url()).await;
    a.set(&odds(1), "doomed").await.unwrap();
    redis.pause();
    assert!(a.delete(&odds(1)).await.unwrap());
    let k = Key::news("espn", "x").unwrap();
    a.set(&k, "kept").await.unwrap();
    a.invalidate_prefix(&KeyPrefix::parse("news:").unwrap())
        .await
        .unwrap();
    redis.resume();
    // The stale copy is removed from Redis once it answers (retried in the background).
    Poll::within(Duration::from_secs(5))
        .every(Duration::from_millis(50))
        .until_async("the missed delete never reached redis", async || {
            redis.cli(&["EXISTS", "freshcache:v/odds:g1:1700000000"]) == "0"
        })
        .await;
    // Meanwhile and after, this instance never served the deleted value.
    assert!(a.get(&odds(1)).await.unwrap().is_miss());
    let (_b_dir, b) = instance(&redis.url()).await;
    assert!(b.get(&odds(1)).await.unwrap().is_miss());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_open_refuses_a_redis_config_and_points_to_connect() {
    let dir = tempfile::tempdir().unwrap();
    let err = Cache::builder(config(dir.path(), "redis://127.0.0.1:1", ""))
        .open()
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(err.to_string().contains("connect"), "{err}");
    let unreachable = Cache::builder(config(dir.path(), "redis://127.0.0.1:1", ""))
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(unreachable, Error::Redis { .. }),
        "{unreachable:?}"
    );
}
