//! Batches: `set_many` validates every item first and writes all or nothing; `get_many`.

use freshcache::{Error, Key, Lookup, Value};

use crate::support::{DISK, MEMORY, TestCache, fresh, secs};

fn odds(i: u32) -> Key {
    Key::odds(format!("g{i}"), 1_700_000_000).unwrap()
}

#[tokio::test]
async fn a_batch_is_stored_whole_and_read_back_in_order() {
    let t = TestCache::new();
    {
        let items: Vec<(Key, Value)> = (0..500)
            .map(|i| (odds(i), Value::from(format!("{i}.5"))))
            .collect();
        let stored = t.cache.set_many(items).await.unwrap();
        assert_eq!(stored.len(), 500);
        let keys: Vec<Key> = (0..500).map(odds).collect();
        let found = t.cache.get_many(&keys).await.unwrap();
        for (i, l) in found.into_iter().enumerate() {
            let h = fresh(l);
            assert_eq!(&h.value()[..], format!("{i}.5").as_bytes());
            assert_eq!(h.source, MEMORY);
        }
        // Durable: another instance on the directory reads them from disk.
        let other = t.reopen();
        let h = fresh(other.get(&odds(42)).await.unwrap());
        assert_eq!((h.source, &h.value()[..]), (DISK, &b"42.5"[..]));
        // And they expire like single writes.
        t.advance(secs(60));
        assert!(matches!(other.get(&odds(42)).await.unwrap(), Lookup::Miss));
    }
}

#[tokio::test]
async fn a_batch_with_bad_items_names_each_and_writes_nothing() {
    let t = TestCache::new();
    {
        t.cache.set(&odds(1), "old").await.unwrap();
        let too_big = vec![b'x'; 2 << 20];
        let items = vec![
            (odds(1), Value::from("new")),
            (odds(2), Value::bytes(too_big)),
            (odds(3), Value::from("fine")),
            (odds(4), Value::from("too long a ttl").ttl(secs(3600))),
        ];
        let err = t.cache.set_many(items).await.unwrap_err();
        let Error::InvalidBatch { refused, total } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(*total, 4);
        let named: Vec<(usize, &str)> = refused.iter().map(|r| (r.index, r.key.as_str())).collect();
        assert_eq!(named, [(1, odds(2).as_str()), (3, odds(4).as_str())]);
        assert!(matches!(refused[0].error, Error::TooLarge { .. }));
        assert!(matches!(refused[1].error, Error::TtlNotAllowed { .. }));
        assert!(err.is_invalid_input());
        assert_eq!(err.class().http_status(), 400);
        // Nothing half-written: the good items are not stored, the old value stands.
        let h = fresh(t.cache.get(&odds(1)).await.unwrap());
        assert_eq!(&h.value()[..], b"old");
        assert!(matches!(t.cache.get(&odds(3)).await.unwrap(), Lookup::Miss));
        assert!(matches!(
            t.reopen().get(&odds(3)).await.unwrap(),
            Lookup::Miss
        ));
    }
}

#[tokio::test]
async fn a_key_given_twice_keeps_its_last_value_and_leaves_no_blob_behind() {
    let t = TestCache::new();
    {
        // Incompressible, so each value lives in a blob file of its own.
        let big = |seed: u64| Value::bytes(crate::support::noise(seed, 64 * 1024));
        let k = Key::llm_features("c1", "2026-12-04").unwrap();
        t.cache
            .set_many(vec![(k.clone(), big(1)), (k.clone(), big(2))])
            .await
            .unwrap();
        let h = fresh(t.reopen().get(&k).await.unwrap());
        assert_eq!(&h.value()[..], &crate::support::noise(2, 64 * 1024)[..]);
        assert_eq!(crate::support::blob_files(&t.dir()).len(), 1);
    }
}
