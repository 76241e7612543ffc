//! Several processes × several threads on a few hot keys: every read is explained by the
//! history of writes; several processes can open one empty directory at the same moment.
//!
//! Children are re-runs of this test binary (selected by environment variables). Each logs every
//! operation with wall-clock start and end (`SystemTime`, shared by all processes of the host).
//! The data type is `disk_only`, so every read goes to the shared index and the check can be
//! exact (memory tiers follow other processes' changes within milliseconds, not at once: that
//! bound is checked in `samehost`).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use crate::support::{now_ns, run_children, spawn_child, wait_child};
use freshcache::{Cache, Config, Key, Lookup, Value};

const CHILD_DIR: &str = "FRESHCACHE_IT_HIST_DIR";
const CHILD_PROC: &str = "FRESHCACHE_IT_HIST_PROC";
const CHILD_LOG: &str = "FRESHCACHE_IT_HIST_LOG";
const CHILD_START_AT: &str = "FRESHCACHE_IT_HIST_START_AT";
const PROCS: u64 = 4;
const THREADS: u64 = 4;
const OPS: u64 = 150;
const KEYS: u64 = 20;
const OPENERS: u64 = 8;

fn config(dir: &Path) -> Config {
    Config::from_yaml_str(
        "cache:\n  data_types:\n    hist:\n      prefix: \"hist:\"\n      ttl: 24h\n      \
         placement: disk_only\n",
        None,
        Vec::new(),
    )
    .unwrap()
    .with_cache_dir(dir)
}

fn key(k: u64) -> Key {
    Key::parse(&format!("hist:k{k}")).unwrap()
}

/// The value with id `p.t.s`: a header naming it, then bytes derived from it (sizes on both
/// sides of the inline limit).
fn make_value(id: &str) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(twox_hash::XxHash3_64::oneshot(id.as_bytes()));
    let len = if rng.bool() {
        rng.usize(0..2000)
    } else {
        rng.usize(9000..40_000)
    };
    let mut v = format!("id={id};").into_bytes();
    v.extend(std::iter::repeat_with(|| rng.u8(..)).take(len));
    v
}

/// The id of a value read back, checked byte for byte.
fn id_of(v: &[u8]) -> String {
    let text = String::from_utf8_lossy(&v[..v.len().min(40)]).into_owned();
    let id = text
        .strip_prefix("id=")
        .and_then(|r| r.split_once(';'))
        .map(|(id, _)| id.to_owned())
        .unwrap_or_else(|| panic!("value without an id header: {text:?}"));
    assert!(make_value(&id) == v, "value {id} is corrupt");
    id
}

fn test_name(f: &str) -> String {
    format!("{}::{f}", module_path!().split_once("::").unwrap().1)
}

fn history_child(dir: &Path, p: u64, log: &Path) {
    let cache = Cache::open(config(dir)).unwrap();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let cache = cache.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                let mut rng = fastrand::Rng::with_seed(p * 100 + t);
                let mut lines = Vec::new();
                for s in 0..OPS {
                    let k = rng.u64(0..KEYS);
                    if rng.bool() {
                        let id = format!("{p}.{t}.{s}");
                        let v = make_value(&id);
                        let start = now_ns();
                        rt.block_on(cache.set(&key(k), Value::bytes(v))).unwrap();
                        let end = now_ns();
                        lines.push(format!("W {k} {id} {start} {end}"));
                    } else {
                        let start = now_ns();
                        let got = rt.block_on(cache.get(&key(k))).unwrap();
                        let end = now_ns();
                        let id = match got {
                            Lookup::Fresh(h) => id_of(h.value()),
                            Lookup::Miss => "-".to_owned(),
                            other @ Lookup::Stale(_) => panic!("unexpected {other:?}"),
                        };
                        lines.push(format!("R {k} {id} {start} {end}"));
                    }
                }
                lines
            })
        })
        .collect();
    let mut f = std::fs::File::create(log).unwrap();
    for t in threads {
        for line in t.join().unwrap() {
            writeln!(f, "{line}").unwrap();
        }
    }
    f.sync_all().unwrap();
}

struct Op {
    write: bool,
    key: u64,
    id: String,
    start: u128,
    end: u128,
}

fn parse_log(path: &Path) -> Vec<Op> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Op {
                write: f[0] == "W",
                key: f[1].parse().unwrap(),
                id: f[2].to_owned(),
                start: f[3].parse().unwrap(),
                end: f[4].parse().unwrap(),
            }
        })
        .collect()
}

/// Why read `r` is not explained by `writes` (all writes of its key), if it is not.
fn unexplained(r: &Op, writes: &[&Op]) -> Option<String> {
    let completed_before = |w: &&&Op| w.end < r.start;
    if r.id == "-" {
        // No deletes and nothing expires: a miss only before the first write completed.
        return writes
            .iter()
            .find(completed_before)
            .map(|w| format!("miss although write {} completed before the read", w.id));
    }
    let Some(w) = writes.iter().find(|w| w.id == r.id) else {
        return Some(format!("read {} which was never written to this key", r.id));
    };
    if w.start > r.end {
        return Some(format!("read {} before its write began", r.id));
    }
    writes
        .iter()
        .filter(completed_before)
        .find(|w2| w2.start > w.end)
        .map(|w2| {
            format!(
                "read {} although {} (begun after it ended) completed before the read began",
                r.id, w2.id
            )
        })
}

