//! Unit tests of the disk tier on real SQLite files.

use super::touch::TOUCH_BATCH;
use super::*;
use crate::entry::{Codec, Meta, checksum};
use bytes::Bytes;

pub(super) fn entry(value: &[u8], expires_ms: u64) -> Entry {
    Entry {
        meta: Meta {
            data_type: "news_articles".into(),
            stored_at: Timestamp::from_millis(1),
            expires_at: Timestamp::from_millis(expires_ms),
            as_of: None,
            codec: Codec::Text,
            etag: Some("\"e1\"".into()),
            last_modified: None,
            checksum: checksum(value),
            lineage: None,
            lineage_check: Default::default(),
        },
        value: Bytes::copy_from_slice(value),
    }
}

fn open(dir: &Path) -> DiskTier {
    DiskTier::open(dir, &dir.join("metadata.db"), 1024).unwrap()
}

fn blob_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for shard in fs::read_dir(dir.join("blobs")).unwrap() {
        for f in fs::read_dir(shard.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out
}

#[test]
fn small_values_live_inline_and_large_ones_in_blob_files() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path());
    let now = Timestamp::from_millis(5);
    t.put("news:a:1", &entry(b"small", 100), 1 << 20, now)
        .unwrap();
    assert!(blob_files(dir.path()).is_empty());
    let big = vec![42u8; 64 * 1024];
    t.put("news:a:2", &entry(&big, 100), 1 << 20, now).unwrap();
    let files = blob_files(dir.path());
    assert_eq!(files.len(), 1);
    let name = files[0].file_name().unwrap().to_str().unwrap();
    assert!(!name.contains("news"), "blob named after its key: {name}");
    assert_eq!(
        t.get("news:a:1", now).unwrap().unwrap().value,
        &b"small"[..]
    );
    assert_eq!(t.get("news:a:2", now).unwrap().unwrap().value, big);
    assert_eq!(t.len().unwrap(), 2);
}

#[test]
fn overwrite_replaces_the_blob_and_removes_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path());
    let now = Timestamp::from_millis(5);
    t.put("news:a:1", &entry(&[1u8; 4096], 100), u64::MAX, now)
        .unwrap();
    let first = blob_files(dir.path());
    t.put("news:a:1", &entry(&[2u8; 4096], 100), u64::MAX, now)
        .unwrap();
    let second = blob_files(dir.path());
    assert_eq!(second.len(), 1);
    assert_ne!(first, second);
    assert_eq!(t.get("news:a:1", now).unwrap().unwrap().value[0], 2);
    t.put("news:a:1", &entry(b"tiny", 100), u64::MAX, now)
        .unwrap();
    assert!(blob_files(dir.path()).is_empty());
}

#[test]
fn a_flipped_byte_in_a_blob_is_a_counted_miss_that_removes_the_row() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path());
    let now = Timestamp::from_millis(5);
    t.put("news:a:1", &entry(&[9u8; 8192], 100), u64::MAX, now)
        .unwrap();
    let file = blob_files(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&file).unwrap();
    bytes[4000] ^= 1;
    fs::write(&file, bytes).unwrap();
    assert!(t.get("news:a:1", now).unwrap().is_none());
    assert_eq!(t.corrupt_count(), 1);
    assert_eq!(t.len().unwrap(), 0);
    assert!(!file.exists());
}

#[test]
fn a_missing_blob_or_a_tampered_path_is_a_miss() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path());
    let now = Timestamp::from_millis(5);
    t.put("news:a:1", &entry(&[9u8; 8192], 100), u64::MAX, now)
        .unwrap();
    fs::remove_file(blob_files(dir.path()).pop().unwrap()).unwrap();
    assert!(t.get("news:a:1", now).unwrap().is_none());
    t.put("news:a:2", &entry(&[9u8; 8192], 100), u64::MAX, now)
        .unwrap();
    t.with_writer(|c| c.execute("UPDATE entries SET file = '../../../etc/passwd'", []))
        .unwrap();
    assert!(t.get("news:a:2", now).unwrap().is_none());
    assert_eq!(t.corrupt_count(), 2);
}

