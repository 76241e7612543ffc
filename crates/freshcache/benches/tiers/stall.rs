//! W5b: `set` and `get` of 100 B values while a cleanup pass sweeps N entries of which half
//! have expired, beside the same operations with no cleanup running (same run, same data).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use freshcache::maintenance::CleanupOptions;
use freshcache::{Cache, Config, Key, ManualClock, Value};
use serde_json::json;

use crate::{Args, Report, copy_dir, ready};

/// Latencies of one kind of operation, in nanoseconds.
struct Lat(Vec<u64>);

impl Lat {
    fn pct(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let mut v = self.0.clone();
        v.sort_unstable();
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v[i] as f64 / 1000.0
    }
    fn max_us(&self) -> f64 {
        self.0.iter().copied().max().unwrap_or(0) as f64 / 1000.0
    }
    fn over(&self, limit: Duration) -> usize {
        let limit = limit.as_nanos() as u64;
        self.0.iter().filter(|&&n| n > limit).count()
    }
}

/// One phase: a writer (new keys) and a reader (populated live keys, each read once, so from
/// disk) on `cache`, each on its own thread, until `done` holds and at least `min_ops` each
/// (the reader stops early when every live key has been read).
fn load(cache: &Cache, phase: &str, live: usize, min_ops: usize, done: &AtomicBool) -> (Lat, Lat) {
    let value = Bytes::from(vec![b'w'; 100]);
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let mut lat = Vec::new();
            let mut i = 0usize;
            while !done.load(Ordering::Acquire) || lat.len() < min_ops {
                let key = Key::odds(format!("{phase}-w{i}"), 1).unwrap();
                let t = Instant::now();
                ready(&rt, cache.set(&key, Value::bytes(value.clone()))).unwrap();
                lat.push(t.elapsed().as_nanos() as u64);
                i += 1;
            }
            Lat(lat)
        });
        let reader = s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let mut lat = Vec::new();
            let mut i = 0usize;
            while (!done.load(Ordering::Acquire) || lat.len() < min_ops) && i < live {
                // Odd keys live on (TTL 50 s); each read once, so it comes from disk.
                let key = Key::odds(format!("g{}", (2 * i + 1) % (2 * live)), 1).unwrap();
                let t = Instant::now();
                let l = ready(&rt, cache.get(&key)).unwrap();
                lat.push(t.elapsed().as_nanos() as u64);
                let _ = std::hint::black_box(l);
                i += 1;
            }
            Lat(lat)
        });
        (writer.join().unwrap(), reader.join().unwrap())
    })
}

pub fn stall(a: &Args, rt: &tokio::runtime::Runtime, dir: &Path, out: &mut Report) {
    let n = a.sweep_entries;
    let clock = ManualClock::new(freshcache::Timestamp::from_secs(1_700_000_000));
    let base = dir.join("stall");
    let cache = Cache::builder(Config::default().with_cache_dir(&base))
        .clock(clock.clone())
        .open()
        .unwrap();
    let populate = Instant::now();
    let value = Bytes::from(vec![b'x'; 100]);
    for i in 0..n {
        let ttl = Duration::from_secs(if i % 2 == 0 { 10 } else { 50 });
        let key = Key::odds(format!("g{i}"), 1).unwrap();
        ready(rt, cache.set(&key, Value::bytes(value.clone()).ttl(ttl))).unwrap();
    }
    let populate = populate.elapsed();
    drop(cache);
    clock.advance(Duration::from_secs(30));
    let open = |name: &str| {
        let copy = dir.join(name);
        copy_dir(&base, &copy);
        rustix::fs::sync();
        Cache::builder(Config::default().with_cache_dir(&copy))
            .clock(clock.clone())
            .open()
            .unwrap()
    };
    let min_ops = (n / 20).clamp(200, 20_000);

    // Without a cleanup: as long as the cleanup below takes (measured first).
    let with = open("stall-cleanup");
    let done = AtomicBool::new(false);
    let (sweep, (set_c, get_c)) = std::thread::scope(|s| {
        let loader = s.spawn(|| load(&with, "c", n / 2, min_ops, &done));
        let t = Instant::now();
        let r = with
            .cleanup_at(with.now(), CleanupOptions::default(), |_| {})
            .unwrap();
        let took = t.elapsed();
        done.store(true, Ordering::Release);
        assert_eq!(r.expired.entries as usize, n.div_ceil(2));
        ((took, r), loader.join().unwrap())
    });
    drop(with);
    let without = open("stall-steady");
    let done = AtomicBool::new(false);
    let (set_s, get_s) = std::thread::scope(|s| {
        let loader = s.spawn(|| load(&without, "s", n / 2, min_ops, &done));
        std::thread::sleep(sweep.0);
        done.store(true, Ordering::Release);
        loader.join().unwrap()
    });
    drop(without);
    let _ = std::fs::remove_dir_all(dir.join("stall-cleanup"));
    let _ = std::fs::remove_dir_all(dir.join("stall-steady"));

    println!(
        "\nW5b: 100 B set / get while a cleanup pass sweeps {n} entries (half expired), and without one (same run)"
    );
    println!(
        "  {:<34} {:>8} {:>10} {:>10} {:>11} {:>9}",
        "operation", "ops", "p50 µs", "p99 µs", "max µs", "> 50 ms"
    );
    for (name, lat) in [
        ("set, no cleanup", &set_s),
        ("set, during cleanup", &set_c),
        ("get (disk hit), no cleanup", &get_s),
        ("get (disk hit), during cleanup", &get_c),
    ] {
        println!(
            "  {:<34} {:>8} {:>10.1} {:>10.1} {:>11.1} {:>9}",
            name,
            lat.0.len(),
            lat.pct(0.5),
            lat.pct(0.99),
            lat.max_us(),
            lat.over(Duration::from_millis(50))
        );
        out.row(
            "W5b",
            json!({"contender": format!("freshcache {name}"), "entries": n, "ops": lat.0.len(), "p50_us": lat.pct(0.5), "p99_us": lat.pct(0.99), "max_us": lat.max_us(), "over_50ms": lat.over(Duration::from_millis(50))}),
        );
    }
    println!(
        "  (the cleanup pass took {:.3} s, its expired sweep {:.3} s, removing {}; populating took {:.1} s)",
        sweep.0.as_secs_f64(),
        sweep.1.expired_us as f64 / 1e6,
        sweep.1.expired.entries,
        populate.as_secs_f64()
    );
    out.row(
        "W5b",
        json!({"contender": "freshcache cleanup pass under load", "entries": n, "seconds": sweep.0.as_secs_f64(), "sweep_seconds": sweep.1.expired_us as f64 / 1e6}),
    );
    let _ = std::fs::remove_dir_all(&base);
}
