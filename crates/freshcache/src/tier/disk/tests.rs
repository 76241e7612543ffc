//! Unit tests of the disk tier on real SQLite files.

use super::*;
use crate::entry::{Codec, Meta, checksum};
use bytes::Bytes;

fn entry(value: &[u8], expires_ms: u64) -> Entry {
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
fn counters_accumulate_across_opens() {
    let dir = tempfile::tempdir().unwrap();
    {
        let t = open(dir.path());
        t.add_counters(&[("memory", "odds_data", "hits", 3)])
            .unwrap();
    }
    let t = open(dir.path());
    t.add_counters(&[("memory", "odds_data", "hits", 4)])
        .unwrap();
    let c = t.counters().unwrap();
    assert_eq!(c[&("memory".into(), "odds_data".into(), "hits".into())], 7);
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
    t.put(
        "news:a:2",
        &entry(b"de", 300),
        u64::MAX,
        Timestamp::from_millis(5),
    )
    .unwrap();
    let s = t.stats(Timestamp::from_millis(200)).unwrap();
    let n = &s["news_articles"];
    assert_eq!((n.entries, n.value_bytes, n.expired), (2, 5, 1));
    assert_eq!(n.oldest_stored_at, Some(Timestamp::from_millis(1)));
}