#[test]
fn garbage_in_an_inline_row_is_a_miss() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path());
    let now = Timestamp::from_millis(5);
    t.put("news:a:1", &entry(b"v", 100), u64::MAX, now).unwrap();
    t.with_writer(|c| c.execute("UPDATE entries SET inline_value = x'00ff'", []))
        .unwrap();
    assert!(t.get("news:a:1", now).unwrap().is_none());
    assert_eq!(t.len().unwrap(), 0);
}

#[test]
fn remove_expired_spares_a_newer_write() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path());
    t.put(
        "news:a:1",
        &entry(b"new", 500),
        u64::MAX,
        Timestamp::from_millis(5),
    )
    .unwrap();
    // A reader saw an older copy expiring at 100: the newer row must survive.
    assert!(
        !t.remove_expired(
            "news:a:1",
            Timestamp::from_millis(100),
            Timestamp::from_millis(200)
        )
        .unwrap()
    );
    assert!(
        !t.remove_expired(
            "news:a:1",
            Timestamp::from_millis(500),
            Timestamp::from_millis(499)
        )
        .unwrap()
    );
    assert!(
        t.remove_expired(
            "news:a:1",
            Timestamp::from_millis(500),
            Timestamp::from_millis(500)
        )
        .unwrap()
    );
    assert!(t.is_empty().unwrap());
}

#[test]
fn prefix_removal_is_literal_for_sql_wildcards() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path());
    let now = Timestamp::from_millis(5);
    let keys = [
        "news:a%:1",
        "news:ab:1",
        "news:a_:1",
        "news:a_:2",
        "news:a*:1",
        "news:aX:1",
    ];
    for k in keys {
        t.put(k, &entry(&[1u8; 2048], 100), u64::MAX, now).unwrap();
    }
    let mut gone = t.remove_prefix("news:a_:", Some("news:a_;")).unwrap();
    gone.sort();
    assert_eq!(gone, ["news:a_:1", "news:a_:2"]);
    assert_eq!(
        t.remove_prefix("news:a%", Some("news:a&")).unwrap(),
        ["news:a%:1"]
    );
    assert_eq!(
        t.remove_prefix("news:a*", Some("news:a+")).unwrap(),
        ["news:a*:1"]
    );
    assert_eq!(t.len().unwrap(), 2);
    assert_eq!(blob_files(dir.path()).len(), 2);
}

#[test]
fn prefix_removal_copes_with_keys_no_build_writes() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path());
    let now = Timestamp::from_millis(5);
    for k in ["news:a:1", "news:b:1"] {
        t.put(k, &entry(&[1u8; 2048], 100), u64::MAX, now).unwrap();
    }
    // Rows an older build or a hand edit might have left: a key that is not valid UTF-8 text,
    // and one stored as a blob.
    t.with_writer(|c| {
        c.execute_batch(
            "INSERT INTO entries (key, data_type, stored_at, expires_at, access_at, size,
                 stored_size, codec, checksum, inline_value)
             VALUES (CAST(x'6e6577733a61ff' AS TEXT), 'news', 0, 1, 0, 3, 3, 'bytes', 0, x'00'),
                    (x'6e6577733a623a32', 'news', 0, 1, 0, 4, 4, 'bytes', 0, x'00');",
        )
    })
    .unwrap();
    let mut gone = t.remove_prefix("news:a", Some("news:b")).unwrap();
    gone.sort();
    assert_eq!(
        gone,
        ["news:a:1", "news:a\u{fffd}"],
        "invalid text fails nothing"
    );
    // Dropping everything takes the blob-typed key too, and the totals end at zero.
    assert_eq!(t.remove_prefix("", None).unwrap().len(), 2);
    assert_eq!(t.len().unwrap(), 0);
    assert_eq!(t.totals().unwrap(), (0, 0));
    assert!(blob_files(dir.path()).is_empty());
}

