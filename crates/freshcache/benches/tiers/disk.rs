//! W2: the disk tier (64 KiB and 1 MiB values) beside raw files and python-diskcache, same
//! sizes, same run.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use freshcache::{Cache, Config, Key, Lookup, Value};
use serde_json::json;

use crate::{Args, Measure, Report, measure, print_table, python_diskcache, ready};

/// python-diskcache's own `Cache.set` / `Cache.get` timed in Python, as (set, get) rows; `None`
/// (after a loud message) when it cannot run.
fn diskcache_rows(n: usize, size: usize, dir: &Path) -> Option<(Measure, Measure)> {
    if !python_diskcache("W2 disk tier") {
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/diskcache_get_set.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(dir.join("diskcache-w2"))
        .arg(n.to_string())
        .arg(size.to_string())
        .arg(crate::runs().to_string())
        .output()
        .ok()?;
    let v: Option<serde_json::Value> = serde_json::from_slice(&out.stdout).ok();
    let Some(v) = v.filter(|_| out.status.success()) else {
        println!(
            "\n!!! W2: diskcache_get_set.py failed: no python-diskcache baseline in this run !!!\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    };
    let secs = |v: &serde_json::Value| Duration::from_secs_f64(v.as_f64().unwrap_or(f64::NAN));
    let row = |name: &str, median: &str, p50: &str, p99: &str| Measure {
        name: name.to_owned(),
        ops: n,
        elapsed: secs(&v[median]),
        lat: Vec::new(),
        given_pct: Some((
            v[p50].as_f64().unwrap_or(f64::NAN),
            v[p99].as_f64().unwrap_or(f64::NAN),
        )),
        passes: v[median.replace("_s", "_runs_s")]
            .as_array()
            .map(|a| a.iter().map(secs).collect())
            .unwrap_or_default(),
    };
    Some((
        row(
            "python-diskcache Cache.set",
            "set_s",
            "set_p50_us",
            "set_p99_us",
        ),
        row(
            "python-diskcache Cache.get",
            "get_s",
            "get_p50_us",
            "get_p99_us",
        ),
    ))
}

pub fn disk_tier(a: &Args, rt: &tokio::runtime::Runtime, dir: &Path, report: &mut Report) {
    for (size, n) in [(64 * 1024, a.disk_keys), (1024 * 1024, a.large_keys)] {
        disk_size(size, n, rt, &dir.join(format!("w2-{size}")), report);
    }
}

/// The size of the index: the SQLite file at `db` and its WAL.
fn index_bytes(db: &Path) -> u64 {
    let wal = format!("{}-wal", db.display());
    [db, Path::new(&wal)]
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum()
}

fn disk_size(size: usize, n: usize, rt: &tokio::runtime::Runtime, dir: &Path, report: &mut Report) {
    let open = |pass: usize| {
        let yaml = format!(
            "cache:\n  cache_dir: {}\n  data_types:\n    blob:\n      prefix: \"blob:\"\n      ttl: 1h\n      max_value_size: 4MiB\n      placement: disk_only\n      compress_above: 1GiB\n",
            dir.join(format!("l3-{pass}")).display()
        );
        Cache::open(Config::from_yaml_str(&yaml, None, Vec::new()).unwrap()).unwrap()
    };
    let mut rng = fastrand::Rng::with_seed(7);
    let values: Vec<Bytes> = (0..n.min(64))
        .map(|_| Bytes::from((0..size).map(|_| rng.u8(..)).collect::<Vec<u8>>()))
        .collect();
    let keys: Vec<Key> = (0..n)
        .map(|i| Key::parse(&format!("blob:k{i}")).unwrap())
        .collect();
    let order: Vec<usize> = (0..n).collect();
    let mut shuffled = order.clone();
    rng.shuffle(&mut shuffled);
    let theirs = diskcache_rows(n, size, dir);

    // Every set pass writes into a new, empty store (raw: a new folder); the previous one is
    // removed untimed. Passes alternate between contenders.
    let (mut raw_passes, mut fc_passes) = (Vec::new(), Vec::new());
    let mut cache = None;
    for pass in 0..crate::runs() {
        let raw_dir = dir.join(format!("raw-{pass}"));
        std::fs::create_dir_all(&raw_dir).unwrap();
        // Every set pass starts with no dirty pages (sync, untimed): otherwise the one after
        // another's 1 GB of writes pays for the writeback of those.
        rustix::fs::sync();
        let t = Instant::now();
        for &i in &order {
            let tmp = raw_dir.join(format!("{i}.tmp"));
            std::fs::write(&tmp, &values[i % values.len()]).unwrap();
            std::fs::rename(&tmp, raw_dir.join(format!("{i}.bin"))).unwrap();
        }
        raw_passes.push(t.elapsed());
        let fresh = open(pass);
        rustix::fs::sync();
        let t = Instant::now();
        for &i in &order {
            ready(
                rt,
                fresh.set(&keys[i], Value::bytes(values[i % values.len()].clone())),
            )
            .unwrap();
        }
        fc_passes.push(t.elapsed());
        if pass > 0 {
            drop(cache.take());
            let _ = std::fs::remove_dir_all(dir.join(format!("raw-{}", pass - 1)));
            let _ = std::fs::remove_dir_all(dir.join(format!("l3-{}", pass - 1)));
        }
        cache = Some(fresh);
    }
    let cache = cache.unwrap();
    let last = crate::runs() - 1;
    let raw_dir = dir.join(format!("raw-{last}"));
    let db_path = cache.config().metadata_path.clone();
    let row = |name: &str, passes: Vec<Duration>| Measure {
        name: name.to_owned(),
        ops: n,
        elapsed: crate::median_of(passes.clone()),
        lat: Vec::new(),
        given_pct: None,
        passes,
    };
    let mut sets = vec![
        row("raw files: write tmp + rename", raw_passes),
        row("freshcache Cache::set (disk)", fc_passes),
    ];
    // No writeback of the set passes' gigabytes in flight while reads are timed (the page
    // cache stays warm): it slowed every reader by up to half, by how much depended on timing.
    rustix::fs::sync();
    let mut gets = Vec::new();
    gets.push(measure("raw files: read", &shuffled, |i| {
        black_box(std::fs::read(raw_dir.join(format!("{i}.bin"))).unwrap());
    }));
    let mut misses = 0usize;
    gets.push(measure(
        "freshcache Cache::get (disk hit)",
        &shuffled,
        |i| {
            let l = ready(rt, cache.get(&keys[i])).unwrap();
            if !matches!(l, Lookup::Fresh(_)) {
                misses += 1;
            }
            let _ = black_box(l);
        },
    ));
    assert_eq!(misses, 0, "every disk lookup should be a fresh hit");
    if let Some((set, get)) = theirs {
        sets.push(set);
        gets.push(get);
    }
    let ratios = [
        ("vs raw files", "raw files"),
        ("vs diskcache", "python-diskcache"),
    ];
    let label = if size >= 1024 * 1024 {
        format!("{} MiB", size / (1024 * 1024))
    } else {
        format!("{} KiB", size / 1024)
    };
    let title =
        format!("W2 disk tier set: {n} x {label} into an empty store (no fsync of values for any)");
    print_table(&title, &sets, &ratios);
    report.table("W2", &title, &sets, json!({"op": "set", "size": size}));
    let title = format!("W2 disk tier get: {n} x {label}, shuffled, page cache warm");
    print_table(&title, &gets, &ratios);
    report.table("W2", &title, &gets, json!({"op": "get", "size": size}));
    // Closing the last connection checkpoints the WAL into the index file.
    drop(cache);
    let index_per_entry = index_bytes(&db_path) / n.max(1) as u64;
    println!(
        "  freshcache index (SQLite file and WAL, after close): {index_per_entry} B per entry"
    );
    report.row(
        "W2",
        json!({"contender": "freshcache index size", "size": size, "entries": n, "index_bytes_per_entry": index_per_entry}),
    );
    let _ = std::fs::remove_dir_all(dir);
}
