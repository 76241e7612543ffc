//! Tier benchmarks (issue 7): freshcache beside contenders measured in the same run, with
//! ratios (absolute figures drift on a shared machine; ratios within one run hold better).
//!
//! - W1 memory hits (`--only memory`): `Cache::get` on the embedded default (L1 hit) and the bare
//!   `MemoryTier`, beside a raw `RwLock<HashMap>`, a bare quick_cache and moka with a per-entry
//!   TTL; 256 B values, Zipf(0.99); 1 and 2 threads; get-only and a 90/10 get/set mix
//!   (freshcache's sets take its whole write path: disk index and blob, then memory).
//! - W6 hit ratio (`--only hitratio`): a Zipf(0.99) trace at an L1 capacity of 10 % of the keys:
//!   freshcache's `MemoryTier`, quick_cache, moka and a plain LRU.
//! - W2 disk tier (`--only disk`): 64 KiB `set` / `get` through a disk-only data type vs raw
//!   files (write to a temp file + rename; read the whole file) and python-diskcache's own
//!   `Cache.set` / `Cache.get` (`benches/diskcache_get_set.py`), page cache warm.
//! - W5 expired sweep (`--only sweep`): one cleanup pass over N entries, half expired, beside
//!   python-diskcache's `expire()` (`benches/diskcache_expire.py`).
//! - W5b maintenance stall (`--only stall`): 100 B `set` and `get` (disk hits) p50 / p99 / max
//!   while a cleanup pass sweeps N entries of which half have expired, beside the same load with
//!   no cleanup running, same run (`--sweep-entries N`).
//! - W7 bulk fill (`--only bulk`): `--sweep-entries` × 100 B through `set_many` (1 000 a call)
//!   beside single `set`s, committed one by one and with `write_behind: 2ms`.
//! - W8 lineage (`--only lineage`): a memory hit on a value derived from 3 inputs beside a
//!   plain one, and a `set` declaring 3 inputs beside a plain `set`, same run.
//! - W3 Redis tier (`--only redis`): hits through freshcache beside raw redis-crate GETs of the
//!   same keys on a `redis-server` of the bench's own, 1 and 64 concurrent callers, 256 B and
//!   64 KiB.
//!
//! python-diskcache baselines need `pip install diskcache`; without it they are skipped with a
//! loud message. `cargo bench -p freshcache --bench tiers` for the full run; `-- --smoke` for
//! tiny sizes (the test command runs that to check the bench works; it asserts nothing about
//! timing). Sizes: `--keys N` (W1/W6 keys), `--disk-keys N`, `--ops N` (W1 operations per
//! contender and configuration, W6 trace length), `--sweep-entries N`, `--redis-ops N`;
//! `--json PATH` writes every figure as JSON (a summary is printed at the end either way).

#![allow(missing_docs, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use freshcache::{Cache, Config, Key, Value};
use serde_json::json;

#[path = "tiers/bulk.rs"]
mod bulk;
#[path = "tiers/disk.rs"]
mod disk;
#[path = "tiers/lineage.rs"]
mod lineage;
#[path = "tiers/memory.rs"]
mod memory;
#[path = "tiers/redis.rs"]
mod redis_tier;
#[path = "tiers/stall.rs"]
mod stall;

/// Drives a future that is normally ready at once (the embedded tiers do not wait on I/O
/// readiness) without paying for a runtime hand-off per operation; falls back to the runtime.
fn ready<F: std::future::Future>(rt: &tokio::runtime::Runtime, f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => rt.block_on(f),
    }
}

struct Args {
    keys: usize,
    disk_keys: usize,
    ops: usize,
    sweep_entries: usize,
    redis_ops: usize,
    /// 1 MiB values for the second W2 size.
    large_keys: usize,
    only: Option<String>,
    json: Option<PathBuf>,
}

/// Timed passes per contender (`--runs`); the median pass is reported.
static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(3);