#[test]
fn blob_names_are_validated_before_use() {
    assert!(valid_blob_name(&new_blob_name()));
    for bad in [
        "../x.blob",
        "ab/../../etc/passwd",
        "ab/cd.blob",
        "AB/ab00000000000000000000000000000000.blob",
    ] {
        assert!(!valid_blob_name(bad), "{bad}");
    }
}

#[test]
fn stats_group_by_type_and_count_expired_rows() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path());
    t.put(
        "news:a:1",
        &entry(b"abc", 100),
        u64::MAX,
        Timestamp::from_millis(5),
    )
    .unwrap();
    let mut later = entry(b"de", 300);
    later.meta.stored_at = Timestamp::from_millis(7);
    t.put("news:a:2", &later, u64::MAX, Timestamp::from_millis(5))
        .unwrap();
    let s = t.stats(Timestamp::from_millis(200)).unwrap();
    let n = &s["news_articles"];
    assert_eq!((n.entries, n.value_bytes, n.expired), (2, 5, 1));
    assert_eq!(n.oldest_stored_at, Some(Timestamp::from_millis(1)));
    assert_eq!(n.newest_stored_at, Some(Timestamp::from_millis(7)));
}

/// (data type, entries, stored bytes) per type, sorted.
type Totals = Vec<(String, i64, i64)>;

/// `type_totals` against the rows themselves, with empty types left out.
fn totals_and_rows(t: &DiskTier) -> (Totals, Totals) {
    let q = |sql: &str| {
        t.with_reader(|c| {
            c.prepare(sql)?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .unwrap()
    };
    (
        q(
            "SELECT data_type, entries, bytes FROM type_totals WHERE entries <> 0 OR bytes <> 0
           ORDER BY data_type",
        ),
        q(
            "SELECT data_type, COUNT(*), SUM(stored_size) FROM entries GROUP BY data_type
           ORDER BY data_type",
        ),
    )
}

fn typed_entry(data_type: &str, value: &[u8], expires_ms: u64) -> Entry {
    let mut e = entry(value, expires_ms);
    e.meta.data_type = data_type.into();
    e
}

#[test]
fn type_totals_stay_exact_through_every_kind_of_delete() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path());
    let now = Timestamp::from_millis(50);
    let check = |step: &str| {
        let (totals, rows) = totals_and_rows(&t);
        assert_eq!(totals, rows, "after {step}");
    };
    // Two types, inline and blob values, some expired at `now`.
    for i in 0..40u64 {
        let ty = if i % 2 == 0 {
            "news_articles"
        } else {
            "odds_data"
        };
        let value = if i % 5 == 0 {
            vec![1u8; 4096]
        } else {
            vec![2u8; 10 + i as usize]
        };
        let expires = if i % 3 == 0 { 40 } else { 1_000 };
        t.put(
            &format!("k:{i:02}"),
            &typed_entry(ty, &value, expires),
            u64::MAX,
            Timestamp::from_millis(1),
        )
        .unwrap();
    }
    check("inserts");
    // An overwrite that changes the type and the size.
    t.put(
        "k:01",
        &typed_entry("news_articles", &[3u8; 77], 1_000),
        u64::MAX,
        now,
    )
    .unwrap();
    check("a rewrite");
    assert!(t.remove("k:02").unwrap());
    assert!(!t.remove("k:02").unwrap());
    check("remove");
    assert!(
        t.remove_if_older("k:04", Timestamp::from_millis(2))
            .unwrap()
    );
    assert!(
        !t.remove_if_older("k:05", Timestamp::from_millis(1))
            .unwrap()
    );
    check("remove_if_older");
    assert!(
        t.remove_expired("k:03", Timestamp::from_millis(40), now)
            .unwrap()
    );
    check("remove_expired");
    assert_eq!(t.remove_prefix("k:1", Some("k:2")).unwrap().len(), 10);
    check("remove_prefix");
    // A damaged inline row and a row whose blob is gone: removed by a read and by repair.
    t.with_writer(|c| {
        c.execute(
            "UPDATE entries SET inline_value = x'00ff' WHERE key = 'k:21'",
            [],
        )
    })
    .unwrap();
    assert!(t.get("k:21", now).unwrap().is_none());
    check("a damaged row dropped on read");
    let file: String = t
        .with_reader(|c| {
            c.query_row("SELECT file FROM entries WHERE key = 'k:25'", [], |r| {
                r.get(0)
            })
        })
        .unwrap();
    fs::remove_file(t.blob_path(&file)).unwrap();
    assert_eq!(
        t.repair(Duration::ZERO, upkeep::Mode::Apply)
            .unwrap()
            .rows_without_blob,
        1
    );
    check("repair");
    let swept = t.sweep_expired(now, upkeep::Mode::Apply).unwrap();
    assert!(swept.entries > 0);
    check("the expired sweep");
    let before = t.total_bytes().unwrap();
    t.evict(before / 2, now, upkeep::Mode::Apply).unwrap();
    assert!(t.total_bytes().unwrap() <= before / 2);
    check("eviction");
    // Nothing for repair to rebuild: the totals were never off.
    assert!(
        !t.repair(Duration::ZERO, upkeep::Mode::DryRun)
            .unwrap()
            .totals_rebuilt
    );
}

