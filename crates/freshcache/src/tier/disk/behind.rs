//! Write-behind (`cache.disk.write_behind`): writes queued in memory and committed together,
//! one transaction for many, at most the configured delay after the first of them.
//!
//! What holds, as with writes committed one by one:
//! - this process reads its own writes: a read of a queued key is answered from the queue;
//! - order: every other use of the index (deletes, prefix and tag invalidations, lineage
//!   writes, leases, cleanup, statistics) first commits what is queued, so nothing runs ahead
//!   of an earlier write;
//! - errors reach a caller: a commit that failed in the background is retried by the next
//!   write, which returns the error if it fails again (its own value not stored), and
//!   [`DiskTier::flush_behind`] returns it.
//!
//! What is traded: other processes see a write (and hear of it through the change feed) when
//! its batch commits, not when `set` returns; a process that dies with writes queued loses
//! them (closing or dropping the cache commits them).

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

#[allow(clippy::wildcard_imports)]
use super::*;

/// Queued writes at which the next `put_behind` commits them itself before it queues.
const MAX_QUEUED: usize = 1024;
/// Queued bytes at which the next `put_behind` commits them itself.
const MAX_QUEUED_BYTES: u64 = 16 * 1024 * 1024;

thread_local! {
    /// True while this thread commits the queue: the index calls made inside must not
    /// commit it again.
    static COMMITTING: Cell<bool> = const { Cell::new(false) };
}

/// Sets [`COMMITTING`] for its lifetime (reset on unwind too).
struct Committing;

impl Committing {
    fn set() -> Self {
        COMMITTING.with(|c| c.set(true));
        Self
    }
}

impl Drop for Committing {
    fn drop(&mut self) {
        COMMITTING.with(|c| c.set(false));
    }
}

/// One queued write.
struct Queued {
    entry: Arc<Entry>,
    compress_above: u64,
    /// Its place in the queue: a key written again while its batch commits stays queued.
    seq: u64,
}

#[derive(Default)]
struct Queue {
    items: HashMap<Arc<str>, Queued>,
    next_seq: u64,
    bytes: u64,
    /// Set by every write queued, cleared by the committer when it starts a round.
    signalled: bool,
    stop: bool,
}

/// The queue, shared with the background committer (which holds no handle on the tier while
/// it waits).
#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when a write is queued, and on stop.
    wake: Condvar,
}

/// What the background committer waits on: see [`DiskTier::write_behind_signal`].
#[derive(Clone)]
pub(crate) struct BehindSignal(Arc<Shared>);

impl BehindSignal {
    /// Waits until a write is queued, then `delay` more (so that writes made meanwhile join
    /// the batch); false once stopped.
    pub(crate) fn wait(&self, delay: Duration) -> bool {
        let q = unpoisoned(&self.0.queue);
        let mut q = self
            .0
            .wake
            .wait_while(q, |q| !q.signalled && !q.stop)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if q.stop {
            return false;
        }
        q.signalled = false;
        // The delay, cut short by a stop (the queue is then committed by the tier's drop).
        let (q, _) = self
            .0
            .wake
            .wait_timeout_while(q, delay, |q| !q.stop)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        !q.stop
    }

    /// Ends the committer's waits.
    pub(crate) fn stop(&self) {
        unpoisoned(&self.0.queue).stop = true;
        self.0.wake.notify_all();
    }
}

/// Write-behind's state in the tier.
#[derive(Default)]
pub(crate) struct Behind {
    /// Set once write-behind is on.
    on: AtomicBool,
    /// Whether anything is queued (read without the lock on every index call).
    any: AtomicBool,
    shared: Arc<Shared>,
    /// Serialises commits of the queue (the committer's, and those of index calls).
    committing: Mutex<()>,
    /// The last background commit's error, until a commit succeeds.
    failed: Mutex<Option<String>>,
    /// Commits of the queue that failed.
    failures: std::sync::atomic::AtomicU64,
}

impl DiskTier {
    /// Turns write-behind on: from now on [`DiskTier::put_behind`] queues.
    pub(crate) fn enable_write_behind(&self) {
        self.behind.on.store(true, Ordering::Release);
    }

    /// True when writes are queued rather than committed one by one.
    pub(crate) fn writes_behind(&self) -> bool {
        self.behind.on.load(Ordering::Acquire)
    }

    /// Queues `entry` under `key` (or stores it at once when write-behind is off). A key
    /// queued again replaces its queued write.
    ///
    /// # Errors
    /// When an earlier background commit failed and committing the queue fails again, that
    /// error ([`Error::Index`] / [`Error::Io`]); `entry` is not queued then. When the queue is
    /// full, the errors of committing it.
    pub(crate) fn put_behind(
        &self,
        key: &str,
        entry: &Arc<Entry>,
        compress_above: u64,
        now: Timestamp,
    ) -> Result<()> {
        if !self.writes_behind() {
            return self.put(key, entry, compress_above, now);
        }
        let full_already = {
            let q = unpoisoned(&self.behind.shared.queue);
            q.items.len() >= MAX_QUEUED || q.bytes >= MAX_QUEUED_BYTES
        };
        // A failed commit is retried, and a full queue committed, before this write joins
        // the queue: an error then leaves this write out entirely.
        if full_already || unpoisoned(&self.behind.failed).is_some() {
            self.flush_behind()?;
        }
        {
            let mut q = unpoisoned(&self.behind.shared.queue);
            let seq = q.next_seq;
            q.next_seq += 1;
            q.bytes += entry.size();
            let queued = Queued {
                entry: Arc::clone(entry),
                compress_above,
                seq,
            };
            if let Some(old) = q.items.insert(Arc::from(key), queued) {
                q.bytes = q.bytes.saturating_sub(old.entry.size());
            }
            self.behind.any.store(true, Ordering::Release);
            if !q.signalled {
                q.signalled = true;
                self.behind.shared.wake.notify_one();
            }
        }
        Ok(())
    }

