//! Entries survive a restart with identical bytes and expiry; expired ones stay misses.

use std::time::Duration;

use freshcache::{Clock, Codec, Key, ManualClock, Timestamp, Value};

use crate::support::*;

struct Written {
    key: Key,
    value: Vec<u8>,
    codec: Codec,
    etag: Option<String>,
    expires_at: Timestamp,
}

fn key_for(i: usize) -> Key {
    match i % 3 {
        0 => Key::odds(format!("g{i}"), 1_700_000_000 + i as u64),
        1 => Key::news(format!("src{}", i % 7), format!("a{i}")),
        _ => Key::llm_features(format!("c{i}"), "2026-11-24"),
    }
    .unwrap()
}

fn value_for(i: usize) -> Vec<u8> {
    let len = [0usize, 1, 300, 5_000, 9_000, 20_000, 64 * 1024][i % 7];
    if i.is_multiple_of(2) {
        noise(i as u64, len)
    } else {
        // Compressible: exercises the compressed envelope path for large values.
        format!("entry {i} ")
            .into_bytes()
            .into_iter()
            .cycle()
            .take(len)
            .collect()
    }
}

#[tokio::test]
async fn restart_keeps_every_unexpired_entry_byte_for_byte_and_misses_expired_ones() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cache");
    let clock = ManualClock::new(T0);
    // Every entry is checked at this instant, after the restart.
    let check_at = T0.saturating_add(secs(31));

    let mut written = Vec::new();
    {
        let cache = open(&dir, &clock);
        for i in 0..200 {
            clock.advance(ms(1));
            let now = clock.now();
            let key = key_for(i);
            let value = value_for(i);
            let ttl: Option<Duration> = match i % 4 {
                0 => Some(secs(10)),
                // Expires exactly when checked: a miss.
                1 => Some(check_at.duration_since(now)),
                // Expires 1 ms after it is checked: a hit.
                2 => Some(check_at.duration_since(now) + ms(1)),
                _ => None,
            };
            let codec = if i % 5 == 0 {
                Codec::Text
            } else {
                Codec::Bytes
            };
            let etag = (i % 6 == 0).then(|| format!("\"etag-{i}\""));
            let mut v = Value::bytes(value.clone()).codec(codec);
            if let Some(ttl) = ttl {
                v = v.ttl(ttl);
            }
            if let Some(e) = &etag {
                v = v.etag(e.clone());
            }
            let entry = cache.set(&key, v).await.unwrap();
            let type_ttl = cache.data_type(&key).unwrap().ttl;
            let expires_at = now.saturating_add(ttl.unwrap_or(type_ttl));
            assert_eq!(entry.meta.expires_at, expires_at);
            written.push(Written {
                key,
                value,
                codec,
                etag,
                expires_at,
            });
        }
        cache.flush().unwrap();
        assert!(blob_files(&dir).len() >= 30, "expected many blob files");
    }

    clock.set(check_at);
    let cache = open(&dir, &clock);
    let (mut hits, mut misses) = (0, 0);
    for w in &written {
        let l = cache.get(&w.key).await.unwrap();
        if check_at < w.expires_at {
            let h = fresh(l);
            assert_eq!(h.source, DISK, "{}", w.key);
            assert_eq!(h.value().as_ref(), &w.value[..], "{}", w.key);
            assert_eq!(h.meta().expires_at, w.expires_at);
            assert_eq!(h.meta().codec, w.codec);
            assert_eq!(h.meta().etag, w.etag);
            hits += 1;
        } else {
            assert_miss(&l);
            misses += 1;
        }
    }
    assert_eq!((hits, misses), (100, 100));

    // Reading leaves the expired rows to the sweep; the rest survive a second restart too.
    drop(cache);
    let cache = open(&dir, &clock);
    let on_disk: u64 = cache
        .stats()
        .unwrap()
        .data_types
        .iter()
        .map(|t| t.entries)
        .sum();
    assert_eq!(on_disk, 200);
    cache
        .cleanup(freshcache::maintenance::CleanupOptions::default())
        .unwrap();
    let on_disk: u64 = cache
        .stats()
        .unwrap()
        .data_types
        .iter()
        .map(|t| t.entries)
        .sum();
    assert_eq!(on_disk, 100);
    for w in written.iter().filter(|w| check_at < w.expires_at) {
        assert_eq!(
            fresh(cache.get(&w.key).await.unwrap()).value().as_ref(),
            &w.value[..]
        );
    }
}

#[tokio::test]
async fn counters_survive_a_restart() {
    let t = TestCache::new();
    let k = Key::odds("g1", 1).unwrap();
    t.cache.set(&k, "x").await.unwrap();
    fresh(t.cache.get(&k).await.unwrap());
    let before = type_report(&t.cache, "odds_data");
    assert_eq!((before.sets, before.hits), (1, 1));
    t.cache.flush().unwrap();
    let b = t.reopen();
    let after = type_report(&b, "odds_data");
    assert_eq!((after.sets, after.hits), (1, 1));
}