#[test]
fn a_version_1_index_is_migrated_so_deletes_are_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    {
        // Version 1 kept the totals of deletes with a per-row trigger.
        let t = open(dir.path());
        t.put(
            "k:1",
            &entry(b"one", 100),
            u64::MAX,
            Timestamp::from_millis(1),
        )
        .unwrap();
        t.put(
            "k:2",
            &entry(b"two", 100),
            u64::MAX,
            Timestamp::from_millis(1),
        )
        .unwrap();
        t.with_writer(|c| {
            c.execute_batch(
                "DROP TRIGGER entries_totals_delete;
                 CREATE TRIGGER entries_totals_delete AFTER DELETE ON entries BEGIN
                     UPDATE type_totals SET entries = entries - 1, bytes = bytes - OLD.stored_size
                     WHERE data_type = OLD.data_type;
                 END;
                 UPDATE schema_info SET value = '1' WHERE name = 'version';",
            )
        })
        .unwrap();
    }
    let t = open(dir.path());
    let version: String = t
        .with_reader(|c| {
            c.query_row(
                "SELECT value FROM schema_info WHERE name = 'version'",
                [],
                |r| r.get(0),
            )
        })
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    assert!(t.remove("k:1").unwrap());
    let (totals, rows) = totals_and_rows(&t);
    assert_eq!(totals, rows);
    assert_eq!(totals[0].1, 1, "{totals:?}");
    // An older build opening this index runs its schema, `CREATE TRIGGER IF NOT EXISTS`
    // included: the placeholder of that name keeps the counting trigger out.
    let v1_trigger =
        "CREATE TRIGGER IF NOT EXISTS entries_totals_delete AFTER DELETE ON entries BEGIN
         UPDATE type_totals SET entries = entries - 1, bytes = bytes - OLD.stored_size
         WHERE data_type = OLD.data_type;
     END;";
    let counting = |t: &DiskTier| -> i64 {
        t.with_reader(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'entries_totals_delete' AND tbl_name = 'entries'",
                [],
                |r| r.get(0),
            )
        })
        .unwrap()
    };
    t.with_writer(|c| c.execute_batch(v1_trigger)).unwrap();
    assert_eq!(counting(&t), 0);
    // One that got back all the same is replaced at the next open, and the totals rebuilt.
    t.with_writer(|c| {
        c.execute_batch(&format!(
            "DROP TRIGGER entries_totals_delete; {v1_trigger} UPDATE type_totals SET entries = 7;"
        ))
    })
    .unwrap();
    drop(t);
    let t = open(dir.path());
    assert_eq!(counting(&t), 0);
    let (totals, rows) = totals_and_rows(&t);
    assert_eq!(totals, rows);
    // An index from a later build is refused, not rewritten.
    t.with_writer(|c| {
        c.execute(
            "UPDATE schema_info SET value = '99' WHERE name = 'version'",
            [],
        )
    })
    .unwrap();
    drop(t);
    assert!(DiskTier::open(dir.path(), &dir.path().join("metadata.db"), 1024).is_err());
}

