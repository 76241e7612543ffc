use super::*;

const SEED: &str = r#"# config/runtime.yml
cache:
  redis_url: "redis://localhost:6379"
  cache_dir: "data/cache"
  metadata_path: "data/cache/metadata.db"
  
  # TTL configurations (hours)
  ttl:
    llm_features: 24
    news_articles: 1
    odds_data: 0.017  # 1 minute
    
  # Cleanup schedule
  cleanup:
    interval: "0 2 * * *"  # Daily at 2 AM
    max_size_gb: 10
    
  # Monitoring
  monitoring:
    ttl_violation_threshold: 0.01  # 1%
    cache_hit_ratio_threshold: 0.8  # 80%
"#;

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

fn ttl(c: &Config, name: &str) -> Duration {
    c.data_types.by_name(name).unwrap().ttl
}

#[test]
fn seed_config_loads_unchanged_with_hours_as_numbers() {
    let c = Config::from_yaml_str(SEED, Some(Path::new("seed.yml")), no_env()).unwrap();
    assert_eq!(ttl(&c, "llm_features"), Duration::from_secs(24 * 3600));
    assert_eq!(ttl(&c, "news_articles"), Duration::from_secs(3600));
    assert_eq!(ttl(&c, "odds_data"), Duration::from_millis(61_200));
    assert_eq!(
        c.redis_url.as_ref().map(RedisUrl::expose),
        Some("redis://localhost:6379")
    );
    assert_eq!(c.cleanup.interval, "0 2 * * *");
    assert_eq!(c.cleanup.max_size_bytes, 10_000_000_000);
    assert_eq!(c.metadata_path, PathBuf::from("data/cache/metadata.db"));
    assert!((c.monitoring.cache_hit_ratio_threshold - 0.8).abs() < 1e-9);
}

#[test]
fn shipped_default_file_is_the_embedded_default() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/runtime.yml");
    let c = Config::load_with_env(&path, no_env()).unwrap();
    assert_eq!(c.redis_url, None);
    assert_eq!(c.cache_dir, PathBuf::from("data/cache"));
    assert_eq!(ttl(&c, "llm_features"), Duration::from_secs(24 * 3600));
    assert_eq!(ttl(&c, "news_articles"), Duration::from_secs(3600));
    assert_eq!(ttl(&c, "odds_data"), Duration::from_secs(60));
    let d = Config::default();
    assert_eq!(c.data_types, d.data_types);
}

#[test]
fn durations_and_declared_types_are_accepted() {
    let text = r#"
cache:
  ttl:
    odds_data: 60s
    news_articles: "1h 30m"
  data_types:
    weather:
      prefix: "weather:"
      ttl: 10m
      max_value_size: 64KiB
      placement: disk_only
      segments: {min: 2, max: 3}
      ttl_override: never
  default_data_type: weather
"#;
    let c = Config::from_yaml_str(text, None, no_env()).unwrap();
    assert_eq!(ttl(&c, "odds_data"), Duration::from_secs(60));
    assert_eq!(ttl(&c, "news_articles"), Duration::from_secs(5400));
    let w = c.data_types.by_name("weather").unwrap();
    assert_eq!(w.ttl, Duration::from_secs(600));
    assert_eq!(w.max_value_size, 65536);
    assert_eq!(w.placement, Placement::DiskOnly);
    assert_eq!(w.ttl_override, TtlOverride::Never);
    let k = crate::key::Key::parse("other:x").unwrap();
    assert_eq!(&*c.data_types.resolve(&k).unwrap().name, "weather");
}

#[test]
fn environment_overrides_the_file() {
    let env = vec![
        (
            "FRESHCACHE_CACHE__CACHE_DIR".to_owned(),
            "/tmp/fc-env".to_owned(),
        ),
        (
            "FRESHCACHE_CACHE__TTL__ODDS_DATA".to_owned(),
            "30s".to_owned(),
        ),
        (
            "FRESHCACHE_CACHE__CLEANUP__MAX_SIZE_GB".to_owned(),
            "2".to_owned(),
        ),
        ("FRESHCACHE_CONFIG".to_owned(), "ignored.yml".to_owned()),
        ("OTHER__THING".to_owned(), "ignored".to_owned()),
    ];
    let c = Config::from_yaml_str(SEED, None, env).unwrap();
    assert_eq!(c.cache_dir, PathBuf::from("/tmp/fc-env"));
    assert_eq!(ttl(&c, "odds_data"), Duration::from_secs(30));
    assert_eq!(c.cleanup.max_size_bytes, 2_000_000_000);
    // metadata_path was explicit in the file and stays.
    assert_eq!(c.metadata_path, PathBuf::from("data/cache/metadata.db"));
}

