//! Disk hits read again without the index (`cache/located.rs`): the second read of a value
//! the memory tier cannot hold goes straight to its blob file, and every change to the key —
//! made here, by another instance on the same directory, by an invalidation, by expiry or by
//! damage — is seen by the very next read, exactly as a read through the index would see it.

use std::path::Path;
use std::time::Duration;

use freshcache::metrics::register;
use freshcache::{Cache, Config, Key, KeyPrefix, Lookup, ManualClock, Sharing, Value};
use freshcache_testkit::RedisServer;
use prometheus_client::registry::Registry;

use crate::metrics::scrape;
use crate::support::*;

/// A cache on `dir` whose memory tier is too small for the 100 KiB values used here.
fn open_small(dir: &Path, clock: &ManualClock) -> Cache {
    open_sharing(dir, clock, Sharing::Host)
}

fn open_sharing(dir: &Path, clock: &ManualClock, sharing: Sharing) -> Cache {
    let config = Config::from_yaml_str(
        "cache: {memory: {max_bytes: 64KiB}}",
        None,
        Vec::<(String, String)>::new(),
    )
    .unwrap()
    .with_cache_dir(dir);
    Cache::builder(config)
        .clock(clock.clone())
        .sharing(sharing)
        .open()
        .unwrap()
}

fn news(n: u32) -> Key {
    Key::news("espn", format!("a{n}")).unwrap()
}

/// 100 KiB that do not compress (stored in a blob file, never held in memory here).
fn big(tag: u64) -> Vec<u8> {
    noise(tag, 100 * 1024)
}

/// The value of a fresh disk hit, `None` on a miss; panics on a hit from another tier.
async fn read(cache: &Cache, key: &Key) -> Option<Vec<u8>> {
    match cache.get(key).await.unwrap() {
        Lookup::Fresh(h) => {
            assert_eq!(h.source, DISK, "memory cannot hold a 100 KiB value here");
            Some(h.value().to_vec())
        }
        other => {
            assert_miss(&other);
            None
        }
    }
}

/// Disk hits this cache read without the index so far.
struct Skips(Registry);

impl Skips {
    fn of(cache: &Cache) -> Self {
        let mut registry = Registry::default();
        register(&mut registry, cache);
        Self(registry)
    }

    fn count(&self) -> f64 {
        scrape(&self.0)["cache_index_skipped_reads_total{cache_type=\"disk\"}"]
    }
}

struct Two {
    root: tempfile::TempDir,
    clock: ManualClock,
    a: Cache,
    b: Cache,
}

impl Two {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let dir = root.path().join("cache");
        let a = open_small(&dir, &clock);
        let b = open_small(&dir, &clock);
        Self { root, clock, a, b }
    }

    fn dir(&self) -> std::path::PathBuf {
        self.root.path().join("cache")
    }
}

#[tokio::test]
async fn a_second_disk_hit_skips_the_index_until_the_key_changes_here() {
    let t = Two::new();
    let (a, k) = (&t.a, news(1));
    let skips = Skips::of(a);
    a.set(&k, Value::bytes(big(1))).await.unwrap();
    assert_eq!(read(a, &k).await, Some(big(1)));
    assert_eq!(skips.count(), 0.0, "the first read looks the key up");
    assert_eq!(read(a, &k).await, Some(big(1)));
    assert_eq!(read(a, &k).await, Some(big(1)));
    assert_eq!(
        skips.count(),
        2.0,
        "later reads go straight to the blob file"
    );

    // A write here: the next read finds the new value (through the index), then skips again.
    a.set(&k, Value::bytes(big(2))).await.unwrap();
    assert_eq!(read(a, &k).await, Some(big(2)));
    assert_eq!(skips.count(), 2.0);
    assert_eq!(read(a, &k).await, Some(big(2)));
    assert_eq!(skips.count(), 3.0);

    // A delete, and a prefix invalidation of another key.
    a.delete(&k).await.unwrap();
    assert_eq!(read(a, &k).await, None);
    let k2 = news(2);
    a.set(&k2, Value::bytes(big(3))).await.unwrap();
    assert_eq!(read(a, &k2).await, Some(big(3)));
    assert_eq!(read(a, &k2).await, Some(big(3)));
    a.invalidate_prefix(&KeyPrefix::parse("news:espn:").unwrap())
        .await
        .unwrap();
    assert_eq!(read(a, &k2).await, None);
}

#[tokio::test]
async fn another_instances_write_or_delete_is_seen_by_the_next_read() {
    let t = Two::new();
    changes_by_b_are_seen_by_the_next_read_of_a(&t.a, &t.b).await;
}

