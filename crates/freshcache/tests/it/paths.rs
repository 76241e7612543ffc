//! Hostile keys are refused, and nothing a key says ends up in a file name or outside the
//! cache directory.

use freshcache::{Error, Key, KeyPrefix, Value};

use crate::support::*;

fn hostile() -> Vec<String> {
    vec![
        "news:../../x".into(),
        "news:..:x".into(),
        "news:.:x".into(),
        "news:a/b".into(),
        "news:a\\b".into(),
        "../../etc/passwd".into(),
        "news:../../../etc/passwd".into(),
        "/etc/passwd:x".into(),
        "news:a\0b".into(),
        "news:\0:x".into(),
        "news:a b".into(),
        "news:a\nb".into(),
        "news:é:x".into(),
        format!("news:{}:x", "a".repeat(10 * 1024)),
        format!("news:{}", "../".repeat(3000)),
        String::new(),
        "news".into(),
    ]
}

#[tokio::test]
async fn path_like_nul_and_oversized_keys_are_invalid_and_nothing_lands_outside_the_cache_dir() {
    let t = TestCache::new();
    for k in hostile() {
        let shown: String = k.chars().take(40).collect();
        match Key::parse(&k) {
            Err(Error::InvalidKey { key, .. }) => {
                assert!(
                    key.len() < 200,
                    "error echoes the whole {}-byte key",
                    k.len()
                );
            }
            other => panic!("{shown:?} gave {other:?}"),
        }
        let bad_chars = k.is_empty()
            || k.len() > 512
            || !k.is_ascii()
            || k.contains(['/', '\\', '\0', ' ', '\n']);
        if bad_chars {
            assert!(
                matches!(KeyPrefix::parse(&k), Err(Error::InvalidKey { .. })),
                "prefix {shown:?} accepted"
            );
        }
    }
    // Valid keys full of punctuation are stored fine and still name no file.
    for k in [
        "news:a%2e%2e:x",
        "news:..a:x",
        "news:etc~passwd:1",
        "news:a*:[1]",
        // SQL and glob metacharacters are data: bound parameters, escaped patterns.
        "news:x;DROP-TABLE-entries;--:1",
        "news:a%_[*]^:{}|1",
    ] {
        let key = Key::parse(k).unwrap();
        t.cache
            .set(&key, Value::bytes(noise(3, 20_000)))
            .await
            .unwrap();
        assert_eq!(
            fresh(t.reopen().get(&key).await.unwrap()).value().len(),
            20_000
        );
    }
    // All of them are still there: nothing in a key reached SQL or a pattern.
    assert_eq!(disk_entries(&t.cache, "news_articles"), 6);

    // The temp root holds only the cache directory.
    let entries: Vec<_> = std::fs::read_dir(t.root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, ["cache"]);
    // No file under it is named after a key.
    for f in files_under(&t.dir()) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        for needle in ["news", "passwd", "etc", "..", "%", "*", "["] {
            assert!(
                !name.contains(needle),
                "{} looks named after a key",
                f.display()
            );
        }
    }
}

#[tokio::test]
async fn keys_with_the_wrong_segment_count_for_their_type_are_invalid_at_set_and_get() {
    let t = TestCache::new();
    for k in [
        "odds:g1",
        "odds:g1:1:2",
        "llm:features:c1",
        "news:espn",
        "news:a:b:c:d",
    ] {
        let key = Key::parse(k).unwrap();
        assert!(
            matches!(t.cache.set(&key, "v").await, Err(Error::InvalidKey { .. })),
            "set {k}"
        );
        assert!(
            matches!(t.cache.get(&key).await, Err(Error::InvalidKey { .. })),
            "get {k}"
        );
    }
    let s = t.cache.stats().unwrap();
    assert_eq!(s.data_types.iter().map(|d| d.entries).sum::<u64>(), 0);
}

#[test]
fn cache_dir_is_created_where_configured_and_only_there() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("nested").join("cache");
    let t = open(&dir, &freshcache::ManualClock::new(T0));
    drop(t);
    assert!(dir.join("metadata.db").is_file());
    assert!(dir.join("blobs").is_dir());
    let top: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(top, ["nested"]);
}
