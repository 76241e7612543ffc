//! Who else has the index open: a process whose writer finds no one else can leave its changes
//! out of the change feed (a page less in every commit, a fifth of a small set's time).
//!
//! Every tier holds a shared POSIX lock on `<index>-presence` for as long as it is open (one
//! open file and one lock per process and index, shared by the tiers of the process, so that
//! closing one tier's file cannot drop another's lock), and so does a change follower that
//! belongs to no tier. A writer holding the directory's writer lock asks the kernel whether any
//! other process holds a lock there (`F_GETLK`), and counts the other tiers of its own process.
//! When it finds none, its changes are not recorded: nobody could have heard of them.
//!
//! A tier opening meanwhile takes its presence lock first and then waits for the writer lock
//! (see [`DiskTier::open`]), so a write that found it absent has committed before the new tier
//! reads anything; every later write finds it. A tier that cannot take its presence lock is
//! not opened (the others would believe they are alone); one whose writer cannot ask about
//! the others never believes it is alone.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use rustix::fs::FlockOperation;
use rustix::process::{Flock, FlockOffsetType, FlockType};

/// This process's open presence file of one index, shared by its tiers there. Its last
/// holder drops it under [`HELD`]'s lock: closing any descriptor of the file drops every
/// POSIX lock this process holds on it, so no second descriptor may be opened meanwhile.
#[derive(Debug)]
struct Shared {
    file: File,
    /// The process that took the lock: a forked child inherits the registry, not the lock.
    pid: u32,
}

/// A file's device and inode.
type FileId = (u64, u64);

/// The presence files this process holds, by the file's identity (two paths to one index are
/// one entry).
static HELD: Mutex<Vec<(FileId, Weak<Shared>)>> = Mutex::new(Vec::new());

/// One tier's (or follower's) share of its process's presence on an index.
#[derive(Debug)]
pub(super) struct Presence {
    shared: Option<Arc<Shared>>,
}

impl Drop for Presence {
    fn drop(&mut self) {
        let _held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
        self.shared = None;
    }
}

impl Presence {
    /// Registers this process as a user of the index at `db_path`.
    ///
    /// # Errors
    /// [`crate::Error::Io`] when the presence file cannot be opened or locked.
    pub(super) fn register(db_path: &Path) -> crate::error::Result<Self> {
        let mut path = db_path.as_os_str().to_owned();
        path.push("-presence");
        let path = PathBuf::from(path);
        let me = std::process::id();
        let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
        held.retain(|(_, w)| w.upgrade().is_some_and(|s| s.pid == me));
        // Looked up by the file's identity without opening it (a second descriptor closed
        // would drop the lock).
        if let Ok(m) = std::fs::symlink_metadata(&path)
            && let Some(shared) = held
                .iter()
                .find(|(id, _)| *id == (m.dev(), m.ino()))
                .and_then(|(_, w)| w.upgrade())
        {
            return Ok(Self {
                shared: Some(shared),
            });
        }
        let io = |e: std::io::Error| crate::error::Error::io(&path, e);
        let file = super::hostlock::open_lock_file(&path).map_err(io)?;
        rustix::fs::fcntl_lock(&file, FlockOperation::NonBlockingLockShared)
            .map_err(|e| io(e.into()))?;
        let m = file.metadata().map_err(io)?;
        let shared = Arc::new(Shared { file, pid: me });
        held.push(((m.dev(), m.ino()), Arc::downgrade(&shared)));
        Ok(Self {
            shared: Some(shared),
        })
    }

    /// Whether nothing else — another tier of this process, or any other process — has the
    /// index open. Asked with the writer lock held.
    pub(super) fn alone(&self) -> bool {
        let Some(shared) = &self.shared else {
            return false;
        };
        if Arc::strong_count(shared) > 1 || shared.pid != std::process::id() {
            return false;
        }
        let probe = Flock {
            start: 0,
            length: 0,
            pid: None,
            typ: FlockType::WriteLock,
            offset_type: FlockOffsetType::Set,
        };
        matches!(rustix::process::fcntl_getlk(&shared.file, &probe), Ok(None))
    }
}
