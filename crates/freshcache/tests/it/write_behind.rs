//! Write-behind (`cache.disk.write_behind`) on a real index: the writing instance reads its
//! queued writes; other instances see them once committed (by the committer, `flush`, any
//! other use of the index, or the cache's drop) and never before; deletes and invalidations
//! are not undone by an earlier queued write; a failed background commit reaches the next
//! write as a typed error and loses nothing.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use freshcache::internals::{BlobStep, FsFaults};
use freshcache::metrics::register;
use freshcache::{Cache, Config, Key, KeyPrefix, Lookup, ManualClock, Value};
use prometheus_client::registry::Registry;

use crate::metrics::scrape;
use crate::support::*;

/// A cache on `dir` whose writes are committed `delay` after the first queued one. The memory
/// tier is too small for the 100 KiB values used here, so reads go to the disk tier.
fn open_behind(dir: &Path, clock: &ManualClock, delay: &str) -> Cache {
    let yaml = format!("cache: {{disk: {{write_behind: {delay}}}, memory: {{max_bytes: 64KiB}}}}");
    let config = Config::from_yaml_str(&yaml, None, Vec::<(String, String)>::new())
        .unwrap()
        .with_cache_dir(dir);
    Cache::builder(config).clock(clock.clone()).open().unwrap()
}

/// A temp dir and manual clock, and on them a write-behind cache (`a`, delay `delay`) and a
/// plain one (`b()`, opened on demand) sharing the directory.
struct Pair {
    root: tempfile::TempDir,
    clock: ManualClock,
    a: Cache,
}

impl Pair {
    fn new(delay: &str) -> Self {
        let root = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let a = open_behind(&root.path().join("cache"), &clock, delay);
        Self { root, clock, a }
    }

    fn b(&self) -> Cache {
        open(&self.root.path().join("cache"), &self.clock)
    }
}

fn news(n: u32) -> Key {
    Key::news("espn", format!("a{n}")).unwrap()
}

/// 100 KiB that do not compress (so they are stored in a blob file, not inline).
fn big(tag: u8) -> Vec<u8> {
    noise(u64::from(tag), 100 * 1024)
}

fn value_of(l: Lookup) -> Option<Vec<u8>> {
    match l {
        Lookup::Fresh(h) => Some(h.value().to_vec()),
        _ => None,
    }
}

#[tokio::test]
async fn the_writer_reads_its_queued_writes_others_see_them_once_committed() {
    let p = Pair::new("1s");
    let (a, b) = (&p.a, p.b());
    let set_at = Instant::now();
    a.set(&news(1), Value::bytes(big(1))).await.unwrap();
    a.set(&news(1), Value::bytes(big(2))).await.unwrap();
    // The writer reads its newest queued value (from the queue: memory cannot hold it).
    assert_eq!(value_of(a.get(&news(1)).await.unwrap()), Some(big(2)));
    // Another instance sees nothing before the commit, which waits the full second.
    let seen = value_of(b.get(&news(1)).await.unwrap());
    assert!(
        seen.is_none() || set_at.elapsed() >= Duration::from_secs(1),
        "seen before the commit was due"
    );
    a.flush().unwrap();
    assert_eq!(value_of(b.get(&news(1)).await.unwrap()), Some(big(2)));
}

#[tokio::test]
async fn the_committer_commits_without_being_asked() {
    let p = Pair::new("2ms");
    let (a, b) = (&p.a, p.b());
    a.set(&news(1), Value::bytes(big(1))).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while value_of(b.get(&news(1)).await.unwrap()).is_none() {
        assert!(Instant::now() < deadline, "never committed");
        std::thread::sleep(ms(1));
    }
}

#[tokio::test]
async fn deletes_and_invalidations_are_not_undone_by_a_queued_write() {
    let Pair { root, clock, a } = Pair::new("1s");
    let dir = root.path().join("cache");
    a.set(&news(1), Value::bytes(big(1))).await.unwrap();
    assert!(a.delete(&news(1)).await.unwrap());
    a.set(&news(2), Value::bytes(big(2))).await.unwrap();
    a.set(&news(3), Value::bytes(big(3))).await.unwrap();
    let prefix = KeyPrefix::parse("news:espn:a3").unwrap();
    assert_eq!(a.invalidate_prefix(&prefix).await.unwrap(), 1);
    a.flush().unwrap();
    drop(a);
    let b = open(&dir, &clock);
    assert_miss(&b.get(&news(1)).await.unwrap());
    assert_eq!(value_of(b.get(&news(2)).await.unwrap()), Some(big(2)));
    assert_miss(&b.get(&news(3)).await.unwrap());
}

