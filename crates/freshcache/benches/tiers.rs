//! Tier benchmarks: freshcache beside a raw baseline measured in the same run.
//!
//! - L1 hits: `Cache::get` on the embedded default vs a raw `RwLock<HashMap>` and a bare
//!   quick_cache map (256 B values, Zipf(0.99) key choice, one thread).
//! - Disk tier: 64 KiB `set` / `get` through a disk-only data type vs raw files
//!   (write to a temp file + rename; read the whole file), page cache warm.
//!
//! `cargo bench -p freshcache --bench tiers` for the full run; `-- --smoke` for tiny sizes (the
//! test command runs that to check the bench works; it asserts nothing about timing).
//! - Expired sweep: one cleanup pass over N entries, half expired, beside python-diskcache's
//!   `expire()` (when `pip install diskcache` is done).
//! - Redis tier: hits through freshcache beside raw redis-crate GETs of the same keys on a
//!   `redis-server` of the bench's own, 1 and 64 concurrent callers, 256 B and 64 KiB.
//!
//! Sizes: `--keys N` (L1 keys), `--disk-keys N`, `--ops N` (L1 lookups per contender),
//! `--sweep-entries N`, `--redis-ops N`; `--only memory|disk|sweep|redis` runs one section.

#![allow(missing_docs, clippy::unwrap_used)]

use std::collections::HashMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use freshcache::{Cache, Config, Key, Lookup, Value};

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
    only: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        keys: 100_000,
        disk_keys: 2_000,
        ops: 2_000_000,
        sweep_entries: 1_000_000,
        redis_ops: 100_000,
        only: None,
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
                    only: None,
                }
            }
            "--keys" => a.keys = next().unwrap_or(a.keys),
            "--disk-keys" => a.disk_keys = next().unwrap_or(a.disk_keys),
            "--ops" => a.ops = next().unwrap_or(a.ops),
            "--sweep-entries" => a.sweep_entries = next().unwrap_or(a.sweep_entries),
            "--redis-ops" => a.redis_ops = next().unwrap_or(a.redis_ops),
            "--only" => a.only = argv.get(i + 1).cloned(),
            _ => {}
        }
        i += 1;
    }
    a
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
}

impl Measure {
    fn per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
    fn pct(&self, p: f64) -> f64 {
        if self.lat.is_empty() {
            return f64::NAN;
        }
        let mut v = self.lat.clone();
        v.sort_unstable();
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        f64::from(v[i]) / 1000.0
    }
}

/// Runs `op` over `seq`: one pass untimed per op for throughput, one sampled pass for latency.
fn measure(name: &str, seq: &[usize], mut op: impl FnMut(usize)) -> Measure {
    for &i in seq.iter().take(seq.len() / 10) {
        op(i);
    }
    let start = Instant::now();
    for &i in seq {
        op(i);
    }
    let elapsed = start.elapsed();
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
    }
}

fn print_table(title: &str, rows: &[Measure], baseline: &str) {
    let base = rows
        .iter()
        .find(|m| m.name == baseline)
        .map_or(f64::NAN, Measure::per_sec);
    println!("\n{title}");
    println!(
        "  {:<34} {:>13} {:>10} {:>10} {:>12}",
        "contender", "ops/s", "p50 µs", "p99 µs", "vs baseline"
    );
    for m in rows {
        println!(
            "  {:<34} {:>13.0} {:>10.2} {:>10.2} {:>11.2}x",
            m.name,
            m.per_sec(),
            m.pct(0.5),
            m.pct(0.99),
            m.per_sec() / base
        );
    }
}

