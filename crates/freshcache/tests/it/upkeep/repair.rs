//! Repair and verification of the disk tier: totals drift, lost blobs, orphans, links, corrupt entries.

use super::*;

#[test]
fn repair_detects_each_kind_of_totals_drift_and_only_apply_rebuilds() {
    let tampering = [
        "UPDATE type_totals SET bytes = bytes + 7 WHERE data_type = 'news_articles'",
        "UPDATE type_totals SET entries = entries + 1 WHERE data_type = 'odds_data'",
        "DELETE FROM type_totals WHERE data_type = 'odds_data'",
        "INSERT INTO type_totals (data_type, entries, bytes) VALUES ('ghost', 2, 500)",
        // No entries left but bytes: what a drifted type looks like once its last rows go.
        "INSERT INTO type_totals (data_type, entries, bytes) VALUES ('ghost', 0, 500000)",
    ];
    for sql in tampering {
        let t = Disk::new();
        t.put_typed("news_articles", "n:1", BLOB, secs(60));
        t.put_typed("news_articles", "n:2", INLINE, secs(60));
        t.put_typed("odds_data", "o:1", INLINE, secs(60));
        let clean = t.disk.repair(Duration::ZERO, Mode::DryRun).unwrap();
        assert!(!clean.totals_rebuilt, "before: {sql}");
        t.sql().execute(sql, []).unwrap();
        let tampered = t.totals_and_rows();
        assert_ne!(tampered.0, tampered.1, "{sql}");

        let dry = t.disk.repair(Duration::ZERO, Mode::DryRun).unwrap();
        assert!(dry.totals_rebuilt, "drift not seen: {sql}");
        assert_eq!(t.totals_and_rows(), tampered, "a dry run rebuilt: {sql}");

        let applied = t.disk.repair(Duration::ZERO, Mode::Apply).unwrap();
        assert!(applied.totals_rebuilt, "{sql}");
        t.assert_totals_exact();
        assert!(
            !t.disk
                .repair(Duration::ZERO, Mode::DryRun)
                .unwrap()
                .totals_rebuilt,
            "still drifting after a rebuild: {sql}"
        );
    }
}

#[test]
fn repair_counts_lost_blobs_orphans_and_temp_files_and_removes_only_those_past_the_grace() {
    let t = Disk::new();
    let dir = t.dir();
    t.put("kept", BLOB, secs(3600));
    t.put("inline", INLINE, secs(3600));
    t.put("lost", BLOB, secs(3600));
    fs::remove_file(t.blob("lost")).unwrap();
    t.put("misnamed", BLOB, secs(3600));
    let misnamed_blob = t.blob("misnamed");
    let misnamed_len = fs::metadata(&misnamed_blob).unwrap().len();
    t.sql()
        .execute(
            "UPDATE entries SET file = '../metadata.db' WHERE key = 'misnamed'",
            [],
        )
        .unwrap();
    let kept = t.blob("kept");

    let hour = secs(3600);
    let plant = |path: PathBuf, len: usize, old: bool| {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, vec![7u8; len]).unwrap();
        if old {
            age(&path, 2 * hour);
        }
        path
    };
    let old_orphan = plant(
        dir.join(format!("blobs/ee/ee{}.blob", "1".repeat(30))),
        1_234,
        true,
    );
    // Anything else under blobs/, even a stray file beside the shards, is an orphan too.
    let stray = plant(dir.join("blobs/stray"), 10, true);
    let new_orphan = plant(
        dir.join(format!("blobs/ee/ee{}.blob", "2".repeat(30))),
        99,
        false,
    );
    let old_temp = plant(dir.join("tmp/0123.tmp"), 5, true);
    let new_temp = plant(dir.join("tmp/4567.tmp"), 5, false);
    // The blob of the misnamed row is no longer referenced: an orphan, but a young one.
    let before = files_under(&dir);

    let dry = t.disk.repair(hour, Mode::DryRun).unwrap();
    assert_eq!(dry.rows_without_blob, 2, "{dry:?}");
    assert_eq!(dry.orphan_blobs, 2, "{dry:?}");
    assert_eq!(dry.orphan_bytes, 1_234 + 10);
    assert_eq!(dry.temp_files, 1);
    assert!(!dry.totals_rebuilt);
    assert_eq!(files_under(&dir), before, "a dry run removed files");
    assert_eq!(t.disk.len().unwrap(), 4, "a dry run removed rows");

    let applied = t.disk.repair(hour, Mode::Apply).unwrap();
    assert_eq!(applied, dry, "apply did other than the dry run counted");
    for gone in [&old_orphan, &stray, &old_temp] {
        assert!(!gone.exists(), "{} left", gone.display());
    }
    for young in [&new_orphan, &new_temp, &misnamed_blob] {
        assert!(
            young.exists(),
            "{} removed inside the grace",
            young.display()
        );
    }
    assert_eq!(t.keys(), ["inline", "kept"]);
    assert!(t.has("kept") && t.has("inline"));
    assert!(dir.join("metadata.db").exists());
    t.assert_totals_exact();

    // Without a grace the young ones go as well, and then there is nothing left to do.
    let rest = t.disk.repair(Duration::ZERO, Mode::Apply).unwrap();
    assert_eq!(
        (rest.rows_without_blob, rest.orphan_blobs, rest.temp_files),
        (0, 2, 1)
    );
    assert_eq!(rest.orphan_bytes, 99 + misnamed_len);
    assert_eq!(blob_files(&dir), [kept]);
    assert!(files_under(&dir.join("tmp")).is_empty());
    assert_eq!(
        t.disk.repair(Duration::ZERO, Mode::DryRun).unwrap(),
        Default::default()
    );
}