/// The same without a follower on the reading side: the removal of the old blob alone sends
/// the read back to the index.
#[tokio::test]
async fn the_removed_blob_alone_sends_the_next_read_to_the_index() {
    let t = Two::new();
    let a = open_sharing(&t.dir(), &t.clock, Sharing::Exclusive);
    let skips = Skips::of(&a);
    changes_by_b_are_seen_by_the_next_read_of_a(&a, &t.b).await;
    assert!(skips.count() >= 2.0, "reads went without the index");
}

async fn changes_by_b_are_seen_by_the_next_read_of_a(a: &Cache, b: &Cache) {
    let k = news(1);
    a.set(&k, Value::bytes(big(1))).await.unwrap();
    assert_eq!(read(a, &k).await, Some(big(1)));
    assert_eq!(read(a, &k).await, Some(big(1)));
    // Straight after `b` returns, whether or not `a` heard of the change yet: the blob `a`
    // read is gone, so `a` goes back to the index.
    b.set(&k, Value::bytes(big(2))).await.unwrap();
    assert_eq!(read(a, &k).await, Some(big(2)));
    assert_eq!(read(a, &k).await, Some(big(2)));
    b.delete(&k).await.unwrap();
    assert_eq!(read(a, &k).await, None);
    b.set(&k, Value::bytes(big(3))).await.unwrap();
    assert_eq!(read(a, &k).await, Some(big(3)));
    assert_eq!(read(a, &k).await, Some(big(3)));
    b.invalidate_prefix(&KeyPrefix::parse("news:").unwrap())
        .await
        .unwrap();
    assert_eq!(read(a, &k).await, None);
}

#[tokio::test]
async fn expiry_and_access_times_hold_on_reads_without_the_index() {
    let t = Two::new();
    let (a, k) = (&t.a, news(1));
    let skips = Skips::of(a);
    a.set(&k, Value::bytes(big(1)).ttl(secs(10))).await.unwrap();
    assert_eq!(read(a, &k).await, Some(big(1)));
    let stored_access = a.inspect(&k).unwrap().disk.unwrap().access_at;
    // Read without the index a few seconds later: the access time still moves on (LRU).
    t.clock.advance(secs(5));
    assert_eq!(read(a, &k).await, Some(big(1)));
    assert!(skips.count() >= 1.0);
    a.flush().unwrap();
    let later = a.inspect(&k).unwrap().disk.unwrap().access_at;
    assert_eq!(
        later,
        stored_access.saturating_add(secs(5)),
        "the access time is recorded"
    );
    // Just before the TTL: served; at it: not.
    t.clock.advance(secs(5) - Duration::from_millis(1));
    assert_eq!(read(a, &k).await, Some(big(1)));
    t.clock.advance(Duration::from_millis(1));
    assert_eq!(read(a, &k).await, None);
}

#[tokio::test]
async fn a_damaged_blob_is_a_miss_removed_and_counted_not_a_skip() {
    let t = Two::new();
    let (a, k) = (&t.a, news(1));
    let skips = Skips::of(a);
    a.set(&k, Value::bytes(big(1))).await.unwrap();
    assert_eq!(read(a, &k).await, Some(big(1)));
    let file = a.inspect(&k).unwrap().disk.unwrap().file.unwrap();
    // Damaged in place (same name, same length).
    let path = t.dir().join("blobs").join(&file);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let before = skips.count();
    assert_eq!(read(a, &k).await, None);
    assert_eq!(
        skips.count(),
        before,
        "a blob that fails verification is not served"
    );
    assert!(
        a.inspect(&k).unwrap().disk.is_none(),
        "the damaged row is removed"
    );
    assert_eq!(a.stats().unwrap().corrupt_entries, 1);
}

/// A random run of writes, deletes, invalidations and clock moves by two instances on one
/// directory, with reads by both after every step: each read answers what the last change
/// left, whoever made it.
#[tokio::test]
async fn reads_follow_every_change_by_either_instance() {
    let t = Two::new();
    let mut rng = fastrand::Rng::with_seed(7);
    let keys: Vec<Key> = (0..4).map(news).collect();
    // (value tag, expires at) per key, as the last change left it.
    let mut model: Vec<Option<(u64, freshcache::Timestamp)>> = vec![None; keys.len()];
    let skips = Skips::of(&t.a);
    for step in 0..400u64 {
        let who = if rng.bool() { &t.a } else { &t.b };
        let i = rng.usize(..keys.len());
        match rng.u8(..10) {
            0..=4 => {
                let ttl = secs(rng.u64(1..6));
                who.set(&keys[i], Value::bytes(big(step)).ttl(ttl))
                    .await
                    .unwrap();
                model[i] = Some((step, t.a.now().saturating_add(ttl)));
            }
            5 => {
                who.delete(&keys[i]).await.unwrap();
                model[i] = None;
            }
            6 => {
                let prefix = KeyPrefix::parse("news:espn:").unwrap();
                who.invalidate_prefix(&prefix).await.unwrap();
                model.iter_mut().for_each(|m| *m = None);
            }
            _ => t.clock.advance(Duration::from_millis(rng.u64(1..1500))),
        }
        let now = t.a.now();
        for (j, key) in keys.iter().enumerate() {
            let want = model[j]
                .filter(|(_, until)| now < *until)
                .map(|(v, _)| big(v));
            for reader in [&t.a, &t.b, &t.a] {
                assert_eq!(read(reader, key).await, want, "step {step}, key {j}");
            }
        }
    }
    assert!(skips.count() > 100.0, "reads went without the index");
}

