//! W2: the disk tier (64 KiB values) beside raw files and python-diskcache, same sizes, same
//! run.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use freshcache::{Cache, Config, Key, Lookup, Value};
use serde_json::json;

use crate::{Args, Measure, Report, measure, print_table, python_diskcache, ready};

const SIZE: usize = 64 * 1024;

/// python-diskcache's own `Cache.set` / `Cache.get` timed in Python, as (set, get) rows; `None`
/// (after a loud message) when it cannot run.
fn diskcache_rows(n: usize, dir: &Path) -> Option<(Measure, Measure)> {
    if !python_diskcache("W2 disk tier") {
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/diskcache_get_set.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(dir.join("diskcache-w2"))
        .arg(n.to_string())
        .arg(SIZE.to_string())
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
    let row = |name: &str, secs: &str, p50: &str, p99: &str| Measure {
        name: name.to_owned(),
        ops: n,
        elapsed: Duration::from_secs_f64(v[secs].as_f64().unwrap_or(f64::NAN)),
        lat: Vec::new(),
        given_pct: Some((
            v[p50].as_f64().unwrap_or(f64::NAN),
            v[p99].as_f64().unwrap_or(f64::NAN),
        )),
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
    let yaml = format!(
        "cache:\n  cache_dir: {}\n  data_types:\n    blob:\n      prefix: \"blob:\"\n      ttl: 1h\n      max_value_size: 4MiB\n      placement: disk_only\n      compress_above: 1GiB\n",
        dir.join("l3").display()
    );
    let config = Config::from_yaml_str(&yaml, None, Vec::new()).unwrap();
    let cache = Cache::open(config).unwrap();
    let n = a.disk_keys;
    let mut rng = fastrand::Rng::with_seed(7);
    let values: Vec<Bytes> = (0..n.min(64))
        .map(|_| Bytes::from((0..SIZE).map(|_| rng.u8(..)).collect::<Vec<u8>>()))
        .collect();
    let keys: Vec<Key> = (0..n)
        .map(|i| Key::parse(&format!("blob:k{i}")).unwrap())
        .collect();
    let raw_dir = dir.join("raw");
    std::fs::create_dir_all(&raw_dir).unwrap();
    let order: Vec<usize> = (0..n).collect();
    let mut shuffled = order.clone();
    rng.shuffle(&mut shuffled);
    let theirs = diskcache_rows(n, dir);

    let mut sets = Vec::new();
    sets.push(measure("raw files: write tmp + rename", &order, |i| {
        let tmp = raw_dir.join(format!("{i}.tmp"));
        std::fs::write(&tmp, &values[i % values.len()]).unwrap();
        std::fs::rename(&tmp, raw_dir.join(format!("{i}.bin"))).unwrap();
    }));
    sets.push(measure("freshcache Cache::set (disk)", &order, |i| {
        ready(
            rt,
            cache.set(&keys[i], Value::bytes(values[i % values.len()].clone())),
        )
        .unwrap();
    }));
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
    let title = format!("W2 disk tier set: {n} x 64 KiB (no fsync of values for any)");
    print_table(&title, &sets, &ratios);
    report.table("W2", &title, &sets, json!({"op": "set", "size": SIZE}));
    let title = format!("W2 disk tier get: {n} x 64 KiB, shuffled, page cache warm");
    print_table(&title, &gets, &ratios);
    report.table("W2", &title, &gets, json!({"op": "get", "size": SIZE}));
}
