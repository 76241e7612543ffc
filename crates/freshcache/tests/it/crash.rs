//! SIGKILL at random moments loses no acknowledged write and serves nothing corrupt.
//!
//! A writer child (a re-run of this test binary, selected by an environment variable) opens a
//! `SystemClock` cache on a shared directory and writes self-validating values of 1 KB – 4 MB,
//! printing `START key seq` before and `ACK key seq` after each `set`. The parent kills it with
//! `kill -KILL` at a random moment, then opens the directory itself and checks every key. Other
//! rounds kill the writer at a named point of the write path instead (the child kills itself
//! with SIGKILL the n-th time a write reaches that point, through the disk tier's fault seam).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use freshcache::internals::{BlobStep, FsFaults, WritePoint};
use freshcache::maintenance::Mode;
use freshcache::{Cache, Config, Key, Lookup, Value};

/// Set to the cache directory in a writer child.
const CHILD_DIR: &str = "FRESHCACHE_IT_CRASH_DIR";
/// Set to the round number in a writer child (the high part of every sequence number).
const CHILD_ROUND: &str = "FRESHCACHE_IT_CRASH_ROUND";
/// Set to `point:n` in a writer child that kills itself at the n-th arrival at `point`.
const CHILD_POINT: &str = "FRESHCACHE_IT_CRASH_POINT";
const ROUNDS: u64 = 50;
/// Rounds per named point of the write path.
const NAMED_ROUNDS: u64 = 4;
const POINTS: [(&str, WritePoint); 3] = [
    ("temp_written", WritePoint::TempWritten),
    ("renamed", WritePoint::Renamed),
    ("committed", WritePoint::Committed),
];
const KEYS: u64 = 12;

fn key(k: u64) -> Key {
    Key::llm_features(format!("crash{k}"), "2026-11-24").unwrap()
}

/// The value written to key `k` as sequence `seq`: a header naming both and the length, a body
/// derived from them (random or compressible), then an xxh3 of everything before it.
fn make_value(k: u64, seq: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(k.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seq);
    let len = match rng.u32(0..100) {
        0..=69 => rng.usize(1024..64 * 1024),
        70..=94 => rng.usize(64 * 1024..1024 * 1024),
        _ => rng.usize(1024 * 1024..=4 * 1024 * 1024),
    };
    let mut v = format!("k={k};seq={seq};len={len};").into_bytes();
    let start = v.len();
    v.resize(len - 8, 0);
    if rng.bool() {
        rng.fill(&mut v[start..]);
    } else {
        let step = rng.u8(1..20);
        for (i, b) in v[start..].iter_mut().enumerate() {
            *b = b'a'.wrapping_add((i as u8).wrapping_mul(step) % 26);
        }
    }
    let sum = twox_hash::XxHash3_64::oneshot(&v);
    v.extend_from_slice(&sum.to_le_bytes());
    v
}

/// The sequence number of `v`, read under key `k`, if it is exactly a value written for `k`.
fn validate(k: u64, v: &[u8]) -> Result<u64, String> {
    let text = String::from_utf8_lossy(&v[..v.len().min(64)]).into_owned();
    let field = |name: &str| -> Result<u64, String> {
        text.split(';')
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("no {name} in header {text:?}"))
    };
    let (key_n, seq, len) = (field("k")?, field("seq")?, field("len")?);
    if key_n != k {
        return Err(format!("value of key {key_n} served under key {k}"));
    }
    if v.len() as u64 != len || v.len() < 8 {
        return Err(format!("length {} but header says {len}", v.len()));
    }
    let (body, sum) = v.split_at(v.len() - 8);
    if twox_hash::XxHash3_64::oneshot(body).to_le_bytes() != sum {
        return Err(format!("self-checksum mismatch (seq {seq})"));
    }
    if make_value(k, seq) != v {
        return Err(format!("not the value written as seq {seq}"));
    }
    Ok(seq)
}

/// Kills its own process with SIGKILL the `nth` time a write reaches `point`.
struct KillAt {
    point: WritePoint,
    nth: u64,
    seen: std::sync::atomic::AtomicU64,
}

impl FsFaults for KillAt {
    fn check(&self, _step: BlobStep, _path: &Path) -> std::io::Result<()> {
        Ok(())
    }

