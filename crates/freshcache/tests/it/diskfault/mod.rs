//! Disk faults: the cache directory on a tiny filesystem filled to ENOSPC, out of inodes, and
//! forced read-only under load.
//!
//! Invariants, whatever the fault: a failed write returns a typed error
//! ([`freshcache::StorageFault`]) within a bounded time and never panics; every acknowledged
//! entry still reads back byte-identical; the index stays consistent (`doctor` clean, no temp
//! files left); writes succeed again once space (or writability) returns.
//!
//! Each test mounts its own tmpfs (or loop-mounted ext4 image) under a fresh temp dir and
//! unmounts it on drop, panic included. Where mounting is not permitted the test says so loudly
//! and runs the same assertions through the disk tier's blob-write fault seam; the seam variants
//! also run on their own, always, so the seam keeps working.
//!
//! Layout under each test's root: `cache/` (the cache directory and its index) and `filler/`
//! (files that take space or inodes; removing them is "space returns").

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use freshcache::internals::{BlobStep, FsFaults};
use freshcache::maintenance::Mode;
use freshcache::{Cache, Config, Key, Lookup, ManualClock, StorageFault, Value};
use tempfile::TempDir;

use crate::support::{T0, files_under, noise};

mod fs;
use fs::*;

/// Linux errno values the seam reports, as the kernel would.
const ENOSPC: i32 = 28;
const EROFS: i32 = 30;

/// Acknowledged writes: key name and value.
type Entries = Vec<(String, Vec<u8>)>;

/// No test needs more writes than this to fill its filesystem.
const MAX_FILL_WRITES: u64 = 5_000;
/// A write, read or fault transition that takes longer than this is a hang.
const BOUND: Duration = Duration::from_secs(30);

const LOUD: &str = "DISK FAULT TEST: mount not permitted here — running through the fault seam";

fn config(dir: &Path) -> Config {
    // Disk-only: every read below really reads the disk tier.
    Config::from_yaml_str(
        "cache:\n  data_types:\n    llm_features:\n      placement: disk_only\n",
        None,
        Vec::new(),
    )
    .unwrap()
    .with_cache_dir(dir)
}

fn open(dir: &Path, clock: &ManualClock) -> Cache {
    Cache::builder(config(dir))
        .clock(clock.clone())
        .open()
        .unwrap()
}

fn key(name: &str) -> Key {
    Key::llm_features(name, "2026-11-24").unwrap()
}

/// Incompressible bytes above the inline limit, so each value is a blob file.
fn blob_value(seed: u64) -> Vec<u8> {
    noise(seed, 12 * 1024 + (seed % 5) as usize * 3 * 1024)
}

/// A small value that lives inline in the index.
fn inline_value(seed: u64) -> Vec<u8> {
    noise(seed, 300)
}

#[track_caller]
fn assert_fault(e: &freshcache::Error, want: StorageFault, what: &str) {
    assert_eq!(
        e.storage_fault(),
        Some(want),
        "{what}: expected a typed {want:?} error, got {e} ({e:?})"
    );
    assert!(e.is_transient(), "{what}: {e} should be retryable");
}

/// Every `(key, value)` in `acked` reads back fresh and byte-identical from the disk tier.
async fn verify(cache: &Cache, acked: &[(String, Vec<u8>)], what: &str) -> usize {
    for (k, v) in acked {
        match cache.get(&key(k)).await {
            Ok(Lookup::Fresh(h)) => assert!(
                h.value().as_ref() == v.as_slice(),
                "{what}: {k} read back different bytes ({} vs {})",
                h.value().len(),
                v.len()
            ),
            other => panic!("{what}: acknowledged {k} not served: {other:?}"),
        }
    }
    acked.len()
}

/// Like [`verify`], for entries the filesystem may have lost (written but never synced before
/// it failed): each is either byte-identical or a miss, never other bytes. Returns how many
/// were lost.
async fn verify_or_lost(cache: &Cache, written: &[(String, Vec<u8>)], what: &str) -> usize {
    let mut lost = 0;
    for (k, v) in written {
        match cache.get(&key(k)).await {
            Ok(Lookup::Fresh(h)) => assert!(
                h.value().as_ref() == v.as_slice(),
                "{what}: {k} read back different bytes"
            ),
            Ok(l) if l.is_miss() => lost += 1,
            other => panic!("{what}: {k}: {other:?}"),
        }
    }
    lost
}

