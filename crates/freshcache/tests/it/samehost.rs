//! Several processes on one host sharing a cache directory without Redis: memory tiers follow
//! each other's changes through the index's change feed, and `get_or_fetch` is single-flight
//! across processes through a lease in the index that a killed holder cannot keep.
//!
//! Children are re-runs of this test binary (selected by environment variables); they log with
//! wall-clock times (`SystemTime`, shared by all processes of the host).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::{now_ns, run_children, spawn_child, wait_child};
use freshcache::{Cache, Config, Key, KeyPrefix, Lookup, Value};
use freshcache_testkit::Poll;

const CHILD_DIR: &str = "FRESHCACHE_IT_HOST_DIR";
const CHILD_PROC: &str = "FRESHCACHE_IT_HOST_PROC";
const CHILD_LOG: &str = "FRESHCACHE_IT_HOST_LOG";
const CHILD_START_AT: &str = "FRESHCACHE_IT_HOST_START_AT";
const CHILD_MARK: &str = "FRESHCACHE_IT_HOST_MARK";

/// A hot type kept in memory and on disk, with a short lease for the take-over test.
fn config(dir: &Path) -> Config {
    config_with_lease(dir, "1s")
}

/// [`config`] with another lease: the single-flight test's loaders must not lose theirs to a
/// machine so loaded that a 400 ms load takes past a 1 s lease (then a second load is right).
fn config_with_lease(dir: &Path, lease: &str) -> Config {
    Config::from_yaml_str(
        &format!(
            "cache:\n  redis:\n    lease: {lease}\n  data_types:\n    co:\n      prefix: \"co:\"\n      \
             ttl: 24h\n      placement: memory_and_disk\n"
        ),
        None,
        Vec::new(),
    )
    .unwrap()
    .with_cache_dir(dir)
}

fn key(group: u64, k: u64) -> Key {
    Key::parse(&format!("co:g{group}:k{k}")).unwrap()
}

