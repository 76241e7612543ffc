//! JSON and MessagePack helpers round-trip through both tiers.

use freshcache::{Codec, Error, Key};
use serde::{Deserialize, Serialize};

use crate::support::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Odds {
    game: String,
    home: f64,
    away: f64,
    books: Vec<String>,
    live: bool,
}

fn sample() -> Odds {
    Odds {
        game: "g42".into(),
        home: 1.91,
        away: 2.05,
        books: vec!["a".into(), "b".into()],
        live: true,
    }
}

#[tokio::test]
async fn set_json_and_get_typed_round_trip_in_memory_and_from_disk() {
    let t = TestCache::new();
    let k = Key::odds("g42", 1).unwrap();
    let e = t.cache.set_json(&k, &sample()).await.unwrap();
    assert_eq!(e.meta.codec, Codec::Json);
    assert_eq!(serde_json::from_slice::<Odds>(&e.value).unwrap(), sample());
    assert_eq!(t.cache.get_typed::<Odds>(&k).await.unwrap(), Some(sample()));
    assert_eq!(
        t.reopen().get_typed::<Odds>(&k).await.unwrap(),
        Some(sample())
    );
}

#[tokio::test]
async fn set_msgpack_and_get_typed_round_trip_in_memory_and_from_disk() {
    let t = TestCache::new();
    let k = Key::llm_features("c1", "2026-11-24").unwrap();
    let e = t.cache.set_msgpack(&k, &sample()).await.unwrap();
    assert_eq!(e.meta.codec, Codec::MsgPack);
    assert_eq!(t.cache.get_typed::<Odds>(&k).await.unwrap(), Some(sample()));
    let b = t.reopen();
    assert_eq!(b.get_typed::<Odds>(&k).await.unwrap(), Some(sample()));
    assert_eq!(fresh(b.get(&k).await.unwrap()).meta().codec, Codec::MsgPack);
}

#[tokio::test]
async fn get_typed_is_none_once_expired_and_a_codec_error_for_the_wrong_shape() {
    let t = TestCache::new();
    let k = Key::odds("g42", 1).unwrap();
    t.cache.set_json(&k, &sample()).await.unwrap();
    assert!(matches!(
        t.cache.get_typed::<Vec<u32>>(&k).await,
        Err(Error::Codec { .. })
    ));
    let raw = Key::odds("g43", 1).unwrap();
    t.cache.set(&raw, "plain text").await.unwrap();
    assert!(matches!(
        t.cache.get_typed::<String>(&raw).await,
        Err(Error::Codec { .. })
    ));
    t.advance(secs(60));
    assert_eq!(t.cache.get_typed::<Odds>(&k).await.unwrap(), None);
}
