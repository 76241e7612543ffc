//! Lineage and tags through the service and the command line: declared inputs on PUT and
//! `set`, refusals (409 / exit 1), tag invalidation, the guard's `inputs`, `audit` and
//! `inspect`.

use reqwest::StatusCode;

use crate::support::{Api, Env, stderr, stdout};

fn json(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

const FEATURES: &str = "llm:features:c7:2026-12-04";

#[tokio::test]
async fn put_with_derived_from_the_check_answers_with_inputs_and_a_tag_invalidation_cascades() {
    let env = Env::new();
    let server = env.serve();
    let api = Api::new(&server);
    // A missing input: 409 naming it, nothing stored.
    let r = api
        .put(
            &format!("/v1/cache/{FEATURES}?derived_from=news:espn:a1,odds:g1:1"),
            "[0.1]",
        )
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], "input_not_fresh");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("news:espn:a1 missing"),
        "{v}"
    );
    assert_eq!(
        api.get(&format!("/v1/cache/{FEATURES}")).await.status(),
        StatusCode::NOT_FOUND
    );

    let r = api.put("/v1/cache/news:espn:a1?tags=espn", "article").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        api.put("/v1/cache/odds:g1:1", "1.91").await.status(),
        StatusCode::CREATED
    );
    let r = api
        .put(
            &format!("/v1/cache/{FEATURES}?derived_from=news:espn:a1,odds:g1:1"),
            "[0.1]",
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let check = format!(r#"{{"keys": ["{FEATURES}"], "run_id": "r1"}}"#);
    let r = api.post("/v1/freshness/check", check.clone()).await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: serde_json::Value = r.json().await.unwrap();
    let inputs = &v["signals"][0]["inputs"];
    assert_eq!(inputs[0]["key"], "news:espn:a1");
    assert_eq!(inputs[0]["verdict"], "fresh");
    assert_eq!(inputs[1]["key"], "odds:g1:1");
    assert!(inputs[1]["age_seconds"].is_number());

    // Invalidating the article's tag: the features are refused, naming the input.
    std::thread::sleep(std::time::Duration::from_millis(2));
    let r = api.post("/v1/invalidate", r#"{"tag": "espn"}"#).await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["tag"], "espn");
    assert_eq!(
        api.get(&format!("/v1/cache/{FEATURES}")).await.status(),
        StatusCode::NOT_FOUND
    );
    let r = api
        .post("/v1/freshness/check", check.replace("r1", "r2"))
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["signals"][0]["verdict"], "stale");
    assert!(
        v["signals"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("input news:espn:a1 stale"),
        "{v}"
    );
    let audit = api.json("/v1/freshness/audit/r2").await;
    assert_eq!(audit["signals"][0]["inputs"][0]["verdict"], "stale");

    let r = api.put("/v1/cache/news:espn:a2?tags=bad%20tag", "x").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = api
        .post("/v1/invalidate", r#"{"tag": "a", "all": true}"#)
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[test]
fn set_with_derived_from_refusals_exit_1_and_audit_and_inspect_show_the_tree() {
    let env = Env::new();
    let o = env.run_with_stdin(&["set", FEATURES, "--derived-from", "news:espn:a1"], b"f");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("news:espn:a1 missing"),
        "{}",
        stderr(&o)
    );
    // A cycle is invalid input.
    let o = env.run_with_stdin(
        &["set", "news:espn:a1", "--derived-from", "news:espn:a1"],
        b"a",
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    assert!(
        env.run_with_stdin(&["set", "news:espn:a1", "--tags", "espn"], b"a1")
            .status
            .success()
    );
    let o = env.run_with_stdin(&["set", FEATURES, "--derived-from", "news:espn:a1"], b"f");
    assert!(o.status.success(), "{}", stderr(&o));
    let o = env.run(&["check", FEATURES, "--run-id", "ok"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("└ news:espn:a1"), "{}", stdout(&o));

    // A corrected article.
    assert!(
        env.run_with_stdin(&["set", "news:espn:a1"], b"a1 corrected")
            .status
            .success()
    );
    let o = env.run(&["check", FEATURES, "--run-id", "bad"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains(&format!("{FEATURES} stale: input news:espn:a1 changed at")),
        "{}",
        stdout(&o)
    );
    let o = env.run(&["audit", "bad"]);
    assert!(stdout(&o).contains("└ news:espn:a1"), "{}", stdout(&o));
    assert!(stdout(&o).contains("changed at"), "{}", stdout(&o));
    let v = json(&env.run(&["inspect", FEATURES, "--json"]));
    assert_eq!(v["fresh"], false);
    assert_eq!(v["inputs"][0]["verdict"], "stale");
    let v = json(&env.run(&["inspect", "news:espn:a1", "--json"]));
    assert_eq!(v["dependents"][0], FEATURES);

    let o = env.run(&["invalidate", "--tag", "espn", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["tag"], "espn");
}
