//! Cleanup passes, size limits and repair, on real SQLite files with a manual clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use freshcache::maintenance::CleanupOptions;
use freshcache::maintenance::Mode;
use freshcache::{Cache, Config, Key, ManualClock, Value};

use crate::support::{T0, blob_files, disk_entries, files_under, noise, secs};

fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

/// A cache whose disk tier is limited to `limit_bytes`.
fn limited(dir: &std::path::Path, clock: &ManualClock, limit_bytes: u64) -> Cache {
    let gb = limit_bytes as f64 / 1e9;
    let yaml = format!("cache:\n  cleanup:\n    max_size_gb: {gb}\n");
    let config = Config::from_yaml_str(&yaml, None, Vec::new())
        .unwrap()
        .with_cache_dir(dir);
    Cache::builder(config).clock(clock.clone()).open().unwrap()
}

fn now_opts() -> CleanupOptions {
    CleanupOptions {
        mode: Mode::Apply,
        orphan_grace: Duration::ZERO,
    }
}

#[test]
fn one_pass_after_ttls_removes_exactly_the_expired_rows_and_their_blobs() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cache");
    let clock = ManualClock::new(T0);
    let cache = limited(&dir, &clock, 10_000_000_000);
    block(async {
        for i in 0..10 {
            cache
                .set(&Key::odds(format!("g{i}"), 1).unwrap(), "1.9")
                .await
                .unwrap();
            cache
                .set(
                    &Key::news("espn", i).unwrap(),
                    Value::bytes(noise(i, 20_000)),
                )
                .await
                .unwrap();
        }
        for i in 0..5 {
            cache
                .set(
                    &Key::llm_features(format!("c{i}"), "2026-11-24").unwrap(),
                    Value::bytes(noise(100 + i, 20_000)),
                )
                .await
                .unwrap();
        }
    });
    assert_eq!(blob_files(&dir).len(), 15);
    clock.advance(secs(3600));
    let report = cache.cleanup_at(cache.now(), now_opts(), |_| {}).unwrap();
    assert_eq!(report.expired.entries, 20, "{report:?}");
    assert_eq!(report.evicted.entries, 0);
    assert_eq!(disk_entries(&cache, "odds_data"), 0);
    assert_eq!(disk_entries(&cache, "news_articles"), 0);
    assert_eq!(disk_entries(&cache, "llm_features"), 5);
    assert_eq!(
        blob_files(&dir).len(),
        5,
        "blobs of expired rows must go too"
    );
    let again = cache.cleanup_at(cache.now(), now_opts(), |_| {}).unwrap();
    assert_eq!(again.expired.entries, 0);
    assert_eq!(cache.last_cleanup().unwrap(), Some(cache.now()));
}

#[test]
fn dry_run_reports_without_changing_anything() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cache");
    let clock = ManualClock::new(T0);
    let cache = limited(&dir, &clock, 10_000_000_000);
    block(async {
        for i in 0..3 {
            cache
                .set(
                    &Key::odds(format!("g{i}"), 1).unwrap(),
                    Value::bytes(noise(i, 30_000)),
                )
                .await
                .unwrap();
        }
    });
    clock.advance(secs(61));
    let report = cache
        .cleanup_at(
            cache.now(),
            CleanupOptions {
                mode: Mode::DryRun,
                orphan_grace: Duration::ZERO,
            },
            |_| {},
        )
        .unwrap();
    assert!(report.dry_run);
    assert_eq!(report.expired.entries, 3);
    assert_eq!(disk_entries(&cache, "odds_data"), 3);
    assert_eq!(blob_files(&dir).len(), 3);
    assert_eq!(cache.last_cleanup().unwrap(), None);
}

