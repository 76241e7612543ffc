//! W7: filling the cache — N × 100 B entries through `set_many` in batches of 1 000, beside the
//! same entries through single `set`s (a tenth of them: the same per-entry work, measured in
//! less time), each committed or with `write_behind: 2ms`, same run. Latencies are per call: a
//! whole batch, or one set. A pass ends once everything is committed (`flush`).

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use freshcache::{Cache, Config, Key, Value};
use serde_json::json;

use crate::{Args, Measure, Report, median_of, print_table, runs};

const BATCH: usize = 1_000;

fn open(dir: &Path, write_behind: &str) -> Cache {
    let yaml = format!(
        "cache:\n  cache_dir: {}\n  ttl: {{odds_data: 1h}}\n  disk: {{write_behind: {write_behind}}}\n",
        dir.display()
    );
    Cache::open(Config::from_yaml_str(&yaml, None, Vec::new()).unwrap()).unwrap()
}

/// One pass of `n` entries into a fresh directory: entries per second over the pass, and the
/// latency of each call in ns.
fn fill(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    keys: &[Key],
    value: &Bytes,
    batch: usize,
    write_behind: &str,
) -> (Duration, Vec<u32>) {
    let _ = std::fs::remove_dir_all(dir);
    let cache = open(dir, write_behind);
    let mut lat = Vec::with_capacity(keys.len() / batch + 1);
    let start = Instant::now();
    rt.block_on(async {
        for chunk in keys.chunks(batch) {
            let t = Instant::now();
            if batch == 1 {
                cache
                    .set(&chunk[0], Value::bytes(value.clone()))
                    .await
                    .unwrap();
            } else {
                let items = chunk
                    .iter()
                    .map(|k| (k.clone(), Value::bytes(value.clone())));
                cache.set_many(items).await.unwrap();
            }
            lat.push(u32::try_from(t.elapsed().as_nanos()).unwrap_or(u32::MAX));
        }
    });
    cache.flush().unwrap();
    (start.elapsed(), lat)
}

fn row(name: &str, entries: usize, passes: Vec<(Duration, Vec<u32>)>) -> Measure {
    let elapsed = median_of(passes.iter().map(|p| p.0).collect());
    let lat = passes
        .into_iter()
        .next_back()
        .map(|p| p.1)
        .unwrap_or_default();
    Measure {
        name: name.to_owned(),
        ops: entries,
        elapsed,
        lat,
        given_pct: None,
        passes: Vec::new(),
    }
}

pub fn bulk_fill(a: &Args, rt: &tokio::runtime::Runtime, dir: &Path, report: &mut Report) {
    let n = a.sweep_entries;
    let keys: Vec<Key> = (0..n)
        .map(|i| Key::odds(format!("g{i}"), 1_700_000_000).unwrap())
        .collect();
    let value = Bytes::from(vec![5u8; 100]);
    let many: Vec<_> = (0..runs())
        .map(|_| fill(rt, &dir.join("bulk-many"), &keys, &value, BATCH, "0"))
        .collect();
    let singles = &keys[..(n / 10).max(1)];
    let one: Vec<_> = (0..runs())
        .map(|_| fill(rt, &dir.join("bulk-one"), singles, &value, 1, "0"))
        .collect();
    let behind: Vec<_> = (0..runs())
        .map(|_| fill(rt, &dir.join("bulk-behind"), singles, &value, 1, "2ms"))
        .collect();
    let max_us = |p: &[(Duration, Vec<u32>)]| {
        p.iter()
            .flat_map(|(_, l)| l.iter().copied())
            .max()
            .map_or(f64::NAN, |v| f64::from(v) / 1000.0)
    };
    let (many_max, one_max, behind_max) = (max_us(&many), max_us(&one), max_us(&behind));
    let rows = vec![
        row("freshcache set (one entry a call)", singles.len(), one),
        row("freshcache set_many (1 000 a call)", n, many),
        row("freshcache set, write_behind 2ms", singles.len(), behind),
    ];
    let title = format!(
        "W7 bulk fill: {n} x 100 B entries into an empty directory (entries/s; latency per call)"
    );
    print_table(&title, &rows, &[("vs single sets", "freshcache set (one")]);
    println!(
        "  (slowest call: set_many {many_max:.0} µs, set {one_max:.0} µs, set with write-behind {behind_max:.0} µs; goal: >= 200 000 entries/s through set_many)"
    );
    report.table("W7", &title, &rows, json!({"batch": BATCH, "entries": n}));
}
