//! The change feed: every set, delete and prefix removal made through this tier commits a row
//! with a sequence number in the same transaction as the change itself, so a process that
//! follows the feed sees every change another process committed, in commit order, and can tell
//! when it fell behind what is kept (a gap).
//!
//! The feed is a store-level record of mutations; what a follower does with it (drop memory
//! copies) is the cache's business.

use std::path::Path;

use rusqlite::{Connection, params};

use super::DiskTier;
use crate::error::{Error, Result};

/// The feed's table, created with the index.
pub(super) const SCHEMA: &str = "
-- `seq` is the rowid: one past the highest row. Not AUTOINCREMENT, which writes its counter
-- to `sqlite_sequence`, one more page in every commit; pruning keeps the newest row, so
-- numbers are never reused (an index made by an earlier build keeps AUTOINCREMENT: the same
-- numbers).
CREATE TABLE IF NOT EXISTS changes (
    seq    INTEGER PRIMARY KEY,
    op     TEXT NOT NULL,
    subject TEXT NOT NULL,
    origin TEXT NOT NULL
);
";

/// Rows kept: a follower further behind than this sees a gap.
const KEEP: i64 = 65_536;
/// The oldest rows are pruned once every this many changes (amortised in the writes).
const PRUNE_EVERY: i64 = 1_024;
/// Rows read per poll at most; a follower further behind reads the rest on its next polls.
const READ_AT_MOST: i64 = 4_096;

/// What changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeOp {
    /// The key was written.
    Set,
    /// The keys (the subject's lines) were written in one batch.
    SetMany,
    /// The key was deleted.
    Delete,
    /// Every key starting with the subject was removed (the empty subject: every key).
    Prefix,
    /// A tag was invalidated (the subject is the cache's own encoding of the tag and time).
    Tag,
}

impl ChangeOp {
    fn code(self) -> &'static str {
        match self {
            Self::Set => "s",
            Self::SetMany => "m",
            Self::Delete => "d",
            Self::Prefix => "p",
            Self::Tag => "t",
        }
    }

    fn of_code(code: &str) -> Option<Self> {
        match code {
            "s" => Some(Self::Set),
            "m" => Some(Self::SetMany),
            "d" => Some(Self::Delete),
            "p" => Some(Self::Prefix),
            "t" => Some(Self::Tag),
            _ => None,
        }
    }
}

/// One committed change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Its place in commit order.
    pub seq: u64,
    /// What happened.
    pub op: ChangeOp,
    /// The key; the keys a line each for [`ChangeOp::SetMany`]; the prefix for
    /// [`ChangeOp::Prefix`].
    pub subject: String,
    /// Which writer made it (the label given to [`DiskTier::record_changes_as`]).
    pub origin: String,
}

/// Appends a change inside the writer's transaction, pruning the oldest rows now and then.
pub(super) fn record(
    tx: &rusqlite::Transaction<'_>,
    origin: &str,
    op: ChangeOp,
    subject: &str,
) -> rusqlite::Result<()> {
    tx.prepare_cached("INSERT INTO changes (op, subject, origin) VALUES (?1, ?2, ?3)")?
        .execute(params![op.code(), subject, origin])?;
    let seq = tx.last_insert_rowid();
    if seq % PRUNE_EVERY == 0 {
        tx.prepare_cached("DELETE FROM changes WHERE seq <= ?1")?
            .execute([seq - KEEP])?;
    }
    Ok(())
}

impl DiskTier {
    /// From now on, sets, deletes and prefix removals made through this tier are recorded in
    /// the change feed under `origin`. Can be set once; false when already set.
    pub fn record_changes_as(&self, origin: &str) -> bool {
        self.origin.set(origin.to_owned()).is_ok()
    }

    /// Runs `f` in one write transaction that also records `op` on `subject` in the change
    /// feed (when the feed is on): for other features' tables whose changes other processes
    /// must hear of.
    ///
    /// # Errors
    /// [`Error::Index`] when the transaction fails (nothing of it is kept).
    pub(crate) fn write_with_change<T>(
        &self,
        op: ChangeOp,
        subject: &str,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T> {
        self.with_writer(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            if let Some(origin) = self.change_origin() {
                record(&tx, origin, op, subject)?;
            }
            tx.commit()?;
            Ok(out)
        })
    }

    /// The origin changes are recorded under, when the feed is on.
    /// The origin the current write records its changes under; `None` when changes are not
    /// recorded, or the writer found nobody else on the index (see `presence`).
    pub(super) fn change_origin(&self) -> Option<&str> {
        if self.alone_now.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        self.origin.get().map(String::as_str)
    }
}

/// What one poll of the feed found.
#[derive(Debug, PartialEq, Eq)]
pub enum Poll {
    /// Changes committed since the last poll, in order (possibly none).
    Changes(Vec<Change>),
    /// Changes were pruned before this follower read them: it cannot know what changed.
    Gap,
}

