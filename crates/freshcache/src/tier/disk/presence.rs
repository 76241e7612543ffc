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
//! reads anything; every later write finds it. Where the lock cannot be taken or asked about,
//! a writer never believes it is alone.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use rustix::fs::FlockOperation;
use rustix::process::{Flock, FlockOffsetType, FlockType};

/// This process's open presence file of one index, shared by its tiers there.
#[derive(Debug)]
struct Shared {
    file: File,
    /// The process that took the lock: a forked child inherits the registry, not the lock.
    pid: u32,
}

/// The presence files this process holds, by index path.
static HELD: Mutex<Vec<(PathBuf, Weak<Shared>)>> = Mutex::new(Vec::new());

/// One tier's (or follower's) share of its process's presence on an index.
#[derive(Debug)]
pub(super) struct Presence {
    /// `None` where the lock could not be taken: never alone.
    shared: Option<Arc<Shared>>,
}

impl Presence {
    /// Registers this process as a user of the index at `db_path`.
    pub(super) fn register(db_path: &Path) -> Self {
        let mut path = db_path.as_os_str().to_owned();
        path.push("-presence");
        let path = PathBuf::from(path);
        let key = std::fs::canonicalize(db_path).unwrap_or_else(|_| db_path.to_path_buf());
        let me = std::process::id();
        let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
        held.retain(|(_, w)| w.upgrade().is_some_and(|s| s.pid == me));
        if let Some(shared) = held
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, w)| w.upgrade())
        {
            return Self {
                shared: Some(shared),
            };
        }
        let shared = Self::take(&path).map(|file| Arc::new(Shared { file, pid: me }));
        if let Some(s) = &shared {
            held.push((key, Arc::downgrade(s)));
        }
        Self { shared }
    }

    /// Opens the presence file and takes a shared lock on it (nobody ever takes an exclusive
    /// one: writers only ask).
    fn take(path: &Path) -> Option<File> {
        let taken = super::hostlock::open_lock_file(path).and_then(|f| {
            rustix::fs::fcntl_lock(&f, FlockOperation::NonBlockingLockShared)?;
            Ok(f)
        });
        match taken {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e,
                    "disk tier: no presence lock; changes are always recorded");
                None
            }
        }
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
