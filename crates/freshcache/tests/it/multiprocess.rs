//! Two processes writing one cache directory corrupt nothing.
//!
//! The test re-runs its own test binary twice as writer children (selected by an environment
//! variable), then checks every key holds exactly a value one of the children wrote.

use std::path::Path;
use std::process::{Command, Stdio};

use freshcache::{Cache, Config, Key, Lookup, Value};

/// Set to the cache directory in a writer child.
const CHILD_DIR: &str = "FRESHCACHE_IT_CHILD";
/// Set to the writer id in a writer child.
const CHILD_ID: &str = "FRESHCACHE_IT_WRITER";
const WRITES: u64 = 300;
const KEYS: u64 = 40;

fn key(n: u64) -> Key {
    Key::news("mp", format!("k{n}")).unwrap()
}

/// The value writer `w` writes as its `seq`th write to key `k`: a header naming all three and
/// the length, then bytes derived from them, then an xxh3 of everything before it.
fn make_value(w: u64, seq: u64, k: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(w * 1_000_003 + seq);
    let len = rng.usize(100..=100 * 1024);
    let header = format!("w={w};seq={seq};key={k};len={len};");
    let mut v = header.into_bytes();
    let body_len = len.saturating_sub(v.len() + 8);
    let start = v.len();
    v.resize(start + body_len, 0);
    // Half of the values compress well, half do not.
    if seq.is_multiple_of(2) {
        rng.fill(&mut v[start..]);
    } else {
        for (i, b) in v[start..].iter_mut().enumerate() {
            *b = b'a' + (i % 7) as u8;
        }
    }
    let sum = twox_hash::XxHash3_64::oneshot(&v);
    v.extend_from_slice(&sum.to_le_bytes());
    v
}

/// Checks that `v`, read under key `k`, is exactly a value some writer wrote for `k`.
fn validate(k: u64, v: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(&v[..v.len().min(80)]).into_owned();
    let field = |name: &str| -> Result<u64, String> {
        text.split(';')
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("no {name} in header {text:?}"))
    };
    let (w, seq, key_n) = (field("w")?, field("seq")?, field("key")?);
    if key_n != k {
        return Err(format!("value for key {key_n} found under key {k}"));
    }
    if v.len() < 8 {
        return Err("too short".into());
    }
    let (body, sum) = v.split_at(v.len() - 8);
    if twox_hash::XxHash3_64::oneshot(body).to_le_bytes() != sum {
        return Err(format!("self-checksum mismatch (w={w} seq={seq})"));
    }
    if make_value(w, seq, k) != v {
        return Err(format!("not the value writer {w} wrote at seq {seq}"));
    }
    Ok(())
}

/// Which key writer `w` writes at `seq`: both walk all keys, in different orders.
fn key_of(w: u64, seq: u64) -> u64 {
    if w == 0 {
        seq % KEYS
    } else {
        (KEYS - 1) - (seq * 7) % KEYS
    }
}

async fn writer_child(dir: &Path, w: u64) {
    let cache = Cache::open(Config::default().with_cache_dir(dir)).unwrap();
    for seq in 0..WRITES {
        let k = key_of(w, seq);
        cache
            .set(&key(k), Value::bytes(make_value(w, seq, k)))
            .await
            .unwrap_or_else(|e| panic!("writer {w} seq {seq}: {e}"));
        // Read some other key back while the other writer is busy.
        let other = (k + 13) % KEYS;
        if let Lookup::Fresh(h) = cache.get(&key(other)).await.unwrap() {
            validate(other, h.value()).unwrap_or_else(|e| panic!("writer {w} read: {e}"));
        }
    }
    cache.flush().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_writing_one_directory_corrupt_nothing() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        let w: u64 = std::env::var(CHILD_ID).unwrap().parse().unwrap();
        writer_child(Path::new(&dir), w).await;
        return;
    }

    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cache");
    let exe = std::env::current_exe().unwrap();
    let name = format!(
        "{}::two_processes_writing_one_directory_corrupt_nothing",
        module_path!().split_once("::").unwrap().1
    );
    let children: Vec<_> = (0..2u64)
        .map(|w| {
            Command::new(&exe)
                .args(["--exact", &name, "--nocapture", "--test-threads=1"])
                .env(CHILD_DIR, &dir)
                .env(CHILD_ID, w.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (w, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "writer {w} failed: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        // The child really ran the writer (and not zero tests).
        assert!(
            stdout.contains("1 passed"),
            "writer {w} ran no test:\n{stdout}"
        );
    }

    let cache = Cache::open(Config::default().with_cache_dir(&dir)).unwrap();
    for k in 0..KEYS {
        match cache.get(&key(k)).await.unwrap() {
            Lookup::Fresh(h) => validate(k, h.value()).unwrap_or_else(|e| panic!("key {k}: {e}")),
            other => panic!("key {k}: expected a value, got {other:?}"),
        }
    }
    let s = cache.stats().unwrap();
    assert_eq!(s.corrupt_entries, 0);
    let news = s
        .data_types
        .iter()
        .find(|t| t.data_type == "news_articles")
        .unwrap();
    assert_eq!(news.entries, KEYS);
    // Writes from both processes were persisted in the shared counters.
    assert_eq!(news.sets, 2 * WRITES);

    // No orphans: every blob file is named by exactly one row and every row's file exists;
    // nothing is left in tmp/.
    let conn = rusqlite::Connection::open(dir.join("metadata.db")).unwrap();
    let mut rows: Vec<String> = conn
        .prepare("SELECT file FROM entries WHERE file IS NOT NULL")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    rows.sort();
    let mut files: Vec<String> = crate::support::blob_files(&dir)
        .iter()
        .map(|p| {
            p.strip_prefix(dir.join("blobs"))
                .unwrap()
                .to_str()
                .unwrap()
                .replace('\\', "/")
        })
        .collect();
    files.sort();
    assert_eq!(rows, files, "blob files and index rows disagree");
    assert!(!files.is_empty());
    assert!(crate::support::files_under(&dir.join("tmp")).is_empty());
}
