//! A hostile or failing feed server: 5xx, a slow body, an oversized body, a gzip bomb, headers
//! with line breaks, overlong validators, a wrong content type, redirects to other hosts. None
//! of it is stored, and what was stored stays.

#[allow(clippy::wildcard_imports)]
use super::*;

#[tokio::test]
async fn a_5xx_keeps_the_stored_entry_and_is_a_transient_error() {
    let t = TestCache::new();
    let stored_at = store_v1(&t).await;
    t.advance(secs(5));
    let origin = Origin::fixed(Resp::new(503).body("down")).await;
    let r = fetcher().fetch(&t.cache, &news(), &origin.url("/")).await;
    let e = r.as_ref().unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert_eq!(fetch_kind(r), FetchErrorKind::Status(503));
    assert_eq!(
        origin.last_request().header("if-none-match"),
        Some("\"v1\"")
    );
    assert_still_v1(&t, stored_at);
    assert!(t.cache.get(&news()).await.unwrap().is_fresh());
}

#[tokio::test]
async fn a_slow_body_hits_the_timeout_and_keeps_the_stored_entry() {
    let t = TestCache::new();
    let stored_at = store_v1(&t).await;
    let origin = Origin::fixed(Resp::ok("").plan(Body::Stall(b"partial".to_vec()))).await;
    let f = Fetcher::new(FetchOptions {
        timeout: Duration::from_millis(300),
        connect_timeout: Duration::from_millis(300),
        ..FetchOptions::default()
    })
    .unwrap();
    let started = std::time::Instant::now();
    let r = f.fetch(&t.cache, &news(), &origin.url("/slow")).await;
    let e = r.as_ref().unwrap_err();
    assert!(e.is_timeout() && e.is_transient(), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(origin.body_bytes_sent(), 7);
    assert_still_v1(&t, stored_at);
}

#[tokio::test]
async fn a_50_mb_body_is_refused_while_streaming_and_not_stored() {
    let t = TestCache::new();
    let stored_at = store_v1(&t).await;
    // No Content-Length: only counting the bytes as they come can stop it.
    let origin = Origin::fixed(
        Resp::ok("")
            .plan(Body::Endless { total: 50 << 20 })
            .no_length(),
    )
    .await;
    let r = fetcher()
        .fetch(&t.cache, &news(), &origin.url("/big"))
        .await;
    assert_eq!(fetch_kind(r), FetchErrorKind::BodyTooLarge);
    assert_still_v1(&t, stored_at);
    // The client hung up near its 16 MiB bound; socket buffers hold a few MiB more at most.
    let sent = origin.body_bytes_sent();
    assert!(sent < 30 << 20, "origin sent {sent} bytes");

    // A declared length over the bound is refused before the body is read.
    let declared = Origin::fixed(
        Resp::ok("")
            .header("Content-Length", &(50u64 << 20).to_string())
            .plan(Body::Endless { total: 50 << 20 })
            .no_length(),
    )
    .await;
    let r = fetcher()
        .fetch(&t.cache, &news(), &declared.url("/big"))
        .await;
    assert_eq!(fetch_kind(r), FetchErrorKind::BodyTooLarge);
    assert_still_v1(&t, stored_at);
}

#[tokio::test]
async fn a_gzip_body_is_stored_decoded_and_a_gzip_bomb_is_refused() {
    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }
    let t = TestCache::new();
    let odds = Key::odds("g1", 1_700_000_000).unwrap();
    let plain = b"{\"home\":1.91,\"away\":2.05}".repeat(20);
    let small = Origin::fixed(
        Resp::ok(gzip(&plain))
            .header("Content-Encoding", "gzip")
            .header("Content-Type", "application/json"),
    )
    .await;
    let out = fetcher()
        .fetch(&t.cache, &odds, &small.url("/odds"))
        .await
        .unwrap();
    assert_eq!(fetched(&out).value().as_ref(), &plain[..]);
    assert_eq!(small.last_request().header("accept-encoding"), Some("gzip"));
    assert!(out.transfer().body_bytes < plain.len() as u64);

    // 8 MiB of zeros packs into a few KiB; odds values may be at most 1 MiB decoded.
    let bomb = gzip(&vec![0u8; 8 << 20]);
    assert!(bomb.len() < 64 << 10);
    let origin = Origin::fixed(Resp::ok(bomb).header("Content-Encoding", "gzip")).await;
    let r = fetcher().fetch(&t.cache, &odds, &origin.url("/bomb")).await;
    assert_eq!(fetch_kind(r), FetchErrorKind::DecodedTooLarge);
    let e = t.cache.inspect(&odds).unwrap().entry.unwrap();
    assert_eq!(e.value.as_ref(), &plain[..], "the good entry stays");

    let br = Origin::fixed(Resp::ok("x").header("Content-Encoding", "br")).await;
    let r = fetcher().fetch(&t.cache, &odds, &br.url("/br")).await;
    assert_eq!(fetch_kind(r), FetchErrorKind::Encoding);
}