fn runs() -> usize {
    RUNS.load(std::sync::atomic::Ordering::Relaxed).max(1)
}

/// The median of `elapsed` (one per timed pass).
fn median_of(mut elapsed: Vec<Duration>) -> Duration {
    elapsed.sort_unstable();
    elapsed[elapsed.len() / 2]
}

fn args() -> Args {
    let mut a = Args {
        keys: 100_000,
        disk_keys: 20_000,
        ops: 1_000_000,
        sweep_entries: 1_000_000,
        redis_ops: 50_000,
        large_keys: 1_000,
        only: None,
        json: None,
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        let next = || argv.get(i + 1).and_then(|v| v.parse().ok());
        match argv[i].as_str() {
            "--smoke" => {
                a = Args {
                    keys: 500,
                    disk_keys: 20,
                    ops: 5_000,
                    sweep_entries: 2_000,
                    redis_ops: 500,
                    large_keys: 5,
                    only: a.only.take(),
                    json: a.json.take(),
                }
            }
            "--keys" => a.keys = next().unwrap_or(a.keys),
            "--disk-keys" => a.disk_keys = next().unwrap_or(a.disk_keys),
            "--ops" => a.ops = next().unwrap_or(a.ops),
            "--sweep-entries" => a.sweep_entries = next().unwrap_or(a.sweep_entries),
            "--redis-ops" => a.redis_ops = next().unwrap_or(a.redis_ops),
            "--large-keys" => a.large_keys = next().unwrap_or(a.large_keys),
            "--runs" => RUNS.store(
                next().unwrap_or(3).max(1),
                std::sync::atomic::Ordering::Relaxed,
            ),
            "--only" => a.only = argv.get(i + 1).cloned(),
            "--json" => a.json = argv.get(i + 1).map(PathBuf::from),
            _ => {}
        }
        i += 1;
    }
    a
}

