//! The conditional HTTP fetcher against a real origin on loopback: validators stored and sent
//! back, 304 re-validation without a body, bounds, redirects and `Cache-Control`.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use freshcache::fetch::{CacheControl, FetchOptions, FetchOutcome, Fetcher, NotStoredReason};
use freshcache::{Codec, FetchErrorKind, Key, Lookup};

use crate::support::*;

mod origin;

use origin::{Body, Origin, Resp};

mod hostile;

fn news() -> Key {
    Key::news("feed", "front").unwrap()
}

fn options() -> FetchOptions {
    FetchOptions {
        timeout: Duration::from_secs(10),
        ..FetchOptions::default()
    }
}

fn fetcher() -> Fetcher {
    Fetcher::new(options()).unwrap()
}

#[track_caller]
fn fetched(o: &FetchOutcome) -> &freshcache::Hit {
    match o {
        FetchOutcome::Fetched { hit, .. } => hit,
        other => panic!("expected Fetched, got {other:?}"),
    }
}

#[track_caller]
fn revalidated(o: &FetchOutcome) -> &freshcache::Hit {
    match o {
        FetchOutcome::Revalidated { hit, .. } => hit,
        other => panic!("expected Revalidated, got {other:?}"),
    }
}

#[track_caller]
fn fetch_kind(r: freshcache::Result<FetchOutcome>) -> FetchErrorKind {
    match r {
        Err(e) => e
            .fetch_kind()
            .unwrap_or_else(|| panic!("not a fetch error: {e}")),
        Ok(o) => panic!("expected a fetch error, got {o:?}"),
    }
}