#[tokio::test]
async fn headers_with_cr_or_lf_are_refused_and_never_stored() {
    let t = TestCache::new();
    let stored_at = store_v1(&t).await;
    // CR, obs-fold and control bytes break HTTP itself (hyper refuses the response);
    // obs-text passes HTTP but is not a value freshcache stores.
    let cases: [(&[u8], FetchErrorKind); 4] = [
        (b"ETag: \"v2\rSet-Cookie: a=b\"", FetchErrorKind::Protocol),
        (
            b"ETag: \"v2\"\r\n Set-Cookie: a=b",
            FetchErrorKind::Protocol,
        ),
        (b"ETag: \"v2\x01\"", FetchErrorKind::Protocol),
        (b"ETag: \"v2\xff\"", FetchErrorKind::Header),
    ];
    for (line, want) in cases {
        let origin = Origin::fixed(Resp::ok("evil").raw_line(line)).await;
        let r = fetcher().fetch(&t.cache, &news(), &origin.url("/")).await;
        assert_eq!(fetch_kind(r), want, "{:?}", String::from_utf8_lossy(line));
        assert_still_v1(&t, stored_at);
    }

    // A bare LF ends the header line: the rest is a separate header, not part of the ETag.
    let origin = Origin::fixed(Resp::ok("fine").raw_line(b"ETag: \"v3\"\nX-Extra: 1")).await;
    let out = fetcher()
        .fetch(&t.cache, &news(), &origin.url("/"))
        .await
        .unwrap();
    assert_eq!(fetched(&out).meta().etag.as_deref(), Some("\"v3\""));
}

#[tokio::test]
async fn an_overlong_validator_is_a_header_error() {
    let t = TestCache::new();
    let stored_at = store_v1(&t).await;
    let long = format!("\"{}\"", "a".repeat(5000));
    let origin = Origin::fixed(Resp::ok("x").header("ETag", &long)).await;
    let r = fetcher().fetch(&t.cache, &news(), &origin.url("/")).await;
    assert_eq!(fetch_kind(r), FetchErrorKind::Header);
    assert_still_v1(&t, stored_at);
}

#[tokio::test]
async fn a_wrong_content_type_is_refused_when_types_are_restricted() {
    let t = TestCache::new();
    let stored_at = store_v1(&t).await;
    let origin = Origin::fixed(Resp::ok("<html>").header("Content-Type", "text/html")).await;
    let f = Fetcher::new(FetchOptions {
        content_types: vec!["application/json".into()],
        ..options()
    })
    .unwrap();
    let r = f.fetch(&t.cache, &news(), &origin.url("/")).await;
    assert_eq!(fetch_kind(r), FetchErrorKind::ContentType);
    assert_eq!(
        origin.last_request().header("accept"),
        Some("application/json")
    );
    assert_still_v1(&t, stored_at);
}

#[tokio::test]
async fn redirects_stay_on_the_same_host_and_port_unless_allowed() {
    let t = TestCache::new();
    let other = Origin::fixed(Resp::ok("elsewhere")).await;
    let target = other.url("/x");
    let origin = Origin::start(move |req| {
        let target = target.clone();
        async move {
            match req.target.as_str() {
                "/moved" => Resp::new(302).header("Location", "/here"),
                "/here" => Resp::ok("same origin"),
                _ => Resp::new(302).header("Location", &target),
            }
        }
    })
    .await;

    let r = fetcher()
        .fetch(&t.cache, &news(), &origin.url("/away"))
        .await;
    assert_eq!(fetch_kind(r), FetchErrorKind::Redirect);
    assert!(
        other.requests().is_empty(),
        "the other port was never asked"
    );
    assert!(t.cache.inspect(&news()).unwrap().entry.is_none());

    let out = fetcher()
        .fetch(&t.cache, &news(), &origin.url("/moved"))
        .await
        .unwrap();
    assert_eq!(fetched(&out).value().as_ref(), b"same origin");

    let allowed = Fetcher::new(FetchOptions {
        redirect_hosts: vec![format!("127.0.0.1:{}", other.addr.port())],
        ..options()
    })
    .unwrap();
    let out = allowed
        .fetch(&t.cache, &news(), &origin.url("/away"))
        .await
        .unwrap();
    assert_eq!(fetched(&out).value().as_ref(), b"elsewhere");
}
