//! Connections to the index: one writer taken in turn (first come, first served), a pool of
//! readers, WAL mode, busy waits in short sleeps, and the mapping of SQLite failures to errors
//! callers can branch on (read-only, disk full, damage).

#[allow(clippy::wildcard_imports)]
use super::*;

/// How long a writer waits for another process's transaction before failing.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest sleep between two tries for a lock another process holds. SQLite's own busy
/// handler sleeps up to 100 ms at a time, so a writer could wait that long after the lock was
/// free again; maintenance pauses longer than this between its batches (see [`BATCH_PAUSE`]).
pub(super) const BUSY_SLEEP_MAX: Duration = Duration::from_micros(500);

/// The pause maintenance makes with the write lock released (after about 5 ms of batches):
/// longer than [`BUSY_SLEEP_MAX`], so a writer of another process polling for it finds it free.
pub(super) const BATCH_PAUSE: Duration = Duration::from_millis(1);

/// Pages of WAL after which a commit checkpoints (SQLite's default), used only when the
/// checkpoint thread could not be started.
pub(super) const WAL_AUTOCHECKPOINT: i64 = 1000;

/// Idle reader connections kept open.
pub(super) const MAX_IDLE_READERS: usize = 8;

pub(super) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Locks `m`, carrying on after a panic elsewhere held it (the data stays usable: a pool of
/// connections, pending access times).
pub(super) fn unpoisoned<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The busy handler of every connection: sleeps of 50, 100, 200, then [`BUSY_SLEEP_MAX`]
/// microseconds, giving up after [`BUSY_TIMEOUT`] in all.
pub(super) fn busy_wait(count: i32) -> bool {
    let n = u64::try_from(count).unwrap_or(0);
    let (sleep_us, waited_us) = match n {
        0 => (50, 0),
        1 => (100, 50),
        2 => (200, 150),
        _ => (BUSY_SLEEP_MAX.as_micros() as u64, 350 + (n - 3) * 500),
    };
    if u128::from(waited_us) >= BUSY_TIMEOUT.as_micros() {
        return false;
    }
    std::thread::sleep(Duration::from_micros(sleep_us));
    true
}

/// How often maintenance pauses with the write lock free: after `every` of holding it.
pub(super) struct Pace {
    pub(super) every: Duration,
    pub(super) held: Duration,
}

impl Pace {
    pub(super) fn new(every: Duration) -> Self {
        Self {
            every,
            held: Duration::ZERO,
        }
    }
}

/// Turns at the writer connection, served in the order they were asked for. A plain mutex
/// lets the thread that just released it take it again at once, so a sweep looping over its
/// batches could keep writers out for the whole sweep; here a writer that asked during a batch
/// is served before the sweep's next batch.
#[derive(Default)]
pub(super) struct WriterTurns {
    state: Mutex<Turns>,
    served: std::sync::Condvar,
}

#[derive(Default)]
struct Turns {
    next: u64,
    serving: u64,
    waiting: u64,
}

/// The writer's turn, held until dropped.
pub(super) struct Turn<'a>(&'a WriterTurns);

