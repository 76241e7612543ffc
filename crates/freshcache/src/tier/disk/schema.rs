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
    inline_value  BLOB
);
CREATE INDEX IF NOT EXISTS entries_expires_at ON entries(expires_at);
CREATE INDEX IF NOT EXISTS entries_access_at ON entries(access_at);
CREATE INDEX IF NOT EXISTS entries_file ON entries(file) WHERE file IS NOT NULL;
-- Stored bytes per data type, kept exact in the same transaction as every write, so every
-- process sees one total without scanning the table: inserts and rewrites by triggers, deletes
-- by the deleting statement itself (see `delete_rows`; a per-row delete trigger cost as much
-- as the delete on a bulk sweep).
CREATE TABLE IF NOT EXISTS type_totals (
    data_type TEXT PRIMARY KEY NOT NULL,
    entries   INTEGER NOT NULL,
    bytes     INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS entries_totals_insert AFTER INSERT ON entries BEGIN
    INSERT INTO type_totals (data_type, entries, bytes) VALUES (NEW.data_type, 1, NEW.stored_size)
    ON CONFLICT (data_type) DO UPDATE SET entries = entries + 1, bytes = bytes + excluded.bytes;
END;
CREATE TRIGGER IF NOT EXISTS entries_totals_update AFTER UPDATE OF stored_size, data_type ON entries BEGIN
    UPDATE type_totals SET entries = entries - 1, bytes = bytes - OLD.stored_size
    WHERE data_type = OLD.data_type;
    INSERT INTO type_totals (data_type, entries, bytes) VALUES (NEW.data_type, 1, NEW.stored_size)
    ON CONFLICT (data_type) DO UPDATE SET entries = entries + 1, bytes = bytes + excluded.bytes;
END;
-- Blob files: how many, their stored bytes, and the bytes they take on disk (whole blocks of
-- BLOCK bytes), kept like `type_totals` (triggers for inserts and rewrites of rows with a file,
-- the deleting statement for deletes), so the tier's footprint is known without a walk of the
-- blob directory. One row, made here so the triggers only ever update it.
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
CREATE TRIGGER IF NOT EXISTS entries_blobs_insert AFTER INSERT ON entries
WHEN NEW.file IS NOT NULL BEGIN
    UPDATE blob_totals SET files = files + 1, bytes = bytes + NEW.stored_size,
        allocated = allocated + (NEW.stored_size + 4095) / 4096 * 4096 WHERE id = 0;
END;
CREATE TRIGGER IF NOT EXISTS entries_blobs_update AFTER UPDATE OF file, stored_size ON entries
WHEN OLD.file IS NOT NULL OR NEW.file IS NOT NULL BEGIN
    UPDATE blob_totals SET
        files = files - (OLD.file IS NOT NULL) + (NEW.file IS NOT NULL),
        bytes = bytes - iif(OLD.file IS NULL, 0, OLD.stored_size)
                      + iif(NEW.file IS NULL, 0, NEW.stored_size),
        allocated = allocated - iif(OLD.file IS NULL, 0, (OLD.stored_size + 4095) / 4096 * 4096)
                              + iif(NEW.file IS NULL, 0, (NEW.stored_size + 4095) / 4096 * 4096)
    WHERE id = 0;
END;
CREATE TABLE IF NOT EXISTS schema_info (name TEXT PRIMARY KEY, value TEXT NOT NULL);
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

/// The schema this build writes. Version 1 kept the per-type totals of deletes with a per-row
/// trigger; version 2 has the deleting statements keep them (see [`delete_rows`]); version 3
/// adds the tables of other features that older builds do not honour (tag invalidation times)
/// and marks an index whose entries may carry a lineage (envelope version 2), which an older
/// build would take for damage and delete: it refuses the index instead.
pub(super) const SCHEMA_VERSION: &str = "3";

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
    if !matches!(found.as_deref(), Some("1" | "2" | "3")) {
        return Ok(found);
    }
    // Version 1 counted deletes with a trigger on `entries` named `entries_totals_delete`.
    // Version 2 keeps a do-nothing trigger of that name on `schema_info`, so an older build
    // that merely opens this index (its schema says `CREATE TRIGGER IF NOT EXISTS`) cannot put
    // the counting one back and have every delete counted twice. A counting trigger found
    // anyway (version 1, or put back some other way) is replaced and the totals rebuilt.
    let counting: i64 = c.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger'
         AND name = 'entries_totals_delete' AND tbl_name = 'entries'",
        [],
        |r| r.get(0),
    )?;
    if counting > 0 || found.as_deref() == Some("1") {
        c.execute_batch("DROP TRIGGER IF EXISTS entries_totals_delete;")?;
        c.execute_batch(REBUILD_TOTALS)?;
        c.execute_batch("UPDATE schema_info SET value = '2' WHERE name = 'version';")?;
    }
    c.execute_batch(
        "CREATE TRIGGER IF NOT EXISTS entries_totals_delete AFTER DELETE ON schema_info
         BEGIN SELECT 1; END;",
    )?;
    // Version 2 to 3: the new tables were made by the schema's `CREATE ... IF NOT EXISTS`.
    c.execute_batch("UPDATE schema_info SET value = '3' WHERE name = 'version' AND value = '2';")?;
    version()
}