/// This process's resident set size in bytes (0 where /proc is missing).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Zipf(s) sampler over `n` ranks by inverse CDF.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut acc = 0.0;
        for k in 1..=n {
            acc += 1.0 / (k as f64).powf(s);
            cdf.push(acc);
        }
        for c in &mut cdf {
            *c /= acc;
        }
        Self { cdf }
    }
    fn sample(&self, rng: &mut fastrand::Rng) -> usize {
        let u = rng.f64();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

struct Measure {
    name: String,
    ops: usize,
    elapsed: Duration,
    lat: Vec<u32>,
    /// Percentiles (p50, p99 in µs) measured elsewhere (a Python baseline), when `lat` is empty.
    given_pct: Option<(f64, f64)>,
    /// Every timed pass (`elapsed` is their median).
    passes: Vec<Duration>,
}

impl Measure {
    fn per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
    fn pct(&self, p: f64) -> f64 {
        if self.lat.is_empty() {
            return match (self.given_pct, p) {
                (Some((p50, _)), 0.5) => p50,
                (Some((_, p99)), 0.99) => p99,
                _ => f64::NAN,
            };
        }
        let mut v = self.lat.clone();
        v.sort_unstable();
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        f64::from(v[i]) / 1000.0
    }
}

/// Runs `op` over `seq`: a warm-up over the first tenth, [`runs`] timed passes for throughput
/// (the median counts), one pass timing each op (at most 200 000) for latency.
fn measure(name: &str, seq: &[usize], mut op: impl FnMut(usize)) -> Measure {
    for &i in seq.iter().take(seq.len() / 10) {
        op(i);
    }
    let passes: Vec<Duration> = (0..runs())
        .map(|_| {
            let start = Instant::now();
            for &i in seq {
                op(i);
            }
            start.elapsed()
        })
        .collect();
    let elapsed = median_of(passes.clone());
    let mut lat = Vec::with_capacity(seq.len().min(200_000));
    for &i in seq.iter().take(200_000) {
        let t = Instant::now();
        op(i);
        lat.push(u32::try_from(t.elapsed().as_nanos()).unwrap_or(u32::MAX));
    }
    Measure {
        name: name.to_owned(),
        ops: seq.len(),
        elapsed,
        lat,
        given_pct: None,
        passes,
    }
}

/// [`measure`] from `threads` OS threads at once, each over its own contiguous share of `seq`:
/// throughput is all ops over the wall time of the slowest thread; latencies are merged.
fn measure_mt<F: Fn(u32) + Sync>(name: &str, seq: &[u32], threads: usize, op: F) -> Measure {
    let chunk = seq.len().div_ceil(threads).max(1);
    let shares: Vec<&[u32]> = seq.chunks(chunk).collect();
    let op = &op;
    let barrier = std::sync::Barrier::new(shares.len());
    let barrier = &barrier;
    let per_thread_lat = 200_000 / shares.len();
    let (passes, lat) = std::thread::scope(|s| {
        let handles: Vec<_> = shares
            .iter()
            .map(|share| {
                s.spawn(move || {
                    for &i in share.iter().take(share.len() / 10) {
                        op(i);
                    }
                    let mut spans = Vec::new();
                    for _ in 0..runs() {
                        barrier.wait();
                        let start = Instant::now();
                        for &i in *share {
                            op(i);
                        }
                        spans.push((start, Instant::now()));
                        barrier.wait();
                    }
                    let mut lat = Vec::with_capacity(share.len().min(per_thread_lat));
                    for &i in share.iter().take(per_thread_lat) {
                        let t = Instant::now();
                        op(i);
                        lat.push(u32::try_from(t.elapsed().as_nanos()).unwrap_or(u32::MAX));
                    }
                    (spans, lat)
                })
            })
            .collect();
        // Pass r lasts from the first thread's start to the last thread's end.
        let mut bounds: Vec<Option<(Instant, Instant)>> = vec![None; runs()];
        let mut all = Vec::new();
        for h in handles {
            let (spans, lat) = h.join().unwrap();
            for (b, (start, done)) in bounds.iter_mut().zip(spans) {
                *b = Some(b.map_or((start, done), |(s, d)| (s.min(start), d.max(done))));
            }
            all.extend(lat);
        }
        let passes: Vec<Duration> = bounds
            .into_iter()
            .map(|b| b.map_or(Duration::ZERO, |(s, d)| d - s))
            .collect();
        (passes, all)
    });
    Measure {
        name: name.to_owned(),
        ops: seq.len(),
        elapsed: median_of(passes.clone()),
        lat,
        given_pct: None,
        passes,
    }
}

/// Prints `rows` with one ratio column per `(label, baseline name prefix)`.
fn print_table(title: &str, rows: &[Measure], ratios: &[(&str, &str)]) {
    let bases: Vec<f64> = ratios
        .iter()
        .map(|(_, prefix)| {
            rows.iter()
                .find(|m| m.name.starts_with(prefix))
                .map_or(f64::NAN, Measure::per_sec)
        })
        .collect();
    println!("\n{title}");
    print!(
        "  {:<40} {:>12} {:>9} {:>9}",
        "contender", "ops/s", "p50 µs", "p99 µs"
    );
    for (label, _) in ratios {
        print!(" {label:>14}");
    }
    println!();
    for m in rows {
        print!(
            "  {:<40} {:>12.0} {:>9.2} {:>9.2}",
            m.name,
            m.per_sec(),
            m.pct(0.5),
            m.pct(0.99)
        );
        for base in &bases {
            print!(" {:>13.2}x", m.per_sec() / base);
        }
        println!();
    }
}

/// Every figure of the run, for `--json`.
#[derive(Default)]
struct Report {
    rows: Vec<serde_json::Value>,
}

impl Report {
    fn row(&mut self, workload: &str, mut fields: serde_json::Value) {
        fields["workload"] = json!(workload);
        self.rows.push(fields);
    }

    /// One row per contender of a throughput table, with `extra` fields merged in.
    fn table(&mut self, workload: &str, title: &str, rows: &[Measure], extra: serde_json::Value) {
        for m in rows {
            let mut v = json!({
                "table": title,
                "contender": m.name,
                "ops": m.ops,
                "seconds": m.elapsed.as_secs_f64(),
                "ops_per_sec": m.per_sec(),
                "p50_us": m.pct(0.5),
                "p99_us": m.pct(0.99),
                "passes_ops_per_sec": m.passes.iter().map(|d| m.ops as f64 / d.as_secs_f64()).collect::<Vec<_>>(),
            });
            if let (Some(v), Some(e)) = (v.as_object_mut(), extra.as_object()) {
                v.extend(e.clone());
            }
            self.row(workload, v);
        }
    }
}

/// True when `python3 -c "import diskcache"` works; otherwise says loudly that `what` runs
/// without its python-diskcache baseline.
fn python_diskcache(what: &str) -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import diskcache"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        println!(
            "\n!!! {what}: python-diskcache NOT available (`python3 -c \"import diskcache\"` failed; pip install diskcache): its baseline is SKIPPED in this run !!!"
        );
    }
    ok
}

