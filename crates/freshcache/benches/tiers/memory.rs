//! W1 (memory hits, 1 and 2 threads, get-only and 90/10 get/set) and W6 (hit ratio at an L1
//! capacity of 10 % of the keys).

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use freshcache::internals::MemoryTier;
use freshcache::{
    Cache, Clock, Codec, Config, Entry, Key, Lookup, Meta, SystemClock, Timestamp, Value,
};
use serde_json::json;

use crate::{Args, Report, Zipf, measure_mt, print_table, ready};

/// The bit of an operation code that makes it a set (the rest is the key index).
const SET: u32 = 1 << 31;

/// moka with a per-entry lifetime decided by an [`moka::Expiry`] (every entry 1 h here), the
/// shape freshcache needs: each entry carries its own expiry.
struct PerEntryTtl;

impl moka::Expiry<String, Bytes> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &String,
        _value: &Bytes,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs(3600))
    }
}

fn moka_cache(capacity: u64) -> moka::sync::Cache<String, Bytes> {
    moka::sync::Cache::builder()
        .max_capacity(capacity)
        .expire_after(PerEntryTtl)
        .build()
}

/// An entry for the bare memory tier, fresh from `Timestamp::from_secs(1)` for an hour.
fn entry(value: &Bytes) -> Arc<Entry> {
    Arc::new(Entry {
        meta: Meta {
            data_type: Arc::from("odds_data"),
            stored_at: Timestamp::from_secs(1),
            expires_at: Timestamp::from_secs(3601),
            as_of: None,
            codec: Codec::Bytes,
            etag: None,
            last_modified: None,
            checksum: freshcache::entry::checksum(value),
            lineage: None,
            lineage_check: Default::default(),
        },
        value: value.clone(),
    })
}

/// A value of its own: every key holds a separate allocation, as in any real cache. (Clones of
/// one shared value would keep a single reference count hot in cache for every contender and
/// flatter all of them: a hit's cost is mostly the cache misses on its own entry.)
fn own(value: &Bytes) -> Bytes {
    Bytes::copy_from_slice(value)
}

