//! Edges of the public API: loader results that cannot be stored, damaged index rows,
//! foreign databases, value builders and reports.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use freshcache::{Codec, Error, Key, KeyPrefix, Value};

use crate::support::{TestCache, secs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loaded_value_that_cannot_be_stored_fails_the_leader_and_every_waiter() {
    let t = TestCache::new();
    let key = Key::odds("big", 1).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (cache, key, calls) = (t.cache.clone(), key.clone(), calls.clone());
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_fetch(&key, || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    // Deliberate: a slow loader, so that the other callers coalesce on it.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok::<_, std::io::Error>(vec![0u8; (1 << 20) + 1])
                })
                .await
        }));
    }
    let mut too_large = 0;
    let mut loader_errors = 0;
    for task in tasks {
        match task.await.unwrap() {
            Err(Error::TooLarge { .. }) => too_large += 1,
            Err(Error::Loader { source, .. }) => {
                assert!(
                    source.to_string().contains("could not be stored"),
                    "{source}"
                );
                loader_errors += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!((too_large, loader_errors), (1, 9));
    assert!(t.cache.get(&key).await.unwrap().is_miss());
}

#[tokio::test]
async fn a_row_with_neither_file_nor_value_is_a_counted_miss() {
    let t = TestCache::new();
    let key = Key::news("x", "1").unwrap();
    t.cache.set(&key, "v").await.unwrap();
    let db = rusqlite::Connection::open(t.dir().join("metadata.db")).unwrap();
    db.execute("UPDATE entries SET inline_value = NULL, file = NULL", [])
        .unwrap();
    let fresh_instance = t.reopen();
    assert!(fresh_instance.get(&key).await.unwrap().is_miss());
    assert_eq!(fresh_instance.stats().unwrap().corrupt_entries, 1);
}

#[test]
fn a_database_of_another_schema_version_is_refused() {
    let t = TestCache::new();
    let dir = t.dir();
    drop(t.cache);
    let db = rusqlite::Connection::open(dir.join("metadata.db")).unwrap();
    db.execute(
        "UPDATE schema_info SET value = '99' WHERE name = 'version'",
        [],
    )
    .unwrap();
    drop(db);
    let err = freshcache::Cache::builder(freshcache::Config::default().with_cache_dir(&dir))
        .open()
        .unwrap_err();
    assert!(matches!(err, Error::Index { .. }), "{err:?}");
}

#[tokio::test]
async fn value_builders_carry_validators_codecs_and_kinds_of_bytes() {
    let t = TestCache::new();
    let k = Key::news("espn", "a").unwrap();
    let stored = t
        .cache
        .set(
            &k,
            Value::from(String::from("body"))
                .etag("\"e1\"")
                .last_modified("Tue, 24 Nov 2026 10:00:00 GMT"),
        )
        .await
        .unwrap();
    assert_eq!(stored.meta.codec, Codec::Text);
    let h = t.reopen().get(&k).await.unwrap().fresh().unwrap();
    assert_eq!(h.meta().etag.as_deref(), Some("\"e1\""));
    assert_eq!(
        h.meta().last_modified.as_deref(),
        Some("Tue, 24 Nov 2026 10:00:00 GMT")
    );
    let b = t.cache.set(&k, Value::from(vec![1u8, 2])).await.unwrap();
    assert_eq!((b.meta.codec, b.size()), (Codec::Bytes, 2));
    let s = t.cache.set(&k, Value::from(&b"xyz"[..])).await.unwrap();
    assert_eq!(s.value, &b"xyz"[..]);
    let j = t
        .cache
        .set(&k, Value::json(&[1, 2, 3]).unwrap())
        .await
        .unwrap();
    assert_eq!(j.meta.codec, Codec::Json);
    assert_eq!(
        t.cache.get_typed::<Vec<u8>>(&k).await.unwrap(),
        Some(vec![1, 2, 3])
    );
}

#[tokio::test]
async fn reports_and_debug_output_never_carry_values() {
    let t = TestCache::new();
    let k = Key::odds("g1", 1).unwrap();
    t.cache.set(&k, "top-secret-odds").await.unwrap();
    t.cache.ping().unwrap();
    let debug = format!("{:?}", t.cache);
    assert!(
        debug.contains("Cache") && !debug.contains("top-secret"),
        "{debug}"
    );
    t.advance(secs(61));
    let (report, _) = t
        .cache
        .check_freshness("r", std::slice::from_ref(&k))
        .await
        .unwrap();
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["signals"][0]["verdict"], "stale");
    assert_eq!(json["signals"][0]["age_seconds"], 61.0);
    assert_eq!(json["signals"][0]["ttl_seconds"], 60.0);
    assert!(!json.to_string().contains("top-secret"));
    // Keys display and parse back; prefixes display as given.
    assert_eq!(k.to_string().parse::<Key>().unwrap(), k);
    assert_eq!(AsRef::<str>::as_ref(&k), "odds:g1:1");
    let p = KeyPrefix::parse("odds:~~").unwrap();
    assert_eq!(p.to_string(), "odds:~~");
    assert!(p.upper_bound().unwrap().as_str() > "odds:~~~~");
}
