//! Counters persisted in a table of their own in the index database, so `stats` adds up every
//! process that ever used the directory.

use std::collections::HashMap;

use rusqlite::params;

use super::Stats;
use crate::error::Result;
use crate::tier::disk::{DiskTier, i64_of};

/// The counters table, created with the index.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS counters (
    tier      TEXT NOT NULL,
    data_type TEXT NOT NULL,
    name      TEXT NOT NULL,
    value     INTEGER NOT NULL,
    PRIMARY KEY (tier, data_type, name)
);
";

/// Adds deltas to the persisted counters: `(tier, data_type, name, delta)`.
///
/// # Errors
/// [`crate::Error::Index`] when the update fails.
pub(crate) fn add(disk: &DiskTier, deltas: &[(&str, &str, &str, u64)]) -> Result<()> {
    if deltas.is_empty() {
        return Ok(());
    }
    disk.with_writer(|c| {
        let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO counters (tier, data_type, name, value) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (tier, data_type, name) DO UPDATE SET value = value + excluded.value",
            )?;
            for (tier, ty, name, d) in deltas {
                st.execute(params![tier, ty, name, i64_of(*d)])?;
            }
        }
        tx.commit()
    })
}

/// Every persisted counter: `((tier, data_type, name), value)`.
///
/// # Errors
/// [`crate::Error::Index`] when the query fails.
pub(crate) fn load(disk: &DiskTier) -> Result<HashMap<(String, String, String), u64>> {
    disk.with_reader(|c| {
        let mut st = c.prepare_cached("SELECT tier, data_type, name, value FROM counters")?;
        let rows = st.query_map([], |r| {
            Ok((
                (r.get(0)?, r.get(1)?, r.get(2)?),
                r.get::<_, i64>(3)?.max(0) as u64,
            ))
        })?;
        rows.collect()
    })
}

/// Moves the counts `stats` gathered since the last save into the table; on failure they are
/// kept for the next attempt.
///
/// # Errors
/// [`crate::Error::Index`] when the write fails.
pub(crate) fn save(disk: &DiskTier, stats: &Stats) -> Result<()> {
    let deltas = stats.take_deltas();
    let rows: Vec<(&str, &str, &str, u64)> = deltas
        .iter()
        .map(|(t, y, n, v)| (*t, y.as_str(), *n, *v))
        .collect();
    if let Err(e) = add(disk, &rows) {
        stats.restore_deltas(&deltas);
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &std::path::Path) -> DiskTier {
        DiskTier::open_with_tables(dir, &dir.join("metadata.db"), 8192, &[SCHEMA]).unwrap()
    }

    #[test]
    fn counters_accumulate_across_opens() {
        let dir = tempfile::tempdir().unwrap();
        {
            let t = open(dir.path());
            add(&t, &[("memory", "odds_data", "hits", 3)]).unwrap();
        }
        let t = open(dir.path());
        add(&t, &[("memory", "odds_data", "hits", 4)]).unwrap();
        let c = load(&t).unwrap();
        assert_eq!(c[&("memory".into(), "odds_data".into(), "hits".into())], 7);
    }
}