thread_local! {
    /// True while this thread holds a turn at the writer.
    static HOLDS_TURN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// True while this thread holds a turn at the writer (what it calls must not wait for one).
pub(super) fn holds_turn() -> bool {
    HOLDS_TURN.with(std::cell::Cell::get)
}

impl WriterTurns {
    /// Waits for this caller's turn.
    pub(super) fn take(&self) -> Turn<'_> {
        let mut t = unpoisoned(&self.state);
        let mine = t.next;
        t.next = t.next.wrapping_add(1);
        if t.serving != mine {
            t.waiting += 1;
            while t.serving != mine {
                t = self
                    .served
                    .wait(t)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            t.waiting -= 1;
        }
        HOLDS_TURN.with(|h| h.set(true));
        Turn(self)
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        HOLDS_TURN.with(|h| h.set(false));
        let mut t = unpoisoned(&self.0.state);
        t.serving = t.serving.wrapping_add(1);
        let wake = t.waiting > 0;
        drop(t);
        if wake {
            self.0.served.notify_all();
        }
    }
}

pub(crate) fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl DiskTier {
    pub(super) fn connect(db_path: &Path) -> Result<Connection> {
        let db = |source| Error::Index {
            path: db_path.to_path_buf(),
            source,
        };
        let conn = Connection::open_with_flags(
            db_path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db)?;
        let mut conn = conn;
        conn.busy_handler(Some(busy_wait)).map_err(db)?;
        // Switching to WAL needs a moment of exclusive access; retry while another opener has it.
        let mut attempts = 0;
        loop {
            match conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0)) {
                Ok(_) => break,
                Err(e) if is_busy(&e) && attempts < 100 => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(db(e)),
            }
        }
        // Checkpoints run on a thread of their own (see `wal.rs`), never inside a writer's
        // commit; the WAL is cut back once checkpointed, to 4 MiB or the smaller limit
        // `wal.rs` sets on the connections that write.
        conn.execute_batch(
            "PRAGMA synchronous=NORMAL; PRAGMA temp_store=MEMORY;
             PRAGMA journal_size_limit=4194304; PRAGMA wal_autocheckpoint=0;",
        )
        .map_err(db)?;
        Ok(conn)
    }

    pub(super) fn db_err(&self, source: rusqlite::Error) -> Error {
        // SQLite reports a write refused by a read-only filesystem as a plain I/O error (and
        // keeps the errno to itself), and a filesystem that went read-only on an error of its
        // own (ext4 `errors=remount-ro` aborting its journal) can leave SQLite reading pages it
        // calls malformed: ask the filesystem, so callers can tell a read-only disk from damage.
        if matches!(
            source.sqlite_error_code(),
            Some(rusqlite::ErrorCode::SystemIoFailure | rusqlite::ErrorCode::DatabaseCorrupt)
        ) {
            let probe = self
                .tmp
                .join(format!("probe-{:016x}.tmp", crate::random::u64()));
            match fs::File::create_new(&probe) {
                Ok(_) => {
                    let _ = fs::remove_file(&probe);
                }
                Err(e) if e.kind() == io::ErrorKind::ReadOnlyFilesystem => {
                    let reason = format!("{source}: {e}");
                    return Error::io(&self.db_path, io::Error::new(e.kind(), reason));
                }
                Err(_) => {}
            }
        }
        Error::Index {
            path: self.db_path.clone(),
            source,
        }
    }

    /// Refuses the index in a forked child of the process that opened this tier (see
    /// [`crate::after_fork_in_child`]): before any of the tier's locks is taken, since a
    /// thread of the parent may have held one at the fork. Asked where the tier first takes
    /// one: `flush_behind_first` (the write-behind queue), `read_now` and `write_now` (the
    /// connections), a single-key read (the queue, through `queued`).
    pub(super) fn in_opening_process(&self) -> Result<()> {
        if crate::forks() == self.forks {
            return Ok(());
        }
        Err(self.db_err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISUSE),
            Some(
                "this cache was opened before fork(): its index connections belong to the \
                 parent process; open the cache again in the child"
                    .to_owned(),
            ),
        )))
    }

    /// Runs `f` on a reader connection, after committing queued writes (see `behind`).
    pub(crate) fn with_reader<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        // Best effort for reads: a failed commit stays queued, and the next write reports it.
        let _ = self.flush_behind_first();
        self.read_now(f)
    }

    /// [`Self::with_reader`] without committing queued writes first: for the read of one
    /// key, which looks in the queue itself.
    pub(super) fn read_now<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        self.in_opening_process()?;
        let conn = unpoisoned(&self.readers).pop();
        let conn = match conn {
            Some(c) => c,
            None => Self::connect(&self.db_path)?,
        };
        let out = f(&conn).map_err(|e| self.db_err(e));
        let mut pool = unpoisoned(&self.readers);
        if pool.len() < MAX_IDLE_READERS {
            pool.push(conn);
        }
        out
    }

    pub(crate) fn with_writer<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        self.flush_behind_first()?;
        self.write_now(f)
    }

    /// [`Self::with_writer`] without committing queued writes first: for access times, which
    /// never conflict with a queued write (and are written while holding the touch queue's
    /// lock, which a commit's eviction takes too).
    pub(super) fn write_now<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        self.in_opening_process()?;
        let turn = self.turns.take();
        let (out, _) = self.holding_writer_lock(f);
        drop(turn);
        self.wal.note_pages(wal::PAGES_PER_COMMIT);
        out.map_err(|e| self.db_err(e))
    }

    /// Runs `f` on the writer connection holding the directory's writer lock (see
    /// `hostlock`), with how long the lock was held (not the wait for it); the caller holds a
    /// turn.
    fn holding_writer_lock<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> (rusqlite::Result<T>, Duration) {
        let held = match self.writer_lock.acquire() {
            Ok(held) => held,
            Err(e) => return (Err(e), Duration::ZERO),
        };
        // Only a writer holding the directory's writer lock can know it is alone.
        let alone = held.is_some() && self.presence.alone();
        self.alone_now.store(alone, Ordering::Relaxed);
        let since = crate::clock::Stopwatch::start();
        let mut conn = unpoisoned(&self.writer);
        let out = f(&mut conn);
        drop(conn);
        self.alone_now.store(false, Ordering::Relaxed);
        drop(held);
        (out, since.elapsed())
    }

    /// One batch of maintenance as [`Self::with_writer`]: writers of this process that
    /// asked meanwhile are served before the next batch (their turns come first). Once the
    /// batches since the last pause have held the lock for `pace` in all, the lock is left
    /// free for [`BATCH_PAUSE`], so a writer of another process, polling in [`busy_wait`],
    /// takes it. Returns the batch's result and how long it held the lock.
    pub(super) fn with_batch<T>(
        &self,
        pace: &mut Pace,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<(T, Duration)> {
        self.flush_behind_first()?;
        let turn = self.turns.take();
        let (out, took) = self.holding_writer_lock(f);
        drop(turn);
        self.wal.note_pages(wal::PAGES_PER_COMMIT);
        let out = out.map_err(|e| self.db_err(e));
        pace.held += took;
        if pace.held >= pace.every {
            std::thread::sleep(BATCH_PAUSE);
            pace.held = Duration::ZERO;
        }
        out.map(|v| (v, took))
    }

    /// [`Self::with_writer`] for deletes: when one fails for lack of space, the reserve is
    /// released and it runs once more; after one succeeds, a released reserve is put back if
    /// there is room.
    pub(super) fn with_deleter<T>(
        &self,
        f: impl Fn(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let out = match self.with_writer(&f) {
            Err(e) if e.is_disk_full() && self.reserve.release() => self.with_writer(&f),
            other => other,
        };
        if out.is_ok() {
            self.reserve.restore();
        }
        out
    }
}
