//! Coherence between processes on one host without Redis: every set, delete and prefix
//! invalidation commits a row to the disk index's change feed; a follower thread per cache reads
//! the feed every [`FOLLOW_EVERY`] and drops this process's memory copies of what others
//! changed. A memory hit costs nothing for it (the hit path never looks at the feed).
//!
//! A follower that cannot follow — the feed pruned rows it had not read, or the index could not
//! be read — does not guess: the memory tier is bypassed until the follower reads the feed
//! again, then cleared.

use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Cache, Inner};
use crate::tier::disk::{ChangeFollower, ChangeOp, Poll};

/// How often the feed is read: the bound on how long another process's change can be missed
/// (plus the read itself). Reading an unchanged feed is one `PRAGMA data_version`.
pub(crate) const FOLLOW_EVERY: Duration = Duration::from_millis(2);

/// Starts the follower thread of the cache behind `weak`; it ends when the cache is dropped.
pub(super) fn spawn(weak: Weak<Inner>, mut follower: ChangeFollower, origin: String) {
    let started = std::thread::Builder::new()
        .name("freshcache-follow".into())
        .spawn(move || {
            loop {
                // A poll interval, not a wait for an event: the feed has no way to wake us.
                std::thread::sleep(FOLLOW_EVERY);
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                follow_once(&Cache { inner }, &mut follower, &origin);
            }
        });
    if let Err(e) = started {
        tracing::warn!(error = %e, "no follower thread: memory copies are not shared with other processes");
    }
}

/// Reads the feed once and applies what other processes changed.
fn follow_once(cache: &Cache, follower: &mut ChangeFollower, origin: &str) {
    let inner = &*cache.inner;
    match follower.poll() {
        Ok(Poll::Changes(changes)) => {
            if !inner.l1_trusted.load(Ordering::Acquire) {
                // Back after a failure: whatever changed meanwhile is unknown.
                cache.forget_prefix_now("");
                inner.l1_trusted.store(true, Ordering::Release);
                tracing::info!("change feed readable again; memory tier cleared and back in use");
            }
            for change in changes.iter().filter(|c| c.origin != origin) {
                match change.op {
                    ChangeOp::Set | ChangeOp::Delete => cache.forget_now(&change.subject),
                    ChangeOp::SetMany => {
                        for key in change.subject.lines() {
                            cache.forget_now(key);
                        }
                    }
                    ChangeOp::Prefix => cache.forget_prefix_now(&change.subject),
                }
            }
        }
        Ok(Poll::Gap) => {
            tracing::warn!("fell behind the change feed; memory tier cleared");
            cache.forget_prefix_now("");
        }
        Err(e) => {
            if inner.l1_trusted.swap(false, Ordering::AcqRel) {
                tracing::warn!(error = %e, "change feed unreadable; memory tier bypassed until it is back");
            }
        }
    }
}

impl Cache {
    /// [`Cache::forget`] for a thread outside the async runtime.
    fn forget_now(&self, key: &str) {
        let stripe = self.stripe(key);
        let _g = stripe.lock.blocking_lock();
        self.inner.memory.remove(key);
        stripe.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// [`Cache::forget_prefix`] for a thread outside the async runtime.
    fn forget_prefix_now(&self, prefix: &str) {
        let bump = || {
            for s in self.inner.stripes.iter() {
                let _g = s.lock.blocking_lock();
                s.epoch.fetch_add(1, Ordering::AcqRel);
            }
        };
        bump();
        if prefix.is_empty() {
            self.inner.memory.clear();
        } else {
            self.inner.memory.remove_prefix(prefix);
        }
        bump();
    }
}
