//! The entry, stats and config commands, their output and exit codes.

use crate::support::{Env, stderr, stdout, walk};

#[test]
fn set_from_stdin_then_get_prints_the_value_and_exit_codes_tell_hit_from_miss() {
    let env = Env::new();
    let o = env.run_with_stdin(
        &["set", "odds:g1:1700000000", "-", "--codec", "json"],
        b"{\"home\":1.91}",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("stored odds:g1:1700000000"));

    let o = env.run(&["get", "odds:g1:1700000000"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(o.stdout, b"{\"home\":1.91}");

    let o = env.run(&["get", "odds:g1:1700000000", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["value"]["home"], 1.91);
    assert_eq!(v["data_type"], "odds_data");
    assert!(v["remaining_seconds"].as_f64().unwrap() > 50.0);

    let o = env.run(&["get", "odds:g2:1700000000"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
}

#[test]
fn set_from_a_file_and_delete() {
    let env = Env::new();
    let file = env.dir.path().join("article.txt");
    std::fs::write(&file, "breaking news").unwrap();
    let o = env.run(&[
        "set",
        "news:espn:a1",
        file.to_str().unwrap(),
        "--ttl",
        "10m",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(env.run(&["get", "news:espn:a1"]).stdout, b"breaking news");
    let o = env.run(&["del", "news:espn:a1", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["deleted"], true);
    assert_eq!(env.run(&["get", "news:espn:a1"]).status.code(), Some(1));
}

#[test]
fn invalid_keys_unknown_types_and_bad_ttls_exit_2_and_write_nothing() {
    let env = Env::new();
    for args in [
        vec!["set", "news:../../x"],
        vec!["set", "weather:nyc:1"],
        vec!["set", "odds:g1"],
        vec!["set", "odds:g1:1", "--ttl", "2h"],
        vec!["set", "odds:g1:1", "--ttl", "soon"],
    ] {
        let o = env.run_with_stdin(&args, b"x");
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("error"), "{args:?}");
    }
    let o = env.run(&["get", "news:a b:c"]);
    assert_eq!(o.status.code(), Some(2));
    // Nothing escaped the cache directory, and the index holds no rows.
    let names: Vec<String> = walk(env.dir.path())
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n == "x" || n.contains("weather")),
        "{names:?}"
    );
    let o = env.run(&["stats", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let disk = v["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tier"] == "disk")
        .unwrap();
    assert_eq!(disk["entries"], 0);
}

#[test]
fn oversized_values_are_refused() {
    let env = Env::new();
    let big = vec![b'x'; 1024 * 1024 + 1];
    let o = env.run_with_stdin(&["set", "odds:g1:1"], &big);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("at most 1048576"), "{}", stderr(&o));
}

#[test]
fn invalidate_prefix_prints_the_count_and_all_needs_confirmation() {
    let env = Env::new();
    for k in ["news:espn:1", "news:espn:2", "news:bbc:1"] {
        assert!(env.run_with_stdin(&["set", k], b"v").status.success());
    }
    let o = env.run(&["invalidate", "news:espn:", "--json"]);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["removed"],
        2
    );
    assert_eq!(env.run(&["get", "news:bbc:1"]).status.code(), Some(0));

    let o = env.run(&["invalidate", "--all"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "no terminal and no --yes must refuse"
    );
    assert_eq!(env.run(&["get", "news:bbc:1"]).status.code(), Some(0));
    let o = env.run(&["invalidate", "--all", "--yes"]);
    assert!(stdout(&o).contains("removed 1"), "{}", stdout(&o));
    assert_eq!(env.run(&["get", "news:bbc:1"]).status.code(), Some(1));
}

#[test]
fn stats_count_hits_and_misses_across_processes() {
    let env = Env::new();
    assert!(
        env.run_with_stdin(&["set", "odds:g1:1"], b"1")
            .status
            .success()
    );
    for _ in 0..3 {
        assert!(env.run(&["get", "odds:g1:1"]).status.success());
    }
    assert_eq!(env.run(&["get", "odds:g9:1"]).status.code(), Some(1));
    let o = env.run(&["stats", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["schema_version"], 1);
    let odds = v["data_types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["data_type"] == "odds_data")
        .unwrap();
    assert_eq!(odds["hits"], 3);
    assert_eq!(odds["misses"], 1);
    assert_eq!(odds["entries"], 1);
    assert_eq!(odds["sets"], 1);
    let text = stdout(&env.run(&["stats"]));
    assert!(
        text.contains("odds_data") && text.contains("75.0%"),
        "{text}"
    );
}

#[test]
fn config_check_accepts_the_shipped_and_seed_files_and_rejects_bad_ones() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let o = std::process::Command::new(crate::support::BIN)
        .args([
            "--config",
            root.join("config/runtime.yml").to_str().unwrap(),
            "config",
            "check",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("odds_data"));

    let env = Env::new();
    std::fs::write(
        &env.config,
        "cache:\n  ttl:\n    llm_features: 24\n    news_articles: 1\n    odds_data: 0.017  # 1 minute\n",
    )
    .unwrap();
    let o = env.run(&["config", "check", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let odds = v["data_types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "odds_data")
        .unwrap();
    assert!((odds["ttl_seconds"].as_f64().unwrap() - 61.2).abs() < 1e-9);

    std::fs::write(
        &env.config,
        "cache:\n  cache_dir: x\n  ttl:\n    odds_data: soon\n",
    )
    .unwrap();
    let o = env.run(&["config", "check"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("runtime.yml:4") && err.contains("odds_data"),
        "{err}"
    );

    std::fs::write(&env.config, "cache:\n  cache_dir: x\n").unwrap();
    let o = env
        .cmd()
        .args(["config", "check"])
        .env("FRESHCACHE_CACHE__TTL__NEWS_ARTICLES", "-5")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("FRESHCACHE_CACHE__TTL__NEWS_ARTICLES"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_missing_explicit_config_file_is_an_error() {
    let o = std::process::Command::new(crate::support::BIN)
        .args(["--config", "/nonexistent/runtime.yml", "stats"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/nonexistent/runtime.yml"));
}

#[test]
fn serve_refuses_a_public_address_without_a_token() {
    let env = Env::new();
    let o = env.run(&["serve", "--listen", "0.0.0.0:0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("auth_token"), "{}", stderr(&o));
}
