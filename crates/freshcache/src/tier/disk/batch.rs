//! Batches: many entries written in one transaction — every blob first, then every row, then
//! the replaced blobs — so a batch is stored whole or not at all.

#[allow(clippy::wildcard_imports)]
use super::*;

impl DiskTier {
    /// Stores every `(key, entry, compress_above)` of `items` in one transaction.
    ///
    /// # Errors
    /// [`Error::Io`] when a blob cannot be written and [`Error::Index`] when the rows cannot be
    /// committed; nothing of the batch is stored in either case (blobs already written are
    /// removed).
    pub fn put_many(&self, items: &[(&str, &Entry, u64)], now: Timestamp) -> Result<()> {
        self.put_many_with(items, now, |_| Ok(()))
    }

    /// [`DiskTier::put_many`], also running `also` in the batch's transaction (other features'
    /// rows that must be committed with the entries, or not at all).
    ///
    /// # Errors
    /// As [`DiskTier::put_many`].
    pub(crate) fn put_many_with(
        &self,
        items: &[(&str, &Entry, u64)],
        now: Timestamp,
        also: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<()>,
    ) -> Result<()> {
        let mut staged: Vec<Staged> = Vec::with_capacity(items.len());
        let remove_staged = |staged: &[Staged]| {
            for s in staged {
                self.remove_blob(s.file());
            }
        };
        for (key, entry, compress_above) in items {
            match self.stage(key, entry, *compress_above) {
                Ok(s) => staged.push(s),
                Err(e) => {
                    remove_staged(&staged);
                    return Err(e);
                }
            }
        }
        let committed = self.with_writer(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut replaced = Vec::new();
            let mut totals = Totals::default();
            {
                let mut upsert = Upsert::prepare(&tx)?;
                for ((key, entry, _), s) in items.iter().zip(&staged) {
                    if let Some(old) = upsert.row(key, entry, s, now, &mut totals)?
                        && Some(old.as_str()) != s.file()
                    {
                        replaced.push(old);
                    }
                }
            }
            totals.apply(&tx)?;
            also(&tx)?;
            // One change for the batch: its keys, a line each (keys hold no line breaks).
            if let Some(origin) = self.change_origin() {
                let keys: Vec<&str> = items.iter().map(|(k, _, _)| *k).collect();
                changes::record(&tx, origin, ChangeOp::SetMany, &keys.join("\n"))?;
            }
            let stored = Stored::read(&tx)?;
            tx.commit()?;
            // Still holding the writer lock (see `hostlock`): every blob a row stopped
            // pointing to, a key written twice in the batch included (its first blob was
            // replaced by its second).
            self.reached(fault::WritePoint::Committed);
            self.remove_blobs(&replaced);
            Ok(stored)
        });
        self.note_inline(&staged);
        match committed {
            Ok(stored) => {
                self.settle(stored, staged.iter().map(|s| s.size).sum(), now);
                Ok(())
            }
            Err(e) => {
                remove_staged(&staged);
                Err(e)
            }
        }
    }
}