#[test]
fn access_times_are_written_off_the_read_path_and_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let written_at = Timestamp::from_millis(1_000);
    let read_at = Timestamp::from_millis(60_000);
    let n = TOUCH_BATCH as u64 + 44;
    let touched = |t: &DiskTier| -> i64 {
        t.with_reader(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM entries WHERE access_at = ?1",
                [i64_of(read_at.as_millis())],
                |r| r.get(0),
            )
        })
        .unwrap()
    };
    {
        let t = open(dir.path());
        for i in 0..n {
            t.put(
                &format!("k:{i:03}"),
                &entry(b"v", 1 << 40),
                u64::MAX,
                written_at,
            )
            .unwrap();
        }
        for i in 0..n {
            assert!(t.get(&format!("k:{i:03}"), read_at).unwrap().is_some());
        }
        // The full batch is written by the flusher thread, without anyone asking.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while touched(&t) < TOUCH_BATCH as i64 {
            assert!(std::time::Instant::now() < deadline, "batch never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        // The rest (how many depends on when the flusher woke) waits for the next batch.
        let waiting = t.touches.lock().len();
        assert!(waiting < TOUCH_BATCH, "{waiting}");
        assert_eq!(touched(&t) + waiting as i64, n as i64);
    }
    // Closing wrote the rest.
    let t = open(dir.path());
    assert_eq!(touched(&t), n as i64);
}

/// Version 2's triggers on `entries`, which kept the totals of inserts and rewrites.
const V2_TRIGGERS: &str = "
CREATE TRIGGER IF NOT EXISTS entries_totals_insert AFTER INSERT ON entries BEGIN
    INSERT INTO type_totals (data_type, entries, bytes) VALUES (NEW.data_type, 1, NEW.stored_size)
    ON CONFLICT (data_type) DO UPDATE SET entries = entries + 1, bytes = bytes + excluded.bytes;
END;
CREATE TRIGGER IF NOT EXISTS entries_totals_update AFTER UPDATE OF stored_size, data_type ON entries BEGIN
    UPDATE type_totals SET entries = entries - 1, bytes = bytes - OLD.stored_size
    WHERE data_type = OLD.data_type;
    INSERT INTO type_totals (data_type, entries, bytes) VALUES (NEW.data_type, 1, NEW.stored_size)
    ON CONFLICT (data_type) DO UPDATE SET entries = entries + 1, bytes = bytes + excluded.bytes;
END;";

