//! Upkeep and guard commands: cleanup, doctor, inspect, check, audit.

use crate::support::{Env, stderr, stdout, walk};

fn json(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", stdout(o), stderr(o)))
}

/// Incompressible bytes, so values really land in blob files.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn blobs(env: &Env) -> Vec<std::path::PathBuf> {
    walk(&env.dir.path().join("cache/blobs"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "blob"))
        .collect()
}

#[test]
fn doctor_reports_problems_with_exit_1_and_repair_fixes_them() {
    let env = Env::new();
    assert!(
        env.run_with_stdin(&["set", "news:espn:1"], &noise(1, 50_000))
            .status
            .success()
    );
    assert!(
        env.run_with_stdin(&["set", "news:espn:2"], &noise(2, 50_000))
            .status
            .success()
    );
    assert_eq!(env.run(&["doctor"]).status.code(), Some(0));

    let blob = blobs(&env).pop().unwrap();
    std::fs::remove_file(&blob).unwrap();
    let orphan = env
        .dir
        .path()
        .join("cache/blobs/ee/ee0123456789abcdef0123456789abcd.blob");
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::write(&orphan, b"orphan").unwrap();

    // Young files are spared by default: they may be writes in flight.
    let o = env.run(&["doctor", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let v = json(&o);
    assert_eq!(v["repair"]["rows_without_blob"], 1);
    assert_eq!(v["repair"]["orphan_blobs"], 0);

    let o = env.run(&["doctor", "--orphan-grace", "0", "--json"]);
    assert_eq!(json(&o)["repair"]["orphan_blobs"], 1);
    let o = env.run(&["doctor", "--repair", "--orphan-grace", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!orphan.exists());
    let o = env.run(&["doctor"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("clean"));
}

#[test]
fn cleanup_dry_run_changes_nothing_and_a_real_run_repairs() {
    let env = Env::new();
    assert!(
        env.run_with_stdin(&["set", "news:espn:1"], &noise(4, 30_000))
            .status
            .success()
    );
    let tmp = env.dir.path().join("cache/tmp/0123.tmp");
    std::fs::write(&tmp, b"half").unwrap();
    let o = env.run(&["cleanup", "--dry-run", "--orphan-grace", "0", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["repaired"]["temp_files"], 1);
    assert!(tmp.exists());
    let o = env.run(&["cleanup", "--orphan-grace", "0"]);
    assert!(stdout(&o).contains("1 temp files"), "{}", stdout(&o));
    assert!(!tmp.exists());
    assert_eq!(env.run(&["get", "news:espn:1"]).status.code(), Some(0));
}

#[test]
fn inspect_shows_where_an_entry_lives() {
    let env = Env::new();
    assert!(
        env.run_with_stdin(&["set", "llm:features:c1:2026-11-24"], &noise(3, 20_000))
            .status
            .success()
    );
    assert!(
        env.run_with_stdin(&["set", "odds:g1:1", "--codec", "json"], b"1.9")
            .status
            .success()
    );
    let v = json(&env.run(&["inspect", "llm:features:c1:2026-11-24", "--json"]));
    assert_eq!(v["fresh"], true);
    assert_eq!(v["on_disk"], true);
    assert_eq!(v["size"], 20_000);
    assert!(
        v["disk"]["location"]
            .as_str()
            .unwrap()
            .starts_with("blobs/")
    );
    assert!(v["remaining_seconds"].as_f64().unwrap() > 86_000.0);
    let v = json(&env.run(&["inspect", "odds:g1:1", "--json"]));
    assert_eq!(v["disk"]["location"], "inline");
    assert_eq!(v["codec"], "json");
    let o = env.run(&["inspect", "odds:g2:1"]);
    assert_eq!(o.status.code(), Some(1));
    let text = stdout(&env.run(&["inspect", "odds:g1:1"]));
    assert!(
        text.contains("status:     fresh") && text.contains("inline row"),
        "{text}"
    );
}

#[test]
fn check_exits_1_when_a_signal_is_missing_and_audit_proves_what_was_checked() {
    let env = Env::new();
    assert!(
        env.run_with_stdin(&["set", "odds:g1:1"], b"1.9")
            .status
            .success()
    );
    let o = env.run(&["check", "odds:g1:1", "--run-id", "ok-run"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("all 1 signals fresh"));

    let o = env.run(&[
        "check",
        "odds:g1:1",
        "odds:g2:1",
        "--run-id",
        "bad-run",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v = json(&o);
    assert_eq!(v["all_fresh"], false);
    assert_eq!(v["signals"][0]["verdict"], "fresh");
    assert_eq!(v["signals"][1]["verdict"], "missing");

    let v = json(&env.run(&["audit", "bad-run", "--json"]));
    let rows = v["signals"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["key"], "odds:g2:1");
    assert_eq!(rows[1]["verdict"], "missing");
    assert_eq!(env.run(&["audit", "no-such-run"]).status.code(), Some(1));
    assert_eq!(env.run(&["check", "news:../x"]).status.code(), Some(2));
}

#[test]
fn warm_loads_a_manifest_with_progress_and_exits_1_when_an_item_cannot_be_made_fresh() {
    let env = Env::new();
    let file = env.dir.path().join("odds.json");
    std::fs::write(&file, b"{\"home\":1.9}").unwrap();
    let manifest = env.dir.path().join("warm.yml");
    std::fs::write(
        &manifest,
        format!("- key: odds:g1:1\n  file: {}\n", file.display()),
    )
    .unwrap();
    let o = env.run(&["warm", manifest.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("[1/1] odds:g1:1 loaded"),
        "{}",
        stderr(&o)
    );
    assert!(stdout(&o).contains("1 loaded"), "{}", stdout(&o));
    assert_eq!(env.run(&["get", "odds:g1:1"]).stdout, b"{\"home\":1.9}");

    std::fs::write(&manifest, "- key: odds:g1:1\n- key: odds:g2:1\n").unwrap();
    let o = env.run(&["warm", manifest.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v = json(&o);
    assert_eq!(
        (v["fresh"].as_u64(), v["failed"].as_u64()),
        (Some(1), Some(1))
    );
}
