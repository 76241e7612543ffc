//! Torn and flipped data on disk, garbage in SQLite rows and in Redis values: every read is a
//! miss or the exact value written, never another value, never a panic.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use freshcache::maintenance::Mode;
use freshcache::{Cache, Config, Key, Lookup, Source, SystemClock, TierKind, Value};

use crate::support::{TestCache, blob_files, noise};
use freshcache_testkit::RedisServer;

const BLOB_ENTRIES: u64 = 400;
const INLINE_ENTRIES: u64 = 60;

fn key(i: u64) -> Key {
    Key::news("torn", format!("e{i}")).unwrap()
}

/// Reads every key: a hit must be the exact value; returns the keys that missed.
async fn read_all(cache: &Cache, values: &HashMap<u64, Vec<u8>>) -> HashSet<u64> {
    let mut misses = HashSet::new();
    for (i, v) in values {
        match cache.get(&key(*i)).await.unwrap() {
            Lookup::Fresh(h) => assert!(
                h.value()[..] == v[..],
                "key {i}: a wrong value of {} bytes was served",
                h.value().len()
            ),
            Lookup::Miss => {
                misses.insert(*i);
            }
            other @ Lookup::Stale(_) => panic!("key {i}: unexpected {other:?}"),
        }
    }
    misses
}

