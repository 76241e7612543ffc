//! The access-time queue: reads note access times in memory; a flusher thread with its own
//! connection writes them in batches, in key order, off the readers' path (LRU to the second).

#[allow(clippy::wildcard_imports)]
use super::*;

/// Pending access-time updates are written once this many have accumulated.
pub(super) const TOUCH_BATCH: usize = 256;

/// Reads closer together than this do not update a row's access time (LRU to the second).
pub(super) const TOUCH_GRANULARITY: Duration = Duration::from_secs(1);

/// Access times read but not yet written, by key, shared by the readers and the flusher.
#[derive(Default)]
pub(super) struct TouchQueue {
    pub(super) pending: Mutex<HashMap<String, u64>>,
    /// Signalled when a batch is full, and at shutdown.
    pub(super) wake: std::sync::Condvar,
    /// Held from taking a batch until it is committed, so a flush on demand finds every
    /// earlier read written when it returns.
    pub(super) writing: Mutex<()>,
    pub(super) stop: std::sync::atomic::AtomicBool,
}

impl TouchQueue {
    pub(super) fn writing(&self) -> std::sync::MutexGuard<'_, ()> {
        unpoisoned(&self.writing)
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        unpoisoned(&self.pending)
    }

    /// A thread with a connection of its own that writes each full batch, so the reader that
    /// fills a batch does not pay for a write transaction of [`TOUCH_BATCH`] updates (it
    /// halved disk-hit throughput on a 20 000-key pass). What is pending at shutdown is
    /// written before the thread ends.
    pub(super) fn spawn_flusher(
        queue: &Arc<Self>,
        db_path: &Path,
        wal: &Arc<wal::WalUpkeep>,
    ) -> Option<std::thread::JoinHandle<()>> {
        let queue = Arc::clone(queue);
        let wal = Arc::clone(wal);
        let db_path = db_path.to_path_buf();
        std::thread::Builder::new()
            .name("freshcache-touch".into())
            .spawn(move || {
                let mut conn = None;
                let mut wal_limit = 0;
                loop {
                    {
                        let mut t = queue.lock();
                        while t.len() < TOUCH_BATCH && !queue.stop.load(Ordering::Acquire) {
                            t = queue
                                .wake
                                .wait(t)
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                        }
                    }
                    let _writing = queue.writing();
                    let pending = std::mem::take(&mut *queue.lock());
                    if !pending.is_empty() {
                        if conn.is_none() {
                            conn = DiskTier::connect(&db_path).ok();
                        }
                        if let Some(c) = &conn {
                            wal_limit = wal.apply_limit(c, wal_limit);
                        }
                        match conn.as_mut().map(|c| write_touches(c, pending)) {
                            Some(Ok(())) => wal.note_pages(wal::PAGES_PER_COMMIT),
                            Some(Err(e)) => {
                                tracing::debug!(error = %e, "disk tier: access times not written");
                            }
                            None => tracing::debug!("disk tier: no connection for access times"),
                        }
                    }
                    if queue.stop.load(Ordering::Acquire) {
                        return;
                    }
                }
            })
            .ok()
    }
}

/// Writes access times in one transaction, in key order (neighbouring keys share index pages).
pub(super) fn write_touches(
    c: &mut Connection,
    pending: HashMap<String, u64>,
) -> rusqlite::Result<()> {
    let mut pending: Vec<(String, u64)> = pending.into_iter().collect();
    pending.sort_unstable();
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut st = tx.prepare_cached(
            "UPDATE entries SET access_at = max(access_at, ?2),
                 access_count = access_count + 1 WHERE key = ?1",
        )?;
        for (k, t) in &pending {
            st.execute(params![k, i64_of(*t)])?;
        }
    }
    tx.commit()
}

impl DiskTier {
    pub(super) fn touch(&self, key: &str, now: Timestamp) {
        let full = {
            let mut t = self.touches.lock();
            t.insert(key.to_owned(), now.as_millis());
            t.len() >= TOUCH_BATCH
        };
        if full {
            if self.flusher.is_some() {
                self.touches.wake.notify_one();
            } else {
                let _ = self.flush_touches();
            }
        }
    }

    /// Writes pending access times to the index now (they feed LRU eviction).
    ///
    /// # Errors
    /// [`Error::Index`] when the update fails; the pending times are dropped either way.
    pub fn flush_touches(&self) -> Result<()> {
        // Waits for a batch the flusher has taken but not yet committed.
        let _writing = self.touches.writing();
        let pending = std::mem::take(&mut *self.touches.lock());
        if pending.is_empty() {
            return Ok(());
        }
        self.write_now(|c| write_touches(c, pending))
    }
}
