//! The RFC 9111 rules the fetcher applies, as pure functions: `Cache-Control` parsing, the
//! lifetime a response allows, validator comparison and which header values may be stored.
//!
//! # Why not `http-cache-semantics`
//!
//! That crate (v3) was evaluated as a replacement. Its types fit (it takes `http` 1 requests
//! and responses and has a reqwest 0.13 feature), but it answers a different question: how
//! long a browser or proxy may reuse a response. Here the data type's TTL is the lifetime and
//! the origin may only shorten it, so adopting it would change behaviour that the fetch tests
//! pin. `tests/it/fetch_rules.rs` runs both on the cases where they differ:
//!
//! - no `Cache-Control`: ours keeps the type's TTL; the crate's lifetime is zero, or a 10 %
//!   heuristic of `Date` − `Last-Modified` that "may shorten" would then apply;
//! - `max-age` larger than a `u64`: ours reads it as the largest value (RFC 9111 §1.2.2), the
//!   crate as invalid, i.e. stale on arrival;
//! - a quoted field list (`private="x, max-age=0"`): ours honours the quotes, the crate splits
//!   on every comma and finds directives inside the string;
//! - `private` with `s-maxage`: the crate either refuses `private` (shared) or ignores
//!   `s-maxage` (single user); ours keeps private responses (the store is the deployment's
//!   own) and prefers `s-maxage`;
//! - a 304 that repeats no validator: ours takes it as the answer to the conditional request
//!   it sent; the crate treats the stored entry as modified when that entry had an `ETag`.
//!
//! What the crate does and we do not need: `Vary`, request directives (`min-fresh`,
//! `max-stale`), `Expires` and heuristic lifetimes, header merging for proxies. The rules kept
//! here are the small pure functions below, each pinned by unit tests and fuzz targets.

use std::time::Duration;

use crate::datatype::{DataTypeSpec, TtlOverride};

pub use crate::config::CacheControl;

/// Why a fetched body was returned without being stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotStoredReason {
    /// The response said `Cache-Control: no-store`.
    NoStore,
    /// The response is stale on arrival: `no-cache`, `max-age=0`, an invalid `max-age`, or an
    /// `Age` at least as large as its `max-age`.
    AlreadyStale,
}

impl NotStoredReason {
    /// Short lowercase name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            NotStoredReason::NoStore => "no_store",
            NotStoredReason::AlreadyStale => "already_stale",
        }
    }
}

/// The `Cache-Control` directives the fetcher acts on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Directives {
    pub no_store: bool,
    pub no_cache: bool,
    /// Seconds; `Some(0)` for a present but invalid value (RFC 9111 §4.2.1: treat as stale).
    pub max_age: Option<u64>,
    /// Seconds; a shared cache prefers it over `max-age`.
    pub s_maxage: Option<u64>,
}

/// Splits a `Cache-Control` value into directives, honouring quoted strings, so
/// `private="a, b", max-age=5` is two directives.
fn split_directives(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&value[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect()
}

/// Delta-seconds (RFC 9111 §1.2.2): digits only, optionally quoted by lenient senders; values
/// too large for a `u64` are the largest. `None` when the value is not a number.
fn delta_seconds(v: &str) -> Option<u64> {
    let v = v.trim().trim_matches('"');
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(v.parse().unwrap_or(u64::MAX))
}

/// Parses every `Cache-Control` field line of a response. The first occurrence of a
/// directive wins.
pub(crate) fn parse_cache_control<'a>(values: impl IntoIterator<Item = &'a str>) -> Directives {
    let mut d = Directives::default();
    for value in values {
        for directive in split_directives(value) {
            let (name, arg) = match directive.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a)),
                None => (directive, None),
            };
            let age = || Some(arg.and_then(delta_seconds).unwrap_or(0));
            match name.to_ascii_lowercase().as_str() {
                "no-store" => d.no_store = true,
                "no-cache" => d.no_cache = true,
                "max-age" if d.max_age.is_none() => d.max_age = age(),
                "s-maxage" if d.s_maxage.is_none() => d.s_maxage = age(),
                _ => {}
            }
        }
    }
    d
}

