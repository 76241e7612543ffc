//! The directory's writer lock (`writer.lock`, an advisory `flock` shared by every process
//! that opens the directory): a writer takes it after its turn at this process's writer
//! connection and holds it from before its transaction until the blob files its commit
//! replaced or removed are gone.
//!
//! The index's own write lock ends at the commit, before those files are removed; without this
//! one, a write of another process could start, commit and return while a blob an earlier
//! commit retired was still in place. A kept blob location (see `reread`) would then serve that
//! blob after the later write had returned: a value two writes old. With it, a blob that still
//! opens is either the value its row names or the value of a write still under way (which a
//! read overlapping it may return).
//!
//! Waits as the index's busy handler does (short sleeps, failing after [`BUSY_TIMEOUT`]); the
//! kernel releases the lock of a process that dies holding it (and of a child it forked
//! without exec, which shares the lock, once that child ends too). On a filesystem that
//! refuses `flock`, writers go on without it and blob locations are not used.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::FlockOperation;
use rustix::io::Errno;

use super::conn::{BUSY_TIMEOUT, busy_wait};

/// The lock file's name in the cache directory.
pub(super) const LOCK_FILE: &str = "writer.lock";

/// Opens (creating if needed) a lock file, never through a symbolic link: for reading and
/// writing, or for reading only where this user may not write it (a directory shared by a
/// group); the locks taken on it need no more. Created readable and writable by everyone the
/// umask lets.
pub(super) fn open_lock_file(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let open = |write: bool| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .create(write)
            .truncate(false)
            .mode(0o666)
            .custom_flags(i32::try_from(rustix::fs::OFlags::NOFOLLOW.bits()).unwrap_or(0))
            .open(path)
    };
    match open(true) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => open(false),
        other => other,
    }
}

/// The writer lock of one open tier.
#[derive(Debug)]
pub(super) struct WriterLock {
    /// Always the lock file (an option only for the tier's tests of a tier without one).
    file: Option<File>,
    /// Set once taking the lock failed for a reason other than another holder.
    failed: AtomicBool,
}

/// The lock, held until dropped.
pub(super) struct Held<'a>(&'a File);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let _ = rustix::fs::flock(self.0, FlockOperation::Unlock);
    }
}

impl WriterLock {
    /// Opens (creating if needed) the lock file in `dir`; never through a symbolic link.
    ///
    /// # Errors
    /// [`Error::Io`] when it cannot be opened: a writer going on without it would let the
    /// other processes' kept blob locations serve values two writes old.
    pub(super) fn open(dir: &Path) -> crate::error::Result<Self> {
        let path = dir.join(LOCK_FILE);
        let file = open_lock_file(&path).map_err(|e| crate::error::Error::io(&path, e))?;
        Ok(Self {
            file: Some(file),
            failed: AtomicBool::new(false),
        })
    }

    /// Waits for the lock; `None` where it cannot be taken at all (see [`Self::works`]).
    ///
    /// # Errors
    /// `SQLITE_BUSY`, as the index reports a lock held too long, when another process held it
    /// for [`BUSY_TIMEOUT`].
    pub(super) fn acquire(&self) -> rusqlite::Result<Option<Held<'_>>> {
        let Some(file) = &self.file else {
            return Ok(None);
        };
        let mut tries = 0;
        loop {
            match rustix::fs::flock(file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(Some(Held(file))),
                Err(Errno::WOULDBLOCK | Errno::INTR) => {
                    if !busy_wait(tries) {
                        return Err(rusqlite::Error::SqliteFailure(
                            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                            Some(format!(
                                "another process held the cache directory's {LOCK_FILE} for \
                                 {BUSY_TIMEOUT:?}"
                            )),
                        ));
                    }
                    tries += 1;
                }
                Err(e) => {
                    if !self.failed.swap(true, Ordering::AcqRel) {
                        tracing::warn!(error = %e,
                            "disk tier: the filesystem refuses the writer lock; blob locations are not kept");
                    }
                    return Ok(None);
                }
            }
        }
    }

    /// Whether writers hold the lock as described above, so blob locations may be used.
    pub(super) fn works(&self) -> bool {
        self.file.is_some() && !self.failed.load(Ordering::Acquire)
    }
}