/// With write-behind, a write queued after a read without the index is what the writer reads
/// next (the queue is newer than every blob file).
#[tokio::test]
async fn a_queued_write_wins_over_a_known_blob() {
    let root = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let config = Config::from_yaml_str(
        "cache: {memory: {max_bytes: 64KiB}, disk: {write_behind: 1s}}",
        None,
        Vec::<(String, String)>::new(),
    )
    .unwrap()
    .with_cache_dir(root.path().join("cache"));
    let a = Cache::builder(config).clock(clock.clone()).open().unwrap();
    let skips = Skips::of(&a);
    let k = news(1);
    a.set(&k, Value::bytes(big(1))).await.unwrap();
    a.flush().unwrap();
    assert_eq!(read(&a, &k).await, Some(big(1)));
    assert_eq!(read(&a, &k).await, Some(big(1)));
    assert_eq!(skips.count(), 1.0);
    a.set(&k, Value::bytes(big(2))).await.unwrap();
    assert_eq!(
        read(&a, &k).await,
        Some(big(2)),
        "the queued write, not the old blob"
    );
    a.flush().unwrap();
    assert_eq!(read(&a, &k).await, Some(big(2)));
}

/// A writer that dies after committing its row, before removing the blob it replaced, leaves
/// that blob where a reader's kept location finds it whole. The change feed still tells the
/// reader: it goes back to the index once its follower has read the feed, as its memory copies
/// would.
#[tokio::test]
async fn a_blob_a_dead_writer_left_behind_is_dropped_when_the_feed_tells_of_the_change() {
    let t = Two::new();
    let (a, b, k) = (&t.a, &t.b, news(1));
    a.set(&k, Value::bytes(big(1))).await.unwrap();
    assert_eq!(read(a, &k).await, Some(big(1)));
    let file = a.inspect(&k).unwrap().disk.unwrap().file.unwrap();
    let path = t.dir().join("blobs").join(&file);
    let old = std::fs::read(&path).unwrap();
    b.set(&k, Value::bytes(big(2))).await.unwrap();
    // Put back as the dead writer would have left it.
    std::fs::write(&path, &old).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = read(a, &k).await.expect("a value stays");
        if got == big(2) {
            break;
        }
        assert_eq!(got, big(1), "the old value or the new one, nothing else");
        assert!(
            std::time::Instant::now() < deadline,
            "the follower never told of the change"
        );
        tokio::task::yield_now().await;
    }
    for _ in 0..3 {
        assert_eq!(read(a, &k).await, Some(big(2)));
    }
}

/// With Redis, a writer that dies before its announcement tells no one: disk reads there
/// always go through the index, never to a kept blob file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_disk_reads_go_through_the_index() {
    let redis = RedisServer::start();
    let root = tempfile::tempdir().unwrap();
    let yaml = format!(
        "cache:\n  redis_url: \"{}\"\n  memory: {{max_bytes: 64KiB}}\n  data_types:\n    news_articles:\n      placement: memory_and_disk\n",
        redis.url()
    );
    let config = Config::from_yaml_str(&yaml, None, Vec::<(String, String)>::new())
        .unwrap()
        .with_cache_dir(root.path());
    let a = Cache::builder(config)
        .clock(ManualClock::new(T0))
        .connect()
        .await
        .unwrap();
    let skips = Skips::of(&a);
    let k = news(1);
    a.set(&k, Value::bytes(big(1))).await.unwrap();
    for _ in 0..3 {
        assert_eq!(read(&a, &k).await, Some(big(1)));
    }
    assert_eq!(skips.count(), 0.0);
}

/// Holds a write of its cache at the point where its row is committed and the blob that row
/// replaced is not removed yet, until released.
#[derive(Default)]
struct HoldAtCommit {
    /// Arrived, released.
    state: std::sync::Mutex<(bool, bool)>,
    moved: std::sync::Condvar,
}

impl freshcache::internals::FsFaults for HoldAtCommit {
    fn check(&self, _: freshcache::internals::BlobStep, _: &Path) -> std::io::Result<()> {
        Ok(())
    }