#[test]
fn repair_removes_a_blob_replaced_by_a_link_but_never_the_links_target() {
    let t = Disk::new();
    let out = outside(&t);
    t.put("linked", BLOB, secs(3600));
    let blob = t.blob("linked");
    // A byte-for-byte copy outside, so only refusing the link keeps it from counting as the blob.
    let copy = out.join("copy.blob");
    fs::copy(&blob, &copy).unwrap();
    age(&copy, secs(3 * 86_400));
    fs::remove_file(&blob).unwrap();
    symlink(&copy, &blob).unwrap();
    let before = snapshot(&out);

    let dry = t.disk.repair(Duration::ZERO, Mode::DryRun).unwrap();
    assert_eq!(dry.rows_without_blob, 1, "{dry:?}");
    assert!(
        fs::symlink_metadata(&blob).is_ok(),
        "a dry run removed the link"
    );
    assert_eq!(t.keys(), ["linked"], "a dry run removed the row");

    // The row goes, and the link with it (as a link: its target stays), so the link is no
    // orphan left for later.
    let applied = t.disk.repair(Duration::ZERO, Mode::Apply).unwrap();
    assert_eq!(applied, dry, "apply did other than the dry run counted");
    assert_eq!(applied.orphan_blobs, 0, "{applied:?}");
    assert!(fs::symlink_metadata(&blob).is_err(), "the link was left");
    assert_eq!(snapshot(&out), before, "the link's target was touched");
    assert!(t.disk.is_empty().unwrap());
    t.assert_totals_exact();
}

#[test]
fn repair_does_not_walk_a_blob_directory_replaced_by_a_link() {
    let t = Disk::new();
    let out = outside(&t);
    fs::write(out.join("stray"), b"outside").unwrap();
    age(&out.join("stray"), secs(3 * 86_400));
    t.put("a", BLOB, secs(3600));
    t.put("b", INLINE, secs(3600));
    let blobs = t.disk.blob_dir().to_path_buf();
    fs::remove_dir_all(&blobs).unwrap();
    symlink(&out, &blobs).unwrap();
    let before = snapshot(&out);

    let report = t.disk.repair(Duration::ZERO, Mode::Apply).unwrap();
    assert_eq!(
        report.orphan_blobs, 0,
        "walked through the link: {report:?}"
    );
    assert_eq!(report.orphan_bytes, 0);
    // The blob of `a` is not where the index says: its row goes, nothing outside does.
    assert_eq!(report.rows_without_blob, 1);
    assert_eq!(snapshot(&out), before, "a file outside was touched");
    assert_eq!(t.keys(), ["b"]);
    t.assert_totals_exact();
}

