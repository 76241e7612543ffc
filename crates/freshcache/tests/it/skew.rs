//! Clocks that disagree: an entry stamped later than the reader's clock is never served, on
//! any tier or in the guard; a wall clock stepping back panics nowhere and lengthens no
//! lifetime; and real processes whose clocks are five minutes off (libfaketime) share a
//! directory and a Redis without serving a value past its TTL in real time.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use freshcache::freshness::Verdict;
use freshcache::maintenance::CleanupOptions;
use freshcache::{Cache, Config, Key, Lookup, ManualClock, SystemClock, Value};

use crate::support::{DISK, MEMORY, T0, TestCache, assert_miss, fresh, open, secs, type_report};
use freshcache_testkit::RedisServer;

const HOUR: Duration = Duration::from_secs(3600);

fn odds(n: u32) -> Key {
    Key::odds(format!("g{n}"), 1_700_000_000).unwrap()
}

fn news(n: u32) -> Key {
    Key::news("espn", format!("a{n}")).unwrap()
}

fn future_stamped(cache: &Cache, data_type: &str) -> u64 {
    type_report(cache, data_type).future_stamped
}

#[tokio::test]
async fn a_wall_clock_stepping_back_an_hour_serves_nothing_stamped_before_it() {
    let t = TestCache::new();
    t.cache.set(&odds(1), "o1").await.unwrap(); // 60 s
    t.cache.set(&news(1), "n1").await.unwrap(); // 1 h
    t.advance(secs(10));

    // The wall clock steps back an hour. Judged from their stamps the entries would be
    // younger than ever; their real ages are unknown, so they are misses, not hits.
    t.clock
        .set(T0.saturating_add(secs(10)).saturating_sub(HOUR));
    assert_miss(&t.cache.get(&odds(1)).await.unwrap());
    assert_miss(&t.cache.get(&news(1)).await.unwrap());
    assert!(future_stamped(&t.cache, "odds_data") >= 1);
    assert!(future_stamped(&t.cache, "news_articles") >= 1);
    // Upkeep with time gone backwards: no panic, nothing fresh removed.
    t.cache.cleanup(CleanupOptions::default()).unwrap();

    // The same from disk, for an instance with an empty memory tier.
    let other = t.reopen();
    assert_miss(&other.get(&news(1)).await.unwrap());

    // New writes after the step are served normally and expire on their own TTL.
    let written = t.cache.set(&odds(2), "o2").await.unwrap();
    assert_eq!(written.meta.stored_at, t.now());
    let h = fresh(t.cache.get(&odds(2)).await.unwrap());
    assert_eq!(h.source, MEMORY);
    assert_eq!(h.age(), Duration::ZERO);
    let h = fresh(other.get(&odds(2)).await.unwrap());
    assert_eq!(h.source, DISK);
    t.advance(secs(59));
    fresh(t.cache.get(&odds(2)).await.unwrap());
    t.advance(secs(1));
    assert_miss(&t.cache.get(&odds(2)).await.unwrap());
    assert_miss(&other.get(&odds(2)).await.unwrap());

    // An hour later the clock reaches the old stamps again. Real time since the writes is
    // past both lifetimes: nothing comes back to life.
    t.advance(HOUR);
    assert!(t.now() > T0.saturating_add(secs(10)));
    assert_miss(&t.cache.get(&odds(1)).await.unwrap());
    assert_miss(&t.cache.get(&news(1)).await.unwrap());
    assert_miss(&t.reopen().get(&news(1)).await.unwrap());
    t.cache.cleanup(CleanupOptions::default()).unwrap();
}

#[tokio::test]
async fn the_guard_reports_a_signal_stamped_in_its_future_as_missing() {
    let t = TestCache::new();
    t.cache.set(&odds(1), "o1").await.unwrap();
    let before = future_stamped(&t.cache, "odds_data");
    t.clock.set(T0.saturating_sub(secs(1)));
    let (report, hits) = t.cache.check_freshness("run-1", &[odds(1)]).await.unwrap();
    assert_eq!(report.signals[0].verdict, Verdict::Missing);
    assert!(hits[0].is_none());
    assert!(t.cache.require_fresh("run-2", &[odds(1)]).await.is_err());
    assert!(future_stamped(&t.cache, "odds_data") > before);
    // Once the clock is past the stamp again a new write is checked as usual.
    t.clock.set(T0.saturating_add(secs(5)));
    t.cache.set(&odds(1), "o1-again").await.unwrap();
    t.cache.require_fresh("run-3", &[odds(1)]).await.unwrap();
}