/// Invariant: truncated blobs, flipped bytes in 1 % of the blobs, garbage or foreign envelopes
/// in `inline_value`, and garbage, foreign or escaping names in `file` are each a miss (or the
/// exact value when the damage does not touch it), counted in `corrupt_entries`; every
/// undamaged entry still reads back exactly; `metadata.db` is never deleted through a bad
/// `file` name; one doctor repair leaves the directory clean.
#[tokio::test]
async fn damaged_blobs_and_rows_are_misses_never_wrong_values() {
    let t = TestCache::new();
    let dir = t.dir();
    let mut values = HashMap::new();
    for i in 0..BLOB_ENTRIES + INLINE_ENTRIES {
        let len = if i < BLOB_ENTRIES {
            fastrand::usize(10 * 1024..100 * 1024)
        } else {
            fastrand::usize(1..2000)
        };
        let v = noise(i, len);
        t.cache.set(&key(i), Value::bytes(v.clone())).await.unwrap();
        values.insert(i, v);
    }
    t.cache.flush().unwrap();
    assert_eq!(blob_files(&dir).len() as u64, BLOB_ENTRIES);

    let db = rusqlite::Connection::open(dir.join("metadata.db")).unwrap();
    let index_of = |k: &str| -> u64 { k.rsplit_once(":e").unwrap().1.parse().unwrap() };
    let mut blob_rows: Vec<(u64, String)> = db
        .prepare("SELECT key, file FROM entries WHERE file IS NOT NULL ORDER BY key")
        .unwrap()
        .query_map([], |r| Ok((index_of(&r.get::<_, String>(0)?), r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut inline_rows: Vec<u64> = db
        .prepare("SELECT key FROM entries WHERE inline_value IS NOT NULL ORDER BY key")
        .unwrap()
        .query_map([], |r| Ok(index_of(&r.get::<_, String>(0)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(blob_rows.len() as u64, BLOB_ENTRIES);
    assert_eq!(inline_rows.len() as u64, INLINE_ENTRIES);
    let mut rng = fastrand::Rng::with_seed(7);
    rng.shuffle(&mut blob_rows);
    rng.shuffle(&mut inline_rows);

    let mut damaged = HashSet::new();
    let mut faults = 0u64;
    let blob_path = |name: &str| dir.join("blobs").join(name);
    let one_percent = (BLOB_ENTRIES / 100) as usize;
    // Truncated blobs (a torn write).
    for (i, name) in blob_rows.drain(..one_percent) {
        let p = blob_path(&name);
        let len = std::fs::metadata(&p).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(rng.u64(0..len)).unwrap();
        damaged.insert(i);
        faults += 1;
    }
    // One flipped byte anywhere in the envelope.
    for (i, name) in blob_rows.drain(..one_percent) {
        let p = blob_path(&name);
        let mut b = std::fs::read(&p).unwrap();
        let at = rng.usize(0..b.len());
        b[at] ^= rng.u8(1..=255);
        std::fs::write(&p, b).unwrap();
        damaged.insert(i);
        faults += 1;
    }
    // Garbage in `inline_value`: random bytes, empty, another key's valid envelope, NULL.
    let (victim, donor) = (inline_rows.pop().unwrap(), inline_rows.pop().unwrap());
    let setv = |i: u64, v: Option<Vec<u8>>| {
        let n = db
            .execute(
                "UPDATE entries SET inline_value = ?2 WHERE key = ?1",
                rusqlite::params![key(i).as_str(), v],
            )
            .unwrap();
        assert_eq!(n, 1);
    };
    let donor_env: Vec<u8> = db
        .query_row(
            "SELECT inline_value FROM entries WHERE key = ?1",
            [key(donor).as_str()],
            |r| r.get(0),
        )
        .unwrap();
    setv(victim, Some(donor_env));
    damaged.insert(victim);
    for _ in 0..3 {
        let i = inline_rows.pop().unwrap();
        let len = rng.usize(0..300);
        setv(
            i,
            Some(std::iter::repeat_with(|| rng.u8(..)).take(len).collect()),
        );
        damaged.insert(i);
    }
    let i = inline_rows.pop().unwrap();
    setv(i, Some(Vec::new()));
    damaged.insert(i);
    let i = inline_rows.pop().unwrap();
    setv(i, None);
    damaged.insert(i);
    faults += 6;
    // Garbage in `file`: escaping paths, a missing blob, an empty name, another row's blob.
    let bad_names = [
        "../metadata.db".to_owned(),
        "../../../../etc/passwd".to_owned(),
        "/etc/passwd".to_owned(),
        "ab/ab00000000000000000000000000000000.blob".to_owned(),
        String::new(),
        "\u{0}\u{7f}garbage".to_owned(),
    ];
    for name in bad_names {
        let (i, _) = blob_rows.pop().unwrap();
        db.execute(
            "UPDATE entries SET file = ?2 WHERE key = ?1",
            rusqlite::params![key(i).as_str(), name],
        )
        .unwrap();
        damaged.insert(i);
        faults += 1;
    }
    let (victim, _) = blob_rows.pop().unwrap();
    let (owner, owner_file) = blob_rows.pop().unwrap();
    db.execute(
        "UPDATE entries SET file = ?2 WHERE key = ?1",
        rusqlite::params![key(victim).as_str(), owner_file],
    )
    .unwrap();
    damaged.insert(victim);
    faults += 1;
    drop(db);

    // An instance with an empty memory tier: every read goes to the damaged disk.
    let cache = t.reopen();
    let before = cache.doctor(Mode::DryRun, Duration::ZERO).unwrap();
    assert!(!before.is_clean(), "doctor missed the damage: {before:?}");
    let corrupt0 = cache.stats().unwrap().corrupt_entries;
    let misses = read_all(&cache, &values).await;
    let unexplained: Vec<_> = misses
        .iter()
        .filter(|i| !damaged.contains(i) && **i != owner)
        .collect();
    assert!(
        unexplained.is_empty(),
        "undamaged keys missed: {unexplained:?}"
    );
    // Every damaged row other than a harmless flip is detected.
    assert!(misses.len() as u64 >= faults - one_percent as u64);
    let corrupt = cache.stats().unwrap().corrupt_entries - corrupt0;
    assert_eq!(
        corrupt,
        misses.len() as u64,
        "every miss of a stored key is counted as corrupt"
    );
    assert!(
        dir.join("metadata.db").exists(),
        "a bad file name deleted the index"
    );
    // A second pass: the damaged rows are gone, nothing else changed.
    // (Reading the victim of the foreign `file` name may have removed its owner's blob.)
    let again = read_all(&t.reopen(), &values).await;
    let new_misses: Vec<_> = again.difference(&misses).collect();
    assert!(
        new_misses.iter().all(|i| **i == owner),
        "second pass: new misses {new_misses:?}"
    );
    assert!(misses.is_subset(&again));
    let repair = cache.doctor(Mode::Apply, Duration::ZERO).unwrap();
    let after = cache.doctor(Mode::DryRun, Duration::ZERO).unwrap();
    assert!(
        after.is_clean(),
        "not clean after one repair: {after:?} / {repair:?}"
    );
    let n = values.len() as u64;
    eprintln!(
        "torn: entries={n} faults_injected={faults} reads={} misses={} corrupt_counted={corrupt} \
         wrong_values=0 panics=0 doctor_before: corrupt={} rows_without_blob={}",
        2 * n,
        misses.len(),
        before.corrupt_entries,
        before.repair.rows_without_blob
    );
}

/// Invariant: garbage, flipped, truncated and foreign (another key's envelope) values written
/// straight into Redis are never served: a reader with an empty memory tier and its own disk
/// gets a miss for each, and the exact value, from Redis, for every untouched key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_redis_values_are_misses_never_wrong_values() {
    let server = RedisServer::start();
    let config = |dir: &std::path::Path| {
        Config::from_yaml_str(
            &format!(
                "cache:\n  redis_url: \"{}\"\n  redis:\n    timeout: 500ms\n",
                server.url()
            ),
            None,
            Vec::new(),
        )
        .unwrap()
        .with_cache_dir(dir)
    };
    let d1 = tempfile::tempdir().unwrap();
    let writer = Cache::builder(config(d1.path()))
        .clock(SystemClock)
        .connect()
        .await
        .unwrap();
    const N: u64 = 40;
    let mut values = HashMap::new();
    for i in 0..N {
        let v = noise(1000 + i, fastrand::usize(1..200_000));
        writer.set(&key(i), Value::bytes(v.clone())).await.unwrap();
        values.insert(i, v);
    }
    let rkey = |i: u64| format!("freshcache:v/{}", key(i).as_str());
    for i in 0..N {
        assert_eq!(
            server.cli(&["EXISTS", &rkey(i)]),
            "1",
            "key {i} not in Redis"
        );
    }
    let mut damaged = HashSet::new();
    // Plain garbage.
    for i in 0..4 {
        assert_eq!(server.cli(&["SET", &rkey(i), "garbage\u{1}\u{2}"]), "OK");
        damaged.insert(i);
    }
    assert_eq!(server.cli(&["SET", &rkey(4), ""]), "OK");
    damaged.insert(4);
    // A flipped byte (SETRANGE) at several offsets, header and body.
    for (i, off) in [(5u64, 0usize), (6, 3), (7, 17), (8, 60), (9, 5000)] {
        let got = server.cli(&["SETRANGE", &rkey(i), &off.to_string(), "\u{7f}"]);
        assert!(got.parse::<u64>().is_ok(), "SETRANGE: {got}");
        damaged.insert(i);
    }
    // Truncated (server-side, binary-safe).
    for (i, len) in [(10u64, 1usize), (11, 20), (12, 100), (13, 1000)] {
        // Always at least one byte shorter than the value, whatever its size this run.
        let script = "local v = redis.call('GET', KEYS[1]) local n = math.min(tonumber(ARGV[1]), #v - 1) redis.call('SET', KEYS[1], string.sub(v, 1, n)) return 1";
        assert_eq!(
            server.cli(&["EVAL", script, "1", &rkey(i), &len.to_string()]),
            "1"
        );
        damaged.insert(i);
    }
    // Another key's complete, valid envelope.
    for i in 14..18u64 {
        assert_eq!(
            server.cli(&["COPY", &rkey(i + 10), &rkey(i), "REPLACE"]),
            "1"
        );
        damaged.insert(i);
    }
    let faults = damaged.len();

    let d2 = tempfile::tempdir().unwrap();
    let reader = Cache::builder(config(d2.path()))
        .clock(SystemClock)
        .connect()
        .await
        .unwrap();
    let mut from_redis = 0;
    for i in 0..N {
        match reader.get(&key(i)).await.unwrap() {
            Lookup::Fresh(h) => {
                assert!(
                    h.value()[..] == values[&i][..],
                    "key {i}: wrong value served from {}",
                    h.source.name()
                );
                assert!(!damaged.contains(&i), "key {i}: damaged value served");
                assert_eq!(h.source, Source::Tier(TierKind::Redis));
                from_redis += 1;
            }
            Lookup::Miss => assert!(damaged.contains(&i), "key {i}: undamaged key missed"),
            other @ Lookup::Stale(_) => panic!("key {i}: {other:?}"),
        }
    }
    // Each damaged value was removed from Redis by the read that rejected it.
    for i in &damaged {
        assert_eq!(
            server.cli(&["EXISTS", &rkey(*i)]),
            "0",
            "damaged key {i} left in Redis"
        );
    }
    let reader_corrupt = reader.stats().unwrap().corrupt_entries;
    assert_eq!(
        reader_corrupt,
        damaged.len() as u64,
        "every damaged Redis value is counted"
    );
    // The writer still has every value on disk: its reads fall through the damage to disk.
    let writer2 = Cache::builder(config(d1.path()))
        .clock(SystemClock)
        .connect()
        .await
        .unwrap();
    for i in 0..N {
        let h = crate::support::fresh(writer2.get(&key(i)).await.unwrap());
        assert!(h.value()[..] == values[&i][..], "key {i}: wrong value");
    }
    eprintln!(
        "torn/redis: keys={N} faults_injected={faults} reader_hits_from_redis={from_redis} \
         reader_misses={} wrong_values=0 disk_fallback_reads={N} \
         reader_stats_corrupt_entries={reader_corrupt}",
        N - from_redis
    );
}
