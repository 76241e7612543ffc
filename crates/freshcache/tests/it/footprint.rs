//! The disk budget bounds the directory's whole footprint (blobs, index, WAL, reserve,
//! directories), measured as `du` does: allocated blocks of every file and directory.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use freshcache::metrics::register;
use freshcache::{Cache, Config, Key, ManualClock, Value};
use prometheus_client::encoding::prometheus_text::encode;
use prometheus_client::registry::Registry;

use crate::support::{T0, ms, noise};

/// Allocated bytes (`st_blocks` × 512) of `dir`, everything under it, and the directories.
pub fn du(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&d) else {
            continue; // removed meanwhile
        };
        total += m.blocks() * 512;
        if !m.is_dir() {
            continue;
        }
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            stack.push(e.path());
        }
    }
    total
}

fn budget_cache(dir: &Path, clock: &ManualClock, gb: &str) -> Cache {
    let yaml = format!("cache:\n  cleanup:\n    max_size_gb: {gb}\n");
    let config = Config::from_yaml_str(&yaml, None, Vec::new())
        .unwrap()
        .with_cache_dir(dir);
    Cache::builder(config).clock(clock.clone()).open().unwrap()
}

#[test]
fn a_fractional_max_size_gb_is_accepted_as_bytes() {
    let yaml = "cache:\n  cleanup:\n    max_size_gb: 0.01\n";
    let config = Config::from_yaml_str(yaml, None, Vec::new()).unwrap();
    assert_eq!(config.cleanup.max_size_bytes, 10_000_000);
}

#[test]
fn a_ten_megabyte_budget_keeps_du_of_the_directory_under_eleven_megabytes_through_a_burst() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cache");
    let clock = ManualClock::new(T0);
    let cache = budget_cache(&dir, &clock, "0.01");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let value_len = 64 * 1024;
    let mut max_du = 0;
    // 40 MB of writes: four times the budget.
    for i in 0..640u64 {
        clock.advance(ms(5));
        let key = Key::llm_features(format!("c{i}"), "2026-12-04").unwrap();
        rt.block_on(cache.set(&key, Value::bytes(noise(i, value_len))))
            .unwrap();
        let used = du(&dir);
        max_du = max_du.max(used);
        assert!(
            used <= 11_000_000,
            "after write {i}: du of the cache directory is {used} bytes"
        );
    }
    assert!(
        max_du > 8_000_000,
        "the burst never came near the budget: {max_du}"
    );
    let stats = cache.stats().unwrap();
    let disk = stats.tiers.iter().find(|t| t.tier == "disk").unwrap();
    assert!(disk.evictions > 0);
    assert_eq!(disk.max_bytes, Some(10_000_000));
    // The reported footprint is what du finds, to within the blocks of a value or two (a
    // metadata measurement, not a walk).
    let reported = disk.footprint_bytes.unwrap();
    let used = du(&dir);
    assert!(
        reported.abs_diff(used) <= 2 * (value_len as u64 + 4096),
        "reported {reported}, du {used}"
    );
    assert!(reported <= 11_000_000, "{reported}");

    let mut registry = Registry::default();
    register(&mut registry, &cache);
    let mut text = String::new();
    encode(&mut text, &registry).unwrap();
    let gauge = text
        .lines()
        .find_map(|l| l.strip_prefix("cache_footprint_bytes{cache_type=\"disk\"} "))
        .unwrap_or_else(|| panic!("no footprint gauge in\n{text}"));
    let gauge: f64 = gauge.parse().unwrap();
    assert!(gauge > 8_000_000.0 && gauge <= 11_000_000.0, "{gauge}");
}

/// `(files, stored bytes, allocated bytes)` of the blob files as kept, and as the rows say.
fn blob_totals(dir: &Path) -> ((i64, i64, i64), (i64, i64, i64)) {
    let c = rusqlite::Connection::open(dir.join("metadata.db")).unwrap();
    let kept = c
        .query_row(
            "SELECT files, bytes, allocated FROM blob_totals WHERE id = 0",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    let actual = c
        .query_row(
            "SELECT COUNT(*), COALESCE(SUM(stored_size), 0),
                    COALESCE(SUM((stored_size + 4095) / 4096 * 4096), 0)
             FROM entries WHERE file IS NOT NULL",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    (kept, actual)
}

#[test]
fn blob_totals_follow_every_write_and_delete_and_repair_rebuilds_them() {
    use freshcache::maintenance::Mode;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cache");
    let clock = ManualClock::new(T0);
    let cache = budget_cache(&dir, &clock, "10");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let news = |i: u64| Key::news("espn", i).unwrap();
    let set = |k: &Key, len: usize, seed: u64| {
        rt.block_on(cache.set(k, Value::bytes(noise(seed, len))))
            .unwrap();
    };
    for i in 0..6 {
        set(&news(i), 20_000 + i as usize, i);
    }
    set(&news(0), 100, 50); // a file row rewritten inline
    set(&news(1), 30_000, 51); // a file rewritten as another file
    set(&Key::news("espn", 100).unwrap(), 100, 52);
    set(&Key::news("espn", 100).unwrap(), 40_000, 53); // inline rewritten as a file
    rt.block_on(cache.delete(&news(2))).unwrap();
    let prefix = freshcache::KeyPrefix::parse("news:espn:5").unwrap();
    rt.block_on(cache.invalidate_prefix(&prefix)).unwrap();
    let (kept, actual) = blob_totals(&dir);
    assert_eq!(kept, actual);
    assert_eq!(kept.0, 4, "{kept:?}");
    // Past the news TTL the sweep takes them all.
    clock.advance(std::time::Duration::from_secs(7200));
    let opts = freshcache::maintenance::CleanupOptions {
        mode: Mode::Apply,
        orphan_grace: std::time::Duration::ZERO,
    };
    cache.cleanup_at(cache.now(), opts, |_| {}).unwrap();
    assert_eq!(blob_totals(&dir), ((0, 0, 0), (0, 0, 0)));

    // Drift (rows deleted by something that does not keep the totals) is found and rebuilt.
    set(&news(7), 20_000, 7);
    rusqlite::Connection::open(dir.join("metadata.db"))
        .unwrap()
        .execute_batch("UPDATE blob_totals SET files = files + 3 WHERE id = 0;")
        .unwrap();
    let found = cache
        .doctor(Mode::DryRun, std::time::Duration::ZERO)
        .unwrap();
    assert!(found.repair.totals_rebuilt, "{found:?}");
    cache
        .doctor(Mode::Apply, std::time::Duration::ZERO)
        .unwrap();
    let (kept, actual) = blob_totals(&dir);
    assert_eq!(kept, actual);
    assert_eq!(kept.0, 1);
}