/// What to do with a response body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Storage {
    /// Store it, with this per-call TTL (`None`: the data type's TTL).
    Store(Option<Duration>),
    /// Return it without storing.
    Skip(NotStoredReason),
}

/// How long a response may be kept, per `mode`: never longer than the type's TTL. `age` is the
/// response's `Age` header in seconds. A type whose policy is `never` keeps its own TTL
/// (its per-call TTLs are refused), but still honours `no-store` and staleness on arrival.
pub(crate) fn storage(
    mode: CacheControl,
    d: &Directives,
    age: Option<u64>,
    ty: &DataTypeSpec,
) -> Storage {
    if mode == CacheControl::Ignore {
        return Storage::Store(None);
    }
    if d.no_store {
        return Storage::Skip(NotStoredReason::NoStore);
    }
    let lifetime = if d.no_cache {
        Some(0)
    } else {
        d.s_maxage.or(d.max_age)
    };
    let Some(secs) = lifetime else {
        return Storage::Store(None);
    };
    let left = Duration::from_secs(secs.saturating_sub(age.unwrap_or(0)));
    if left.is_zero() {
        return Storage::Skip(NotStoredReason::AlreadyStale);
    }
    if left < ty.ttl && ty.ttl_override != TtlOverride::Never {
        Storage::Store(Some(left))
    } else {
        Storage::Store(None)
    }
}

/// The opaque part of an entity tag: `W/"x"` and `"x"` both give `"x"`.
fn opaque(etag: &str) -> &str {
    let t = etag.trim();
    t.strip_prefix("W/").unwrap_or(t)
}

/// Weak comparison (RFC 9110 §8.8.3.2): equal opaque tags, either may be weak.
pub(crate) fn etags_match(a: &str, b: &str) -> bool {
    opaque(a) == opaque(b)
}

/// Whether a 304 describes the stored entry (RFC 9111 §4.3.4): its ETag, when it sends one,
/// must match the stored one; else its Last-Modified, when both have one, must be equal; a
/// 304 with neither refers to the entry whose validators were sent.
pub(crate) fn not_modified_matches(
    stored_etag: Option<&str>,
    stored_last_modified: Option<&str>,
    etag: Option<&str>,
    last_modified: Option<&str>,
) -> bool {
    match (etag, last_modified) {
        (Some(new), _) => stored_etag.is_some_and(|old| etags_match(old, new)),
        (None, Some(new)) => stored_last_modified.is_none_or(|old| old.trim() == new.trim()),
        (None, None) => true,
    }
}

/// Why a header value may not be kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeaderProblem {
    /// Longer than the limit.
    TooLong,
    /// Contains a byte that is not visible ASCII, space or tab (CR, LF, NUL, obs-text).
    BadByte,
}

/// Checks a header value before it is stored or sent back: at most `max` bytes of visible
/// ASCII, space and tab.
pub(crate) fn check_header_value(v: &[u8], max: usize) -> Result<&str, HeaderProblem> {
    if v.len() > max {
        return Err(HeaderProblem::TooLong);
    }
    if !v.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)) {
        return Err(HeaderProblem::BadByte);
    }
    std::str::from_utf8(v)
        .map(str::trim)
        .map_err(|_| HeaderProblem::BadByte)
}

/// Whether a media type is allowed by `allowed` (empty: any). Entries are essences such as
/// `application/json` or `text/*`, compared case-insensitively; parameters are ignored.
pub(crate) fn content_type_allowed(content_type: Option<&str>, allowed: &[String]) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let Some(ct) = content_type else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    allowed.iter().any(|a| {
        let a = a.trim().to_ascii_lowercase();
        match a.strip_suffix("/*") {
            Some(main) => essence
                .split_once('/')
                .is_some_and(|(m, sub)| m == main && !sub.is_empty()),
            None => essence == a,
        }
    })
}

/// The header rules over untrusted bytes, for the fuzz targets in `fuzz/`; not part of the API.
#[doc(hidden)]
pub mod fuzzing {
    use std::time::Duration;