fn prefix(group: u64) -> KeyPrefix {
    KeyPrefix::parse(&format!("co:g{group}:")).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn test_name(f: &str) -> String {
    format!("{}::{f}", module_path!().split_once("::").unwrap().1)
}

fn wait_until(at: u128) {
    while now_ns() < at {
        // Every child starts at the same instant: a wait for a time, not for an event.
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Files named `*-wal` anywhere under `dir`.
fn wal_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with("-wal") {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn dropping_the_last_handle_closes_the_index_before_the_drop_returns() {
    // The change follower thread has a connection of its own; it is stopped and joined with
    // the cache, so once the drop returns every connection is closed (the last one removes
    // the WAL) and the directory can be copied or removed.
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cache");
    let rt = rt();
    for round in 0..20 {
        let cache = Cache::open(config(&dir)).unwrap();
        let other = cache.clone();
        rt.block_on(cache.set(&key(round, 1), "v")).unwrap();
        // Let the follower read the feed (and be mid-sleep or mid-read at the drop).
        std::thread::sleep(Duration::from_millis(round % 4));
        drop(other);
        drop(cache);
        let left = wal_files(&dir);
        assert!(
            left.is_empty(),
            "round {round}: {left:?} still there after the drop"
        );
    }
}

#[test]
fn another_instance_on_the_directory_sees_sets_deletes_and_prefix_invalidations() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cache");
    let a = Cache::open(config(&dir)).unwrap();
    let b = Cache::open(config(&dir)).unwrap();
    let rt = rt();
    let value_in_b = |k: &Key| match rt.block_on(b.get(k)).unwrap() {
        Lookup::Fresh(h) => Some(h.value().clone()),
        _ => None,
    };
    let (k1, k2, other) = (key(1, 1), key(1, 2), key(2, 1));
    for k in [&k1, &k2, &other] {
        rt.block_on(a.set(k, "v1")).unwrap();
    }
    let follow = || Poll::within(Duration::from_secs(5)).every(Duration::from_millis(1));
    // B reads until it holds memory copies (a read racing B's follower, which drops copies of
    // what A just wrote, is served from disk and not promoted).
    for k in [&k1, &k2, &other] {
        follow().until("B holds a memory copy", || {
            matches!(rt.block_on(b.get(k)).unwrap(),
                Lookup::Fresh(h) if h.source == crate::support::MEMORY && &h.value()[..] == b"v1")
        });
    }

    rt.block_on(a.set(&k1, "v2")).unwrap();
    follow().until("B sees the overwrite", || {
        value_in_b(&k1).as_deref() == Some(&b"v2"[..])
    });

    rt.block_on(a.set_many(vec![
        (k2.clone(), "v3".into()),
        (other.clone(), "v3".into()),
    ]))
    .unwrap();
    follow().until("B sees a batch", || {
        value_in_b(&k2).as_deref() == Some(&b"v3"[..])
            && value_in_b(&other).as_deref() == Some(&b"v3"[..])
    });
    follow().until("B holds the batch's values in memory", || {
        matches!(rt.block_on(b.get(&other)).unwrap(),
            Lookup::Fresh(h) if h.source == crate::support::MEMORY)
    });

    rt.block_on(a.delete(&k1)).unwrap();
    follow().until("B sees the delete", || value_in_b(&k1).is_none());

    rt.block_on(a.invalidate_prefix(&prefix(1))).unwrap();
    follow().until("B sees the prefix invalidation", || {
        value_in_b(&k2).is_none()
    });
    // Outside the prefix: kept, and still served from B's memory.
    let h = crate::support::fresh(rt.block_on(b.get(&other)).unwrap());
    assert_eq!(h.source, crate::support::MEMORY);

    rt.block_on(a.invalidate_all()).unwrap();
    follow().until("B sees the flush", || value_in_b(&other).is_none());
}

/// One operation of a history child: `op key id start end` (op W, D or P; key `g.k`; id `-`
/// for deletes and invalidations).
struct Op {
    op: char,
    group: u64,
    k: u64,
    id: String,
    start: u128,
    end: u128,
}

const PROCS: u64 = 4;
const OPS: u64 = 400;
const GROUPS: u64 = 2;
const KEYS: u64 = 4;
/// How long after a change completed another process may still serve what it replaced.
const BOUND_NS: u128 = 50_000_000;

fn history_child(dir: &Path, p: u64, log: &Path) {
    let cache = Cache::open(config(dir)).unwrap();
    let rt = rt();
    let mut rng = fastrand::Rng::with_seed(p);
    let mut lines = Vec::new();
    for s in 0..OPS {
        let (g, k) = (rng.u64(0..GROUPS), rng.u64(0..KEYS));
        let roll = rng.u32(0..100);
        let start = now_ns();
        let (op, id) = if roll < 30 {
            let id = format!("{p}.{s}");
            rt.block_on(cache.set(&key(g, k), Value::from(id.clone())))
                .unwrap();
            ('W', id)
        } else if roll < 35 {
            rt.block_on(cache.delete(&key(g, k))).unwrap();
            ('D', "-".to_owned())
        } else if roll < 37 {
            rt.block_on(cache.invalidate_prefix(&prefix(g))).unwrap();
            ('P', "-".to_owned())
        } else {
            let id = match rt.block_on(cache.get(&key(g, k))).unwrap() {
                Lookup::Fresh(h) => String::from_utf8(h.value().to_vec()).unwrap(),
                _ => "-".to_owned(),
            };
            ('R', id)
        };
        let end = now_ns();
        lines.push(format!("{op} {g}.{k} {id} {start} {end}"));
        // Paced like a producer and its readers, so reads interleave with other processes'
        // writes instead of one process running through its share first.
        std::thread::sleep(Duration::from_micros(500));
    }
    let mut f = std::fs::File::create(log).unwrap();
    for line in lines {
        writeln!(f, "{line}").unwrap();
    }
    f.sync_all().unwrap();
}

fn parse_log(path: &Path) -> Vec<Op> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let (g, k) = f[1].split_once('.').unwrap();
            Op {
                op: f[0].chars().next().unwrap(),
                group: g.parse().unwrap(),
                k: k.parse().unwrap(),
                id: f[2].to_owned(),
                start: f[3].parse().unwrap(),
                end: f[4].parse().unwrap(),
            }
        })
        .collect()
}