#[track_caller]
fn assert_doctor_clean(cache: &Cache, what: &str) {
    let report = cache.doctor(Mode::DryRun, Duration::ZERO).unwrap();
    assert!(report.is_clean(), "{what}: doctor not clean: {report:?}");
}

/// The index and its WAL files with their sizes.
fn index_files(cache_dir: &Path) -> Vec<(String, u64)> {
    ["metadata.db", "metadata.db-wal", "metadata.db-shm"]
        .iter()
        .filter_map(|n| {
            Some((
                n.to_string(),
                std::fs::metadata(cache_dir.join(n)).ok()?.len(),
            ))
        })
        .collect()
}

fn temp_files(cache_dir: &Path) -> Vec<PathBuf> {
    files_under(&cache_dir.join("tmp"))
}

/// Fills the cache under `root` until a write fails, then checks the invariants and recovery.
/// Returns the summary line.
async fn fill_until_full(root: &Path, what: Exhaust, seam: Option<Arc<SeamFs>>) -> String {
    let label = match (what, &seam) {
        (Exhaust::Space, None) => "enospc",
        (Exhaust::Space, Some(_)) => "enospc (seam)",
        (Exhaust::Inodes, None) => "out of inodes",
        (Exhaust::Inodes, Some(_)) => "out of inodes (seam)",
    };
    let clock = ManualClock::new(T0);
    let dir = root.join("cache");
    let cache = open(&dir, &clock);
    if let Some(seam) = &seam {
        assert!(cache.inject_fs_faults(seam.clone()));
    }
    make_filler(root, what);

    // Fill: blob values, with an inline one every few writes.
    let mut acked: Vec<(String, Vec<u8>)> = Vec::new();
    let mut bytes = 0u64;
    let full = loop {
        let n = acked.len() as u64;
        assert!(n < MAX_FILL_WRITES, "{label}: never filled up");
        let name = format!("fill{n}");
        let v = if n % 4 == 3 {
            inline_value(n)
        } else {
            blob_value(n)
        };
        match cache.set(&key(&name), Value::bytes(v.clone())).await {
            Ok(_) => {
                bytes += v.len() as u64;
                acked.push((name, v));
            }
            Err(e) => break e,
        }
    };
    let writes = acked.len();
    assert!(
        writes > 0,
        "{label}: the first write already failed: {full}"
    );
    assert_fault(&full, StorageFault::DiskFull, label);
    if seam.is_none() {
        top_up(root, what);
    }

    // Still full: another new blob fails the same way, and overwriting an entry fails and
    // leaves the old value in place.
    let again = cache
        .set(&key("another"), Value::bytes(blob_value(99_999)))
        .await
        .expect_err("a new blob on a full filesystem");
    assert_fault(&again, StorageFault::DiskFull, label);
    let (k0, _) = acked.iter().find(|(_, v)| v.len() > 1024).unwrap().clone();
    let over = cache
        .set(&key(&k0), Value::bytes(blob_value(77_777)))
        .await
        .expect_err("an overwrite on a full filesystem");
    assert_fault(&over, StorageFault::DiskFull, label);

    // Reads go on: every acknowledged entry, from this instance and from a fresh one.
    let mut verified = verify(&cache, &acked, label).await;
    let other = open(&dir, &clock);
    verified += verify(&other, &acked, label).await;
    drop(other);
    assert!(
        temp_files(&dir).is_empty(),
        "{label}: failed writes left temp files: {:?}",
        temp_files(&dir)
    );
    assert_doctor_clean(&cache, label);

    // Deleting entries frees room while the filesystem is still full.
    let drop_n = acked.len() / 4 + 1;
    for (k, _) in acked.drain(..drop_n) {
        let removed = cache.delete(&key(&k)).await;
        assert!(
            matches!(removed, Ok(true)),
            "{label}: delete of {k} on a full filesystem: {removed:?}; index files: {:?}",
            index_files(&dir)
        );
    }
    let retry = cache
        .set(&key("after-delete"), Value::bytes(blob_value(1)))
        .await;
    assert!(
        retry.is_ok(),
        "{label}: write after deleting {drop_n} entries: {retry:?}"
    );
    acked.push(("after-delete".into(), blob_value(1)));

    // Removing the filler gives the rest back; a run of writes succeeds.
    let freed = remove_filler(root);
    let recovered_writes = 8;
    for i in 0..recovered_writes {
        let name = format!("recovered{i}");
        let v = blob_value(50_000 + i);
        if let Err(e) = cache.set(&key(&name), Value::bytes(v.clone())).await {
            panic!("{label}: write {i} after freeing {freed} bytes failed: {e}");
        }
        acked.push((name, v));
    }
    verified += verify(&cache, &acked, label).await;
    assert_doctor_clean(&cache, label);
    if let Some(seam) = &seam {
        assert!(
            seam.faults.load(Ordering::Relaxed) >= 2,
            "{label}: seam never fired"
        );
    }
    format!(
        "diskfault: {label} after {writes} writes ({bytes} bytes), {verified} entries verified \
         intact, writes recovered after deleting {drop_n} entries and freeing {freed} bytes"
    )
}

