//! Connections to the index: one writer, a pool of readers, WAL mode, busy waits, and the
//! mapping of SQLite failures to errors callers can branch on (read-only, disk full, damage).

#[allow(clippy::wildcard_imports)]
use super::*;

/// How long a writer waits for another process's transaction before failing.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Pages of WAL after which a commit checkpoints (SQLite's default).
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
        conn.busy_timeout(BUSY_TIMEOUT).map_err(db)?;
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
        // The WAL is cut back to this size once checkpointed (a bulk sweep can grow it to the
        // size of the index).
        conn.execute_batch(
            "PRAGMA synchronous=NORMAL; PRAGMA temp_store=MEMORY;
             PRAGMA journal_size_limit=67108864;",
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
                .join(format!("probe-{:016x}.tmp", fastrand::u64(..)));
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

    pub(crate) fn with_reader<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
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
        let mut conn = unpoisoned(&self.writer);
        f(&mut conn).map_err(|e| self.db_err(e))
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