#[test]
fn a_version_2_index_is_migrated_so_writes_are_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let at = Timestamp::from_millis(1);
    let triggers_on_entries = |t: &DiskTier| -> i64 {
        t.with_reader(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'entries'",
                [],
                |r| r.get(0),
            )
        })
        .unwrap()
    };
    {
        // Made as version 2 made it: counting triggers on `entries` for inserts and rewrites.
        let t = open(dir.path());
        t.with_writer(|c| {
            c.execute_batch(&format!(
                "DROP TRIGGER entries_totals_insert; DROP TRIGGER entries_totals_update;
                 {V2_TRIGGERS}
                 UPDATE schema_info SET value = '2' WHERE name = 'version';"
            ))
        })
        .unwrap();
        assert_eq!(triggers_on_entries(&t), 2);
        // Rows as a version-2 build wrote them: the triggers count them.
        t.with_writer(|c| {
            c.execute_batch(
                "INSERT INTO entries (key, data_type, stored_at, expires_at, access_at, size,
                     stored_size, codec, checksum, inline_value)
                 VALUES ('k:1', 'news_articles', 1, 9999999, 1, 3, 90, 'raw', 0, x'00'),
                        ('k:2', 'news_articles', 1, 9999999, 1, 3, 94, 'raw', 0, x'00');",
            )
        })
        .unwrap();
    }
    let t = open(dir.path());
    assert_eq!(triggers_on_entries(&t), 0);
    let (totals, rows) = totals_and_rows(&t);
    assert_eq!(totals, rows, "version 2's totals carried over");
    // Writes, rewrites (of another size) and batches are counted once.
    t.put("k:3", &entry(b"three", 100), u64::MAX, at).unwrap();
    t.put("k:1", &entry(b"one, longer now", 100), u64::MAX, at)
        .unwrap();
    let (e4, e2) = (entry(b"four", 100), entry(b"two again", 100));
    t.put_many(&[("k:4", &e4, u64::MAX), ("k:2", &e2, u64::MAX)], at)
        .unwrap();
    let (totals, rows) = totals_and_rows(&t);
    assert_eq!(totals, rows);
    assert_eq!(totals[0].1, 4, "{totals:?}");
    // An older build opening the index cannot put a counting trigger back.
    t.with_writer(|c| c.execute_batch(V2_TRIGGERS)).unwrap();
    assert_eq!(triggers_on_entries(&t), 0);
    t.put("k:5", &entry(b"five", 100), u64::MAX, at).unwrap();
    let (totals, rows) = totals_and_rows(&t);
    assert_eq!(totals, rows);
}

#[test]
fn a_rewrite_records_its_time_as_a_read_does_once_per_touch_granularity() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path());
    let at = |ms: u64| Timestamp::from_millis(ms);
    let access = |t: &DiskTier| t.row_info("news:a:1").unwrap().unwrap().access_at;
    t.put("news:a:1", &entry(b"v1", 100_000), 1 << 20, at(10_000))
        .unwrap();
    assert_eq!(access(&t), at(10_000));
    // Within the granularity the access time stays (the access-time index is not rewritten);
    // the value is the new one all the same.
    t.put("news:a:1", &entry(b"v2", 100_000), 1 << 20, at(10_900))
        .unwrap();
    assert_eq!(access(&t), at(10_000));
    assert_eq!(
        t.get("news:a:1", at(10_900)).unwrap().unwrap().value,
        &b"v2"[..]
    );
    // A rewrite a granularity or more later records its time: eviction sees it as recent.
    t.put("news:a:1", &entry(b"v3", 100_000), 1 << 20, at(11_000))
        .unwrap();
    assert_eq!(access(&t), at(11_000));
    t.put("news:b:1", &entry(b"other", 100_000), 1 << 20, at(11_500))
        .unwrap();
    let oldest: String = t
        .with_reader(|c| {
            c.query_row(
                "SELECT key FROM entries ORDER BY access_at LIMIT 1",
                [],
                |r| r.get(0),
            )
        })
        .unwrap();
    assert_eq!(oldest, "news:a:1");
}

/// Writes `value` under `key` at `now_ms`, expiring at `expires_ms`.
fn put_at(t: &DiskTier, key: &str, value: &[u8], expires_ms: u64, now_ms: u64) {
    t.put(
        key,
        &entry(value, expires_ms),
        1 << 20,
        Timestamp::from_millis(now_ms),
    )
    .unwrap();
}

/// WAL frames in the index's WAL file (each a 24-byte header and a page).
fn wal_frames(dir: &Path) -> u64 {
    let len = fs::metadata(dir.join("metadata.db-wal")).map_or(0, |m| m.len());
    len.saturating_sub(32) / (24 + 4096)
}

fn bucket_of(t: &DiskTier, key: &str) -> i64 {
    t.with_reader(|c| {
        c.query_row(
            "SELECT expiry_bucket FROM entries WHERE key = ?1",
            [key],
            |r| r.get(0),
        )
    })
    .unwrap()
}

