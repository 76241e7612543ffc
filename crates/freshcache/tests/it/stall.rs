//! Writes made while a cleanup sweep runs, from another thread and from another process,
//! complete; the sweep still removes every expired entry and nothing else, and the totals stay
//! exact. (How long writers wait is a benchmark row, W5b, not a test assertion.)

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use freshcache::maintenance::{CleanupOptions, Mode};
use freshcache::{Cache, Config, Key, ManualClock, Value};

use crate::support::{T0, disk_entries, secs};

/// Set to the cache directory in the writer child.
const CHILD_DIR: &str = "FRESHCACHE_IT_STALL_CHILD";
/// Entries populated before the sweep; half expire.
const POPULATED: u64 = 4_000;

/// The writer child: writes `news:child:{i}` until `stop` appears in the directory, having
/// marked `started` after its first write; then writes its count to `count`.
fn writer_child(dir: &Path) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = Cache::open(Config::default().with_cache_dir(dir)).unwrap();
    let mut n = 0u64;
    loop {
        let key = Key::news("child", n).unwrap();
        rt.block_on(cache.set(&key, Value::bytes(vec![b'c'; 100])))
            .unwrap_or_else(|e| panic!("child write {n}: {e}"));
        n += 1;
        if n == 1 {
            std::fs::write(dir.join("started"), b"").unwrap();
        }
        if dir.join("stop").exists() {
            break;
        }
    }
    cache.flush().unwrap();
    std::fs::write(dir.join("count"), n.to_string()).unwrap();
}

/// Polls `cond` every few milliseconds until it holds, failing after `max`.
fn wait_for(what: &str, max: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + max;
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn writes_from_a_thread_and_a_process_during_a_sweep_complete_and_the_sweep_stays_exact() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        writer_child(Path::new(&dir));
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cache");
    let clock = ManualClock::new(T0);
    let cache = Cache::builder(Config::default().with_cache_dir(&dir))
        .clock(clock.clone())
        .open()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Half odds (60 s), half LLM features (24 h), interleaved.
    for i in 0..POPULATED / 2 {
        let odds = Key::odds(format!("g{i}"), 1).unwrap();
        rt.block_on(cache.set(&odds, Value::bytes(vec![b'o'; 100])))
            .unwrap();
        let llm = Key::llm_features(format!("c{i}"), "2026-12-04").unwrap();
        rt.block_on(cache.set(&llm, Value::bytes(vec![b'l'; 100])))
            .unwrap();
    }
    clock.advance(secs(7200));

    // Another process writes (on its own, real clock: its entries are years younger than
    // this clock's now, so the sweep must leave every one).
    let exe = std::env::current_exe().unwrap();
    let name = format!(
        "{}::writes_from_a_thread_and_a_process_during_a_sweep_complete_and_the_sweep_stays_exact",
        module_path!().split_once("::").unwrap().1
    );
    let child = Command::new(&exe)
        .args(["--exact", &name, "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, &dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the child's first write", Duration::from_secs(60), || {
        dir.join("started").exists()
    });

    // Another thread writes from before the sweep starts until after it ends.
    let sweeping = AtomicBool::new(true);
    let written = AtomicU64::new(0);
    let during = AtomicU64::new(0);
    let report = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let mut n = 0;
            loop {
                let still = sweeping.load(Ordering::Acquire);
                let key = Key::llm_features(format!("w{n}"), "2026-12-04").unwrap();
                rt.block_on(cache.set(&key, Value::bytes(vec![b'w'; 100])))
                    .unwrap();
                n += 1;
                written.store(n, Ordering::Release);
                if still {
                    during.fetch_add(1, Ordering::Relaxed);
                } else {
                    return;
                }
            }
        });
        wait_for("the thread's first write", Duration::from_secs(60), || {
            written.load(Ordering::Acquire) > 0
        });
        let opts = CleanupOptions {
            mode: Mode::Apply,
            orphan_grace: Duration::ZERO,
        };
        let report = cache.cleanup_at(cache.now(), opts, |_| {});
        sweeping.store(false, Ordering::Release);
        writer.join().unwrap();
        report.unwrap()
    });
    std::fs::write(dir.join("stop"), b"").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "child failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
    let child_writes: u64 = std::fs::read_to_string(dir.join("count"))
        .unwrap()
        .parse()
        .unwrap();

    // The sweep removed exactly the expired half; every write made meanwhile is there.
    assert_eq!(report.expired.entries, POPULATED / 2, "{report:?}");
    assert_eq!(report.evicted.entries, 0);
    assert!(during.load(Ordering::Relaxed) >= 1);
    let thread_writes = written.load(Ordering::Acquire);
    assert_eq!(disk_entries(&cache, "odds_data"), 0);
    assert_eq!(
        disk_entries(&cache, "llm_features"),
        POPULATED / 2 + thread_writes
    );
    assert_eq!(disk_entries(&cache, "news_articles"), child_writes);
    // The kept totals agree with the rows (doctor recomputes them and finds no drift).
    let doctor = cache.doctor(Mode::DryRun, Duration::ZERO).unwrap();
    assert!(doctor.is_clean(), "{doctor:?}");
}