/// Invariant: 4 processes overwriting, deleting and invalidating (by prefix) 8 hot keys of a
/// type held in memory, and reading them, never read a value that a change which began after
/// the value's write ended had completed more than 50 ms before the read began.
#[test]
fn no_process_reads_a_value_replaced_more_than_50ms_before_the_read() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        let p = std::env::var(CHILD_PROC).unwrap().parse().unwrap();
        let log = PathBuf::from(std::env::var(CHILD_LOG).unwrap());
        history_child(Path::new(&dir), p, &log);
        return;
    }
    let started = Instant::now();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cache");
    // Created before the children start, so none of them races the others to make it.
    drop(Cache::open(config(&dir)).unwrap());
    let name = test_name("no_process_reads_a_value_replaced_more_than_50ms_before_the_read");
    let logs: Vec<PathBuf> = (0..PROCS)
        .map(|p| root.path().join(format!("p{p}.log")))
        .collect();
    let envs: Vec<_> = (0..PROCS)
        .map(|p| {
            vec![
                (CHILD_DIR, dir.display().to_string()),
                (CHILD_PROC, p.to_string()),
                (CHILD_LOG, logs[p as usize].display().to_string()),
            ]
        })
        .collect();
    run_children(&name, &envs);
    let ops: Vec<Op> = logs.iter().flat_map(|l| parse_log(l)).collect();
    let writes: HashMap<&str, &Op> = ops
        .iter()
        .filter(|o| o.op == 'W')
        .map(|o| (o.id.as_str(), o))
        .collect();
    // What replaces a key's value: an overwrite or delete of it, or an invalidation of its group.
    let replaces = |o: &Op, g: u64, k: u64| {
        (matches!(o.op, 'W' | 'D') && o.group == g && o.k == k) || (o.op == 'P' && o.group == g)
    };
    let (mut reads, mut hits, mut late_ns) = (0u64, 0u64, Vec::new());
    let mut bad = Vec::new();
    for r in ops.iter().filter(|o| o.op == 'R') {
        reads += 1;
        if r.id == "-" {
            continue;
        }
        hits += 1;
        let w = writes
            .get(r.id.as_str())
            .expect("read a value that was written");
        assert!(w.group == r.group && w.k == r.k, "value of another key");
        // The latest change begun after this value's write ended and completed before the read
        // began: the value was gone for (read start - change end).
        let gone_for = ops
            .iter()
            .filter(|o| replaces(o, r.group, r.k) && o.start > w.end && o.end < r.start)
            .map(|o| r.start - o.end)
            .max();
        if let Some(gone) = gone_for {
            late_ns.push(gone);
            if gone > BOUND_NS {
                bad.push(format!(
                    "key {}.{}: read {} {} ms after it was replaced",
                    r.group,
                    r.k,
                    r.id,
                    gone / 1_000_000
                ));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "{} reads of replaced values:\n{}",
        bad.len(),
        bad.join("\n")
    );
    assert!(hits > 0, "no read found a value");
    late_ns.sort_unstable();
    eprintln!(
        "same-host coherence: processes={PROCS} operations={} reads={reads} hits={hits} \
         reads_of_replaced_values={} (latest {:?} after the change, bound 50 ms) \
         violations=0 elapsed={:?}",
        ops.len(),
        late_ns.len(),
        late_ns.last().map(|n| Duration::from_nanos(*n as u64)),
        started.elapsed()
    );
}

/// How long each child's loader takes: long enough that every child asks while it runs.
const LOAD_TAKES: Duration = Duration::from_millis(400);
const LOADERS: u64 = 8;

fn single_flight_child(dir: &Path, p: u64, at: u128, mark: &Path) {
    let cache = Cache::open(config_with_lease(dir, "30s")).unwrap();
    let rt = rt();
    wait_until(at);
    let mark = mark.to_path_buf();
    let hit = rt
        .block_on(cache.get_or_fetch(&key(9, 1), move || async move {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&mark)
                .unwrap();
            writeln!(f, "load by {p}").unwrap();
            // A slow source, so the other processes ask while this one loads.
            tokio::time::sleep(LOAD_TAKES).await;
            Ok::<_, std::io::Error>(Value::from(format!("loaded by {p}")))
        }))
        .unwrap();
    let text = String::from_utf8(hit.value().to_vec()).unwrap();
    // On a line of its own: the test harness prints the test name before it without a newline.
    println!("\nVALUE {text}");
}

/// Invariant: 8 processes calling `get_or_fetch` on one missing key at the same instant call
/// the loader once between them, and all get its value.
#[test]
fn eight_processes_missing_one_key_call_one_loader() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        let p = std::env::var(CHILD_PROC).unwrap().parse().unwrap();
        let at = std::env::var(CHILD_START_AT).unwrap().parse().unwrap();
        let mark = PathBuf::from(std::env::var(CHILD_MARK).unwrap());
        single_flight_child(Path::new(&dir), p, at, &mark);
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cache");
    drop(Cache::open(config(&dir)).unwrap());
    let mark = root.path().join("loads");
    let name = test_name("eight_processes_missing_one_key_call_one_loader");
    // Far enough ahead that every child has opened the cache when it comes.
    let at = now_ns() + 600_000_000;
    let children: Vec<Child> = (0..LOADERS)
        .map(|p| {
            spawn_child(
                &name,
                &[
                    (CHILD_DIR, dir.display().to_string()),
                    (CHILD_PROC, p.to_string()),
                    (CHILD_START_AT, at.to_string()),
                    (CHILD_MARK, mark.display().to_string()),
                ],
            )
        })
        .collect();
    let values: Vec<String> = children
        .into_iter()
        .enumerate()
        .map(|(p, c)| {
            let out = wait_child(&format!("process {p}"), c);
            out.lines()
                .find_map(|l| l.strip_prefix("VALUE "))
                .unwrap_or_else(|| panic!("no value in {out}"))
                .to_owned()
        })
        .collect();
    let loads = std::fs::read_to_string(&mark).unwrap();
    assert_eq!(loads.lines().count(), 1, "loader calls: {loads}");
    let loader = loads.trim().strip_prefix("load by ").unwrap();
    let expected = format!("loaded by {loader}");
    assert!(values.iter().all(|v| *v == expected), "{values:?}");
    eprintln!("same-host single flight: processes={LOADERS} loader_calls=1 values_agree=true");
}

