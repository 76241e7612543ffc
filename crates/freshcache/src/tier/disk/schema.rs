//! The index schema: entries, per-type totals, the schema version, and migrations from
//! earlier versions. Other features keep tables of their own in the same database (the audit,
//! persisted counters, cleanup history); their schemas are passed to [`DiskTier::open`].

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS entries (
    key           TEXT PRIMARY KEY NOT NULL,
    data_type     TEXT NOT NULL,
    stored_at     INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    as_of         INTEGER,
    access_at     INTEGER NOT NULL,
    access_count  INTEGER NOT NULL DEFAULT 0,
    size          INTEGER NOT NULL,
    stored_size   INTEGER NOT NULL,
    codec         TEXT NOT NULL,
    checksum      INTEGER NOT NULL,
    etag          TEXT,
    last_modified TEXT,
    file          TEXT,
    inline_value  BLOB,
    expiry_bucket INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS entries_access_at ON entries(access_at);
CREATE INDEX IF NOT EXISTS entries_file ON entries(file) WHERE file IS NOT NULL;
-- Stored bytes per data type, kept exact in the same transaction as every write, so every
-- process sees one total without scanning the table: by the writing code itself, one update
-- per type for a whole batch (see `write.rs` and `delete_rows`; per-row triggers cost as much
-- as the write: a bulk fill ran at half the speed with them).
CREATE TABLE IF NOT EXISTS type_totals (
    data_type TEXT PRIMARY KEY NOT NULL,
    entries   INTEGER NOT NULL,
    bytes     INTEGER NOT NULL
);
-- Blob files: how many, their stored bytes, and the bytes they take on disk (whole blocks of
-- BLOCK bytes), kept like `type_totals`, so the tier's footprint is known without a walk of the
-- blob directory. One row, made here so writes only ever update it.
CREATE TABLE IF NOT EXISTS blob_totals (
    id        INTEGER PRIMARY KEY CHECK (id = 0),
    files     INTEGER NOT NULL,
    bytes     INTEGER NOT NULL,
    allocated INTEGER NOT NULL
);
INSERT OR IGNORE INTO blob_totals (id, files, bytes, allocated)
    SELECT 0, COUNT(*), COALESCE(SUM(stored_size), 0),
           COALESCE(SUM((stored_size + 4095) / 4096 * 4096), 0)
    FROM entries WHERE file IS NOT NULL AND NOT EXISTS (SELECT 1 FROM blob_totals);
CREATE TABLE IF NOT EXISTS schema_info (name TEXT PRIMARY KEY, value TEXT NOT NULL);
-- A new index starts at version 3 and is brought to the current one by `migrate`.
INSERT OR IGNORE INTO schema_info VALUES ('version', '3');
";

/// Recomputes the per-type totals from the rows (schema upgrade, repair of drift).
pub(super) const REBUILD_TOTALS: &str = "DELETE FROM type_totals;
     INSERT INTO type_totals (data_type, entries, bytes)
         SELECT data_type, COUNT(*), SUM(stored_size) FROM entries GROUP BY data_type;
     DELETE FROM blob_totals;
     INSERT INTO blob_totals (id, files, bytes, allocated)
         SELECT 0, COUNT(*), COALESCE(SUM(stored_size), 0),
                COALESCE(SUM((stored_size + 4095) / 4096 * 4096), 0)
         FROM entries WHERE file IS NOT NULL;";

/// The block size blob files are counted in (the common filesystems' 4 KiB).
pub(super) const BLOCK: u64 = 4096;

/// Bytes a blob of `size` bytes takes on disk: whole blocks of [`BLOCK`].
pub(super) fn allocated_for(size: u64) -> u64 {
    size.div_ceil(BLOCK).saturating_mul(BLOCK)
}

/// The width of an expiry bucket: the sweep finds expired rows through an index of
/// `expires_at` rounded down to a minute (`expiry_bucket`), not of `expires_at` itself. A
/// rewrite moves a row's expiry every time, and an index of the exact value put a page of
/// that index into every rewrite's commit; the bucket changes once a minute at most for a
/// signal rewritten every few seconds (see [`Upsert::row`]).
pub(super) const EXPIRY_BUCKET_MS: i64 = 60_000;

/// The expiry bucket of `expires_at` (milliseconds): a lower bound of it, to the minute.
pub(super) fn expiry_bucket(expires_at_ms: i64) -> i64 {
    expires_at_ms.div_euclid(EXPIRY_BUCKET_MS)
}

/// The schema this build writes. Version 1 kept the per-type totals of deletes with a per-row
/// trigger; version 2 has the deleting statements keep them (see [`delete_rows`]); version 3
/// has the writing statements keep those of inserts and rewrites too (no trigger on `entries`),
/// adds the tables of features older builds do not honour (tag invalidation times, the
/// dependents of derived entries) and marks an index whose entries may carry a lineage
/// (envelope version 2), which an older build would take for damage and delete: it refuses
/// the index instead. Version 4 indexes expiry buckets instead of expiry times; an older
/// build would sweep nothing and write rows without a bucket.
pub(super) const SCHEMA_VERSION: &str = "4";

/// The triggers on `entries` that kept the totals before version 3. Each name is held by a
/// do-nothing trigger on `schema_info` from version 3 on, so an older build that merely opens
/// the index (its schema says `CREATE TRIGGER IF NOT EXISTS`) cannot put a counting one back
/// and have writes counted twice.
const RETIRED_TRIGGERS: [&str; 5] = [
    "entries_totals_delete",
    "entries_totals_insert",
    "entries_totals_update",
    "entries_blobs_insert",
    "entries_blobs_update",
];

/// Brings an index of an earlier version up to [`SCHEMA_VERSION`], inside the caller's
/// transaction; returns the version found afterwards (another build's newer version is left
/// alone, and refused by the caller).
pub(super) fn migrate(c: &Connection) -> rusqlite::Result<Option<String>> {
    let version = || {
        c.query_row(
            "SELECT value FROM schema_info WHERE name = 'version'",
            [],
            |r| r.get::<_, String>(0),
        )
        .optional()
    };
    let found = version()?;
    if !matches!(found.as_deref(), Some("1" | "2" | "3" | "4")) {
        return Ok(found);
    }
    // Version 4: the expiry bucket column and its index in place of the index of expiry
    // times (which an older build that merely opened the index may have put back).
    let has_bucket: i64 = c.query_row(
        "SELECT COUNT(*) FROM pragma_table_info('entries') WHERE name = 'expiry_bucket'",
        [],
        |r| r.get(0),
    )?;
    if has_bucket == 0 {
        c.execute_batch(&format!(
            "ALTER TABLE entries ADD COLUMN expiry_bucket INTEGER NOT NULL DEFAULT 0;
             UPDATE entries SET expiry_bucket = expires_at / {EXPIRY_BUCKET_MS}
                 - (expires_at < 0 AND expires_at % {EXPIRY_BUCKET_MS} != 0);"
        ))?;
    }
    c.execute_batch(
        "CREATE INDEX IF NOT EXISTS entries_expiry_bucket ON entries(expiry_bucket);
         DROP INDEX IF EXISTS entries_expires_at;",
    )?;
    // A counting trigger on `entries` (an older version's, or one put back some other way) is
    // replaced by its placeholder. Versions 2's insert and update triggers kept the totals
    // exact, so dropping them needs no rebuild; version 1's delete trigger, or one put back
    // under a version-3 index, may have counted twice, so the totals are rebuilt.
    let mut rebuild = found.as_deref() == Some("1");
    for name in RETIRED_TRIGGERS {
        let counting: i64 = c.query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger'
             AND name = ?1 AND tbl_name = 'entries'",
            [name],
            |r| r.get(0),
        )?;
        if counting > 0 {
            rebuild |=
                name == "entries_totals_delete" || matches!(found.as_deref(), Some("3" | "4"));
            c.execute_batch(&format!("DROP TRIGGER {name};"))?;
        }
        c.execute_batch(&format!(
            "CREATE TRIGGER IF NOT EXISTS {name} AFTER DELETE ON schema_info BEGIN SELECT 1; END;"
        ))?;
    }
    if rebuild {
        c.execute_batch(REBUILD_TOTALS)?;
    }
    c.execute_batch(&format!(
        "UPDATE schema_info SET value = '{SCHEMA_VERSION}' WHERE name = 'version';"
    ))?;
    version()
}
