//! `serve` under a loopback load generator: mixed GET / PUT / DELETE / invalidate traffic on
//! values that expire within a second or two, checked against a model of what each key must
//! hold. Invariants: every response has an expected status, no read returns a value past its
//! expiry, a deleted or invalidated key is not served again, a fresh value is not lost, and the
//! server's memory is flat (RSS at the end within 10 % of RSS after the warm-up).
//!
//! `FRESHCACHE_LOAD_SECS` sets the run's length (8 s by default; the soak runs 300 s).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;

use crate::hostile::proc_status_bytes;
use crate::support::Env;

const WORKERS: usize = 8;
/// Keys per worker: a few hot ones, written often, and colder ones, written rarely and read
/// often, so many reads meet a value at or past its expiry.
const HOT_KEYS: u64 = 8;
const KEYS: u64 = 40;
/// Keys per worker fall in this many groups, each a prefix an invalidation drops.
const GROUPS: u64 = 4;
/// The data type's TTL; a third of the writes ask for a shorter one.
const TYPE_TTL_MS: u64 = 2_000;
const SHORT_TTL_MS: u64 = 1_000;
/// Stamps are whole milliseconds, truncated on both sides of the comparison.
const STAMP_SLACK_US: u64 = 3_000;
/// A server clock may run a little ahead of the wall clock (it never runs back), expiring early;
/// the lost-write check allows that much.
const EARLY_EXPIRY_SLACK_US: u64 = 50_000;

fn now_us() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros(),
    )
    .unwrap()
}

/// A small deterministic generator, so a failing run can be replayed per worker.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A write the server acknowledged.
#[derive(Clone, Copy, Debug)]
struct Written {
    seq: u64,
    ttl_ms: u64,
    /// Wall time before the PUT was sent: the server stamped it no earlier.
    sent_us: u64,
    /// Wall time when the 201 arrived: the server stamped it no later.
    acked_us: u64,
}

impl Written {
    /// The latest instant the value can be fresh until.
    fn deadline_at_most(&self) -> u64 {
        self.acked_us + self.ttl_ms * 1000
    }

    /// The earliest instant it can expire.
    fn deadline_at_least(&self) -> u64 {
        self.sent_us + self.ttl_ms * 1000
    }
}

/// What a key must hold, as far as its only writer knows.
#[derive(Clone, Copy, Debug)]
enum Known {
    Absent,
    Present(Written),
    /// After a request that failed: the next write or removal makes it known again.
    Unknown,
}

#[derive(Debug, Default)]
struct Counts {
    gets: u64,
    hits: u64,
    misses: u64,
    /// Misses on a key whose value had certainly expired: expiry doing its work.
    expired_misses: u64,
    puts: u64,
    deletes: u64,
    invalidations: u64,
    removed_by_invalidation: u64,
    errors: u64,
    /// A value served after its deadline.
    stale: u64,
    /// A deleted or invalidated key served again.
    resurrected: u64,
    /// A value other than the key's last write, or damaged bytes.
    wrong: u64,
    /// A miss for a value that was certainly still fresh.
    lost: u64,
    first_failures: Vec<String>,
}

impl Counts {
    fn ops(&self) -> u64 {
        self.gets + self.puts + self.deletes + self.invalidations
    }

    fn fail(&mut self, what: String) {
        if self.first_failures.len() < 10 {
            self.first_failures.push(what);
        }
    }

    fn add(&mut self, o: Counts) {
        self.gets += o.gets;
        self.hits += o.hits;
        self.misses += o.misses;
        self.expired_misses += o.expired_misses;
        self.puts += o.puts;
        self.deletes += o.deletes;
        self.invalidations += o.invalidations;
        self.removed_by_invalidation += o.removed_by_invalidation;
        self.errors += o.errors;
        self.stale += o.stale;
        self.resurrected += o.resurrected;
        self.wrong += o.wrong;
        self.lost += o.lost;
        for f in o.first_failures {
            if self.first_failures.len() < 10 {
                self.first_failures.push(f);
            }
        }
    }
}

/// The value of write `seq` of `worker`: a header naming the write, its send time and TTL,
/// then filler derived from `seq`, so damage and mix-ups show.
fn value(worker: usize, seq: u64, sent_us: u64, ttl_ms: u64) -> Vec<u8> {
    let len = match seq % 8 {
        0..=3 => 64 + (seq % 640),
        4 | 5 => 3_000,
        6 => 9_000,
        _ => 20_000,
    };
    let mut v = format!("{worker}:{seq}:{sent_us}:{ttl_ms}|").into_bytes();
    v.extend((0..len).map(|i| b'a' + u8::try_from((seq + i) % 26).unwrap()));
    v
}

