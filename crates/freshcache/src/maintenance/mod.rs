//! Scheduled cleanup: one pass is [`Cache::cleanup`] at a given instant; [`Schedule`] says
//! when the next pass is due (a cron expression, evaluated in UTC).

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;

use crate::cache::Cache;
use crate::clock::Timestamp;
use crate::error::Result;
pub use crate::tier::disk::upkeep::{Mode, Removed, RepairReport, VerifyReport};

pub(crate) mod history;

pub use crate::config::Schedule;

/// Files younger than this are never treated as orphans: they may belong to a write in flight.
pub const DEFAULT_ORPHAN_GRACE: Duration = Duration::from_secs(600);

/// Options for one cleanup pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct CleanupOptions {
    /// Apply, or only report what would be done.
    pub mode: Mode,
    /// Minimum age of a file before it may be removed as an orphan.
    pub orphan_grace: Duration,
}

impl Default for CleanupOptions {
    fn default() -> Self {
        Self {
            mode: Mode::Apply,
            orphan_grace: DEFAULT_ORPHAN_GRACE,
        }
    }
}

/// A step of a cleanup pass, reported to a progress callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// Removing expired entries.
    Expired,
    /// Evicting to the size limit.
    SizeLimit,
    /// Repairing rows and files that disagree.
    Repair,
    /// Done.
    Done,
}

/// What one cleanup pass did (or, in a dry run, would do).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CleanupReport {
    /// True for a dry run.
    pub dry_run: bool,
    /// Expired entries removed.
    pub expired: Removed,
    /// Entries evicted to respect the size limit.
    pub evicted: Removed,
    /// Repairs.
    pub repaired: RepairReport,
    /// Freshness audit rows removed for being older than the retention.
    pub audit_rows_pruned: u64,
    /// Stored bytes freed in all.
    pub bytes_freed: u64,
    /// Stored bytes after the pass.
    pub bytes_after: u64,
    /// The size limit in bytes.
    pub size_limit: u64,
    /// Wall time the pass took, in milliseconds.
    pub duration_ms: u64,
    /// Of which the expired sweep, in microseconds.
    pub expired_us: u64,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Cache {
    /// Runs one cleanup pass at `now`: expired sweep, size-limit eviction (down to the limit),
    /// repair. Safe to run from several processes at once and alongside writers.
    ///
    /// # Errors
    /// [`crate::Error::Index`] when the index cannot be read or changed; work already committed
    /// stays done.
    pub fn cleanup_at(
        &self,
        now: Timestamp,
        opts: CleanupOptions,
        mut progress: impl FnMut(Phase),
    ) -> Result<CleanupReport> {
        let result = self.cleanup_pass(now, opts, &mut progress);
        let counters = self.upkeep_counters();
        match &result {
            Ok(r) => {
                counters.ok.fetch_add(1, Ordering::Relaxed);
                counters
                    .last_duration_ms
                    .store(r.duration_ms, Ordering::Relaxed);
            }
            Err(_) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    fn cleanup_pass(
        &self,
        now: Timestamp,
        opts: CleanupOptions,
        progress: &mut impl FnMut(Phase),
    ) -> Result<CleanupReport> {
        let started = crate::clock::Stopwatch::start();
        let disk = self.disk();
        let limit = disk.size_limit();
        progress(Phase::Expired);
        // Entries some type may still serve as explicitly stale are kept for that window.
        let keep_for = self
            .config()
            .data_types
            .types()
            .iter()
            .map(|t| t.stale.window())
            .max()
            .unwrap_or_default();
        let expired = disk.sweep_expired(now.saturating_sub(keep_for), opts.mode)?;
        let expired_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        progress(Phase::SizeLimit);
        let evicted = if opts.mode == Mode::DryRun {
            // The dry-run sweep removed nothing, so evict() would count the same expired rows
            // again; discount them from the target instead.
            let mut r = disk.evict(limit.saturating_add(expired.bytes), now, Mode::DryRun)?;
            r.entries = r.entries.saturating_sub(expired.entries);
            r.bytes = r.bytes.saturating_sub(expired.bytes);
            r
        } else {
            disk.evict(disk.eviction_target()?, now, Mode::Apply)?
        };
        progress(Phase::Repair);
        let repaired = disk.repair(opts.orphan_grace, opts.mode)?;
        let audit_rows_pruned = if opts.mode == Mode::Apply {
            crate::freshness::audit::prune(
                disk,
                now.saturating_sub(self.config().freshness.audit_retention),
            )?
        } else {
            0
        };
        if opts.mode == Mode::Apply {
            crate::cache::prune_lineage_edges(disk)?;
        }
        let bytes_after = disk.total_bytes()?;
        if opts.mode == Mode::Apply {
            history::record_cleanup(disk, now)?;
        }
        progress(Phase::Done);
        Ok(CleanupReport {
            dry_run: opts.mode == Mode::DryRun,
            bytes_freed: expired.bytes + evicted.bytes + repaired.orphan_bytes,
            expired,
            evicted,
            repaired,
            audit_rows_pruned,
            bytes_after,
            size_limit: limit,
            duration_ms: millis(started.elapsed()),
            expired_us,
        })
    }

    /// Runs one cleanup pass now (on the cache's clock).
    ///
    /// # Errors
    /// See [`Cache::cleanup_at`].
    pub fn cleanup(&self, opts: CleanupOptions) -> Result<CleanupReport> {
        self.cleanup_at(self.now(), opts, |_| {})
    }

    /// Verifies the disk tier: SQLite integrity, every entry's checksums, rows against files.
    /// With [`Mode::Apply`] (`doctor --repair`) it also fixes what it finds.
    ///
    /// # Errors
    /// [`crate::Error::Index`] when the index cannot be read.
    pub fn doctor(&self, mode: Mode, orphan_grace: Duration) -> Result<VerifyReport> {
        self.disk().verify(orphan_grace, mode)
    }

    /// When the last cleanup pass completed (any process), if one has.
    ///
    /// # Errors
    /// [`crate::Error::Index`] when the query fails.
    pub fn last_cleanup(&self) -> Result<Option<Timestamp>> {
        history::last_cleanup(self.disk())
    }
}