#[test]
fn writing_four_times_the_limit_keeps_disk_usage_within_limit_plus_one_value() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cache");
    let clock = ManualClock::new(T0);
    let limit = 1_000_000u64;
    let value_len = 64 * 1024;
    let cache = limited(&dir, &clock, limit);
    let mut max_seen = 0u64;
    block(async {
        for i in 0..(4 * limit / value_len as u64) {
            clock.advance(Duration::from_millis(10));
            let key = Key::llm_features(format!("c{i}"), "2026-11-24").unwrap();
            cache
                .set(&key, Value::bytes(noise(i, value_len)))
                .await
                .unwrap();
            let on_disk: u64 = blob_files(&dir)
                .iter()
                .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
                .sum();
            max_seen = max_seen.max(on_disk);
            assert!(
                on_disk <= limit + value_len as u64 + 1024,
                "after write {i}: {on_disk} bytes of blobs > limit {limit} + one value"
            );
            // The value just written survives its own eviction pass.
            assert!(cache.get(&key).await.unwrap().is_fresh());
        }
    });
    let stats = cache.stats().unwrap();
    let disk = stats.tiers.iter().find(|t| t.tier == "disk").unwrap();
    assert!(disk.bytes <= limit, "{} > {limit}", disk.bytes);
    assert!(disk.evictions > 0);
    assert!(max_seen > limit / 2, "the test never came near the limit");
}

#[test]
fn eviction_prefers_expired_entries_then_least_recently_used() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cache");
    let clock = ManualClock::new(T0);
    // Room for four 300 kB values (303 kB each in whole blocks) beside what the empty cache
    // takes on disk (the limit bounds the whole footprint: index, WAL, reserve, directories),
    // with 88 kB of slack for the index and WAL growing meanwhile; a fifth value is 215 kB
    // beyond it, more than the WAL's size can swing between the measurement and the writes
    // (with 90 kB values, 60 kB of swing let a fifth fit now and then under load).
    let base = {
        let empty = limited(&dir, &clock, 1_000_000);
        let stats = empty.stats().unwrap();
        let disk = stats.tiers.iter().find(|t| t.tier == "disk").unwrap();
        disk.footprint_bytes.unwrap()
    };
    let limit = base + 1_300_000;
    let cache = limited(&dir, &clock, limit);
    let hot = Key::llm_features("hot", "d").unwrap();
    block(async {
        cache
            .set(&hot, Value::bytes(noise(1, 300_000)))
            .await
            .unwrap();
        for i in 0..3 {
            clock.advance(secs(1));
            cache
                .set(
                    &Key::llm_features(format!("cold{i}"), "d").unwrap(),
                    Value::bytes(noise(10 + i, 300_000)),
                )
                .await
                .unwrap();
            // Reading the hot key through a fresh instance touches it on disk.
            let other = limited(&dir, &clock, limit);
            assert!(other.get(&hot).await.unwrap().is_fresh());
            other.flush().unwrap();
        }
        clock.advance(secs(1));
        cache
            .set(
                &Key::llm_features("new", "d").unwrap(),
                Value::bytes(noise(99, 300_000)),
            )
            .await
            .unwrap();
    });
    let fresh_instance = limited(&dir, &clock, limit);
    block(async {
        assert!(
            fresh_instance.get(&hot).await.unwrap().is_fresh(),
            "recently read entry was evicted"
        );
        let cold0 = Key::llm_features("cold0", "d").unwrap();
        assert!(
            fresh_instance.get(&cold0).await.unwrap().is_miss(),
            "least recently used entry survived"
        );
    });
}

