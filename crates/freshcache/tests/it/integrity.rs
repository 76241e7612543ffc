//! Damaged blob files are misses, never wrong values, and are counted.

use std::fs;
use std::path::PathBuf;

use freshcache::{Key, Value};

use crate::support::*;

/// A news value large and incompressible enough to live in a blob file.
const SIZE: usize = 40 * 1024;

/// Writes one large value and returns the harness, key, value and its blob file.
async fn with_one_blob() -> (TestCache, Key, Vec<u8>, PathBuf) {
    let t = TestCache::new();
    let k = Key::news("espn", "big").unwrap();
    let v = noise(7, SIZE);
    t.cache.set(&k, Value::bytes(v.clone())).await.unwrap();
    let blobs = blob_files(&t.dir());
    assert_eq!(blobs.len(), 1, "{blobs:?}");
    let blob = blobs.into_iter().next().unwrap();
    assert!(fs::metadata(&blob).unwrap().len() > SIZE as u64);
    (t, k, v, blob)
}

#[tokio::test]
async fn flipped_byte_anywhere_in_a_blob_is_a_counted_miss_never_a_wrong_value() {
    for pos in [0usize, 3, 5, 12, 40, 100, SIZE / 2, SIZE + 20] {
        let (t, k, _, blob) = with_one_blob().await;
        let mut bytes = fs::read(&blob).unwrap();
        let pos = pos.min(bytes.len() - 1);
        bytes[pos] ^= 0x01;
        fs::write(&blob, &bytes).unwrap();

        let b = t.reopen();
        assert_miss(&b.get(&k).await.unwrap());
        let s = b.stats().unwrap();
        assert_eq!(s.corrupt_entries, 1, "flip at {pos}");
        // The damaged row and file are gone; a second read is a plain miss, not counted again.
        assert_miss(&b.get(&k).await.unwrap());
        assert_eq!(b.stats().unwrap().corrupt_entries, 1);
        assert_eq!(disk_entries(&b, "news_articles"), 0);
        assert!(!blob.exists(), "damaged blob left behind (flip at {pos})");
    }
}

#[tokio::test]
async fn flipped_last_byte_is_detected() {
    let (t, k, _, blob) = with_one_blob().await;
    let mut bytes = fs::read(&blob).unwrap();
    *bytes.last_mut().unwrap() ^= 0x80;
    fs::write(&blob, &bytes).unwrap();
    let b = t.reopen();
    assert_miss(&b.get(&k).await.unwrap());
    assert_eq!(b.stats().unwrap().corrupt_entries, 1);
}

#[tokio::test]
async fn truncated_blob_is_a_counted_miss() {
    for keep in [0.0, 0.1, 0.5, 0.999] {
        let (t, k, _, blob) = with_one_blob().await;
        let len = fs::metadata(&blob).unwrap().len();
        let f = fs::OpenOptions::new().write(true).open(&blob).unwrap();
        f.set_len((len as f64 * keep) as u64).unwrap();
        drop(f);

        let b = t.reopen();
        assert_miss(&b.get(&k).await.unwrap());
        assert_eq!(b.stats().unwrap().corrupt_entries, 1, "kept {keep}");
        assert_eq!(disk_entries(&b, "news_articles"), 0);
    }
}

#[tokio::test]
async fn missing_blob_is_a_counted_miss() {
    let (t, k, _, blob) = with_one_blob().await;
    fs::remove_file(&blob).unwrap();
    let b = t.reopen();
    assert_miss(&b.get(&k).await.unwrap());
    assert_eq!(b.stats().unwrap().corrupt_entries, 1);
}

#[tokio::test]
async fn blob_of_another_key_copied_over_is_a_miss_not_the_other_value() {
    let t = TestCache::new();
    let (k1, k2) = (
        Key::news("s", "one").unwrap(),
        Key::news("s", "two").unwrap(),
    );
    t.cache
        .set(&k1, Value::bytes(noise(1, SIZE)))
        .await
        .unwrap();
    let first = blob_files(&t.dir());
    t.cache
        .set(&k2, Value::bytes(noise(2, SIZE)))
        .await
        .unwrap();
    let second: Vec<_> = blob_files(&t.dir())
        .into_iter()
        .filter(|p| !first.contains(p))
        .collect();
    assert_eq!((first.len(), second.len()), (1, 1));
    fs::copy(&first[0], &second[0]).unwrap();

    let b = t.reopen();
    assert_miss(&b.get(&k2).await.unwrap());
    assert_eq!(b.stats().unwrap().corrupt_entries, 1);
    // The untouched key still reads back intact.
    assert_eq!(
        fresh(b.get(&k1).await.unwrap()).value(),
        &noise(1, SIZE)[..]
    );
}

#[tokio::test]
async fn a_key_can_be_written_again_after_its_blob_was_found_damaged() {
    let (t, k, v, blob) = with_one_blob().await;
    fs::write(&blob, b"garbage").unwrap();
    let b = t.reopen();
    assert_miss(&b.get(&k).await.unwrap());
    b.set(&k, Value::bytes(v.clone())).await.unwrap();
    let c = t.reopen();
    assert_eq!(fresh(c.get(&k).await.unwrap()).value(), &v[..]);
    assert_eq!(c.stats().unwrap().corrupt_entries, 0);
}

/// A reader racing with overwrites of a large value must see the old or the new value: the
/// old blob file vanishing between the index read and the file read is not damage.
#[test]
fn concurrent_overwrite_of_a_blob_is_never_a_miss_nor_counted_as_corrupt() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let root = tempfile::tempdir().unwrap();
    // Disk-only, so every read goes to the disk tier.
    let cfg = freshcache::Config::from_yaml_str(
        "cache:\n  data_types:\n    news_articles:\n      placement: disk_only\n",
        None,
        Vec::new(),
    )
    .unwrap()
    .with_cache_dir(root.path().join("cache"));
    let cache = freshcache::Cache::builder(cfg)
        .clock(freshcache::ManualClock::new(T0))
        .open()
        .unwrap();
    let k = Key::news("s", "big").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(cache.set(&k, Value::bytes(noise(0, SIZE))))
        .unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let written: Arc<Vec<Vec<u8>>> = Arc::new((0..8).map(|s| noise(s, SIZE)).collect());
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (cache, k, done, written) =
                (cache.clone(), k.clone(), done.clone(), written.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                let (mut reads, mut misses) = (0u64, 0u64);
                while !done.load(Ordering::SeqCst) {
                    reads += 1;
                    match rt.block_on(cache.get(&k)).unwrap() {
                        freshcache::Lookup::Fresh(h) => assert!(
                            written.iter().any(|w| h.value().as_ref() == &w[..]),
                            "read a value nobody wrote"
                        ),
                        _ => misses += 1,
                    }
                }
                (reads, misses)
            })
        })
        .collect();
    for i in 1..=600u64 {
        rt.block_on(cache.set(&k, Value::bytes(written[(i % 8) as usize].clone())))
            .unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let (mut reads, mut misses) = (0, 0);
    for r in readers {
        let (r, m) = r.join().unwrap();
        reads += r;
        misses += m;
    }
    let corrupt = cache.stats().unwrap().corrupt_entries;
    assert_eq!(
        (misses, corrupt),
        (0, 0),
        "{misses} misses and {corrupt} 'corrupt' entries in {reads} reads racing with overwrites"
    );
}