#[test]
fn a_rewrite_whose_expiry_stays_in_its_minute_leaves_the_expiry_index_alone() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path());
    let at = |ms: u64| Timestamp::from_millis(ms);
    // Expiries 10 min 0.1 s and 10 min 0.5 s: the same minute.
    put_at(&t, "news:a:1", b"v1", 600_100, 100);
    assert_eq!(bucket_of(&t, "news:a:1"), 10);
    let before = wal_frames(dir.path());
    put_at(&t, "news:a:1", b"v2", 600_500, 500);
    assert_eq!(
        wal_frames(dir.path()) - before,
        1,
        "only the row's page is written"
    );
    assert_eq!(bucket_of(&t, "news:a:1"), 10);
    // Into the next minute: the bucket follows (its index page is written too).
    let before = wal_frames(dir.path());
    put_at(&t, "news:a:1", b"v3", 660_000, 900);
    assert_eq!(wal_frames(dir.path()) - before, 2);
    assert_eq!(bucket_of(&t, "news:a:1"), 11);
    // And back to an earlier one (a shorter TTL).
    put_at(&t, "news:a:1", b"v4", 590_000, 950);
    assert_eq!(bucket_of(&t, "news:a:1"), 9);
    assert_eq!(
        t.get("news:a:1", at(950)).unwrap().unwrap().value,
        &b"v4"[..]
    );
}

#[test]
fn the_sweep_takes_the_expired_rows_of_the_current_minute_and_leaves_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path());
    let at = |ms: u64| Timestamp::from_millis(ms);
    // All three in the minute [60 s, 120 s), and one in an earlier minute.
    put_at(&t, "news:a:early", b"e", 30_000, 1);
    put_at(&t, "news:a:1", b"x", 61_000, 1);
    put_at(&t, "news:a:2", b"y", 90_000, 1);
    put_at(&t, "news:a:3", b"z", 90_001, 1);
    let dry = t.sweep_expired(at(90_000), upkeep::Mode::DryRun).unwrap();
    assert_eq!(dry.entries, 3);
    let swept = t.sweep_expired(at(90_000), upkeep::Mode::Apply).unwrap();
    assert_eq!(swept.entries, 3);
    assert!(t.get("news:a:3", at(90_000)).unwrap().is_some());
    for k in ["news:a:early", "news:a:1", "news:a:2"] {
        assert!(t.get(k, at(90_000)).unwrap().is_none(), "{k} left");
    }
}

#[test]
fn an_index_of_version_3_gets_expiry_buckets_and_loses_the_index_of_expiry_times() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("metadata.db");
    {
        let t = open(dir.path());
        t.put(
            "news:a:1",
            &entry(b"x", 125_000),
            1 << 20,
            Timestamp::from_millis(1),
        )
        .unwrap();
        t.put(
            "news:a:2",
            &entry(b"y", 600_000),
            1 << 20,
            Timestamp::from_millis(1),
        )
        .unwrap();
    }
    {
        // What version 3 looked like.
        let c = Connection::open(&db).unwrap();
        c.execute_batch(
            "DROP INDEX entries_expiry_bucket;
             ALTER TABLE entries DROP COLUMN expiry_bucket;
             CREATE INDEX entries_expires_at ON entries(expires_at);
             UPDATE schema_info SET value = '3' WHERE name = 'version';",
        )
        .unwrap();
    }
    let t = open(dir.path());
    let (version, old_index): (String, i64) = t
        .with_reader(|c| {
            c.query_row(
                "SELECT (SELECT value FROM schema_info WHERE name = 'version'),
                        (SELECT COUNT(*) FROM sqlite_master WHERE name = 'entries_expires_at')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
        .unwrap();
    assert_eq!((version.as_str(), old_index), ("4", 0));
    assert_eq!(bucket_of(&t, "news:a:1"), 2);
    assert_eq!(bucket_of(&t, "news:a:2"), 10);
    let swept = t
        .sweep_expired(Timestamp::from_millis(125_000), upkeep::Mode::Apply)
        .unwrap();
    assert_eq!(swept.entries, 1);
    assert!(
        t.get("news:a:2", Timestamp::from_millis(125_000))
            .unwrap()
            .is_some()
    );
}
