//! WAL upkeep off the writers' path: a thread with a connection of its own runs PASSIVE
//! checkpoints every few commits, and the WAL file is cut back to a size that follows the
//! tier's byte limit.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its threshold, while that
//! writer still holds the tier's writer turn: every writer of the process waited for the copy
//! and the fsync of the index (a long sweep, which turned it off and checkpointed once at the
//! end, held writers for as long as the copy took). A PASSIVE checkpoint takes no lock a writer
//! needs, so here writers never wait for one; and because it runs every few hundred pages
//! written (every batch of a sweep) the WAL stays short. Once a checkpoint has copied everything, the next
//! writer starts the WAL over and truncates the file to `journal_size_limit`.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Bytes the WAL file is cut back to after a checkpoint, for a tier limited to `limit` bytes:
/// a sixteenth of it, between 64 KiB and 64 MiB. (At SQLite's own 4 MiB, a bulk fill spent
/// a fifth of its time cutting the file back and growing it again: a bulk fill of 300 000
/// entries ran ~20 % faster with the larger bound.)
pub(super) fn wal_limit_for(limit: u64) -> u64 {
    (limit / 16).clamp(64 << 10, 64 << 20)
}

/// Frames written during a checkpoint pass few enough to copy with the writer turn held.
const CATCH_UP_FRAMES: i64 = 64;

/// WAL pages an ordinary commit is counted as: the row's leaf, a leaf of each of its three
/// indexes, the totals, the change-feed row and the pages above them. Counted at 4, checkpoints
/// were asked for three times too seldom: under a stream of small sets the WAL outgrew its
/// bound to 180-320 MB, and the writer that started it over stalled sets and reads ~80-100 ms.
pub(super) const PAGES_PER_COMMIT: u64 = 12;

/// Pages written between two checkpoints for a WAL limit: half the limit, at least 8.
fn pages_for(wal_limit: u64) -> u64 {
    (wal_limit / 2 / 4096).max(8)
}

#[derive(Default)]
struct State {
    /// WAL pages written (as estimated) since the last checkpoint started.
    pages: u64,
    /// Checkpoints started.
    started: u64,
    /// Checkpoints completed.
    done: u64,
    stop: bool,
}

/// Shared between the tier, its access-time flusher and the checkpoint thread.
pub(super) struct WalUpkeep {
    db_path: PathBuf,
    /// The tier's writer turns: taken only to finish a checkpoint the writers outran.
    turns: Arc<WriterTurns>,
    state: Mutex<State>,
    /// Signalled when a checkpoint is due, and at shutdown.
    due: std::sync::Condvar,
    /// Signalled when a checkpoint completes.
    done: std::sync::Condvar,
    /// `journal_size_limit` for connections that write.
    limit: AtomicU64,
    /// True while the checkpoint thread runs (otherwise the writer checkpoints itself).
    running: std::sync::atomic::AtomicBool,
}

