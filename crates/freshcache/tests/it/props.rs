//! Random operation sequences on odds keys never serve an expired or outdated value, and
//! always serve a value that should be there.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use freshcache::{Cache, Clock, Key, Lookup, ManualClock, Timestamp, Value};
use proptest::prelude::*;

use crate::support::{T0, noise, open};

#[derive(Clone, Debug)]
enum Op {
    Set {
        key: usize,
        seed: u64,
        big: bool,
        ttl_ms: Option<u64>,
    },
    Get(usize),
    Advance(u64),
    Delete(usize),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..4usize, any::<u64>(), prop::bool::weighted(0.2), prop::option::of(1..=60_000u64))
            .prop_map(|(key, seed, big, ttl_ms)| Op::Set { key, seed, big, ttl_ms }),
        5 => (0..4usize).prop_map(Op::Get),
        3 => prop_oneof![0..=5u64, 990..=1_010u64, 4_990..=5_010u64, 59_990..=60_010u64, 0..=70_000u64]
            .prop_map(Op::Advance),
        1 => (0..4usize).prop_map(Op::Delete),
        1 => Just(Op::Reopen),
    ]
}

fn key(n: usize) -> Key {
    Key::odds(format!("g{n}"), 1_700_000_000).unwrap()
}

fn value(seed: u64, big: bool) -> Vec<u8> {
    // Big values are incompressible and above the inline limit: blob files.
    noise(
        seed,
        if big {
            12_000
        } else {
            8 + (seed % 64) as usize
        },
    )
}

fn run(ops: &[Op], dir: &Path) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let clock = ManualClock::new(T0);
        let mut cache: Cache = open(dir, &clock);
        // Last value set per key and when it expires.
        let mut model: HashMap<usize, (Vec<u8>, Timestamp)> = HashMap::new();
        for op in ops {
            match op {
                Op::Set {
                    key: k,
                    seed,
                    big,
                    ttl_ms,
                } => {
                    let v = value(*seed, *big);
                    let mut val = Value::bytes(v.clone());
                    if let Some(t) = ttl_ms {
                        val = val.ttl(Duration::from_millis(*t));
                    }
                    let e = cache.set(&key(*k), val).await.unwrap();
                    let ttl = Duration::from_millis(ttl_ms.unwrap_or(60_000));
                    prop_assert_eq!(e.meta.expires_at, clock.now().saturating_add(ttl));
                    model.insert(*k, (v, e.meta.expires_at));
                }
                Op::Get(k) => {
                    let now = clock.now();
                    let expect = model.get(k).filter(|(_, exp)| now < *exp);
                    match cache.get(&key(*k)).await.unwrap() {
                        Lookup::Fresh(h) => {
                            prop_assert!(
                                h.meta().expires_at > h.now,
                                "fresh hit expiring at {} served at {}",
                                h.meta().expires_at,
                                h.now
                            );
                            prop_assert_eq!(h.now, now);
                            let Some((v, exp)) = expect else {
                                return Err(TestCaseError::fail(format!(
                                    "key {k} served fresh from {:?} but should be gone",
                                    h.source
                                )));
                            };
                            prop_assert!(
                                h.value().as_ref() == &v[..],
                                "key {} served an older value",
                                k
                            );
                            prop_assert_eq!(h.meta().expires_at, *exp);
                        }
                        Lookup::Stale(_) => {
                            return Err(TestCaseError::fail("stale without max_stale"));
                        }
                        Lookup::Miss => {
                            prop_assert!(expect.is_none(), "key {} lost while fresh", k);
                        }
                    }
                }
                Op::Advance(ms) => clock.advance(Duration::from_millis(*ms)),
                Op::Delete(k) => {
                    let had = cache.delete(&key(*k)).await.unwrap();
                    // Present rows may be expired but not yet cleaned; only check one way.
                    if model.get(k).is_some_and(|(_, exp)| clock.now() < *exp) {
                        prop_assert!(had, "delete of a fresh key {} reported absent", k);
                    }
                    model.remove(k);
                }
                Op::Reopen => {
                    drop(cache);
                    cache = open(dir, &clock);
                }
            }
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_ops_never_serve_expired_or_outdated_odds(ops in prop::collection::vec(op(), 1..40)) {
        let root = tempfile::tempdir().unwrap();
        run(&ops, &root.path().join("cache"))?;
    }
}
