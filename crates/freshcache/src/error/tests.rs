use super::*;

#[test]
fn config_error_names_file_line_field_and_reason() {
    let e = ConfigError {
        file: Some("config/runtime.yml".into()),
        line: Some(7),
        field: "cache.ttl.odds_data".into(),
        reason: "not a duration".into(),
    };
    assert_eq!(
        e.to_string(),
        "config/runtime.yml:7: cache.ttl.odds_data: not a duration"
    );
}

#[test]
fn clip_keeps_short_text_and_shortens_long_text_on_a_char_boundary() {
    assert_eq!(clip("odds:g1"), "odds:g1");
    let long = "é".repeat(200);
    let c = clip(&long);
    assert!(c.len() < 200 && c.ends_with("(400 bytes)"));
}

#[test]
fn predicates_split_input_errors_from_transient_ones() {
    let bad = Error::InvalidKey {
        key: "x".into(),
        reason: "r".into(),
    };
    assert!(bad.is_invalid_input() && !bad.is_transient());
    let io = Error::io("/x", io::Error::other("boom"));
    assert!(io.is_transient() && !io.is_invalid_input());
}

#[test]
fn fetch_errors_say_whether_a_retry_may_help() {
    let fetch = |kind| Error::Fetch {
        url: "http://feed.example/odds".into(),
        kind,
        reason: "r".into(),
    };
    assert!(fetch(FetchErrorKind::Status(503)).is_transient());
    assert!(!fetch(FetchErrorKind::Status(404)).is_transient());
    assert!(fetch(FetchErrorKind::Timeout).is_timeout());
    assert!(!fetch(FetchErrorKind::BodyTooLarge).is_transient());
    assert!(fetch(FetchErrorKind::InvalidUrl).is_invalid_input());
    assert_eq!(
        fetch(FetchErrorKind::Connect).fetch_kind(),
        Some(FetchErrorKind::Connect)
    );
    assert_eq!(
        fetch(FetchErrorKind::Header).to_string(),
        "fetch http://feed.example/odds: r"
    );
}

#[test]
fn one_classification_gives_the_status_and_the_exit_code() {
    let redis = |kind| Error::Redis {
        url: "redis://127.0.0.1:1/0".into(),
        kind,
        reason: "x".into(),
    };
    // A wrong password or URL does not fix itself; a refused or slow connection may.
    assert!(!redis(RedisErrorKind::Auth).is_transient());
    assert!(!redis(RedisErrorKind::InvalidUrl).is_transient());
    assert!(redis(RedisErrorKind::Refused).is_transient());
    assert!(redis(RedisErrorKind::Timeout).is_timeout());
    assert_eq!(
        redis(RedisErrorKind::InvalidUrl).class(),
        ErrorClass::InvalidInput
    );
    assert_eq!(redis(RedisErrorKind::Auth).class(), ErrorClass::Redis);

    let too_large = Error::TooLarge {
        key: "odds:g:1".into(),
        data_type: "odds_data".into(),
        size: 2,
        max: 1,
    };
    assert_eq!(too_large.class(), ErrorClass::TooLarge);
    assert_eq!(
        (
            too_large.class().http_status(),
            too_large.class().exit_code()
        ),
        (413, 2)
    );
    let bad_key = Error::InvalidKey {
        key: "x".into(),
        reason: "y".into(),
    };
    assert_eq!(
        (bad_key.class().http_status(), bad_key.class().exit_code()),
        (400, 2)
    );
    let fetch = Error::Fetch {
        url: "http://127.0.0.1/".into(),
        kind: FetchErrorKind::InvalidUrl,
        reason: "z".into(),
    };
    assert_eq!(fetch.class(), ErrorClass::InvalidInput);
    let upstream = Error::Fetch {
        url: "http://127.0.0.1/".into(),
        kind: FetchErrorKind::Connect,
        reason: "z".into(),
    };
    assert_eq!(
        (upstream.class().http_status(), upstream.class().exit_code()),
        (502, 3)
    );
}
