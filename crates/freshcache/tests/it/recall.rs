//! Memory hits served again (`MemoryRecall`): at every step of a long random run of writes,
//! deletes, invalidations, derived writes and clock moves, a kept hit is served again only when
//! a memory lookup at that moment answers the same entry with the same reading and deadline.

use std::sync::Arc;

use freshcache::{Cache, Key, Recallable, Recalled, Value};

use crate::support::*;

fn memory_hits(cache: &Cache) -> u64 {
    cache
        .stats()
        .unwrap()
        .tiers
        .into_iter()
        .find(|t| t.tier == "memory")
        .unwrap()
        .hits
}

#[tokio::test]
async fn a_kept_hit_is_served_again_only_while_a_lookup_agrees() {
    let t = TestCache::new();
    let recall = t.cache.memory_recall();
    let keys: Vec<Key> = (1..=3)
        .map(|g| Key::odds(format!("g{g}"), 1_700_000_000).unwrap())
        .collect();
    let derived = Key::llm_features("g1", "2026-12-04").unwrap();
    let all: Vec<Key> = keys.iter().cloned().chain([derived.clone()]).collect();
    let mut kept: Vec<Option<Recallable>> = vec![None; all.len()];
    let mut rng = fastrand::Rng::with_seed(7);
    let (mut same, mut later, mut gone) = (0u32, 0u32, 0u32);

    for step in 0..4000 {
        let k = &keys[rng.usize(..keys.len())];
        match rng.u8(..10) {
            0..=2 => {
                let v = Value::bytes(vec![rng.u8(..); 8]);
                let v = if rng.bool() { v.tags(["t"]) } else { v };
                t.cache.set(k, v).await.unwrap();
            }
            3 => {
                t.cache.delete(k).await.unwrap();
            }
            4 => {
                t.cache.invalidate_tag("t").await.unwrap();
            }
            5 => {
                // Refused while its input is missing or stale: that is fine here.
                let _ = t
                    .cache
                    .set(
                        &derived,
                        Value::bytes(&b"features"[..]).derived_from([keys[0].clone()]),
                    )
                    .await;
            }
            _ => t.advance(ms([0, 0, 1, 7, 400, 20_000][rng.usize(..6)])),
        }
        for (i, key) in all.iter().enumerate() {
            let now = t.cache.get_from_memory(key).unwrap();
            let Some(k) = &kept[i] else {
                kept[i] = t.cache.get_from_memory_recallable(key).unwrap();
                continue;
            };
            match recall.recall(&k.hit, k.stamp) {
                Recalled::Same => {
                    let m = now.unwrap_or_else(|| {
                        panic!("step {step}: {key} served again, a lookup misses")
                    });
                    assert!(Arc::ptr_eq(&m.entry, &k.hit.entry), "step {step}: {key}");
                    assert_eq!(
                        (m.now, m.deadline),
                        (k.hit.now, k.hit.deadline),
                        "step {step}"
                    );
                    same += 1;
                }
                Recalled::Later(h) => {
                    let m = now.unwrap_or_else(|| {
                        panic!("step {step}: {key} served later, a lookup misses")
                    });
                    assert!(Arc::ptr_eq(&m.entry, &h.entry), "step {step}: {key}");
                    assert_eq!((m.now, m.deadline), (h.now, h.deadline), "step {step}");
                    kept[i] = Some(Recallable {
                        hit: h,
                        stamp: k.stamp,
                    });
                    later += 1;
                }
                Recalled::Gone => {
                    kept[i] = t.cache.get_from_memory_recallable(key).unwrap();
                    gone += 1;
                }
            }
        }
    }
    // The run exercised every answer.
    assert!(
        same > 100 && later > 100 && gone > 100,
        "{same} {later} {gone}"
    );
}

#[tokio::test]
async fn hits_served_again_are_counted_when_handed_over() {
    let t = TestCache::new();
    let key = Key::odds("g1", 1_700_000_000).unwrap();
    t.cache.set(&key, Value::bytes(&b"x"[..])).await.unwrap();
    let kept = t.cache.get_from_memory_recallable(&key).unwrap().unwrap();
    let before = memory_hits(&t.cache);
    let recall = t.cache.memory_recall();
    assert!(matches!(
        recall.recall(&kept.hit, kept.stamp),
        Recalled::Same
    ));
    assert_eq!(
        memory_hits(&t.cache),
        before,
        "recall itself counts nothing"
    );
    recall.count_hits(kept.stamp, 5);
    assert_eq!(memory_hits(&t.cache), before + 5);
}

#[tokio::test]
async fn another_instance_change_moves_a_kept_hit_out() {
    // Real clocks: the other instance's change arrives through the index's change feed.
    let root = tempfile::tempdir().unwrap();
    let open = || {
        Cache::builder(freshcache::Config::default().with_cache_dir(root.path()))
            .open()
            .unwrap()
    };
    let (a, b) = (open(), open());
    let key = Key::odds("g1", 1_700_000_000).unwrap();
    a.set(&key, Value::bytes(&b"one"[..])).await.unwrap();
    fresh(b.get(&key).await.unwrap());
    let kept = b.get_from_memory_recallable(&key).unwrap().unwrap();
    let recall = b.memory_recall();
    a.set(&key, Value::bytes(&b"two"[..])).await.unwrap();
    let deadline = std::time::Instant::now() + secs(10);
    while !matches!(recall.recall(&kept.hit, kept.stamp), Recalled::Gone) {
        assert!(
            std::time::Instant::now() < deadline,
            "the change never reached b"
        );
        std::thread::sleep(ms(1));
    }
    assert_eq!(fresh(b.get(&key).await.unwrap()).value().as_ref(), b"two");
}
