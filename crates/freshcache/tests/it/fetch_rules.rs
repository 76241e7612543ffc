//! The fetcher's RFC 9111 rules (`fetch/policy.rs`) beside the `http-cache-semantics` crate, on
//! the cases where the two disagree. Each test asserts both answers, so it shows what adopting
//! the crate would change; the reasoning is in `fetch/policy.rs`'s module doc.

use std::time::{Duration, SystemTime};

use freshcache::fetch::fuzzing;
use freshcache::fetch::{CacheControl, NotStoredReason};
use freshcache::{Config, DataTypeSpec};
use http_cache_semantics::{AfterResponse, CacheOptions, CachePolicy};

const FEED: &str = "http://origin.test/feed";
/// One hour: the built-in `news_articles` TTL.
const NEWS_TTL: Duration = Duration::from_secs(3600);

fn news_type() -> DataTypeSpec {
    let config = Config::default();
    let ty = DataTypeSpec::clone(config.data_types.by_name("news_articles").unwrap());
    assert_eq!(ty.ttl, NEWS_TTL);
    ty
}

/// Ours: `Ok(None)` for the type's TTL, `Ok(Some(ttl))` for a shorter one, `Err` for not stored.
fn ours(cache_control: &[&str], age: Option<u64>) -> Result<Option<Duration>, NotStoredReason> {
    fuzzing::storage(CacheControl::MayShorten, cache_control, age, &news_type())
}

fn request() -> http::Request<()> {
    http::Request::get(FEED).body(()).unwrap()
}

fn response(status: u16, headers: &[(&str, &str)]) -> http::Response<()> {
    let mut b = http::Response::builder().status(status);
    for (name, value) in headers {
        b = b.header(*name, *value);
    }
    b.body(()).unwrap()
}

/// The crate's policy for a 200 with `headers`, received at `at`, as a shared cache or not.
fn theirs(headers: &[(&str, &str)], at: SystemTime, shared: bool) -> CachePolicy {
    let opts = CacheOptions {
        shared,
        ..CacheOptions::default()
    };
    CachePolicy::new_options(&request(), &response(200, headers), at, opts)
}

fn at() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000)
}

#[test]
fn without_cache_control_the_type_ttl_holds_where_the_crate_guesses_or_calls_it_stale() {
    // A feed that sends nothing about caching: the data type's TTL is the lifetime.
    assert_eq!(ours(&[], None), Ok(None));
    let bare = theirs(&[], at(), true);
    assert!(bare.is_storable());
    assert_eq!(
        bare.time_to_live(at()),
        Duration::ZERO,
        "the crate: no explicit lifetime and no Last-Modified means stale on arrival"
    );

    // With a Last-Modified an hour before its Date the crate applies the 10 % heuristic
    // (6 minutes), which "may shorten" would then apply to a one-hour news type.
    let date = httpdate::fmt_http_date(at());
    let modified = httpdate::fmt_http_date(at() - NEWS_TTL);
    let p = theirs(&[("date", &date), ("last-modified", &modified)], at(), true);
    assert_eq!(p.time_to_live(at()), Duration::from_secs(360));
    assert_eq!(ours(&[], None), Ok(None), "ours: still the type's hour");
}

#[test]
fn an_overflowing_max_age_is_a_long_lifetime_for_us_and_stale_for_the_crate() {
    // RFC 9111 §1.2.2: a delta-seconds too large to hold is the largest value, not invalid.
    let cc = "max-age=99999999999999999999999";
    assert_eq!(
        ours(&[cc], None),
        Ok(None),
        "ours: capped by the type's TTL"
    );
    let p = theirs(&[("cache-control", cc)], at(), true);
    assert_eq!(p.time_to_live(at()), Duration::ZERO);
    assert!(p.is_stale(at()));
}

#[test]
fn a_quoted_comma_does_not_split_a_directive_for_us_but_does_for_the_crate() {
    // `max-age=0` inside a quoted field list is not a directive: the lifetime is 60 s.
    let cc = "private=\"x, max-age=0\", max-age=60";
    assert_eq!(ours(&[cc], None), Ok(Some(Duration::from_secs(60))));
    let p = theirs(&[("cache-control", cc)], at(), false);
    assert!(p.is_storable());
    assert_eq!(
        p.time_to_live(at()),
        Duration::ZERO,
        "the crate splits on every comma and reads max-age=0 out of the quoted string"
    );
}

#[test]
fn the_crate_cannot_both_keep_private_responses_and_prefer_s_maxage() {
    // Ours: the store belongs to the deployment that fetched, so `private` is kept; and
    // `s-maxage` is preferred over `max-age`.
    assert_eq!(
        ours(&["private, max-age=600, s-maxage=30"], None),
        Ok(Some(Duration::from_secs(30)))
    );
    let shared = theirs(
        &[("cache-control", "private, max-age=600, s-maxage=30")],
        at(),
        true,
    );
    assert!(!shared.is_storable(), "shared: private is refused");
    let single = theirs(
        &[("cache-control", "max-age=600, s-maxage=30")],
        at(),
        false,
    );
    assert_eq!(
        single.time_to_live(at()),
        Duration::from_secs(600),
        "single-user: s-maxage is ignored"
    );
}

#[test]
fn a_304_without_validators_refreshes_our_entry_but_not_the_crates() {
    // The stored entry has an ETag; the origin's 304 repeats neither validator. It answers the
    // conditional request we sent, so the stored body is still the representation.
    assert!(fuzzing::not_modified_matches(
        Some("\"v1\""),
        None,
        None,
        None
    ));
    let stored = theirs(
        &[("etag", "\"v1\""), ("cache-control", "max-age=60")],
        at(),
        true,
    );
    let later = at() + Duration::from_secs(120);
    match stored.after_response(&request(), &response(304, &[]), later) {
        AfterResponse::Modified(..) => {}
        AfterResponse::NotModified(..) => panic!("the crate was expected to refuse this 304"),
    }
}

#[test]
fn both_agree_on_no_store_and_on_age_counting_against_max_age() {
    // Where the two agree, for the record: no-store is not stored, Age shortens max-age.
    assert_eq!(ours(&["no-store"], None), Err(NotStoredReason::NoStore));
    assert!(!theirs(&[("cache-control", "no-store")], at(), true).is_storable());
    assert_eq!(
        ours(&["max-age=60"], Some(15)),
        Ok(Some(Duration::from_secs(45)))
    );
    let p = theirs(
        &[("cache-control", "max-age=60"), ("age", "15")],
        at(),
        true,
    );
    assert_eq!(p.time_to_live(at()), Duration::from_secs(45));
}
