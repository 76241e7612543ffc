//! Lineage: derived values are fresh only while every input is fresh and unchanged — a change,
//! delete, invalidation or expiry of an input cascades through chains and diamonds, on every
//! tier, across a restart, another process on the directory and another instance sharing Redis.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use freshcache::{Cache, Error, InputProblem, Key, KeyPrefix, Lookup, SystemClock, Value};
use freshcache_testkit::{Poll, RedisServer};

use crate::support::*;

fn news(n: u32) -> Key {
    Key::news("espn", format!("a{n}")).unwrap()
}

fn odds(n: u32) -> Key {
    Key::odds(format!("g{n}"), 1_700_000_000).unwrap()
}

fn feat(c: u32) -> Key {
    Key::llm_features(format!("c{c}"), "2026-12-04").unwrap()
}

fn derived(v: &'static str, inputs: &[Key]) -> Value {
    Value::from(v).derived_from(inputs.iter().cloned())
}

async fn is_fresh(cache: &Cache, k: &Key) -> bool {
    cache.get(k).await.unwrap().is_fresh()
}

/// news1 <- feat1 <- feat2 <- feat3 <- feat4: four levels above the article.
async fn chain(cache: &Cache) {
    cache.set(&news(1), "article v1").await.unwrap();
    cache
        .set(&feat(1), derived("f1", &[news(1)]))
        .await
        .unwrap();
    for c in 2..=4 {
        cache
            .set(&feat(c), derived("f", &[feat(c - 1)]))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_changed_input_cascades_four_levels_on_memory_and_disk_reads() {
    let t = TestCache::new();
    chain(&t.cache).await;
    for c in 1..=4 {
        let h = fresh(t.cache.get(&feat(c)).await.unwrap());
        assert_eq!(h.source, MEMORY);
        assert_eq!(h.meta().inputs().len(), 1);
    }
    // A corrected article: every level stops being fresh, here and in a fresh instance (disk).
    t.cache.set(&news(1), "article v2").await.unwrap();
    let other = t.reopen();
    for c in 1..=4 {
        assert_miss(&t.cache.get(&feat(c)).await.unwrap());
        assert_miss(&other.get(&feat(c)).await.unwrap());
    }
    // Recomputing the first level does not revive the next: it was derived from the old one.
    t.cache
        .set(&feat(1), derived("f1'", &[news(1)]))
        .await
        .unwrap();
    assert!(is_fresh(&t.cache, &feat(1)).await);
    assert_miss(&t.cache.get(&feat(2)).await.unwrap());
}

#[tokio::test]
async fn rewriting_an_input_with_identical_content_cascades_nothing() {
    let t = TestCache::new();
    chain(&t.cache).await;
    t.advance(secs(10));
    // A 304 re-validation stores the same bytes again, with a new stored_at.
    t.cache
        .set(&news(1), Value::from("article v1").etag("\"e1\""))
        .await
        .unwrap();
    for c in 1..=4 {
        assert!(is_fresh(&t.cache, &feat(c)).await, "level {c}");
        assert!(is_fresh(&t.reopen(), &feat(c)).await, "level {c} from disk");
    }
}

#[tokio::test]
async fn a_diamond_is_refused_through_either_side() {
    let t = TestCache::new();
    // odds1 feeds feat1 and feat2; feat3 is derived from both.
    t.cache.set(&odds(1), "1.91").await.unwrap();
    t.cache.set(&news(1), "article").await.unwrap();
    t.cache
        .set(&feat(1), derived("left", &[odds(1)]))
        .await
        .unwrap();
    t.cache
        .set(&feat(2), derived("right", &[odds(1), news(1)]))
        .await
        .unwrap();
    t.cache
        .set(&feat(3), derived("top", &[feat(1), feat(2)]))
        .await
        .unwrap();
    assert!(is_fresh(&t.cache, &feat(3)).await);
    let h = fresh(t.cache.get(&feat(3)).await.unwrap());
    // Its expiry is the earliest of its inputs' (the odds' 60 s), not its own 24 h.
    assert_eq!(h.meta().expires_at, T0.saturating_add(secs(60)));

    t.cache.set(&odds(1), "2.05").await.unwrap();
    for k in [feat(1), feat(2), feat(3)] {
        assert_miss(&t.cache.get(&k).await.unwrap());
    }
    // Only the article side changes: the top falls, the left side stays.
    let t = TestCache::new();
    t.cache.set(&odds(1), "1.91").await.unwrap();
    t.cache.set(&news(1), "article").await.unwrap();
    t.cache
        .set(&feat(1), derived("l", &[odds(1)]))
        .await
        .unwrap();
    t.cache
        .set(&feat(2), derived("r", &[odds(1), news(1)]))
        .await
        .unwrap();
    t.cache
        .set(&feat(3), derived("top", &[feat(1), feat(2)]))
        .await
        .unwrap();
    t.cache.delete(&news(1)).await.unwrap();
    assert!(is_fresh(&t.cache, &feat(1)).await);
    assert_miss(&t.cache.get(&feat(2)).await.unwrap());
    assert_miss(&t.cache.get(&feat(3)).await.unwrap());
}

#[tokio::test]
async fn deletes_prefix_invalidations_and_expiry_of_an_input_cascade() {
    let t = TestCache::new();
    t.cache.set(&news(1), "a").await.unwrap();
    t.cache.set(&news(2), "b").await.unwrap();
    t.cache.set(&odds(1), "1.9").await.unwrap();
    t.cache
        .set(&feat(1), derived("1", &[news(1)]))
        .await
        .unwrap();
    t.cache
        .set(&feat(2), derived("2", &[news(2)]))
        .await
        .unwrap();
    t.cache
        .set(&feat(3), derived("3", &[odds(1)]))
        .await
        .unwrap();
    t.cache.delete(&news(1)).await.unwrap();
    assert_miss(&t.cache.get(&feat(1)).await.unwrap());
    assert!(is_fresh(&t.cache, &feat(2)).await);
    t.cache
        .invalidate_prefix(&KeyPrefix::parse("news:espn:").unwrap())
        .await
        .unwrap();
    assert_miss(&t.cache.get(&feat(2)).await.unwrap());
    assert!(is_fresh(&t.cache, &feat(3)).await);
    t.advance(secs(60) - ms(1));
    assert!(is_fresh(&t.cache, &feat(3)).await);
    t.advance(ms(1));
    assert_miss(&t.cache.get(&feat(3)).await.unwrap());
}

#[tokio::test]
async fn a_missing_or_stale_input_refuses_the_write_naming_it_unless_unchecked() {
    let t = TestCache::new();
    let err = t
        .cache
        .set(&feat(1), derived("f", &[news(1)]))
        .await
        .unwrap_err();
    match &err {
        Error::InputNotFresh { input, problem, .. } => {
            assert_eq!(input, news(1).as_str());
            assert_eq!(problem, &InputProblem::Missing);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.class(), freshcache::ErrorClass::StaleSignals);
    assert!(t.cache.get(&feat(1)).await.unwrap().is_miss());

    t.cache.set(&odds(1), "1.9").await.unwrap();
    t.advance(secs(61));
    let err = t
        .cache
        .set(&feat(1), derived("f", &[odds(1)]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InputNotFresh { problem: InputProblem::Stale { since }, .. }
            if *since == T0.saturating_add(secs(60))),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("odds:g1:1700000000 stale since"),
        "{err}"
    );

    // Opted out: stored, but not fresh while its input is stale.
    t.cache
        .set(
            &feat(1),
            derived("f", &[odds(1), news(9)]).unchecked_inputs(),
        )
        .await
        .unwrap();
    assert_miss(&t.cache.get(&feat(1)).await.unwrap());
    let stored = t.cache.inspect(&feat(1)).unwrap().entry.unwrap();
    assert_eq!(
        stored.meta.inputs().len(),
        1,
        "the missing input is not recorded"
    );
}

#[tokio::test]
async fn inputs_that_lead_back_to_the_key_are_refused() {
    let t = TestCache::new();
    t.cache.set(&news(1), "a").await.unwrap();
    assert!(matches!(
        t.cache.set(&news(1), derived("a", &[news(1)])).await,
        Err(Error::LineageCycle { .. })
    ));
    t.cache
        .set(&feat(1), derived("1", &[news(1)]))
        .await
        .unwrap();
    t.cache
        .set(&feat(2), derived("2", &[feat(1)]))
        .await
        .unwrap();
    let err = t
        .cache
        .set(&news(1), derived("a", &[feat(2)]))
        .await
        .unwrap_err();
    match &err {
        Error::LineageCycle { path, .. } => assert_eq!(
            path,
            "news:espn:a1 <- llm:features:c2:2026-12-04 <- llm:features:c1:2026-12-04 <- news:espn:a1"
        ),
        other => panic!("{other:?}"),
    }
    assert!(err.is_invalid_input());
    // Nothing was written: the chain is intact.
    assert!(is_fresh(&t.cache, &feat(2)).await);
}

#[tokio::test]
async fn lineage_survives_a_restart() {
    let t = TestCache::new();
    chain(&t.cache).await;
    drop(t.reopen());
    let after = t.reopen();
    let h = fresh(after.get(&feat(4)).await.unwrap());
    assert_eq!(h.source, DISK);
    assert_eq!(h.meta().inputs()[0].key, feat(3).as_str());
    assert_eq!(h.meta().inputs()[0].stored_at, T0);
    after.set(&news(1), "article v2").await.unwrap();
    drop(after);
    let again = t.reopen();
    for c in 1..=4 {
        assert_miss(&again.get(&feat(c)).await.unwrap());
    }
}

#[tokio::test]
async fn a_memory_hit_on_a_derived_value_follows_a_change_made_in_the_same_process() {
    let t = TestCache::new();
    chain(&t.cache).await;
    // Remembered checks are reused ...
    for _ in 0..3 {
        assert_eq!(fresh(t.cache.get(&feat(4)).await.unwrap()).source, MEMORY);
        assert!(t.cache.get_from_memory(&feat(4)).unwrap().is_some());
    }
    // ... until any change: then the next hit checks the inputs again.
    t.cache.set(&news(1), "v2").await.unwrap();
    assert!(t.cache.get_from_memory(&feat(4)).unwrap().is_none());
    assert_miss(&t.cache.get(&feat(4)).await.unwrap());
}

const CHILD_DIR: &str = "FRESHCACHE_IT_LINEAGE_DIR";

/// Another process on the directory rewrites the article; this process's memory copies of the
/// features stop being served within 100 ms of the child's write returning.
#[test]
fn a_change_in_another_process_cascades_within_100ms() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        let cache =
            Cache::open(freshcache::Config::default().with_cache_dir(Path::new(&dir))).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(cache.set(&news(1), "article v2")).unwrap();
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cache");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cache = Cache::open(freshcache::Config::default().with_cache_dir(&dir)).unwrap();
    rt.block_on(chain(&cache));
    for c in 1..=4 {
        assert_eq!(
            fresh(rt.block_on(cache.get(&feat(c))).unwrap()).source,
            MEMORY
        );
    }
    let name = format!(
        "{}::a_change_in_another_process_cascades_within_100ms",
        module_path!().split_once("::").unwrap().1
    );
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", &name, "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir.display().to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = Instant::now();
    Poll::within(Duration::from_millis(100))
        .every(Duration::from_millis(1))
        .until("every level stops being fresh", || {
            (1..=4).all(|c| !rt.block_on(cache.get(&feat(c))).unwrap().is_fresh())
        });
    eprintln!(
        "cascade seen {:?} after the other process's write",
        written.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_instance_cascades_on_another_sharing_redis_within_100ms() {
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
    chain(&a).await;
    // B holds every level in memory (a read may race A's announcements; it then re-reads).
    for c in 1..=4 {
        let k = feat(c);
        let mut source = None;
        for _ in 0..20 {
            if let Lookup::Fresh(h) = b.get(&k).await.unwrap() {
                source = Some(h.source);
                if h.source == MEMORY {
                    break;
                }
            }
        }
        assert_eq!(source, Some(MEMORY), "level {c}");
    }
    a.set(&news(1), "article v2").await.unwrap();
    let written = Instant::now();
    let deadline = written + Duration::from_millis(100);
    loop {
        let mut fresh_left = 0;
        for c in 1..=4 {
            fresh_left += usize::from(b.get(&feat(c)).await.unwrap().is_fresh());
        }
        if fresh_left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{fresh_left} levels still fresh after 100 ms"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    eprintln!(
        "cascade seen {:?} after the other instance's write",
        written.elapsed()
    );
}