/// A reader of the change feed with a connection of its own, starting after the last change
/// committed when it was opened.
pub struct ChangeFollower {
    conn: Connection,
    /// Writers record their changes while a follower that belongs to no tier is open.
    _presence: Option<super::presence::Presence>,
    db_path: std::path::PathBuf,
    last: i64,
    /// SQLite's `data_version` at the last read: unchanged means nobody else committed.
    version: Option<i64>,
}

impl std::fmt::Debug for ChangeFollower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeFollower")
            .field("db_path", &self.db_path)
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

impl ChangeFollower {
    /// Opens a follower of the feed in the index at `db_path` that belongs to no tier: from
    /// now on every writer records its changes.
    ///
    /// # Errors
    /// [`Error::Index`] when the index cannot be opened or read.
    #[cfg(test)]
    pub fn open(db_path: &Path) -> Result<Self> {
        let presence = super::presence::Presence::register(db_path)?;
        let mut follower = Self::open_for_tier(db_path)?;
        follower._presence = Some(presence);
        Ok(follower)
    }

    /// [`ChangeFollower::open`] for the follower of a tier of this process: it hears of
    /// other processes' changes only, whose writers know of the tier.
    ///
    /// # Errors
    /// As [`ChangeFollower::open`].
    pub fn open_for_tier(db_path: &Path) -> Result<Self> {
        let conn = DiskTier::connect(db_path)?;
        let db = |source| Error::Index {
            path: db_path.to_path_buf(),
            source,
        };
        let last: i64 = conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM changes", [], |r| {
                r.get(0)
            })
            .map_err(db)?;
        Ok(Self {
            conn,
            _presence: None,
            db_path: db_path.to_path_buf(),
            last,
            version: None,
        })
    }

    /// The changes committed since the last poll. Cheap when nothing was committed: one
    /// `PRAGMA data_version`, no read of the table.
    ///
    /// # Errors
    /// [`Error::Index`] when the index cannot be read.
    pub fn poll(&mut self) -> Result<Poll> {
        let db = |source| Error::Index {
            path: self.db_path.clone(),
            source,
        };
        let version: i64 = self
            .conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(db)?;
        if self.version == Some(version) {
            return Ok(Poll::Changes(Vec::new()));
        }
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT seq, op, subject, origin FROM changes WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(db)?;
        let rows = st
            .query_map(params![self.last, READ_AT_MOST], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })
            .map_err(db)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db)?;
        drop(st);
        // Read fully: the next poll may skip the table until someone commits again.
        if rows.len() < READ_AT_MOST as usize {
            self.version = Some(version);
        }
        let Some(first) = rows.first() else {
            return Ok(Poll::Changes(Vec::new()));
        };
        // Rows are numbered one past the highest row without holes (writes are serialised, so
        // no row commits before one numbered lower), and only pruning deletes them — never the
        // newest, so a number is never given twice: a first row past the next number, or a hole
        // between two rows, means rows this follower never read are gone.
        let gap = first.0 > self.last + 1 || rows.windows(2).any(|w| w[1].0 != w[0].0 + 1);
        self.last = rows.last().map_or(self.last, |r| r.0);
        if gap {
            return Ok(Poll::Gap);
        }
        let changes = rows
            .into_iter()
            .filter_map(|(seq, op, subject, origin)| {
                Some(Change {
                    seq: u64::try_from(seq).ok()?,
                    op: ChangeOp::of_code(&op)?,
                    subject,
                    origin,
                })
            })
            .collect();
        Ok(Poll::Changes(changes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;
    use crate::entry::{Codec, Entry, Meta, checksum};

    fn entry(v: &'static [u8]) -> Entry {
        let value = bytes::Bytes::from_static(v);
        Entry {
            meta: Meta {
                data_type: "odds_data".into(),
                stored_at: Timestamp::from_millis(1),
                expires_at: Timestamp::from_millis(u64::MAX / 2),
                as_of: None,
                codec: Codec::Bytes,
                etag: None,
                last_modified: None,
                checksum: checksum(&value),
                lineage: None,
                lineage_check: Default::default(),
            },
            value,
        }
    }

    /// Writes a small value under `key`.
    fn put_x(t: &DiskTier, key: &str) {
        t.put(key, &entry(b"x"), u64::MAX, Timestamp::from_millis(1))
            .unwrap();
    }

    /// Rows in the change feed.
    fn feed_rows(t: &DiskTier) -> i64 {
        t.with_reader(|c| c.query_row("SELECT COUNT(*) FROM changes", [], |r| r.get(0)))
            .unwrap()
    }

    #[test]
    fn a_follower_reads_changes_in_order_with_their_origin_and_nothing_twice() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("metadata.db");
        let a = DiskTier::open(dir.path(), &db, 8192).unwrap();
        let mut follower = ChangeFollower::open(&db).unwrap();
        // Not recorded before an origin is set.
        put_x(&a, "odds:g:0");
        assert_eq!(follower.poll().unwrap(), Poll::Changes(Vec::new()));
        assert!(a.record_changes_as("a"));
        assert!(!a.record_changes_as("b"));
        put_x(&a, "odds:g:1");
        a.remove("odds:g:1").unwrap();
        a.remove_prefix("odds:", None).unwrap();
        let Poll::Changes(got) = follower.poll().unwrap() else {
            panic!("gap");
        };
        let seen: Vec<(ChangeOp, &str, &str)> = got
            .iter()
            .map(|c| (c.op, c.subject.as_str(), c.origin.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                (ChangeOp::Set, "odds:g:1", "a"),
                (ChangeOp::Delete, "odds:g:1", "a"),
                (ChangeOp::Prefix, "odds:", "a"),
            ]
        );
        assert!(got.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
        assert_eq!(follower.poll().unwrap(), Poll::Changes(Vec::new()));
    }

    #[test]
    fn a_follower_behind_what_was_pruned_sees_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("metadata.db");
        let a = DiskTier::open(dir.path(), &db, 8192).unwrap();
        a.record_changes_as("a");
        let mut follower = ChangeFollower::open(&db).unwrap();
        for i in 0..5 {
            put_x(&a, &format!("odds:g:{i}"));
        }
        // Pruned before the follower read them, as the writers prune rows over the limit.
        a.with_writer(|c| c.execute("DELETE FROM changes WHERE seq <= 3", []))
            .unwrap();
        assert_eq!(follower.poll().unwrap(), Poll::Gap);
        // Caught up afterwards: later changes are read normally.
        put_x(&a, "odds:g:9");
        let Poll::Changes(got) = follower.poll().unwrap() else {
            panic!("gap");
        };
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].subject, "odds:g:9");
    }

    #[test]
    fn pruning_keeps_the_newest_row_so_numbers_are_never_given_twice() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("metadata.db");
        let a = DiskTier::open(dir.path(), &db, 8192).unwrap();
        a.record_changes_as("a");
        // Someone else on the index: changes are recorded.
        let _present = ChangeFollower::open(&db).unwrap();
        let put = |i: i64| {
            put_x(&a, &format!("odds:g:{i}"));
        };
        let newest = || {
            a.with_reader(|c| c.query_row("SELECT MAX(seq) FROM changes", [], |r| r.get(0)))
                .unwrap()
        };
        // Over a pruning, which runs every PRUNE_EVERY rows and keeps the newest KEEP.
        for i in 0..PRUNE_EVERY + 2 {
            put(i);
        }
        let before: i64 = newest();
        assert_eq!(before, PRUNE_EVERY + 2);
        // The harshest pruning a writer can do still keeps the row it just wrote.
        a.with_writer(|c| c.execute("DELETE FROM changes WHERE seq < ?1", [before]))
            .unwrap();
        let mut follower = ChangeFollower::open(&db).unwrap();
        put(99);
        assert_eq!(
            newest(),
            before + 1,
            "numbering goes on past the highest row"
        );
        let Poll::Changes(got) = follower.poll().unwrap() else {
            panic!("gap");
        };
        assert_eq!(
            (got.len(), got[0].seq),
            (1, u64::try_from(before + 1).unwrap())
        );
    }

    #[test]
    fn a_tier_alone_on_its_index_records_no_changes_until_someone_else_opens_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("metadata.db");
        let a = DiskTier::open(dir.path(), &db, 8192).unwrap();
        a.record_changes_as("a");
        put_x(&a, "odds:g:1");
        assert_eq!(feed_rows(&a), 0, "nobody could hear of it");
        // A second tier of this process on the same index.
        let b = DiskTier::open(dir.path(), &db, 8192).unwrap();
        put_x(&a, "odds:g:2");
        assert_eq!(feed_rows(&a), 1);
        drop(b);
        put_x(&a, "odds:g:3");
        assert_eq!(feed_rows(&a), 1, "alone again");
        // A follower that belongs to no tier.
        let mut follower = ChangeFollower::open(&db).unwrap();
        put_x(&a, "odds:g:4");
        match follower.poll().unwrap() {
            Poll::Changes(c) => {
                let keys: Vec<&str> = c.iter().map(|c| c.subject.as_str()).collect();
                assert_eq!(keys, ["odds:g:4"]);
            }
            Poll::Gap => panic!("gap"),
        }
    }

    #[test]
    fn two_paths_to_one_index_are_one_presence_and_a_second_tier_there_is_heard() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cache");
        std::fs::create_dir(&dir).unwrap();
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let a = DiskTier::open(&dir, &dir.join("metadata.db"), 8192).unwrap();
        a.record_changes_as("a");
        let b = DiskTier::open(&link, &link.join("metadata.db"), 8192).unwrap();
        put_x(&a, "odds:g:1");
        assert_eq!(
            feed_rows(&a),
            1,
            "the tier opened through the link is someone else"
        );
        drop(b);
    }
}
