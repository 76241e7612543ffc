//! Warming from a manifest: files loaded, fresh keys left alone, unloadable ones reported.

use freshcache::fetch::{FetchOptions, Fetcher};
use freshcache::warm::{WarmStatus, load_manifest};
use freshcache::{Codec, Key};

use crate::support::{TestCache, secs};

#[tokio::test]
async fn a_manifest_loads_files_leaves_fresh_keys_and_reports_what_it_could_not_do() {
    let t = TestCache::new();
    let files = tempfile::tempdir().unwrap();
    let odds_file = files.path().join("g42.json");
    std::fs::write(&odds_file, br#"{"home":1.91}"#).unwrap();
    let manifest = files.path().join("warm.yml");
    std::fs::write(
        &manifest,
        format!(
            "- key: odds:g42:1700000000\n  file: {}\n  critical: true\n- key: news:espn:1\n- key: llm:features:c1:2026-11-24\n",
            odds_file.display()
        ),
    )
    .unwrap();
    t.cache
        .set(&Key::news("espn", 1).unwrap(), "already here")
        .await
        .unwrap();
    let items = load_manifest(&manifest).unwrap();
    assert_eq!(items.len(), 3);
    assert!(items[0].critical && !items[1].critical);
    assert!(!t.cache.critical_fresh(&items).await.unwrap());

    let fetcher = Fetcher::new(FetchOptions::default()).unwrap();
    let mut seen = Vec::new();
    let report = t
        .cache
        .warm(&items, &fetcher, |done, total, r| {
            seen.push((done, total, r.status))
        })
        .await
        .unwrap();
    assert_eq!(
        seen,
        [
            (1, 3, WarmStatus::Loaded),
            (2, 3, WarmStatus::Fresh),
            (3, 3, WarmStatus::Failed)
        ]
    );
    assert!(!report.all_ok());
    assert!(
        report.items[2]
            .reason
            .as_deref()
            .unwrap()
            .contains("no url or file")
    );
    let h = t
        .cache
        .get(&Key::odds("g42", 1_700_000_000).unwrap())
        .await
        .unwrap()
        .fresh()
        .unwrap();
    assert_eq!(h.meta().codec, Codec::Json);
    assert!(t.cache.critical_fresh(&items).await.unwrap());
    // Readiness follows freshness: once the critical odds expire, it is not ready again.
    t.advance(secs(60));
    assert!(!t.cache.critical_fresh(&items).await.unwrap());
}

#[test]
fn bad_manifests_name_the_item_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m.yml");
    std::fs::write(&m, "- key: \"news:../x\"\n").unwrap();
    let e = load_manifest(&m).unwrap_err();
    assert_eq!(e.field, "items[0].key");
    std::fs::write(&m, "- key: news:a:1\n  url: \"ftp://x\"\n").unwrap();
    assert_eq!(load_manifest(&m).unwrap_err().field, "items[0].url");
    std::fs::write(&m, "- key: news:a:1\n  url: \"http://x/\"\n  file: y\n").unwrap();
    assert_eq!(load_manifest(&m).unwrap_err().field, "items[0].url");
    std::fs::write(&m, "- nope: 1\n").unwrap();
    assert!(load_manifest(&m).unwrap_err().reason.contains("nope"));
}

#[tokio::test]
async fn files_are_warmed_in_a_batch_where_a_refused_file_fails_alone() {
    let t = TestCache::new();
    let files = tempfile::tempdir().unwrap();
    let mut manifest = String::new();
    for (i, len) in [(1, 4), (2, 2 << 20), (3, 4), (4, 4)] {
        let path = files.path().join(format!("g{i}.txt"));
        std::fs::write(&path, vec![b'1'; len]).unwrap();
        manifest.push_str(&format!(
            "- key: odds:g{i}:1700000000\n  file: {}\n",
            path.display()
        ));
    }
    // A file that is missing fails alone too.
    manifest.push_str("- key: odds:g5:1700000000\n  file: /nonexistent/g5.txt\n");
    let path = files.path().join("warm.yml");
    std::fs::write(&path, manifest).unwrap();
    let items = load_manifest(&path).unwrap();
    let fetcher = Fetcher::new(FetchOptions::default()).unwrap();
    let mut seen = Vec::new();
    let report = t
        .cache
        .warm(&items, &fetcher, |done, _, r| seen.push((done, r.status)))
        .await
        .unwrap();
    use WarmStatus::{Failed, Loaded};
    assert_eq!(
        seen,
        [
            (1, Loaded),
            (2, Failed),
            (3, Loaded),
            (4, Loaded),
            (5, Failed)
        ]
    );
    assert!(
        report.items[1]
            .reason
            .as_deref()
            .unwrap()
            .contains("allows at most"),
        "{:?}",
        report.items[1]
    );
    for i in [1, 3, 4] {
        let key = Key::odds(format!("g{i}"), 1_700_000_000).unwrap();
        assert!(t.cache.get(&key).await.unwrap().is_fresh());
    }
}