/// Invariant: with 4 processes × 4 threads reading and writing 20 hot keys of a `disk_only`
/// type, every read returns a value written to that key by a write that began before the read
/// ended and that no write which began after it ended had completed before the read began;
/// a miss only happens before any write of the key completed; every value is byte-exact.
#[test]
fn every_read_is_explained_by_the_write_history() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        let p = std::env::var(CHILD_PROC).unwrap().parse().unwrap();
        let log = PathBuf::from(std::env::var(CHILD_LOG).unwrap());
        history_child(Path::new(&dir), p, &log);
        return;
    }
    let started = Instant::now();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cache");
    let name = test_name("every_read_is_explained_by_the_write_history");
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
    assert_eq!(ops.len() as u64, PROCS * THREADS * OPS);
    let mut writes: HashMap<u64, Vec<&Op>> = HashMap::new();
    for op in ops.iter().filter(|o| o.write) {
        assert!(op.start <= op.end);
        writes.entry(op.key).or_default().push(op);
    }
    let (mut reads, mut hits, mut misses, mut overlapping) = (0u64, 0u64, 0u64, 0u64);
    let mut bad = Vec::new();
    for r in ops.iter().filter(|o| !o.write) {
        reads += 1;
        let ws = writes.get(&r.key).map(Vec::as_slice).unwrap_or_default();
        if r.id == "-" {
            misses += 1;
        } else {
            hits += 1;
            if ws.iter().any(|w| w.id == r.id && w.end > r.start) {
                overlapping += 1;
            }
        }
        if let Some(why) = unexplained(r, ws) {
            bad.push(format!("key {}: {why}", r.key));
        }
    }
    // The final state: each key holds a write that no other write strictly followed.
    let cache = Cache::open(config(&dir)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for (k, ws) in &writes {
        let h = crate::support::fresh(rt.block_on(cache.get(&key(*k))).unwrap());
        let id = id_of(h.value());
        let w = ws
            .iter()
            .find(|w| w.id == id)
            .expect("final value was written");
        if let Some(later) = ws.iter().find(|w2| w2.start > w.end) {
            bad.push(format!(
                "key {k}: final value {id} but {} came after it",
                later.id
            ));
        }
    }
    assert_eq!(cache.stats().unwrap().corrupt_entries, 0);
    assert!(
        bad.is_empty(),
        "{} unexplained reads:\n{}",
        bad.len(),
        bad.join("\n")
    );
    assert!(hits > 0 && writes.len() as u64 == KEYS);
    eprintln!(
        "history: processes={PROCS} threads={THREADS} operations={} writes={} reads={reads} \
         (hits {hits}, misses {misses}, overlapping a write {overlapping}) \
         unexplained_reads=0 stale_reads=0 corrupt_reads=0 elapsed={:?}",
        ops.len(),
        ops.len() as u64 - reads,
        started.elapsed()
    );
}

/// Invariant: eight processes opening the same empty directory at the same instant all
/// succeed, and each one's write is readable by the others afterwards.
#[test]
fn eight_processes_open_an_empty_directory_at_once() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        let p: u64 = std::env::var(CHILD_PROC).unwrap().parse().unwrap();
        let at: u128 = std::env::var(CHILD_START_AT).unwrap().parse().unwrap();
        while now_ns() < at {
            // Every child opens at the same instant: a wait for a time, not for an event.
            std::thread::sleep(Duration::from_micros(200));
        }
        let cache = Cache::open(config(Path::new(&dir))).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let v = make_value(&format!("open.{p}.0"));
        rt.block_on(cache.set(&key(100 + p), Value::bytes(v)))
            .unwrap();
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cache");
    let name = test_name("eight_processes_open_an_empty_directory_at_once");
    // Far enough ahead that all children are waiting when it comes.
    let at = now_ns() + 400_000_000;
    let children: Vec<Child> = (0..OPENERS)
        .map(|p| {
            spawn_child(
                &name,
                &[
                    (CHILD_DIR, dir.display().to_string()),
                    (CHILD_PROC, p.to_string()),
                    (CHILD_START_AT, at.to_string()),
                ],
            )
        })
        .collect();
    for (p, c) in children.into_iter().enumerate() {
        wait_child(&format!("opener {p}"), c);
    }
    let cache = Cache::open(config(&dir)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for p in 0..OPENERS {
        let h = crate::support::fresh(rt.block_on(cache.get(&key(100 + p))).unwrap());
        assert_eq!(id_of(h.value()), format!("open.{p}.0"));
    }
    let report = cache
        .doctor(freshcache::maintenance::Mode::DryRun, Duration::ZERO)
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
    eprintln!(
        "open-at-once: processes={OPENERS} opened={OPENERS} failures=0 writes_readable={OPENERS}"
    );
}