/// An origin serving `body` with ETag `"v{version}"`, answering a matching `If-None-Match`
/// with 304; `version` can be bumped by the test.
async fn versioned(version: Arc<AtomicU32>) -> Origin {
    Origin::start(move |req| {
        let v = version.load(Ordering::SeqCst);
        async move {
            let etag = format!("\"v{v}\"");
            if req.header("if-none-match") == Some(etag.as_str()) {
                Resp::not_modified().header("ETag", &etag)
            } else {
                Resp::ok(format!("{{\"version\":{v}}}"))
                    .header("Content-Type", "application/json")
                    .header("ETag", &etag)
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_200_is_stored_with_its_etag_and_codec() {
    let t = TestCache::new();
    let origin = versioned(Arc::new(AtomicU32::new(1))).await;
    let out = fetcher()
        .fetch(&t.cache, &news(), &origin.url("/front.json"))
        .await
        .unwrap();
    let hit = fetched(&out);
    assert_eq!(hit.value().as_ref(), b"{\"version\":1}");
    assert_eq!(hit.meta().etag.as_deref(), Some("\"v1\""));
    assert_eq!(hit.meta().codec, Codec::Json);
    assert_eq!(hit.meta().stored_at, T0);
    assert_eq!(hit.meta().expires_at, T0.saturating_add(secs(3600)));
    assert_eq!(out.status(), 200);
    assert_eq!(out.transfer().body_bytes, 13);
    assert!(!out.transfer().conditional);
    assert!(!origin.last_request().is_conditional());

    let got = fresh(t.cache.get(&news()).await.unwrap());
    assert_eq!(got.meta().etag.as_deref(), Some("\"v1\""));
    #[derive(serde::Deserialize)]
    struct Doc {
        version: u32,
    }
    let doc: Doc = t.cache.get_typed(&news()).await.unwrap().unwrap();
    assert_eq!(doc.version, 1);
}

#[tokio::test]
async fn a_refresh_sends_if_none_match_and_a_304_revalidates_without_a_body() {
    let t = TestCache::new();
    let origin = versioned(Arc::new(AtomicU32::new(1))).await;
    let f = fetcher();
    let url = origin.url("/front.json");
    let _ = f.fetch(&t.cache, &news(), &url).await.unwrap();
    let sent_after_first = origin.body_bytes_sent();
    assert_eq!(sent_after_first, 13);

    // Past its TTL: the entry has expired, yet its validators are still sent.
    t.advance(secs(3600 + 120));
    let out = f.fetch(&t.cache, &news(), &url).await.unwrap();
    let req = origin.last_request();
    assert_eq!(req.header("if-none-match"), Some("\"v1\""));
    let hit = revalidated(&out);
    assert_eq!(out.status(), 304);
    assert_eq!(out.transfer().body_bytes, 0);
    assert!(out.transfer().conditional);
    assert_eq!(
        origin.body_bytes_sent(),
        sent_after_first,
        "a 304 costs no body bytes"
    );
    let now = T0.saturating_add(secs(3720));
    assert_eq!(hit.meta().stored_at, now);
    assert_eq!(hit.meta().expires_at, now.saturating_add(secs(3600)));
    assert_eq!(hit.value().as_ref(), b"{\"version\":1}");
    assert_eq!(hit.meta().etag.as_deref(), Some("\"v1\""));
    assert_eq!(hit.meta().codec, Codec::Json);

    let got = fresh(t.cache.get(&news()).await.unwrap());
    assert_eq!(got.meta().stored_at, now);
    assert_eq!(got.value().as_ref(), b"{\"version\":1}");
}

#[tokio::test]
async fn a_changed_etag_gives_a_200_that_replaces_the_entry() {
    let t = TestCache::new();
    let version = Arc::new(AtomicU32::new(1));
    let origin = versioned(version.clone()).await;
    let f = fetcher();
    let url = origin.url("/front.json");
    let _ = f.fetch(&t.cache, &news(), &url).await.unwrap();
    version.store(2, Ordering::SeqCst);
    t.advance(secs(10));
    let out = f.fetch(&t.cache, &news(), &url).await.unwrap();
    assert_eq!(
        origin.last_request().header("if-none-match"),
        Some("\"v1\"")
    );
    let hit = fetched(&out);
    assert_eq!(hit.value().as_ref(), b"{\"version\":2}");
    assert_eq!(hit.meta().etag.as_deref(), Some("\"v2\""));
    let got = fresh(t.cache.get(&news()).await.unwrap());
    assert_eq!(got.value().as_ref(), b"{\"version\":2}");
    assert_eq!(got.meta().stored_at, T0.saturating_add(secs(10)));
}

#[tokio::test]
async fn last_modified_alone_is_sent_back_as_if_modified_since() {
    const LM: &str = "Tue, 14 Nov 2023 22:00:00 GMT";
    let t = TestCache::new();
    let origin = Origin::start(|req| async move {
        if req.header("if-modified-since") == Some(LM) {
            Resp::not_modified()
        } else {
            Resp::ok("article").header("Last-Modified", LM)
        }
    })
    .await;
    let f = fetcher();
    let url = origin.url("/a");
    let first = f.fetch(&t.cache, &news(), &url).await.unwrap();
    assert_eq!(fetched(&first).meta().last_modified.as_deref(), Some(LM));
    assert_eq!(fetched(&first).meta().etag, None);

    t.advance(secs(60));
    let out = f.fetch(&t.cache, &news(), &url).await.unwrap();
    let req = origin.last_request();
    assert_eq!(req.header("if-modified-since"), Some(LM));
    assert_eq!(req.header("if-none-match"), None);
    let hit = revalidated(&out);
    assert_eq!(hit.meta().last_modified.as_deref(), Some(LM));
    assert_eq!(hit.value().as_ref(), b"article");
}

#[tokio::test]
async fn a_weak_etag_is_stored_and_sent_back_as_is() {
    let t = TestCache::new();
    let origin = Origin::start(|req| async move {
        if req.header("if-none-match") == Some("W/\"abc\"") {
            Resp::not_modified().header("ETag", "W/\"abc\"")
        } else {
            Resp::ok("weak").header("ETag", "W/\"abc\"")
        }
    })
    .await;
    let f = fetcher();
    let url = origin.url("/w");
    let first = f.fetch(&t.cache, &news(), &url).await.unwrap();
    assert_eq!(fetched(&first).meta().etag.as_deref(), Some("W/\"abc\""));
    let out = f.fetch(&t.cache, &news(), &url).await.unwrap();
    assert_eq!(
        origin.last_request().header("if-none-match"),
        Some("W/\"abc\"")
    );
    assert_eq!(revalidated(&out).meta().etag.as_deref(), Some("W/\"abc\""));
}

/// Stores `"v1"` from a well-behaved origin; returns the stored stamp.
async fn store_v1(t: &TestCache) -> freshcache::Timestamp {
    let origin = Origin::fixed(Resp::ok("good").header("ETag", "\"v1\"")).await;
    let out = fetcher()
        .fetch(&t.cache, &news(), &origin.url("/"))
        .await
        .unwrap();
    fetched(&out).meta().stored_at
}

#[track_caller]
fn assert_still_v1(t: &TestCache, stored_at: freshcache::Timestamp) {
    let ins = t.cache.inspect(&news()).unwrap();
    let e = ins.entry.expect("the good entry is gone");
    assert_eq!(e.value.as_ref(), b"good");
    assert_eq!(e.meta.etag.as_deref(), Some("\"v1\""));
    assert_eq!(e.meta.stored_at, stored_at);
}

#[tokio::test]
async fn a_304_with_nothing_stored_is_followed_by_a_full_fetch() {
    let t = TestCache::new();
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    // A confused origin: 304 to the first (unconditional) request, 200 after.
    let origin = Origin::start(move |_| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                Resp::not_modified().header("ETag", "\"v1\"")
            } else {
                Resp::ok("full").header("ETag", "\"v1\"")
            }
        }
    })
    .await;
    let out = fetcher()
        .fetch(&t.cache, &news(), &origin.url("/"))
        .await
        .unwrap();
    assert_eq!(fetched(&out).value().as_ref(), b"full");
    assert_eq!(out.transfer().requests, 2);
    let reqs = origin.requests();
    assert!(reqs.iter().all(|r| !r.is_conditional()));

    // An origin that only ever says 304 is an error, and nothing is invented.
    let t2 = TestCache::new();
    let stuck = Origin::fixed(Resp::not_modified()).await;
    let r = fetcher().fetch(&t2.cache, &news(), &stuck.url("/")).await;
    assert_eq!(fetch_kind(r), FetchErrorKind::Protocol);
    assert!(t2.cache.inspect(&news()).unwrap().entry.is_none());
}

#[tokio::test]
async fn a_304_for_an_entry_removed_in_flight_is_followed_by_a_full_fetch() {
    let t = TestCache::new();
    store_v1(&t).await;
    let cache = t.cache.clone();
    let origin = Origin::start(move |req| {
        let cache = cache.clone();
        async move {
            if req.is_conditional() {
                // The entry disappears while the 304 is on its way.
                cache.delete(&news()).await.unwrap();
                Resp::not_modified().header("ETag", "\"v1\"")
            } else {
                Resp::ok("refetched").header("ETag", "\"v1\"")
            }
        }
    })
    .await;
    let out = fetcher()
        .fetch(&t.cache, &news(), &origin.url("/"))
        .await
        .unwrap();
    assert_eq!(fetched(&out).value().as_ref(), b"refetched");
    assert_eq!(out.transfer().requests, 2);
    assert!(out.transfer().conditional);
}

#[tokio::test]
async fn a_304_naming_another_etag_does_not_revalidate() {
    let t = TestCache::new();
    store_v1(&t).await;
    let origin = Origin::start(|req| async move {
        if req.is_conditional() {
            Resp::not_modified().header("ETag", "\"v9\"")
        } else {
            Resp::ok("v9 body").header("ETag", "\"v9\"")
        }
    })
    .await;
    let out = fetcher()
        .fetch(&t.cache, &news(), &origin.url("/"))
        .await
        .unwrap();
    let hit = fetched(&out);
    assert_eq!(hit.value().as_ref(), b"v9 body");
    assert_eq!(hit.meta().etag.as_deref(), Some("\"v9\""));
}

#[tokio::test]
async fn max_age_shortens_the_ttl_but_never_lengthens_it() {
    let t = TestCache::new();
    let short = Origin::fixed(Resp::ok("s").header("Cache-Control", "public, max-age=60")).await;
    let out = fetcher()
        .fetch(&t.cache, &news(), &short.url("/"))
        .await
        .unwrap();
    assert_eq!(fetched(&out).meta().expires_at, T0.saturating_add(secs(60)));
    t.advance(secs(59));
    assert!(t.cache.get(&news()).await.unwrap().is_fresh());
    t.advance(secs(1));
    assert_miss(&t.cache.get(&news()).await.unwrap());

    let now = t.now();
    let long = Origin::fixed(Resp::ok("l").header("Cache-Control", "max-age=604800")).await;
    let out = fetcher()
        .fetch(&t.cache, &news(), &long.url("/"))
        .await
        .unwrap();
    assert_eq!(
        fetched(&out).meta().expires_at,
        now.saturating_add(secs(3600)),
        "capped at the news_articles TTL"
    );

    // Ignore: the type's TTL, whatever the feed says.
    let out = fetcher()
        .fetch_with(&t.cache, &news(), &short.url("/"), CacheControl::Ignore)
        .await
        .unwrap();
    assert_eq!(
        fetched(&out).meta().expires_at,
        now.saturating_add(secs(3600))
    );
}

#[tokio::test]
async fn no_store_bodies_are_returned_but_not_stored() {
    let t = TestCache::new();
    let origin = Origin::fixed(
        Resp::ok("secret odds")
            .header("Cache-Control", "no-store")
            .header("ETag", "\"n1\""),
    )
    .await;
    let out = fetcher()
        .fetch(&t.cache, &news(), &origin.url("/"))
        .await
        .unwrap();
    match &out {
        FetchOutcome::NotStored { body, reason, .. } => {
            assert_eq!(body.as_ref(), b"secret odds");
            assert_eq!(*reason, NotStoredReason::NoStore);
        }
        other => panic!("expected NotStored, got {other:?}"),
    }
    assert!(!out.is_stored());
    assert_eq!(out.status(), 200);
    assert!(matches!(t.cache.get(&news()).await.unwrap(), Lookup::Miss));
    assert!(t.cache.inspect(&news()).unwrap().entry.is_none());
}

#[tokio::test]
async fn bad_urls_and_keys_fail_before_any_request() {
    let t = TestCache::new();
    let r = fetcher()
        .fetch(&t.cache, &news(), "ftp://127.0.0.1/x")
        .await;
    let e = r.unwrap_err();
    assert_eq!(e.fetch_kind(), Some(FetchErrorKind::InvalidUrl));
    assert!(e.is_invalid_input());

    let origin = Origin::fixed(Resp::ok("x")).await;
    let unknown = Key::parse("weather:x").unwrap();
    let e = fetcher()
        .fetch(&t.cache, &unknown, &origin.url("/"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, freshcache::Error::UnknownDataType { .. }),
        "{e}"
    );
    assert!(origin.requests().is_empty());
}

#[tokio::test]
async fn credentials_and_queries_stay_out_of_errors() {
    let t = TestCache::new();
    let origin = Origin::fixed(Resp::new(500)).await;
    let url = format!("http://user:hunter2@{}/feed?token=s3cr3t", origin.addr);
    let e = fetcher().fetch(&t.cache, &news(), &url).await.unwrap_err();
    let text = e.to_string();
    assert!(
        !text.contains("hunter2") && !text.contains("s3cr3t"),
        "{text}"
    );
    assert!(text.contains("/feed?…"), "{text}");
}
