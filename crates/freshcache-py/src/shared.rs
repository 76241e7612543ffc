//! What one open cache is made of ([`Open`]: the library's cache and its runtime) and what
//! it shares with the fork hooks ([`Shared`]): closed before a fork, opened again after it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use pyo3::prelude::*;

use freshcache::fetch::Fetcher;
use freshcache::{Cache, Config};

use crate::fork::{Gate, WAIT, wait_until};
use crate::recent::RecentHits;

/// What an open cache holds. Dropped when closed, in the process that opened it only.
pub(crate) struct Open {
    pub(crate) cache: Cache,
    pub(crate) runtime: tokio::runtime::Runtime,
    pub(crate) fetcher: OnceLock<Fetcher>,
}

impl Open {
    /// Starts the runtime and opens the cache on it (the GIL released by the caller).
    pub(crate) fn start(
        config: Config,
        clock: Option<freshcache::ManualClock>,
    ) -> Result<Self, OpenError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("freshcache-py")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the cache's runtime: {e}"))?;
        let mut builder = Cache::builder(config);
        if let Some(c) = clock {
            builder = builder.clock(c);
        }
        let cache = runtime
            .block_on(builder.connect())
            .map_err(OpenError::Lib)?;
        Ok(Open {
            cache,
            runtime,
            fetcher: OnceLock::new(),
        })
    }

    /// Commits what is queued and stops the cache's threads, then drops it once no call
    /// holds it (off the GIL).
    pub(crate) fn shut_down(self: Arc<Self>) -> freshcache::Result<()> {
        // Also stops the write-behind committer, which could otherwise hold the cache past
        // this drop.
        let r = self.cache.shut_down();
        drop(self);
        r
    }
}

/// What a cache shares with the fork hooks (see [`crate::fork`]).
pub(crate) struct Shared {
    /// `None` once closed, or while parked for a fork.
    pub(crate) open: RwLock<Option<Arc<Open>>>,
    pub(crate) gate: Gate,
    /// Memory hits `get` handed out lately, handed out again while they stand.
    pub(crate) recent: RecentHits,
    /// The process that opened it: SQLite connections, the runtime's threads and Redis
    /// connections do not survive `fork()`, so a child gets [`CacheClosed`] instead.
    pub(crate) pid: u32,
    /// How it was opened, to open it again after a fork.
    pub(crate) config: Config,
    pub(crate) clock: Option<freshcache::ManualClock>,
    /// Closed by `close()`: not opened again after a fork.
    pub(crate) closed: AtomicBool,
    /// Parked (closed) for a fork under way, to be opened again after it.
    pub(crate) parked: AtomicBool,
    /// Why opening again after a fork failed.
    pub(crate) reopen_failed: Mutex<Option<String>>,
}

impl Shared {
    /// False only when known closed (a lock held by a thread the fork did not copy counts as
    /// open).
    pub(crate) fn may_be_open(&self) -> bool {
        self.open.try_read().map_or(true, |o| o.is_some())
    }

    /// Takes the open state out (closing, or parking for a fork): calls then find none.
    pub(crate) fn take_open(&self) -> Option<Arc<Open>> {
        self.open
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// The open cache, or why there is none. A cache that could not be opened again after a
    /// fork is tried once more (off the GIL: called inside a call, past the gate).
    pub(crate) fn current(&self) -> Result<Arc<Open>, String> {
        if let Some(st) = self
            .open
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            return Ok(Arc::clone(st));
        }
        self.reopen_after_failure().ok_or_else(|| self.why_closed())
    }

    /// Why calls find no open cache.
    pub(crate) fn why_closed(&self) -> String {
        let failed = self
            .reopen_failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match failed.as_ref() {
            Some(why) => format!("the cache could not be opened again after os.fork(): {why}"),
            None => "the cache is closed".to_owned(),
        }
    }

    /// Opens again a cache whose opening after a fork failed (the directory was briefly
    /// unreachable, say); `None` when it was not such a cache or fails again.
    fn reopen_after_failure(&self) -> Option<Arc<Open>> {
        let mut failed = self
            .reopen_failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if failed.is_none() || self.closed.load(Ordering::SeqCst) || self.pid != std::process::id()
        {
            return None;
        }
        let mut open = self.open.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(st) = open.as_ref() {
            return Some(Arc::clone(st));
        }
        match Open::start(self.config.clone(), self.clock.clone()) {
            Ok(o) => {
                self.recent.reopened(o.cache.memory_recall());
                let st = Arc::new(o);
                *open = Some(Arc::clone(&st));
                *failed = None;
                Some(st)
            }
            Err(e) => {
                *failed = Some(e.reason());
                None
            }
        }
    }

    /// Before a fork: waits for the calls under way and closes the cache, holding new calls
    /// until [`Shared::resume`]. Left open when that cannot be done (see [`crate::fork`]).
    pub(crate) fn park(&self, py: Python<'_>) {
        if self.pid != std::process::id() || !py.detach(|| self.gate.park(WAIT)) {
            return;
        }
        self.recent.retire(py);
        let Some(st) = self.take_open() else { return };
        // Only calls hold the state, and none is under way; still, never fork with it open.
        let st = py.detach(move || {
            if wait_until(WAIT, || Arc::strong_count(&st) == 1) {
                // As at close: writes queued behind that cannot be committed now (disk full,
                // read-only) are lost, and the library logs it.
                let _ = st.shut_down();
                None
            } else {
                Some(st)
            }
        });
        match st {
            None => self.parked.store(true, Ordering::SeqCst),
            Some(st) => {
                *self.open.write().unwrap_or_else(PoisonError::into_inner) = Some(st);
                self.gate.unpark();
            }
        }
    }

    /// After a fork, in the parent: opens a parked cache again and lets calls through.
    pub(crate) fn resume(&self, py: Python<'_>) {
        // A cache inherited from a parent (parked there) is never opened here: a child that
        // forks again must not bring its parent's caches back to life.
        if self.pid != std::process::id() {
            return;
        }
        if self.parked.swap(false, Ordering::SeqCst) {
            let (config, clock) = (self.config.clone(), self.clock.clone());
            let opened = py.detach(move || Open::start(config, clock));
            match opened {
                Ok(o) => {
                    let mut open = self.open.write().unwrap_or_else(PoisonError::into_inner);
                    if self.closed.load(Ordering::SeqCst) {
                        drop(open);
                        let _ = py.detach(move || Arc::new(o).shut_down());
                    } else {
                        self.recent.reopened(o.cache.memory_recall());
                        *open = Some(Arc::new(o));
                    }
                }
                Err(e) => {
                    *self
                        .reopen_failed
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(e.reason());
                }
            }
        }
        self.gate.unpark();
    }
}

/// Why opening failed.
pub(crate) enum OpenError {
    Lib(freshcache::Error),
    Other(String),
}

impl OpenError {
    fn reason(self) -> String {
        match self {
            OpenError::Lib(e) => e.to_string(),
            OpenError::Other(s) => s,
        }
    }
}

impl From<String> for OpenError {
    fn from(s: String) -> Self {
        OpenError::Other(s)
    }
}
