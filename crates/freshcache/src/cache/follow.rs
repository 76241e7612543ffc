//! Coherence between processes on one host without Redis: every set, delete and prefix
//! invalidation commits a row to the disk index's change feed; a follower thread per cache reads
//! the feed every [`FOLLOW_EVERY`] and drops this process's memory copies of what others
//! changed. A memory hit costs nothing for it (the hit path never looks at the feed).
//!
//! A follower that cannot follow — the feed pruned rows it had not read, or the index could not
//! be read — does not guess: the memory tier is bypassed until the follower reads the feed
//! again, then cleared.

use std::collections::HashSet;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::lineage::TagTimes;
use super::{Cache, STRIPES, Stripe};
use crate::tier::disk::{ChangeFollower, ChangeOp, Poll};
use crate::tier::memory::MemoryTier;

/// How often the feed is read: the bound on how long another process's change can be missed
/// (plus the read itself). Reading an unchanged feed is one `PRAGMA data_version`.
pub(crate) const FOLLOW_EVERY: Duration = Duration::from_millis(2);

/// What the follower changes: this process's memory side of the cache. It holds no handle on
/// the cache itself, so dropping the last handle drops the cache on the caller's thread, which
/// stops and joins the follower.
struct Local {
    /// Data types whose values live in this process's memory only (no disk): no other
    /// process changes them, so falling behind the feed does not drop them.
    only_here: HashSet<Arc<str>>,
    memory: Arc<MemoryTier>,
    stripes: Arc<[Stripe]>,
    hasher: RandomState,
    l1_trusted: Arc<AtomicBool>,
    changes: Arc<AtomicU64>,
    tags: Arc<TagTimes>,
}

/// A running follower thread.
pub(super) struct Running {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

impl Running {
    /// Stops the thread and waits for it (its connection to the index is closed on return).
    pub(super) fn stop(self) {
        self.stop.store(true, Ordering::Release);
        if self.handle.thread().id() != std::thread::current().id() {
            let _ = self.handle.join();
        }
    }
}

/// Starts the follower thread of `cache`; `None` (with a warning) when no thread could start.
pub(super) fn spawn(
    cache: &Cache,
    mut follower: ChangeFollower,
    origin: String,
) -> Option<Running> {
    let inner = &cache.inner;
    let local = Local {
        only_here: inner
            .config
            .data_types
            .types()
            .iter()
            .filter(|t| !t.placement.in_disk())
            .map(|t| Arc::clone(&t.name))
            .collect(),
        memory: Arc::clone(&inner.memory),
        stripes: Arc::clone(&inner.stripes),
        hasher: inner.hasher.clone(),
        l1_trusted: Arc::clone(&inner.l1_trusted),
        changes: Arc::clone(&inner.changes),
        tags: cache.tag_times(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let started = std::thread::Builder::new()
        .name("freshcache-follow".into())
        .spawn(move || {
            // A poll interval, not a wait for an event: the feed has no way to wake us.
            while !stopped.load(Ordering::Acquire) {
                std::thread::sleep(FOLLOW_EVERY);
                follow_once(&local, &mut follower, &origin);
            }
        });
    match started {
        Ok(handle) => Some(Running { stop, handle }),
        Err(e) => {
            tracing::warn!(error = %e, "no follower thread: memory copies are not shared with other processes");
            None
        }
    }
}

/// Reads the feed once and applies what other processes changed.
fn follow_once(local: &Local, follower: &mut ChangeFollower, origin: &str) {
    match follower.poll() {
        Ok(Poll::Changes(changes)) => {
            if !local.l1_trusted.load(Ordering::Acquire) {
                // Back after a failure: whatever changed meanwhile is unknown.
                local.forget_shared();
                local.l1_trusted.store(true, Ordering::Release);
                tracing::info!("change feed readable again; memory tier cleared and back in use");
            }
            for change in changes.iter().filter(|c| c.origin != origin) {
                match change.op {
                    ChangeOp::Set | ChangeOp::Delete => local.forget(&change.subject),
                    ChangeOp::SetMany => {
                        for key in change.subject.lines() {
                            local.forget(key);
                        }
                    }
                    ChangeOp::Prefix => local.forget_prefix(&change.subject),
                    ChangeOp::Tag => {
                        if let Some((tag, at)) = super::tags::parse_feed_subject(&change.subject)
                            && local.tags.raise(tag, at)
                        {
                            local.changes.fetch_add(1, Ordering::AcqRel);
                        }
                    }
                }
            }
        }
        Ok(Poll::Gap) => {
            tracing::warn!("fell behind the change feed; memory tier cleared");
            local.forget_shared();
        }
        Err(e) => {
            if local.l1_trusted.swap(false, Ordering::AcqRel) {
                local.changes.fetch_add(1, Ordering::AcqRel);
                tracing::warn!(error = %e, "change feed unreadable; memory tier bypassed until it is back");
            }
        }
    }
}

impl Local {
    /// [`Cache::forget`] for a thread outside the async runtime.
    fn forget(&self, key: &str) {
        let stripe = &self.stripes[(self.hasher.hash_one(key) as usize) % STRIPES];
        let _g = stripe.lock.blocking_lock();
        self.memory.remove(key);
        stripe.epoch.fetch_add(1, Ordering::AcqRel);
        self.changes.fetch_add(1, Ordering::AcqRel);
    }

    /// Drops every memory copy of a value other processes may have changed (all but the
    /// types kept in this process's memory only).
    fn forget_shared(&self) {
        self.bump_all();
        self.memory
            .remove_where(|e| !self.only_here.contains(&*e.meta.data_type));
        self.bump_all();
    }

    fn bump_all(&self) {
        for s in self.stripes.iter() {
            let _g = s.lock.blocking_lock();
            s.epoch.fetch_add(1, Ordering::AcqRel);
        }
        // Also a change for remembered lineage checks and kept memory hits.
        self.changes.fetch_add(1, Ordering::AcqRel);
    }

    /// [`Cache::forget_prefix`] for a thread outside the async runtime.
    fn forget_prefix(&self, prefix: &str) {
        self.bump_all();
        if prefix.is_empty() {
            self.memory.clear();
        } else {
            self.memory.remove_prefix(prefix);
        }
        self.bump_all();
    }
}
