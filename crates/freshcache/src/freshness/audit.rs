//! The freshness audit trail: one row per signal the guard checked, in a table of its own in
//! the index database, so a later query proves what an inference run used.

use rusqlite::params;
use serde::Serialize;

use super::{FreshnessReport, Verdict};
use crate::clock::Timestamp;
use crate::error::Result;
use crate::tier::disk::{DiskTier, i64_of};

/// The audit table, created with the index.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS freshness_audit (
    id         INTEGER PRIMARY KEY,
    run_id     TEXT NOT NULL,
    checked_at INTEGER NOT NULL,
    key        TEXT NOT NULL,
    data_type  TEXT NOT NULL,
    verdict    TEXT NOT NULL,
    age_ms     INTEGER,
    ttl_ms     INTEGER NOT NULL,
    checksum   TEXT,
    etag       TEXT
);
CREATE INDEX IF NOT EXISTS freshness_audit_run ON freshness_audit(run_id);
CREATE INDEX IF NOT EXISTS freshness_audit_time ON freshness_audit(checked_at);
";

/// One audited signal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditRow {
    /// The inference run that asked.
    pub run_id: String,
    /// When the check was made (RFC 3339).
    pub checked_at: String,
    /// The key as checked.
    pub key: String,
    /// Its data type.
    pub data_type: String,
    /// What the guard concluded.
    pub verdict: Verdict,
    /// Age of the signal in milliseconds, when one was found.
    pub age_ms: Option<u64>,
    /// The TTL it was held to, in milliseconds.
    pub ttl_ms: u64,
    /// xxh3-64 of the value used, hex.
    pub checksum: Option<String>,
    /// Origin ETag of the value used.
    pub etag: Option<String>,
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Appends a row per signal of `report` in one transaction.
///
/// # Errors
/// [`crate::Error::Index`] when the insert fails; nothing is recorded then.
pub(crate) fn record(
    disk: &DiskTier,
    checked_at: Timestamp,
    report: &FreshnessReport,
) -> Result<()> {
    disk.with_writer(|c| {
        let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO freshness_audit (run_id, checked_at, key, data_type, verdict,
                     age_ms, ttl_ms, checksum, etag)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for s in &report.signals {
                st.execute(params![
                    report.run_id,
                    i64_of(checked_at.as_millis()),
                    s.key,
                    s.data_type,
                    s.verdict.name(),
                    s.age.map(|a| i64_of(millis(a))),
                    i64_of(millis(s.ttl)),
                    s.checksum,
                    s.etag,
                ])?;
            }
        }
        tx.commit()
    })
}

/// Every audit row of `run_id`, in check order.
///
/// # Errors
/// [`crate::Error::Index`] when the query fails, or a row holds a verdict this build does not
/// know.
pub(crate) fn rows(disk: &DiskTier, run_id: &str) -> Result<Vec<AuditRow>> {
    disk.with_reader(|c| {
        c.prepare_cached(
            "SELECT run_id, checked_at, key, data_type, verdict, age_ms, ttl_ms, checksum, etag
             FROM freshness_audit WHERE run_id = ?1 ORDER BY id",
        )?
        .query_map([run_id], |r| {
            let verdict: String = r.get(4)?;
            let verdict = Verdict::from_name(&verdict).ok_or_else(|| {
                rusqlite::Error::FromSqlConversionFailure(
                    4,
                    rusqlite::types::Type::Text,
                    format!("unknown verdict {verdict:?}").into(),
                )
            })?;
            Ok(AuditRow {
                run_id: r.get(0)?,
                checked_at: Timestamp::from_millis(r.get::<_, i64>(1)?.max(0) as u64).to_string(),
                key: r.get(2)?,
                data_type: r.get(3)?,
                verdict,
                age_ms: r.get::<_, Option<i64>>(5)?.map(|v| v.max(0) as u64),
                ttl_ms: r.get::<_, i64>(6)?.max(0) as u64,
                checksum: r.get(7)?,
                etag: r.get(8)?,
            })
        })?
        .collect()
    })
}

/// One guard run as the audit trail remembers it: when it was checked and its verdict counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunSummary {
    /// The inference run's id.
    pub run_id: String,
    /// When its first signal was checked (RFC 3339).
    pub checked_at: String,
    /// Signals checked.
    pub signals: u64,
    /// Signals found fresh.
    pub fresh: u64,
    /// Signals refused as stale.
    pub stale: u64,
    /// Signals refused as missing.
    pub missing: u64,
}

/// The `limit` most recently checked runs, newest first.
///
/// # Errors
/// [`crate::Error::Index`] when the query fails.
pub(crate) fn recent(disk: &DiskTier, limit: usize) -> Result<Vec<RunSummary>> {
    let count = |v: i64| v.max(0) as u64;
    disk.with_reader(|c| {
        c.prepare_cached(
            "SELECT run_id, MIN(checked_at) AS first, COUNT(*),
                    SUM(verdict = 'fresh'), SUM(verdict = 'stale'), SUM(verdict = 'missing')
             FROM freshness_audit GROUP BY run_id ORDER BY first DESC, MAX(id) DESC LIMIT ?1",
        )?
        .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            Ok(RunSummary {
                run_id: r.get(0)?,
                checked_at: Timestamp::from_millis(count(r.get(1)?)).to_string(),
                signals: count(r.get(2)?),
                fresh: count(r.get(3)?),
                stale: count(r.get(4)?),
                missing: count(r.get(5)?),
            })
        })?
        .collect()
    })
}

/// Deletes audit rows checked before `before`; returns how many.
///
/// # Errors
/// [`crate::Error::Index`] when the delete fails.
pub(crate) fn prune(disk: &DiskTier, before: Timestamp) -> Result<u64> {
    disk.with_writer(|c| {
        c.execute(
            "DELETE FROM freshness_audit WHERE checked_at < ?1",
            [i64_of(before.as_millis())],
        )
        .map(|n| n as u64)
    })
}