fn memory_hits(a: &Args, rt: &tokio::runtime::Runtime, dir: &Path) {
    let config = Config::default().with_cache_dir(dir.join("l1"));
    let cache = Cache::open(config).unwrap();
    let keys: Vec<Key> = (0..a.keys)
        .map(|i| Key::odds(format!("g{i}"), 1_700_000_000).unwrap())
        .collect();
    let value = Bytes::from(vec![7u8; 256]);
    rt.block_on(async {
        for k in &keys {
            cache.set(k, Value::bytes(value.clone())).await.unwrap();
        }
    });
    let zipf = Zipf::new(a.keys, 0.99);
    let mut rng = fastrand::Rng::with_seed(42);
    let seq: Vec<usize> = (0..a.ops).map(|_| zipf.sample(&mut rng)).collect();

    let raw: RwLock<HashMap<String, Bytes>> = RwLock::new(
        keys.iter()
            .map(|k| (k.to_string(), value.clone()))
            .collect(),
    );
    let qc: quick_cache::sync::Cache<String, Bytes> = quick_cache::sync::Cache::new(a.keys * 2);
    for k in &keys {
        qc.insert(k.to_string(), value.clone());
    }

    let mut rows = Vec::new();
    rows.push(measure("raw RwLock<HashMap> get", &seq, |i| {
        black_box(raw.read().unwrap().get(keys[i].as_str()).cloned());
    }));
    rows.push(measure("bare quick_cache get", &seq, |i| {
        black_box(qc.get(keys[i].as_str()));
    }));
    let mut misses = 0usize;
    rows.push(measure("freshcache Cache::get (L1 hit)", &seq, |i| {
        let l = ready(rt, cache.get(&keys[i])).unwrap();
        if !matches!(l, Lookup::Fresh(_)) {
            misses += 1;
        }
        let _ = black_box(l);
    }));
    assert_eq!(misses, 0, "every L1 lookup should be a fresh hit");
    print_table(
        &format!(
            "L1 hits: {} keys x 256 B, Zipf(0.99), 1 thread, {} lookups",
            a.keys, a.ops
        ),
        &rows,
        "raw RwLock<HashMap> get",
    );
}

fn disk_tier(a: &Args, rt: &tokio::runtime::Runtime, dir: &Path) {
    let yaml = format!(
        "cache:\n  cache_dir: {}\n  data_types:\n    blob:\n      prefix: \"blob:\"\n      ttl: 1h\n      max_value_size: 4MiB\n      placement: disk_only\n      compress_above: 1GiB\n",
        dir.join("l3").display()
    );
    let config = Config::from_yaml_str(&yaml, None, Vec::new()).unwrap();
    let cache = Cache::open(config).unwrap();
    let n = a.disk_keys;
    let mut rng = fastrand::Rng::with_seed(7);
    let values: Vec<Bytes> = (0..n.min(64))
        .map(|_| Bytes::from((0..64 * 1024).map(|_| rng.u8(..)).collect::<Vec<u8>>()))
        .collect();
    let keys: Vec<Key> = (0..n)
        .map(|i| Key::parse(&format!("blob:k{i}")).unwrap())
        .collect();
    let raw_dir = dir.join("raw");
    std::fs::create_dir_all(&raw_dir).unwrap();
    let order: Vec<usize> = (0..n).collect();
    let mut shuffled = order.clone();
    rng.shuffle(&mut shuffled);

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
    print_table(
        &format!("Disk tier set: {n} x 64 KiB (no fsync for either)"),
        &sets,
        "raw files: write tmp + rename",
    );

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
    print_table(
        &format!("Disk tier get: {n} x 64 KiB, page cache warm"),
        &gets,
        "raw files: read",
    );
}

/// W5: one cleanup pass over N entries of which half have expired, beside python-diskcache's
/// `expire()` on the same shape of data (run as a child process when diskcache is installed).
fn expired_sweep(a: &Args, rt: &tokio::runtime::Runtime, dir: &Path) {
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
    clock.advance(Duration::from_secs(30));
    let opts = freshcache::maintenance::CleanupOptions::default();
    let report = cache.cleanup_at(cache.now(), opts, |_| {}).unwrap();
    let ours = Duration::from_micros(report.expired_us.max(1));
    assert_eq!(report.expired.entries as usize, n.div_ceil(2));
    println!("\nExpired sweep (W5): {n} entries x 100 B, half expired, one pass");
    println!(
        "  {:<34} {:>12} {:>14} {:>12}",
        "contender", "seconds", "removed/s", "vs diskcache"
    );
    let per_sec = |removed: u64, d: Duration| removed as f64 / d.as_secs_f64();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/diskcache_expire.py");
    let theirs = std::process::Command::new("python3")
        .arg(&script)
        .arg(dir.join("diskcache"))
        .arg(n.to_string())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok());
    let base = theirs.as_ref().and_then(|v| {
        Some((
            v["removed"].as_u64()?,
            Duration::from_secs_f64(v["expire_s"].as_f64()?),
        ))
    });
    let ours_rate = per_sec(report.expired.entries, ours);
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

