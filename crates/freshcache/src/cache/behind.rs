//! The background committer of write-behind (`cache.disk.write_behind`): a thread that waits
//! for queued disk writes and commits them together once the delay has passed. It holds no
//! handle on the cache while it waits, so dropping the last handle stops it (and the disk
//! tier commits what is left as it closes).

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{Cache, Inner};
use crate::tier::disk::BehindSignal;

/// The running committer; stopped and joined when the cache is dropped.
pub(super) struct Committer {
    signal: BehindSignal,
    handle: std::thread::JoinHandle<()>,
}

impl Committer {
    /// Stops the thread and waits for it (unless called on it: the last handle can be dropped
    /// by the committer itself, once its commit returns).
    pub(super) fn stop(self) {
        self.signal.stop();
        if self.handle.thread().id() != std::thread::current().id() {
            let _ = self.handle.join();
        }
    }
}

/// Starts the committer of `cache`; `None` (with a warning, and every write then committed
/// as it is made) when no thread could start.
pub(super) fn spawn(cache: &Cache, delay: Duration) -> Option<Committer> {
    let signal = cache.inner.disk.write_behind_signal();
    let weak: Weak<Inner> = Arc::downgrade(&cache.inner);
    let waits = signal.clone();
    let started = std::thread::Builder::new()
        .name("freshcache-commit".into())
        .spawn(move || {
            while waits.wait(delay) {
                let Some(inner) = weak.upgrade() else { return };
                // A failure stays queued; the next write reports it (see `put_behind`).
                let _ = inner.disk.flush_behind();
            }
        });
    match started {
        Ok(handle) => {
            cache.inner.disk.enable_write_behind();
            Some(Committer { signal, handle })
        }
        Err(e) => {
            tracing::warn!(error = %e, "no write-behind thread: every disk write commits at once");
            None
        }
    }
}