    use super::{CacheControl, NotStoredReason, Storage};
    use crate::datatype::DataTypeSpec;

    /// The `Cache-Control` directives found, as `(no_store, no_cache, max_age, s_maxage)`.
    #[must_use]
    pub fn cache_control(lines: &[&str]) -> (bool, bool, Option<u64>, Option<u64>) {
        let d = super::parse_cache_control(lines.iter().copied());
        (d.no_store, d.no_cache, d.max_age, d.s_maxage)
    }

    /// Whether and how long a response with these `Cache-Control` lines and `Age` is kept:
    /// `Ok(None)` for the type's TTL, `Ok(Some(ttl))` for a shorter one.
    ///
    /// # Errors
    /// Why the body would not be stored.
    pub fn storage(
        mode: CacheControl,
        lines: &[&str],
        age: Option<u64>,
        ty: &DataTypeSpec,
    ) -> Result<Option<Duration>, NotStoredReason> {
        match super::storage(
            mode,
            &super::parse_cache_control(lines.iter().copied()),
            age,
            ty,
        ) {
            Storage::Store(ttl) => Ok(ttl),
            Storage::Skip(why) => Err(why),
        }
    }

    /// A header value as the fetcher would keep it, or `None` when it is refused.
    #[must_use]
    pub fn header_value(v: &[u8], max: usize) -> Option<&str> {
        super::check_header_value(v, max).ok()
    }

    /// Weak entity-tag comparison.
    #[must_use]
    pub fn etags_match(a: &str, b: &str) -> bool {
        super::etags_match(a, b)
    }

    /// Whether a 304 with these validators describes the stored entry.
    #[must_use]
    pub fn not_modified_matches(
        stored_etag: Option<&str>,
        stored_last_modified: Option<&str>,
        etag: Option<&str>,
        last_modified: Option<&str>,
    ) -> bool {
        super::not_modified_matches(stored_etag, stored_last_modified, etag, last_modified)
    }

