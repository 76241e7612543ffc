//! Load leases in the index: the processes sharing a directory take turns loading a key, as the
//! Redis tier's leases do between hosts. A lease expires on its own, so a holder that dies
//! (`kill -9`) blocks the others for at most its lease time.

use rusqlite::params;

use super::{DiskTier, i64_of};
use crate::clock::Timestamp;
use crate::error::Result;

/// The leases table, created with the index.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS leases (
    key        TEXT PRIMARY KEY NOT NULL,
    holder     TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
";

impl DiskTier {
    /// Takes the lease on `key` for `holder` until `until`, if nobody holds an unexpired one
    /// at `now` or the one held was taken by the same `process` (holders are named
    /// `{process}-{n}`: a process runs one load of a key at a time, so its earlier holder was
    /// cancelled); true when taken.
    ///
    /// # Errors
    /// [`crate::Error::Index`] when the index cannot be written.
    pub fn try_lease(
        &self,
        key: &str,
        holder: &str,
        process: &str,
        until: Timestamp,
        now: Timestamp,
    ) -> Result<bool> {
        self.with_writer(|c| {
            c.prepare_cached(
                "INSERT INTO leases (key, holder, expires_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET holder = excluded.holder,
                     expires_at = excluded.expires_at
                 WHERE leases.expires_at <= ?4 OR substr(leases.holder, 1, length(?5) + 1) = ?5 || '-'",
            )?
            .execute(params![
                key,
                holder,
                i64_of(until.as_millis()),
                i64_of(now.as_millis()),
                process
            ])
            .map(|n| n == 1)
        })
    }

    /// Gives the lease on `key` back, if `holder` still holds it.
    ///
    /// # Errors
    /// [`crate::Error::Index`] when the index cannot be written (the lease then lapses).
    pub fn release_lease(&self, key: &str, holder: &str) -> Result<()> {
        self.with_writer(|c| {
            c.prepare_cached("DELETE FROM leases WHERE key = ?1 AND holder = ?2")?
                .execute(params![key, holder])
                .map(|_| ())
        })
    }
}
