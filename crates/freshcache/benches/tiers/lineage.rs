//! W8 lineage (`--only lineage`): a memory hit on a value derived from 3 inputs beside a memory
//! hit on a plain value, and a `set` declaring 3 inputs beside a plain `set`, same run, same
//! cache. Goals: a derived hit within 1.2x of a plain hit's time (it reuses the check
//! remembered on the entry while nothing changed), a set with 3 inputs within 2x of a plain set
//! (it reads its 3 inputs, walks their inputs for cycles, and writes 3 index edges in the
//! entry's transaction).

use std::hint::black_box;
use std::path::Path;

use bytes::Bytes;
use freshcache::{Cache, Config, Key, Lookup, Value};
use serde_json::json;

use crate::{Args, Measure, Report, measure_mt, print_table, ready};

fn feature(i: usize) -> Key {
    Key::llm_features(format!("c{i}"), "2026-12-04").unwrap()
}

fn odds(i: usize) -> Key {
    Key::odds(format!("g{i}"), 1_700_000_000).unwrap()
}

/// The 3 inputs of derived value `i` of `n`.
fn inputs(i: usize, n: usize) -> [Key; 3] {
    [odds(i), odds((i + 1) % n), odds((i + 2) % n)]
}

/// A cache holding `n` odds, `n` plain features (even cluster ids) and `n` features derived
/// from 3 odds each (odd ids): one data type, one map.
fn populate(rt: &tokio::runtime::Runtime, dir: &Path, n: usize, value: &Bytes) -> Cache {
    let yaml = format!(
        "cache:\n  cache_dir: {}\n  ttl: {{odds_data: 1h}}\n",
        dir.join("lineage").display()
    );
    let cache = Cache::open(Config::from_yaml_str(&yaml, None, Vec::new()).unwrap()).unwrap();
    rt.block_on(async {
        for i in 0..n {
            cache
                .set(&odds(i), Value::bytes(value.clone()))
                .await
                .unwrap();
        }
        for i in 0..n {
            cache
                .set(&feature(2 * i), Value::bytes(value.clone()))
                .await
                .unwrap();
            let derived = Value::bytes(value.clone()).derived_from(inputs(i, n));
            cache.set(&feature(2 * i + 1), derived).await.unwrap();
        }
    });
    cache
}

pub fn lineage(a: &Args, rt: &tokio::runtime::Runtime, dir: &Path, report: &mut Report) {
    let n = a.keys.clamp(3, 10_000);
    let value = Bytes::from(vec![7u8; 256]);
    let cache = populate(rt, dir, n, &value);
    let mut rng = fastrand::Rng::with_seed(7);
    let gets: Vec<u32> = (0..a.ops).map(|_| rng.u32(..n as u32)).collect();
    let plain: Vec<Key> = (0..n).map(|i| feature(2 * i)).collect();
    let derived: Vec<Key> = (0..n).map(|i| feature(2 * i + 1)).collect();
    let misses = std::sync::atomic::AtomicUsize::new(0);
    let hit = |cache: &Cache, k: &Key| {
        let l = ready(rt, cache.get(k)).unwrap();
        if !matches!(&l, Lookup::Fresh(h) if h.source == freshcache::Source::Tier(freshcache::TierKind::Memory))
        {
            misses.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let _ = black_box(l);
    };
    // One read of every key first: a derived value's first hit after a write checks its inputs
    // (reads them) and remembers the check; the rows measure the hits that follow.
    for (p, d) in plain.iter().zip(&derived) {
        hit(&cache, p);
        hit(&cache, d);
    }
    let mut rows: Vec<Measure> = Vec::new();
    rows.push(measure_mt("plain value: memory hit", &gets, 1, |op| {
        hit(&cache, &plain[op as usize]);
    }));
    rows.push(measure_mt(
        "derived from 3 inputs: memory hit",
        &gets,
        1,
        |op| {
            hit(&cache, &derived[op as usize]);
        },
    ));
    assert_eq!(
        misses.into_inner(),
        0,
        "every lookup should be a memory hit"
    );
    // Sets rewrite the same keys with the same content: each is a full write (disk + memory)
    // and none changes a checksum, so the inputs stay fresh for the next derived set.
    let sets: Vec<u32> = gets.iter().take(a.ops.min(5_000)).copied().collect();
    rows.push(measure_mt("plain set", &sets, 1, |op| {
        let k = &plain[op as usize];
        ready(rt, cache.set(k, Value::bytes(value.clone()))).unwrap();
    }));
    rows.push(measure_mt("set with 3 inputs", &sets, 1, |op| {
        let i = op as usize;
        let v = Value::bytes(value.clone()).derived_from(inputs(i, n));
        ready(rt, cache.set(&derived[i], v)).unwrap();
    }));
    let title = format!(
        "W8 lineage: {n} plain and {n} derived values x 256 B, 1 thread, {} gets / {} sets",
        gets.len(),
        sets.len()
    );
    print_table(
        &title,
        &rows,
        &[
            ("vs plain hit", "plain value: memory hit"),
            ("vs plain set", "plain set"),
        ],
    );
    summarise(&title, &rows, report);
}

/// Prints and records the time ratios against the goals.
fn summarise(title: &str, rows: &[Measure], report: &mut Report) {
    let ratio = |a: &str, b: &str| {
        let per = |name: &str| {
            rows.iter()
                .find(|m| m.name == name)
                .map_or(f64::NAN, Measure::per_sec)
        };
        per(b) / per(a)
    };
    let hit_ratio = ratio(
        "derived from 3 inputs: memory hit",
        "plain value: memory hit",
    );
    let set_ratio = ratio("set with 3 inputs", "plain set");
    println!(
        "  time per derived hit / plain hit: {hit_ratio:.2}x (goal <= 1.2x); per set with 3 inputs / plain set: {set_ratio:.2}x (goal <= 2x)"
    );
    report.table("W8", title, rows, json!({"threads": 1}));
    report.row(
        "W8",
        json!({"derived_hit_time_ratio": hit_ratio, "set_with_3_inputs_time_ratio": set_ratio}),
    );
}