    /// Whether a `Content-Type` is one of `allowed`.
    #[must_use]
    pub fn content_type_allowed(content_type: Option<&str>, allowed: &[String]) -> bool {
        super::content_type_allowed(content_type, allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The built-in news type with another TTL and override policy.
    fn spec(ttl: u64, policy: TtlOverride) -> DataTypeSpec {
        let config = crate::config::Config::default();
        let mut s = DataTypeSpec::clone(config.data_types.by_name("news_articles").unwrap());
        s.ttl = Duration::from_secs(ttl);
        s.ttl_override = policy;
        s
    }

    #[test]
    fn directives_parse_case_insensitively_and_respect_quotes() {
        let d = parse_cache_control(["public, Max-Age=60", "private=\"a, no-store\""]);
        assert_eq!(d.max_age, Some(60));
        assert!(
            !d.no_store,
            "no-store inside a quoted string is not a directive"
        );
        let d = parse_cache_control(["max-age=10, max-age=99, s-maxage=\"5\", NO-STORE"]);
        assert_eq!(
            (d.max_age, d.s_maxage, d.no_store),
            (Some(10), Some(5), true)
        );
        let d = parse_cache_control(["max-age=soon"]);
        assert_eq!(
            d.max_age,
            Some(0),
            "an invalid max-age makes the response stale"
        );
        let d = parse_cache_control(["max-age=99999999999999999999999"]);
        assert_eq!(d.max_age, Some(u64::MAX));
        assert_eq!(parse_cache_control([""]), Directives::default());
    }

    #[test]
    fn max_age_shortens_but_never_lengthens_the_type_ttl() {
        let ty = spec(3600, TtlOverride::ShorterOnly);
        let mode = CacheControl::MayShorten;
        let d = parse_cache_control(["max-age=60"]);
        assert_eq!(
            storage(mode, &d, None, &ty),
            Storage::Store(Some(Duration::from_secs(60)))
        );
        assert_eq!(
            storage(mode, &d, Some(15), &ty),
            Storage::Store(Some(Duration::from_secs(45))),
            "Age counts against max-age"
        );
        let d = parse_cache_control(["max-age=86400"]);
        assert_eq!(storage(mode, &d, None, &ty), Storage::Store(None));
        let d = parse_cache_control(["max-age=600, s-maxage=30"]);
        assert_eq!(
            storage(mode, &d, None, &ty),
            Storage::Store(Some(Duration::from_secs(30))),
            "a shared cache prefers s-maxage"
        );
        assert_eq!(
            storage(CacheControl::Ignore, &d, None, &ty),
            Storage::Store(None)
        );
    }

    #[test]
    fn no_store_and_stale_on_arrival_are_not_stored() {
        let ty = spec(3600, TtlOverride::ShorterOnly);
        let mode = CacheControl::MayShorten;
        for (cc, age, why) in [
            ("no-store, max-age=60", None, NotStoredReason::NoStore),
            ("no-cache", None, NotStoredReason::AlreadyStale),
            ("max-age=0", None, NotStoredReason::AlreadyStale),
            ("max-age=30", Some(30), NotStoredReason::AlreadyStale),
        ] {
            let d = parse_cache_control([cc]);
            assert_eq!(storage(mode, &d, age, &ty), Storage::Skip(why), "{cc}");
        }
        let d = parse_cache_control(["no-store"]);
        assert_eq!(
            storage(CacheControl::Ignore, &d, None, &ty),
            Storage::Store(None)
        );
    }

    #[test]
    fn a_type_that_refuses_per_call_ttls_keeps_its_own() {
        let ty = spec(3600, TtlOverride::Never);
        let d = parse_cache_control(["max-age=60"]);
        assert_eq!(
            storage(CacheControl::MayShorten, &d, None, &ty),
            Storage::Store(None)
        );
    }

    #[test]
    fn weak_and_strong_etags_compare_weakly() {
        assert!(etags_match("W/\"a\"", "\"a\""));
        assert!(etags_match("\"a\"", "\"a\""));
        assert!(!etags_match("\"a\"", "\"b\""));
    }

    #[test]
    fn a_304_must_name_the_stored_representation() {
        let (e, lm) = (Some("\"v1\""), Some("Tue, 01 Jan 2030 00:00:00 GMT"));
        assert!(not_modified_matches(e, lm, Some("\"v1\""), None));
        assert!(not_modified_matches(e, lm, Some("W/\"v1\""), None));
        assert!(!not_modified_matches(e, lm, Some("\"v2\""), None));
        assert!(!not_modified_matches(None, lm, Some("\"v1\""), None));
        assert!(not_modified_matches(None, lm, None, lm));
        assert!(!not_modified_matches(
            None,
            lm,
            None,
            Some("Wed, 02 Jan 2030 00:00:00 GMT")
        ));
        assert!(not_modified_matches(e, None, None, None));
    }

    #[test]
    fn header_values_with_control_bytes_or_too_long_are_refused() {
        assert_eq!(check_header_value(b"W/\"x\"", 64), Ok("W/\"x\""));
        assert_eq!(
            check_header_value(b"\"a\"\r\nSet-Cookie: x", 64),
            Err(HeaderProblem::BadByte)
        );
        assert_eq!(
            check_header_value(b"\"a\nb\"", 64),
            Err(HeaderProblem::BadByte)
        );
        assert_eq!(
            check_header_value(b"\"\xc3\xa9\"", 64),
            Err(HeaderProblem::BadByte)
        );
        assert_eq!(
            check_header_value(&[b'a'; 65], 64),
            Err(HeaderProblem::TooLong)
        );
    }

    #[test]
    fn content_types_match_by_essence_and_wildcard() {
        let allowed = vec!["application/json".to_owned(), "text/*".to_owned()];
        assert!(content_type_allowed(
            Some("Application/JSON; charset=utf-8"),
            &allowed
        ));
        assert!(content_type_allowed(Some("text/plain"), &allowed));
        assert!(!content_type_allowed(Some("text/"), &allowed));
        assert!(!content_type_allowed(Some("image/png"), &allowed));
        assert!(!content_type_allowed(None, &allowed));
        assert!(content_type_allowed(None, &[]));
    }
}