/// Flips one byte in the middle of `key`'s stored envelope, in its blob file or inline.
fn corrupt(t: &Disk, key: &str) {
    let info = t.disk.row_info(key).unwrap().unwrap();
    let flip = |b: &mut Vec<u8>| {
        let mid = b.len() / 2;
        b[mid] ^= 0x20;
    };
    if info.file.is_some() {
        let path = t.blob(key);
        let mut bytes = fs::read(&path).unwrap();
        flip(&mut bytes);
        fs::write(&path, bytes).unwrap();
    } else {
        let c = t.sql();
        let mut bytes: Vec<u8> = c
            .query_row(
                "SELECT inline_value FROM entries WHERE key = ?1",
                [key],
                |r| r.get(0),
            )
            .unwrap();
        flip(&mut bytes);
        c.execute(
            "UPDATE entries SET inline_value = ?2 WHERE key = ?1",
            rusqlite::params![key, bytes],
        )
        .unwrap();
    }
}

#[test]
fn verify_counts_every_corrupt_entry_lists_at_most_20_and_apply_removes_only_those() {
    let t = Disk::new();
    let mut corrupted = BTreeSet::new();
    let mut sound = Vec::new();
    for i in 0..30 {
        let key = format!("k:{i:02}");
        t.put(&key, if i % 2 == 0 { BLOB } else { INLINE }, secs(3600));
        // 24 damaged, blob and inline alike; 6 sound.
        if i % 5 == 4 {
            sound.push(key);
        } else {
            corrupt(&t, &key);
            corrupted.insert(key);
        }
    }
    assert_eq!(corrupted.len(), 24);
    let blobs_before = blob_files(&t.dir());

    let dry = t.disk.verify(Duration::ZERO, Mode::DryRun).unwrap();
    assert_eq!(dry.index_integrity, "ok");
    assert_eq!(dry.rows, 30);
    assert_eq!(dry.corrupt_entries, 24);
    assert_eq!(dry.corrupt_keys.len(), 20, "the key list is capped");
    let listed: BTreeSet<_> = dry.corrupt_keys.iter().cloned().collect();
    assert_eq!(
        listed.len(),
        20,
        "a key listed twice: {:?}",
        dry.corrupt_keys
    );
    assert!(
        listed.is_subset(&corrupted),
        "a sound key listed as corrupt"
    );
    assert!(!dry.is_clean());
    assert_eq!(t.disk.len().unwrap(), 30, "a dry run removed rows");
    assert_eq!(blob_files(&t.dir()), blobs_before);

    let applied = t.disk.verify(Duration::ZERO, Mode::Apply).unwrap();
    assert_eq!(applied.corrupt_entries, 24);
    assert_eq!(applied.corrupt_keys, dry.corrupt_keys);
    assert_eq!(t.keys(), sound);
    assert!(sound.iter().all(|k| t.has(k)));
    // The removed entries' blobs went with them: 3 sound blobs are left.
    assert_eq!(blob_files(&t.dir()).len(), 3);
    t.assert_totals_exact();
    let after = t.disk.verify(Duration::ZERO, Mode::DryRun).unwrap();
    assert!(after.is_clean(), "{after:?}");
    assert_eq!(after.rows, 6);
}

#[test]
fn verify_reports_an_index_that_fails_sqlites_check_and_still_checks_every_entry() {
    let t = Disk::new();
    t.put("a", INLINE, secs(60));
    t.put("b", BLOB, secs(60));
    // A NOT NULL column holding NULL: only possible by editing the schema around the write.
    let set_schema = |from: &str, to: &str| {
        let c = t.sql();
        let v: i64 = c
            .query_row("PRAGMA schema_version", [], |r| r.get(0))
            .unwrap();
        c.execute_batch(&format!(
            "PRAGMA writable_schema = ON;
             UPDATE sqlite_master SET sql = replace(sql, '{from}', '{to}') WHERE name = 'entries';
             PRAGMA schema_version = {};",
            v + 1
        ))
        .unwrap();
    };
    set_schema("codec         TEXT NOT NULL,", "codec         TEXT,");
    t.sql()
        .execute("UPDATE entries SET codec = NULL WHERE key = 'a'", [])
        .unwrap();
    set_schema("codec         TEXT,", "codec         TEXT NOT NULL,");

    let report = t.disk.verify(Duration::ZERO, Mode::DryRun).unwrap();
    assert!(
        report
            .index_integrity
            .contains("NULL value in entries.codec"),
        "{report:?}"
    );
    assert!(!report.is_clean());
    // The envelopes themselves are sound, and are all checked.
    assert_eq!(report.rows, 2);
    assert_eq!(report.corrupt_entries, 0);
    assert_eq!(report.repair, Default::default());
}