#[test]
fn a_planted_orphan_blob_and_a_row_with_a_deleted_blob_are_repaired() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cache");
    let clock = ManualClock::new(T0);
    let cache = limited(&dir, &clock, 10_000_000_000);
    let a = Key::news("espn", "a").unwrap();
    let b = Key::news("espn", "b").unwrap();
    block(async {
        cache.set(&a, Value::bytes(noise(1, 50_000))).await.unwrap();
        cache.set(&b, Value::bytes(noise(2, 50_000))).await.unwrap();
    });
    let blobs = blob_files(&dir);
    assert_eq!(blobs.len(), 2);
    std::fs::remove_file(&blobs[0]).unwrap();
    let orphan = dir.join("blobs/ee/ee0123456789abcdef0123456789abcd.blob");
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::write(&orphan, b"left behind by a crash").unwrap();
    std::fs::write(dir.join("tmp/deadbeef.tmp"), b"half a write").unwrap();

    let check = cache.doctor(Mode::DryRun, Duration::ZERO).unwrap();
    assert!(!check.is_clean());
    assert_eq!(check.repair.rows_without_blob, 1);
    assert_eq!(check.repair.orphan_blobs, 1);
    assert_eq!(check.repair.temp_files, 1);
    assert_eq!(check.index_integrity, "ok");

    // Files younger than the grace period are left alone: they may be writes in flight. A row
    // whose blob is gone is repaired at once: no write in flight can bring that file back.
    let young = cache
        .cleanup_at(cache.now(), CleanupOptions::default(), |_| {})
        .unwrap();
    assert_eq!(young.repaired.rows_without_blob, 1);
    assert_eq!(young.repaired.orphan_blobs, 0);
    assert_eq!(young.repaired.temp_files, 0);
    assert!(orphan.exists());

    let report = cache.cleanup_at(cache.now(), now_opts(), |_| {}).unwrap();
    assert_eq!(report.repaired.rows_without_blob, 0);
    assert_eq!(report.repaired.orphan_blobs, 1);
    assert_eq!(report.repaired.temp_files, 1);
    assert!(!orphan.exists());
    assert!(
        cache
            .doctor(Mode::DryRun, Duration::ZERO)
            .unwrap()
            .is_clean()
    );
    // A fresh instance (no memory copies) finds exactly the entry whose blob survived.
    let reopened = limited(&dir, &clock, 10_000_000_000);
    let survivors = block(async {
        [
            reopened.get(&a).await.unwrap().is_fresh(),
            reopened.get(&b).await.unwrap().is_fresh(),
        ]
    });
    assert_eq!(survivors.iter().filter(|f| **f).count(), 1);
}

#[test]
fn doctor_finds_a_corrupt_entry_and_repair_removes_it() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cache");
    let clock = ManualClock::new(T0);
    let cache = limited(&dir, &clock, 10_000_000_000);
    let k = Key::news("bbc", "1").unwrap();
    block(async { cache.set(&k, Value::bytes(noise(5, 40_000))).await.unwrap() });
    let blob = blob_files(&dir).pop().unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[20_000] ^= 0x40;
    std::fs::write(&blob, bytes).unwrap();
    let report = cache.doctor(Mode::DryRun, Duration::ZERO).unwrap();
    assert_eq!(report.corrupt_entries, 1);
    assert_eq!(report.corrupt_keys, vec![k.to_string()]);
    cache.doctor(Mode::Apply, Duration::ZERO).unwrap();
    assert!(
        cache
            .doctor(Mode::DryRun, Duration::ZERO)
            .unwrap()
            .is_clean()
    );
    assert!(blob_files(&dir).is_empty());
}