#[tokio::test]
async fn between_two_clocks_sharing_a_directory_entries_expire_early_or_are_misses() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cache");
    let real = ManualClock::new(T0);
    let behind = ManualClock::new(T0.saturating_sub(secs(300)));
    let ahead = ManualClock::new(T0.saturating_add(secs(300)));
    let on_real = open(&dir, &real);
    let on_behind = open(&dir, &behind);
    let on_ahead = open(&dir, &ahead);

    // Written by a clock five minutes behind: five minutes old to the others, so a 60 s odds
    // value is already expired and a 1 h article expires five minutes early.
    on_behind.set(&odds(1), "behind").await.unwrap();
    on_behind.set(&news(1), "behind").await.unwrap();
    assert_miss(&on_real.get(&odds(1)).await.unwrap());
    let h = fresh(on_real.get(&news(1)).await.unwrap());
    assert_eq!(h.age(), secs(300));
    for c in [&real, &behind, &ahead] {
        c.advance(HOUR - secs(300));
    }
    assert_miss(&on_real.get(&news(1)).await.unwrap());

    // Written by a clock five minutes ahead: stamped in the others' future, so a miss there
    // (on disk; the writer itself serves it from memory).
    on_ahead.set(&odds(2), "ahead").await.unwrap();
    assert_miss(&on_real.get(&odds(2)).await.unwrap());
    assert!(future_stamped(&on_real, "odds_data") >= 1);
    assert_eq!(fresh(on_ahead.get(&odds(2)).await.unwrap()).source, MEMORY);
    assert_miss(&on_behind.get(&odds(2)).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_copies_stamped_in_the_readers_future_are_misses() {
    let redis = RedisServer::start();
    let config = |dir: &Path| {
        let yaml = format!(
            "cache:\n  redis_url: \"{}\"\n  redis:\n    timeout: 200ms\n",
            redis.url()
        );
        Config::from_yaml_str(&yaml, None, Vec::new())
            .unwrap()
            .with_cache_dir(dir)
    };
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ahead = ManualClock::new(T0.saturating_add(secs(300)));
    let real = ManualClock::new(T0);
    let writer = Cache::builder(config(d1.path()))
        .clock(ahead.clone())
        .connect()
        .await
        .unwrap();
    let reader = Cache::builder(config(d2.path()))
        .clock(real.clone())
        .connect()
        .await
        .unwrap();
    writer.set(&news(7), "from the future").await.unwrap();
    // The reader has its own directory: only Redis holds the copy.
    assert_miss(&reader.get(&news(7)).await.unwrap());
    assert!(future_stamped(&reader, "news_articles") >= 1);
    // A value the reader's clock can date is served from Redis as usual.
    let d3 = tempfile::tempdir().unwrap();
    let behind_writer = Cache::builder(config(d3.path()))
        .clock(real.clone())
        .connect()
        .await
        .unwrap();
    behind_writer.set(&news(8), "now").await.unwrap();
    let h = fresh(reader.get(&news(8)).await.unwrap());
    assert_eq!(
        h.source,
        freshcache::Source::Tier(freshcache::TierKind::Redis)
    );
}

// ---- Real processes on clocks five minutes off (libfaketime) --------------------------------

/// Set in a child process: the shared cache directory.
const CHILD_DIR: &str = "FRESHCACHE_IT_SKEW_DIR";
/// Set in a child process: the port of the shared `redis-server`.
const CHILD_PORT: &str = "FRESHCACHE_IT_SKEW_PORT";
/// Set in a child process: its index into [`OFFSETS_MS`].
const CHILD_ID: &str = "FRESHCACHE_IT_SKEW_ID";
/// Clock offset of each process: the test process, one five minutes behind, one ahead.
const OFFSETS_MS: [i64; 3] = [0, -300_000, 300_000];
/// `faketime -f` offsets matching [`OFFSETS_MS`].
const FAKETIME: [&str; 3] = ["+0", "-5m", "+5m"];
const TTL_MS: i64 = 1000;
const KEYS: u32 = 6;
const RUN_FOR: Duration = Duration::from_millis(3000);
/// Writes stop after this, so that values then outlive their TTL unless rewritten.
const WRITE_FOR: Duration = Duration::from_millis(1200);

fn skew_config(dir: &Path, port: u16) -> Config {
    let yaml = format!(
        "cache:\n  redis_url: \"redis://127.0.0.1:{port}\"\n  redis:\n    timeout: 500ms\n  ttl:\n    odds_data: {TTL_MS}ms\n"
    );
    Config::from_yaml_str(&yaml, None, Vec::new())
        .unwrap()
        .with_cache_dir(dir)
}

/// This process's clock as the system shows it to the process (faked in a child), in ms.
fn system_ms() -> i64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    i64::try_from(d.as_millis()).unwrap()
}