#[tokio::test]
async fn dropping_the_cache_commits_what_is_queued() {
    let Pair { root, clock, a } = Pair::new("1s");
    let dir = root.path().join("cache");
    for n in 0..50 {
        a.set(&news(n), Value::bytes(big(n as u8))).await.unwrap();
    }
    drop(a);
    let b = open(&dir, &clock);
    for n in 0..50 {
        assert_eq!(
            value_of(b.get(&news(n)).await.unwrap()),
            Some(big(n as u8)),
            "{n}"
        );
    }
}

#[tokio::test]
async fn a_single_flight_result_is_committed_before_the_lease_is_let_go() {
    let p = Pair::new("1s");
    let (a, b) = (&p.a, p.b());
    let key = news(9);
    let got = a
        .get_or_fetch(&key, || async {
            Ok::<_, std::io::Error>(Value::bytes(big(9)))
        })
        .await
        .unwrap();
    assert_eq!(got.value().as_ref(), &big(9)[..]);
    // Not a second later: at once, as without write-behind.
    assert_eq!(value_of(b.get(&key).await.unwrap()), Some(big(9)));
}

/// Blob writes fail while `broken` is set.
struct Breakable {
    broken: AtomicBool,
}

impl FsFaults for Breakable {
    fn check(&self, _step: BlobStep, _path: &Path) -> io::Result<()> {
        if self.broken.load(Ordering::Relaxed) {
            Err(io::Error::from_raw_os_error(libc_enospc()))
        } else {
            Ok(())
        }
    }
}

fn libc_enospc() -> i32 {
    28 // ENOSPC on Linux
}

#[tokio::test]
async fn a_failed_background_commit_reaches_the_next_write_and_loses_nothing() {
    let Pair { root, clock, a } = Pair::new("1s");
    let dir = root.path().join("cache");
    let faults = Arc::new(Breakable {
        broken: AtomicBool::new(true),
    });
    assert!(a.inject_fs_faults(faults.clone() as Arc<dyn FsFaults>));
    let mut registry = Registry::default();
    register(&mut registry, &a);
    a.set(&news(1), Value::bytes(big(1))).await.unwrap();
    let m = scrape(&registry);
    assert_eq!(m["cache_queued_writes{cache_type=\"disk\"}"], 1.0);
    let e = a.flush().unwrap_err();
    assert!(e.is_disk_full(), "{e}");
    let failures = "cache_queue_commit_failures_total{cache_type=\"disk\"}";
    assert!(
        scrape(&registry)[failures] >= 2.0,
        "the scrape's commit and flush's"
    );
    // Still queued, still read by its writer.
    assert_eq!(value_of(a.get(&news(1)).await.unwrap()), Some(big(1)));
    // The next write retries the commit first and reports its failure; its own value is
    // not stored.
    let e = a.set(&news(2), Value::bytes(big(2))).await.unwrap_err();
    assert!(e.is_disk_full(), "{e}");
    assert_miss(&a.get(&news(2)).await.unwrap());
    // Once the disk has room again, nothing queued was lost.
    faults.broken.store(false, Ordering::Relaxed);
    a.set(&news(3), Value::bytes(big(3))).await.unwrap();
    a.flush().unwrap();
    drop(a);
    let b = open(&dir, &clock);
    assert_eq!(value_of(b.get(&news(1)).await.unwrap()), Some(big(1)));
    assert_eq!(value_of(b.get(&news(3)).await.unwrap()), Some(big(3)));
}

#[tokio::test]
async fn shutting_down_commits_the_queue_and_later_writes_still_land() {
    let p = Pair::new("1s");
    p.a.set(&news(1), Value::bytes(big(1))).await.unwrap();
    p.a.shut_down().unwrap();
    let b = p.b();
    assert_eq!(value_of(b.get(&news(1)).await.unwrap()), Some(big(1)));
    // No committer any more: a later write is committed by the next use of the index.
    p.a.set(&news(2), Value::bytes(big(2))).await.unwrap();
    assert_eq!(value_of(p.a.get(&news(2)).await.unwrap()), Some(big(2)));
    p.a.flush().unwrap();
    assert_eq!(value_of(b.get(&news(2)).await.unwrap()), Some(big(2)));
}
