//! The cleanup history, in a table of its own in the index database: when the last completed
//! cleanup finished (shared by every process on the directory, and only ever moving forward).

use rusqlite::OptionalExtension;

use crate::clock::Timestamp;
use crate::error::Result;
use crate::tier::disk::{DiskTier, i64_of};

/// The history table, created with the index.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS maintenance (
    name  TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
);
";

/// When the last completed cleanup finished, if one has.
///
/// # Errors
/// [`crate::Error::Index`] when the query fails.
pub(crate) fn last_cleanup(disk: &DiskTier) -> Result<Option<Timestamp>> {
    disk.with_reader(|c| {
        c.query_row(
            "SELECT value FROM maintenance WHERE name = 'last_cleanup_ms'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .optional()
        .map(|v| v.map(|ms| Timestamp::from_millis(ms.max(0) as u64)))
    })
}

/// Records a completed cleanup at `at`.
///
/// # Errors
/// [`crate::Error::Index`] when the write fails.
pub(crate) fn record_cleanup(disk: &DiskTier, at: Timestamp) -> Result<()> {
    disk.with_writer(|c| {
        c.execute(
            "INSERT INTO maintenance (name, value) VALUES ('last_cleanup_ms', ?1)
             ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
            [i64_of(at.as_millis())],
        )
        .map(|_| ())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn open(dir: &std::path::Path) -> DiskTier {
        DiskTier::open_with_tables(dir, &dir.join("metadata.db"), 8192, &[SCHEMA]).unwrap()
    }

    #[test]
    fn the_last_cleanup_only_moves_forward_and_is_shared_by_every_instance() {
        let dir = tempfile::tempdir().unwrap();
        let disk = open(dir.path());
        assert_eq!(last_cleanup(&disk).unwrap(), None);
        let first = Timestamp::from_millis(1_700_000_000_000);
        record_cleanup(&disk, first).unwrap();
        assert_eq!(last_cleanup(&disk).unwrap(), Some(first));

        let later = first.saturating_add(Duration::from_secs(3600));
        record_cleanup(&disk, later).unwrap();
        // A process whose clock is behind finishes a cleanup afterwards: the record stays put.
        let other = open(dir.path());
        record_cleanup(&other, first).unwrap();
        assert_eq!(last_cleanup(&other).unwrap(), Some(later));
        assert_eq!(last_cleanup(&disk).unwrap(), Some(later));
        drop(other);
        let reopened = open(dir.path());
        assert_eq!(last_cleanup(&reopened).unwrap(), Some(later));
    }
}