/// Real time in ms: the process's clock corrected by the offset it was started with.
fn real_ms(id: usize) -> i64 {
    system_ms() - OFFSETS_MS[id]
}

#[derive(Debug, Default)]
struct Counts {
    reads: u64,
    hits: u64,
    hits_from_others: u64,
    writes: u64,
    stale: u64,
    max_real_age_ms: i64,
    future_stamped: u64,
}

/// One process's share: random reads and writes of a few shared keys for [`WRITE_FOR`], then
/// only reads until [`RUN_FOR`] (while the values age past their TTL), each hit checked
/// against real time: the value's real age (from its writer's stamp corrected by that writer's
/// clock offset) must be under its TTL.
async fn skew_worker(id: usize, dir: &Path, port: u16) -> Counts {
    // libfaketime really moves this process's clock: compare it with the Redis server's,
    // which runs on the real clock.
    // redis-cli itself runs on the real clock (libfaketime hangs it).
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "TIME"])
        .env_remove("LD_PRELOAD")
        .env_remove("FAKETIME")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let time = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut parts = time.split_whitespace().map(|p| p.parse::<i64>().unwrap());
    let redis_ms = parts.next().unwrap() * 1000 + parts.next().unwrap() / 1000;
    let seen_offset = system_ms() - redis_ms;
    println!(
        "process {id}: system clock {} ms from the real one (meant to be {})",
        seen_offset, OFFSETS_MS[id]
    );
    assert!(
        (seen_offset - OFFSETS_MS[id]).abs() < 2000,
        "process {id}: clock offset {seen_offset} ms, expected {}",
        OFFSETS_MS[id]
    );

    let cache = Cache::builder(skew_config(dir, port))
        .clock(SystemClock)
        .connect()
        .await
        .unwrap();
    let mut rng = fastrand::Rng::with_seed(id as u64 + 1);
    let mut c = Counts::default();
    let started = Instant::now();
    while started.elapsed() < RUN_FOR {
        let k = odds(rng.u32(0..KEYS));
        if started.elapsed() < WRITE_FOR && rng.u8(0..10) < 4 {
            let e = cache.set(&k, Value::bytes(format!("{id}"))).await.unwrap();
            assert_eq!(e.meta.ttl(), Duration::from_millis(TTL_MS as u64));
            c.writes += 1;
        } else {
            let read_at = real_ms(id);
            c.reads += 1;
            if let Lookup::Fresh(h) = cache.get(&k).await.unwrap() {
                c.hits += 1;
                let writer: usize = std::str::from_utf8(h.value()).unwrap().parse().unwrap();
                c.hits_from_others += u64::from(writer != id);
                let stamped_real =
                    i64::try_from(h.meta().stored_at.as_millis()).unwrap() - OFFSETS_MS[writer];
                // A lower bound of the value's real age when it was served.
                let age = read_at - stamped_real;
                c.max_real_age_ms = c.max_real_age_ms.max(age);
                if age >= TTL_MS {
                    c.stale += 1;
                    println!(
                        "process {id}: STALE read of {k} written by process {writer}: real age {age} ms, from {:?}",
                        h.source
                    );
                }
            }
        }
        // Deliberate real time: paces the reads while the values age on the real clock.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // This process's own count (the stats report adds up every process on the directory).
    let mut registry = prometheus_client::registry::Registry::default();
    freshcache::metrics::register(&mut registry, &cache);
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
    let series = r#"cache_future_stamped_total{data_type="odds_data"} "#;
    c.future_stamped = text
        .lines()
        .find_map(|l| l.strip_prefix(series))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap();
    cache.flush().unwrap();
    c
}

