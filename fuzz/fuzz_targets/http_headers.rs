//! Any header bytes an origin (or a client of the service) can send: the fetcher's rules for
//! `Cache-Control`, `Age`, `ETag`, `Last-Modified` and `Content-Type` never panic, a kept value
//! is clean visible ASCII within its limit, a `Cache-Control` can only shorten a type's TTL, and
//! the comparisons are consistent.
//!
//! Input: fields separated by `\n` — two `Cache-Control` lines, `Age`, `ETag`,
//! `Last-Modified`, `Content-Type`, the stored `ETag` and `Last-Modified`, an allowed type.
#![no_main]

use std::sync::LazyLock;

use freshcache::fetch::{CacheControl, NotStoredReason, fuzzing};
use freshcache::{Codec, Config, DataTypeSpec};
use libfuzzer_sys::fuzz_target;

/// The limit the fetcher applies by default is larger; a small one exercises the length check.
const MAX_HEADER: usize = 256;

static TYPES: LazyLock<Vec<DataTypeSpec>> = LazyLock::new(|| {
    let config = Config::default();
    let news = config.data_types.by_name("news_articles").unwrap();
    let mut never = DataTypeSpec::clone(news);
    never.ttl_override = freshcache::TtlOverride::Never;
    vec![DataTypeSpec::clone(news), never]
});

/// A header value as the fetcher keeps it, checked: only when short, visible ASCII (or space /
/// tab) and trimmed.
fn kept(raw: &[u8]) -> Option<&str> {
    let v = fuzzing::header_value(raw, MAX_HEADER);
    if let Some(s) = v {
        assert!(raw.len() <= MAX_HEADER);
        assert!(s.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b)));
        assert_eq!(s, s.trim());
    } else {
        assert!(
            raw.len() > MAX_HEADER
                || raw
                    .iter()
                    .any(|&b| b != b'\t' && !(0x20..0x7f).contains(&b))
        );
    }
    v
}

fuzz_target!(|data: &[u8]| {
    let mut fields = data.split(|&b| b == b'\n');
    let mut next = || fields.next().unwrap_or_default();
    let raw_cc = [next(), next()];
    let (raw_age, raw_etag, raw_lm, raw_ct, raw_stored_etag, raw_stored_lm, raw_allowed) =
        (next(), next(), next(), next(), next(), next(), next());

    let cc: Vec<&str> = raw_cc.iter().filter_map(|r| kept(r)).collect();
    let age = kept(raw_age).and_then(|a| a.parse::<u64>().ok());
    let etag = kept(raw_etag).filter(|s| !s.is_empty());
    let lm = kept(raw_lm).filter(|s| !s.is_empty());
    let ct = kept(raw_ct);
    let stored_etag = kept(raw_stored_etag).filter(|s| !s.is_empty());
    let stored_lm = kept(raw_stored_lm).filter(|s| !s.is_empty());
    let allowed: Vec<String> = kept(raw_allowed)
        .map(|s| s.split(',').map(str::to_owned).collect())
        .unwrap_or_default();

    // Directives: separate lines mean the same as one line joined by commas (when no quoted
    // string spans the join).
    let (no_store, no_cache, max_age, s_maxage) = fuzzing::cache_control(&cc);
    if cc.iter().all(|l| !l.contains('"')) {
        let joined = cc.join(", ");
        assert_eq!(
            fuzzing::cache_control(&[joined.as_str()]),
            (no_store, no_cache, max_age, s_maxage)
        );
    }

    for ty in TYPES.iter() {
        assert_eq!(
            fuzzing::storage(CacheControl::Ignore, &cc, age, ty),
            Ok(None),
            "ignored Cache-Control changed the TTL"
        );
        match fuzzing::storage(CacheControl::MayShorten, &cc, age, ty) {
            Ok(Some(ttl)) => {
                assert!(!ttl.is_zero() && ttl < ty.ttl, "{ttl:?} vs {:?}", ty.ttl);
                assert_ne!(ty.ttl_override, freshcache::TtlOverride::Never);
                assert!(!no_store && !no_cache);
            }
            Ok(None) => assert!(!no_store && !no_cache),
            Err(NotStoredReason::NoStore) => assert!(no_store),
            Err(NotStoredReason::AlreadyStale) => {
                assert!(!no_store);
                assert!(no_cache || max_age.is_some() || s_maxage.is_some());
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    // Validators: weak comparison is reflexive and symmetric; a 304 without validators refers
    // to what was sent.
    if let Some(e) = etag {
        assert!(fuzzing::etags_match(e, e));
        if let Some(s) = stored_etag {
            assert_eq!(fuzzing::etags_match(e, s), fuzzing::etags_match(s, e));
        }
    }
    assert!(fuzzing::not_modified_matches(
        stored_etag,
        stored_lm,
        None,
        None
    ));
    let _ = fuzzing::not_modified_matches(stored_etag, stored_lm, etag, lm);
    if etag.is_some() && stored_etag.is_none() {
        assert!(!fuzzing::not_modified_matches(None, stored_lm, etag, lm));
    }

    // Content types: an empty list allows anything; a type's own essence allows it; the codec
    // does not depend on case.
    assert!(fuzzing::content_type_allowed(ct, &[]));
    if let Some(ct) = ct {
        let essence = ct.split(';').next().unwrap_or("").trim();
        if !essence.is_empty() && !essence.ends_with("/*") {
            assert!(fuzzing::content_type_allowed(
                Some(ct),
                &[essence.to_owned()]
            ));
        }
        assert_eq!(
            Codec::from_media_type(ct),
            Codec::from_media_type(&ct.to_ascii_uppercase())
        );
    }
    let _ = fuzzing::content_type_allowed(ct, &allowed);
});