fn stuck_holder_child(dir: &Path, mark: &Path) {
    let cache = Cache::open(config(dir)).unwrap();
    let rt = rt();
    let mark = mark.to_path_buf();
    let _ = rt.block_on(cache.get_or_fetch(&key(9, 2), move || async move {
        std::fs::write(&mark, "holding").unwrap();
        // Never returns: the parent kills this process while it holds the lease.
        std::future::pending::<()>().await;
        Ok::<_, std::io::Error>(Value::from("never"))
    }));
}

/// Invariant: when the process holding a key's load lease is killed (SIGKILL) mid-load,
/// another process takes the lease over once it lapses and loads the key itself.
#[test]
fn a_killed_lease_holder_is_taken_over_after_its_lease() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        let mark = PathBuf::from(std::env::var(CHILD_MARK).unwrap());
        stuck_holder_child(Path::new(&dir), &mark);
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cache");
    drop(Cache::open(config(&dir)).unwrap());
    let mark = root.path().join("holding");
    let name = test_name("a_killed_lease_holder_is_taken_over_after_its_lease");
    let mut holder = spawn_child(
        &name,
        &[
            (CHILD_DIR, dir.display().to_string()),
            (CHILD_MARK, mark.display().to_string()),
        ],
    );
    Poll::within(Duration::from_secs(20))
        .every(Duration::from_millis(5))
        .until("the holder started loading", || mark.exists());
    holder.kill().unwrap();
    let killed_at = Instant::now();
    holder.wait().unwrap();

    let cache = Cache::open(config(&dir)).unwrap();
    let rt = rt();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let hit = rt
        .block_on(cache.get_or_fetch(&key(9, 2), move || async move {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(Value::from("taken over"))
        }))
        .unwrap();
    assert_eq!(&hit.value()[..], b"taken over");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    eprintln!(
        "lease take-over: holder killed mid-load, lease 1s, loaded again {:?} after the kill",
        killed_at.elapsed()
    );
}

#[tokio::test]
async fn a_write_stamped_a_moment_ahead_by_another_process_is_kept_and_served_once_due() {
    // Two processes' clocks a millisecond apart (each keeps its own offset): the reader,
    // behind, neither serves the writer's value early nor deletes it.
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cache");
    let t0 = freshcache::Timestamp::from_secs(1_800_000_000);
    let (ahead, behind) = (
        freshcache::ManualClock::new(t0.saturating_add(Duration::from_millis(1))),
        freshcache::ManualClock::new(t0),
    );
    let open = |clock: &freshcache::ManualClock| {
        Cache::builder(config(&dir))
            .clock(clock.clone())
            .open()
            .unwrap()
    };
    let (writer, reader) = (open(&ahead), open(&behind));
    writer.set(&key(1, 1), "v1").await.unwrap();
    assert!(matches!(
        reader.get(&key(1, 1)).await.unwrap(),
        Lookup::Miss
    ));
    behind.advance(Duration::from_millis(1));
    match reader.get(&key(1, 1)).await.unwrap() {
        Lookup::Fresh(h) => assert_eq!(&h.value()[..], b"v1"),
        other => panic!("the writer's value was lost: {other:?}"),
    }
    // A stamp far ahead (a clock step) is still removed.
    let far = freshcache::ManualClock::new(t0.saturating_add(Duration::from_secs(5)));
    open(&far).set(&key(1, 2), "v2").await.unwrap();
    assert!(matches!(
        reader.get(&key(1, 2)).await.unwrap(),
        Lookup::Miss
    ));
    behind.advance(Duration::from_secs(10));
    assert!(matches!(
        reader.get(&key(1, 2)).await.unwrap(),
        Lookup::Miss
    ));
}