    fn reached(&self, point: WritePoint) {
        if point == self.point
            && self.seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == self.nth
        {
            let _ = Command::new("kill")
                .args(["-KILL", &std::process::id().to_string()])
                .status();
            // The signal is on its way: the write goes no further.
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

async fn writer_child(dir: &Path, round: u64) {
    let cache = Cache::open(Config::default().with_cache_dir(dir)).unwrap();
    if let Ok(plan) = std::env::var(CHILD_POINT) {
        let (name, nth) = plan.split_once(':').unwrap();
        let point = POINTS.iter().find(|(n, _)| *n == name).unwrap().1;
        cache.inject_fs_faults(std::sync::Arc::new(KillAt {
            point,
            nth: nth.parse().unwrap(),
            seen: std::sync::atomic::AtomicU64::new(0),
        }));
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "READY").unwrap();
    out.flush().unwrap();
    let mut rng = fastrand::Rng::with_seed(round);
    for i in 0.. {
        let k = rng.u64(0..KEYS);
        let seq = round * 1_000_000 + i;
        writeln!(out, "START {k} {seq}").unwrap();
        out.flush().unwrap();
        cache
            .set(&key(k), Value::bytes(make_value(k, seq)))
            .await
            .unwrap();
        writeln!(out, "ACK {k} {seq}").unwrap();
        out.flush().unwrap();
    }
}

/// The exit status of `child` once it has exited by itself, or `None` after `limit` (then it is
/// killed and reaped).
fn wait_for_exit(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// What the parent knows about one key from the children's output.
#[derive(Default)]
struct Known {
    /// Every acknowledged sequence number.
    acked: Vec<u64>,
    /// A write started but not acknowledged when its writer was killed.
    in_flight: Vec<u64>,
}

/// Invariant: after any number of SIGKILLs of a writer, every acknowledged value is readable and
/// byte-exact, never older than the last acknowledgement of its key (a later, unacknowledged
/// in-flight write may win), nothing corrupt is served, and one `doctor` repair leaves the
/// directory clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_write() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        let round: u64 = std::env::var(CHILD_ROUND).unwrap().parse().unwrap();
        writer_child(Path::new(&dir), round).await;
        return;
    }

    let started = Instant::now();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cache");
    let exe = std::env::current_exe().unwrap();
    let name = format!(
        "{}::sigkill_loses_no_acknowledged_write",
        module_path!().split_once("::").unwrap().1
    );
    let mut rng = fastrand::Rng::with_seed(0xC0FFEE);
    let mut known: HashMap<u64, Known> = HashMap::new();
    let (mut acks, mut kills, mut killed_in_flight, mut killed_before_ready) = (0u64, 0, 0, 0);
    let (mut checked_reads, mut in_flight_won) = (0u64, 0u64);
    let (stale_reads, corrupt_reads, lost_writes) = (0u64, 0u64, 0u64);

    // The soak command (scripts/soak.sh) raises the count.
    let rounds: u64 = std::env::var("FRESHCACHE_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ROUNDS);
    // Random moments first, then each named point of the write path in turn.
    let named: Vec<(&str, u64)> = POINTS
        .iter()
        .flat_map(|(n, _)| (0..NAMED_ROUNDS).map(move |_| *n))
        .enumerate()
        .map(|(i, n)| (n, 1 + (i as u64 * 7) % 13))
        .collect();
    let mut named_kills: HashMap<&str, u64> = HashMap::new();
    for round in 1..=rounds + named.len() as u64 {
        let plan = round
            .checked_sub(rounds + 1)
            .map(|i| named[usize::try_from(i).unwrap()]);
        let mut cmd = Command::new(&exe);
        cmd.args(["--exact", &name, "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, &dir)
            .env(CHILD_ROUND, round.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some((point, nth)) = plan {
            cmd.env(CHILD_POINT, format!("{point}:{nth}"));
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // One round in eight is killed early, maybe while it opens the directory.
        let early = round % 8 == 0;
        let mut lines = Vec::new();
        if let Some((point, _)) = plan {
            // The child kills itself at the point; it must not get past it.
            let status = wait_for_exit(&mut child, Duration::from_secs(60))
                .unwrap_or_else(|| panic!("round {round}: the writer never reached {point}"));
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(
                status.signal(),
                Some(9),
                "round {round}: the writer was to die by SIGKILL at {point}: {status}"
            );
            *named_kills.entry(point).or_default() += 1;
        } else if early {
            // Deliberate: a random moment, early in its start-up, to kill the writer at.
            std::thread::sleep(Duration::from_millis(rng.u64(2..30)));
        } else {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let line = rx
                    .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                    .unwrap_or_else(|e| panic!("round {round}: no READY from the child: {e}"));
                // libtest prints "test <name> ... " on the same line first.
                let ready = line.ends_with("READY");
                lines.push(line);
                if ready {
                    break;
                }
            }
            // Deliberate: a random moment, mid-write, to kill the writer at.
            std::thread::sleep(Duration::from_millis(rng.u64(20..80)));
        }
        if plan.is_none() {
            let ok = Command::new("kill")
                .args(["-KILL", &child.id().to_string()])
                .status()
                .unwrap()
                .success();
            assert!(ok, "kill -KILL {} failed", child.id());
        }
        // (A child that killed itself was reaped already; this returns its status again.)
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "round {round}: the writer exited by itself: {status}"
        );
        kills += 1;
        reader.join().unwrap();
        lines.extend(rx.try_iter());
        if !lines.iter().any(|l| l.ends_with("READY")) {
            assert!(
                plan.is_none(),
                "round {round}: killed at a point before READY"
            );
            killed_before_ready += 1;
        }

        let mut open_start: Option<(u64, u64)> = None;
        for line in &lines {
            let mut parts = line.split(' ');
            let (tag, k, seq) = (parts.next(), parts.next(), parts.next());
            let (Some(k), Some(seq)) = (
                k.and_then(|k| k.parse::<u64>().ok()),
                seq.and_then(|s| s.parse::<u64>().ok()),
            ) else {
                continue;
            };
            match tag {
                Some("START") => open_start = Some((k, seq)),
                Some("ACK") => {
                    assert_eq!(
                        open_start,
                        Some((k, seq)),
                        "round {round}: ACK without START"
                    );
                    open_start = None;
                    known.entry(k).or_default().acked.push(seq);
                    acks += 1;
                }
                _ => {}
            }
        }
        if let Some((k, seq)) = open_start {
            known.entry(k).or_default().in_flight.push(seq);
            killed_in_flight += 1;
        }

        // Check with an instance of the parent's own (empty memory tier: reads come from disk).
        let cache = Cache::open(Config::default().with_cache_dir(&dir))
            .unwrap_or_else(|e| panic!("round {round}: reopening after SIGKILL failed: {e}"));
        for k in 0..KEYS {
            let Some(kn) = known.get(&k) else { continue };
            let last_ack = kn.acked.iter().max().copied();
            let found = cache.get(&key(k)).await.unwrap();
            checked_reads += 1;
            match (found, last_ack) {
                (Lookup::Fresh(h), _) => {
                    let seq = validate(k, h.value()).unwrap_or_else(|e| {
                        panic!("round {round}: corrupt value served for key {k}: {e}")
                    });
                    assert!(
                        kn.acked.contains(&seq) || kn.in_flight.contains(&seq),
                        "round {round}: key {k} served seq {seq}, which was never written"
                    );
                    if let Some(last) = last_ack {
                        assert!(
                            seq >= last,
                            "round {round}: key {k} served seq {seq}, older than acknowledged {last}"
                        );
                        if seq > last {
                            in_flight_won += 1;
                        }
                    }
                }
                (other, Some(last)) => panic!(
                    "round {round}: acknowledged write {last} of key {k} lost: got {other:?}"
                ),
                (_, None) => {}
            }
        }
        assert_eq!(
            cache.stats().unwrap().corrupt_entries,
            0,
            "round {round}: the disk tier found damaged entries"
        );
    }

    let cache = Cache::open(Config::default().with_cache_dir(&dir)).unwrap();
    let repair = cache.doctor(Mode::Apply, Duration::ZERO).unwrap();
    let after = cache.doctor(Mode::DryRun, Duration::ZERO).unwrap();
    assert!(
        after.is_clean(),
        "doctor not clean after one repair: {after:?} (repair did {repair:?})"
    );
    assert_eq!(
        repair.corrupt_entries, 0,
        "corrupt rows after kills: {repair:?}"
    );
    // Everything acknowledged is still there after the repair.
    for (k, kn) in &known {
        if let Some(last) = kn.acked.iter().max() {
            let h = crate::support::fresh(cache.get(&key(*k)).await.unwrap());
            assert!(validate(*k, h.value()).unwrap() >= *last);
        }
    }
    assert!(acks >= rounds, "too few acknowledged writes: {acks}");
    for (point, _) in POINTS {
        assert_eq!(
            named_kills.get(point),
            Some(&NAMED_ROUNDS),
            "kills at {point}"
        );
    }
    let mut at_points: Vec<String> = named_kills
        .iter()
        .map(|(p, n)| format!("{p}:{n}"))
        .collect();
    at_points.sort();
    eprintln!(
        "crash: rounds={} kills={kills} (at named points {}; before READY {killed_before_ready}, \
         mid-write {killed_in_flight}) acked_writes={acks} checked_reads={checked_reads} \
         in_flight_writes_seen={in_flight_won} stale_reads={stale_reads} \
         corrupt_reads={corrupt_reads} lost_acknowledged_writes={lost_writes} \
         doctor_repair: orphans={} temp_files={} rows_without_blob={} elapsed={:?}",
        rounds + named.len() as u64,
        at_points.join(" "),
        repair.repair.orphan_blobs,
        repair.repair.temp_files,
        repair.repair.rows_without_blob,
        started.elapsed()
    );
}
