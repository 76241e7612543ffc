//! W3: Redis-tier hits through freshcache beside raw redis-crate GETs of the same keys on the
//! same server (a `redis-server` of the bench's own on a free port).

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use freshcache::{Cache, Config, Key, Value};
use serde_json::json;

use crate::{Args, Measure, Report, median_of};

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
pub fn redis_tier(a: &Args, dir: &Path, report: &mut Report) {
    let Some(redis) = freshcache_testkit::RedisServer::start_if_installed() else {
        println!(
            "\nRedis tier: redis-server not installed; skipped (./scripts/test.sh installs it)"
        );
        return;
    };
    let url = redis.url();
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
            // Small values with 64 callers run about five times faster than the rest: four
            // times the operations keep a pass near a second (a 0.2 s pass swung the ratio
            // between 0.7x and 1.0x from run to run).
            let ops = if callers > 1 && size <= 4096 {
                a.redis_ops * 4
            } else {
                a.redis_ops
            };
            // Alternating passes, so drift on a shared machine hits both contenders alike.
            let (mut raw_passes, mut fc_passes) = (Vec::new(), Vec::new());
            let (mut raw_lat, mut fc_lat) = (Vec::new(), Vec::new());
            for _ in 0..crate::runs() {
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
                raw_passes.push(elapsed);
                raw_lat = lat;
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
                fc_passes.push(elapsed);
                fc_lat = lat;
            }
            for (name, passes, lat) in [
                (
                    format!("raw redis GET, {callers} caller(s)"),
                    raw_passes,
                    raw_lat,
                ),
                (
                    format!("freshcache Redis-tier hit, {callers}"),
                    fc_passes,
                    fc_lat,
                ),
            ] {
                rows.push(Measure {
                    name,
                    ops,
                    elapsed: median_of(passes.clone()),
                    lat,
                    given_pct: None,
                    passes,
                });
            }
        }
        let title = format!(
            "W3 Redis tier: {} keys x {size} B, same server, same keys",
            keys.len()
        );
        println!("\n{title}");
        report.table("W3", &title, &rows, json!({"size": size}));
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
    // The kit's server is stopped (by its pid) when `redis` drops here.
    drop(redis);
}