#[test]
fn two_cleaners_and_four_writers_at_once_leave_doctor_clean() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cache");
    let clock = ManualClock::new(T0);
    let limit = 2_000_000u64;
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for w in 0..4u64 {
        let (dir, clock) = (dir.clone(), clock.clone());
        handles.push(std::thread::spawn(move || {
            let cache = limited(&dir, &clock, limit);
            block(async {
                for i in 0..120u64 {
                    let key = Key::news(format!("w{}", i % 7), format!("{w}-{}", i % 23)).unwrap();
                    let len = if i % 3 == 0 {
                        200
                    } else {
                        30_000 + (i as usize % 5) * 7_000
                    };
                    let v = Value::bytes(noise(w * 1000 + i, len)).ttl(secs(1 + i % 40));
                    cache.set(&key, v).await.unwrap();
                    if i % 10 == 0 {
                        clock.advance(secs(3));
                    }
                }
            });
        }));
    }
    for _ in 0..2 {
        let (dir, clock, stop) = (dir.clone(), clock.clone(), stop.clone());
        handles.push(std::thread::spawn(move || {
            let cache = limited(&dir, &clock, limit);
            while !stop.load(Ordering::Relaxed) {
                cache.cleanup(CleanupOptions::default()).unwrap();
            }
        }));
    }
    let cleaners = handles.split_off(4);
    for h in handles {
        h.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for h in cleaners {
        h.join().unwrap();
    }
    let cache = limited(&dir, &clock, limit);
    let report = cache.doctor(Mode::DryRun, Duration::ZERO).unwrap();
    assert!(report.is_clean(), "{report:?}");
    let stored: u64 = cache
        .stats()
        .unwrap()
        .tiers
        .iter()
        .find(|t| t.tier == "disk")
        .unwrap()
        .bytes;
    assert!(stored <= limit + 70_000, "{stored}");
    assert!(files_under(&dir.join("tmp")).is_empty());
}

/// A filesystem of `capacity` bytes holding only the cache directory: free space is what the
/// cache's files leave. (A real full disk cannot be made safely on a shared machine.)
struct TinyDisk {
    dir: std::path::PathBuf,
    capacity: u64,
}

impl freshcache::FreeSpace for TinyDisk {
    fn available(&self, _path: &std::path::Path) -> Option<u64> {
        // The disk tier's fixed reserve (headroom for deletes on a full disk) is left out: the
        // simulated disk is the space entries compete for.
        let used: u64 = files_under(&self.dir)
            .iter()
            .filter(|p| !p.ends_with("reserve"))
            .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
            .sum();
        Some(self.capacity.saturating_sub(used))
    }
}

#[test]
fn writes_evict_to_keep_the_free_space_watermark_even_under_the_size_limit() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cache");
    let clock = ManualClock::new(T0);
    let yaml = "cache:\n  cleanup:\n    max_size_gb: 10\n    min_free_disk: 1000000\n";
    let config = Config::from_yaml_str(yaml, None, Vec::new())
        .unwrap()
        .with_cache_dir(&dir);
    let disk = TinyDisk {
        dir: dir.clone(),
        capacity: 3_000_000,
    };
    let cache = Cache::builder(config)
        .clock(clock.clone())
        .free_space(disk)
        .open()
        .unwrap();
    let probe = TinyDisk {
        dir: dir.clone(),
        capacity: 3_000_000,
    };
    let mut lowest = u64::MAX;
    block(async {
        for i in 0..40u64 {
            clock.advance(Duration::from_millis(10));
            let key = Key::llm_features(format!("c{i}"), "d").unwrap();
            cache
                .set(&key, Value::bytes(noise(i, 100_000)))
                .await
                .unwrap();
            let free = freshcache::FreeSpace::available(&probe, &dir).unwrap();
            lowest = lowest.min(free);
            assert!(
                cache.get(&key).await.unwrap().is_fresh(),
                "the newest value must survive"
            );
        }
    });
    // The watermark is 1 MB; between checks at most an eighth of it plus one value is written.
    assert!(
        lowest + 125_000 + 110_000 >= 1_000_000,
        "free space fell to {lowest}"
    );
    let disk_stats = cache.stats().unwrap();
    let d = disk_stats.tiers.iter().find(|t| t.tier == "disk").unwrap();
    assert!(d.evictions > 0);
    // A cleanup pass also honours the watermark.
    let report = cache.cleanup_at(cache.now(), now_opts(), |_| {}).unwrap();
    let free = freshcache::FreeSpace::available(&probe, &dir).unwrap();
    assert!(
        free >= 1_000_000 - 200_000,
        "{free} free after cleanup: {report:?}"
    );
}
