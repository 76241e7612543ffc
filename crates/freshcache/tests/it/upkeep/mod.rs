//! Upkeep of the disk tier on its own: expired sweeps, size eviction, repair and verification,
//! counted exactly, on a real SQLite index in a temp dir, with time from a `ManualClock`.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use freshcache::internals::DiskTier;
use freshcache::maintenance::{Mode, Removed};
use freshcache::{Clock, Codec, Entry, Error, ManualClock, Meta, Timestamp};
use tempfile::TempDir;

use crate::support::{T0, blob_files, files_under, noise, secs, snapshot};

/// Envelopes up to this size are stored inline in the index, larger ones as blob files.
const INLINE_MAX: u64 = 1024;
/// A value length that always lands in a blob file.
const BLOB: usize = 4_000;
/// A value length that always stays inline.
const INLINE: usize = 100;

/// `(data type, entries, stored bytes)` per type, sorted by type.
type Totals = Vec<(String, i64, i64)>;

/// A disk tier alone in a temp dir, with a manual clock standing at [`T0`].
struct Disk {
    root: TempDir,
    clock: ManualClock,
    disk: DiskTier,
}

impl Disk {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let disk = open(&root.path().join("cache"));
        Self {
            root,
            clock: ManualClock::new(T0),
            disk,
        }
    }

    fn dir(&self) -> PathBuf {
        self.root.path().join("cache")
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Stores `len` bytes of noise under `key`, of type `news_articles`, living for `ttl`
    /// from now, and returns its stored size.
    fn put(&self, key: &str, len: usize, ttl: Duration) -> u64 {
        self.put_typed("news_articles", key, len, ttl)
    }

    fn put_typed(&self, data_type: &str, key: &str, len: usize, ttl: Duration) -> u64 {
        let value = noise(freshcache::entry::checksum(key.as_bytes()), len);
        let now = self.now();
        self.disk
            .put(key, &entry(data_type, value, now, ttl), u64::MAX, now)
            .unwrap();
        self.disk.row_info(key).unwrap().unwrap().stored_size
    }

    /// The blob file of `key`.
    fn blob(&self, key: &str) -> PathBuf {
        let info = self.disk.row_info(key).unwrap().unwrap();
        self.disk
            .blob_dir()
            .join(info.file.expect("a blob, not inline"))
    }

    fn has(&self, key: &str) -> bool {
        self.disk.get(key, self.now()).unwrap().is_some()
    }

    /// Keys in the index, sorted.
    fn keys(&self) -> Vec<String> {
        self.sql()
            .prepare("SELECT key FROM entries ORDER BY key")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// A connection of its own to the index, as another process (or someone tampering) has.
    fn sql(&self) -> rusqlite::Connection {
        let c = rusqlite::Connection::open(self.dir().join("metadata.db")).unwrap();
        c.busy_timeout(secs(10)).unwrap();
        c
    }

    /// `(data type, entries, bytes)` per type from `type_totals` (empty types left out) and
    /// from the rows themselves.
    fn totals_and_rows(&self) -> (Totals, Totals) {
        let c = self.sql();
        let q = |sql: &str| -> Totals {
            c.prepare(sql)
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        (
            q("SELECT data_type, entries, bytes FROM type_totals
               WHERE entries <> 0 OR bytes <> 0 ORDER BY data_type"),
            q("SELECT data_type, COUNT(*), SUM(stored_size) FROM entries
               GROUP BY data_type ORDER BY data_type"),
        )
    }

    #[track_caller]
    fn assert_totals_exact(&self) {
        let (totals, rows) = self.totals_and_rows();
        assert_eq!(totals, rows, "type_totals disagree with the rows");
        let bytes: i64 = rows.iter().map(|r| r.2).sum();
        assert_eq!(self.disk.total_bytes().unwrap(), bytes as u64);
    }
}

/// An entry of `data_type` stored at `now`, living for `ttl`.
fn entry(data_type: &str, value: Vec<u8>, now: Timestamp, ttl: Duration) -> Entry {
    Entry {
        meta: Meta {
            data_type: data_type.into(),
            stored_at: now,
            expires_at: now.saturating_add(ttl),
            as_of: None,
            codec: Codec::Bytes,
            etag: None,
            last_modified: None,
            checksum: freshcache::entry::checksum(&value),
            lineage: None,
            lineage_check: Default::default(),
        },
        value: Bytes::from(value),
    }
}

fn open(dir: &Path) -> DiskTier {
    DiskTier::open(dir, &dir.join("metadata.db"), INLINE_MAX).unwrap()
}

/// Sets `path`'s modification time `age` into the past (the orphan grace is judged on it).
fn age(path: &Path, age: Duration) {
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() - age)
        .unwrap();
}

#[test]
fn sweep_takes_exactly_the_rows_expired_at_now_and_a_dry_run_counts_the_same() {
    let t = Disk::new();
    let mut expired = Removed::default();
    for (key, len) in [("gone:blob", BLOB), ("gone:inline", INLINE)] {
        expired.entries += 1;
        expired.bytes += t.put(key, len, secs(60));
    }
    // Expires a millisecond after the sweep's `now`: still fresh, kept.
    t.put("kept:blob", BLOB, secs(60) + Duration::from_millis(1));
    t.put("kept:inline", INLINE, secs(3600));
    let gone_blob = t.blob("gone:blob");
    let kept_blob = t.blob("kept:blob");
    let before_bytes = t.disk.total_bytes().unwrap();
    // At exactly the expiry instant an entry is expired.
    t.clock.advance(secs(60));

    let dry = t.disk.sweep_expired(t.now(), Mode::DryRun).unwrap();
    assert_eq!(dry, expired);
    assert_eq!(t.disk.len().unwrap(), 4, "a dry run removed rows");
    assert!(gone_blob.exists(), "a dry run removed a blob");
    assert_eq!(t.disk.total_bytes().unwrap(), before_bytes);

    let applied = t.disk.sweep_expired(t.now(), Mode::Apply).unwrap();
    assert_eq!(applied, dry, "apply removed other than the dry run counted");
    assert_eq!(t.keys(), ["kept:blob", "kept:inline"]);
    assert!(!gone_blob.exists(), "the blob of a swept row was left");
    assert!(kept_blob.exists());
    assert!(t.has("kept:blob") && t.has("kept:inline"));
    assert_eq!(t.disk.total_bytes().unwrap(), before_bytes - expired.bytes);
    t.assert_totals_exact();
    assert_eq!(
        t.disk.sweep_expired(t.now(), Mode::Apply).unwrap(),
        Removed::default()
    );
}

#[test]
fn one_sweep_takes_more_expired_rows_than_fit_in_a_batch() {
    let t = Disk::new();
    // More than one batch of 2 000 rows.
    let n = 2_345;
    for i in 0..n {
        t.put(&format!("old:{i:05}"), 10, secs(1 + i % 50));
    }
    t.put("live", 10, secs(3600));
    t.clock.advance(secs(60));
    let swept = t.disk.sweep_expired(t.now(), Mode::Apply).unwrap();
    assert_eq!(swept.entries, n);
    assert_eq!(t.keys(), ["live"]);
    t.assert_totals_exact();
}

#[test]
fn eviction_takes_expired_rows_first_then_the_least_recently_read_down_to_the_target() {
    let t = Disk::new();
    // Written a second apart: a, b, c, d, then x, which expires at once.
    let mut size = std::collections::HashMap::new();
    for key in ["a", "b", "c", "d"] {
        size.insert(key, t.put(key, BLOB, secs(3600)));
        t.clock.advance(secs(1));
    }
    size.insert("x", t.put("x", BLOB, secs(1)));
    // Reading `a` makes it the most recently used; `x` is expired, though used after b, c, d.
    t.clock.advance(secs(10));
    assert!(t.has("a"));
    let total = t.disk.total_bytes().unwrap();
    assert_eq!(total, size.values().sum::<u64>());

    // Already within the target: nothing is removed, not even the expired row.
    let none = t.disk.evict(total, t.now(), Mode::Apply).unwrap();
    assert_eq!(none, Removed::default());
    assert_eq!(t.disk.len().unwrap(), 5);

    // Removing x and b is not enough; removing c as well is.
    let target = size["a"] + size["d"] + size["c"] / 2;
    let dry = t.disk.evict(target, t.now(), Mode::DryRun).unwrap();
    let want = Removed {
        entries: 3,
        bytes: size["x"] + size["b"] + size["c"],
    };
    assert_eq!(dry, want);
    assert_eq!(t.disk.len().unwrap(), 5, "a dry run removed rows");
    assert_eq!(t.disk.total_bytes().unwrap(), total);
    assert_eq!(t.disk.eviction_count(), 0);

    let applied = t.disk.evict(target, t.now(), Mode::Apply).unwrap();
    assert_eq!(
        applied, want,
        "apply removed other than the dry run counted"
    );
    assert_eq!(t.keys(), ["a", "d"]);
    let left = t.disk.total_bytes().unwrap();
    assert!(left <= target, "{left} > {target}");
    assert_eq!(left, total - want.bytes);
    // Only the two live entries count as evictions; the expired one was swept.
    assert_eq!(t.disk.eviction_count(), 2);
    assert_eq!(blob_files(&t.dir()).len(), 2);
    t.assert_totals_exact();
}

#[test]
fn eviction_ends_when_drifted_totals_promise_more_bytes_than_the_rows_hold() {
    let t = Disk::new();
    let mut real = 0;
    for key in ["a", "b", "c"] {
        real += t.put(key, BLOB, secs(3600));
    }
    // The totals still count five rows, a megabyte in all, that were deleted without them.
    t.sql()
        .execute(
            "UPDATE type_totals SET entries = entries + 5, bytes = bytes + 1000000",
            [],
        )
        .unwrap();
    let target = 500_000;
    assert!(t.disk.total_bytes().unwrap() > target && real < target);

    let want = Removed {
        entries: 3,
        bytes: real,
    };
    // Both modes run out of rows and stop rather than spin.
    assert_eq!(t.disk.evict(target, t.now(), Mode::DryRun).unwrap(), want);
    assert_eq!(t.disk.evict(target, t.now(), Mode::Apply).unwrap(), want);
    assert!(t.disk.is_empty().unwrap());
    assert_eq!(t.disk.totals().unwrap(), (5, 1_000_000));

    // Repair puts the totals right, and eviction then leaves new entries alone.
    assert!(
        t.disk
            .repair(Duration::ZERO, Mode::Apply)
            .unwrap()
            .totals_rebuilt
    );
    assert_eq!(t.disk.total_bytes().unwrap(), 0);
    t.put("d", BLOB, secs(3600));
    assert_eq!(
        t.disk.evict(target, t.now(), Mode::Apply).unwrap(),
        Removed::default()
    );
    assert_eq!(t.keys(), ["d"]);
    t.assert_totals_exact();
}

/// A directory beside the cache directory holding a blob-shaped file aged past any grace.
fn outside(t: &Disk) -> PathBuf {
    let out = t.root.path().join("outside");
    let old = out.join(format!("ee/ee{}.blob", "3".repeat(30)));
    fs::create_dir_all(old.parent().unwrap()).unwrap();
    fs::write(&old, b"not a cache file").unwrap();
    age(&old, secs(3 * 86_400));
    out
}

#[test]
fn sweep_and_eviction_never_delete_through_a_blob_directory_replaced_by_a_link() {
    let t = Disk::new();
    let out = outside(&t);
    t.put("gone", BLOB, secs(60));
    t.put("old", BLOB, secs(3600));
    // The blob directory moves outside and a link to it takes its place.
    let blobs = t.disk.blob_dir().to_path_buf();
    let moved = out.join("moved-blobs");
    fs::rename(&blobs, &moved).unwrap();
    symlink(&moved, &blobs).unwrap();
    let before = snapshot(&out);
    t.clock.advance(secs(60));

    let swept = t.disk.sweep_expired(t.now(), Mode::Apply).unwrap();
    assert_eq!(swept.entries, 1, "the expired row still goes");
    let evicted = t.disk.evict(0, t.now(), Mode::Apply).unwrap();
    assert_eq!(evicted.entries, 1);
    assert_eq!(snapshot(&out), before, "a file behind the link was deleted");
    assert!(t.keys().is_empty());
    t.assert_totals_exact();
    // Nor is a new blob written through it.
    let refused = t.disk.put(
        "new",
        &entry("odds_data", noise(9, BLOB), t.now(), secs(60)),
        u64::MAX,
        t.now(),
    );
    assert!(refused.is_err(), "a blob was written through the link");
    assert_eq!(snapshot(&out), before, "a file appeared behind the link");
    assert!(t.keys().is_empty());
}

#[test]
fn a_refused_delete_fails_the_pass_but_keeps_earlier_batches_and_exact_totals() {
    let t = Disk::new();
    // More than a batch of expired rows, then one that expires later (so it is in the second
    // batch), and a live one whose blob is lost.
    for i in 0..2_010 {
        t.put(&format!("old:{i:05}"), 10, secs(10));
    }
    t.put("poison", 10, secs(20));
    t.put("lost", BLOB, secs(3600));
    fs::remove_file(t.blob("lost")).unwrap();
    t.clock.advance(secs(30));
    // Stands in for a batch that cannot commit (a full disk, a lock held too long).
    let refuse = |name: &str, key: &str| {
        t.sql()
            .execute_batch(&format!(
                "CREATE TRIGGER {name} BEFORE DELETE ON entries WHEN OLD.key = '{key}'
                 BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;"
            ))
            .unwrap();
    };
    let allow = |name: &str| {
        t.sql()
            .execute_batch(&format!("DROP TRIGGER {name};"))
            .unwrap();
    };

    refuse("refuse_poison", "poison");
    let err = t.disk.sweep_expired(t.now(), Mode::Apply).unwrap_err();
    assert!(matches!(err, Error::Index { .. }), "{err}");
    // The earlier batches stay done; the refused one left every row it held (batches are
    // sized by time, so how many that is varies).
    let left = t.disk.len().unwrap();
    assert!((3..2_012).contains(&left), "{left} rows left");
    assert!(t.disk.row_info("poison").unwrap().is_some());
    t.assert_totals_exact();
    allow("refuse_poison");
    assert_eq!(
        t.disk.sweep_expired(t.now(), Mode::Apply).unwrap().entries,
        left - 1
    );

    refuse("refuse_lost", "lost");
    let err = t.disk.evict(0, t.now(), Mode::Apply).unwrap_err();
    assert!(matches!(err, Error::Index { .. }), "{err}");
    assert_eq!(t.disk.eviction_count(), 0);
    let err = t.disk.repair(Duration::ZERO, Mode::Apply).unwrap_err();
    assert!(matches!(err, Error::Index { .. }), "{err}");
    assert_eq!(t.keys(), ["lost"]);
    t.assert_totals_exact();
    allow("refuse_lost");
    let repaired = t.disk.repair(Duration::ZERO, Mode::Apply).unwrap();
    assert_eq!(repaired.rows_without_blob, 1);
    assert!(t.disk.is_empty().unwrap());
    t.assert_totals_exact();
}

#[test]
fn after_a_failed_sweep_the_index_log_is_still_checkpointed_by_later_writes() {
    let root = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let dir = root.path().join("cache");
    // Large values inline, so every byte written goes through the index and its log.
    let disk = DiskTier::open(&dir, &dir.join("metadata.db"), 1 << 20).unwrap();
    // A 64 MiB budget bounds the log at 4 MiB (a sixteenth); the 16 MB written stay within it.
    disk.set_size_limit(64 << 20);
    let value = |seed| noise(seed, 64 * 1024);
    disk.put(
        "poison",
        &entry("news_articles", value(0), clock.now(), secs(1)),
        u64::MAX,
        clock.now(),
    )
    .unwrap();
    clock.advance(secs(2));
    let c = rusqlite::Connection::open(dir.join("metadata.db")).unwrap();
    c.execute_batch(
        "CREATE TRIGGER refuse BEFORE DELETE ON entries
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
    )
    .unwrap();
    drop(c);
    // A failed sweep must leave checkpoints running.
    assert!(disk.sweep_expired(clock.now(), Mode::Apply).is_err());

    let put = |i: u64| {
        disk.put(
            &format!("k:{i:03}"),
            &entry("news_articles", value(i), clock.now(), secs(3600)),
            u64::MAX,
            clock.now(),
        )
        .unwrap();
    };
    // 16 MB through the log: with checkpoints it is reused from the start every ~4 MB.
    (1..=256u64).for_each(put);
    // The checkpoint thread may lag the writes on a loaded machine: a few more writes, until
    // one starts the log over after a checkpoint (a log never checkpointed only grows).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for i in 257u64.. {
        let wal = fs::metadata(dir.join("metadata.db-wal")).unwrap().len();
        if wal < 8 << 20 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the log grew to {wal} bytes: never checkpointed"
        );
        std::thread::sleep(Duration::from_millis(5));
        put(i);
    }
}

mod repair;