/// The write a served value names, if its bytes are whole.
fn parse_value(body: &[u8]) -> Option<(usize, u64)> {
    let bar = body.iter().position(|&b| b == b'|')?;
    let head = std::str::from_utf8(&body[..bar]).ok()?;
    let mut it = head.split(':');
    let worker = it.next()?.parse().ok()?;
    let seq = it.next()?.parse().ok()?;
    let sent_us = it.next()?.parse().ok()?;
    let ttl_ms = it.next()?.parse().ok()?;
    (value(worker, seq, sent_us, ttl_ms) == body).then_some((worker, seq))
}

async fn worker(me: usize, c: reqwest::Client, base: String, until: Instant) -> Counts {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ (me as u64 + 1));
    let mut known = vec![Known::Absent; usize::try_from(KEYS).unwrap()];
    let mut n = Counts::default();
    let mut seq = 0u64;
    let group_of = |k: u64| format!("tick:w{me}:g{}:", k % GROUPS);
    while Instant::now() < until {
        // Per mille: 48 % GET, 35 % PUT, 16.5 % DELETE, 0.5 % invalidate a group.
        let op = rng.below(1000);
        // Writes and deletes go mostly to the hot keys, reads spread evenly: cold keys are
        // read long after they were written, often after they expired.
        let k = if op >= 480 && rng.below(10) < 8 {
            rng.below(HOT_KEYS)
        } else {
            rng.below(KEYS)
        };
        let ki = usize::try_from(k).unwrap();
        let url = format!("{base}/v1/cache/{}k{k}", group_of(k));
        let t0 = now_us();
        match op {
            0..480 => {
                n.gets += 1;
                let r = c.get(&url).send().await;
                let t1 = now_us();
                let (status, body) = match r {
                    Ok(r) => (r.status(), r.bytes().await),
                    Err(e) => {
                        n.errors += 1;
                        n.fail(format!("GET {url}: {e}"));
                        known[ki] = Known::Unknown;
                        continue;
                    }
                };
                match (status, body, known[ki]) {
                    (StatusCode::OK, Ok(body), model) => {
                        n.hits += 1;
                        let named = parse_value(&body);
                        match model {
                            _ if named.is_none() => {
                                n.wrong += 1;
                                n.fail(format!("GET {url}: damaged value of {} bytes", body.len()));
                            }
                            Known::Absent => {
                                n.resurrected += 1;
                                n.fail(format!("GET {url}: served {named:?} after removal"));
                            }
                            Known::Present(w) if named != Some((me, w.seq)) => {
                                n.wrong += 1;
                                n.fail(format!(
                                    "GET {url}: served {named:?}, last write {}",
                                    w.seq
                                ));
                            }
                            Known::Present(w) if t0 > w.deadline_at_most() + STAMP_SLACK_US => {
                                n.stale += 1;
                                n.fail(format!(
                                    "GET {url}: write {} served {} ms past its deadline",
                                    w.seq,
                                    (t0 - w.deadline_at_most()) / 1000
                                ));
                            }
                            _ => {}
                        }
                    }
                    (StatusCode::NOT_FOUND, Ok(_), model) => {
                        n.misses += 1;
                        if let Known::Present(w) = model {
                            if t1 + EARLY_EXPIRY_SLACK_US < w.deadline_at_least() {
                                n.lost += 1;
                                n.fail(format!(
                                    "GET {url}: miss {} ms before write {} could expire",
                                    (w.deadline_at_least() - t1) / 1000,
                                    w.seq
                                ));
                            } else if t0 > w.deadline_at_most() {
                                n.expired_misses += 1;
                            }
                        }
                    }
                    (status, body, _) => {
                        n.errors += 1;
                        n.fail(format!("GET {url}: {status} {body:?}"));
                        known[ki] = Known::Unknown;
                    }
                }
            }
            480..830 => {
                n.puts += 1;
                seq += 1;
                let ttl_ms = if rng.below(3) == 0 {
                    SHORT_TTL_MS
                } else {
                    TYPE_TTL_MS
                };
                let put_url = if ttl_ms == TYPE_TTL_MS {
                    url.clone()
                } else {
                    format!("{url}?ttl={ttl_ms}ms")
                };
                let r = c
                    .put(&put_url)
                    .body(value(me, seq, t0, ttl_ms))
                    .send()
                    .await;
                let acked_us = now_us();
                match r.map(|r| r.status()) {
                    Ok(StatusCode::CREATED) => {
                        known[ki] = Known::Present(Written {
                            seq,
                            ttl_ms,
                            sent_us: t0,
                            acked_us,
                        });
                    }
                    other => {
                        n.errors += 1;
                        n.fail(format!("PUT {put_url}: {other:?}"));
                        known[ki] = Known::Unknown;
                    }
                }
            }
            830..995 => {
                n.deletes += 1;
                let r = c.delete(&url).send().await.map(|r| r.status());
                let t1 = now_us();
                match (r, known[ki]) {
                    (Ok(StatusCode::NO_CONTENT), Known::Absent) => {
                        n.resurrected += 1;
                        n.fail(format!("DELETE {url}: removed a key already removed"));
                    }
                    (Ok(StatusCode::NOT_FOUND), Known::Present(w))
                        if t1 + EARLY_EXPIRY_SLACK_US < w.deadline_at_least() =>
                    {
                        n.lost += 1;
                        n.fail(format!("DELETE {url}: write {} was not there", w.seq));
                    }
                    (Ok(StatusCode::NO_CONTENT | StatusCode::NOT_FOUND), _) => {}
                    (other, _) => {
                        n.errors += 1;
                        n.fail(format!("DELETE {url}: {other:?}"));
                    }
                }
                // Whatever the answer, the key is gone once the DELETE has returned.
                known[ki] = Known::Absent;
            }
            _ => {
                n.invalidations += 1;
                let prefix = group_of(k);
                let r = c
                    .post(format!("{base}/v1/invalidate"))
                    .body(format!("{{\"prefix\": \"{prefix}\"}}"))
                    .send()
                    .await;
                let removed = match r {
                    Ok(r) if r.status() == StatusCode::OK => r
                        .json::<serde_json::Value>()
                        .await
                        .ok()
                        .and_then(|v| v["removed"].as_u64()),
                    Ok(r) => {
                        n.fail(format!("invalidate {prefix}: {}", r.status()));
                        None
                    }
                    Err(e) => {
                        n.fail(format!("invalidate {prefix}: {e}"));
                        None
                    }
                };
                match removed {
                    Some(count) => n.removed_by_invalidation += count,
                    None => n.errors += 1,
                }
                for (i, state) in known.iter_mut().enumerate() {
                    if i as u64 % GROUPS == k % GROUPS {
                        *state = Known::Absent;
                    }
                }
            }
        }
    }
    n
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_under_mixed_load_serves_nothing_stale_and_keeps_its_memory_flat() {
    let secs: u64 = std::env::var("FRESHCACHE_LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let total = Duration::from_secs(secs.max(4));
    let warmup = Duration::from_secs((secs / 10).max(3));
    let env = Env::with_extra(&format!(
        "  data_types:\n    ticks:\n      prefix: \"tick:\"\n      ttl: {TYPE_TTL_MS}ms\n      \
         max_value_size: 64KiB\n"
    ));
    let server = env.serve();
    let pid = server.child.id();
    let c = crate::support::http_client();
    let base = server.url("");
    let started = Instant::now();
    let until = started + total;
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| tokio::spawn(worker(w, c.clone(), base.clone(), until)))
        .collect();

    // Deliberate real time: the load runs through its warm-up before memory is first read.
    tokio::time::sleep(warmup).await;
    let rss_warm = proc_status_bytes(pid, "VmRSS");
    let mut counts = Counts::default();
    for w in workers {
        counts.add(w.await.unwrap());
    }
    let rss_end = proc_status_bytes(pid, "VmRSS");
    let elapsed = started.elapsed();
    let growth = rss_end as f64 / rss_warm as f64 - 1.0;

    let r = c.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let stats: serde_json::Value = crate::support::get_json(&c, &server, "/v1/stats").await;
    let ticks = stats["data_types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["data_type"] == "ticks")
        .unwrap()
        .clone();

    let n = &counts;
    println!(
        "load: {:.1} s ({} s warm-up), {WORKERS} workers: {} operations ({:.0}/s): \
         {} GET ({} hits, {} misses, {} of them after expiry), {} PUT, {} DELETE, \
         {} invalidate ({} entries removed); errors {}, stale reads {}, resurrected {}, \
         wrong values {}, lost writes {}; server counted {} expirations; \
         RSS after warm-up {:.1} MiB, at end {:.1} MiB ({:+.1} %)",
        elapsed.as_secs_f64(),
        warmup.as_secs(),
        n.ops(),
        n.ops() as f64 / elapsed.as_secs_f64(),
        n.gets,
        n.hits,
        n.misses,
        n.expired_misses,
        n.puts,
        n.deletes,
        n.invalidations,
        n.removed_by_invalidation,
        n.errors,
        n.stale,
        n.resurrected,
        n.wrong,
        n.lost,
        ticks["expirations"],
        mib(rss_warm),
        mib(rss_end),
        growth * 100.0,
    );
    for f in &n.first_failures {
        println!("load failure: {f}");
    }
    assert_eq!(n.errors, 0, "{:?}", n.first_failures);
    assert_eq!(n.stale, 0, "{:?}", n.first_failures);
    assert_eq!(n.resurrected, 0, "{:?}", n.first_failures);
    assert_eq!(n.wrong, 0, "{:?}", n.first_failures);
    assert_eq!(n.lost, 0, "{:?}", n.first_failures);
    // The run did what it set out to: traffic of every kind, and expiry observed.
    assert!(n.ops() > 1_000, "only {} operations", n.ops());
    assert!(n.hits > 0 && n.deletes > 0 && n.invalidations > 0);
    assert!(n.expired_misses > 0, "no read met an expired value");
    assert!(
        growth < 0.10,
        "RSS grew from {rss_warm} to {rss_end} bytes after the warm-up"
    );
}