/// W1: L1 hits. Every contender holds all keys (no evictions); freshcache's sets go through
/// its whole write path (disk index + blob, then memory), the others' stay in memory.
pub fn memory_hits(a: &Args, rt: &tokio::runtime::Runtime, dir: &Path, report: &mut Report) {
    // The embedded default with a TTL long enough for the whole run (odds_data is 60 s).
    let yaml = format!(
        "cache:\n  cache_dir: {}\n  ttl: {{odds_data: 1h}}\n",
        dir.join("l1").display()
    );
    let keys: Vec<Key> = (0..a.keys)
        .map(|i| Key::odds(format!("g{i}"), 1_700_000_000).unwrap())
        .collect();
    let names: Vec<String> = keys.iter().map(ToString::to_string).collect();
    // Lookups go through keys of their own, as the other contenders look up with `names` and
    // hold a separate copy of each name: a caller's key is not the one the entry was stored
    // under, so comparing with the stored key reads a second allocation for every contender.
    let lookup_keys: Vec<Key> = names.iter().map(|n| n.parse().unwrap()).collect();
    let value = Bytes::from(vec![7u8; 256]);
    let rss_before = crate::rss_bytes();
    let cache = Cache::open(Config::from_yaml_str(&yaml, None, Vec::new()).unwrap()).unwrap();
    rt.block_on(async {
        for k in &keys {
            cache.set(k, Value::bytes(own(&value))).await.unwrap();
        }
    });
    let rss_per_entry = crate::rss_bytes().saturating_sub(rss_before) / a.keys.max(1) as u64;
    let zipf = Zipf::new(a.keys, 0.99);
    let mut rng = fastrand::Rng::with_seed(42);
    let gets: Vec<u32> = (0..a.ops)
        .map(|_| u32::try_from(zipf.sample(&mut rng)).unwrap())
        .collect();
    let mixed: Vec<u32> = gets
        .iter()
        .map(|&i| if rng.u8(..10) == 0 { i | SET } else { i })
        .collect();

    let raw: RwLock<HashMap<String, Bytes>> =
        RwLock::new(names.iter().map(|k| (k.clone(), own(&value))).collect());
    let qc: quick_cache::sync::Cache<String, Bytes> = quick_cache::sync::Cache::new(a.keys * 2);
    let mk = moka_cache(a.keys as u64 * 2);
    let tier = MemoryTier::new(u64::MAX / 2);
    for k in &names {
        qc.insert(k.clone(), own(&value));
        mk.insert(k.clone(), own(&value));
        tier.insert(Arc::from(k.as_str()), entry(&own(&value)));
    }
    mk.run_pending_tasks();
    let now = Timestamp::from_secs(2);
    // Made after every other contender, so their memory is laid out as before these rows
    // existed. The same cache told it is alone on its directory: no change follower. The two `Cache::get`
    // rows give the cost of following other processes' changes on a memory hit.
    let alone_yaml = format!(
        "cache:\n  cache_dir: {}\n  ttl: {{odds_data: 1h}}\n",
        dir.join("l1-alone").display()
    );
    let alone = Cache::builder(Config::from_yaml_str(&alone_yaml, None, Vec::new()).unwrap())
        .sharing(freshcache::Sharing::Exclusive)
        .open()
        .unwrap();
    rt.block_on(async {
        alone
            .set_many(keys.iter().map(|k| (k.clone(), Value::bytes(own(&value)))))
            .await
            .unwrap();
    });
    // Odds kept in memory only: sets never touch disk (the placement for hot, short-lived
    // signals).
    let hot_yaml = format!(
        "cache:\n  cache_dir: {}\n  ttl: {{odds_data: 1h}}\n  data_types:\n    odds_data:\n      \
         placement: memory_only\n",
        dir.join("l1-hot").display()
    );
    let hot = Cache::open(Config::from_yaml_str(&hot_yaml, None, Vec::new()).unwrap()).unwrap();
    rt.block_on(async {
        hot.set_many(keys.iter().map(|k| (k.clone(), Value::bytes(own(&value)))))
            .await
            .unwrap();
    });

    // Every get-only row before any 90/10 row: a 90/10 pass replaces the hot entries, and
    // freshcache's sets allocate between them (envelope, index row) where the others' do
    // not, which spreads its L1 entries over more cache lines for whatever runs next (2-thread
    // `Cache::get` fell from about 0.6x to 0.43x of quick_cache when it ran after one).
    for (mix, seq) in [("get-only", &gets), ("90/10 get/set", &mixed)] {
        for threads in [1usize, 2] {
            let mut rows = Vec::new();
            rows.push(measure_mt("raw RwLock<HashMap>", seq, threads, |op| {
                let k = &names[(op & !SET) as usize];
                if op & SET == 0 {
                    black_box(raw.read().unwrap().get(k.as_str()).cloned());
                } else {
                    raw.write().unwrap().insert(k.clone(), own(&value));
                }
            }));
            rows.push(measure_mt("bare quick_cache", seq, threads, |op| {
                let k = &names[(op & !SET) as usize];
                if op & SET == 0 {
                    black_box(qc.get(k.as_str()));
                } else {
                    qc.insert(k.clone(), own(&value));
                }
            }));
            rows.push(measure_mt("moka (per-entry TTL)", seq, threads, |op| {
                let k = &names[(op & !SET) as usize];
                if op & SET == 0 {
                    black_box(mk.get(k.as_str()));
                } else {
                    mk.insert(k.clone(), own(&value));
                }
            }));
            rows.push(tier_row(
                "freshcache MemoryTier alone",
                seq,
                threads,
                (&tier, &names, &value),
                || now,
            ));
            // The same lookup judged against a fresh system clock reading, as every TTL check
            // must be: the reading waits for the loads before it (the vDSO orders its TSC read),
            // so successive lookups no longer overlap their cache misses. This is the floor for
            // `Cache::get`; the rows without a clock read are not.
            rows.push(tier_row(
                "freshcache MemoryTier + clock read",
                seq,
                threads,
                (&tier, &names, &value),
                || SystemClock.now(),
            ));
            let misses = std::sync::atomic::AtomicUsize::new(0);
            let name = if mix == "get-only" {
                "freshcache Cache::get (L1 hit)"
            } else {
                "freshcache Cache get/set (set: disk+L1)"
            };
            rows.push(measure_mt(name, seq, threads, |op| {
                let i = (op & !SET) as usize;
                if op & SET == 0 {
                    let l = ready(rt, cache.get(&lookup_keys[i])).unwrap();
                    if !matches!(l, Lookup::Fresh(_)) {
                        misses.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    let _ = black_box(l);
                } else {
                    ready(rt, cache.set(&keys[i], Value::bytes(own(&value)))).unwrap();
                }
            }));
            if mix != "get-only" {
                rows.push(measure_mt(
                    "freshcache Cache get/set, odds memory_only",
                    seq,
                    threads,
                    |op| {
                        let i = (op & !SET) as usize;
                        if op & SET == 0 {
                            let l = ready(rt, hot.get(&lookup_keys[i])).unwrap();
                            if !matches!(l, Lookup::Fresh(_)) {
                                misses.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            let _ = black_box(l);
                        } else {
                            ready(rt, hot.set(&keys[i], Value::bytes(own(&value)))).unwrap();
                        }
                    },
                ));
            }
            if mix == "get-only" {
                rows.push(measure_mt(
                    "freshcache Cache::get, no change follower",
                    seq,
                    threads,
                    |op| {
                        let l = ready(rt, alone.get(&lookup_keys[(op & !SET) as usize])).unwrap();
                        if !matches!(l, Lookup::Fresh(_)) {
                            misses.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        let _ = black_box(l);
                    },
                ));
            }
            assert_eq!(
                misses.into_inner(),
                0,
                "every L1 lookup should be a fresh hit"
            );
            let title = format!(
                "W1 memory hits: {} keys x 256 B, Zipf(0.99), {threads} thread(s), {mix}, {} ops",
                a.keys, a.ops
            );
            print_table(
                &title,
                &rows,
                &[
                    ("vs quick_cache", "bare quick_cache"),
                    ("vs moka", "moka (per-entry TTL)"),
                ],
            );
            report.table("W1", &title, &rows, json!({"threads": threads, "mix": mix}));
        }
    }
    let (entries, bytes) = (tier.len() as u64, tier.bytes());
    let charged = bytes / entries.max(1);
    println!(
        "  freshcache memory per entry, 256 B values: {charged} B charged to the L1 budget (key + value + overhead); {rss_per_entry} B of process RSS growth while storing {} entries (L1, keys, SQLite page cache)",
        a.keys
    );
    report.row(
        "W1",
        json!({"contender": "freshcache memory per entry", "value_size": 256, "l1_charged_bytes": charged, "rss_growth_bytes": rss_per_entry}),
    );
}

/// The bare memory tier's row: lookups judged at the instant `now` gives, sets of a new entry.
fn tier_row(
    name: &str,
    seq: &[u32],
    threads: usize,
    (tier, names, value): (&MemoryTier, &[String], &Bytes),
    now: impl Fn() -> Timestamp + Sync,
) -> crate::Measure {
    measure_mt(name, seq, threads, |op| {
        let k = &names[(op & !SET) as usize];
        if op & SET == 0 {
            black_box(tier.get(k.as_str()).filter(|e| e.meta.is_fresh_at(now())));
        } else {
            tier.insert(Arc::from(k.as_str()), entry(&own(value)));
        }
    })
}

/// A plain LRU of key indices: a map to the last-use stamp and an ordered map back.
struct Lru {
    capacity: usize,
    stamp: u64,
    last: HashMap<u32, u64>,
    order: BTreeMap<u64, u32>,
}

impl Lru {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            stamp: 0,
            last: HashMap::with_capacity(capacity + 1),
            order: BTreeMap::new(),
        }
    }

    /// True on a hit; a miss inserts the key, evicting the least recently used one.
    fn access(&mut self, key: u32) -> bool {
        self.stamp += 1;
        let hit = if let Some(old) = self.last.insert(key, self.stamp) {
            self.order.remove(&old);
            true
        } else {
            false
        };
        self.order.insert(self.stamp, key);
        if self.last.len() > self.capacity {
            let (_, victim) = self.order.pop_first().unwrap();
            self.last.remove(&victim);
        }
        hit
    }
}

/// W6: hit ratio of a Zipf(0.99) trace at an L1 capacity of 10 % of the keys, cache-aside (a
/// miss inserts). The first half of the trace warms the caches; the second half is counted.
pub fn hit_ratio(a: &Args, report: &mut Report) {
    let n = a.keys;
    let capacity = (n / 10).max(1);
    let zipf = Zipf::new(n, 0.99);
    let mut rng = fastrand::Rng::with_seed(99);
    let trace: Vec<u32> = (0..a.ops)
        .map(|_| u32::try_from(zipf.sample(&mut rng)).unwrap())
        .collect();
    // Fixed-length names so that every entry weighs the same in the byte-budgeted tier.
    let names: Vec<String> = (0..n).map(|i| format!("k{i:09}")).collect();
    let value = Bytes::from(vec![1u8; 256]);
    let fresh_entry = entry(&value);
    let now = Timestamp::from_secs(2);

    let run = |access: &mut dyn FnMut(u32) -> bool| -> f64 {
        let warm = trace.len() / 2;
        for &k in &trace[..warm] {
            access(k);
        }
        let counted = &trace[warm..];
        let hits = counted.iter().filter(|&&k| access(k)).count();
        hits as f64 / counted.len().max(1) as f64
    };

    let mut results: Vec<(&str, f64)> = Vec::new();
    // freshcache's L1 charges key + value + a fixed overhead per entry (see MemoryTier docs):
    // its byte budget is set to exactly `capacity` such entries.
    let weight = {
        let probe = MemoryTier::new(1 << 30);
        probe.insert(Arc::from(names[0].as_str()), fresh_entry.clone());
        probe.bytes()
    };
    let tier = MemoryTier::new(weight * capacity as u64);
    results.push((
        "freshcache MemoryTier (L1)",
        run(&mut |k| {
            let name = names[k as usize].as_str();
            if tier.get(name).is_some_and(|e| e.meta.is_fresh_at(now)) {
                true
            } else {
                tier.insert(Arc::from(name), fresh_entry.clone());
                false
            }
        }),
    ));
    let qc: quick_cache::sync::Cache<String, Bytes> = quick_cache::sync::Cache::new(capacity);
    results.push((
        "bare quick_cache",
        run(&mut |k| {
            let name = &names[k as usize];
            if qc.get(name.as_str()).is_some() {
                true
            } else {
                qc.insert(name.clone(), value.clone());
                false
            }
        }),
    ));
    let mk = moka_cache(capacity as u64);
    results.push((
        "moka (per-entry TTL)",
        run(&mut |k| {
            let name = &names[k as usize];
            if mk.get(name.as_str()).is_some() {
                true
            } else {
                mk.insert(name.clone(), value.clone());
                false
            }
        }),
    ));
    let mut lru = Lru::new(capacity);
    results.push(("plain LRU", run(&mut |k| lru.access(k))));

    let best = results.iter().map(|r| r.1).fold(0.0, f64::max);
    println!(
        "\nW6 hit ratio: Zipf(0.99) over {n} keys, capacity {capacity} entries (10 %), {} accesses (second half counted)",
        trace.len()
    );
    println!(
        "  {:<34} {:>10} {:>16}",
        "contender", "hit ratio", "points vs best"
    );
    for (name, r) in &results {
        println!(
            "  {:<34} {:>9.2}% {:>16.2}",
            name,
            r * 100.0,
            (r - best) * 100.0
        );
        report.row(
            "W6",
            json!({"contender": name, "keys": n, "capacity": capacity, "accesses": trace.len(), "hit_ratio": r}),
        );
    }
}
