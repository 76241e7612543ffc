//! The freshness audit trail, kept in the index database beside the entries.

use rusqlite::params;
use serde::Serialize;

use super::{DiskTier, i64_of};
use crate::clock::Timestamp;
use crate::error::Result;

/// One audited signal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditRow {
    /// The inference run that asked.
    pub run_id: String,
    /// When the check was made (RFC 3339).
    pub checked_at: String,
    /// The key.
    pub key: String,
    /// Its data type.
    pub data_type: String,
    /// `fresh`, `stale` or `missing`.
    pub verdict: String,
    /// Age of the signal in milliseconds, when one was found.
    pub age_ms: Option<u64>,
    /// The TTL it was held to, in milliseconds.
    pub ttl_ms: u64,
    /// xxh3-64 of the value used, hex.
    pub checksum: Option<String>,
    /// Origin ETag of the value used.
    pub etag: Option<String>,
}

impl DiskTier {
    /// Appends audit rows in one transaction.
    ///
    /// # Errors
    /// [`crate::Error::Index`] when the insert fails; nothing is recorded then.
    pub fn record_audit(&self, checked_at: Timestamp, rows: &[AuditRow]) -> Result<()> {
        self.with_writer(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT INTO freshness_audit (run_id, checked_at, key, data_type, verdict,
                         age_ms, ttl_ms, checksum, etag)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?;
                for r in rows {
                    st.execute(params![
                        r.run_id,
                        i64_of(checked_at.as_millis()),
                        r.key,
                        r.data_type,
                        r.verdict,
                        r.age_ms.map(i64_of),
                        i64_of(r.ttl_ms),
                        r.checksum,
                        r.etag,
                    ])?;
                }
            }
            tx.commit()
        })
    }

    /// Every audit row of `run_id`, in check order.
    ///
    /// # Errors
    /// [`crate::Error::Index`] when the query fails.
    pub fn audit_rows(&self, run_id: &str) -> Result<Vec<AuditRow>> {
        self.with_reader(|c| {
            c.prepare_cached(
                "SELECT run_id, checked_at, key, data_type, verdict, age_ms, ttl_ms, checksum, etag
                 FROM freshness_audit WHERE run_id = ?1 ORDER BY id",
            )?
            .query_map([run_id], |r| {
                Ok(AuditRow {
                    run_id: r.get(0)?,
                    checked_at: Timestamp::from_millis(r.get::<_, i64>(1)?.max(0) as u64)
                        .to_string(),
                    key: r.get(2)?,
                    data_type: r.get(3)?,
                    verdict: r.get(4)?,
                    age_ms: r.get::<_, Option<i64>>(5)?.map(|v| v.max(0) as u64),
                    ttl_ms: r.get::<_, i64>(6)?.max(0) as u64,
                    checksum: r.get(7)?,
                    etag: r.get(8)?,
                })
            })?
            .collect()
        })
    }

    /// Deletes audit rows checked before `before`; returns how many.
    ///
    /// # Errors
    /// [`crate::Error::Index`] when the delete fails.
    pub fn prune_audit(&self, before: Timestamp) -> Result<u64> {
        self.with_writer(|c| {
            c.execute(
                "DELETE FROM freshness_audit WHERE checked_at < ?1",
                [i64_of(before.as_millis())],
            )
            .map(|n| n as u64)
        })
    }
}
