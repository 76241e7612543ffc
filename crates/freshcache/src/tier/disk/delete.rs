//! Deletes: one statement that returns what it removed, the per-type totals kept by the same
//! transaction, and the blob files removed only after it committed.

#[allow(clippy::wildcard_imports)]
use super::*;

/// What one `DELETE FROM entries ... RETURNING file, data_type, stored_size[, key]` removed.
#[derive(Debug, Default)]
pub(super) struct Deleted {
    /// Blob files of the removed rows, to remove once the transaction has committed.
    pub(super) files: Vec<String>,
    /// Keys of the removed rows, when the statement returns them (a fourth column).
    pub(super) keys: Vec<String>,
    /// Rows and stored bytes removed.
    pub(super) removed: upkeep::Removed,
}

impl Deleted {
    pub(super) fn absorb(&mut self, other: Self) {
        self.files.extend(other.files);
        self.keys.extend(other.keys);
        self.removed.absorb(other.removed);
    }
}

/// Runs `sql`, a `DELETE FROM entries ... RETURNING file, data_type, stored_size[, key]`, inside the
/// caller's transaction, and takes what it removed off `type_totals` in the same transaction:
/// one update per data type per statement (a per-row trigger cost as much as the delete itself
/// on a bulk sweep).
pub(super) fn delete_rows(
    tx: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<Deleted> {
    let mut out = Deleted::default();
    let mut by_type: Vec<(String, i64, i64)> = Vec::new();
    // Files, stored bytes and allocated bytes of the blob files among the removed rows.
    let mut blobs = (0i64, 0i64, 0i64);
    {
        let mut st = tx.prepare_cached(sql)?;
        let mut rows = st.query(params)?;
        while let Some(row) = rows.next()? {
            let file: Option<String> = row.get(0)?;
            // A tampered type name that is not text must not stop every sweep that meets it.
            let data_type = String::from_utf8_lossy(row.get_ref(1)?.as_bytes()?);
            let size: i64 = row.get(2)?;
            if row.as_ref().column_count() > 3 {
                // Read as bytes: a key an older build stored as a blob or as invalid text must
                // not fail the whole delete.
                out.keys
                    .push(String::from_utf8_lossy(row.get_ref(3)?.as_bytes()?).into_owned());
            }
            let stored = size.max(0) as u64;
            if file.is_some() {
                blobs.0 += 1;
                blobs.1 += size;
                blobs.2 += i64_of(schema::allocated_for(stored));
            }
            out.files.extend(file);
            out.removed.add(stored);
            match by_type.iter_mut().find(|t| t.0 == data_type) {
                Some(t) => {
                    t.1 += 1;
                    t.2 += size;
                }
                None => by_type.push((data_type.into_owned(), 1, size)),
            }
        }
    }
    let mut debit = tx.prepare_cached(
        "UPDATE type_totals SET entries = entries - ?2, bytes = bytes - ?3 WHERE data_type = ?1",
    )?;
    for (data_type, n, bytes) in &by_type {
        debit.execute(params![data_type, n, bytes])?;
    }
    if blobs.0 > 0 {
        tx.prepare_cached(
            "UPDATE blob_totals SET files = files - ?1, bytes = bytes - ?2,
                 allocated = allocated - ?3 WHERE id = 0",
        )?
        .execute(params![blobs.0, blobs.1, blobs.2])?;
    }
    Ok(out)
}

impl DiskTier {
    /// Removes `key`; true when a row was removed.
    ///
    /// # Errors
    /// [`Error::Index`] when the delete cannot be committed.
    pub fn remove(&self, key: &str) -> Result<bool> {
        self.delete_recorded(
            "DELETE FROM entries WHERE key = ?1 RETURNING file, data_type, stored_size",
            params![key],
            Some((ChangeOp::Delete, key)),
        )
        .map(|d| d.removed.entries > 0)
    }

    /// Runs one `DELETE ... RETURNING file, data_type, stored_size[, key]` in its own
    /// transaction (see [`delete_rows`]) and removes the blobs after commit, before the
    /// directory's writer lock is released.
    pub(super) fn delete_where(
        &self,
        sql: &str,
        params: impl rusqlite::Params + Copy,
    ) -> Result<Deleted> {
        self.delete_recorded(sql, params, None)
    }

    /// [`Self::delete_where`], also recording `change` in the change feed (in the same
    /// transaction) when the feed is on: deletes and prefix removals other processes must
    /// hear of, as opposed to expired or damaged rows nobody would serve anyway.
    pub(super) fn delete_recorded(
        &self,
        sql: &str,
        params: impl rusqlite::Params + Copy,
        change: Option<(ChangeOp, &str)>,
    ) -> Result<Deleted> {
        let d = self.with_deleter(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let d = delete_rows(&tx, sql, params)?;
            if let (Some((op, subject)), Some(origin)) = (change, self.change_origin()) {
                changes::record(&tx, origin, op, subject)?;
            }
            tx.commit()?;
            // Still holding the writer lock (see `hostlock`).
            self.remove_blobs(&d.files);
            Ok(d)
        })?;
        Ok(d)
    }

    /// Removes `key` if its stored copy was written before `stored_at` (another instance wrote
    /// a newer value); true when removed.
    ///
    /// # Errors
    /// [`Error::Index`] when the delete cannot be committed.
    pub fn remove_if_older(&self, key: &str, stored_at: Timestamp) -> Result<bool> {
        self.delete_where(
            "DELETE FROM entries WHERE key = ?1 AND stored_at < ?2
             RETURNING file, data_type, stored_size",
            params![key, i64_of(stored_at.as_millis())],
        )
        .map(|d| d.removed.entries > 0)
    }

    /// Removes `key` only if the stored entry still expires at `expires_at` and that is not
    /// after `now` (so a concurrent newer write survives). True when removed.
    ///
    /// # Errors
    /// [`Error::Index`] when the delete cannot be committed.
    pub fn remove_expired(&self, key: &str, expires_at: Timestamp, now: Timestamp) -> Result<bool> {
        if expires_at > now {
            return Ok(false);
        }
        self.delete_where(
            "DELETE FROM entries WHERE key = ?1 AND expires_at = ?2
             RETURNING file, data_type, stored_size",
            params![key, i64_of(expires_at.as_millis())],
        )
        .map(|d| d.removed.entries > 0)
    }

    /// Removes every key that starts with `prefix` (a literal byte range, so `%`, `_` and `*`
    /// match only themselves); returns the removed keys.
    ///
    /// # Errors
    /// [`Error::Index`] when the delete cannot be committed.
    pub fn remove_prefix(&self, prefix: &str, upper: Option<&str>) -> Result<Vec<String>> {
        // One statement, whatever the number of keys: the range bounds use the key index, and
        // the prefix test keeps the rule exact for anything else an older index might hold.
        let deleted = match upper {
            Some(up) => self.delete_recorded(
                "DELETE FROM entries
                 WHERE key >= ?1 AND key < ?2 AND substr(key, 1, length(?1)) = ?1
                 RETURNING file, data_type, stored_size, key",
                params![prefix, up],
                Some((ChangeOp::Prefix, prefix)),
            ),
            // Everything, whatever type the stored keys have.
            None if prefix.is_empty() => self.delete_recorded(
                "DELETE FROM entries RETURNING file, data_type, stored_size, key",
                params![],
                Some((ChangeOp::Prefix, prefix)),
            ),
            None => self.delete_recorded(
                "DELETE FROM entries WHERE key >= ?1 AND substr(key, 1, length(?1)) = ?1
                 RETURNING file, data_type, stored_size, key",
                params![prefix],
                Some((ChangeOp::Prefix, prefix)),
            ),
        }?;
        Ok(deleted.keys)
    }
}