    fn reached(&self, point: freshcache::internals::WritePoint) {
        if point != freshcache::internals::WritePoint::Committed {
            return;
        }
        let mut s = self.state.lock().unwrap();
        s.0 = true;
        self.moved.notify_all();
        while !s.1 {
            s = self.moved.wait(s).unwrap();
        }
    }
}

impl HoldAtCommit {
    fn arrived(&self) -> bool {
        self.state.lock().unwrap().0
    }

    fn release(&self) {
        self.state.lock().unwrap().1 = true;
        self.moved.notify_all();
    }
}

/// `cache.set(key, value)` on a thread of its own.
fn set_on_thread(cache: &Cache, key: &Key, value: Vec<u8>) -> std::thread::JoinHandle<()> {
    let (cache, key) = (cache.clone(), key.clone());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(cache.set(&key, Value::bytes(value))).unwrap();
    })
}

/// Invariant: a write that returns finds every blob an earlier commit retired removed — of
/// any instance on the directory, even one paused between its commit and the removal. A
/// reader that kept the location of a value two writes back never reads it after the later
/// write returned: the later write waits for the directory's writer lock.
#[test]
fn a_write_returns_only_after_an_earlier_commits_retired_blob_is_gone() {
    let t = Two::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    // Without a follower: only the blob's removal tells the reader of a change.
    let reader = open_sharing(&t.dir(), &t.clock, Sharing::Exclusive);
    let skips = Skips::of(&reader);
    let k = news(1);
    rt.block_on(t.a.set(&k, Value::bytes(big(1)))).unwrap();
    assert_eq!(rt.block_on(read(&reader, &k)), Some(big(1)));
    assert_eq!(rt.block_on(read(&reader, &k)), Some(big(1)));
    assert_eq!(skips.count(), 1.0, "the reader kept the blob's location");

    let hold = std::sync::Arc::new(HoldAtCommit::default());
    assert!(t.a.inject_fs_faults(hold.clone()));
    let first = set_on_thread(&t.a, &k, big(2));
    freshcache_testkit::Poll::within(Duration::from_secs(10))
        .until("a's second write never reached its commit", || {
            hold.arrived()
        });
    let later = set_on_thread(&t.b, &k, big(3));
    // b's write is free to run now; it must wait for a's removal instead of returning.
    let deadline = std::time::Instant::now() + Duration::from_millis(500);
    while !later.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let returned_early = later.is_finished();
    if returned_early {
        // What a reader then saw: the value two writes back, from the retired blob.
        let seen = rt.block_on(read(&reader, &k));
        panic!(
            "b's write returned before a removed the blob its commit retired; the reader then \
             read {}",
            match seen {
                Some(v) if v == big(1) => "the value two writes back",
                Some(v) if v == big(3) => "b's value",
                Some(_) => "a's value",
                None => "nothing",
            }
        );
    }
    hold.release();
    first.join().unwrap();
    later.join().unwrap();
    assert_eq!(rt.block_on(read(&reader, &k)), Some(big(3)));
}

/// Invariant: a cache alone on its directory leaves its changes out of the change feed, and
/// one that opens the directory while such a write is under way waits for it (then reads its
/// value); every later write is recorded, so the newcomer's memory copies follow it.
#[test]
fn a_cache_opening_during_a_write_made_alone_waits_for_it_then_hears_of_every_change() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cache");
    let clock = ManualClock::new(T0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let a = open_small(&dir, &clock);
    let k = news(1);
    rt.block_on(a.set(&k, Value::bytes(b"v1".to_vec())))
        .unwrap();
    let hold = std::sync::Arc::new(HoldAtCommit::default());
    assert!(a.inject_fs_faults(hold.clone()));
    let writing = set_on_thread(&a, &k, b"v2".to_vec());
    freshcache_testkit::Poll::within(Duration::from_secs(10))
        .until("a's write never reached its commit", || hold.arrived());
    let opening = std::thread::spawn(move || open_small(&dir, &clock));
    let deadline = std::time::Instant::now() + Duration::from_millis(300);
    while !opening.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        !opening.is_finished(),
        "b opened while a's write (made alone, not in the feed) was still under way"
    );
    hold.release();
    writing.join().unwrap();
    let b = opening.join().unwrap();
    let value = |c: &Cache| match rt.block_on(c.get(&k)).unwrap() {
        Lookup::Fresh(h) => h.value().to_vec(),
        other => panic!("{other:?}"),
    };
    assert_eq!(value(&b), b"v2");
    assert!(b.inspect(&k).unwrap().in_memory, "b holds a memory copy");
    // a is no longer alone: its next write reaches b's memory tier through the feed.
    rt.block_on(a.set(&k, Value::bytes(b"v3".to_vec())))
        .unwrap();
    freshcache_testkit::Poll::within(Duration::from_secs(5))
        .until("b never heard of a's write", || value(&b) == b"v3");
}