/// Runs `op(i)` for `i` in `0..ops` from `callers` concurrent tasks; wall time and latencies.
async fn concurrent<F, Fut>(callers: usize, ops: usize, op: F) -> (Duration, Vec<u32>)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..callers {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(ops / callers + 1);
            for i in (c..ops).step_by(callers) {
                let t = Instant::now();
                op(i).await;
                lat.push(u32::try_from(t.elapsed().as_nanos()).unwrap_or(u32::MAX));
            }
            lat
        }));
    }
    let mut all = Vec::with_capacity(ops);
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    (started.elapsed(), all)
}

/// W3 / issue 3: Redis-tier hits through freshcache beside raw redis-crate GETs of the same
/// keys on the same server (a `redis-server` of the bench's own on a free port).
fn redis_tier(a: &Args, dir: &Path) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        println!(
            "\nRedis tier: redis-server not installed; skipped (./scripts/test.sh installs it)"
        );
        return;
    };
    let url = format!("redis://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for size in [256usize, 64 * 1024] {
        let yaml = format!(
            "cache:\n  redis_url: \"{url}\"\n  redis:\n    timeout: 1s\n    max_value_size: 1MiB\n  data_types:\n    hot:\n      prefix: \"hot:\"\n      ttl: 1h\n      max_value_size: 1MiB\n      placement: redis_and_disk\n      compress_above: 1GiB\n"
        );
        let config = Config::from_yaml_str(&yaml, None, Vec::new())
            .unwrap()
            .with_cache_dir(dir.join(format!("redis-{size}")));
        let cache = rt.block_on(Cache::builder(config).connect()).unwrap();
        let keys: Vec<Key> = (0..1000)
            .map(|i| Key::parse(&format!("hot:k{i}")).unwrap())
            .collect();
        let value = Bytes::from(vec![9u8; size]);
        rt.block_on(async {
            for k in &keys {
                cache.set(k, Value::bytes(value.clone())).await.unwrap();
            }
        });
        let raw = rt
            .block_on(async {
                redis::Client::open(url.as_str())
                    .unwrap()
                    .get_multiplexed_async_connection()
                    .await
            })
            .unwrap();
        let keys = std::sync::Arc::new(keys);
        let mut rows = Vec::new();
        for callers in [1usize, 64] {
            let ops = a.redis_ops;
            let (raw_keys, raw_conn) = (keys.clone(), raw.clone());
            let (elapsed, lat) = rt.block_on(concurrent(callers, ops, move |i| {
                let mut c = raw_conn.clone();
                let name = format!("freshcache:v/{}", raw_keys[i % raw_keys.len()]);
                async move {
                    let v: Option<Vec<u8>> = redis::cmd("GET")
                        .arg(name)
                        .query_async(&mut c)
                        .await
                        .unwrap();
                    assert!(v.is_some());
                }
            }));
            rows.push(Measure {
                name: format!("raw redis GET, {callers} caller(s)"),
                ops,
                elapsed,
                lat,
            });
            let (fc_keys, fc) = (keys.clone(), cache.clone());
            let (elapsed, lat) = rt.block_on(concurrent(callers, ops, move |i| {
                let (fc, k) = (fc.clone(), fc_keys[i % fc_keys.len()].clone());
                async move {
                    let hit = fc.get(&k).await.unwrap().fresh().unwrap();
                    assert_eq!(
                        hit.source,
                        freshcache::Source::Tier(freshcache::TierKind::Redis)
                    );
                }
            }));
            rows.push(Measure {
                name: format!("freshcache Redis-tier hit, {callers}"),
                ops,
                elapsed,
                lat,
            });
        }
        println!(
            "\nRedis tier: {} keys x {} B, same server, same keys",
            keys.len(),
            size
        );
        println!(
            "  {:<34} {:>13} {:>10} {:>10} {:>12}",
            "contender", "ops/s", "p50 µs", "p99 µs", "vs raw"
        );
        for pair in rows.chunks(2) {
            let base = pair[0].per_sec();
            for m in pair {
                println!(
                    "  {:<34} {:>13.0} {:>10.1} {:>10.1} {:>11.2}x",
                    m.name,
                    m.per_sec(),
                    m.pct(0.5),
                    m.pct(0.99),
                    m.per_sec() / base
                );
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
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
    if run("memory") {
        memory_hits(&a, &rt, dir.path());
    }
    if run("disk") {
        disk_tier(&a, &rt, dir.path());
    }
    if run("sweep") {
        expired_sweep(&a, &rt, dir.path());
    }
    if run("redis") {
        redis_tier(&a, dir.path());
    }
}