    /// The queued write of `key`, if any: newer than what the index holds.
    pub(super) fn queued(&self, key: &str) -> Option<Arc<Entry>> {
        if !self.behind.any.load(Ordering::Acquire) {
            return None;
        }
        unpoisoned(&self.behind.shared.queue)
            .items
            .get(key)
            .map(|q| Arc::clone(&q.entry))
    }

    /// Commits every queued write in one transaction. A key queued again meanwhile stays
    /// queued (with its newer value).
    ///
    /// # Errors
    /// [`Error::Index`] / [`Error::Io`] when the batch cannot be committed; the writes stay
    /// queued (and are read from the queue) until a commit succeeds.
    pub fn flush_behind(&self) -> Result<()> {
        if !self.behind.any.load(Ordering::Acquire) || COMMITTING.with(Cell::get) {
            return Ok(());
        }
        let _one = unpoisoned(&self.behind.committing);
        let batch: Vec<(Arc<str>, Arc<Entry>, u64, u64)> = unpoisoned(&self.behind.shared.queue)
            .items
            .iter()
            .map(|(k, q)| (Arc::clone(k), Arc::clone(&q.entry), q.compress_above, q.seq))
            .collect();
        if batch.is_empty() {
            return Ok(());
        }
        let items: Vec<(&str, &Entry, u64)> = batch
            .iter()
            .map(|(k, e, c, _)| (k.as_ref(), e.as_ref(), *c))
            .collect();
        // Stamped with the newest queued write's time: the batch is as recent as it.
        let now = batch
            .iter()
            .map(|(_, e, _, _)| e.meta.stored_at)
            .max()
            .unwrap_or(Timestamp::from_millis(0));
        let committed = {
            let _flag = Committing::set();
            self.put_many(&items, now)
        };
        if let Err(e) = committed {
            self.behind.failures.fetch_add(1, Ordering::Relaxed);
            *unpoisoned(&self.behind.failed) = Some(e.to_string());
            tracing::warn!(error = %e, queued = batch.len(), "disk tier: queued writes not committed; kept queued");
            return Err(e);
        }
        *unpoisoned(&self.behind.failed) = None;
        let mut q = unpoisoned(&self.behind.shared.queue);
        for (key, entry, _, seq) in &batch {
            if q.items.get(key).is_some_and(|cur| cur.seq == *seq) {
                q.items.remove(key);
                q.bytes = q.bytes.saturating_sub(entry.size());
            }
        }
        self.behind
            .any
            .store(!q.items.is_empty(), Ordering::Release);
        Ok(())
    }

    /// Commits the queue before another use of the index (see the module docs).
    ///
    /// # Errors
    /// The commit's: the use must not run ahead of the writes it could not commit.
    pub(super) fn flush_behind_first(&self) -> Result<()> {
        self.in_opening_process()?;
        // Not from inside a turn at the writer: the commit would wait for that turn.
        if self.behind.any.load(Ordering::Acquire)
            && !COMMITTING.with(Cell::get)
            && !conn::holds_turn()
        {
            return self.flush_behind();
        }
        Ok(())
    }

    /// Writes queued now, and commits of the queue that failed so far.
    pub(crate) fn write_behind_counts(&self) -> (u64, u64) {
        let queued = if self.behind.any.load(Ordering::Acquire) {
            unpoisoned(&self.behind.shared.queue).items.len() as u64
        } else {
            0
        };
        (queued, self.behind.failures.load(Ordering::Relaxed))
    }

    /// What a background committer waits on before it calls [`DiskTier::flush_behind`].
    pub(crate) fn write_behind_signal(&self) -> BehindSignal {
        BehindSignal(Arc::clone(&self.behind.shared))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(value: &[u8]) -> Entry {
        super::super::tests::entry(value, 10_000_000)
    }

    /// An eviction with access times pending and a queue whose commit takes the tier over its
    /// limit: the commit's own eviction writes the access times again. It must not wait for
    /// the lock the outer eviction holds.
    #[test]
    fn eviction_with_access_times_pending_and_writes_queued_returns() {
        let dir = tempfile::tempdir().unwrap();
        let t = DiskTier::open(dir.path(), &dir.path().join("metadata.db"), 1024).unwrap();
        t.enable_write_behind();
        let big = vec![7u8; 2000];
        let now = Timestamp::from_millis(10_000);
        for i in 0..20 {
            t.put(&format!("news:a:{i}"), &entry(&big), 1 << 30, now)
                .unwrap();
        }
        t.set_size_limit(200_000);
        let later = Timestamp::from_millis(20_000);
        for i in 0..20 {
            assert!(t.get(&format!("news:a:{i}"), later).unwrap().is_some());
        }
        assert!(!t.touches.lock().is_empty(), "no access time pending");
        for i in 20..200 {
            t.put_behind(
                &format!("news:a:{i}"),
                &Arc::new(entry(&big)),
                1 << 30,
                later,
            )
            .unwrap();
        }
        assert!(t.write_behind_counts().0 > 0);
        let t = Arc::new(t);
        let (tx, rx) = std::sync::mpsc::channel();
        let t2 = Arc::clone(&t);
        std::thread::spawn(move || {
            let r = t2.evict(150_000, later, upkeep::Mode::Apply).map(|_| ());
            let _ = tx.send(r);
        });
        let done = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("evict hung");
        done.unwrap();
        assert_eq!(t.write_behind_counts().0, 0, "the queue was not committed");
    }
}
