//! Symbolic links planted in the cache directory are never followed: not to serve an outside
//! file's bytes, not to write a blob outside, and not to let repair walk or delete outside
//! files.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use freshcache::maintenance::CleanupOptions;
use freshcache::maintenance::Mode;
use freshcache::{Cache, Key, Value};

use crate::support::*;

fn article(n: u32) -> Key {
    Key::news("espn", format!("a{n}")).unwrap()
}

/// Large enough for a blob file, not an inline value.
fn big(seed: u64) -> Value {
    Value::bytes(noise(seed, 20_000))
}

/// A directory beside the cache directory with files that must stay as they are: one aged
/// past any orphan grace period, so a repair that walked it would delete it.
fn outside(root: &Path) -> PathBuf {
    let dir = root.join("outside");
    fs::create_dir_all(dir.join("shard")).unwrap();
    fs::write(dir.join("secret"), b"not a cache value").unwrap();
    let old = dir.join("shard").join(format!("ab{}.blob", "0".repeat(30)));
    fs::write(&old, b"old outside file").unwrap();
    let f = fs::File::options().write(true).open(&old).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(3 * 86_400))
        .unwrap();
    dir
}

fn repair_now(cache: &Cache) {
    cache
        .cleanup(CleanupOptions {
            mode: Mode::Apply,
            orphan_grace: Duration::ZERO,
        })
        .unwrap();
    cache.doctor(Mode::Apply, Duration::ZERO).unwrap();
}

#[tokio::test]
async fn a_blob_replaced_by_a_link_to_an_outside_copy_is_a_counted_miss() {
    let t = TestCache::new();
    let out = outside(t.root.path());
    t.cache.set(&article(1), big(1)).await.unwrap();
    let blobs = blob_files(&t.dir());
    assert_eq!(blobs.len(), 1);
    // The outside file is a byte-for-byte copy of the real blob, so only refusing the link
    // (not the checksum) keeps it from being served.
    let copy = out.join("copy.blob");
    fs::copy(&blobs[0], &copy).unwrap();
    fs::remove_file(&blobs[0]).unwrap();
    symlink(&copy, &blobs[0]).unwrap();
    let before = snapshot(&out);

    let other = t.reopen();
    assert_miss(&other.get(&article(1)).await.unwrap());
    assert_eq!(other.stats().unwrap().corrupt_entries, 1);
    // The link is gone, its target is not.
    assert!(fs::symlink_metadata(&blobs[0]).is_err());
    repair_now(&other);
    assert_eq!(snapshot(&out), before);
}

#[tokio::test]
async fn shard_directories_replaced_by_links_are_not_written_through_read_or_walked() {
    let t = TestCache::new();
    let out = outside(t.root.path());
    t.cache.set(&article(1), big(1)).await.unwrap();
    let blob = blob_files(&t.dir()).pop().unwrap();
    let shard = blob.parent().unwrap().to_path_buf();
    // The blob moves outside and every shard name becomes a link to that directory.
    fs::copy(&blob, out.join("shard").join(blob.file_name().unwrap())).unwrap();
    fs::remove_dir_all(&shard).unwrap();
    for n in 0..=255u8 {
        symlink(
            out.join("shard"),
            t.dir().join("blobs").join(format!("{n:02x}")),
        )
        .unwrap();
    }
    let before = snapshot(&out);

    // Read: a counted miss, not the outside copy; nothing outside removed.
    let other = t.reopen();
    assert_miss(&other.get(&article(1)).await.unwrap());
    assert_eq!(other.stats().unwrap().corrupt_entries, 1);
    // Write: refused with an error, nothing created outside, nothing left in tmp/.
    let err = other.set(&article(2), big(2)).await.unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert!(files_under(&t.dir().join("tmp")).is_empty());
    assert_eq!(snapshot(&out), before);

    // Repair removes the links (never what they point to) and the tier works again.
    repair_now(&other);
    assert_eq!(snapshot(&out), before);
    let left: Vec<_> = fs::read_dir(t.dir().join("blobs")).unwrap().collect();
    assert!(left.is_empty(), "links left: {}", left.len());
    other.set(&article(2), big(2)).await.unwrap();
    assert_eq!(
        fresh(t.reopen().get(&article(2)).await.unwrap())
            .value()
            .len(),
        20_000
    );
    assert_eq!(snapshot(&out), before);
}

#[tokio::test]
async fn a_temp_name_planted_as_a_link_is_not_written_through() {
    let t = TestCache::new();
    let out = outside(t.root.path());
    let tmp = t.dir().join("tmp");
    let before = snapshot(&out);
    // The next blob's temp name, predicted from the same seed the write will draw from.
    for (seed, target) in [
        (7, out.join("secret")),
        (8, out.join("created-by-the-cache")),
    ] {
        fastrand::seed(seed);
        let id = format!("{:032x}", fastrand::u128(..));
        fastrand::seed(seed);
        symlink(&target, tmp.join(format!("{id}.tmp"))).unwrap();
        assert!(t.cache.set(&article(1), big(1)).await.is_err());
        assert_eq!(snapshot(&out), before, "written through tmp/{id}.tmp");
        assert!(files_under(&tmp).is_empty(), "the planted link is removed");
    }
    // tmp/ itself replaced by a link to an outside directory: writes are refused...
    fs::remove_dir(&tmp).unwrap();
    symlink(out.join("shard"), &tmp).unwrap();
    assert!(t.cache.set(&article(2), big(2)).await.is_err());
    repair_now(&t.cache);
    assert_eq!(snapshot(&out), before);
    // ...and opening the directory again puts a real one back.
    let other = t.reopen();
    assert!(fs::symlink_metadata(&tmp).unwrap().is_dir());
    other.set(&article(2), big(2)).await.unwrap();
    assert_eq!(
        fresh(other.get(&article(2)).await.unwrap()).value().len(),
        20_000
    );
    assert_eq!(snapshot(&out), before);
}
