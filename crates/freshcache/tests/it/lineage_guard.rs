//! The guard and its audit on derived signals: every input reported with its age and verdict,
//! and a signal whose input changed refused, naming the input.

use freshcache::freshness::Verdict;
use freshcache::{Error, Key, Value};

use crate::support::*;

fn article() -> Key {
    Key::news("espn", "a1").unwrap()
}

fn odds() -> Key {
    Key::odds("g1", 1_700_000_000).unwrap()
}

fn features() -> Key {
    Key::llm_features("c7", "2026-12-04").unwrap()
}

#[tokio::test]
async fn the_guard_reports_inputs_and_refuses_a_signal_whose_input_changed_naming_it() {
    let t = TestCache::new();
    t.cache.set(&article(), "article v1").await.unwrap();
    t.cache.set(&odds(), "1.91").await.unwrap();
    t.advance(secs(5));
    t.cache
        .set(
            &features(),
            Value::from("[0.1, 0.2]").derived_from([article(), odds()]),
        )
        .await
        .unwrap();
    t.advance(secs(2));
    let ok = t.cache.require_fresh("run-1", &[features()]).await.unwrap();
    let s = &ok.report.signals[0];
    assert_eq!(s.verdict, Verdict::Fresh);
    assert_eq!(s.reason, None);
    let inputs: Vec<(&str, Verdict, Option<u64>)> = s
        .inputs
        .iter()
        .map(|i| (i.key.as_str(), i.verdict, i.age.map(|a| a.as_secs())))
        .collect();
    assert_eq!(
        inputs,
        [
            (article().as_str(), Verdict::Fresh, Some(7)),
            (odds().as_str(), Verdict::Fresh, Some(7)),
        ]
    );

    // A corrected article: the next run is refused until the features are recomputed.
    t.cache.set(&article(), "article v2").await.unwrap();
    let changed_at = t.now();
    let err = t
        .cache
        .require_fresh("run-2", &[features(), odds()])
        .await
        .unwrap_err();
    let Error::StaleSignals { report } = &err else {
        panic!("{err:?}")
    };
    let s = &report.signals[0];
    assert_eq!(s.verdict, Verdict::Stale);
    let reason = format!("input news:espn:a1 changed at {changed_at}");
    assert_eq!(s.reason.as_deref(), Some(reason.as_str()));
    assert!(
        err.to_string()
            .contains(&format!("llm:features:c7:2026-12-04 stale: {reason}")),
        "{err}"
    );
    assert_eq!(s.inputs[0].verdict, Verdict::Stale);
    assert_eq!(s.inputs[1].verdict, Verdict::Fresh);
    assert_eq!(report.signals[1].verdict, Verdict::Fresh);

    // The audit keeps the tree: the signal, its inputs, and why it was refused.
    let rows = t.cache.audit("run-2").unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].verdict, Verdict::Stale);
    assert_eq!(rows[0].reason.as_deref(), Some(reason.as_str()));
    assert_eq!(rows[0].inputs, s.inputs);
    assert!(rows[1].inputs.is_empty());

    t.cache
        .set(
            &features(),
            Value::from("[0.3, 0.2]").derived_from([article(), odds()]),
        )
        .await
        .unwrap();
    assert!(t.cache.require_fresh("run-3", &[features()]).await.is_ok());
}

#[tokio::test]
async fn a_tagged_signal_refused_by_its_tag_says_so() {
    let t = TestCache::new();
    t.cache
        .set(&article(), Value::from("a").tags(["espn"]))
        .await
        .unwrap();
    t.advance(ms(1));
    t.cache.invalidate_tag("espn").await.unwrap();
    let (report, _) = t.cache.check_freshness("r", &[article()]).await.unwrap();
    let s = &report.signals[0];
    assert_eq!(s.verdict, Verdict::Stale);
    assert!(
        s.reason
            .as_deref()
            .unwrap()
            .starts_with("tag espn invalidated at"),
        "{s:?}"
    );
    assert_eq!(s.inputs[0].key, "#espn");
}

#[tokio::test]
async fn inspect_shows_inputs_and_dependents() {
    let t = TestCache::new();
    t.cache.set(&article(), "article v1").await.unwrap();
    t.cache.set(&odds(), "1.91").await.unwrap();
    t.cache
        .set(
            &features(),
            Value::from("f").derived_from([article(), odds()]),
        )
        .await
        .unwrap();
    let ins = t.cache.inspect(&features()).unwrap();
    assert!(ins.fresh);
    let keys: Vec<&str> = ins.inputs.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, [article().as_str(), odds().as_str()]);
    assert_eq!(
        t.reopen().inspect(&article()).unwrap().dependents,
        [features().as_str()]
    );
    t.advance(secs(1));
    t.cache.set(&article(), "article v2").await.unwrap();
    let ins = t.reopen().inspect(&features()).unwrap();
    assert!(!ins.fresh);
    assert_eq!(ins.stale_since, Some(t.now()));
    assert_eq!(ins.inputs[0].verdict, Verdict::Stale);
    assert_eq!(
        ins.inputs[0].problem.as_deref(),
        Some(format!("changed at {}", t.now()).as_str())
    );
    // Recomputed without the article: no longer its dependent.
    t.cache
        .set(&features(), Value::from("f2").derived_from([odds()]))
        .await
        .unwrap();
    assert!(t.cache.inspect(&article()).unwrap().dependents.is_empty());
    t.cache
        .cleanup(freshcache::maintenance::CleanupOptions::default())
        .unwrap();
    assert_eq!(
        t.cache.inspect(&odds()).unwrap().dependents,
        [features().as_str()]
    );
}

#[tokio::test]
async fn a_batch_checks_inputs_and_records_dependents() {
    let t = TestCache::new();
    t.cache.set(&article(), "a").await.unwrap();
    t.cache
        .set_many([(features(), Value::from("f").derived_from([article()]))])
        .await
        .unwrap();
    assert_eq!(
        t.cache.inspect(&article()).unwrap().dependents,
        [features().as_str()]
    );
    // An input missing at the time of the batch refuses it, naming the item.
    let err = t
        .cache
        .set_many([(features(), Value::from("f").derived_from([odds()]))])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidBatch { .. }), "{err:?}");
    t.cache.set(&article(), "corrected").await.unwrap();
    assert!(t.cache.get(&features()).await.unwrap().is_miss());
}