/// Copies the files under `from` into `to` (a closed cache directory).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// W5: one cleanup pass over N entries of which half have expired, beside python-diskcache's
/// `expire()` on the same shape of data (run as a child process when diskcache is installed).
fn expired_sweep(a: &Args, rt: &tokio::runtime::Runtime, dir: &Path, out: &mut Report) {
    let n = a.sweep_entries;
    let clock = freshcache::ManualClock::new(freshcache::Timestamp::from_secs(1_700_000_000));
    let config = Config::default().with_cache_dir(dir.join("sweep"));
    let cache = Cache::builder(config).clock(clock.clone()).open().unwrap();
    let populate = Instant::now();
    let value = Bytes::from(vec![b'x'; 100]);
    for i in 0..n {
        let ttl = if i % 2 == 0 {
            Duration::from_secs(10)
        } else {
            Duration::from_secs(50)
        };
        let key = Key::odds(format!("g{i}"), 1).unwrap();
        ready(rt, cache.set(&key, Value::bytes(value.clone()).ttl(ttl))).unwrap();
    }
    let populate = populate.elapsed();
    drop(cache);
    clock.advance(Duration::from_secs(30));
    // Populated once; every pass sweeps its own copy of the closed cache directory.
    let mut passes = Vec::new();
    let mut report = None;
    for pass in 0..runs() {
        let copy = dir.join(format!("sweep-run{pass}"));
        copy_dir(&dir.join("sweep"), &copy);
        let config = Config::default().with_cache_dir(copy.clone());
        let cache = Cache::builder(config).clock(clock.clone()).open().unwrap();
        let opts = freshcache::maintenance::CleanupOptions::default();
        let r = cache.cleanup_at(cache.now(), opts, |_| {}).unwrap();
        assert_eq!(r.expired.entries as usize, n.div_ceil(2));
        passes.push(Duration::from_micros(r.expired_us.max(1)));
        report = Some(r);
        drop(cache);
        std::fs::remove_dir_all(&copy).unwrap();
    }
    let report = report.unwrap();
    let ours = median_of(passes.clone());
    println!(
        "\nExpired sweep (W5): {n} entries x 100 B, half expired, one pass (median of {})",
        runs()
    );
    println!(
        "  {:<34} {:>12} {:>14} {:>12}",
        "contender", "seconds", "removed/s", "vs diskcache"
    );
    let per_sec = |removed: u64, d: Duration| removed as f64 / d.as_secs_f64();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/diskcache_expire.py");
    let have = python_diskcache("W5 expired sweep");
    let theirs = have
        .then(|| {
            std::process::Command::new("python3")
                .arg(&script)
                .arg(dir.join("diskcache"))
                .arg(n.to_string())
                .arg(runs().to_string())
                .output()
                .ok()
        })
        .flatten()
        .filter(|o| o.status.success())
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok());
    let base = theirs.as_ref().and_then(|v| {
        Some((
            v["removed"].as_u64()?,
            Duration::from_secs_f64(v["expire_s"].as_f64()?),
        ))
    });
    let ours_rate = per_sec(report.expired.entries, ours);
    let theirs_rate = base.map(|(removed, d)| per_sec(removed, d));
    out.row(
        "W5",
        json!({"contender": "freshcache cleanup (expired sweep)", "entries": n, "seconds": ours.as_secs_f64(), "removed_per_sec": ours_rate, "passes_s": passes.iter().map(Duration::as_secs_f64).collect::<Vec<_>>()}),
    );
    if let (Some((_, d)), Some(rate)) = (base, theirs_rate) {
        out.row(
            "W5",
            json!({"contender": "python-diskcache expire()", "entries": n, "seconds": d.as_secs_f64(), "removed_per_sec": rate, "passes_s": theirs.as_ref().map(|v| v["expire_runs_s"].clone())}),
        );
    }
    match base {
        Some((removed, d)) => {
            let theirs_rate = per_sec(removed, d);
            println!(
                "  {:<34} {:>12.3} {:>14.0} {:>11.2}x",
                "python-diskcache expire()",
                d.as_secs_f64(),
                theirs_rate,
                1.0
            );
            println!(
                "  {:<34} {:>12.3} {:>14.0} {:>11.2}x",
                "freshcache cleanup (expired sweep)",
                ours.as_secs_f64(),
                ours_rate,
                ours_rate / theirs_rate
            );
        }
        None => {
            println!(
                "  python-diskcache unavailable (pip install diskcache): no baseline in this run"
            );
            println!(
                "  {:<34} {:>12.3} {:>14.0} {:>12}",
                "freshcache cleanup (expired sweep)",
                ours.as_secs_f64(),
                ours_rate,
                "-"
            );
        }
    }
    println!(
        "  (the whole cleanup pass, with size check and repair scan, took {:.3} s; populating took {:.1} s)",
        report.duration_ms as f64 / 1000.0,
        populate.as_secs_f64()
    );
}