#[test]
fn bad_environment_value_names_the_variable() {
    let env = vec![(
        "FRESHCACHE_CACHE__TTL__ODDS_DATA".to_owned(),
        "soon".to_owned(),
    )];
    let e = Config::from_yaml_str(SEED, None, env).unwrap_err();
    assert_eq!(e.field, "FRESHCACHE_CACHE__TTL__ODDS_DATA");
    assert!(e.reason.contains("duration"), "{e}");
}

#[test]
fn bad_values_report_file_line_field_and_reason() {
    let text = "cache:\n  ttl:\n    odds_data: soon\n";
    let e = Config::from_yaml_str(text, Some(Path::new("r.yml")), no_env()).unwrap_err();
    assert_eq!(e.file.as_deref(), Some(Path::new("r.yml")));
    assert_eq!(e.line, Some(3), "{e}");
    assert_eq!(e.field, "odds_data");
    assert!(e.reason.contains("duration"), "{e}");

    let text = "cache:\n  cache_dir: x\n  ttl:\n    odds_data: -1\n";
    let e = Config::from_yaml_str(text, Some(Path::new("r.yml")), no_env()).unwrap_err();
    assert_eq!(e.line, Some(4), "{e}");
    assert!(e.reason.contains("positive"), "{e}");
}

#[test]
fn unknown_fields_and_types_are_refused_with_their_line() {
    let e = Config::from_yaml_str("cache:\n  cache_dirr: x\n", None, no_env()).unwrap_err();
    assert_eq!(e.line, Some(2), "{e}");
    assert!(e.reason.contains("cache_dirr"), "{e}");

    let e = Config::from_yaml_str("cache:\n  ttl:\n    weather: 1\n", None, no_env()).unwrap_err();
    assert_eq!(e.field, "cache.ttl.weather");
    assert_eq!(e.line, Some(3));
    assert!(e.reason.contains("unknown data type"), "{e}");

    let text = "server:\n  listen: nowhere\n";
    let e = Config::from_yaml_str(text, None, no_env()).unwrap_err();
    assert_eq!((e.field.as_str(), e.line), ("server.listen", Some(2)));

    let text = "cache:\n  cleanup:\n    interval: daily\n";
    let e = Config::from_yaml_str(text, None, no_env()).unwrap_err();
    assert_eq!(e.field, "cache.cleanup.interval");

    let text = "cache:\n  data_types:\n    a:\n      prefix: \"odds:\"\n      ttl: 1\n";
    let e = Config::from_yaml_str(text, None, no_env()).unwrap_err();
    assert!(e.reason.contains("also used"), "{e}");
}

#[test]
fn other_sections_of_runtime_yml_are_left_alone() {
    let text = "model:\n  name: x\ncache:\n  cache_dir: /tmp/x\n";
    let c = Config::from_yaml_str(text, None, no_env()).unwrap();
    assert_eq!(c.cache_dir, PathBuf::from("/tmp/x"));
}

#[test]
fn redis_passwords_never_show_in_debug_or_display() {
    let text =
        "cache:\n  redis_url: \"redis://app:hunter2@db:6379/0\"\n  redis:\n    password: s3cret\n";
    let c = Config::from_yaml_str(text, None, no_env()).unwrap();
    let url = c.redis_url.clone().unwrap();
    assert_eq!(url.redacted(), "redis://app:***@db:6379/0");
    assert_eq!(url.expose(), "redis://app:hunter2@db:6379/0");
    let shown = format!("{c:?} {url}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("s3cret"),
        "{shown}"
    );
    assert_eq!(c.redis.password.as_deref(), Some("s3cret"));
    let plain = RedisUrl("redis://127.0.0.1:6379".into());
    assert_eq!(plain.redacted(), "redis://127.0.0.1:6379");
    assert_eq!(
        RedisUrl("redis://:pw@h:1".into()).redacted(),
        "redis://:***@h:1"
    );
    assert!(RedisUrl("redis+cluster://h:1,h:2".into()).is_cluster());
}

#[test]
fn redis_options_are_validated() {
    let e =
        Config::from_yaml_str("cache:\n  redis:\n    timeout: soon\n", None, no_env()).unwrap_err();
    assert_eq!(e.field, "cache.redis.timeout");
    let e = Config::from_yaml_str("cache:\n  redis:\n    namespace: \"a b\"\n", None, no_env())
        .unwrap_err();
    assert_eq!(e.field, "cache.redis.namespace");
    let c = Config::default();
    assert_eq!(c.redis.timeout, Duration::from_millis(50));
    assert_eq!(c.redis.namespace, "freshcache:");
}

#[test]
fn sizes_parse_with_units() {
    assert_eq!(parse_size("64KiB").unwrap(), 65536);
    assert_eq!(parse_size("10GB").unwrap(), 10_000_000_000);
    assert_eq!(parse_size("1.5 MiB").unwrap(), 1_572_864);
    assert_eq!(parse_size("12").unwrap(), 12);
    assert!(parse_size("12 parsecs").is_err());
    assert!(parse_size("lots").is_err());
}