/// How a test forces its filesystem read-only and back.
enum ReadOnly<'a> {
    /// A real mount: tried with `mount -o remount,ro`, else forced by an ext4 error.
    Mount(&'a Mount),
    /// The fault seam.
    Seam(Arc<SeamFs>),
}

/// Writers and a reader run while the filesystem turns read-only: writes fail typed within a
/// bounded time, reads go on and are correct, and writes succeed once it is writable again.
async fn read_only_under_load(root: &Path, mut how: ReadOnly<'_>) -> String {
    const WRITERS: usize = 3;
    let clock = ManualClock::new(T0);
    let dir = root.join("cache");
    let mut cache = Some(open(&dir, &clock));
    let label = match &how {
        ReadOnly::Mount(_) => "read-only",
        ReadOnly::Seam(seam) => {
            assert!(
                cache
                    .as_ref()
                    .unwrap()
                    .inject_fs_faults(seam.clone() as Arc<dyn FsFaults>)
            );
            "read-only (seam)"
        }
    };

    let mut base: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..40u64 {
        let name = format!("base{i}");
        let v = if i % 4 == 3 {
            inline_value(i)
        } else {
            blob_value(i)
        };
        cache
            .as_ref()
            .unwrap()
            .set(&key(&name), Value::bytes(v.clone()))
            .await
            .unwrap();
        base.push((name, v));
    }
    if let ReadOnly::Mount(m) = &how {
        // Synced: these must survive whatever the fault does to unsynced data.
        run(Command::new("sync").arg("-f").arg(&m.dir)).unwrap();
    }
    let base = Arc::new(base);

    let handle = tokio::runtime::Handle::current();
    let stop = Arc::new(AtomicBool::new(false));
    let faulted = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Entries>> = Arc::default();
    // Per writer: typed failures seen since the fault; untyped failures are collected.
    let failed_after: Arc<Vec<AtomicU64>> =
        Arc::new((0..WRITERS).map(|_| AtomicU64::new(0)).collect());
    let bad: Arc<Mutex<Vec<String>>> = Arc::default();
    let reads = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for w in 0..WRITERS {
        let (cache, handle, stop, faulted, acked, failed_after, bad) = (
            cache.clone().unwrap(),
            handle.clone(),
            stop.clone(),
            faulted.clone(),
            acked.clone(),
            failed_after.clone(),
            bad.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let mut j = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("w{w}n{j}");
                let v = if j % 5 == 4 {
                    inline_value(w as u64 * 1_000_000 + j)
                } else {
                    blob_value(w as u64 * 1_000_000 + j)
                };
                let was_faulted = faulted.load(Ordering::Acquire);
                match handle.block_on(cache.set(&key(&name), Value::bytes(v.clone()))) {
                    Ok(_) => acked.lock().unwrap().push((name, v)),
                    Err(e) if e.is_read_only() => {
                        if was_faulted {
                            failed_after[w].fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        bad.lock().unwrap().push(format!("{name}: {e} ({e:?})"));
                        if was_faulted {
                            failed_after[w].fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                j += 1;
            }
        }));
    }
    {
        let (cache, handle, stop, base, reads, bad) = (
            cache.clone().unwrap(),
            handle.clone(),
            stop.clone(),
            base.clone(),
            reads.clone(),
            bad.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let (k, v) = &base[i % base.len()];
                match handle.block_on(cache.get(&key(k))) {
                    Ok(Lookup::Fresh(h)) if h.value().as_ref() == v.as_slice() => {}
                    other => bad.lock().unwrap().push(format!("read {k}: {other:?}")),
                }
                reads.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }

    // Let the load run, then make the filesystem read-only under it.
    let wait_for = |cond: &dyn Fn() -> bool, what: &str| {
        let deadline = Instant::now() + BOUND;
        while !cond() {
            assert!(Instant::now() < deadline, "{label}: no progress: {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait_for(
        &|| acked.lock().unwrap().len() >= 20,
        "writes before the fault",
    );
    let mechanism = match &how {
        ReadOnly::Seam(seam) => {
            seam.read_only.store(true, Ordering::Release);
            "seam".to_owned()
        }
        ReadOnly::Mount(m) => {
            match run(Command::new("mount").args(["-o", "remount,ro"]).arg(&m.dir)) {
                Ok(()) => "mount -o remount,ro".to_owned(),
                Err(refused) => {
                    // The kernel refuses a read-only remount while files are open for writing (the
                    // index always is): the way a mounted filesystem turns read-only under load is
                    // an error on an `errors=remount-ro` filesystem.
                    eprintln!(
                        "diskfault: remount,ro refused under load ({refused}); forcing an ext4 error"
                    );
                    let dev = m.source();
                    let name = dev.trim_start_matches("/dev/");
                    std::fs::write(format!("/sys/fs/ext4/{name}/trigger_fs_error"), "1")
                        .unwrap_or_else(|e| panic!("{label}: cannot force {dev} read-only: {e}"));
                    format!("ext4 errors=remount-ro on {dev} ({})", m.mount_options())
                }
            }
        }
    };
    faulted.store(true, Ordering::Release);
    let reads_at_fault = reads.load(Ordering::Relaxed);
    let acked_at_fault = acked.lock().unwrap().len();
    let fault_at = Instant::now();
    wait_for(
        &|| failed_after.iter().all(|n| n.load(Ordering::Relaxed) >= 3),
        "every writer sees its writes fail",
    );
    let detected = fault_at.elapsed();
    wait_for(
        &|| reads.load(Ordering::Relaxed) >= reads_at_fault + 200,
        "reads after the fault",
    );
    stop.store(true, Ordering::Release);
    let joined = Arc::new(AtomicU64::new(0));
    for t in threads {
        let joined = joined.clone();
        // Joined off this thread so a hung writer fails the test instead of blocking it.
        std::thread::spawn(move || {
            let _ = t.join();
            joined.fetch_add(1, Ordering::Release);
        });
    }
    wait_for(
        &|| joined.load(Ordering::Acquire) == WRITERS as u64 + 1,
        "threads stop",
    );
    let bad = std::mem::take(&mut *bad.lock().unwrap());
    assert!(
        bad.is_empty(),
        "{label}: untyped errors or wrong reads: {bad:#?}"
    );
    let reads_after = reads.load(Ordering::Relaxed) - reads_at_fault;
    let acked_during = acked.lock().unwrap().len() - acked_at_fault;

    // Everything acknowledged, before or during the fault, reads back while read-only.
    let mut all: Vec<(String, Vec<u8>)> = base.to_vec();
    all.extend(acked.lock().unwrap().iter().cloned());
    let mut verified = verify(
        cache.as_ref().unwrap(),
        &all,
        &format!("{label}, while read-only"),
    )
    .await;
    let fail = cache
        .as_ref()
        .unwrap()
        .set(&key("while-ro"), Value::bytes(blob_value(3)))
        .await
        .expect_err("a write on a read-only filesystem");
    assert_fault(&fail, StorageFault::ReadOnly, label);

    // Writable again.
    let mut lost = 0;
    match &mut how {
        ReadOnly::Seam(seam) => seam.read_only.store(false, Ordering::Release),
        ReadOnly::Mount(m) => {
            let remounted = run(Command::new("mount").args(["-o", "remount,rw"]).arg(&m.dir));
            if remounted.is_err() || m.mount_options().contains("emergency_ro") {
                // An ext4 error needs a check before the filesystem is writable again: close
                // the cache, unmount, fsck, mount, reopen (what an operator does).
                drop(cache.take());
                run(Command::new("umount").arg(&m.dir)).unwrap();
                let image = m.image.clone().unwrap();
                let _ = Command::new("e2fsck").arg("-fy").arg(&image).output();
                run(Command::new("mount")
                    .args(["-o", "loop,errors=remount-ro"])
                    .arg(&image)
                    .arg(&m.dir))
                .unwrap();
                cache = Some(open(&dir, &clock));
                // The error aborted the journal: writes acknowledged but not yet synced may be
                // gone (the cache does not fsync each write). None may come back wrong.
                let c = cache.as_ref().unwrap();
                c.doctor(Mode::Apply, Duration::ZERO).unwrap();
                lost = verify_or_lost(c, &all[base.len()..], label).await;
                all.truncate(base.len());
            }
        }
    }
    let cache = cache.unwrap();
    // Blobs and temp files stranded by writes that failed half-way are repaired once.
    let repair = cache.doctor(Mode::Apply, Duration::ZERO).unwrap();
    assert_eq!(repair.corrupt_entries, 0, "{label}: {repair:?}");
    assert_doctor_clean(&cache, label);
    for i in 0..8u64 {
        let name = format!("after{i}");
        let v = blob_value(70_000 + i);
        if let Err(e) = cache.set(&key(&name), Value::bytes(v.clone())).await {
            panic!("{label}: write {i} after the filesystem is writable again failed: {e}");
        }
        all.push((name, v));
    }
    verified += verify(&cache, &all, label).await;
    assert_doctor_clean(&cache, label);
    format!(
        "diskfault: {label} via {mechanism}: writers failed typed within {detected:?}, \
         {acked_during} writes acknowledged after it, {reads_after} correct reads after \
         it, {verified} entries verified intact, {lost} unsynced writes lost by the filesystem \
         (none served wrong), writes recovered (repair: {} orphan blobs, {} temp files)",
        repair.repair.orphan_blobs, repair.repair.temp_files
    )
}

/// Invariant: filling a 3 MiB tmpfs ends in a typed disk-full error; acknowledged entries stay
/// intact and the index consistent; deleting entries and removing a filler file lets writes
/// succeed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_tmpfs_fails_writes_typed_and_recovers_when_space_returns() {
    let line = match Mount::tmpfs(3 << 20, 10_000) {
        Some(m) => fill_until_full(&m.dir, Exhaust::Space, None).await,
        None => {
            let root = tempfile::tempdir().unwrap();
            let seam = SeamFs::new(root.path(), 3 << 20, u64::MAX);
            fill_until_full(root.path(), Exhaust::Space, Some(seam)).await
        }
    };
    eprintln!("{line}");
}

/// Invariant: a tmpfs out of inodes (but not of bytes) fails writes with the same typed error
/// and recovers when files are removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tmpfs_out_of_inodes_fails_writes_typed_and_recovers() {
    let line = match Mount::tmpfs(64 << 20, 96) {
        Some(m) => fill_until_full(&m.dir, Exhaust::Inodes, None).await,
        None => {
            let root = tempfile::tempdir().unwrap();
            let seam = SeamFs::new(root.path(), u64::MAX, 96);
            fill_until_full(root.path(), Exhaust::Inodes, Some(seam)).await
        }
    };
    eprintln!("{line}");
}

/// Invariant: a filesystem turning read-only under concurrent writers fails every write with a
/// typed read-only error within a bounded time, reads keep returning the right bytes, and
/// writes succeed once it is writable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filesystem_turning_read_only_under_load_fails_writes_typed_and_reads_go_on() {
    let line = match Mount::ext4(64) {
        Some(m) => read_only_under_load(&m.dir, ReadOnly::Mount(&m)).await,
        None => {
            let root = tempfile::tempdir().unwrap();
            let seam = SeamFs::new(root.path(), u64::MAX, u64::MAX);
            read_only_under_load(root.path(), ReadOnly::Seam(seam)).await
        }
    };
    eprintln!("{line}");
}

/// The seam variants run always, so the seam keeps working where mounts are permitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seam_full_disk_fails_writes_typed_and_recovers() {
    let root = tempfile::tempdir().unwrap();
    let seam = SeamFs::new(root.path(), 3 << 20, u64::MAX);
    eprintln!(
        "{}",
        fill_until_full(root.path(), Exhaust::Space, Some(seam)).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seam_out_of_inodes_fails_writes_typed_and_recovers() {
    let root = tempfile::tempdir().unwrap();
    let seam = SeamFs::new(root.path(), u64::MAX, 96);
    eprintln!(
        "{}",
        fill_until_full(root.path(), Exhaust::Inodes, Some(seam)).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seam_read_only_under_load_fails_writes_typed_and_reads_go_on() {
    let root = tempfile::tempdir().unwrap();
    let seam = SeamFs::new(root.path(), u64::MAX, u64::MAX);
    eprintln!(
        "{}",
        read_only_under_load(root.path(), ReadOnly::Seam(seam)).await
    );
}
