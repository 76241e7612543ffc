//! Shared helpers: a temp dir, a manual clock and caches opened on them.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use freshcache::stats::TypeReport;
use freshcache::{Cache, Config, Hit, Lookup, ManualClock, Source, TierKind, Timestamp};
use tempfile::TempDir;

/// Where every manual clock starts.
pub const T0: Timestamp = Timestamp::from_secs(1_700_000_000);

pub const MEMORY: Source = Source::Tier(TierKind::Memory);
pub const DISK: Source = Source::Tier(TierKind::Disk);

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Opens a cache on `dir` with the default config and `clock`.
pub fn open(dir: &Path, clock: &ManualClock) -> Cache {
    Cache::builder(Config::default().with_cache_dir(dir))
        .clock(clock.clone())
        .open()
        .unwrap()
}

/// A cache in a fresh temp dir on a manual clock standing at [`T0`].
pub struct TestCache {
    /// Keeps the directory alive; the cache lives in `root/cache`.
    pub root: TempDir,
    pub clock: ManualClock,
    pub cache: Cache,
}

impl TestCache {
    pub fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let cache = open(&root.path().join("cache"), &clock);
        Self { root, clock, cache }
    }

    /// The cache directory.
    pub fn dir(&self) -> PathBuf {
        self.root.path().join("cache")
    }

    /// Another cache instance on the same directory and clock, with an empty memory tier.
    pub fn reopen(&self) -> Cache {
        open(&self.dir(), &self.clock)
    }

    pub fn advance(&self, d: Duration) {
        self.clock.advance(d);
    }

    pub fn now(&self) -> Timestamp {
        self.cache.now()
    }
}

/// The hit inside a fresh lookup, or a panic naming what came back instead.
#[track_caller]
pub fn fresh(l: Lookup) -> Hit {
    match l {
        Lookup::Fresh(h) => h,
        other => panic!("expected a fresh hit, got {other:?}"),
    }
}

#[track_caller]
pub fn assert_miss(l: &Lookup) {
    assert!(l.is_miss(), "expected a miss, got {l:?}");
}

/// The stats row of one data type.
pub fn type_report(cache: &Cache, data_type: &str) -> TypeReport {
    cache
        .stats()
        .unwrap()
        .data_types
        .into_iter()
        .find(|t| t.data_type == data_type)
        .unwrap_or_else(|| panic!("no stats for {data_type}"))
}

/// Rows on disk for a data type.
pub fn disk_entries(cache: &Cache, data_type: &str) -> u64 {
    type_report(cache, data_type).entries
}

/// Deterministic, incompressible bytes (xorshift), so large values really go to blob files.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v);
    v
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Every blob file under `<cache_dir>/blobs`.
pub fn blob_files(cache_dir: &Path) -> Vec<PathBuf> {
    files_under(&cache_dir.join("blobs"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "blob"))
        .collect()
}

/// Every file and link under `dir`, with its bytes (a link's target path) and mtime.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p.clone());
            }
            let bytes = if m.file_type().is_symlink() {
                fs::read_link(&p)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else if m.is_file() {
                fs::read(&p).unwrap()
            } else {
                Vec::new()
            };
            out.insert(p, (bytes, m.modified().unwrap()));
        }
    }
    out
}

/// Waits until `cache`'s coherence subscription is live: it serves a probe it just wrote from
/// memory again (a write while the subscription comes up clears memory).
pub async fn wait_subscribed(cache: &Cache) {
    let probe = freshcache::Key::odds(format!("probe{:x}", fastrand::u64(..)), 1).unwrap();
    cache.set(&probe, "p").await.unwrap();
    // Generous: the subscription retries every 100 ms, but a loaded machine running the whole
    // suite (dozens of redis-server processes) has taken over 5 s to bring one up.
    freshcache_testkit::Poll::within(Duration::from_secs(15))
        .until_async("coherence subscription never came up", async || {
            matches!(
                cache.get(&probe).await.unwrap(),
                Lookup::Fresh(h) if h.source == MEMORY
            )
        })
        .await;
}

/// Runs test `name` of this binary again as a child process (with `envs`), output piped.
pub fn spawn_child(name: &str, envs: &[(&str, String)]) -> std::process::Child {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", name, "--nocapture", "--test-threads=1"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// Waits for a child from [`spawn_child`]; panics (with its output) unless its test passed.
pub fn wait_child(what: &str, child: std::process::Child) -> String {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{what} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Wall-clock nanoseconds since the Unix epoch: one clock for every process of the host, for
/// the multi-process histories' logs.
pub fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Runs test `name` of this binary as one child process per entry of `envs` (all started,
/// then each waited for; every one must pass).
pub fn run_children(name: &str, envs: &[Vec<(&str, String)>]) {
    let children: Vec<std::process::Child> = envs.iter().map(|e| spawn_child(name, e)).collect();
    for (p, c) in children.into_iter().enumerate() {
        wait_child(&format!("process {p}"), c);
    }
}