fn counts_line(id: usize, c: &Counts) -> String {
    format!(
        "SKEW id={id} reads={} hits={} hits_from_others={} writes={} future_stamped={} stale={} max_real_age_ms={}",
        c.reads, c.hits, c.hits_from_others, c.writes, c.future_stamped, c.stale, c.max_real_age_ms
    )
}

fn parse_counts(line: &str) -> Counts {
    let field = |name: &str| -> i64 {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
            .parse()
            .unwrap()
    };
    let u = |name| u64::try_from(field(name)).unwrap();
    Counts {
        reads: u("reads"),
        hits: u("hits"),
        hits_from_others: u("hits_from_others"),
        writes: u("writes"),
        stale: u("stale"),
        max_real_age_ms: field("max_real_age_ms"),
        future_stamped: u("future_stamped"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_with_clocks_five_minutes_off_never_serve_a_value_past_its_ttl() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        let id: usize = std::env::var(CHILD_ID).unwrap().parse().unwrap();
        let port: u16 = std::env::var(CHILD_PORT).unwrap().parse().unwrap();
        let c = skew_worker(id, Path::new(&dir), port).await;
        println!("{}", counts_line(id, &c));
        return;
    }

    let redis = RedisServer::start();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cache");
    let exe = std::env::current_exe().unwrap();
    let name = format!(
        "{}::processes_with_clocks_five_minutes_off_never_serve_a_value_past_its_ttl",
        module_path!().split_once("::").unwrap().1
    );
    let children: Vec<_> = (1..3usize)
        .map(|id| {
            Command::new("faketime")
                .args(["-f", FAKETIME[id]])
                .arg(&exe)
                .args(["--exact", &name, "--nocapture", "--test-threads=1"])
                .env(CHILD_DIR, &dir)
                .env(CHILD_PORT, redis.port.to_string())
                .env(CHILD_ID, id.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot run faketime ({e}); install Debian's `faketime` package")
                })
        })
        .collect();
    let mine = skew_worker(0, &dir, redis.port).await;
    let mut all = vec![(0, mine)];
    for (i, mut child) in children.into_iter().enumerate() {
        let id = i + 1;
        // A child that hangs fails the test instead of blocking it.
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        for l in stdout
            .lines()
            .filter_map(|l| l.find("process ").map(|i| &l[i..]))
        {
            println!("{l}");
        }
        assert!(
            out.status.success(),
            "process {id} failed: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout
            .lines()
            .find(|l| l.starts_with("SKEW "))
            .unwrap_or_else(|| panic!("process {id} reported nothing:\n{stdout}"));
        all.push((id, parse_counts(line)));
    }
    for (id, c) in &all {
        println!(
            "{} (clock {:+} s)",
            counts_line(*id, c),
            OFFSETS_MS[*id] / 1000
        );
    }
    for (id, c) in &all {
        assert_eq!(c.stale, 0, "process {id} served values past their TTL");
        assert!(
            c.writes > 20 && c.reads > 50,
            "process {id} did too little: {c:?}"
        );
        // Each process serves its own recent writes.
        assert!(c.hits > 0, "process {id} never hit: {c:?}");
        // Every hit was within the TTL by real time (the bound above, with slack for the
        // read itself).
        assert!(c.max_real_age_ms < TTL_MS, "process {id}: {c:?}");
    }
    // The skew was really exercised: the real-clock process read entries stamped by the one
    // ahead, and the one behind read entries stamped by both others, and refused them; to the
    // one ahead every other entry just looks old.
    assert!(all[0].1.future_stamped > 0, "{:?}", all[0].1);
    assert!(all[1].1.future_stamped > 0, "{:?}", all[1].1);
    assert_eq!(all[2].1.future_stamped, 0, "{:?}", all[2].1);
}