#[test]
fn sources_parse_with_defaults_and_keep_credentials_out_of_debug() {
    let text = r#"
cache:
  sources:
    - url: "http://reader:pw@feeds.example/espn.json?token=s3cret"
      key: "news:espn:front"
      refresh: 5m
    - url: "http://127.0.0.1:9000/odds"
      key: "odds:g42:1700000000"
      refresh: 30s
      cache_control: ignore
"#;
    let c = Config::from_yaml_str(text, None, no_env()).unwrap();
    assert_eq!(c.sources.len(), 2);
    assert_eq!(c.sources[0].key.as_str(), "news:espn:front");
    assert_eq!(c.sources[0].refresh, Duration::from_secs(300));
    assert_eq!(c.sources[0].cache_control, CacheControl::MayShorten);
    assert_eq!(c.sources[1].refresh, Duration::from_secs(30));
    assert_eq!(c.sources[1].cache_control, CacheControl::Ignore);
    let debug = format!("{c:?}");
    assert!(
        !debug.contains("s3cret") && !debug.contains("pw@"),
        "{debug}"
    );
    assert!(Config::default().sources.is_empty());
}

#[test]
fn bad_sources_name_the_item_field_and_line() {
    let first = "cache:\n  sources:\n    - url: \"http://h/ok\"\n      key: \"news:a:b\"\n      refresh: 1m\n";
    let second = |url: &str, key: &str, refresh: &str| {
        format!("{first}    - url: \"{url}\"\n      key: \"{key}\"\n      refresh: {refresh}\n")
    };
    for (text, field, reason, line) in [
        (
            second("ftp://h/x", "news:a:c", "1m"),
            "cache.sources[1].url",
            "scheme",
            6,
        ),
        (
            second("not a url", "news:a:c", "1m"),
            "cache.sources[1].url",
            "URL",
            6,
        ),
        (
            second("http://h/x", "weather:x", "1m"),
            "cache.sources[1].key",
            "no data type",
            7,
        ),
        (
            second("http://h/x", "news:a", "1m"),
            "cache.sources[1].key",
            "segment",
            7,
        ),
        (
            second("http://h/x", "news:a:b", "1m"),
            "cache.sources[1].key",
            "already fed",
            7,
        ),
        (
            second("http://h/x", "news:a:c", "500ms"),
            "cache.sources[1].refresh",
            "1s",
            8,
        ),
        (
            second("http://h/x", "news:a:c", "soon"),
            "cache.sources[1].refresh",
            "duration",
            8,
        ),
    ] {
        let e = Config::from_yaml_str(&text, Some(Path::new("r.yml")), no_env()).unwrap_err();
        assert_eq!(e.field, field, "{e}");
        assert!(e.reason.contains(reason), "{e}");
        assert_eq!(e.line, Some(line), "{e}");
    }

    let text = format!("{first}      cache_control: sometimes\n");
    let e = Config::from_yaml_str(&text, None, no_env()).unwrap_err();
    assert_eq!(
        (e.field.as_str(), e.line),
        ("cache_control", Some(6)),
        "{e}"
    );
    let text = "cache:\n  sources:\n    - url: \"http://h/x\"\n      key: \"news:a:b\"\n";
    let e = Config::from_yaml_str(text, None, no_env()).unwrap_err();
    assert!(e.reason.contains("refresh"), "{e}");
}

#[test]
fn auth_token_is_redacted_in_debug_output() {
    let c = Config::from_yaml_str("server:\n  auth_token: s3cret\n", None, no_env()).unwrap();
    let debug = format!("{c:?}");
    assert!(
        !debug.contains("s3cret") && !debug.contains("pw@"),
        "{debug}"
    );
    assert_eq!(c.server.auth_token.as_deref(), Some("s3cret"));
}

#[test]
fn write_behind_is_off_by_default_and_bounded() {
    let wb = |text: &str| Config::from_yaml_str(text, None, no_env()).map(|c| c.disk.write_behind);
    assert_eq!(wb("").unwrap(), Duration::ZERO);
    assert_eq!(
        wb("cache: {disk: {write_behind: 0}}").unwrap(),
        Duration::ZERO
    );
    assert_eq!(
        wb("cache: {disk: {write_behind: 0s}}").unwrap(),
        Duration::ZERO
    );
    assert_eq!(
        wb("cache: {disk: {write_behind: 2ms}}").unwrap(),
        Duration::from_millis(2)
    );
    let env = vec![(
        "FRESHCACHE_CACHE__DISK__WRITE_BEHIND".to_owned(),
        "5ms".to_owned(),
    )];
    let c = Config::from_yaml_str("", None, env).unwrap();
    assert_eq!(c.disk.write_behind, Duration::from_millis(5));
    for bad in ["2s", "soon"] {
        let e = wb(&format!("cache: {{disk: {{write_behind: {bad}}}}}")).unwrap_err();
        assert_eq!(e.field, "cache.disk.write_behind", "{bad}: {e}");
    }
}