fn main() {
    let a = args();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    println!(
        "freshcache tier benchmark (build: {})",
        if cfg!(debug_assertions) {
            "debug: figures are not representative"
        } else {
            "release"
        }
    );
    let run = |name: &str| a.only.as_deref().is_none_or(|o| o == name);
    let mut report = Report::default();
    if run("memory") {
        memory::memory_hits(&a, &rt, dir.path(), &mut report);
    }
    if run("hitratio") {
        memory::hit_ratio(&a, &mut report);
    }
    if run("disk") {
        disk::disk_tier(&a, &rt, dir.path(), &mut report);
    }
    if run("sweep") {
        expired_sweep(&a, &rt, dir.path(), &mut report);
    }
    if run("stall") {
        stall::stall(&a, &rt, dir.path(), &mut report);
    }
    if run("redis") {
        redis_tier::redis_tier(&a, dir.path(), &mut report);
    }
    if run("bulk") {
        bulk::bulk_fill(&a, &rt, dir.path(), &mut report);
    }
    if run("lineage") {
        lineage::lineage(&a, &rt, dir.path(), &mut report);
    }
    let summary = json!({
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "keys": a.keys,
        "disk_keys": a.disk_keys,
        "ops": a.ops,
        "sweep_entries": a.sweep_entries,
        "redis_ops": a.redis_ops,
        "results": &report.rows,
    });
    println!("\nJSON summary (one result a line; `--json PATH` writes the whole document):");
    for r in &report.rows {
        println!("  {r}");
    }
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&summary).unwrap()).unwrap();
        println!("(written to {})", path.display());
    }
}