impl WalUpkeep {
    pub(super) fn new(db_path: &Path, turns: Arc<WriterTurns>) -> Self {
        Self {
            db_path: db_path.to_path_buf(),
            turns,
            state: Mutex::new(State::default()),
            due: std::sync::Condvar::new(),
            done: std::sync::Condvar::new(),
            limit: AtomicU64::new(wal_limit_for(u64::MAX)),
            running: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The `journal_size_limit` connections that write should have.
    pub(super) fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    pub(super) fn set_limit(&self, bytes: u64) {
        self.limit.store(bytes, Ordering::Relaxed);
    }

    /// Applies the current limit to `conn` if `applied` differs; returns the limit applied.
    pub(super) fn apply_limit(&self, conn: &Connection, applied: u64) -> u64 {
        let limit = self.limit();
        if limit != applied
            && conn
                .query_row(
                    &format!("PRAGMA journal_size_limit={}", i64_of(limit)),
                    [],
                    |_| Ok(()),
                )
                .is_ok()
        {
            return limit;
        }
        applied
    }

    /// Counts `n` pages written to the WAL; wakes the checkpoint thread when enough have
    /// accumulated.
    pub(super) fn note_pages(&self, n: u64) {
        if n == 0 {
            return;
        }
        let mut s = unpoisoned(&self.state);
        s.pages = s.pages.saturating_add(n);
        if s.pages >= pages_for(self.limit()) {
            self.due.notify_one();
        }
    }

    /// After a batch of maintenance (outside the write lock): asks for a checkpoint, and when
    /// the WAL file has outgrown its limit (the checkpoints fall behind the batches) waits
    /// for one, at most `max`.
    pub(super) fn after_batch(&self, max: Duration) {
        if self.wal_len() > self.limit() {
            self.checkpoint_and_wait(max);
        } else {
            let mut s = unpoisoned(&self.state);
            s.pages = u64::MAX / 2;
            self.due.notify_one();
        }
    }

    /// Asks for a checkpoint now and waits (at most `max`) for one that started after the
    /// request to complete. For maintenance, between its batches: it then never runs ahead of
    /// the checkpoints, so the WAL stays short; writers never call this.
    fn checkpoint_and_wait(&self, max: Duration) {
        if !self.running.load(Ordering::Acquire) {
            return;
        }
        let mut s = unpoisoned(&self.state);
        // One in progress may have started before the request: wait for the next to start.
        let target = s.started + 1;
        s.pages = u64::MAX / 2;
        self.due.notify_one();
        let waited = crate::clock::Stopwatch::start();
        while s.done < target && !s.stop {
            let Some(left) = max.checked_sub(waited.elapsed()) else {
                break;
            };
            s = self
                .done
                .wait_timeout(s, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Starts the checkpoint thread; `None` when it could not be started (writers then keep
    /// SQLite's automatic checkpoint).
    pub(super) fn spawn(this: &Arc<Self>) -> Option<std::thread::JoinHandle<()>> {
        let wal = Arc::clone(this);
        let handle = std::thread::Builder::new()
            .name("freshcache-wal".into())
            .spawn(move || wal.run())
            .ok()?;
        this.running.store(true, Ordering::Release);
        Some(handle)
    }

    fn run(&self) {
        let mut conn: Option<Connection> = None;
        let mut applied = 0;
        loop {
            {
                let mut s = unpoisoned(&self.state);
                while s.pages < pages_for(self.limit()) && !s.stop {
                    let (g, timeout) = self
                        .due
                        .wait_timeout(s, Duration::from_secs(1))
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    s = g;
                    // Now and then, whatever the count: other processes write here too.
                    if timeout.timed_out() && s.pages > 0 {
                        break;
                    }
                }
                if s.stop {
                    self.running.store(false, Ordering::Release);
                    self.done.notify_all();
                    return;
                }
                s.pages = 0;
                s.started += 1;
            }
            if conn.is_none() {
                conn = DiskTier::connect(&self.db_path).ok();
            }
            if let Some(c) = &conn {
                applied = self.apply_limit(c, applied);
                self.checkpoint(c);
            }
            let mut s = unpoisoned(&self.state);
            s.done += 1;
            drop(s);
            self.done.notify_all();
        }
    }

    /// One PASSIVE checkpoint: it copies what no reader needs, without waiting for any lock.
    /// Writers that never pause outrun it (the WAL starts over only when a writer begins with
    /// every frame copied), so when the WAL file has outgrown its limit the frames written
    /// during the copy are copied once more with this process's writer turn held: a short copy
    /// of a few frames, after which the next writer starts the WAL over and cuts it back.
    fn checkpoint(&self, c: &Connection) {
        let passive = || c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1));
        let mut last = match passive() {
            Ok(log) => log,
            Err(e) => {
                tracing::debug!(error = %e, "disk tier: checkpoint failed");
                return;
            }
        };
        if self.wal_len() <= self.limit() {
            return;
        }
        // Each pass copies what was written during the one before: a few more passes without
        // the turn leave only a few frames for the pass that holds it (after at most four, it
        // is taken whatever is left, or the WAL would grow for as long as writers never pause).
        for _ in 0..3 {
            match passive() {
                Ok(log) if log.saturating_sub(last) <= CATCH_UP_FRAMES => break,
                Ok(log) => last = log,
                Err(e) => {
                    tracing::debug!(error = %e, "disk tier: checkpoint failed");
                    return;
                }
            }
        }
        let _turn = self.turns.take();
        if let Err(e) = passive() {
            tracing::debug!(error = %e, "disk tier: checkpoint failed");
        }
    }

    /// Length of the WAL file (0 when there is none).
    fn wal_len(&self) -> u64 {
        let mut wal = self.db_path.as_os_str().to_owned();
        wal.push("-wal");
        fs::metadata(PathBuf::from(wal)).map_or(0, |m| m.len())
    }

    /// Stops the checkpoint thread (it finishes a checkpoint in progress first).
    pub(super) fn stop(&self) {
        let mut s = unpoisoned(&self.state);
        s.stop = true;
        drop(s);
        self.due.notify_all();
    }
}

/// Bytes allocated on disk for the file at `path` (`st_blocks` × 512), 0 when it is missing.
pub(super) fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(path).map_or(0, |m| m.blocks().saturating_mul(512))
}
